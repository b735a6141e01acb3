//! The wiring: builds the parts of an inbox, recovers what the last stop left, serves, and
//! drains. It may name every module; only the command line names it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::events::Events;
use crate::inbox::Inbox;
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::snapshot::{Files, Snapshot};
use crate::store::Store;
use crate::turns::Turns;
use crate::{approval, config, http, inbox, listener, metrics, reload, server, snapshot, store};

/// Beyond the agents' kill grace, how long a stop waits for the turns it interrupted to record
/// it.
const INTERRUPT_SLACK: Duration = Duration::from_secs(5);

/// The store settings a config names; `owner` is this process's incarnation for leases.
pub fn store_settings(config: &Config) -> store::Settings {
    match &config.store {
        config::StoreConfig::Sqlite => store::Settings::Sqlite {
            data_dir: config.server.data_dir.clone(),
            synchronous: config.server.synchronous,
            // A restart that overlaps the old process's drain waits for it to exit: its drain,
            // then the grace its agents get before they are killed.
            lock_wait: config.server.drain + config.longest_kill_grace(),
        },
        config::StoreConfig::Postgres(p) => store::Settings::Postgres(store::PgSettings {
            url: p.url.expose().to_owned(),
            pool_size: p.pool_size,
            tls: match p.sslmode {
                config::SslMode::Disable => store::PgTls::Disable,
                config::SslMode::Require => store::PgTls::Require,
                config::SslMode::VerifyFull => store::PgTls::VerifyFull {
                    ca_file: p.ca_file.clone(),
                },
            },
            schema: p.schema.clone(),
            owner: format!("{}/{}", config.server.host_id, inbox::incarnation()),
            lease: p.lease,
        }),
    }
}

/// Runs an inbox on `listener` until `shutdown` completes, then drains and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Store::open(&store_settings(&config)).await?;
    run_on(config, store, listener, shutdown).await
}

/// Opens the store (a SQLite data directory is this process's alone from here on), then listens
/// (on the socket a service manager passed, else on `[server] listen`) and runs the inbox until `shutdown` completes: `agent-inbox serve`.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let store = Store::open(&store_settings(&config)).await?;
    let listener = listener::open(config.server.listen).await?;
    run_on(config, store, listener, shutdown).await
}

