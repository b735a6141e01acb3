//! The use cases, free of HTTP: accept a message, record an agent's reply, send as the operator,
//! replay dead letters, and the reads with who may see what.
//!
//! `POST /message` calls [`Inbox::accept`]; any other front door calls the same function, so
//! dedup, loops, routing, plugins, durability and the queue behave the same whichever door a
//! message comes through. Errors are domain errors ([`InboxError`]); the HTTP layer maps them.

use std::sync::Arc;

use crate::approval::Waiting;
use crate::events::{Event, Events};
use crate::hooks::{self, HookError};
use crate::model::ApprovalKind;
use crate::model::DeliveryState;
use crate::model::{Draft, Message, Outbound, new_id, now_ms};
use crate::relay::Relay;
use crate::router::NoRoute;
use crate::shutdown::Shutdown;
use crate::snapshot::{Active, Snapshot};
use crate::store::{
    Dedup, Hold, Inserted, Lease, MessageFilter, NewTurn, Store, StoreError, TaskLink,
};
use crate::turns::Turns;
mod a2a;
mod agent;
mod cancel;
mod follow;
mod pairing;
mod reads;
mod reply;
mod status;
mod upkeep;

pub use self::a2a::Answer as A2aAnswer;
pub use self::pairing::new_key;
pub use self::reads::reader;
pub use self::status::Work;
use crate::wire::{
    Ack, AckStatus, AdminSendBody, ApprovalItem, ApprovalList, Detail, Envelope, MessageDetail,
    MessageList, MessageView, OutboundDetail, OutboundView, Outbox, OutboxItem, SendBody,
};
use crate::{config, token};

/// A host of a shared store is listed as live when its last heartbeat (every 5 s) is this recent.
pub const LIVE_HOST: std::time::Duration = std::time::Duration::from_secs(15);

/// This process's start id: with the host id, the holder of its leases, so a restarted host
/// never takes an older lease for its own.
pub fn incarnation() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(new_id)
}

/// Why a use case said no.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// No route takes this type from this sender.
    #[error(transparent)]
    UnknownType(#[from] NoRoute),
    /// A reply type the route does not allow.
    #[error("reply type {got:?} is not allowed here; valid types: {}", allowed.join(", "))]
    UnknownReplyType {
        /// What was sent.
        got: String,
        /// What is allowed.
        allowed: Vec<String>,
    },
    /// The thread has been relayed too often.
    #[error(
        "this thread has been relayed {hops} times (max_hops is {max}); refusing to continue a loop"
    )]
    LoopDetected {
        /// Hops the message carried.
        hops: u32,
        /// The limit.
        max: u32,
    },
    /// A route's plugin refused or failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The route's turn queue is full.
    #[error("the queue of route {route} is full ({max_queued} turns waiting)")]
    QueueFull {
        route: String,
        /// Its limit.
        max_queued: usize,
    },
    /// The inbox is shutting down.
    #[error("the inbox is shutting down; try again shortly")]
    ShuttingDown,
    /// The reply token is unknown or expired.
    #[error("unauthorized")]
    BadToken,
    /// The reply token's attempt was given up: its turn was interrupted and queued to run
    /// again (the new attempt's agent answers), or settled as interrupted.
    #[error(
        "this reply token's attempt was superseded: its turn was interrupted and runs again (or was given up), so this attempt can no longer answer"
    )]
    Superseded,
    /// The operator named a peer the config does not have.
    #[error("unknown peer {peer:?}; known: {}", known.join(", "))]
    UnknownPeer {
        /// What was named.
        peer: String,
        /// The peers there are.
        known: Vec<String>,
    },
    /// No such message or outbound message (or not one this reader may see).
    #[error("not found")]
    NotFound,
    /// `outbox retry` of an outbound message with no delivery dead or waiting for its next try.
    #[error("{0} has no delivery to retry: each is delivered, being attempted, or held")]
    NothingToRetry(String),
    /// A local agent asked for something its `may_send` does not allow, or a reply token tried
    /// to start a thread.
    #[error("{reason}; allowed: {}", if allowed.is_empty() { "nothing".to_owned() } else { allowed.join("; ") })]
    NotAllowed {
        /// What was refused.
        reason: String,
        /// What is allowed.
        allowed: Vec<String>,
    },
    /// A local agent started more messages this minute than `max_per_minute`.
    #[error("agent {agent} is over its {max} messages a minute; try again in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        agent: String,
        /// Its limit.
        max: u32,
        /// When the window ends.
        retry_after: std::time::Duration,
    },
    /// A turn's token sent more replies than `max_replies_per_turn`, or faster than
    /// `max_replies_per_minute`.
    #[error("this turn may send {per_turn} replies, at most {per_minute} a minute; no more now (try again in {} s)", retry_after.as_secs().max(1))]
    TooManyReplies {
        /// `max_replies_per_turn`.
        per_turn: u32,
        /// `max_replies_per_minute`.
        per_minute: u32,
        /// When one may be sent again.
        retry_after: std::time::Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A message as it arrived at a front door, with who sent it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The authenticated peer.
    pub sender: String,
    /// What it sent.
    pub envelope: Envelope,
    /// The `Idempotency-Key`, if any (else the envelope's `id` dedups).
    pub idempotency_key: Option<String>,
    /// The route, when the front door chose it (an A2A skill); else the router picks by sender
    /// and type. Plugins run either way and may reroute.
    pub route: Option<String>,
    /// The A2A task this message starts or continues, committed with it.
    pub task: Option<TaskLink>,
}

