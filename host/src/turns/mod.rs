//! Turn scheduling: at most `max_concurrent` agents per route on this host, each turn claimed from
//! the store's queue under a lease, and the life of one turn (`run`) and of the turns a stop
//! interrupted (`recovery`).
//!
//! The queue itself lives in the store; memory holds only how many turns of each route run here.
//! A turn reads the route's settings from the snapshot current when it is claimed.

mod live;
mod recovery;
mod remote;
mod run;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::events::Events;
use crate::model::{Message, Outbound, TurnEnd, TurnTerms, new_id, now_ms};
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::snapshot::{Active, Snapshot};
use crate::store::{Claimed, Store, StoreError, TurnClaim};
use crate::token;

/// How long a claimed turn's lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a running turn renews its lease.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(10);

/// Runs agent turns.
pub struct Turns {
    store: Store,
    active: Active,
    relay: Arc<Relay>,
    events: Events,
    shutdown: Arc<Shutdown>,
    /// Turns running (or being claimed) on this host, per route.
    running: Mutex<HashMap<String, usize>>,
    /// Where the server listens, for the default public URL; set once after bind.
    bound: OnceLock<SocketAddr>,
    idle: Notify,
    /// How to stop each turn running here, by message id.
    cancels: Cancels,
    /// For agents reached over HTTP (the OpenClaw gateway driver).
    client: crate::tls::HttpsClient,
    /// For remote A2A agents (`driver = "a2a"`), shared with the relay (one budget per remote).
    a2a: Arc<crate::a2a_client::A2aClient>,
    /// Where replies the inbox makes for a turn go (an A2A agent's artifacts): the use cases,
    /// set by the wiring once they exist.
    replies: OnceLock<std::sync::Weak<dyn Replies>>,
}

/// Where a turn's replies go when the inbox makes them itself (a remote A2A agent's artifacts):
/// the same checks and the same commit as a reply an agent sends to `/send` with the turn's
/// token. The use cases implement it; the scheduler cannot name them.
pub trait Replies: Send + Sync {
    /// Records `reply` under the turn's `token`.
    fn reply<'a>(
        &'a self,
        token: &'a str,
        reply: DriverReply,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ReplyRefused>> + Send + 'a>>;
}

/// A reply the inbox makes for a turn.
#[derive(Debug, Clone)]
pub struct DriverReply {
    /// Derived from what it answers, so that a second try finds the first.
    pub id: String,
    pub msg_type: String,
    /// JSON text.
    pub payload: String,
}

/// Why such a reply was not recorded.
#[derive(Debug)]
pub enum ReplyRefused {
    /// The turn's attempt is no longer current.
    Superseded,
    /// The route does not take it (its type, its check-reply, its limits), and why.
    Refused(String),
    /// The store failed.
    Store(StoreError),
}

/// The running turns' stop signals, by message id: a cancelled task stops its agent at once on
/// the host that runs it (another host's turn stops when its lease renewal finds it cancelled),
/// and so does a stop that cannot wait for it any longer.
#[derive(Default)]
struct Cancels(Mutex<HashMap<String, Arc<StopSignal>>>);

/// How a running turn is told to stop its agent, and why.
#[derive(Default)]
struct StopSignal {
    notify: Arc<Notify>,
    /// The inbox is stopping: the turn is interrupted (settled to run again), not cancelled.
    interrupted: std::sync::atomic::AtomicBool,
}

/// A running turn's entry in [`Cancels`]; removed when dropped.
struct CancelGuard<'a> {
    cancels: &'a Cancels,
    id: String,
    signal: Arc<StopSignal>,
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StopSignal>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, id: &str) -> CancelGuard<'_> {
        let signal = Arc::new(StopSignal::default());
        self.lock().insert(id.to_owned(), signal.clone());
        CancelGuard {
            cancels: self,
            id: id.to_owned(),
            signal,
        }
    }
}

impl CancelGuard<'_> {
    fn notify(&self) -> Arc<Notify> {
        self.signal.notify.clone()
    }

    /// Whether the agent was stopped because the inbox is stopping.
    fn interrupted(&self) -> bool {
        self.signal
            .interrupted
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.id);
    }
}

