//! Benchmarks: every figure is printed beside a baseline measured in the same run.
//!
//! `cargo run --release -p agent-inbox-tests --bin bench -- [SUITE...] [--secs N] [--quick] [--conns 1,16,64]`
//!
//! Servers run as child processes of this binary (`bench serve ...` is the real `agent-inbox` command,
//! `bench bare ...` a bare hyper server), so their RSS can be read and the load generator does not share
//! their runtime. The load generator is closed-loop: C connections, each sending its next request as soon
//! as the last answer arrives, for a fixed time; it reports requests/s and latency percentiles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "bench-secret";
const A2A_TOKEN: &str = "bench-a2a-token";
const ADMIN: &str = "bench-admin";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // The real command line, so the host under test is exactly `agent-inbox serve`.
        Some("serve") => std::process::exit(match agent_inbox::cli::main() {
            c if c == std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        }),
        Some("bare") => bare_server(args.get(2).expect("bare ADDR")),
        // Load an already running server, e.g. one under a profiler.
        Some("load") => {
            let addr: SocketAddr = args
                .get(2)
                .expect("load ADDR [SECS] [CONNS]")
                .parse()
                .expect("ADDR");
            let secs = args.get(3).map_or(5.0, |s| s.parse().expect("SECS"));
            let conns = args.get(4).map_or(64, |s| s.parse().expect("CONNS"));
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let l = rt.block_on(load(addr, "/message", MESSAGE, conns, secs));
            row(&format!("{addr}, {conns} connections"), &l, None);
        }
        _ => run_suites(&args[1..]),
    }
}

fn new_id() -> String {
    agent_inbox::model::new_id()
}

/// The baseline: hyper parsing the JSON body and answering 202, nothing else.
fn bare_server(addr: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let ok = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
                    let mut resp = http::Response::new(Full::new(Bytes::from_static(
                        b"{\"status\":\"received\",\"id\":\"0190f7a0-0000-7000-8000-000000000000\"}",
                    )));
                    *resp.status_mut() = if ok { http::StatusCode::ACCEPTED } else { http::StatusCode::BAD_REQUEST };
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
}

struct Options {
    secs: f64,
    suites: Vec<String>,
    /// Connection counts for the ack suite (`--conns 1,16,64`).
    conns: Vec<usize>,
}

fn run_suites(args: &[String]) {
    let mut opts = Options {
        secs: 5.0,
        suites: Vec::new(),
        conns: vec![1, 16, 64],
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--secs" => {
                i += 1;
                opts.secs = args[i].parse().expect("--secs N");
            }
            "--quick" => opts.secs = 0.5,
            "--conns" => {
                i += 1;
                opts.conns = args[i]
                    .split(',')
                    .map(|n| n.parse().expect("--conns N[,N...]"))
                    .collect();
            }
            s => opts.suites.push(s.to_owned()),
        }
        i += 1;
    }
    if opts.suites.is_empty() {
        opts.suites = [
            "ack",
            "a2a",
            "busy",
            "turns",
            "plugins",
            "reload",
            "idle",
            "durability",
            "postgres",
        ]
        .map(String::from)
        .to_vec();
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "# agent-inbox benchmarks, {} cores, {} s per point, closed-loop load from this process",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        opts.secs
    );
    for suite in &opts.suites {
        match suite.as_str() {
            "durability" => rt.block_on(durability(&opts)),
            "plugins" => rt.block_on(plugin_calls(&opts)),
            "reload" => rt.block_on(reload_under_load(&opts)),
            "ack" => rt.block_on(ack_path(&opts)),
            "busy" => rt.block_on(acks_while_agents_work(&opts)),
            "turns" => rt.block_on(turn_throughput(&opts)),
            "idle" => rt.block_on(idle_rss()),
            "a2a" => rt.block_on(a2a_send(&opts)),
            "postgres" => rt.block_on(postgres(&opts)),
            other => panic!(
                "unknown suite {other:?}; known: ack, a2a, busy, turns, plugins, reload, idle, durability, postgres"
            ),
        }
    }
}

/// A child server process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "server on {addr} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_bare() -> Server {
    let addr = free_addr();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["bare", &addr.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn bare server");
    wait_ready(addr).await;
    Server {
        child,
        addr,
        dir: None,
    }
}

/// Starts `agent-inbox serve` with a mailbox route (no agent), plus `server_extra` in `[server]`.
async fn start_inbox(server_extra: &str) -> Server {
    start_inbox_with(server_extra, MAILBOX, &[]).await
}

/// The benchmark's default route: TASKs from `load` kept in a mailbox.
const MAILBOX: &str = "[routes.box]\nfrom = [\"load\"]\ntypes = [\"TASK\"]\nmailbox = true\n";

