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
//! - [`prompt`]: the text the agent receives, with reply instructions.
//! - [`relay`]: delivering replies to peers with retries.
//! - [`cli`]: the `agent-inbox` command line.
//! - [`client`]: the CLI's HTTP client for a running inbox.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod prompt;
pub mod relay;
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

/// How long running turns get to finish after shutdown before the host exits without them.
const DRAIN_TURNS: Duration = Duration::from_secs(30);

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
    let store = Store::open(&config.server.data_dir)?;
    let max_connections = config.server.max_connections;
    let max_in_flight = config.relay.max_in_flight;
    let active = snapshot::active(Snapshot::new(config));
    let relay = Relay::new(store.clone(), active.clone(), max_in_flight);
    let turns = Turns::new(store.clone(), active.clone(), relay.clone());
    let addr = listener.local_addr().context("listener has no address")?;
    turns.set_bound(addr);
    let inbox = Arc::new(Inbox {
        active,
        store,
        turns: turns.clone(),
        relay: relay.clone(),
    });
    let requeued = turns
        .requeue_from_store()
        .await
        .context("cannot re-queue stored turns")?;
    if requeued > 0 {
        tracing::info!(requeued, "re-queued turns from the store");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay_task = tokio::spawn(relay.run(stop_rx));
    tracing::info!(%addr, "listening");
    server::serve(listener, inbox, max_connections, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = relay_task.await;
    let left = turns.wait_idle(DRAIN_TURNS).await;
    if left > 0 {
        tracing::warn!(
            running = left,
            "turns still running at exit; their agents keep running"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
