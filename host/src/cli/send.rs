//! `agent-inbox send`: start or continue a conversation, as the admin or as a local agent, and
//! with `--wait` follow it to its answer.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::client::AdminClient;
use super::payload::read_payload;
use super::target::Target;
use super::wait::{As, send_and_wait};
use crate::wire::{Ack, AdminSendBody};

#[derive(clap::Args)]
pub(super) struct Args {
    /// The peer to send to.
    #[arg(long)]
    to: String,
    /// The message type, e.g. TASK.
    #[arg(long = "type")]
    msg_type: String,
    /// The payload: JSON, `@FILE` to read it from a file, or `-` to read it from stdin.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Continue this thread instead of starting one.
    #[arg(long)]
    thread: Option<String>,
    /// A local agent's token (`[agents.NAME]`): send as that agent to `--url`, within its
    /// `may_send`, instead of as the admin. Inside an agent's turn it is in the environment.
    #[arg(long, env = "INBOX_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Wait for the answer in the thread: progress on stderr as it happens, then the answer's
    /// payload on stdout. Exit 0 answered, 2 no answer in time, 3 the answer is TURN_FAILED,
    /// 4 no answer will come: the message could not be delivered (a dead letter), a person
    /// rejected it, or the answer was refused here. As the admin or as an agent.
    #[arg(long)]
    wait: bool,
    /// With --wait: how long to wait, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[command(flatten)]
    target: Target,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let body = AdminSendBody {
        to: args.to,
        msg_type: args.msg_type,
        payload: read_payload(&args.payload)?,
        thread_id: args.thread,
        in_reply_to: None,
    };
    let timeout = Duration::from_secs(args.timeout);
    // As an agent: its token, to its inbox (no config file); else the admin, from the config.
    let (client, who) = match &args.token {
        Some(token) => {
            let url = args
                .target
                .url
                .as_deref()
                .context("sending as an agent needs the inbox's URL: --url or INBOX_URL")?;
            let client = AdminClient::with_token(url, token, args.target.cacert.as_deref())?;
            (client, As::Agent)
        }
        None => (args.target.admin()?, As::Admin),
    };
    if args.wait {
        return send_and_wait(client, who, body, timeout).await;
    }
    let path = match who {
        As::Agent => "/send",
        As::Admin => "/admin/send",
    };
    // The answer as JSON, for a tool to read, whoever sent.
    let ack: Ack = client
        .expect(http::Method::POST, path, Some(body.to_json()))
        .await?;
    outln!("{}", serde_json::to_string(&ack)?);
    Ok(ExitCode::SUCCESS)
}