/// Starts `agent-inbox serve` with `routes` (TOML), after copying `plugins` (file name, source) next
/// to its routes.toml.
async fn start_inbox_with(server_extra: &str, routes: &str, plugins: &[(&str, PathBuf)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    for (name, src) in plugins {
        std::fs::copy(src, dir.path().join(name)).expect("copy plugin");
    }
    let addr = free_addr();
    let toml = format!(
        r#"
        [server]
        listen = "{addr}"
        admin_secret = "{ADMIN}"
        {server_extra}
        [peers.load]
        url = "http://127.0.0.1:9/message"
        secret = "{SECRET}"
        {routes}
        "#
    );
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).unwrap();
    // The default log level, to a file, as a user runs it: a log line per accepted message is
    // part of the cost (RUST_LOG=warn in the environment measures without it).
    let log = std::fs::File::create(dir.path().join("inbox.log")).expect("create the log");
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn inbox");
    wait_ready(addr).await;
    Server {
        child,
        addr,
        dir: Some(dir),
    }
}

/// Bytes written so far to the block device that holds the server's data directory (sectors
/// written, in /sys/dev/block/MAJ:MIN/stat): the WAL, checkpoints into the database file, the
/// log, and the filesystem's journal. The server is the only writer while a bench runs. (The
/// process's `write_bytes` in /proc/PID/io, used before, counts a whole large folio each time a
/// byte of it is dirtied: ~4× the device's figure once the WAL is overwritten in place.)
fn written(s: &Server) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(s.dir.as_ref()?.path()).ok()?.dev();
    let (major, minor) = (
        ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff),
        ((dev >> 12) & 0xffff_ff00) | (dev & 0xff),
    );
    // None on a filesystem without a block device (a tmpfs /tmp).
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// What one load run measured.
struct Load {
    requests: usize,
    /// Successful requests, the warm-up's included.
    acked: usize,
    errors: usize,
    secs: f64,
    latencies_us: Vec<u32>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Closed-loop load: `conns` connections POSTing `body` to `path` for `secs` (after a short warm-up).
async fn load(addr: SocketAddr, path: &str, body: &str, conns: usize, secs: f64) -> Load {
    let warmup = Duration::from_secs_f64((secs / 5.0).min(1.0));
    let run = Duration::from_secs_f64(secs);
    let start = Instant::now() + warmup;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (path, body, stop) = (path.to_owned(), Bytes::from(body.to_owned()), stop.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream.set_nodelay(true);
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut lat = Vec::new();
            let (mut ok, mut errors, mut acked) = (0usize, 0usize, 0usize);
            // A2A dedups by messageId: each request gets its own ("{n}" in the body).
            let a2a = path == "/a2a";
            let conn_id = new_id();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut req = http::Request::post(path.as_str())
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .header("x-shared-secret", SECRET);
                let body = if a2a {
                    n += 1;
                    req = req
                        .header("authorization", format!("Bearer {A2A_TOKEN}"))
                        .header("a2a-version", "1.0");
                    let text = std::str::from_utf8(&body).unwrap_or_default();
                    Bytes::from(text.replace("{n}", &format!("{conn_id}-{n}")))
                } else {
                    body.clone()
                };
                let req = req.body(Full::new(body)).unwrap();
                let t = Instant::now();
                let Ok(resp) = send.send_request(req).await else {
                    errors += 1;
                    break;
                };
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                acked += usize::from(status.is_success());
                if t >= start {
                    if status.is_success() {
                        ok += 1;
                        lat.push(t.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (ok, errors, lat, acked)
        }));
    }
    tokio::time::sleep_until((start + run).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Load {
        requests: 0,
        acked: 0,
        errors: 0,
        secs: run.as_secs_f64(),
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat, acked) = t.await.expect("load task");
        out.requests += ok;
        out.acked += acked;
        out.errors += errors;
        out.latencies_us.extend(lat);
    }
    out.latencies_us.sort_unstable();
    out
}

fn row(name: &str, l: &Load, base: Option<&Load>) {
    let ratio = base
        .map(|b| format!("{:>6.1}%", 100.0 * l.rps() / b.rps()))
        .unwrap_or_else(|| "  base".into());
    println!(
        "  {name:<34} {:>9.0} req/s  {ratio}   p50 {:>7.3} ms   p99 {:>7.3} ms   errors {}",
        l.rps(),
        l.pct(0.50),
        l.pct(0.99),
        l.errors
    );
}

const MESSAGE: &str = r#"{"type":"TASK","payload":{"title":"benchmark","labels":["a","b"],"n":1}}"#;

/// Runs `f` `rounds` times and keeps the run with the median throughput.
fn median(mut runs: Vec<Load>) -> Load {
    runs.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// Issue 3: acked `/message` throughput with fsync on, beside the same build with synchronous=OFF.
///
/// The configurations alternate over three rounds and the median of each is kept, so a noisy second
/// on this shared machine does not decide the ratio.
async fn durability(opts: &Options) {
    const ROUNDS: usize = 3;
    println!(
        "\n## durability: acked POST /message to a mailbox route, 64 connections, median of {ROUNDS}"
    );
    let (mut bare, mut off, mut full) = (Vec::new(), Vec::new(), Vec::new());
    let mut rss = 0;
    for _ in 0..ROUNDS {
        let s = start_bare().await;
        bare.push(load(s.addr, "/message", MESSAGE, 64, opts.secs).await);
        drop(s);
        let s = start_inbox("synchronous = \"off\"").await;
        off.push(load(s.addr, "/message", MESSAGE, 64, opts.secs).await);
        drop(s);
        let s = start_inbox("synchronous = \"full\"").await;
        full.push(load(s.addr, "/message", MESSAGE, 64, opts.secs).await);
        rss = rss.max(s.rss_kib());
        drop(s);
    }
    let (bare, off, full) = (median(bare), median(off), median(full));
    row("bare hyper (parse JSON, answer 202)", &bare, None);
    row("inbox, synchronous=off (not durable)", &off, Some(&bare));
    row("inbox, synchronous=full (durable)", &full, Some(&bare));
    println!("  inbox RSS after a durable run: {} MiB", rss / 1024);
    println!(
        "  durable keeps {:.1}% of not-durable throughput (target >= 70%)",
        100.0 * full.rps() / off.rps()
    );
}

fn micros(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Issue 4: one check-message call (store + instantiate + call + drop) for the Rust example plugin,
/// beside a do-nothing plugin, fresh and warm; compile cold vs cached; the epoch-deadline stop time.
async fn plugin_calls(opts: &Options) {
    use agent_inbox::model::Message;
    use agent_inbox::plugins::{Engine, EngineConfig, Limits, Reuse};
    let calls = if opts.secs < 1.0 { 200 } else { 3000 };
    println!("\n## plugins: one check-message call, median of {calls} sequential calls");
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let cache = tempfile::tempdir().unwrap();
    let message = Message {
        id: "0190f7a0-0000-7000-8000-000000000000".into(),
        route: "tasks".into(),
        sender: "tony".into(),
        msg_type: "TASK".into(),
        payload: r#"{"title":"benchmark","labels":["a","b"],"priority":1}"#.into(),
        thread_id: "0190f7a0-0000-7000-8000-000000000000".into(),
        in_reply_to: None,
        hops: 0,
        sender_ref: None,
        received_at: 0,
        mailbox: false,
    };
    let config = r#"{"required":{"title":"string","priority":"number"},"max_len":{"title":200}}"#;

    let wasm = agent_inbox_tests::plugin_wasm("task-schema");
    let t = Instant::now();
    let cold = engine
        .load("task-schema", &wasm, cache.path(), Limits::default())
        .expect("load");
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let warm_load = engine
        .load("task-schema", &wasm, cache.path(), Limits::default())
        .expect("load");
    let hit_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(!cold.from_cache() && warm_load.from_cache());
    println!(
        "  load task-schema ({} KiB): compile {cold_ms:.1} ms, from the cache {hit_ms:.2} ms",
        std::fs::metadata(&wasm)
            .map(|m| m.len() / 1024)
            .unwrap_or(0)
    );

    let mut baseline = None;
    for (name, reuse) in [
        ("noop", Reuse::Fresh),
        ("task-schema", Reuse::Fresh),
        (
            "noop",
            Reuse::Warm {
                max_calls: 1_000_000,
            },
        ),
        (
            "task-schema",
            Reuse::Warm {
                max_calls: 1_000_000,
            },
        ),
    ] {
        let limits = Limits {
            reuse,
            ..Limits::default()
        };
        let plugin = engine
            .load(
                name,
                &agent_inbox_tests::plugin_wasm(name),
                cache.path(),
                limits,
            )
            .expect("load");
        // Warm up: the first calls fault in pages and fill caches.
        for _ in 0..50 {
            plugin.check_message(&message, config).await.expect("call");
        }
        let mut lat = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            plugin.check_message(&message, config).await.expect("call");
            lat.push(t.elapsed());
        }
        lat.sort_unstable();
        let (p50, p99) = (micros(&lat, 0.5), micros(&lat, 0.99));
        let mode = if reuse == Reuse::Fresh {
            "fresh instance"
        } else {
            "warm instance"
        };
        let vs = match (name, baseline) {
            ("noop", _) => {
                baseline = Some(p50);
                "  (baseline)".to_string()
            }
            (_, Some(b)) => format!("  (noop + {:.1} us)", p50 - b),
            _ => String::new(),
        };
        let target = match (name, reuse) {
            ("task-schema", Reuse::Fresh) => "   target p50 <= 50 us",
            ("task-schema", _) => "   target p50 <= 10 us",
            _ => "",
        };
        println!("  {name:<12} {mode:<15} p50 {p50:>8.1} us   p99 {p99:>8.1} us{vs}{target}");
    }

    // The epoch deadline: how long an infinite loop runs before it is stopped.
    let limits = Limits {
        deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let hostile = engine
        .load(
            "hostile",
            &agent_inbox_tests::plugin_wasm("hostile"),
            cache.path(),
            limits,
        )
        .expect("load");
    let mut stops = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let err = hostile
            .check_message(&message, r#"{"mode":"loop"}"#)
            .await
            .expect_err("stopped");
        stops.push(t.elapsed());
        assert_eq!(err.kind(), "deadline", "{err}");
    }
    stops.sort_unstable();
    println!(
        "  infinite loop with a 50 ms deadline: stopped after {:.1} ms (median of 10, max {:.1} ms)",
        micros(&stops, 0.5) / 1e3,
        micros(&stops, 1.0) / 1e3
    );
}

/// Issue 5: sustained `/message` load while routes.toml and a plugin are rewritten 50 times.
///
/// Every answer must be the one its `X-Config-Hash` dictates: the plugin file alternates between the
/// do-nothing plugin (TASK without a title is accepted, 202) and task-schema requiring a title (422),
/// and routes.toml changes every time too. The client knows the hash of every state the files pass
/// through (`hash_contents`), so an answer from a config nobody wrote, or the wrong answer for its
/// config, is counted. Reload latency is from the rename of routes.toml to the first answer that
/// carries the new hash.
async fn reload_under_load(opts: &Options) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    const VERSIONS: usize = 50;
    const CONNS: usize = 16;
    println!(
        "\n## reload: {VERSIONS} rewrites of routes.toml and a plugin under load ({CONNS} connections)"
    );
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let toml_path = base.join("routes.toml");
    let plugin_path = base.join("plugin.wasm");
    let addr = free_addr();
    let accept = std::fs::read(agent_inbox_tests::plugin_wasm("noop")).unwrap();
    let strict = std::fs::read(agent_inbox_tests::plugin_wasm("task-schema")).unwrap();
    let toml = |v: usize| {
        format!(
            r#"# version {v}
            [server]
            listen = "{addr}"
            admin_secret = "bench-admin"
            [peers.load]
            url = "http://127.0.0.1:9/message"
            secret = "{SECRET}"
            [routes.box]
            from = ["load"]
            types = ["TASK"]
            mailbox = true
            plugin = "plugin.wasm"
            plugin_config = {{ required = {{ title = "string" }} }}
            "#
        )
    };
    let plugin_for = |v: usize| {
        if v.is_multiple_of(2) {
            &accept
        } else {
            &strict
        }
    };
    let status_for = |v: usize| if v.is_multiple_of(2) { 202u16 } else { 422 };
    let hash = |t: usize, p: usize| {
        agent_inbox::config::hash_contents(
            &toml(t),
            &[(plugin_path.as_path(), plugin_for(p).as_slice())],
        )
    };
    let write = |path: &std::path::Path, bytes: &[u8]| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    };
    // hash -> the status its config gives a TASK without a title.
    let expected: Arc<Mutex<HashMap<String, u16>>> = Arc::new(Mutex::new(HashMap::new()));
    expected.lock().unwrap().insert(hash(0, 0), status_for(0));
    write(&plugin_path, plugin_for(0));
    write(&toml_path, toml(0).as_bytes());
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["serve", "--config"])
        .arg(&toml_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn inbox");
    let server = Server {
        child,
        addr,
        dir: None,
    };
    wait_ready(addr).await;

    let stop = Arc::new(AtomicBool::new(false));
    let first_seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (stop, expected, first_seen) = (stop.clone(), expected.clone(), first_seen.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut wrong, mut unknown, mut conn_errors) =
                (0usize, 0usize, 0usize, 0usize);
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::post("/message")
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .header("x-shared-secret", SECRET)
                    .body(Full::new(Bytes::from_static(
                        br#"{"type":"TASK","payload":{}}"#,
                    )))
                    .unwrap();
                let resp = match send.send_request(req).await {
                    Ok(r) => r,
                    Err(_) => {
                        conn_errors += 1;
                        break;
                    }
                };
                let status = resp.status().as_u16();
                let hash = resp
                    .headers()
                    .get("x-config-hash")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let _ = resp.into_body().collect().await;
                first_seen
                    .lock()
                    .unwrap()
                    .entry(hash.clone())
                    .or_insert_with(Instant::now);
                match expected.lock().unwrap().get(&hash) {
                    Some(&want) if want == status => ok += 1,
                    Some(_) => wrong += 1,
                    None => unknown += 1,
                }
            }
            (ok, wrong, unknown, conn_errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut missed = 0;
    for v in 1..=VERSIONS {
        {
            // Every state the two renames can leave: new plugin with the old file, then both new.
            let mut e = expected.lock().unwrap();
            e.insert(hash(v - 1, v), status_for(v));
            e.insert(hash(v, v), status_for(v));
        }
        write(&plugin_path, plugin_for(v));
        write(&toml_path, toml(v).as_bytes());
        let written = Instant::now();
        let target = hash(v, v);
        let deadline = written + Duration::from_secs(5);
        loop {
            if let Some(seen) = first_seen.lock().unwrap().get(&target) {
                latencies.push(seen.saturating_duration_since(written));
                break;
            }
            if Instant::now() > deadline {
                missed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_secs_f64((opts.secs / 50.0).max(0.05))).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut wrong, mut unknown, mut conn_errors) = (0, 0, 0, 0);
    for t in tasks {
        let (a, b, c, d) = t.await.expect("load task");
        ok += a;
        wrong += b;
        unknown += c;
        conn_errors += d;
    }
    drop(server);
    latencies.sort_unstable();
    let ms = |p: f64| micros(&latencies, p) / 1e3;
    println!(
        "  {} answers: {ok} as their config dictates, {wrong} wrong for their config, {unknown} from an unknown config, {conn_errors} connection errors",
        ok + wrong + unknown
    );
    println!(
        "  reload latency (routes.toml renamed -> first answer from the new config): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} reloads ({missed} not seen within 5 s); target p99 <= 1000 ms",
        ms(0.5),
        ms(0.99),
        ms(1.0),
        latencies.len()
    );
}

/// The route with the Rust example plugin checking every TASK (the payload has the required title).
fn plugin_route() -> (String, Vec<(&'static str, PathBuf)>) {
    let route = format!(
        "{MAILBOX}plugin = \"task-schema.wasm\"\n\
         plugin_config = {{ required = {{ title = \"string\" }}, max_len = {{ title = 200 }} }}\n"
    );
    (
        route,
        vec![(
            "task-schema.wasm",
            agent_inbox_tests::plugin_wasm("task-schema"),
        )],
    )
}

/// Issue 6, item 1: `/message` at 1, 16 and 64 connections, durable, with and without a plugin,
/// beside bare hyper.
async fn ack_path(opts: &Options) {
    println!("\n## ack path: POST /message to a mailbox route, durable (synchronous = full)");
    let (route, plugins) = plugin_route();
    for &conns in &opts.conns {
        let s = start_bare().await;
        let bare = load(s.addr, "/message", MESSAGE, conns, opts.secs).await;
        drop(s);
        let s = start_inbox("").await;
        let before = written(&s);
        let inbox = load(s.addr, "/message", MESSAGE, conns, opts.secs).await;
        let bytes = written(&s)
            .zip(before)
            .map(|(after, before)| after - before);
        drop(s);
        let s = start_inbox_with("", &route, &plugins).await;
        let with_plugin = load(s.addr, "/message", MESSAGE, conns, opts.secs).await;
        drop(s);
        // The same plugin with warm instances (warm_calls), from the per-plugin warm pool.
        let warm = format!("{route}plugin_limits = {{ warm_calls = 100000 }}\n");
        let s = start_inbox_with("", &warm, &plugins).await;
        let with_warm = load(s.addr, "/message", MESSAGE, conns, opts.secs).await;
        drop(s);
        println!("  {conns} connection(s):");
        row("bare hyper", &bare, None);
        row("inbox", &inbox, Some(&bare));
        row(
            "inbox + task-schema check-message",
            &with_plugin,
            Some(&bare),
        );
        row(
            "inbox + task-schema, warm instances",
            &with_warm,
            Some(&bare),
        );
        println!(
            "  inbox p99 / bare p99: {:.2}x (target <= 2x); with plugin {:.2}x",
            inbox.pct(0.99) / bare.pct(0.99),
            with_plugin.pct(0.99) / bare.pct(0.99)
        );
        match bytes {
            Some(bytes) => println!(
                "  inbox wrote {:.0} bytes per acked message to the disk (the device's sectors: WAL, checkpoints, log and journal, over {} messages)",
                bytes as f64 / inbox.acked.max(1) as f64,
                inbox.acked
            ),
            None => println!(
                "  bytes written per message: n/a (the data directory is on no block device)"
            ),
        }
    }
}

/// A2A SendMessage with returnImmediately, beside POST /message and bare hyper, in one run: the
/// task is committed with its message and queued turn before the answer. The skill's agent runs
/// one at a time and sleeps, so the queue takes the load and agents cost nothing measurable.
async fn a2a_send(opts: &Options) {
    println!("\n## A2A SendMessage (returnImmediately) beside POST /message, durable");
    let routes = format!(
        "{MAILBOX}\n[a2a]\n[peers.client]\na2a_token = \"{A2A_TOKEN}\"\n\
         [routes.ask]\nfrom = [\"client\"]\nreply_types = [\"ANSWER\"]\n\
         agent = {{ command = [\"sleep\", \"600\"], max_concurrent = 1, max_queued = 100000000 }}\n\
         a2a = {{ type = \"ASK\" }}\n"
    );
    for &conns in &opts.conns {
        let mut bare = Vec::new();
        let mut message = Vec::new();
        let mut a2a = Vec::new();
        // Alternating runs, so drift (disk, page cache) hits all three alike.
        for _ in 0..3 {
            let s = start_bare().await;
            bare.push(load(s.addr, "/message", MESSAGE, conns, opts.secs).await);
            drop(s);
            let s = start_inbox_with("", &routes, &[]).await;
            message.push(load(s.addr, "/message", MESSAGE, conns, opts.secs).await);
            a2a.push(load(s.addr, "/a2a", A2A_SEND, conns, opts.secs).await);
            drop(s);
        }
        let (bare, message, a2a) = (median(bare), median(message), median(a2a));
        println!("  {conns} connection(s), medians of 3 alternating runs:");
        row("bare hyper", &bare, None);
        row("POST /message (mailbox)", &message, Some(&bare));
        row("A2A SendMessage (returnImmediately)", &a2a, Some(&bare));
    }
}

/// A SendMessage body; `{n}` becomes a unique messageId per request.
const A2A_SEND: &str = r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"{n}","role":"ROLE_USER","parts":[{"text":"Refactor the login page"}]},"configuration":{"returnImmediately":true}}}"#;

