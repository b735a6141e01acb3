//! The inbox's upkeep, each a loop the wiring spawns: probing the store, pruning finished
//! records, and on a shared store the heartbeat, lease takeover, wake-ups and events between
//! hosts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Inbox;
use crate::{console, model, store};

/// How often finished records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often the store is probed with a small write while it cannot write (so `/readyz`
/// recovers without traffic), and while it can (so a full disk is seen without traffic).
const PROBE_DOWN: Duration = Duration::from_secs(1);
const PROBE_UP: Duration = Duration::from_secs(15);

/// How often a host of a shared store beats, looks for lost leases, and looks for queued work
/// in case a `NOTIFY` was missed.
const CLUSTER_POLL: Duration = Duration::from_secs(5);

impl Inbox {
    /// Probes the store with a small write, marking it up or down for `/readyz`.
    pub async fn probe_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let inbox = self;
        loop {
            let every = if inbox.store_health.is_down() {
                PROBE_DOWN
            } else {
                PROBE_UP
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            match inbox.store.probe().await {
                Ok(()) => inbox.store_health.recovered(),
                Err(store::StoreError::Unavailable(why)) => inbox.store_health.failed(&why),
                Err(e) => tracing::warn!(error = %e, "the store's write probe failed"),
            }
        }
    }

    /// On a store other hosts share: starts work any host queued as soon as `LISTEN` hears of it
    /// (a turn for its route, a due delivery for the relay), passes other hosts' events into this
    /// host's feed, and every [`CLUSTER_POLL`] records this host's heartbeat, takes over turns whose
    /// host stopped renewing their lease (settled by `on_interrupt`, as after a restart) and looks
    /// for queued work once more, in case a wake-up was lost. Does nothing on a store of one's own.
    pub async fn cluster_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let inbox = self;
        let Some(mut signals) = inbox.store.signals() else {
            return;
        };
        let me = {
            let snap = inbox.active.load();
            format!("{}/{}", snap.config.server.host_id, super::incarnation())
        };
        let mut tick = tokio::time::interval(CLUSTER_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                signal = signals.recv() => {
                    match signal {
                        Ok(store::Signal::Turn(route)) => inbox.turns.wake(&route),
                        Ok(store::Signal::Delivery) => inbox.relay.wake(),
                        // Only the host that runs it has it; the others find nothing to stop.
                        Ok(store::Signal::Cancel(message_id)) => {
                            inbox.turns.cancel(&message_id);
                        }
                        // Kept until the longest a session lasts; the store has its exact expiry.
                        Ok(store::Signal::SignedOut(id)) => {
                            let now = model::now_ms();
                            inbox.sessions.insert(&id, now + console::SESSION_MS, now);
                        }
                        Ok(store::Signal::Event { origin, json }) if origin != me => {
                            match serde_json::from_str(&json) {
                                Ok(event) => inbox.events.publish_remote(event),
                                Err(e) => tracing::debug!(error = %e, "an event from another host this version cannot read"),
                            }
                        }
                        Ok(store::Signal::Event { .. }) => {}
                        Ok(store::Signal::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            if let Err(e) = inbox.load_signed_out().await {
                                tracing::warn!(error = %e, "cannot read the signed-out console sessions");
                            }
                            let _ = inbox.turns.start().await;
                            inbox.relay.wake();
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                    continue;
                }
                _ = stop.changed() => return,
            }
            if *stop.borrow() || inbox.shutdown.is_draining() {
                continue;
            }
            let beat = {
                let snap = inbox.active.load();
                model::HostBeat {
                    host_id: snap.config.server.host_id.clone(),
                    incarnation: me.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    config_hash: snap.cluster_hash.clone(),
                    running: inbox.turns.running() as u32,
                    last_seen: 0,
                    age_ms: 0,
                }
            };
            if let Err(e) = inbox.store.heartbeat(beat).await {
                tracing::warn!(error = %e, "cannot record this host's heartbeat");
            }
            match inbox.turns.recover_interrupted().await {
                Ok((0, 0)) => {}
                Ok((rerun, failed)) => {
                    tracing::warn!(
                        rerun,
                        failed,
                        "took over turns whose host stopped renewing their lease"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for lost leases"),
            }
            if let Err(e) = inbox.turns.start().await {
                tracing::warn!(error = %e, "cannot look for queued turns");
            }
            inbox.relay.wake();
        }
    }

    /// Forwards this host's events to the other hosts of a shared store, a batch per round trip,
    /// off every request's path. Does nothing on a store of one's own.
    pub async fn event_bridge(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let inbox = self;
        if !inbox.store.is_shared() {
            return;
        }
        let mut local = inbox.events.subscribe_local();
        loop {
            let first = tokio::select! {
                e = local.recv() => e,
                _ = stop.changed() => return,
            };
            let mut batch = Vec::new();
            match first {
                Ok(e) => batch.push(e),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "events not forwarded to the other hosts (too many at once)"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            while batch.len() < 100 {
                match local.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let json: Vec<String> = batch
                .iter()
                .filter_map(|e| serde_json::to_string(e).ok())
                .collect();
            if let Err(e) = inbox.store.publish_events(&json).await {
                tracing::debug!(error = %e, "cannot forward events to the other hosts");
            }
        }
    }

    /// Deletes finished records past `retention_days`, at start and then hourly.
    pub async fn prune_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let inbox = self;
        loop {
            let server = inbox.active.load().config.server.clone();
            let now = model::now_ms();
            let before = now - server.retention.as_millis() as i64;
            let dedup_before = now - server.dedup_window.as_millis() as i64;
            // Each call deletes a bounded batch; repeat until a batch comes back short.
            loop {
                match inbox.store.prune(before, dedup_before).await {
                    Ok(n) if n > 0 => tracing::info!(records = n, "pruned finished records"),
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "pruning failed");
                        break;
                    }
                }
                if *stop.borrow() {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
