//! Live reload of routes.toml and its plugins: watch, rebuild off the request path, swap whole.
//!
//! A reload reads and validates the file and builds a new [`Snapshot`] on a blocking thread, then swaps
//! it in with one atomic store. Requests in flight keep the snapshot they loaded. A reload that fails
//! at any step keeps the last good snapshot and records why, for `GET /status`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigErrors};
use crate::events::{Event, Events};
use crate::model::now_ms;
use crate::snapshot::{Active, BuildErrors, Files, Snapshot};

/// Editors write a file in several steps (truncate, write, rename); wait this long after the last
/// event, and then until the files' sizes and times stop changing for as long, before reading, so
/// one save is one reload, read whole.
const SETTLE: Duration = Duration::from_millis(100);

/// The longest a reload waits for files that keep changing (a slow copy) before reading them.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// What `GET /status` shows about reloads.
#[derive(Debug, Clone)]
pub struct Status {
    /// Hash of the config in force.
    pub config_hash: String,
    /// When it was loaded (ms since the epoch).
    pub loaded_at: i64,
    /// Why the last reload failed, if it did (cleared by a good one).
    pub last_reload_error: Option<String>,
    /// Reloads that swapped in a new config.
    pub reloads_ok: u64,
    /// Reloads that kept the old config.
    pub reloads_failed: u64,
    /// Times the files were read again (change events, SIGHUP, `agent-inbox reload`), whether or
    /// not they had changed.
    pub checks: u64,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot is in force, with this hash.
    Swapped(String),
    /// The files hash the same as the config in force; nothing to do.
    Unchanged,
}

/// Builds a snapshot from a config and its files; plugins are compiled here, so it runs on a
/// blocking thread.
pub type Builder = Arc<dyn Fn(Config, Files) -> Result<Snapshot, BuildErrors> + Send + Sync>;

/// Why a reload kept the config in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// routes.toml could not be read or is not valid.
    #[error("{}: {errors}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Every problem in it.
        errors: ConfigErrors,
    },
    /// A plugin file could not be read or loaded.
    #[error(transparent)]
    Build(#[from] BuildErrors),
    /// The file is valid but not what anyone means to run: empty or cut short (no `[server]`),
    /// or it would take every peer or every route from a running inbox.
    #[error("{}: {reason}; the config in force stays", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The blocking task that builds the snapshot failed.
    #[error("the reload task failed: {0}")]
    Task(String),
}