/// POSTs `n` messages of `body` over `conns` connections; returns how many were acked.
async fn send_n(addr: SocketAddr, body: &'static str, n: usize, conns: usize) -> usize {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut acked = 0;
            while next.fetch_add(1, Ordering::SeqCst) < n {
                let req = http::Request::post("/message")
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .header("x-shared-secret", SECRET)
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap();
                let Ok(resp) = send.send_request(req).await else {
                    break;
                };
                if resp.status().is_success() {
                    acked += 1;
                }
                let _ = resp.into_body().collect().await;
            }
            acked
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.expect("sender");
    }
    acked
}

/// `GET /status` as the admin.
async fn status(addr: SocketAddr) -> serde_json::Value {
    admin_json(addr, "/status").await
}

/// A GET as the admin, its body as JSON.
async fn admin_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "bench")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.expect("status");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).unwrap_or_default()
}

const WORK: &str = r#"{"type":"WORK","payload":{"n":1}}"#;

/// Issue 6, item 2: acks while 200 agents sleep 30 s and 1,000 more turns are queued.
async fn acks_while_agents_work(opts: &Options) {
    println!(
        "\n## acks while agents work: 200 agents sleeping 30 s, 1,000 turns queued, 64 connections"
    );
    let s = start_bare().await;
    let bare = load(s.addr, "/message", MESSAGE, 64, opts.secs).await;
    drop(s);
    let routes = format!(
        "{MAILBOX}[routes.work]\nfrom = [\"load\"]\ntypes = [\"WORK\"]\n\
         agent = {{ command = [\"sleep\", \"30.0042\"], max_concurrent = 200, max_queued = 5000, timeout_secs = 40 }}\n"
    );
    let s = start_inbox_with("", &routes, &[]).await;
    let quiet_rss = s.rss_kib();
    let acked = send_n(s.addr, WORK, 1200, 16).await;
    let st = eventually_status(s.addr, |st| st["turns_running"] == 200).await;
    let busy_rss = s.rss_kib();
    let l = load(s.addr, "/message", MESSAGE, 64, opts.secs).await;
    let after_rss = s.rss_kib();
    drop(s);
    // The sleeping agents are in process groups of their own; end them rather than wait 30 s.
    // (The odd duration makes their command line this benchmark's own.)
    let _ = Command::new("pkill")
        .args(["-f", "^sleep 30.0042$"])
        .status();
    println!(
        "  {acked} WORK messages acked; {} agents running, {} queued",
        st["turns_running"], st["turns_queued"]
    );
    row("bare hyper", &bare, None);
    row("inbox while agents work", &l, Some(&bare));
    println!(
        "  inbox p99 / bare p99: {:.2}x (target <= 2x); RSS {} MiB idle, {} MiB with the agents, {} MiB after the load (target <= 150 MiB)",
        l.pct(0.99) / bare.pct(0.99),
        quiet_rss / 1024,
        busy_rss / 1024,
        after_rss / 1024
    );
}

