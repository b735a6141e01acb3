//! Turn scheduling: a bounded queue per route, at most `max_concurrent` agents per route, and the
//! life of one turn (token, prompt, agent run, record, failure notice).
//!
//! Queued turns live in the store; memory holds only their ids, so a restart re-queues them. A turn
//! reads the route's settings from the snapshot current when it leaves the queue.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::agent::{self, Ending, Invocation, Vars};
use crate::config::{AgentSettings, OnFailure, OnInterrupt};
use crate::prompt::{self, ReplyContext};
use crate::relay::Relay;
use crate::snapshot::{Active, Snapshot};
use crate::store::{Message, Reply, Store, StoreError, TurnEnd, TurnState, now_ms};

#[derive(Debug, Default)]
struct RouteQueue {
    queue: VecDeque<String>,
    /// Slots promised to requests whose write is not committed yet.
    reserved: usize,
    running: usize,
}

/// The route's queue is at `max_queued`.
#[derive(Debug, thiserror::Error)]
#[error("the queue of route {route} is full ({max_queued} turns waiting)")]
pub struct QueueFull {
    /// The route.
    pub route: String,
    /// Its limit.
    pub max_queued: usize,
}

/// Runs agent turns.
pub struct Turns {
    store: Store,
    active: Active,
    relay: Arc<Relay>,
    queues: Mutex<HashMap<String, RouteQueue>>,
    /// Where the server listens, for the default public URL; set once after bind.
    bound: OnceLock<SocketAddr>,
    idle: Notify,
    /// Set at shutdown: no new turns start and no new messages are taken.
    draining: AtomicBool,
}

/// A queue slot held while a message is written; dropping it without [`Slot::fill`] gives it back.
pub struct Slot {
    turns: Arc<Turns>,
    route: String,
    filled: bool,
}

impl Slot {
    /// Queues the turn of the now-committed message `id` and starts it if a slot is free.
    pub fn fill(mut self, id: String) {
        self.filled = true;
        {
            let mut queues = self.turns.lock();
            let q = queues.entry(self.route.clone()).or_default();
            q.reserved -= 1;
            q.queue.push_back(id);
        }
        self.turns.pump(&self.route);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.filled {
            let mut queues = self.turns.lock();
            if let Some(q) = queues.get_mut(&self.route) {
                q.reserved -= 1;
            }
        }
    }
}