/// Reloads one config file into the active snapshot.
pub struct Reloader {
    path: PathBuf,
    active: Active,
    build: Builder,
    events: Events,
    status: Mutex<Status>,
    /// Serialises reloads: two at once could swap in the older one last.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader for the file the active config came from.
    pub fn new(path: PathBuf, active: Active, build: Builder, events: Events) -> Arc<Self> {
        let hash = active.load().hash.clone();
        Arc::new(Self {
            path,
            active,
            build,
            events,
            status: Mutex::new(Status {
                config_hash: hash,
                loaded_at: now_ms(),
                last_reload_error: None,
                reloads_ok: 0,
                reloads_failed: 0,
                checks: 0,
            }),
            running: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        // Plain counters and strings: a panic mid-update cannot leave them unusable.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reload counters and the hash in force.
    /// The config file it reloads.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn status(&self) -> Status {
        self.lock().clone()
    }

    /// Reads the file again and swaps in the result if it changed and is good. A config that
    /// would take every peer or every route away is refused unless `allow_empty`.
    pub async fn reload(&self, why: &str, allow_empty: bool) -> Result<Outcome, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        self.lock().checks += 1;
        let path = self.path.clone();
        let build = self.build.clone();
        let current = self.active.load_full();
        let current_hash = current.hash.clone();
        let started = std::time::Instant::now();
        let in_force = current.clone();
        let result = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path).map_err(|errors| ReloadError::Config {
                path: path.clone(),
                errors,
            })?;
            if let Some(reason) = emptied(&in_force.config, &config, allow_empty) {
                return Err(ReloadError::Refused { path, reason });
            }
            let files = Files::read(&config)?;
            // A secret file rewritten (a rotation) changes no hash a client sees, but is a change.
            if files.hash == current_hash && config.secret_digest == in_force.config.secret_digest {
                return Ok(None);
            }
            Ok(Some(build(config, files)?))
        })
        .await
        .unwrap_or_else(|e| Err(ReloadError::Task(e.to_string())));
        match result {
            Ok(None) => {
                tracing::debug!(%why, "config unchanged; nothing to reload");
                // The files are the config in force again (a bad edit undone): no error stands.
                self.lock().last_reload_error = None;
                Ok(Outcome::Unchanged)
            }
            Ok(Some(mut snapshot)) => {
                snapshot.inherit(&current);
                for w in &snapshot.config.warnings {
                    tracing::warn!("{w}");
                }
                for key in needs_restart(&current.config, &snapshot.config) {
                    tracing::warn!(
                        key,
                        "changed in the config, but needs a restart to take effect"
                    );
                }
                let hash = snapshot.hash.clone();
                self.active.store(Arc::new(snapshot));
                self.events.publish(Event::ConfigReloaded {
                    config_hash: hash.clone(),
                });
                let mut st = self.lock();
                st.config_hash = hash.clone();
                st.loaded_at = now_ms();
                st.last_reload_error = None;
                st.reloads_ok += 1;
                let m = crate::metrics::get();
                m.reloads
                    .get_or_create(&crate::metrics::Outcome {
                        outcome: "applied".into(),
                    })
                    .inc();
                m.set_config(&hash);
                m.follow(
                    Some(&known(&current.config)),
                    &known(&self.active.load().config),
                );
                tracing::info!(
                    %why, config_hash = %hash, took_ms = started.elapsed().as_millis() as u64,
                    "config reloaded"
                );
                Ok(Outcome::Swapped(hash))
            }
            Err(e) => {
                tracing::error!(%why, error = %e, "config reload failed; keeping the last good config");
                let mut st = self.lock();
                st.last_reload_error = Some(e.to_string());
                st.reloads_failed += 1;
                crate::metrics::get()
                    .reloads
                    .get_or_create(&crate::metrics::Outcome {
                        outcome: "failed".into(),
                    })
                    .inc();
                Err(e)
            }
        }
    }

    /// Watches routes.toml and the plugin files it names, reloading on change, until `stop` fires.
    ///
    /// Watches directories, not files: editors and `sed -i` replace a file by renaming a new one over
    /// it, which silently ends a watch on the old file.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        // Bounded: one pending event is enough to know a reload is due.
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let files = Arc::new(std::sync::RwLock::new(HashSet::new()));
        let wanted_files = files.clone();
        let mut watcher = match notify::recommended_watcher(
            move |res: notify::Result<notify::Event>| {
                let files = wanted_files.read().unwrap_or_else(|p| p.into_inner());
                if res.is_ok_and(|event| relevant(&event, &files)) {
                    let _ = tx.try_send(());
                }
            },
        ) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the config; reload with SIGHUP or `agent-inbox reload`");
                return;
            }
        };
        let mut watched: HashSet<PathBuf> = HashSet::new();
        loop {
            // Re-aim the watches after every reload: the plugin files may have moved.
            let wanted = self.watched_files();
            let dirs: HashSet<PathBuf> = wanted
                .iter()
                .filter_map(|f| f.parent().map(Path::to_path_buf))
                .collect();
            *files.write().unwrap_or_else(|p| p.into_inner()) = wanted;
            let mut added = false;
            for dir in dirs.difference(&watched) {
                match watcher.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => added = true,
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory")
                    }
                }
            }
            for dir in watched.difference(&dirs) {
                let _ = watcher.unwatch(dir);
            }
            watched = dirs;
            if added {
                // A file written after it was last read but before its directory was watched
                // raised no event: look once now that the watch is in place.
                let _ = self.reload("watch started", false).await;
                continue;
            }
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = stop.changed() => return,
            }
            // Let the writer finish; events meanwhile fold into this reload.
            self.settle().await;
            while rx.try_recv().is_ok() {}
            // Failures are recorded and logged inside; the watch goes on.
            let _ = self.reload("file changed", false).await;
        }
    }

    /// Waits [`SETTLE`], then until the watched files' sizes and modification times are the same
    /// twice [`SETTLE`] apart (at most [`SETTLE_MAX`]): a truncate followed by a write is read
    /// once, whole.
    async fn settle(&self) {
        let files: Vec<PathBuf> = self.watched_files().into_iter().collect();
        let look = move || -> Vec<Option<(u64, std::time::SystemTime)>> {
            files
                .iter()
                .map(|f| {
                    let m = std::fs::metadata(f).ok()?;
                    Some((m.len(), m.modified().ok()?))
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + SETTLE_MAX;
        let mut last = look();
        loop {
            tokio::time::sleep(SETTLE).await;
            let now = look();
            if now == last || tokio::time::Instant::now() >= deadline {
                return;
            }
            last = now;
        }
    }

    /// routes.toml and the active config's plugins, each as its directory's canonical path joined
    /// with its file name: the form the watcher reports events in.
    fn watched_files(&self) -> HashSet<PathBuf> {
        let snap = self.active.load();
        std::iter::once(self.path.as_path())
            .chain(snap.config.files())
            .filter_map(|file| Some(absolute_dir(file)?.join(file.file_name()?)))
            .collect()
    }
}

/// Whether a watcher event may have changed one of `files`.
///
/// Reading a file is an event too (inotify's open and close-nowrite): without this filter every
/// reload's own reads of routes.toml and the plugins set off the next one, ten checks a second
/// forever, each hashing every plugin. Other files in the same directories (the database, an
/// editor's swap file) do not count either; a rename over a watched file does, by its new name.
fn relevant(event: &notify::Event, files: &HashSet<PathBuf>) -> bool {
    if event.need_rescan() {
        return true;
    }
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty() || event.paths.iter().any(|p| files.contains(p))
}

fn absolute_dir(file: &Path) -> Option<PathBuf> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(dir).ok()
}

/// Why `new` is not a config to swap in over `old` by accident, if it is not: a file without
/// `[server]` (empty, or cut short before it), or one that would take a running inbox from some
/// peers or routes to none (unless the operator says so).
fn emptied(old: &Config, new: &Config, allow_empty: bool) -> Option<String> {
    if !new.has_server_table {
        return Some(
            "the file has no [server] table (is it empty, or cut short while being written?)"
                .into(),
        );
    }
    if allow_empty {
        return None;
    }
    let gone = |what: &str, had: usize, has: usize| {
        (had > 0 && has == 0).then(|| {
            format!(
                "it would remove every {what} ({had} now){}; to mean it, run `agent-inbox reload --allow-empty`",
                if what == "peer" { ", and every peer would be refused" } else { "" }
            )
        })
    };
    gone("peer", old.peers.len(), new.peers.len())
        .or_else(|| gone("route", old.routes.len(), new.routes.len()))
}

/// What `config` names that labels metrics.
pub(crate) fn known(config: &Config) -> crate::metrics::Known {
    use crate::metrics::{Known, KnownPeer, KnownRoute};
    Known {
        routes: config
            .routes
            .values()
            .map(|r| KnownRoute {
                name: r.name.clone(),
                types: r
                    .types
                    .iter()
                    .filter(|t| *t != crate::config::WILDCARD)
                    .cloned()
                    .collect(),
                agent: r.agent().is_some(),
                a2a_driver: r
                    .agent()
                    .is_some_and(|a| matches!(a.driver, crate::config::Driver::A2a(_))),
                plugin: r.plugin.is_some(),
                held: [
                    ("inbound", r.approve.inbound),
                    ("outbound", r.approve.outbound),
                ]
                .into_iter()
                .filter_map(|(kind, on)| on.then_some(kind))
                .collect(),
            })
            .collect(),
        peers: config
            .peers
            .values()
            .map(|p| KnownPeer {
                name: p.name.clone(),
                delivers: p.reachable(),
                a2a_out: p.a2a_out.is_some(),
            })
            .collect(),
    }
}

/// Keys that changed but only take effect at the next start.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let (o, n) = (&old.server, &new.server);
    if o.listen != n.listen {
        keys.push("server.listen");
    }
    if o.data_dir != n.data_dir {
        keys.push("server.data_dir");
    }
    if o.max_connections != n.max_connections {
        keys.push("server.max_connections");
    }
    if o.synchronous != n.synchronous {
        keys.push("server.synchronous");
    }
    if old.relay.max_in_flight != new.relay.max_in_flight {
        keys.push("relay.max_in_flight");
    }
    if old.plugins.cache_dir != new.plugins.cache_dir {
        keys.push("plugins.cache_dir");
    }
    if old.plugins.max_instances != new.plugins.max_instances {
        keys.push("plugins.max_instances");
    }
    if !old.store.same_as(&new.store) {
        keys.push("store");
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("/tmp"), |_| None).expect("a valid config")
    }

    const FULL: &str = r#"
        [server]
        admin_secret = "admin-secret-1"
        [peers.tony]
        url = "http://127.0.0.1:9/message"
        secret = "tony-secret-1"
        [routes.notes]
        from = ["tony"]
        types = ["NOTE"]
        mailbox = true
    "#;

    /// README: every key is live except these, "logged as needs a restart"; and `[store]` is
    /// read at start.
    #[test]
    fn every_key_read_only_at_start_is_named_when_it_changes() {
        let old = config(FULL);
        let server = |line: &str| FULL.replace("[server]\n", &format!("[server]\n{line}\n"));
        for (text, key) in [
            (server(r#"listen = "127.0.0.1:9999""#), "server.listen"),
            // The plugin cache lives under the data directory unless set.
            (
                server(r#"data_dir = "elsewhere""#),
                "server.data_dir plugins.cache_dir",
            ),
            (server("max_connections = 7"), "server.max_connections"),
            (server(r#"synchronous = "normal""#), "server.synchronous"),
            (
                FULL.to_owned() + "[relay]\nmax_in_flight = 3\n",
                "relay.max_in_flight",
            ),
            (
                FULL.to_owned() + "[plugins]\ncache_dir = \"/tmp/other-cache\"\n",
                "plugins.cache_dir",
            ),
            (
                FULL.to_owned() + "[plugins]\nmax_instances = 3\n",
                "plugins.max_instances",
            ),
            (
                FULL.to_owned()
                    + "[store]\nkind = \"postgres\"\nurl = \"postgres://u:p@127.0.0.1:9/db\"\n",
                "store",
            ),
        ] {
            let named: Vec<&str> = key.split(' ').collect();
            assert_eq!(needs_restart(&old, &config(&text)), named, "{text}");
        }
        // A live key is not named.
        let live = FULL.replace("types = [\"NOTE\"]", "types = [\"NOTE\", \"TASK\"]");
        assert!(needs_restart(&old, &config(&live)).is_empty());
    }

    #[test]
    fn an_empty_or_cut_short_file_is_never_a_reload() {
        let old = config(FULL);
        for text in [
            "",
            "\n",
            "[peers.tony]\nurl = \"http://127.0.0.1:9/message\"\nsecret = \"tony-secret-1\"\n",
        ] {
            let why = emptied(&old, &config(text), true).expect("refused, even when allowed");
            assert!(why.contains("no [server] table"), "{why}");
        }
    }

    #[test]
    fn taking_every_peer_or_route_away_needs_allow_empty() {
        let old = config(FULL);
        let no_routes = &FULL[..FULL.find("[routes.").unwrap()];
        let why = emptied(&old, &config(no_routes), false).expect("refused");
        assert!(
            why.contains("every route") && why.contains("--allow-empty"),
            "{why}"
        );
        assert_eq!(emptied(&old, &config(no_routes), true), None);
        let server_only = &FULL[..FULL.find("[peers.").unwrap()];
        let why = emptied(&old, &config(server_only), false).expect("refused");
        assert!(why.contains("every peer"), "{why}");
        // A new inbox with no peers yet may stay so, and may gain some.
        let empty = config(server_only);
        assert_eq!(emptied(&empty, &config(server_only), false), None);
        assert_eq!(emptied(&empty, &old, false), None);
        assert_eq!(emptied(&old, &old, false), None);
    }
}
