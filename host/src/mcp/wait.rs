//! Waiting for the answer to one message: follows its thread through the events feed, and reads
//! the thread every 2 s in case an event was missed, until an answer arrives, it is clear none
//! will, or the time is up. Shared by the `ask` tool and `agent-inbox send --wait`, over any
//! [`Reads`] (the inbox's HTTP API, or the inbox itself for `/mcp`).

use std::time::Duration;

use serde_json::Value;

use super::{Feed, Listing, Reads, Refusal, Waited};
use crate::wire::Ack;

/// How often the thread is also read, in case an event was missed.
const RECHECK: Duration = Duration::from_secs(2);

/// The refusal code of a wait the inbox ended by closing its events feed (it drains).
pub const SHUTTING_DOWN: &str = "shutting_down";

/// Follows the thread of `ack` (what was just sent) until an answer arrives, it is clear none
/// will, or `timeout` passes; `say` hears the progress as it happens. `early` is a feed the
/// caller opened before sending (the operator's, on every event); else one is opened here, on
/// the thread.
pub async fn follow<R: Reads>(
    api: &R,
    ack: &Ack,
    early: Option<R::Feed>,
    timeout: Duration,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<Waited, Refusal> {
    let thread = ack.thread_id.clone().unwrap_or_default();
    let mut events = match early {
        Some(e) => e,
        None => api.events(&thread).await?,
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
                None => return Err(Refusal {
                    code: SHUTTING_DOWN.into(),
                    message: "the inbox closed its events feed: it is shutting down or \
                              restarting".into(),
                }),
            },
            _ = recheck.tick() => match answered(api, &thread, &ack.id).await? {
                Some(step) => Some(step),
                None => {
                    let own = own_state(api, &ack.id).await?;
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
                let shown = api.show(&id).await?;
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

/// What an event means for the conversation: progress is told, an answer or a dead letter
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

async fn own_state<R: Reads>(api: &R, own: &str) -> Result<Own, Refusal> {
    let shown = api.show(own).await?;
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
async fn answered<R: Reads>(api: &R, thread: &str, own: &str) -> Result<Option<Step>, Refusal> {
    let list = api
        .messages(&Listing {
            thread: Some(thread.to_owned()),
            route: None,
            limit: 1,
        })
        .await?;
    if let Some(r) = list["refused"].as_array().and_then(|r| r.first()) {
        return Ok(Some(Step::Dead(refused_here(r))));
    }
    Ok(list["messages"][0]["id"]
        .as_str()
        .filter(|id| *id != own)
        .map(|id| Step::Answered(id.to_owned())))
}
