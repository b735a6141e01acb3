//! `agent-inbox send --wait`: follows one conversation, through `GET /events` (Server-Sent
//! Events) and reads of its thread, until its answer arrives.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use super::client::{AdminClient, EventStream};
use crate::mcp::Waited;
use crate::wire::{Ack, AdminSendBody};

/// Exit code: no answer in time.
pub(super) const EXIT_TIMEOUT: u8 = 2;
/// Exit code: the answer is a `TURN_FAILED` notice.
pub(super) const EXIT_TURN_FAILED: u8 = 3;
/// Exit code: the message could not be delivered, or the answer was refused here.
pub(super) const EXIT_DEAD: u8 = 4;
/// How often `--wait` also reads the thread, in case an event was missed.
const RECHECK: Duration = Duration::from_secs(2);

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
    client: &AdminClient,
    who: As,
    body: AdminSendBody,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    // The operator subscribes before sending, so no event of the conversation can come first.
    let early = match who {
        As::Admin => Some(client.events("/events").await?),
        As::Agent => None,
    };
    let peer = body.to.clone();
    let path = match who {
        As::Admin => "/admin/send",
        As::Agent => "/send",
    };
    let ack: Ack = client
        .expect(http::Method::POST, path, Some(body.to_json()))
        .await?;
    eprintln!(
        "queued {} to {peer} in thread {}",
        ack.id,
        ack.thread_id.as_deref().unwrap_or_default()
    );
    match follow(client, &ack, early, timeout, &mut |s| eprintln!("{s}")).await? {
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
            println!(
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

/// Follows the thread of `ack` (what was just sent) until an answer arrives, it is clear none
/// will, or `timeout` passes; `say` hears the progress as it happens. `events` is the feed an
/// operator opened before sending; an agent's is opened here, on its thread.
pub(crate) async fn follow(
    client: &AdminClient,
    ack: &Ack,
    events: Option<EventStream>,
    timeout: Duration,
    say: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Waited> {
    let thread = ack.thread_id.clone().unwrap_or_default();
    let mut events = match events {
        Some(e) => e,
        None => {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("thread", &thread)
                .finish();
            client.events(&format!("/events?{query}")).await?
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // The first tick is at once: an agent subscribes only once it has its thread, after a hold
    // was announced, so its record is read straight away too.
    let mut recheck = tokio::time::interval(RECHECK);
    let mut held: Option<String> = None;
    loop {
        let answer = tokio::select! {
            e = events.next() => match e {
                Some(Ok(e)) => {
                    if e["event"] == "approval_waiting" && e["id"] == ack.id.as_str() {
                        say_held(&mut held, e["reason"].as_str().unwrap_or(""), say);
                    }
                    on_event(&e, ack, &thread, say)
                }
                Some(Err(e)) => return Err(e),
                None => anyhow::bail!("the inbox closed the event stream (is it shutting down?)"),
            },
            _ = recheck.tick() => match answered(client, &thread, &ack.id).await? {
                Some(step) => Some(step),
                None => {
                    let own = own_state(client, &ack.id).await?;
                    match &own.held {
                        Some(reason) => say_held(&mut held, reason, say),
                        None => held = None,
                    }
                    own.over
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                return Ok(Waited::TimedOut { held });
            }
        };
        match answer {
            None => {}
            Some(Step::Dead(why)) => return Ok(Waited::Dead(why)),
            Some(Step::Answered(id)) => {
                let shown: Value = client
                    .expect(http::Method::GET, &format!("/messages/{id}"), None)
                    .await?;
                let m = &shown["message"];
                return Ok(Waited::Answered {
                    msg_type: m["type"].as_str().unwrap_or("").to_owned(),
                    payload: m["payload"].clone(),
                    id,
                });
            }
        }
    }
}

enum Step {
    Answered(String),
    Dead(String),
}

/// What an event means for the conversation: progress is printed, an answer or a dead letter
/// ends the wait.
fn on_event(
    e: &Value,
    ack: &Ack,
    thread: &str,
    say: &mut (dyn FnMut(String) + Send),
) -> Option<Step> {
    match e["event"].as_str() {
        Some("delivery_attempted") if e["id"] == ack.id.as_str() => {
            let state = e["state"].as_str().unwrap_or("");
            say(format!(
                "sent to {} (attempt {}): {state}",
                e["peer"].as_str().unwrap_or("?"),
                e["attempt"]
            ));
            (state == "dead").then(|| {
                Step::Dead(format!(
                    "see `agent-inbox outbox list --dead`; reply {}",
                    ack.id
                ))
            })
        }
        Some("approval_decided") if e["id"] == ack.id.as_str() => {
            let by = e["by"].as_str().unwrap_or("?");
            if e["verdict"] == "rejected" {
                Some(Step::Dead(format!("rejected by {by}")))
            } else {
                say(format!("approved by {by}"));
                None
            }
        }
        Some("message_refused") if e["thread_id"] == thread => Some(Step::Dead(refused_here(e))),
        Some("message_accepted") if e["thread_id"] == thread => {
            e["id"].as_str().map(|id| Step::Answered(id.to_owned()))
        }
        Some("lagged") => {
            say(format!(
                "(missed {} events; reading the thread instead)",
                e["missed"]
            ));
            None
        }
        _ => None,
    }
}

/// Says, once, that what was sent waits for a person.
fn say_held(held: &mut Option<String>, reason: &str, say: &mut (dyn FnMut(String) + Send)) {
    if held.is_none() {
        say(format!("held for a person's approval: {reason}"));
    }
    *held = Some(reason.to_owned());
}

/// Our own message as its record stands, read in case the event that said so was missed.
struct Own {
    /// It will never reach anyone: every delivery dead, or withheld by a person's rejection.
    over: Option<Step>,
    /// It waits for a person, and why.
    held: Option<String>,
}

async fn own_state(client: &AdminClient, own: &str) -> anyhow::Result<Own> {
    let shown: Value = client
        .expect(http::Method::GET, &format!("/messages/{own}"), None)
        .await?;
    let Some(deliveries) = shown["reply"]["deliveries"].as_array() else {
        return Ok(Own {
            over: None,
            held: None,
        });
    };
    let over = !deliveries.is_empty()
        && deliveries
            .iter()
            .all(|d| d["state"] == "dead" || d["state"] == "withheld");
    let held = deliveries.iter().any(|d| d["state"] == "held").then(|| {
        shown["reply"]["approval"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    });
    Ok(Own {
        over: over.then(|| {
            Step::Dead(
                deliveries[0]["last_error"]
                    .as_str()
                    .unwrap_or("not delivered")
                    .to_owned(),
            )
        }),
        held,
    })
}

/// What a refusal in the thread says: who answered, with what, and why it was refused.
fn refused_here(r: &Value) -> String {
    format!(
        "{} answered with {}, which this inbox refused ({}): {}",
        r["peer"].as_str().unwrap_or("?"),
        r["msg_type"].as_str().or(r["type"].as_str()).unwrap_or("?"),
        r["code"].as_str().unwrap_or("?"),
        r["detail"]
            .as_str()
            .unwrap_or("add a route for that type from that peer to take it")
    )
}

/// A message in `thread` other than our own outbound one, if one has arrived; or the end of the
/// wait if an answer in it was refused here.
async fn answered(client: &AdminClient, thread: &str, own: &str) -> anyhow::Result<Option<Step>> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("thread", thread)
        .append_pair("limit", "1")
        .finish();
    let list: Value = client
        .expect(http::Method::GET, &format!("/messages?{query}"), None)
        .await?;
    if let Some(r) = list["refused"].as_array().and_then(|r| r.first()) {
        return Ok(Some(Step::Dead(refused_here(r))));
    }
    Ok(list["messages"][0]["id"]
        .as_str()
        .filter(|id| *id != own)
        .map(|id| Step::Answered(id.to_owned())))
}
