//! One in-process feed of what happens: messages accepted, turns queued, started and ended,
//! replies recorded, deliveries attempted, config reloads.
//!
//! Publishing never waits: the feed is a bounded broadcast ring, and a subscriber that falls
//! behind loses the oldest events and is told how many (it resyncs from the store), so a slow
//! reader can never hold up an ack. Live views (streams, `tail`, a console) subscribe here.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::model::{ApprovalKind, DeliveryState, TurnState, Verdict};

/// Events kept for subscribers that have not read them yet.
const CAPACITY: usize = 1024;

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A message was committed (and its turn queued, unless it went to a mailbox).
    MessageAccepted {
        /// The message.
        id: String,
        /// The peer (or local agent, or `admin`) that sent it.
        #[serde(default)]
        sender: String,
        route: String,
        thread_id: String,
        msg_type: String,
        /// Whether a turn was queued for it.
        turn_queued: bool,
    },
    /// A turn's agent started.
    TurnStarted {
        /// The message the turn is for.
        message_id: String,
        route: String,
        /// The message's thread.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<String>,
        /// Which start this is (2 after a re-run).
        attempt: u32,
    },
    /// A turn ended.
    TurnEnded {
        /// The message the turn is for.
        message_id: String,
        route: String,
        /// The message's thread.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<String>,
        /// How it ended.
        state: TurnState,
        /// The agent's exit code, if it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// The stable code of why it failed (`agent_exited`, `timed_out`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An outbound message (reply, failure notice, operator send) was recorded for delivery.
    OutboundQueued {
        /// The outbound message.
        id: String,
        /// The message it answers, if any.
        in_reply_to: Option<String>,
        thread_id: String,
        msg_type: String,
        /// The peers it goes to.
        peers: Vec<String>,
    },
    /// A delivery attempt finished.
    DeliveryAttempted {
        /// The outbound message.
        id: String,
        peer: String,
        /// The outbound message's thread.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<String>,
        /// The attempt's number.
        attempt: u32,
        /// The delivery's state after it.
        state: DeliveryState,
        /// The peer's HTTP status, if it answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Why it failed (at most 300 characters, control characters escaped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Something started waiting for a person: a message's turn, or an agent's reply.
    ApprovalWaiting {
        /// The held message or reply.
        id: String,
        /// Which.
        kind: ApprovalKind,
        route: String,
        thread_id: String,
        /// Why it waits.
        reason: String,
    },
    /// A person (or the timeout) decided on a held item.
    ApprovalDecided {
        /// The held message or reply.
        id: String,
        /// Which.
        kind: ApprovalKind,
        route: String,
        thread_id: String,
        /// The message it is (inbound) or answers (outbound).
        message_id: Option<String>,
        /// What was decided.
        verdict: Verdict,
        /// Who decided.
        by: String,
    },
    /// A peer's message in a thread this inbox knows was refused (recorded in the thread).
    MessageRefused {
        thread_id: String,
        /// The peer that sent it.
        peer: String,
        msg_type: String,
        /// The error code it was answered with.
        code: String,
    },
    /// A new config is in force.
    ConfigReloaded { config_hash: String },
    /// What a running turn's agent wrote since the last such event: for the admin's views only
    /// (an agent's output may hold its internals), at most twice a second per turn, each
    /// well under PostgreSQL's 8,000-byte NOTIFY limit.
    TurnOutput {
        /// The message the turn is for.
        message_id: String,
        route: String,
        /// The message's thread.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<String>,
        /// `stdout` or `stderr`.
        stream: String,
        /// The newest of what it wrote (lossy UTF-8, control characters escaped).
        text: String,
        /// Bytes it wrote since the last event that `text` leaves out.
        #[serde(default, skip_serializing_if = "is_zero")]
        skipped: u64,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Event {
    /// Whether only the admin may see it (never a local agent following a thread).
    pub fn admin_only(&self) -> bool {
        matches!(self, Event::TurnOutput { .. })
    }
}

/// The feed; cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Only this process's events: what a shared store's bridge forwards to the other hosts.
    local: broadcast::Sender<Event>,
    /// Every event but `MessageAccepted`, for a follower of what happens to messages after they
    /// are accepted (turns, outbound messages, decisions), so it is not woken once per ack.
    later: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// An empty feed.
    pub fn new() -> Self {
        Self {
            tx: broadcast::Sender::new(CAPACITY),
            local: broadcast::Sender::new(CAPACITY),
            later: broadcast::Sender::new(CAPACITY),
        }
    }

    /// Publishes an event; never blocks, and costs next to nothing with no subscriber.
    pub fn publish(&self, event: Event) {
        if self.local.receiver_count() > 0 {
            let _ = self.local.send(event.clone());
        }
        self.publish_remote(event);
    }

    /// Publishes an event another host published (heard through the shared store): to this
    /// host's subscribers only, never forwarded again.
    pub fn publish_remote(&self, event: Event) {
        if !matches!(event, Event::MessageAccepted { .. }) && self.later.receiver_count() > 0 {
            let _ = self.later.send(event.clone());
        }
        if self.tx.receiver_count() > 0 {
            // An error only means every subscriber left in between.
            let _ = self.tx.send(event);
        }
    }

    /// A subscription to this process's own events only.
    pub fn subscribe_local(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }

    /// A subscription to every event but `MessageAccepted` (see [`Events::subscribe`]).
    pub fn subscribe_later(&self) -> broadcast::Receiver<Event> {
        self.later.subscribe()
    }

    /// A new subscription, starting with the next event. `recv` returns `Lagged(n)` when `n`
    /// events were lost to a slow read.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloaded(n: usize) -> Event {
        Event::ConfigReloaded {
            config_hash: n.to_string(),
        }
    }

    /// A subscriber to what happens after acceptance hears every event but the acceptances,
    /// from this host and from others, in order.
    #[tokio::test]
    async fn the_later_feed_skips_acceptances() {
        let events = Events::new();
        let mut later = events.subscribe_later();
        let mut all = events.subscribe();
        events.publish(Event::MessageAccepted {
            id: "m1".into(),
            sender: "tony".into(),
            route: "tasks".into(),
            thread_id: "m1".into(),
            msg_type: "TASK".into(),
            turn_queued: true,
        });
        events.publish(reloaded(1));
        events.publish_remote(reloaded(2));
        assert!(matches!(
            all.recv().await,
            Ok(Event::MessageAccepted { .. })
        ));
        assert_eq!(later.recv().await.unwrap(), reloaded(1));
        assert_eq!(later.recv().await.unwrap(), reloaded(2));
        assert!(later.try_recv().is_err(), "nothing else");
    }

    #[tokio::test]
    async fn slow_subscribers_lag_instead_of_blocking() {
        let events = Events::new();
        events.publish(reloaded(0)); // no subscriber: dropped
        let mut rx = events.subscribe();
        for n in 0..CAPACITY + 10 {
            events.publish(reloaded(n));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(rx.recv().await.ok(), Some(reloaded(10)));
    }
}
