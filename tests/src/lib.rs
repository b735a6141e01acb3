//! Test harness: a real inbox on `127.0.0.1:0`, a real hyper server as the peer, an HTTP client.
//!
//! Everything runs for real: sockets on loopback, agents as subprocesses (scripts in `tests/agents/`),
//! SQLite in a temp dir. Waiting is done by polling with a generous limit, never by fixed sleeps.
//!
//! # Layout
//! - the shared secrets ([`ADMIN`], [`TONY`], [`MEL`]) and [`Toml`], the one routes.toml builder;
//! - agent commands: [`agent_command`] (the python test agent), [`reply_sh`] (a fast curl agent);
//! - hosts: [`Host`] (the library in this process) and [`BinHost`] (the real binary as a child
//!   process, for restarts, crashes, signals and logs); both are an [`Endpoint`]. A port from
//!   [`unused_addr`] stays held for the whole test, and `BinHost` hands its socket to `serve`
//!   (`LISTEN_FDS`), so no port is released and bound again;
//! - [`open_stream`]: a streamed answer, once its first frame says the server follows;
//! - [`PeerServer`], a fake peer inbox that records every attempt and answers as scripted;
//! - HTTP helpers ([`request`], [`post_message`], [`admin_get`], ...) and waits ([`eventually`],
//!   [`wait_turn_end`], ...);
//! - a look into a host's SQLite store ([`sqlite`], [`database`]);
//! - the plugins built from `plugins/` ([`plugin_wasm`], [`install_plugin`]) and the test-only
//!   `tests/plugins/shaper` ([`shaper_wasm`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

// ---- secrets and config ----

/// The admin secret of every test config.
pub const ADMIN: &str = "admin-secret";
/// The secret of peer `tony`.
pub const TONY: &str = "tony-secret";
/// The secret of peer `mel`.
pub const MEL: &str = "mel-secret";
/// A relay schedule short enough for tests: three attempts, 200 ms apart.
pub const FAST_RETRIES: &[&str] = &["0s", "200ms", "200ms"];

/// A TOML string (JSON's string escapes are TOML's basic-string escapes).
pub fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A TOML array of strings.
pub fn toml_list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&items).expect("strings serialize")
}