/// Who is reading: the admin sees everything, a peer sees its own messages and what is addressed
/// to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    /// The operator.
    Admin,
    /// A peer, by name.
    Peer(String),
    /// A local agent, by name: it sees the threads it started, and what arrived in them.
    Agent(String),
}

/// Everything the use cases share. Its parts are private: the front doors reach them only
/// through the use cases' methods.
pub struct Inbox {
    approvals: Arc<crate::approval::Approvals>,
    active: Active,
    store: Store,
    turns: Arc<Turns>,
    relay: Arc<Relay>,
    events: Events,
    shutdown: Arc<Shutdown>,
    /// Messages each local agent started this minute.
    send_rate: crate::rate::SendRate,
    /// Set once recovery has run and the inbox serves (for `/readyz`).
    ready: std::sync::atomic::AtomicBool,
    /// Console sessions signed out on any host, not yet expired.
    sessions: crate::console::Revoked,
    store_health: StoreHealth,
    /// When each (peer, code) last had a refused message logged, and each (peer, code,
    /// thread) recorded.
    refusals: crate::rate::Every,
    a2a: Arc<crate::a2a_client::A2aClient>,
}

/// The parts the wiring builds an [`Inbox`] from.
pub struct Parts {
    pub approvals: Arc<crate::approval::Approvals>,
    pub active: Active,
    pub store: Store,
    pub turns: Arc<Turns>,
    pub relay: Arc<Relay>,
    pub events: Events,
    pub shutdown: Arc<Shutdown>,
    /// For following the tasks handed to A2A peers.
    pub a2a: Arc<crate::a2a_client::A2aClient>,
}

/// A message an authenticated peer sent that was refused, as the front door answered it.
#[derive(Debug, Clone)]
pub struct Refused<'a> {
    pub peer: &'a str,
    /// Its type, if the body could be read.
    pub msg_type: Option<&'a str>,
    /// The thread it named (the peer's name for it), if any.
    pub thread: Option<&'a str>,
    /// The outbound message it answered, if it named one.
    pub in_reply_to: Option<&'a str>,
    /// The error code it was answered with.
    pub code: &'a str,
    /// The answer's words.
    pub detail: String,
}