/// A new random reply token and the hash the store keeps of it.
pub fn new_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("rt_{}", hex::encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

/// The hash under which a token is stored; tokens themselves are never stored.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Turns {
    /// A scheduler with empty queues.
    pub fn new(store: Store, active: Active, relay: Arc<Relay>) -> Arc<Self> {
        Arc::new(Self {
            store,
            active,
            relay,
            queues: Mutex::new(HashMap::new()),
            bound: OnceLock::new(),
            idle: Notify::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// Records the address the server bound, used when `public_url` is not set.
    pub fn set_bound(&self, addr: SocketAddr) {
        let _ = self.bound.set(addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RouteQueue>> {
        // The critical sections only move counters and ids; a panic cannot leave them half-done.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a queue slot on `route`, or says the queue is full.
    pub fn reserve(self: &Arc<Self>, route: &str, max_queued: usize) -> Result<Slot, QueueFull> {
        let mut queues = self.lock();
        let q = queues.entry(route.to_owned()).or_default();
        if q.queue.len() + q.reserved >= max_queued {
            return Err(QueueFull {
                route: route.to_owned(),
                max_queued,
            });
        }
        q.reserved += 1;
        Ok(Slot {
            turns: self.clone(),
            route: route.to_owned(),
            filled: false,
        })
    }

    /// Re-queues turns the store holds as queued (after a restart), oldest first.
    pub async fn requeue_from_store(self: &Arc<Self>) -> Result<usize, StoreError> {
        let queued = self.store.queued_turns().await?;
        let n = queued.len();
        let mut routes = Vec::new();
        {
            let mut queues = self.lock();
            for (route, id) in queued {
                queues.entry(route.clone()).or_default().queue.push_back(id);
                routes.push(route);
            }
        }
        routes.dedup();
        for r in routes {
            self.pump(&r);
        }
        Ok(n)
    }

    /// Settles turns a previous process left running: re-queued once (`on_interrupt = "rerun"`), or
    /// left `interrupted` and notified. Call before [`Turns::requeue_from_store`].
    pub async fn recover_interrupted(&self) -> Result<(usize, usize), StoreError> {
        let snap = self.active.load_full();
        let (mut rerun, mut failed) = (0, 0);
        for (id, route_name, attempts) in self.store.recover_running().await? {
            let route = snap.config.routes.get(&route_name);
            let settings = route.and_then(|r| r.agent());
            let why = match settings.map(|a| a.on_interrupt) {
                Some(OnInterrupt::Rerun) if attempts < 2 => None,
                Some(OnInterrupt::Rerun) => {
                    Some("the host stopped while the agent ran, again after a re-run")
                }
                Some(OnInterrupt::Fail) => {
                    Some("the host stopped while the agent ran (on_interrupt = \"fail\")")
                }
                None => Some("the host stopped while the agent ran, and the route is gone"),
            };
            let Some(why) = why else {
                tracing::warn!(message_id = %id, route = %route_name, "turn interrupted by a restart; running it again");
                self.store.requeue(&id).await?;
                rerun += 1;
                continue;
            };
            let error = format!("interrupted: {why}");
            tracing::warn!(message_id = %id, route = %route_name, %error, "turn interrupted");
            self.store.fail_interrupted(&id, error.clone()).await?;
            failed += 1;
            let Some(message) = self.store.message(id.clone()).await? else {
                continue;
            };
            let end = TurnEnd {
                state: TurnState::Interrupted,
                exit_code: None,
                signal: None,
                error: Some(error),
                duration_ms: 0,
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            };
            let to = match (route, settings) {
                (Some(r), Some(a)) if a.on_failure == OnFailure::Notify => r.reply_to.clone(),
                (Some(_), _) => Vec::new(),
                (None, _) => self.sender_if_peer(&snap, &message),
            };
            self.notify_failure(&message, &route_name, &end, to).await?;
        }
        Ok((rerun, failed))
    }

    fn sender_if_peer(&self, snap: &Snapshot, message: &Message) -> Vec<String> {
        snap.config
            .peers
            .contains_key(&message.sender)
            .then(|| message.sender.clone())
            .into_iter()
            .collect()
    }

    /// Stops starting turns; what is queued stays in the store for the next start.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Turns waiting in memory queues, over all routes.
    pub fn queued(&self) -> usize {
        self.lock().values().map(|q| q.queue.len()).sum()
    }

    /// Turns running now, over all routes.
    pub fn running(&self) -> usize {
        self.lock().values().map(|q| q.running).sum()
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

    /// Starts queued turns of `route` while it has free agent slots.
    fn pump(self: &Arc<Self>, route: &str) {
        let snap = self.active.load();
        // A removed route still drains its queue, one at a time, so each turn can fail visibly.
        let max = snap
            .config
            .routes
            .get(route)
            .and_then(|r| r.agent())
            .map_or(1, |a| a.max_concurrent);
        loop {
            if self.is_draining() {
                return;
            }
            let id = {
                let mut queues = self.lock();
                let Some(q) = queues.get_mut(route) else {
                    return;
                };
                if q.running >= max {
                    return;
                }
                let Some(id) = q.queue.pop_front() else {
                    return;
                };
                q.running += 1;
                id
            };
            let turns = self.clone();
            let route = route.to_owned();
            // Bounded: each spawn holds one of the route's max_concurrent running slots.
            tokio::spawn(async move {
                let snap = turns.active.load_full();
                if let Err(e) = turns.run_turn(&snap, &route, &id).await {
                    tracing::error!(message_id = %id, route = %route, error = %e, "turn could not be recorded");
                }
                {
                    let mut queues = turns.lock();
                    if let Some(q) = queues.get_mut(&route) {
                        q.running -= 1;
                    }
                }
                turns.idle.notify_waiters();
                turns.pump(&route);
            });
        }
    }

    fn public_url(&self, snap: &Snapshot) -> String {
        match (&snap.config.server.public_url, self.bound.get()) {
            (Some(u), _) => u.clone(),
            (None, Some(addr)) => format!("http://{addr}"),
            (None, None) => format!("http://{}", snap.config.server.listen),
        }
    }

    async fn run_turn(
        &self,
        snap: &Snapshot,
        route_name: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let Some(message) = self.store.message(id.to_owned()).await? else {
            tracing::error!(message_id = %id, "queued turn has no message; skipped");
            return Ok(());
        };
        let route = snap.config.routes.get(route_name);
        let Some(settings) = route.and_then(|r| r.agent()) else {
            let end = TurnEnd {
                state: TurnState::Failed,
                exit_code: None,
                signal: None,
                error: Some(format!(
                    "route_removed: route {route_name} is no longer an agent route in the config"
                )),
                duration_ms: 0,
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            };
            self.store.end_turn(id, end.clone(), now_ms()).await?;
            tracing::warn!(message_id = %id, route = %route_name, "turn failed: route removed");
            // The route's reply_to is gone with it; tell the sender, so it does not wait forever.
            let to = self.sender_if_peer(snap, &message);
            return self.notify_failure(&message, route_name, &end, to).await;
        };
        let route = route.expect("an agent route was found above");

        let (token, token_hash) = new_token();
        let grace = snap.config.server.reply_grace;
        let started = now_ms();
        let deadline_ms = started + (settings.timeout + grace).as_millis() as i64;
        self.store
            .start_turn(id, route_name, token_hash, deadline_ms)
            .await?;
        let url = format!("{}/send", self.public_url(snap));
        let ctx = ReplyContext {
            url: url.clone(),
            token: token.clone(),
            reply_types: route.reply_types.clone(),
            deadline: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(deadline_ms as u64),
            )
            .to_string(),
        };
        // The turn-rendering hook: a route's plugin may write the agent's text itself.
        let prompt = match snap.plugins.get(route_name) {
            None => prompt::render(&message, &ctx),
            Some(p) => {
                let plugin_ctx = crate::plugins::ReplyContext {
                    url: ctx.url.clone(),
                    auth_header: format!("Authorization: Bearer {}", ctx.token),
                    reply_types: ctx.reply_types.clone(),
                    deadline: ctx.deadline.clone(),
                };
                let m = crate::api::plugin_message(&message);
                match p
                    .plugin
                    .render_turn(&m, &plugin_ctx, &p.spec.config_json)
                    .await
                {
                    Ok(Some(text)) => text,
                    Ok(None) => prompt::render(&message, &ctx),
                    Err(e) => {
                        tracing::error!(message_id = %id, plugin = %p.name(), error = %e, "render-turn failed");
                        let end = TurnEnd {
                            state: TurnState::Failed,
                            exit_code: None,
                            signal: None,
                            error: Some(format!("plugin_failed: plugin {} failed: {e}", p.name())),
                            duration_ms: 0,
                            stdout_tail: String::new(),
                            stderr_tail: String::new(),
                        };
                        let token_expires = now_ms() + grace.as_millis() as i64;
                        self.store.end_turn(id, end.clone(), token_expires).await?;
                        if settings.on_failure == OnFailure::Notify {
                            self.notify_failure(&message, route_name, &end, route.reply_to.clone())
                                .await?;
                        }
                        return Ok(());
                    }
                }
            }
        };
        tracing::info!(message_id = %id, route = %route_name, thread = %message.thread_id, "turn started");
        let outcome = agent::run(invocation(snap, settings, &message, prompt, &url, token)).await;
        let state = match outcome.ending {
            Ending::Done => TurnState::Done,
            Ending::Failed => TurnState::Failed,
            Ending::TimedOut => TurnState::TimedOut,
        };
        let end = TurnEnd {
            state,
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            // Stored as `code: detail`, so readers and TURN_FAILED get a stable code.
            error: outcome.error.as_ref().map(|e| format!("{}: {e}", e.code())),
            duration_ms: outcome.duration.as_millis() as i64,
            stdout_tail: outcome.stdout_tail,
            stderr_tail: outcome.stderr_tail,
        };
        tracing::info!(
            message_id = %id, route = %route_name, state = state.as_str(), exit_code = ?end.exit_code,
            duration_ms = end.duration_ms, error = ?end.error, "turn ended"
        );
        let token_expires = now_ms() + grace.as_millis() as i64;
        self.store.end_turn(id, end.clone(), token_expires).await?;
        if state != TurnState::Done && settings.on_failure == OnFailure::Notify {
            self.notify_failure(&message, route_name, &end, route.reply_to.clone())
                .await?;
        }
        Ok(())
    }

    /// Relays `TURN_FAILED` so the other side does not wait for a reply that will never come.
    async fn notify_failure(
        &self,
        message: &Message,
        route: &str,
        end: &TurnEnd,
        to: Vec<String>,
    ) -> Result<(), StoreError> {
        if to.is_empty() {
            return Ok(());
        }
        let payload = serde_json::json!({
            "state": end.state.as_str(),
            "exit_code": end.exit_code,
            "error": end.error.as_deref().map(|e| e.split(':').next().unwrap_or(e)),
        });
        let reply = Reply {
            id: crate::new_id(),
            in_reply_to: Some(message.id.clone()),
            route: Some(route.to_owned()),
            msg_type: "TURN_FAILED".into(),
            payload: payload.to_string(),
            thread_id: message.thread_id.clone(),
            hops: message.hops + 1,
            created_at: now_ms(),
        };
        tracing::info!(message_id = %message.id, reply = %reply.id, peers = ?to, "failure notice queued");
        self.store.insert_reply(reply, to).await?;
        self.relay.wake();
        Ok(())
    }
}

fn invocation(
    snap: &Snapshot,
    settings: &AgentSettings,
    m: &Message,
    prompt: String,
    url: &str,
    token: String,
) -> Invocation {
    Invocation {
        command: settings.command.clone(),
        prompt,
        vars: Vars {
            message_id: m.id.clone(),
            thread_id: m.thread_id.clone(),
            route: m.route.clone(),
            msg_type: m.msg_type.clone(),
        },
        stdin: settings.stdin,
        env: vec![
            ("INBOX_MESSAGE_ID".into(), m.id.clone()),
            ("INBOX_THREAD_ID".into(), m.thread_id.clone()),
            ("INBOX_ROUTE".into(), m.route.clone()),
            ("INBOX_MESSAGE_TYPE".into(), m.msg_type.clone()),
            ("INBOX_REPLY_URL".into(), url.to_owned()),
            ("INBOX_REPLY_TOKEN".into(), token),
        ],
        env_remove: snap.config.secret_vars.clone(),
        timeout: settings.timeout,
        kill_grace: settings.kill_grace,
        output_cap: settings.output_cap,
        // Relative paths in the command resolve against routes.toml's directory, like every path in it.
        work_dir: Some(snap.config.base_dir.clone()),
        temp_dir: None,
    }
}