/// Keys of one TOML table, in order; setting a key again replaces its value.
#[derive(Debug, Clone, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value.to_owned(),
            None => self.0.push((key.to_owned(), value.to_owned())),
        }
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    fn write(&self, out: &mut String, header: &str) {
        if self.0.is_empty() {
            return;
        }
        out.push_str(&format!("[{header}]\n"));
        for (k, v) in &self.0 {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
}

/// Builds a routes.toml: `[server]`, `[agent]`, `[relay]`, `[plugins]`, peers and routes. Values are
/// TOML text (`"20"`, `quoted(..)`, `toml_list(..)`); setting a key twice keeps the last value.
///
/// [`Toml::new`] starts with the admin secret; [`Toml::tasks`] is the usual one-peer setup.
#[derive(Debug, Clone)]
pub struct Toml {
    server: Table,
    agent: Table,
    relay: Table,
    plugins: Table,
    peers: Vec<(String, Table)>,
    routes: Vec<(String, Table, String)>,
}

impl Default for Toml {
    fn default() -> Self {
        Self::new()
    }
}

impl Toml {
    /// A config with `server.admin_secret = ADMIN` and nothing else.
    pub fn new() -> Toml {
        let mut server = Table::default();
        server.set("admin_secret", &quoted(ADMIN));
        Toml {
            server,
            agent: Table::default(),
            relay: Table::default(),
            plugins: Table::default(),
            peers: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The least that serves: peer `tony` (unreachable, port 9) may leave NOTEs in mailbox
    /// `notes`, and nothing runs an agent.
    pub fn notes() -> Toml {
        Toml::new()
            .peer("tony", "http://127.0.0.1:9/message", TONY)
            .mailbox("notes", &["tony"], &["NOTE"])
    }

    /// The usual setup: peer `tony` at `peer_url` sends TASKs to route `tasks`, whose agent runs
    /// `command` (a TOML array) with a 20 s timeout and may reply STATUS to tony; the relay retries
    /// along [`FAST_RETRIES`].
    pub fn tasks(peer_url: &str, command: &str) -> Toml {
        Toml::new()
            .command(command)
            .agent("timeout_secs", "20")
            .schedule(FAST_RETRIES)
            .peer("tony", peer_url, TONY)
            .agent_route("tasks", &["tony"], &["TASK"], &["STATUS"], &["tony"])
    }

    /// Sets `[server] key = value`.
    pub fn server(mut self, key: &str, value: &str) -> Toml {
        self.server.set(key, value);
        self
    }

    /// Removes `[server] key`.
    pub fn without_server(mut self, key: &str) -> Toml {
        self.server.remove(key);
        self
    }

    /// Sets `server.listen` (for the real binary, which binds it itself).
    pub fn listen(self, addr: SocketAddr) -> Toml {
        self.server("listen", &quoted(&addr.to_string()))
    }

    /// Sets `[agent] key = value`.
    pub fn agent(mut self, key: &str, value: &str) -> Toml {
        self.agent.set(key, value);
        self
    }

    /// Sets `agent.command` (a TOML array, e.g. from [`agent_command`]).
    pub fn command(self, argv: &str) -> Toml {
        self.agent("command", argv)
    }

    /// Sets `[relay] key = value`.
    pub fn relay(mut self, key: &str, value: &str) -> Toml {
        self.relay.set(key, value);
        self
    }

    /// Sets `relay.retry_schedule`.
    pub fn schedule(self, delays: &[&str]) -> Toml {
        self.relay("retry_schedule", &toml_list(delays))
    }

    /// Sets `[plugins] key = value`.
    pub fn plugins(mut self, key: &str, value: &str) -> Toml {
        self.plugins.set(key, value);
        self
    }

    /// Adds (or replaces) `[peers.name]` with a literal secret.
    pub fn peer(mut self, name: &str, url: &str, secret: &str) -> Toml {
        let mut t = Table::default();
        t.set("url", &quoted(url));
        t.set("secret", &quoted(secret));
        self.peers.retain(|(n, _)| n != name);
        self.peers.push((name.to_owned(), t));
        self
    }

    /// Adds (or replaces) `[peers.name]` whose secret is in the environment variable `var`.
    pub fn peer_env(mut self, name: &str, url: &str, var: &str) -> Toml {
        let mut t = Table::default();
        t.set("url", &quoted(url));
        t.set("secret_env", &quoted(var));
        self.peers.retain(|(n, _)| n != name);
        self.peers.push((name.to_owned(), t));
        self
    }

    /// Sets `[peers.name] key = value` (the peer must exist).
    pub fn peer_key(mut self, name: &str, key: &str, value: &str) -> Toml {
        let (_, t) = self
            .peers
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no peer {name} in the test config"));
        t.set(key, value);
        self
    }

    /// Removes `[peers.name]`.
    pub fn without_peer(mut self, name: &str) -> Toml {
        self.peers.retain(|(n, _)| n != name);
        self
    }

    /// Sets `[routes.name] key = value`, adding the route if it is new.
    pub fn route(mut self, name: &str, key: &str, value: &str) -> Toml {
        match self.routes.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, t, _)) => t.set(key, value),
            None => {
                let mut t = Table::default();
                t.set(key, value);
                self.routes.push((name.to_owned(), t, String::new()));
            }
        }
        self
    }

    /// Adds a sub-table of route `name`, e.g. `plugin_config`, as TOML lines under
    /// `[routes.name.table]`.
    pub fn route_table(mut self, name: &str, table: &str, body: &str) -> Toml {
        let (_, _, tail) = self
            .routes
            .iter_mut()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no route {name} in the test config"));
        tail.push_str(&format!("[routes.{name}.{table}]\n{body}\n"));
        self
    }

    /// Adds an agent route: `from` may send it `types`; its agent replies `reply_types` to
    /// `reply_to`.
    pub fn agent_route(
        self,
        name: &str,
        from: &[&str],
        types: &[&str],
        reply_types: &[&str],
        reply_to: &[&str],
    ) -> Toml {
        self.route(name, "from", &toml_list(from))
            .route(name, "types", &toml_list(types))
            .route(name, "reply_types", &toml_list(reply_types))
            .route(name, "reply_to", &toml_list(reply_to))
    }

    /// Adds a mailbox route: `from` may send it `types`; messages are kept for reading.
    pub fn mailbox(self, name: &str, from: &[&str], types: &[&str]) -> Toml {
        self.route(name, "from", &toml_list(from))
            .route(name, "types", &toml_list(types))
            .route(name, "mailbox", "true")
    }

    /// Removes `[routes.name]`.
    pub fn without_route(mut self, name: &str) -> Toml {
        self.routes.retain(|(n, _, _)| n != name);
        self
    }

    /// The routes.toml text.
    pub fn build(&self) -> String {
        let mut out = String::new();
        self.server.write(&mut out, "server");
        self.agent.write(&mut out, "agent");
        self.relay.write(&mut out, "relay");
        self.plugins.write(&mut out, "plugins");
        for (name, t) in &self.peers {
            t.write(&mut out, &format!("peers.{name}"));
        }
        for (name, t, tail) in &self.routes {
            t.write(&mut out, &format!("routes.{name}"));
            out.push_str(tail);
        }
        out
    }
}

impl std::fmt::Display for Toml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.build())
    }
}

/// Writes `text` to `path` by writing a temp file and renaming it over `path`, as the README tells
/// users to deploy: the host never reads a half-written file.
pub fn write_by_rename(path: &Path, text: impl AsRef<[u8]>) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).expect("write the temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

// ---- agents ----

/// The directory of the test agent scripts.
pub fn agents_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agents")
}

/// The test agent script's path, as a string for a TOML command.
pub fn agent_script() -> String {
    agents_dir().join("agent.py").display().to_string()
}

/// A TOML array: `python3 agent.py` then `args` (see `tests/agents/agent.py` for its flags).
pub fn agent_command(args: &[&str]) -> String {
    let mut argv = vec!["python3".to_owned(), agent_script()];
    argv.extend(args.iter().map(|a| a.to_string()));
    toml_list(&argv)
}