/// How often one peer's refusals of one code are logged, and recorded in one thread.
const REFUSAL_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the store takes writes, as last seen: down when a write fails for want of space (or a
/// read-only or unreachable database), up again only when a probe write succeeds, so `/readyz`
/// recovers without traffic.
#[derive(Debug, Default)]
pub struct StoreHealth {
    down: std::sync::atomic::AtomicBool,
}

impl StoreHealth {
    /// A write failed with the store unavailable.
    pub fn failed(&self, why: &str) {
        if !self.down.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::error!(error = %why, "the store cannot write: answering 503 until it can (probing)");
        }
    }

    /// A probe write succeeded.
    pub fn recovered(&self) {
        if self.down.swap(false, std::sync::atomic::Ordering::SeqCst) {
            tracing::info!("the store writes again");
        }
    }

    /// Whether the last write seen failed.
    pub fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Inbox {
    /// An inbox over `parts`, not yet ready (see [`Inbox::mark_ready`]).
    pub fn new(parts: Parts) -> Self {
        let Parts {
            approvals,
            active,
            store,
            turns,
            relay,
            events,
            shutdown,
            a2a,
        } = parts;
        Inbox {
            approvals,
            active,
            store,
            turns,
            relay,
            events,
            shutdown,
            a2a,
            send_rate: crate::rate::SendRate::default(),
            ready: std::sync::atomic::AtomicBool::new(false),
            sessions: crate::console::Revoked::default(),
            store_health: StoreHealth::default(),
            refusals: crate::rate::Every::default(),
        }
    }

    /// The config in force, for a request to read once and keep to its end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.active.load_full()
    }

    /// Recovery has run: `/readyz` may say ready.
    pub fn mark_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether new messages are refused while running turns finish.
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_draining()
    }

    /// A use case met the store unable to write: `/readyz` says so until a probe write succeeds.
    pub fn writes_failed(&self, why: &str) {
        self.store_health.failed(why);
    }

    /// This inbox's base URL as peers and agents reach it (`public_url`, else the bound address).
    pub fn base_url(&self, snap: &Snapshot) -> String {
        self.turns.base_url(snap)
    }

    /// Whether the console session `id` was signed out (on any host).
    pub fn signed_out(&self, id: &str) -> bool {
        self.sessions.contains(id)
    }

    /// A person's decision on what waits for one.
    pub async fn decide(
        &self,
        request: crate::approval::Request,
    ) -> Result<crate::model::Approval, crate::approval::DecideError> {
        self.approvals.decide(request).await
    }

    /// What happens, for a live view: subscribed now, so nothing after this call is missed.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Accepts a message: refuses loops, routes it, runs the route's check-message, commits it
    /// with its queued turn (or refuses a repeat or a full queue), then wakes the scheduler.
    pub async fn accept(&self, snap: &Snapshot, incoming: Incoming) -> Result<Ack, InboxError> {
        if self.shutdown.is_draining() {
            return Err(InboxError::ShuttingDown);
        }
        let config = &snap.config;
        let Incoming {
            sender,
            envelope: e,
            idempotency_key,
            route: chosen,
            mut task,
        } = incoming;
        if e.hops >= config.server.max_hops {
            tracing::warn!(sender = %sender, msg_type = %e.msg_type, hops = e.hops, "loop detected");
            return Err(InboxError::LoopDetected {
                hops: e.hops,
                max: config.server.max_hops,
            });
        }
        let (message, alias, known_thread, hold) = self.received(snap, sender, e, chosen).await?;
        let route = &config.routes[&message.route];
        let (id, thread_id) = (message.id.clone(), message.thread_id.clone());
        let dedup = idempotency_key
            .or_else(|| message.sender_ref.clone())
            .map(|key| Dedup {
                key,
                since: message.received_at - config.server.dedup_window.as_millis() as i64,
            });
        let (turn, waiting) = turn_for(route, &message, hold);
        let queued = turn.as_ref().is_some_and(|t| t.hold.is_none());
        let approvals = self.approvals.clone();
        let (store, turns, events) = (self.store.clone(), self.turns.clone(), self.events.clone());
        let event = Event::MessageAccepted {
            id: id.clone(),
            sender: message.sender.clone(),
            route: message.route.clone(),
            thread_id: thread_id.clone(),
            msg_type: message.msg_type.clone(),
            turn_queued: queued,
        };
        let route_name = message.route.clone();
        // A type no route names (a wildcard route's, or a plugin's rewrite) is `other`: the
        // label stays bounded by the config.
        let accepted = crate::metrics::RouteType {
            route: route_name.clone(),
            msg_type: if route.types.contains(&message.msg_type) {
                message.msg_type.clone()
            } else {
                "other".into()
            },
        };
        if let Some(link) = &mut task {
            link.input.message_id = Some(id.clone());
            if let Some(t) = &mut link.new {
                t.route = route_name.clone();
            }
        }
        // Finished even if the client hangs up, so a committed turn never misses its wake-up.
        // The ack names the thread as the sender does.
        let sender_thread = alias.clone().unwrap_or_else(|| thread_id.clone());
        // An alias already found names its thread for good (rows are only added): the insert
        // resolves only a new one, and a continued thread takes the plain insert.
        let new_alias = alias.filter(|_| !known_thread);
        let (sender, hops) = (message.sender.clone(), message.hops);
        let inserted = Finish::new(async move {
            let inserted = match new_alias {
                Some(alias) => {
                    store
                        .insert_message_in_thread(message, alias, turn, dedup, task)
                        .await?
                }
                None => store.insert_message(message, turn, dedup, task).await?,
            };
            if inserted == Inserted::New {
                // Logged once committed: a line names only what the inbox has.
                if let Event::MessageAccepted {
                    id,
                    route,
                    thread_id,
                    msg_type,
                    ..
                } = &event
                {
                    tracing::info!(
                        message_id = %id, sender = %sender, route = %route, msg_type = %msg_type,
                        thread = %thread_id, hops, "message received"
                    );
                }
                crate::metrics::get()
                    .accepted
                    .get_or_create(&accepted)
                    .inc();
                events.publish(event);
                if queued {
                    turns.wake(&route_name);
                }
                if let Some(w) = waiting {
                    approvals.waiting(w);
                }
            }
            Ok::<_, StoreError>(inserted)
        })
        .await?;
        match inserted {
            Inserted::New => Ok(Ack {
                status: AckStatus::Received,
                id,
                thread_id: Some(sender_thread),
            }),
            Inserted::Duplicate(original) => {
                tracing::info!(message_id = %id, original = %original, "duplicate message; no new turn");
                Ok(Ack {
                    status: AckStatus::Duplicate,
                    id: original,
                    thread_id: None,
                })
            }
            Inserted::QueueFull { max_queued } => Err(InboxError::QueueFull {
                route: route.name.clone(),
                max_queued,
            }),
        }
    }

    /// A message as its route will see it: routed (or on the route the front door chose), in
    /// the thread the sender's alias names (or a new one), through the route's check-message;
    /// with the sender's alias, whether it named a known thread, and why the plugin holds it.
    async fn received(
        &self,
        snap: &Snapshot,
        sender: String,
        e: Envelope,
        chosen: Option<String>,
    ) -> Result<(Message, Option<String>, bool, Option<String>), InboxError> {
        let routed = match &chosen {
            Some(r) => r.as_str(),
            None => snap.router.route(&sender, &e.msg_type)?,
        };
        let id = new_id();
        // What the sender calls the thread is its alias, scoped to it: the thread is the one this
        // sender means by it, or a new one (the store settles a race on a new alias).
        let alias = e.thread_id;
        let thread_id = match &alias {
            Some(a) => self.store.thread_of(&sender, a).await?,
            None => None,
        };
        let known_thread = thread_id.is_some();
        let mut message = Message {
            thread_id: thread_id.unwrap_or_else(|| id.clone()),
            id,
            sender,
            route: routed.to_owned(),
            msg_type: e.msg_type,
            payload: e.payload,
            in_reply_to: e.in_reply_to,
            hops: e.hops,
            sender_ref: e.id,
            received_at: 0,
            mailbox: false,
        };
        let checked = hooks::check_message(snap, &message).await?;
        let route = &snap.config.routes[checked.route];
        message.route = checked.route.to_owned();
        message.msg_type = checked.msg_type;
        message.payload = checked.payload;
        message.mailbox = route.agent().is_none();
        message.received_at = now_ms();
        Ok((message, alias, known_thread, checked.hold))
    }

    /// Makes a refused message visible: an INFO line (at most one per peer and code every 10 s)
    /// and, when it names a thread this inbox knows (by the peer's name for it, or by the
    /// message it answers), a `refused` record in that thread with its event, so a `send
    /// --wait` there ends at once instead of waiting out its timeout.
    pub async fn refused(&self, r: Refused<'_>) {
        let now = std::time::Instant::now();
        let msg_type = r.msg_type.unwrap_or("?");
        if self.refusals.allow(&[r.peer, r.code], REFUSAL_EVERY, now) {
            tracing::info!(
                peer = %r.peer, msg_type = %msg_type, code = %r.code, detail = %r.detail,
                "message refused"
            );
        }
        let thread = match self.known_thread(&r).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up a refused message's thread");
                None
            }
        };
        let Some(thread) = thread else { return };
        if !self
            .refusals
            .allow(&[r.peer, r.code, &thread], REFUSAL_EVERY, now)
        {
            return;
        }
        let refusal = crate::model::Refusal {
            thread_id: thread.clone(),
            peer: r.peer.to_owned(),
            msg_type: msg_type.to_owned(),
            code: r.code.to_owned(),
            detail: crate::model::escape_controls(&r.detail.chars().take(500).collect::<String>())
                .into_owned(),
            at: now_ms(),
        };
        if let Err(e) = self.store.insert_refusal(refusal).await {
            tracing::warn!(error = %e, "cannot record a refused message in its thread");
            return;
        }
        self.events.publish(Event::MessageRefused {
            thread_id: thread,
            peer: r.peer.to_owned(),
            msg_type: msg_type.to_owned(),
            code: r.code.to_owned(),
        });
    }

    /// The thread a refused message belongs to, if this inbox knows it: the one the peer calls
    /// by the name it gave, else the thread of the outbound message it answers, if that was
    /// sent to this peer.
    async fn known_thread(&self, r: &Refused<'_>) -> Result<Option<String>, StoreError> {
        if let Some(alias) = r.thread
            && let Some(t) = self.store.thread_of(r.peer, alias).await?
        {
            return Ok(Some(t));
        }
        let Some(id) = r.in_reply_to else {
            return Ok(None);
        };
        Ok(self
            .store
            .outbound(id)
            .await?
            .filter(|(_, deliveries)| deliveries.iter().any(|d| d.peer == r.peer))
            .map(|(o, _)| o.thread_id))
    }

    /// Signs a console session out: revoked in the store until it would have expired (announced
    /// to the other hosts of a shared store), and in this host's cache.
    pub async fn sign_out(&self, session_id: &str, until: i64) -> Result<(), InboxError> {
        self.store.revoke_session(session_id, until).await?;
        self.sessions.insert(session_id, until, now_ms());
        Ok(())
    }

    /// Loads the sessions signed out and not yet expired into this host's cache (at start, and
    /// when a shared store's notices may have been missed).
    pub async fn load_signed_out(&self) -> Result<(), InboxError> {
        let now = now_ms();
        for (id, until) in self.store.revoked_sessions(now).await? {
            self.sessions.insert(&id, until, now);
        }
        Ok(())
    }
}

