//! Benchmarks: every figure is printed beside a baseline measured in the same run.
//!
//! `cargo run --release -p agent-inbox-tests --bin bench -- [SUITE...] [--secs N] [--quick]`
//!
//! Servers run as child processes of this binary (`bench serve ...` is the real `agent-inbox` command,
//! `bench bare ...` a bare hyper server), so their RSS can be read and the load generator does not share
//! their runtime. The load generator is closed-loop: C connections, each sending its next request as soon
//! as the last answer arrives, for a fixed time; it reports requests/s and latency percentiles.

use std::net::SocketAddr;
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
}

fn run_suites(args: &[String]) {
    let mut opts = Options {
        secs: 5.0,
        suites: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--secs" => {
                i += 1;
                opts.secs = args[i].parse().expect("--secs N");
            }
            "--quick" => opts.secs = 0.5,
            s => opts.suites.push(s.to_owned()),
        }
        i += 1;
    }
    if opts.suites.is_empty() {
        opts.suites = vec!["durability".into()];
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
            other => panic!("unknown suite {other:?}; known: durability"),
        }
    }
}

/// A child server process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
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
        _dir: None,
    }
}

/// Starts `agent-inbox serve` with a mailbox route (no agent), plus `server_extra` in `[server]`.
async fn start_inbox(server_extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let toml = format!(
        r#"
        [server]
        listen = "{addr}"
        admin_secret = "bench-admin"
        {server_extra}
        [peers.load]
        url = "http://127.0.0.1:9/message"
        secret = "{SECRET}"
        [routes.box]
        from = ["load"]
        types = ["TASK"]
        mailbox = true
        "#
    );
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn inbox");
    wait_ready(addr).await;
    Server {
        child,
        addr,
        _dir: Some(dir),
    }
}

/// What one load run measured.
struct Load {
    requests: usize,
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
            let (mut ok, mut errors) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::post(path.as_str())
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .header("x-shared-secret", SECRET)
                    .body(Full::new(body.clone()))
                    .unwrap();
                let t = Instant::now();
                let Ok(resp) = send.send_request(req).await else {
                    errors += 1;
                    break;
                };
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                if t >= start {
                    if status.is_success() {
                        ok += 1;
                        lat.push(t.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (ok, errors, lat)
        }));
    }
    tokio::time::sleep_until((start + run).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Load {
        requests: 0,
        errors: 0,
        secs: run.as_secs_f64(),
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await.expect("load task");
        out.requests += ok;
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