impl Turns {
    /// A scheduler over the store's queue.
    pub fn new(
        store: Store,
        active: Active,
        relay: Arc<Relay>,
        events: Events,
        shutdown: Arc<Shutdown>,
        a2a: Arc<crate::a2a_client::A2aClient>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            active,
            relay,
            events,
            shutdown,
            running: Mutex::new(HashMap::new()),
            bound: OnceLock::new(),
            idle: Notify::new(),
            cancels: Cancels::default(),
            client: crate::tls::client(),
            a2a,
            replies: OnceLock::new(),
        })
    }

    /// Where replies the inbox makes for a turn go; set once, by the wiring.
    pub fn set_replies(&self, replies: std::sync::Weak<dyn Replies>) {
        let _ = self.replies.set(replies);
    }

    /// Records the address the server bound, used when `public_url` is not set.
    pub fn set_bound(&self, addr: SocketAddr) {
        let _ = self.bound.set(addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // The critical sections only move counters; a panic cannot leave them half-done.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts on every route that has turns queued (at start-up, after recovery).
    pub async fn start(self: &Arc<Self>) -> Result<usize, StoreError> {
        let routes = self.store.queued_routes().await?;
        for r in &routes {
            self.wake(r);
        }
        Ok(self.store.queue_depth())
    }

    /// Stops the agent of a turn running on this host (its task was cancelled); `false` if no
    /// such turn runs here.
    pub fn cancel(&self, message_id: &str) -> bool {
        match self.cancels.lock().get(message_id) {
            Some(s) => {
                // A stored permit: a cancel just before the agent starts still stops it.
                s.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Stops the agents of every turn running here because the inbox is stopping (its drain is
    /// over): each turn is recorded interrupted and settled by `on_interrupt` at once, so it runs
    /// again (on another host, or after the restart) only if it has not replied. Returns how
    /// many were told.
    pub fn interrupt_all(&self) -> usize {
        let all = self.cancels.lock();
        for s in all.values() {
            s.interrupted
                .store(true, std::sync::atomic::Ordering::SeqCst);
            s.notify.notify_one();
        }
        all.len()
    }

    /// How long a lease lasts and how often a running turn renews it.
    fn lease_times(&self) -> (Duration, Duration) {
        match &self.active.load().config.store {
            crate::config::StoreConfig::Postgres(p) => (p.lease, p.renew),
            crate::config::StoreConfig::Sqlite => (LEASE, LEASE_RENEWAL),
        }
    }

    /// The public base URL (`public_url`, else the bound address).
    pub fn base_url(&self, snap: &Snapshot) -> String {
        self.public_url(snap)
    }

    /// Turns running now on this host, per route.
    pub fn running_by_route(&self) -> Vec<(String, usize)> {
        let mut r: Vec<(String, usize)> =
            self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        r.sort();
        r
    }

    /// Turns running now on this host, over all routes.
    pub fn running(&self) -> usize {
        self.lock().values().sum()
    }

    /// Waits until no turn runs, or `limit` passes; returns how many still run.
    pub async fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            let n = self.running();
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.running();
            }
        }
    }

    /// Claims and starts a queued turn of `route` if it has a free agent slot here.
    ///
    /// One claim at a time per call: a claim that gets a turn wakes the route again before its
    /// agent starts, so free slots fill one after another, and the first empty claim ends it.
    pub fn wake(self: &Arc<Self>, route: &str) {
        if self.shutdown.is_draining() {
            return;
        }
        // A removed route still drains its queue, one at a time, so each turn can fail visibly.
        let max = self.agent_of(route, |a| a.max_concurrent).unwrap_or(1);
        {
            let mut running = self.lock();
            let n = running.entry(route.to_owned()).or_default();
            if *n >= max {
                return;
            }
            *n += 1;
        }
        let turns = self.clone();
        let route = route.to_owned();
        // Bounded: each spawn holds one of the route's max_concurrent slots.
        tokio::spawn(async move {
            let snap = turns.active.load_full();
            let ran = match turns.claim(&snap, &route).await {
                Ok(Some((claimed, token))) => {
                    turns.wake(&route);
                    if let Err(e) = run::run(&turns, &snap, &route, claimed, token).await {
                        tracing::error!(route = %route, error = %e, "turn could not be recorded");
                    }
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::error!(route = %route, error = %e, "cannot claim a turn");
                    false
                }
            };
            if let Some(n) = turns.lock().get_mut(&route) {
                *n = n.saturating_sub(1);
            }
            turns.idle.notify_waiters();
            if ran {
                turns.wake(&route);
            }
        });
    }

    /// Claims the route's next turn with a fresh token.
    async fn claim(
        &self,
        snap: &Snapshot,
        route: &str,
    ) -> Result<Option<(Claimed, String)>, StoreError> {
        let (token, token_hash) = token::mint();
        // The token lasts while the agent may run, then for the grace; a removed route's turn
        // fails at once, so its token is born expired.
        let lasts = snap
            .config
            .routes
            .get(route)
            .and_then(|r| r.agent())
            .map_or(Duration::ZERO, |a| {
                a.timeout + snap.config.server.reply_grace
            });
        let claim = TurnClaim {
            route: route.to_owned(),
            token_hash,
            token_expires_at: now_ms() + lasts.as_millis() as i64,
            terms: terms(snap, route),
        };
        Ok(self.store.claim_turn(claim).await?.map(|c| (c, token)))
    }

    fn public_url(&self, snap: &Snapshot) -> String {
        match (&snap.config.server.public_url, self.bound.get()) {
            (Some(u), _) => u.clone(),
            (None, Some(addr)) => format!("{}://{addr}", scheme(snap)),
            (None, None) => format!("{}://{}", scheme(snap), snap.config.server.listen),
        }
    }

    /// Reads the active config's agent settings of `route`, if it has an agent.
    fn agent_of<T>(
        &self,
        route: &str,
        read: impl FnOnce(&crate::config::AgentSettings) -> T,
    ) -> Option<T> {
        self.active
            .load()
            .config
            .routes
            .get(route)
            .and_then(|r| r.agent())
            .map(read)
    }

    /// Relays `TURN_FAILED` so the other side does not wait for a reply that will never come:
    /// the end's state, exit code and stable error code. A turn a person rejected carries their
    /// reason; a route with `on_failure = "notify_with_stderr"` also sends the last line of its
    /// agent's stderr.
    pub async fn notify_failure(
        &self,
        message: &Message,
        route: &str,
        end: &TurnEnd,
        to: Vec<String>,
    ) -> Result<(), StoreError> {
        if to.is_empty() {
            return Ok(());
        }
        let mut payload = serde_json::json!({
            "state": end.state.as_str(),
            "exit_code": end.exit_code,
            "signal": end.signal,
            "error": end.error.as_ref().map(|e| e.code.as_str()),
        });
        // Only a person's words go out: an agent's error detail may hold its internals, unless
        // its route opts in.
        if end.state == crate::model::TurnState::Rejected
            && let Some(e) = &end.error
        {
            payload["reason"] = e.detail.clone().into();
        }
        let opted_in = self
            .agent_of(route, |a| {
                a.on_failure == crate::config::OnFailure::NotifyWithStderr
            })
            .unwrap_or(false);
        if opted_in && let Some(line) = last_line(&end.stderr_tail) {
            payload["detail"] = line.into();
        }
        let notice = Outbound {
            id: new_id(),
            in_reply_to: Some(message.id.clone()),
            route: Some(route.to_owned()),
            msg_type: "TURN_FAILED".into(),
            payload: payload.to_string(),
            thread_id: message.thread_id.clone(),
            hops: message.hops + 1,
            created_at: now_ms(),
            agent: None,
        };
        tracing::info!(message_id = %message.id, reply = %notice.id, peers = ?to, "failure notice queued");
        self.relay.enqueue(notice, to).await
    }

    /// The message's sender, if it is (still) a peer: who to tell when its route is gone.
    fn sender_if_peer(snap: &Snapshot, message: &Message) -> Vec<String> {
        snap.config
            .peers
            .contains_key(&message.sender)
            .then(|| message.sender.clone())
            .into_iter()
            .collect()
    }
}

/// The last non-empty line of an agent's output, at most 500 characters: what a failure says
/// in one line.
pub(crate) fn last_line(text: &str) -> Option<String> {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(500).collect())
}

/// What a turn of `route` claimed now promises its agent. A removed route's turn fails before
/// its agent starts (its token is born expired), so it promises nothing.
fn terms(snap: &Snapshot, route: &str) -> TurnTerms {
    snap.turn_terms(route).unwrap_or(TurnTerms {
        reply_types: Vec::new(),
        reply_to: Vec::new(),
        plugin: None,
        limits: crate::model::ReplyLimits {
            per_turn: 0,
            per_minute: 0,
        },
        approve_outbound: None,
        agent: None,
    })
}

/// `https` when the inbox serves TLS itself, else `http`.
fn scheme(snap: &Snapshot) -> &'static str {
    if snap.config.server.tls.is_some() {
        "https"
    } else {
        "http"
    }
}