/// A message's turn on an agent route, held for a person by the route's `approve` or by the
/// plugin (`hold`); and what then waits, to announce once it is committed.
fn turn_for(
    route: &crate::config::Route,
    message: &Message,
    hold: Option<String>,
) -> (Option<NewTurn>, Option<Waiting>) {
    let hold = match (hold, route.approve.inbound) {
        (Some(why), _) => Some(format!("plugin: {why}")),
        (None, true) => Some(format!("route {} approves inbound messages", route.name)),
        (None, false) => None,
    };
    let turn = route.agent().map(|a| NewTurn {
        max_queued: a.max_queued,
        hold: hold.map(|reason| Hold {
            reason,
            expires_at: message.received_at + route.approval_timeout.as_millis() as i64,
        }),
    });
    let waiting = turn
        .as_ref()
        .and_then(|t| t.hold.as_ref())
        .map(|h| Waiting {
            id: message.id.clone(),
            kind: ApprovalKind::Inbound,
            route: message.route.clone(),
            sender: message.sender.clone(),
            msg_type: message.msg_type.clone(),
            thread_id: message.thread_id.clone(),
            reason: h.reason.clone(),
        });
    (turn, waiting)
}

/// A future that runs to the end even when its caller stops waiting: dropped while pending, it
/// hands itself to a task of its own. Unlike spawning up front, the common case (the caller
/// waits) costs no task, no join handle and no extra wake-up: about 4% of an ack's CPU.
struct Finish<F: Future + Send + 'static>(Option<std::pin::Pin<Box<F>>>)
where
    F::Output: Send;

impl<F: Future + Send + 'static> Finish<F>
where
    F::Output: Send,
{
    fn new(f: F) -> Self {
        Finish(Some(Box::pin(f)))
    }
}

impl<F: Future + Send + 'static> Future for Finish<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let Some(f) = self.0.as_mut() else {
            return std::task::Poll::Pending; // polled after it finished: never ready again
        };
        let out = std::task::ready!(f.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for Finish<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let Some(f) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = f.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Finish;

    #[tokio::test]
    async fn a_finish_dropped_while_pending_still_runs_to_the_end() {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (finished, done) = tokio::sync::oneshot::channel::<()>();
        let f = Finish::new(async move {
            let _ = wait.await;
            let _ = finished.send(());
        });
        // The caller gives up (a client hanging up) while the work still waits.
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(10), f).await;
        assert!(gave_up.is_err(), "the work could not have finished yet");
        go.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), done)
            .await
            .expect("the dropped future was not finished by a task of its own")
            .expect("it ran to its end");
    }

    #[tokio::test]
    async fn a_finish_awaited_gives_its_output() {
        assert_eq!(Finish::new(async { 7 }).await, 7);
    }
}