/// A TOML array: `sh reply.sh` then `args` (the reply type, default DONE): one reply with curl.
pub fn reply_sh(args: &[&str]) -> String {
    let mut argv = vec![
        "sh".to_owned(),
        agents_dir().join("reply.sh").display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    toml_list(&argv)
}

/// A path as `&str`, for agent arguments.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// ---- hosts ----

/// Something that serves the inbox API: [`Host`] or [`BinHost`].
pub trait Endpoint {
    /// `http://addr{path}`.
    fn url(&self, path: &str) -> String;
}

/// A running inbox, in this process.
pub struct Host {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config file and data live here.
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Endpoint for Host {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Host {
    /// Stops the server and waits for it to drain; a hang (60 s), a panic or an error fails the
    /// test.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("a host is stopped once");
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Err(_) => panic!("the host did not stop within 60 s"),
            Ok(Err(e)) => panic!("the host task failed: {e}"),
            Ok(Ok(Err(e))) => panic!("the host stopped with an error: {e:#}"),
            Ok(Ok(Ok(()))) => {}
        }
    }

    /// Like [`Host::stop`], and hands back its directory (config and data) for a restart.
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        self.stop().await;
        dir
    }

    /// Its routes.toml.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("routes.toml")
    }

    /// Replaces its routes.toml by rename (the watcher picks it up).
    pub fn rewrite_config(&self, toml: &str) {
        write_by_rename(&self.config_path(), toml);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Writes `toml` as routes.toml in a new temp dir and starts an inbox on it (port 0).
pub async fn start_host(toml: &str) -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    start_host_in(toml, dir).await
}

/// Like [`start_host`], in a given directory (e.g. to restart on the same data).
pub async fn start_host_in(toml: &str, dir: tempfile::TempDir) -> Host {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    launch(toml, dir, listener)
}

/// Like [`start_host`], on an already bound listener: bind first when configs must name the
/// address before the host starts (e.g. two inboxes that are each other's peer).
pub async fn start_host_on(toml: &str, listener: TcpListener) -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    launch(toml, dir, listener)
}

