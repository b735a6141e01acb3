//! Test harness: a real inbox on `127.0.0.1:0`, a real hyper server as the peer, an HTTP client.
//!
//! Everything runs for real: sockets on loopback, agents as subprocesses (scripts in `tests/agents/`),
//! SQLite in a temp dir. Waiting is done by polling with a generous limit, never by fixed sleeps.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// The directory of the test agent scripts.
pub fn agents_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agents")
}

/// The test agent script's path, as a string for a TOML command.
pub fn agent_script() -> String {
    agents_dir().join("agent.py").display().to_string()
}

/// A running inbox.
pub struct Host {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config file and data live here.
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Host {
    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
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
    let task = tokio::spawn(agent_inbox::run(config, listener, async move {
        let _ = rx.await;
    }));
    Host {
        addr,
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}

/// One request a [`PeerServer`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request headers.
    pub headers: http::HeaderMap,
    /// The body, parsed.
    pub body: Value,
}

/// A real hyper server playing a peer inbox: records requests, answers with scripted statuses.
pub struct PeerServer {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer with, in order; when empty, 200.
    pub statuses: Arc<Mutex<VecDeque<u16>>>,
    arrived: Arc<Notify>,
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
        let received = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(VecDeque::new()));
        let arrived = Arc::new(Notify::new());
        let (stop, mut rx) = oneshot::channel::<()>();
        let (rec, st, ar) = (received.clone(), statuses.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = &mut rx => return,
                };
                let (rec, st, ar) = (rec.clone(), st.clone(), ar.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (rec, st, ar) = (rec.clone(), st.clone(), ar.clone());
                        async move {
                            let headers = req.headers().clone();
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            let status = st.lock().unwrap().pop_front().unwrap_or(200);
                            if status < 300 {
                                rec.lock().unwrap().push(Received { headers, body });
                            }
                            ar.notify_waiters();
                            let mut resp = http::Response::new(Full::new(Bytes::from_static(
                                b"{\"status\":\"received\"}",
                            )));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        PeerServer {
            addr,
            received,
            statuses,
            arrived,
            stop: Some(stop),
        }
    }

    /// The URL to put in a `[peers]` table.
    pub fn url(&self) -> String {
        format!("http://{}/message", self.addr)
    }

    /// Requests answered with 2xx so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests were answered with 2xx, for up to `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let got = self.received();
                assert!(
                    got.len() >= n,
                    "peer got {} requests, wanted {n}: {got:#?}",
                    got.len()
                );
                return got;
            }
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// The body as JSON (`Null` if it is not JSON).
    pub json: Value,
}

impl Resp {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
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
/// (e.g. to poll a server that is still starting).
pub async fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<Resp> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into()))?;
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
    })
}

/// POSTs JSON to `/message` as the peer with `secret`.
pub async fn post_message(host: &Host, secret: &str, body: Value) -> Resp {
    request(
        "POST",
        &host.url("/message"),
        &[
            ("x-shared-secret", secret),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// POSTs raw `body` to `/send` with `Authorization: Bearer {token}` (no header if `None`).
pub async fn post_send(host: &Host, token: Option<&str>, body: &str) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    request("POST", &host.url("/send"), &headers, body.to_owned()).await
}

/// GETs `path` as the admin.
pub async fn admin_get(host: &Host, admin: &str, path: &str) -> Resp {
    let auth = format!("Bearer {admin}");
    request("GET", &host.url(path), &[("authorization", &auth)], "").await
}

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
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until message `id`'s turn reaches a final state, and returns `GET /messages/{id}`.
pub async fn wait_turn_end(host: &Host, admin: &str, id: &str) -> Value {
    eventually(Duration::from_secs(30), "the turn to end", || async {
        let r = admin_get(host, admin, &format!("/messages/{id}")).await;
        let state = r.json["turn"]["state"].as_str().unwrap_or("");
        matches!(state, "done" | "failed" | "timed_out").then_some(r.json)
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

/// A loopback address nothing listens on: bound to find a free port, then released.
pub fn unused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

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
