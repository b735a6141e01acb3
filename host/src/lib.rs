//! agent-inbox: a message router that lets AI agents talk to each other over HTTP.
//!
//! The module map, the paths of a message and a reply through it, and the invariants are in one
//! place: ARCHITECTURE.md at the repository root. This file is the wiring: [`run`] builds the
//! parts, recovers, serves and drains.

/// mimalloc for every binary that links the inbox. glibc's malloc spent about 12% of the ack
/// path's CPU (a buffer allocated on a tokio worker is often freed on another thread, and glibc
/// consolidates and locks arenas for that); BENCHMARKS.md has the before and after.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod a2a;
pub mod agent;
pub mod approval;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod events;
pub mod gateway;
pub mod hooks;
pub mod http;
pub mod inbox;
pub mod limiter;
pub mod listener;
pub mod live;
pub mod log;
pub mod metrics;
pub mod model;
#[cfg(any(test, feature = "fuzzing"))]
pub mod oracles;
pub mod plugins;
pub mod prompt;
#[cfg(test)]
mod properties;
pub mod rate;
pub mod relay;
pub mod reload;
pub mod router;
pub mod server;
pub mod shutdown;
pub mod signature;
pub mod snapshot;
pub mod ssrf;
pub mod store;
mod subreaper;
pub mod tls;
pub mod token;
pub mod turns;
pub mod wire;

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

/// Beyond the agents' kill grace, how long a stop waits for the turns it interrupted to record
/// it.
const INTERRUPT_SLACK: Duration = Duration::from_secs(5);

/// How often finished records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

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
            owner: format!("{}/{}", config.server.host_id, incarnation()),
            lease: p.lease,
        }),
    }
}

