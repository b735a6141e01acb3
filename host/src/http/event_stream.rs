//! `GET /events`: the events feed as Server-Sent Events, for `agent-inbox tail` and
//! `send --wait` (and any operator tool). One `data:` line per event, as JSON; a reader that
//! falls behind gets `{"event": "lagged", "missed": n}` and goes on with the newest. The stream
//! ends when the client goes, the inbox drains, or `?timeout=SECS` passes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tokio::sync::{broadcast, mpsc};

use super::Body;
use crate::events::Event;
use crate::inbox::Inbox;

/// How often an idle stream sends an SSE comment (and looks whether the inbox drains).
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Comments between two keep-alives a client sees.
const KEEP_ALIVE_EVERY: u32 = 15;

/// Whether an event is about `route` / `thread`. The route filter passes an event that names
/// no route (a delivery); the thread filter passes only an event of that thread, so a reader
/// that may follow one thread (a local agent) sees nothing of another conversation.
pub(super) fn matches(e: &Event, route: Option<&str>, thread: Option<&str>) -> bool {
    let (r, t) = match e {
        Event::MessageAccepted {
            route, thread_id, ..
        }
        | Event::ApprovalWaiting {
            route, thread_id, ..
        }
        | Event::ApprovalDecided {
            route, thread_id, ..
        } => (Some(route.as_str()), Some(thread_id.as_str())),
        Event::TurnStarted {
            route, thread_id, ..
        }
        | Event::TurnEnded {
            route, thread_id, ..
        }
        | Event::TurnOutput {
            route, thread_id, ..
        } => (Some(route.as_str()), thread_id.as_deref()),
        Event::OutboundQueued { thread_id, .. } | Event::MessageRefused { thread_id, .. } => {
            (None, Some(thread_id.as_str()))
        }
        Event::DeliveryAttempted { thread_id, .. } => (None, thread_id.as_deref()),
        Event::ConfigReloaded { .. } => (None, None),
    };
    route.is_none_or(|want| r.is_none_or(|r| r == want))
        && thread.is_none_or(|want| t == Some(want))
}

/// The stream; it ends when the client goes or the inbox drains. Only the `admin` gets the
/// events that are the admin's alone (a turn's output).
pub(super) fn events(
    inbox: &Arc<Inbox>,
    admin: bool,
    route: Option<String>,
    thread: Option<String>,
    lasts: Option<Duration>,
) -> Response<Body> {
    let mut rx = inbox.subscribe();
    let (tx, body) = mpsc::channel::<Bytes>(64);
    let inbox = inbox.clone();
    // Bounded by connections: one per open request.
    tokio::spawn(async move {
        // A first comment, so the client sees the stream open before any event.
        if tx.send(Bytes::from_static(b": events\n\n")).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        let mut idle = 0u32;
        let ends = lasts.map(|d| tokio::time::Instant::now() + d);
        loop {
            let frame = tokio::select! {
                e = rx.recv() => match e {
                    Ok(e) if (admin || !e.admin_only())
                        && matches(&e, route.as_deref(), thread.as_deref()) => {
                        idle = 0;
                        let json = serde_json::to_string(&e).unwrap_or_default();
                        Bytes::from(format!("data: {json}\n\n"))
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        Bytes::from(format!("data: {{\"event\":\"lagged\",\"missed\":{n}}}\n\n"))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if inbox.is_draining()
                        || ends.is_some_and(|e| tokio::time::Instant::now() >= e)
                    {
                        return;
                    }
                    idle += 1;
                    if idle < KEEP_ALIVE_EVERY {
                        continue;
                    }
                    idle = 0;
                    Bytes::from_static(b": keep-alive\n\n")
                }
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    super::body::event_stream(body)
}