/// Runs an inbox on an open store and a bound listener until `shutdown` completes.
async fn run_on(
    config: Config,
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let max_connections = config.server.max_connections;
    let max_in_flight = config.relay.max_in_flight;
    let drain = config.server.drain;
    let grace = config.longest_kill_grace();
    let source = config.source.clone();
    let engine = snapshot::engine(&config).context("cannot start the plugin engine")?;
    let first = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let files = Files::read(&config)?;
            Snapshot::build(config, files, &engine)
        })
        .await
        .context("the plugin loader failed")?
        .context("cannot load plugins")?
    };
    let active = snapshot::active(first);
    let events = Events::new();
    let stopping = Arc::new(Shutdown::new());
    // One client for remote A2A agents, so each remote has one call budget.
    let a2a = Arc::new(crate::a2a_client::A2aClient::default());
    let relay = Relay::new(
        store.clone(),
        active.clone(),
        events.clone(),
        max_in_flight,
        a2a.clone(),
    );
    let turns = Turns::new(
        store.clone(),
        active.clone(),
        relay.clone(),
        events.clone(),
        stopping.clone(),
        a2a.clone(),
    );
    let addr = listener.local_addr().context("listener has no address")?;
    turns.set_bound(addr);
    store.note_holder(&addr.to_string());
    let reloader = source.map(|path| {
        let build: reload::Builder =
            Arc::new(move |config, files| Snapshot::build(config, files, &engine));
        reload::Reloader::new(path, active.clone(), build, events.clone())
    });
    let (approvals, notify_rx) = approval::Approvals::new(
        store.clone(),
        active.clone(),
        relay.clone(),
        turns.clone(),
        events.clone(),
    );
    let inbox = Arc::new(Inbox::new(inbox::Parts {
        approvals: approvals.clone(),
        active: active.clone(),
        store,
        turns: turns.clone(),
        relay: relay.clone(),
        events,
        shutdown: stopping.clone(),
        a2a,
    }));
    let replies: Arc<dyn crate::turns::Replies> = inbox.clone();
    turns.set_replies(Arc::downgrade(&replies));
    inbox
        .load_signed_out()
        .await
        .context("cannot read the signed-out console sessions")?;
    let (rerun, failed) = turns
        .recover_interrupted()
        .await
        .context("cannot recover interrupted turns")?;
    if rerun + failed > 0 {
        tracing::warn!(rerun, failed, "turns were interrupted by the last stop");
    }
    let queued = turns.start().await.context("cannot start queued turns")?;
    if queued > 0 {
        tracing::info!(queued, "turns queued from before the start");
    }
    let m = metrics::get();
    m.set_config(&active.load().hash);
    m.follow(None, &crate::reload::known(&active.load().config));
    let codes: Vec<_> = crate::http::ApiError::examples()
        .iter()
        .map(|e| e.code())
        .collect();
    m.know_codes(codes);
    inbox.mark_ready();
    let relay_task = tokio::spawn(relay.run(stopping.stopped()));
    let prune_task = tokio::spawn(inbox.clone().prune_loop(stopping.stopped()));
    let probe_task = tokio::spawn(inbox.clone().probe_loop(stopping.stopped()));
    let push_task = tokio::spawn(inbox.clone().push_loop(stopping.stopped()));
    let timeout_task = tokio::spawn(approvals.clone().run_timeouts(stopping.stopped()));
    let cluster_task = tokio::spawn(inbox.clone().cluster_loop(stopping.stopped()));
    let bridge_task = tokio::spawn(inbox.clone().event_bridge(stopping.stopped()));
    let follow_task = tokio::spawn(inbox.clone().follow_loop(stopping.stopped()));
    let notify_task = tokio::spawn(approvals.run_notifier(notify_rx, stopping.stopped()));
    let mut reload_tasks = Vec::new();
    if let Some(reloader) = &reloader {
        reload_tasks.push(tokio::spawn(reloader.clone().watch(stopping.stopped())));
        reload_tasks.push(tokio::spawn(reload_on_sighup(
            reloader.clone(),
            stopping.stopped(),
        )));
    }
    tracing::info!(%addr, "listening");
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let door = Arc::new(http::Door::new(inbox.clone(), reloader));
    let server = tokio::spawn(server::serve(listener, door, max_connections, async move {
        let _ = server_stopped.await;
    }));
    shutdown.await;
    // Drain: new messages get 503 while running turns finish; /send stays open so their agents can
    // still reply, and the relay keeps delivering.
    stopping.begin_drain();
    tracing::info!(
        running = turns.running(),
        drain_secs = drain.as_secs(),
        "shutting down: waiting for running turns"
    );
    let left = turns.wait_idle(drain).await;
    if left > 0 {
        // No agent outlives its inbox: one still running could answer after its turn ran
        // again, and the peer would get two answers. Each is ended (its process group, after
        // its kill grace) and its turn settled by on_interrupt now: run again at the next start
        // (or on another host) unless it has replied.
        let told = turns.interrupt_all();
        tracing::warn!(
            running = left,
            ended = told,
            "the drain is over; ending the agents still running (their turns are interrupted)"
        );
        let still = turns.wait_idle(grace + INTERRUPT_SLACK).await;
        if still > 0 {
            tracing::error!(
                running = still,
                "turns still running at exit; left to the next start's recovery"
            );
        }
    }
    let _ = server_stop.send(());
    let _ = server.await;
    stopping.stop();
    let _ = relay_task.await;
    let _ = prune_task.await;
    let _ = probe_task.await;
    let _ = push_task.await;
    let _ = timeout_task.await;
    let _ = cluster_task.await;
    let _ = bridge_task.await;
    let _ = follow_task.await;
    let _ = notify_task.await;
    for t in reload_tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
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
                let _ = reloader.reload("SIGHUP", false).await;
            }
            _ = stop.changed() => return,
        }
    }
}