/// This process's start id: with the host id, the holder of its leases, so a restarted host
/// never takes an older lease for its own.
pub fn incarnation() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(model::new_id)
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
    let relay = Relay::new(store.clone(), active.clone(), events.clone(), max_in_flight);
    let turns = Turns::new(
        store.clone(),
        active.clone(),
        relay.clone(),
        events.clone(),
        stopping.clone(),
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
    let inbox = Arc::new(Inbox {
        approvals: approvals.clone(),
        active,
        store,
        turns: turns.clone(),
        relay: relay.clone(),
        events,
        shutdown: stopping.clone(),
        reloader,
        limiter: limiter::AuthLimiter::default(),
        send_rate: rate::SendRate::default(),
        ready: std::sync::atomic::AtomicBool::new(false),
        sessions: console::Revoked::default(),
        store_health: inbox::StoreHealth::default(),
        refusals: rate::Every::default(),
    });
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
    metrics::get().set_config(&inbox.active.load().hash);
    inbox.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let relay_task = tokio::spawn(relay.run(stopping.stopped()));
    let prune_task = tokio::spawn(prune_loop(inbox.clone(), stopping.stopped()));
    let probe_task = tokio::spawn(probe_loop(inbox.clone(), stopping.stopped()));
    let push_task = tokio::spawn(a2a::push::run(inbox.clone(), stopping.stopped()));
    let timeout_task = tokio::spawn(approvals.clone().run_timeouts(stopping.stopped()));
    let cluster_task = tokio::spawn(cluster_loop(inbox.clone(), stopping.stopped()));
    let bridge_task = tokio::spawn(event_bridge(inbox.clone(), stopping.stopped()));
    let notify_task = tokio::spawn(approvals.run_notifier(notify_rx, stopping.stopped()));
    let mut reload_tasks = Vec::new();
    if let Some(reloader) = &inbox.reloader {
        reload_tasks.push(tokio::spawn(reloader.clone().watch(stopping.stopped())));
        reload_tasks.push(tokio::spawn(reload_on_sighup(
            reloader.clone(),
            stopping.stopped(),
        )));
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
    let _ = notify_task.await;
    for t in reload_tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often the store is probed with a small write while it cannot write (so `/readyz`
/// recovers without traffic), and while it can (so a full disk is seen without traffic).
const PROBE_DOWN: Duration = Duration::from_secs(1);
const PROBE_UP: Duration = Duration::from_secs(15);

/// Probes the store with a small write, marking it up or down for `/readyz`.
async fn probe_loop(inbox: Arc<Inbox>, mut stop: tokio::sync::watch::Receiver<bool>) {
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
async fn cluster_loop(inbox: Arc<Inbox>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(mut signals) = inbox.store.signals() else {
        return;
    };
    let me = {
        let snap = inbox.active.load();
        format!("{}/{}", snap.config.server.host_id, incarnation())
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
async fn event_bridge(inbox: Arc<Inbox>, mut stop: tokio::sync::watch::Receiver<bool>) {
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

/// How often a host of a shared store beats, looks for lost leases, and looks for queued work
/// in case a `NOTIFY` was missed.
const CLUSTER_POLL: Duration = Duration::from_secs(5);

/// Deletes finished records past `retention_days`, at start and then hourly.
async fn prune_loop(inbox: Arc<Inbox>, mut stop: tokio::sync::watch::Receiver<bool>) {
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

/// ARCHITECTURE.md's invariants, checked on the source: which module may name which.
#[cfg(test)]
pub(crate) mod architecture {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Every `.rs` file under `host/src`, for the checks made on the source itself.
    pub(crate) fn source_files() -> Vec<std::path::PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).expect("read src").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        files
    }

    /// Top-level module → the top-level modules its files name through `crate::`.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let files = source_files();
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in files {
            let rel = f.strip_prefix(&src).expect("under src");
            let module = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|s| s.trim_end_matches(".rs").to_owned())
                .expect("a name");
            let text = std::fs::read_to_string(&f).expect("read");
            let entry = map.entry(module.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    group[..group.find('}').unwrap_or(0)]
                        .split(',')
                        .map(|s| s.trim().split("::").next().unwrap_or(""))
                        .collect()
                } else {
                    vec![
                        rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                            .next()
                            .unwrap_or(""),
                    ]
                };
                for n in names {
                    if !n.is_empty()
                        && n != module
                        && n.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    {
                        entry.insert(n.to_owned());
                    }
                }
            }
        }
        map
    }

    #[test]
    fn invariants_hold() {
        let map = imports();
        let names = |m: &str| map.get(m).cloned().unwrap_or_default();
        let forbidden: &[(&str, &[&str])] = &[
            // The HTTP layer never runs an agent.
            ("http", &["agent", "turns"]),
            ("server", &["agent", "turns"]),
            // The router does no I/O and knows only the config.
            (
                "router",
                &["store", "plugins", "http", "relay", "turns", "agent"],
            ),
            // The plugin engine never imports HTTP (or anything but the model).
            (
                "plugins",
                &[
                    "http", "server", "inbox", "wire", "store", "turns", "relay", "config",
                ],
            ),
            // The turn scheduler never calls into the HTTP layer.
            ("turns", &["http", "server", "inbox"]),
            // Storage knows nothing of plugins.
            (
                "store",
                &[
                    "plugins", "hooks", "snapshot", "http", "turns", "relay", "config",
                ],
            ),
            ("model", &["store", "config", "plugins", "http"]),
            // The A2A door speaks JSON values to `http`, never HTTP types back, and runs no
            // agent itself.
            ("a2a", &["http", "server", "agent", "turns"]),
        ];
        for (module, banned) in forbidden {
            let bad: Vec<_> = banned
                .iter()
                .filter(|b| names(module).contains(**b))
                .collect();
            assert!(bad.is_empty(), "{module} must not name {bad:?}");
        }
        // Leaves everyone may use name nothing of the crate.
        for leaf in ["metrics", "rate", "ssrf"] {
            assert!(names(leaf).is_empty(), "{leaf} names {:?}", names(leaf));
        }
        // No module names one that names it back, at any distance.
        for start in map.keys().filter(|m| *m != "lib" && *m != "main") {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<String> = names(start).into_iter().collect();
            while let Some(m) = todo.pop() {
                assert_ne!(&m, start, "{start} is part of an import cycle");
                if seen.insert(m.clone()) {
                    todo.extend(names(&m));
                }
            }
        }
    }

    #[test]
    fn only_the_store_names_the_database_library() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let under_store = p.starts_with(src.join("store"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                // This test's own file names them in this check; the check looks for uses.
                for db in ["rusqlite", "tokio_postgres", "deadpool_postgres"] {
                    let uses =
                        text.contains(&format!("{db}::")) || text.contains(&format!("use {db}"));
                    assert!(
                        under_store || !uses || p.ends_with("lib.rs"),
                        "{} names {db}",
                        p.display()
                    );
                }
            }
        }
    }
}