fn launch(toml: &str, dir: tempfile::TempDir, listener: TcpListener) -> Host {
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).expect("write routes.toml");
    let config = agent_inbox::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(agent_inbox::wiring::run(config, listener, async move {
        let _ = rx.await;
    }));
    Host {
        addr,
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Runs the real CLI with `args` and `--config config`; its exit code, stdout and stderr.
pub async fn cli_with_config(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args).arg("--config").arg(config);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the CLI"))
        .await
        .expect("the CLI's thread");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `peer` (the config's peer `name`) received before a marker the operator sends it now
/// through `host`: the marker is recorded after everything the test did before, so what the
/// relay was going to send by then has been sent once it arrives. A "nothing more arrives" check
/// waits on this instead of a sleep. Markers (type `MARKER`) are left out of the answer.
pub async fn received_before_marker(
    host: &impl Endpoint,
    name: &str,
    peer: &PeerServer,
) -> Vec<Received> {
    let r = admin_post(
        host,
        "/admin/send",
        &serde_json::json!({"to": name, "type": "MARKER"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 202, "the marker: {:#}", r.json);
    let marker = r.id();
    let all = eventually(Duration::from_secs(30), "the marker", || async {
        let got = peer.received();
        got.iter()
            .any(|g| g.body["id"] == marker.as_str())
            .then_some(got)
    })
    .await;
    all.into_iter()
        .filter(|g| g.body["type"] != "MARKER")
        .collect()
}

/// The `agent-inbox` binary built for the tests (`inbox-under-test`, beside the test binary's
/// `deps/` folder; cargo builds it for integration tests).
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CARGO_BIN_EXE_inbox-under-test") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    dir.join(format!("inbox-under-test{}", std::env::consts::EXE_SUFFIX))
}

/// Runs the binary with `args` (and `env` on top of this process's) to completion, at most 60 s.
pub async fn run_bin(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let child = tokio::process::Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not finish within 60 s"))
        .expect("run the binary")
}

/// The python3 of a venv holding `tests/tools/requirements.txt` (reference implementations the
/// tests check the inbox against), made under `target/test-venv` on first use. Needs python3 with
/// venv and the PyPI registry the first time; a failure panics with pip's output.
pub fn tools_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let reqs = root.join("tools/requirements.txt");
            let venv = root.join("../target/test-venv");
            let python = venv.join("bin/python3");
            let stamp = venv.join("installed.txt");
            let wanted = std::fs::read_to_string(&reqs).map_err(|e| format!("{reqs:?}: {e}"))?;
            if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
                return Ok(python);
            }
            let run = |cmd: &mut std::process::Command| -> Result<(), String> {
                let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
                if out.status.success() {
                    return Ok(());
                }
                Err(format!(
                    "{cmd:?} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            };
            run(std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv))?;
            run(std::process::Command::new(&python)
                .args(["-m", "pip", "install", "-q", "-r"])
                .arg(&reqs))?;
            std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
            Ok(python)
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("the tools venv: {e}"))
        .clone()
}

/// The directory holding `node` (24) and `openclaw` (2026.9.6), installed by
/// tests/tools/openclaw.sh under `target/openclaw-cache/` on first use (the test command runs it
/// too). Needs the npm registry the first time; a failure panics with its output.
pub fn openclaw_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/openclaw.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("{script:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{script:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .as_ref()
    .unwrap_or_else(|e| panic!("openclaw: {e}"))
    .clone()
}

/// Runs `tests/tools/<script>` with the tools venv's python, `stdin` on its standard input;
/// returns whether it exited 0 and what it printed.
pub fn run_tool(script: &str, args: &[&str], stdin: &[u8]) -> (bool, String) {
    use std::io::Write as _;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(script);
    let mut child = std::process::Command::new(tools_python())
        .arg(&path)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The inbox as a separate process (`inbox-under-test serve`): a stop is a real process exit,
/// agents outlive it, kill -9 leaves the database as a crash would, and signals reach only it.
pub struct BinHost {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens (its config's `server.listen`).
    pub addr: SocketAddr,
    /// Its stderr (the log) goes to this file.
    pub log_path: PathBuf,
}

impl Endpoint for BinHost {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl BinHost {
    /// Writes `toml` (which must listen on `addr`) to `dir/routes.toml`, runs `serve` on it with
    /// its log in `dir/log`, and waits until it answers `/readyz` with 200.
    pub async fn start(dir: &Path, toml: &str, addr: SocketAddr, log: &str) -> BinHost {
        Self::start_with_env(dir, toml, addr, log, &[]).await
    }

    /// Like [`BinHost::start`], with extra environment variables (e.g. secrets for `secret_env`).
    pub async fn start_with_env(
        dir: &Path,
        toml: &str,
        addr: SocketAddr,
        log: &str,
        env: &[(&str, &str)],
    ) -> BinHost {
        Self::start_with(dir, toml, addr, log, env, &[]).await
    }

    /// Like [`BinHost::start_with_env`], with global flags before `serve` (e.g. `--log-format`).
    pub async fn start_with(
        dir: &Path,
        toml: &str,
        addr: SocketAddr,
        log: &str,
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> BinHost {
        write_by_rename(&dir.join("routes.toml"), toml);
        let log_path = dir.join(log);
        let spawn = || {
            let file = std::fs::File::create(&log_path).expect("create the log");
            let mut cmd = std::process::Command::new(bin());
            cmd.args(flags)
                .args(["serve", "--config"])
                .arg(dir.join("routes.toml"))
                .envs(env.iter().copied())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(file);
            // The port this test holds, as a service manager passes it: never released.
            pass_port(&mut cmd, addr);
            cmd.spawn().expect("spawn serve")
        };
        let mut host = BinHost {
            child: spawn(),
            addr,
            log_path: log_path.clone(),
        };
        // Ready, not only alive: a process still draining on the same port (a restart that
        // overlaps it) answers /healthz, but not /readyz.
        let url = host.url("/readyz");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = try_request("GET", &url, &[], "").await
                && r.status == 200
            {
                return host;
            }
            if let Some(status) = host.child.try_wait().expect("try_wait") {
                // A restart on the same port can find it taken for a moment by something else
                // on the machine (seen once on CI): try again, and say who held it if it stays.
                if host.log().contains("Address already in use") && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    host.child = spawn();
                    continue;
                }
                let holders = std::process::Command::new("ss")
                    .args(["-tanp", &format!("sport = :{}", addr.port())])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!(
                    "serve exited with {status} before answering; log:\n{}\nsockets on the port:\n{holders}",
                    host.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "serve was not ready (/readyz) within 30 s; log:\n{}",
                host.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its log so far, without colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    /// Its process id, as a string for `kill`.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends `signal` (e.g. `"HUP"`, `"INT"`, `"TERM"`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
        reserve_again(self.addr);
    }

    /// SIGTERM, then waits for the exit (30 s at most).
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Waits for the process to exit after a signal already sent (30 s at most).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                reserve_again(self.addr);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within 30 s of the signal; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and an exit status of 0, or the test fails.
    pub fn stop(mut self) {
        let status = self.sigterm();
        assert!(
            status.success(),
            "serve exited with {status}; log:\n{}",
            self.log()
        );
    }
}

/// `text` without ANSI escape sequences (the log's colours).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for BinHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the fake peer ----

/// How a [`PeerServer`] answers one request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// Extra headers, e.g. `Retry-After`.
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// The body, when not `{"status":"received"}`.
    pub body: Option<Bytes>,
}

impl From<u16> for Answer {
    fn from(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: None,
        }
    }
}

impl Answer {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    /// Answers with this body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Answer {
        self.body = Some(body.into());
        self
    }
}

/// One request a [`PeerServer`] received, and how it answered.
#[derive(Debug, Clone)]
pub struct Received {
    /// The status it answered (or will answer, while delayed).
    pub status: u16,
    /// Request headers.
    pub headers: http::HeaderMap,
    /// The body, parsed.
    pub body: Value,
    /// The body as sent (what a signature covers).
    pub raw: Bytes,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct PeerState {
    attempts: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Answer>>,
    otherwise: Mutex<Option<Answer>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    arrived: Notify,
}

/// A real hyper server playing a peer inbox: records every request (whatever it answers) and
/// answers as scripted: first the answers of [`PeerServer::script`] in order, then the standing
/// answer of [`PeerServer::otherwise`], by default 200.
pub struct PeerServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<PeerState>,
    stop: Option<oneshot::Sender<()>>,
}

impl PeerServer {
    /// Starts a peer on a new port.
    pub async fn start() -> PeerServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener).await
    }

    /// Starts a peer on an already bound listener (e.g. a port reserved earlier).
    pub async fn start_on(listener: TcpListener) -> PeerServer {
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(PeerState::default());
        let (stop, mut rx) = oneshot::channel::<()>();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = &mut rx => return,
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(st.answer(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        PeerServer {
            addr,
            state,
            stop: Some(stop),
        }
    }

    /// The URL to put in a `[peers]` table.
    pub fn url(&self) -> String {
        format!("http://{}/message", self.addr)
    }

    /// Answers the next requests with these, in order, before the standing answer.
    pub fn script<A: Into<Answer>>(&self, answers: impl IntoIterator<Item = A>) {
        let mut s = self.state.script.lock().unwrap();
        s.extend(answers.into_iter().map(Into::into));
    }

    /// Answers every request past the script with `answer` (200 until this is called).
    pub fn otherwise(&self, answer: impl Into<Answer>) {
        *self.state.otherwise.lock().unwrap() = Some(answer.into());
    }

    /// Every request so far, in arrival order, whatever it was answered.
    pub fn attempts(&self) -> Vec<Received> {
        self.state.attempts.lock().unwrap().clone()
    }

    /// The requests answered with 2xx so far (the deliveries).
    pub fn received(&self) -> Vec<Received> {
        let all = self.state.attempts.lock().unwrap();
        all.iter()
            .filter(|r| (200..300).contains(&r.status))
            .cloned()
            .collect()
    }

    /// The most requests it has had in flight at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests were answered with 2xx, for up to `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        self.wait_until(limit, &format!("{n} deliveries"), || {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    /// Waits until `n` requests arrived, whatever they were answered, for up to `limit`.
    pub async fn wait_attempts(&self, n: usize, limit: Duration) -> Vec<Received> {
        self.wait_until(limit, &format!("{n} attempts"), || {
            let got = self.attempts();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    async fn wait_until<T>(
        &self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.state.arrived.notified();
            if let Some(v) = done() {
                return v;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                if let Some(v) = done() {
                    return v;
                }
                panic!(
                    "the peer did not see {what} within {limit:?}; it saw: {:#?}",
                    self.attempts()
                );
            }
        }
    }
}

impl PeerState {
    async fn answer(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let at = Instant::now();
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let headers = req.headers().clone();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let answer = self.script.lock().unwrap().pop_front().unwrap_or_else(|| {
            self.otherwise
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| 200.into())
        });
        self.attempts.lock().unwrap().push(Received {
            status: answer.status,
            headers,
            body,
            raw: bytes,
            at,
        });
        self.arrived.notify_waiters();
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut resp = http::Response::new(Full::new(
            answer
                .body
                .clone()
                .unwrap_or_else(|| Bytes::from_static(b"{\"status\":\"received\"}")),
        ));
        *resp.status_mut() = http::StatusCode::from_u16(answer.status).expect("a valid status");
        for (k, v) in &answer.headers {
            resp.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
                http::HeaderValue::from_str(v).expect("a header value"),
            );
        }
        resp
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A peer that accepts connections and never answers; stops when the handle is aborted.
pub async fn silent_peer() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/message", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, task)
}

// ---- HTTP ----

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// The body as JSON (`Null` if it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Resp {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// The `id` of an ack.
    pub fn id(&self) -> String {
        self.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {} {:#}", self.status, self.json))
            .to_owned()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request with the given headers and raw body.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    try_request(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"))
}

/// Like [`request`], but a failure to connect or to read the answer is returned, not a panic
/// (e.g. to poll a server that is still starting, or one killed on purpose).
pub async fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<Resp> {
    let req = build_request(method, url, headers, body);
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 30 s"))??;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok(Resp {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// A streamed answer (Server-Sent Events) that has sent its first frame: the server is now
/// following, so what happens next reaches it. [`Stream::rest`] reads on to the end.
pub struct Stream {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    first: String,
    body: hyper::body::Incoming,
}

impl Stream {
    /// Reads the stream to its end (bounded by 30 s) and answers all of it as text.
    pub async fn rest(mut self) -> Resp {
        let mut text = std::mem::take(&mut self.first);
        let read = async {
            while let Some(frame) = self.body.frame().await {
                if let Ok(data) = frame.expect("stream frame").into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the stream ended within 30 s");
        Resp {
            status: self.status,
            headers: self.headers,
            json: Value::Null,
            text,
        }
    }
}

/// A request with the given headers and body.
pub fn build_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).expect("a valid request")
}

/// Opens a streamed request and waits (up to 10 s) for its first frame, the server's sign that
/// it follows: no sleep stands for "subscribed".
pub async fn open_stream(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Stream {
    let req = build_request(method, url, headers, body.to_owned());
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("the stream answered within 10 s")
        .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut first = String::new();
    while first.is_empty() {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a first frame within 10 s")
            .unwrap_or_else(|| panic!("{url} ended before its first frame"))
            .expect("stream frame");
        if let Ok(data) = frame.into_data() {
            first.push_str(&String::from_utf8_lossy(&data));
        }
    }
    Stream {
        status,
        headers,
        first,
        body,
    }
}

/// POSTs JSON to `/message` as the peer with `secret`.
pub async fn post_message(host: &impl Endpoint, secret: &str, body: Value) -> Resp {
    post_message_with(host, secret, &[], body).await
}

/// POSTs JSON to `/message` as the peer with `secret`, with extra headers.
pub async fn post_message_with(
    host: &impl Endpoint,
    secret: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Resp {
    let mut all = vec![
        ("x-shared-secret", secret),
        ("content-type", "application/json"),
    ];
    all.extend_from_slice(headers);
    request("POST", &host.url("/message"), &all, body.to_string()).await
}

/// Sends `{"type": msg_type}` as tony, checks the 202 and returns the message id.
pub async fn send_type(host: &impl Endpoint, msg_type: &str) -> String {
    let ack = post_message(host, TONY, serde_json::json!({ "type": msg_type })).await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    ack.id()
}

/// Sends a TASK as tony, checks the 202 and returns the message id.
pub async fn send_task(host: &impl Endpoint) -> String {
    send_type(host, "TASK").await
}

/// POSTs raw `body` to `/send` with `Authorization: Bearer {token}` (no header if `None`).
pub async fn post_send(host: &impl Endpoint, token: Option<&str>, body: &str) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    request("POST", &host.url("/send"), &headers, body.to_owned()).await
}

/// GETs `path` as the admin.
pub async fn admin_get(host: &impl Endpoint, path: &str) -> Resp {
    let auth = format!("Bearer {ADMIN}");
    request("GET", &host.url(path), &[("authorization", &auth)], "").await
}

/// POSTs `body` to `path` as the admin.
pub async fn admin_post(host: &impl Endpoint, path: &str, body: &str) -> Resp {
    let auth = format!("Bearer {ADMIN}");
    request(
        "POST",
        &host.url(path),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_owned(),
    )
    .await
}

/// Signs in to the console with [`ADMIN`], checked to be a 303; the session cookie (`name=value`).
pub async fn console_sign_in(host: &impl Endpoint) -> String {
    let r = request(
        "POST",
        &host.url("/console/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("secret={ADMIN}"),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    r.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("a cookie")
        .to_owned()
}

/// `GET /messages/{id}` as the admin, checked to be a 200.
pub async fn view(host: &impl Endpoint, id: &str) -> Value {
    let r = admin_get(host, &format!("/messages/{id}")).await;
    assert_eq!(r.status, 200, "GET /messages/{id}: {:#}", r.json);
    r.json
}

/// `GET /status` as the admin.
pub async fn status(host: &impl Endpoint) -> Value {
    let r = admin_get(host, "/status").await;
    assert_eq!(r.status, 200, "GET /status: {:#}", r.json);
    r.json
}

/// `POST /admin/reload` as the admin.
pub async fn admin_reload(host: &impl Endpoint) -> Resp {
    admin_post(host, "/admin/reload", "").await
}

// ---- waits ----

/// Polls `f` every 20 ms until it returns `Some`, for up to `limit`; panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until message `id`'s turn reaches a final state, and returns `GET /messages/{id}` as read
/// with the admin secret `admin` (the tests' is [`ADMIN`]).
pub async fn wait_turn_end(host: &impl Endpoint, admin: &str, id: &str) -> Value {
    eventually(Duration::from_secs(30), "the turn to end", || async {
        let auth = format!("Bearer {admin}");
        let r = request(
            "GET",
            &host.url(&format!("/messages/{id}")),
            &[("authorization", &auth)],
            "",
        )
        .await;
        let state = r.json["turn"]["state"].as_str().unwrap_or("");
        matches!(
            state,
            "done" | "failed" | "timed_out" | "canceled" | "interrupted" | "rejected"
        )
        .then_some(r.json)
    })
    .await
}

/// Waits until message `id`'s turn ends, checks that it ended `state`, and returns the view.
pub async fn wait_turn_state(host: &impl Endpoint, id: &str, state: &str) -> Value {
    let v = wait_turn_end(host, ADMIN, id).await;
    assert_eq!(v["turn"]["state"], state, "{v:#}");
    v
}

/// Waits until message `id`'s turn is running, and returns the view.
pub async fn wait_running(host: &impl Endpoint, id: &str) -> Value {
    eventually(Duration::from_secs(30), "the turn to run", || async {
        let v = admin_get(host, &format!("/messages/{id}")).await.json;
        (v["turn"]["state"] == "running").then_some(v)
    })
    .await
}

/// The first delivery of the first reply to message `id`, once `done` holds for it.
pub async fn delivery_when(
    host: &impl Endpoint,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Value) {
    eventually(Duration::from_secs(30), what, || async {
        let view = admin_get(host, &format!("/messages/{id}")).await;
        let reply = view.json["replies"].get(0)?.clone();
        let d = reply["deliveries"].get(0)?.clone();
        done(&d).then_some((reply, d))
    })
    .await
}

/// The first delivery of the first reply to message `id`, once it is in `state`.
pub async fn delivery_in(host: &impl Endpoint, id: &str, state: &str) -> (Value, Value) {
    delivery_when(host, id, &format!("a delivery {state}"), |d| {
        d["state"] == state
    })
    .await
}

/// Waits until the test agent's `--record` file for message `id` exists and parses, and returns it.
pub async fn read_record(dir: &Path, id: &str) -> Value {
    let path = dir.join(format!("{id}.json"));
    eventually(Duration::from_secs(30), "the agent's record file", || {
        let path = path.clone();
        async move {
            let text = std::fs::read_to_string(&path).ok()?;
            serde_json::from_str(&text).ok()
        }
    })
    .await
}

/// Whether process `pid` is gone; a zombie counts as gone (PID 1 in a container may not reap).
pub fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Runs `sql` on the SQLite database at `db` with python3's sqlite3 module (python3 already runs
/// the test agents), commits, and returns the rows as JSON arrays. For looking into a stopped
/// host's store, or ageing its records as time would.
pub fn sqlite(db: &Path, sql: &str) -> Vec<Value> {
    let script = r#"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = c.execute(sys.argv[2]).fetchall()
c.commit()
print(json.dumps(rows))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .arg(sql)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "sqlite {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rows as JSON")
}

/// An id the inbox made, as an SQL literal of what its SQLite store holds (schema v7: the UUID's
/// 16 bytes), for [`sqlite`] statements that pick a row by id.
pub fn sql_id(id: &str) -> String {
    assert_eq!(id.len(), 36, "an id the inbox made: {id}");
    format!("X'{}'", id.replace('-', ""))
}

/// The database of a host whose routes.toml is in `dir` (the default `data_dir`).
pub fn database(dir: &Path) -> PathBuf {
    dir.join("data").join("inbox.sqlite3")
}

/// The ports this process holds: bound, and listening only once a server got them.
static RESERVED: Mutex<Vec<(SocketAddr, socket2::Socket)>> = Mutex::new(Vec::new());

/// A socket bound to `127.0.0.1:port` and not listening (a connection to it is refused).
///
/// With SO_REUSEADDR, as servers bind: the connections a server accepted on it inherit the
/// flag, so their TIME_WAIT does not keep the port from being bound again after an exit.
fn bind_unlistened(port: u16) -> Option<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.set_reuse_address(true).ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    socket.bind(&addr.into()).ok()?;
    Some(socket)
}

/// A loopback address held for this test: its socket is bound but does not listen, so a
/// connection to it is refused (a peer that is down) and no other process can take the port.
/// [`BinHost::start`] hands that very socket to `serve` (systemd socket activation,
/// `LISTEN_FDS`), and [`take_listener`] makes a listener of it: the port is never released
/// and bound again.
///
/// The port is below Linux's ephemeral range (32768 and up), so no outgoing connection can
/// take it while [`BinHost`] re-reserves it after an exit; each call in this process tries the
/// next port from a start picked by the process id.
pub fn unused_addr() -> SocketAddr {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = std::process::id() * 97;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) as u32;
        let port = (FIRST + (start + n) % SPAN) as u16;
        if let Some(socket) = bind_unlistened(port) {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            reserved().push((addr, socket));
            return addr;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

fn reserved() -> std::sync::MutexGuard<'static, Vec<(SocketAddr, socket2::Socket)>> {
    RESERVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The socket held for `addr` by [`unused_addr`], as a listener for this process (e.g. a peer
/// that comes up); it is no longer held for anything else.
pub fn take_listener(addr: SocketAddr) -> TcpListener {
    let mut held = reserved();
    let i = held
        .iter()
        .position(|(a, _)| *a == addr)
        .unwrap_or_else(|| panic!("{addr} was not reserved by unused_addr"));
    let (_, socket) = held.remove(i);
    socket.listen(1024).expect("listen");
    socket.set_nonblocking(true).expect("nonblocking");
    TcpListener::from_std(socket.into()).expect("a tokio listener")
}

/// Makes the socket held for `addr` listen, still held (as a service manager's socket listens
/// before the service starts): connections made from now on wait in its backlog.
pub fn listen_reserved(addr: SocketAddr) {
    let held = reserved();
    let (_, socket) = held
        .iter()
        .find(|(a, _)| *a == addr)
        .unwrap_or_else(|| panic!("{addr} was not reserved by unused_addr"));
    socket.listen(1024).expect("listen");
}

/// Hands the socket held for `addr` (by [`unused_addr`]) to the `serve` that `cmd` starts, as
/// a service manager does: fd 3 with `LISTEN_FDS=1`. Nothing happens for an address not held.
pub fn pass_port(cmd: &mut std::process::Command, addr: SocketAddr) {
    use command_fds::{CommandFdExt, FdMapping};
    let passed = reserved()
        .iter()
        .find(|(a, _)| *a == addr)
        .and_then(|(_, s)| s.try_clone().ok());
    if let Some(socket) = passed {
        cmd.fd_mappings(vec![FdMapping {
            parent_fd: socket.into(),
            child_fd: 3,
        }])
        .expect("map the socket to fd 3");
        cmd.env("LISTEN_FDS", "1");
    }
}

/// After the last process serving on `addr` exited: the held socket still listens (connections
/// would wait in its backlog), so it is swapped for a fresh one that refuses, as a stopped host
/// does. If the port cannot be bound again (another process still serves on it), it is no longer
/// held, and the next [`BinHost`] on it binds it itself.
fn reserve_again(addr: SocketAddr) {
    let mut held = reserved();
    let Some(i) = held.iter().position(|(a, _)| *a == addr) else {
        return;
    };
    held.remove(i);
    if let Some(socket) = bind_unlistened(addr.port()) {
        held.push((addr, socket));
    }
}

// ---- plugins ----

/// Builds the plugins in `plugins/` for `wasm32-wasip2` once per test run and returns the path of
/// one component (`name` as in its Cargo.toml, e.g. `task-schema`).
///
/// The nested cargo gets its own target dir: the outer `cargo test` holds the lock on the usual one.
pub fn plugin_wasm(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dir = BUILT
        .get_or_init(build_plugins)
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    dir.join(format!("{}.wasm", name.replace('-', "_")))
}

fn build_plugins() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?;
    let target = root.join("target").join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args([
            "-p",
            "task-schema",
            "-p",
            "reply-instructions",
            "-p",
            "hostile",
            "-p",
            "noop",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the plugins failed (is the wasm32-wasip2 target installed? \
             `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target.join("wasm32-wasip2").join("release"))
}

/// Builds the test-only plugin `tests/plugins/shaper` (its own workspace, with its own lock file)
/// for `wasm32-wasip2` once per test run and returns its component. It does per message what the
/// payload asks; see its `src/lib.rs`.
pub fn shaper_wasm() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_test_plugin("shaper"))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
        .clone()
}

/// Builds the test-only plugin `tests/plugins/legacy`, made against the 0.1.0 WIT (before
/// `hold`), once per test run and returns its component.
pub fn legacy_wasm() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_test_plugin("legacy"))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
        .clone()
}

/// Builds `tests/plugins/<name>` (its own workspace and lock file) for `wasm32-wasip2`.
fn build_test_plugin(name: &str) -> Result<PathBuf, String> {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = tests
        .parent()
        .ok_or("no workspace root")?
        .join("target")
        .join("test-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--manifest-path")
        .arg(tests.join("plugins").join(name).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .map_err(|e| format!("cannot run cargo to build the {name} plugin: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building tests/plugins/{name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{name}.wasm")))
}

/// Copies plugin `name` into `dir` as `file` (so a test can replace it without touching others).
pub fn install_plugin(name: &str, dir: &Path, file: &str) -> PathBuf {
    let dest = dir.join(file);
    std::fs::copy(plugin_wasm(name), &dest).expect("copy plugin");
    dest
}

/// Builds the JavaScript plugin (`plugins/reply-instructions-js`, componentize-js) once per test run
/// with `npm ci` and `npm run build`, and returns its component. Needs node and npm.
pub fn js_plugin_wasm() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(build_js_plugin)
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
        .clone()
}

fn build_js_plugin() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .join("plugins")
        .join("reply-instructions-js");
    let run = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("npm")
            .args(args)
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run npm (install node and npm): {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "npm {} failed in {}:\n{}{}",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    if !dir.join("node_modules").join("@bytecodealliance").exists() {
        run(&["ci", "--no-audit", "--no-fund"])?;
    }
    run(&["run", "build"])?;
    Ok(dir.join("dist").join("reply_instructions_js.wasm"))
}

/// A compile cache shared by the tests, so a big component (the JS plugin) is compiled once.
pub fn shared_plugin_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target")
        .join("plugins")
        .join("cache")
}

// ---------------------------------------------------------------------------------------------
// The Python example plugin (issue 11). Kept apart at the end of the file so it merges easily.

/// Builds the Python plugin (`plugins/payload-check-py`, componentize-py) once per test run with its
/// `build.sh`, which sets up its own venv (`plugins/payload-check-py/.venv`) on first use, and
/// returns its component. Needs python3 and the PyPI registry the first time.
pub fn py_plugin_wasm() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins/payload-check-py")
                .canonicalize()
                .map_err(|e| format!("plugins/payload-check-py: {e}"))?;
            let out = std::process::Command::new("sh")
                .arg(dir.join("build.sh"))
                .output()
                .map_err(|e| format!("cannot run sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building plugins/payload-check-py failed (needs python3 with venv):\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(dir.join("dist").join("payload_check_py.wasm"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
        .clone()
}
