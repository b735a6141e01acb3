//! `agent-inbox send --wait`: sends, then follows the conversation (`mcp::wait`, over the
//! inbox's HTTP API) until its answer arrives, and says how it ended by its exit code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::client::AdminClient;
use super::mcp::HttpApi;
use crate::mcp::{Waited, wait};
use crate::wire::{Ack, AdminSendBody};

/// Exit code: no answer in time.
pub(super) const EXIT_TIMEOUT: u8 = 2;
/// Exit code: the answer is a `TURN_FAILED` notice.
pub(super) const EXIT_TURN_FAILED: u8 = 3;
/// Exit code: the message could not be delivered, or the answer was refused here.
pub(super) const EXIT_DEAD: u8 = 4;

/// Who sends with `--wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum As {
    /// The operator (`/admin/send`), who may follow every event: it subscribes before sending.
    Admin,
    /// A local agent (`/send` with its token), who may follow only a thread it started: it
    /// subscribes to the thread once it has one (and reads the thread every 2 s besides).
    Agent,
}

/// `agent-inbox send --wait`: sends, then follows the thread until an answer arrives.
pub(super) async fn send_and_wait(
    client: AdminClient,
    who: As,
    body: AdminSendBody,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    // The operator subscribes before sending, so no event of the conversation can come first.
    let api = HttpApi::new(client);
    let early = match who {
        As::Admin => Some(api.feed("/events").await.map_err(HttpApi::error)?),
        As::Agent => None,
    };
    let peer = body.to.clone();
    let path = match who {
        As::Admin => "/admin/send",
        As::Agent => "/send",
    };
    let ack: Ack = api
        .client()
        .expect(http::Method::POST, path, Some(body.to_json()))
        .await?;
    eprintln!(
        "queued {} to {peer} in thread {}",
        ack.id,
        ack.thread_id.as_deref().unwrap_or_default()
    );
    let waited = wait::follow(&api, &ack, early, timeout, &mut |s| eprintln!("{s}")).await;
    match waited.map_err(HttpApi::error)? {
        Waited::TimedOut { .. } => {
            eprintln!("no answer within {} s", timeout.as_secs());
            Ok(ExitCode::from(EXIT_TIMEOUT))
        }
        Waited::Dead(why) => {
            eprintln!("no answer will come: {why}");
            Ok(ExitCode::from(EXIT_DEAD))
        }
        Waited::Answered {
            id,
            msg_type,
            payload,
        } => {
            eprintln!("answered: {msg_type} {id}");
            outln!(
                "{}",
                serde_json::to_string_pretty(&payload).context("the answer's payload")?
            );
            Ok(if msg_type == "TURN_FAILED" {
                ExitCode::from(EXIT_TURN_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