async fn eventually_status(
    addr: SocketAddr,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(addr).await;
        if done(&st) || Instant::now() > deadline {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 6, item 3: messages/s from ack to turn done with `true` as the agent, beside spawning `true`
/// directly with the same concurrency.
async fn turn_throughput(opts: &Options) {
    let n = if opts.secs < 1.0 { 200 } else { 2000 };
    println!("\n## turn throughput: {n} messages, agent `true`, max_concurrent 4");
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut spawns = Vec::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        spawns.push(tokio::spawn(async move {
            let _ = tokio::process::Command::new("true").status().await;
            drop(permit);
        }));
    }
    for s in spawns {
        let _ = s.await;
    }
    let bare = n as f64 / t.elapsed().as_secs_f64();
    let routes = "[routes.work]\nfrom = [\"load\"]\ntypes = [\"WORK\"]\n\
                  agent = { command = [\"true\"], max_concurrent = 4, max_queued = 100000 }\n";
    let s = start_inbox_with("", routes, &[]).await;
    let t = Instant::now();
    let acked = send_n(s.addr, WORK, n, 16).await;
    eventually_status(s.addr, |st| {
        st["turns_running"] == 0 && st["turns_queued"] == 0
    })
    .await;
    let inbox = acked as f64 / t.elapsed().as_secs_f64();
    drop(s);
    println!("  spawning `true` directly, 4 at a time   {bare:>8.0} /s   base");
    println!(
        "  inbox: ack -> turn done                 {inbox:>8.0} /s   {:.1}%",
        100.0 * inbox / bare
    );
}

/// Issue 6, item 5: resident memory of an idle inbox, beside an idle bare hyper server.
async fn idle_rss() {
    println!("\n## idle RSS");
    let bare = start_bare().await;
    let (route, plugins) = plugin_route();
    let inbox = start_inbox("").await;
    let with_plugin = start_inbox_with("", &route, &plugins).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("  bare hyper                 {:>6} KiB", bare.rss_kib());
    println!(
        "  inbox                      {:>6} KiB   (target <= 30 MiB)",
        inbox.rss_kib()
    );
    println!(
        "  inbox with a plugin loaded {:>6} KiB",
        with_plugin.rss_kib()
    );
}

/// Issue 15: the PostgreSQL store beside SQLite beside bare hyper, in one run. Needs a database:
/// `INBOX_BENCH_DATABASE_URL` (else `INBOX_TEST_DATABASE_URL`); each inbox gets a schema of its own.
async fn postgres(opts: &Options) {
    let Some(url) = std::env::var("INBOX_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("INBOX_TEST_DATABASE_URL"))
        .ok()
    else {
        println!("\n## postgres: skipped, no INBOX_BENCH_DATABASE_URL or INBOX_TEST_DATABASE_URL");
        return;
    };
    // A literal URL (check warns about it): the children get no environment of ours.
    let store = |schema: &str| {
        format!(
            "\n[store]\nkind = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\npool_size = 16\n"
        )
    };
    let fresh = || format!("bench_{}", uuid_like());
    println!(
        "\n## postgres: acked POST /message to a mailbox route, PostgreSQL beside SQLite beside bare hyper"
    );
    for &conns in &opts.conns {
        let (mut bare, mut lite, mut pg) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let s = start_bare().await;
            bare.push(load(s.addr, "/message", MESSAGE, conns, opts.secs).await);
            drop(s);
            let s = start_inbox("").await;
            lite.push(load(s.addr, "/message", MESSAGE, conns, opts.secs).await);
            drop(s);
            let s = start_inbox(&store(&fresh())).await;
            pg.push(load(s.addr, "/message", MESSAGE, conns, opts.secs).await);
            drop(s);
        }
        let (bare, lite, pg) = (median(bare), median(lite), median(pg));
        println!("  {conns} connection(s), medians of 3 alternating runs:");
        row("bare hyper", &bare, None);
        row("inbox, SQLite", &lite, Some(&bare));
        row("inbox, PostgreSQL", &pg, Some(&bare));
        println!(
            "  p99 / bare p99: SQLite {:.2}x, PostgreSQL {:.2}x",
            lite.pct(0.99) / bare.pct(0.99),
            pg.pct(0.99) / bare.pct(0.99)
        );
    }

    let n = if opts.secs < 1.0 { 200 } else { 1000 };
    println!(
        "\n## postgres: turn throughput, {n} messages, agent `true`, max_concurrent 4 per host"
    );
    let routes = "[routes.work]\nfrom = [\"load\"]\ntypes = [\"WORK\"]\n\
                  agent = { command = [\"true\"], max_concurrent = 4, max_queued = 100000 }\n";
    let idle = |st: &serde_json::Value| st["turns_running"] == 0 && st["turns_queued"] == 0;
    for hosts in [1usize, 2] {
        let schema = fresh();
        let mut servers = Vec::new();
        for _ in 0..hosts {
            servers.push(start_inbox_with(&store(&schema), routes, &[]).await);
        }
        let t = Instant::now();
        let acked = send_n(servers[0].addr, WORK, n, 16).await;
        // Done when no host runs one and none is queued (counted each second: allow for it).
        loop {
            let mut all = true;
            for s in &servers {
                all &= idle(&status(s.addr).await);
            }
            if all || t.elapsed() > Duration::from_secs(120) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = acked as f64 / t.elapsed().as_secs_f64();
        println!(
            "  {hosts} host(s) on one database: ack -> turn done  {rate:>8.0} /s (acks all to the first host)"
        );
        drop(servers);
    }

    println!(
        "\n## postgres: ack on one host -> turn start on the other (LISTEN/NOTIFY), median of 30"
    );
    // Host a runs one turn at a time and is kept busy by a blocker, so every new turn acked on a
    // is started by b, which hears of it through NOTIFY (its slow poll is every 5 s).
    let agent = |max: usize| {
        format!(
            "{MAILBOX}[routes.work]\nfrom = [\"load\"]\ntypes = [\"WORK\"]\n\
             agent = {{ command = [\"sh\", \"-c\", \"[ \\\"$0\\\" = block ] && exec sleep 600.0043; exit 0\", \"{{thread_id}}\"], max_concurrent = {max}, max_queued = 100000 }}\n"
        )
    };
    for busy in [false, true] {
        let schema = fresh();
        let a = start_inbox_with(&store(&schema), &agent(1), &[]).await;
        let b = start_inbox_with(&store(&schema), &agent(8), &[]).await;
        // Blockers until a runs one (b may take some first).
        for _ in 0..8 {
            post_one(a.addr, BLOCK).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            if status(a.addr).await["turns_running"] == 1 {
                break;
            }
        }
        let background = busy.then(|| {
            let addr = a.addr;
            tokio::spawn(async move { load(addr, "/message", MESSAGE, 16, 60.0).await })
        });
        if busy {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut waits = Vec::new();
        for _ in 0..30 {
            let id = post_one(a.addr, WORK).await;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                let v = admin_json(a.addr, &format!("/messages/{id}")).await;
                let turn = &v["turn"];
                if let (Some(q), Some(s)) =
                    (turn["queued_at"].as_i64(), turn["started_at"].as_i64())
                {
                    waits.push((s - q) as f64);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(t) = background {
            t.abort();
        }
        waits.sort_by(f64::total_cmp);
        let median = waits.get(waits.len() / 2).copied().unwrap_or(f64::NAN);
        let p90 = waits.get(waits.len() * 9 / 10).copied().unwrap_or(f64::NAN);
        println!(
            "  {}: median {median:.0} ms, p90 {p90:.0} ms ({} turns)",
            if busy {
                "busy (acks to a at 16 connections meanwhile)"
            } else {
                "idle cluster"
            },
            waits.len()
        );
        drop((a, b));
        let _ = Command::new("pkill")
            .args(["-f", "^sleep 600.0043$"])
            .status();
    }
}

const BLOCK: &str = r#"{"type":"WORK","thread_id":"block","payload":{}}"#;

/// POSTs one message; returns its id.
async fn post_one(addr: SocketAddr, body: &'static str) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::post("/message")
        .header("host", "bench")
        .header("content-type", "application/json")
        .header("x-shared-secret", SECRET)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = send.send_request(req).await.expect("post");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    v["id"].as_str().unwrap_or_default().to_owned()
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}
