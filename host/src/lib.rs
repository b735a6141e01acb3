//! agent-inbox: a message router that lets AI agents talk to each other over HTTP.
//!
//! # Layout
//! - [`config`]: routes.toml schema, loading and validation.
//! - [`router`]: pure routing of (sender, type) to a route.
//! - [`snapshot`]: the active config and everything derived from it, swapped whole.
//! - [`server`]: accept loop, connection limit, graceful drain.
//! - [`api`]: the HTTP handlers and the one error-to-response mapping.
//! - [`store`]: durable state in SQLite with group commit.
//! - [`turns`]: per-route queues and the life of one agent turn.
//! - [`agent`]: running one agent subprocess, bounded in time and output.
//! - [`plugins`]: the WebAssembly plugin engine (wasmtime), sandboxed hook calls.
//! - [`prompt`]: the text the agent receives, with reply instructions.
//! - [`relay`]: delivering replies to peers with retries.
//! - [`reload`]: watching routes.toml and its plugins, swapping in a new snapshot.
//! - [`cli`]: the `agent-inbox` command line.
//! - [`client`]: the CLI's HTTP client for a running inbox.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod plugins;
pub mod prompt;
pub mod relay;
pub mod reload;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod turns;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::relay::Relay;
use crate::snapshot::{Active, Snapshot};
use crate::store::Store;
use crate::turns::Turns;

/// How often finished records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Everything a request handler shares.
pub struct Inbox {
    /// The config snapshot in force.
    pub active: Active,
    /// Durable state.
    pub store: Store,
    /// The turn scheduler.
    pub turns: Arc<Turns>,
    /// The outbox delivery loop.
    pub relay: Arc<Relay>,
    /// Reloads the config, when it came from a file.
    pub reloader: Option<Arc<reload::Reloader>>,
}

/// A new time-ordered unique id (UUIDv7), for messages and replies.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Runs an inbox on `listener` until `shutdown` completes, then drains and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Store::open(&config.server.data_dir, config.server.synchronous)?;
    let max_connections = config.server.max_connections;
    let max_in_flight = config.relay.max_in_flight;
    let drain = config.server.drain;
    let source = config.source.clone();
    let engine = snapshot::engine(&config).context("cannot start the plugin engine")?;
    let first = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || Snapshot::build(config, &engine))
            .await
            .context("the plugin loader failed")?
            .map_err(|e| anyhow::anyhow!("cannot load plugins: {e}"))?
    };
    let active = snapshot::active(first);
    let relay = Relay::new(store.clone(), active.clone(), max_in_flight);
    let active_for_reload = active.clone();
    let turns = Turns::new(store.clone(), active.clone(), relay.clone());
    let addr = listener.local_addr().context("listener has no address")?;
    turns.set_bound(addr);
    let inbox = Arc::new(Inbox {
        active,
        store,
        turns: turns.clone(),
        relay: relay.clone(),
        reloader: source.map(|path| {
            let build: reload::Builder = Arc::new(move |config| Snapshot::build(config, &engine));
            reload::Reloader::new(path, active_for_reload, build)
        }),
    });
    let (rerun, failed) = turns
        .recover_interrupted()
        .await
        .context("cannot recover interrupted turns")?;
    if rerun + failed > 0 {
        tracing::warn!(rerun, failed, "turns were interrupted by the last stop");
    }
    let requeued = turns
        .requeue_from_store()
        .await
        .context("cannot re-queue stored turns")?;
    if requeued > 0 {
        tracing::info!(requeued, "re-queued turns from the store");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay_task = tokio::spawn(relay.run(stop_rx.clone()));
    let prune_task = tokio::spawn(prune_loop(inbox.clone(), stop_rx.clone()));
    let mut reload_tasks = Vec::new();
    if let Some(reloader) = &inbox.reloader {
        reload_tasks.push(tokio::spawn(reloader.clone().watch(stop_rx.clone())));
        reload_tasks.push(tokio::spawn(reload_on_sighup(reloader.clone(), stop_rx)));
    }
    tracing::info!(%addr, "listening");
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        inbox.clone(),
        max_connections,
        async move {
            let _ = server_stopped.await;
        },
    ));
    shutdown.await;
    // Drain: new messages get 503 while running turns finish; /send stays open so their agents can
    // still reply, and the relay keeps delivering.
    turns.begin_drain();
    tracing::info!(
        running = turns.running(),
        drain_secs = drain.as_secs(),
        "shutting down: waiting for running turns"
    );
    let left = turns.wait_idle(drain).await;
    if left > 0 {
        // Their agents keep running and can still reply after a restart (their tokens are stored);
        // on the next start the turns are settled by on_interrupt.
        tracing::warn!(
            running = left,
            "turns still running at exit; left to recovery"
        );
    }
    let _ = server_stop.send(());
    let _ = server.await;
    let _ = stop_tx.send(true);
    let _ = relay_task.await;
    let _ = prune_task.await;
    for t in reload_tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Deletes finished records past `retention_days`, at start and then hourly.
async fn prune_loop(inbox: Arc<Inbox>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let server = inbox.active.load().config.server.clone();
        let now = store::now_ms();
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

/// Reloads the config on SIGHUP, the Unix convention for "re-read your config".
async fn reload_on_sighup(
    reloader: Arc<reload::Reloader>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change or `agent-inbox reload`");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = reloader.reload("SIGHUP").await;
            }
            _ = stop.changed() => return,
        }
    }
}
