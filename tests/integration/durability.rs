//! Never lose an acked message: idempotency, retries, dead letters, restarts and a kill -9 mid-load.
//!
//! The restart tests run the real binary (`inbox-under-test serve`) so a stop is a real process exit:
//! agents outlive it, and kill -9 leaves the database as a crash would.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_inbox_tests::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret";
const TONY: &str = "tony-secret";

fn fast_relay(schedule: &str) -> String {
    format!("[relay]\nretry_schedule = {schedule}\n")
}

fn inproc_config(peer_url: &str, command: &str, relay: &str) -> String {
    format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [agent]
        command = {command}
        {relay}
        [peers.tony]
        url = "{peer_url}"
        secret = "{TONY}"
        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["DONE"]
        reply_to = ["tony"]
        "#
    )
}

fn reply_sh() -> String {
    agents_dir().join("reply.sh").display().to_string()
}

/// The first (only) delivery of the first reply in a message view.
fn first_delivery(view: &Value) -> Value {
    view["replies"][0]["deliveries"][0].clone()
}

async fn wait_delivery_state(host: &Host, id: &str, state: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("a delivery {state}"),
        || async {
            let v = admin_get(host, ADMIN, &format!("/messages/{id}"))
                .await
                .json;
            (first_delivery(&v)["state"] == state).then_some(v)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_gets_one_turn_and_the_duplicate_answer() {
    let peer = PeerServer::start().await;
    let record = tempfile::tempdir().unwrap();
    let command = format!(
        r#"["python3", "{}", "--record", "{}"]"#,
        agent_script(),
        record.path().display()
    );
    let host = start_host(&inproc_config(&peer.url(), &command, "")).await;
    let post = |key: &'static str| {
        let url = host.url("/message");
        async move {
            request(
                "POST",
                &url,
                &[
                    ("x-shared-secret", TONY),
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                json!({"type": "TASK"}).to_string(),
            )
            .await
        }
    };
    let first = post("key-1").await;
    assert_eq!(first.status, 202);
    let again = post("key-1").await;
    assert_eq!(again.status, 200, "{:?}", again.json);
    assert_eq!(
        again.json,
        json!({"status": "duplicate", "id": first.json["id"]})
    );
    // Without the header, the body's id is the key.
    let a = post_message(&host, TONY, json!({"type": "TASK", "id": "body-id"})).await;
    let b = post_message(&host, TONY, json!({"type": "TASK", "id": "body-id"})).await;
    assert_eq!((a.status, b.status), (202, 200));
    assert_eq!(b.json["id"], a.json["id"]);

    for id in [&first.json["id"], &a.json["id"]] {
        wait_turn_end(&host, ADMIN, id.as_str().unwrap()).await;
    }
    let listed = admin_get(&host, ADMIN, "/messages").await.json;
    assert_eq!(
        listed["messages"].as_array().unwrap().len(),
        2,
        "{listed:#}"
    );
    assert_eq!(
        std::fs::read_dir(record.path()).unwrap().count(),
        2,
        "one turn per key"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_500s_then_200_is_delivered_once_after_four_attempts() {
    let peer = PeerServer::start().await;
    peer.statuses.lock().unwrap().extend([500, 500, 500]);
    let command = format!(r#"["sh", "{}"]"#, reply_sh());
    let relay = fast_relay(r#"["0s", "100ms", "100ms", "100ms", "100ms"]"#);
    let host = start_host(&inproc_config(&peer.url(), &command, &relay)).await;
    let id = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = wait_delivery_state(&host, &id, "delivered").await;
    let d = first_delivery(&view);
    assert_eq!(d["attempts"], 4, "{d:#}");
    assert_eq!(d["last_status"], 200);
    let got = peer.received();
    assert_eq!(got.len(), 1, "delivered once");
    // Every attempt carried the same id and Idempotency-Key, so the peer could dedup.
    assert_eq!(
        got[0].headers["idempotency-key"],
        got[0].body["id"].as_str().unwrap()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_is_a_dead_letter_at_once() {
    let peer = PeerServer::start().await;
    peer.statuses.lock().unwrap().push_back(410);
    let command = format!(r#"["sh", "{}"]"#, reply_sh());
    let relay = fast_relay(r#"["0s", "100ms", "100ms"]"#);
    let host = start_host(&inproc_config(&peer.url(), &command, &relay)).await;
    let id = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = wait_delivery_state(&host, &id, "dead").await;
    let d = first_delivery(&view);
    assert_eq!(
        (d["attempts"].as_u64(), d["last_status"].as_u64()),
        (Some(1), Some(410)),
        "{d:#}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_schedule_is_dead_and_outbox_retry_delivers_it() {
    let peer = PeerServer::start().await;
    peer.statuses.lock().unwrap().extend([503, 503]);
    let command = format!(r#"["sh", "{}"]"#, reply_sh());
    let relay = fast_relay(r#"["0s", "100ms"]"#);
    let host = start_host(&inproc_config(&peer.url(), &command, &relay)).await;
    let id = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = wait_delivery_state(&host, &id, "dead").await;
    let d = first_delivery(&view);
    assert_eq!(d["attempts"], 2);
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{d:#}"
    );
    let reply_id = view["replies"][0]["id"].as_str().unwrap().to_owned();

    let dead = admin_get(&host, ADMIN, "/admin/outbox?dead=1").await.json;
    let listed: Vec<&str> = dead["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reply"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [reply_id.as_str()]);

    let auth = format!("Bearer {ADMIN}");
    let retry_url = host.url(&format!("/admin/outbox/{reply_id}/retry"));
    let r = request("POST", &retry_url, &[("authorization", &auth)], "").await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["deliveries"], 1);
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["id"], reply_id.as_str());
    wait_delivery_state(&host, &id, "delivered").await;
    // Nothing is dead any more, so a second retry is a conflict.
    let again = request("POST", &retry_url, &[("authorization", &auth)], "").await;
    assert_eq!((again.status, again.code()), (409, "conflict"));
    host.stop().await;
}

// ---- the real binary: restarts and crashes ----

/// A free loopback port (bound and released; nothing else here takes ports by number).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Like `request`, but a connection error is a value: the host may be dead on purpose.
async fn try_request(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(u16, Value), String> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// The inbox as a separate process.
struct BinHost {
    child: std::process::Child,
    addr: SocketAddr,
}

impl BinHost {
    /// Writes `toml` to `dir/routes.toml` and runs `serve` on it; waits until it answers.
    async fn start(dir: &Path, toml: &str, addr: SocketAddr, log: &str) -> BinHost {
        std::fs::write(dir.join("routes.toml"), toml).unwrap();
        let log = std::fs::File::create(dir.join(log)).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_inbox-under-test"))
            .args(["serve", "--config"])
            .arg(dir.join("routes.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let host = BinHost { child, addr };
        let client = http_client();
        let url = host.url("/healthz");
        eventually(
            Duration::from_secs(30),
            "the binary to answer /healthz",
            || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    try_request(&client, "GET", &url, &[], String::new())
                        .await
                        .ok()
                        .filter(|r| r.0 == 200)
                }
            },
        )
        .await;
        host
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        self.sigterm_wait()
    }

    /// Waits for the process to exit after a SIGTERM already sent.
    fn sigterm_wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn view(client: &HttpClient, host: &BinHost, id: &str) -> Value {
    let auth = format!("Bearer {ADMIN}");
    try_request(
        client,
        "GET",
        &host.url(&format!("/messages/{id}")),
        &[("authorization", &auth)],
        String::new(),
    )
    .await
    .map(|r| r.1)
    .unwrap_or(Value::Null)
}

fn bin_config(
    addr: SocketAddr,
    peer_url: &str,
    command: &str,
    extra_agent: &str,
    schedule: &str,
) -> String {
    format!(
        r#"
        [server]
        listen = "{addr}"
        admin_secret = "{ADMIN}"
        drain_secs = 0
        [agent]
        command = {command}
        max_queued = 100000
        {extra_agent}
        [relay]
        retry_schedule = {schedule}
        [peers.tony]
        url = "{peer_url}"
        secret = "{TONY}"
        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["DONE", "BREAKDOWN"]
        reply_to = ["tony"]
        "#
    )
}

/// An agent that waits for `gate` to exist, then replies with `reply`.
fn gated_agent(gate: &Path, reply: &str) -> String {
    format!(
        r#"["python3", "{}", "--wait-for", "{}", "--reply", "{reply}"]"#,
        agent_script(),
        gate.display()
    )
}

/// Sends a TASK as tony and waits until its turn runs; returns the message id.
async fn send_task_until_running(client: &HttpClient, host: &BinHost) -> String {
    let headers = [
        ("x-shared-secret", TONY),
        ("content-type", "application/json"),
    ];
    let body = json!({"type": "TASK"}).to_string();
    let (status, ack) = try_request(client, "POST", &host.url("/message"), &headers, body)
        .await
        .unwrap();
    assert_eq!(status, 202, "{ack}");
    let id = ack["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "the turn to run", || {
        let id = &id;
        async move { (view(client, host, id).await["turn"]["state"] == "running").then_some(()) }
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_replies_after_a_host_restart() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let command = gated_agent(&gate, "BREAKDOWN");
    let addr = free_addr();
    let toml = bin_config(
        addr,
        &peer.url(),
        &command,
        "on_interrupt = \"fail\"",
        r#"["0s", "200ms", "200ms", "200ms"]"#,
    );
    let client = http_client();
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let id = send_task_until_running(&client, &host).await;

    // A graceful stop with drain_secs = 0 leaves the agent running, as a deploy would.
    let status = host.sigterm();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    // on_interrupt = "fail": the peer hears the turn was interrupted...
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED");
    assert_eq!(got[0].body["payload"]["state"], "interrupted");
    // ...and the agent, still running from before the restart, can still reply with its token.
    std::fs::write(&gate, b"go").unwrap();
    let got = peer.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got[1].body["type"], "BREAKDOWN");
    assert_eq!(got[1].body["in_reply_to"], id.as_str());
    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_interrupted_by_kill_9_runs_again_once() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let command = gated_agent(&gate, "DONE");
    let addr = free_addr();
    let toml = bin_config(
        addr,
        &peer.url(),
        &command,
        "",
        r#"["0s", "200ms", "200ms", "200ms"]"#,
    );
    let client = http_client();
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let id = send_task_until_running(&client, &host).await;
    host.kill9();
    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    let v = eventually(Duration::from_secs(30), "the re-run to start", || {
        let (client, host, id) = (&client, &host, &id);
        async move {
            let v = view(client, host, id).await;
            (v["turn"]["attempts"] == 2 && v["turn"]["state"] == "running").then_some(v)
        }
    })
    .await;
    assert_eq!(v["turn"]["attempts"], 2);
    std::fs::write(&gate, b"go").unwrap();
    let v = eventually(Duration::from_secs(30), "the re-run to finish", || {
        let (client, host, id) = (&client, &host, &id);
        async move {
            let v = view(client, host, id).await;
            (v["turn"]["state"] == "done").then_some(v)
        }
    })
    .await;
    assert_eq!(v["turn"]["attempts"], 2, "{v:#}");
    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_acked_message_and_no_reply() {
    const TOTAL: usize = 2000;
    const KILL_AFTER: usize = 1000;
    const CLIENTS: usize = 32;
    let peer = PeerServer::start().await;
    // The peer is down (503) until after the restart, so every reply is undelivered at the kill.
    peer.statuses
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n(503, 10_000_000));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let command = format!(r#"["sh", "{}", "DONE"]"#, reply_sh());
    let schedule = format!("[\"0s\"{}]", ", \"2s\"".repeat(100));
    let toml = bin_config(addr, &peer.url(), &command, "max_concurrent = 8", &schedule);
    let client = http_client();
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let load = |url: String| {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (acked, next, client, url) =
                (acked.clone(), next.clone(), client.clone(), url.clone());
            clients.push(tokio::spawn(async move {
                let mut errors = 0;
                while next.fetch_add(1, Ordering::SeqCst) < TOTAL {
                    let body = json!({"type": "TASK", "payload": {"n": 1}}).to_string();
                    let headers = [
                        ("x-shared-secret", TONY),
                        ("content-type", "application/json"),
                    ];
                    match try_request(&client, "POST", &url, &headers, body).await {
                        Ok((202, v)) => acked
                            .lock()
                            .unwrap()
                            .push(v["id"].as_str().unwrap().to_owned()),
                        Ok((status, v)) => panic!("unexpected answer {status}: {v}"),
                        // The host was killed under us: this message was never acked.
                        Err(_) => {
                            errors += 1;
                            if errors > 3 {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        clients
    };
    let clients = load(host.url("/message"));
    eventually(
        Duration::from_secs(60),
        "half the messages to be acked",
        || {
            let n = acked.lock().unwrap().len();
            async move { (n >= KILL_AFTER).then_some(()) }
        },
    )
    .await;
    host.kill9();
    let killed_at = store_now();
    for c in clients {
        c.await.unwrap();
    }
    let acked_before = acked.lock().unwrap().len();
    let sent_before = next.load(Ordering::SeqCst).min(TOTAL);

    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    // The rest of the load goes to the restarted host.
    next.store(sent_before, Ordering::SeqCst);
    for c in load(host.url("/message")) {
        c.await.unwrap();
    }
    peer.statuses.lock().unwrap().clear();
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= TOTAL - CLIENTS * 4,
        "most messages acked: {}",
        acked.len()
    );

    // Every acked message is there and gets its turn; every reply reaches the peer.
    let mut pending: Vec<String> = acked.clone();
    let mut ran_twice = 0;
    let mut replies_from_before_kill = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} acked messages not finished: {:?}",
            pending.len(),
            &pending[..pending.len().min(5)]
        );
        let mut still = Vec::new();
        for id in pending {
            let v = view(&client, &host, &id).await;
            assert!(
                !v.is_null(),
                "acked message {id} is missing after the crash"
            );
            let delivered = v["replies"].as_array().is_some_and(|r| {
                !r.is_empty() && r.iter().all(|r| r["deliveries"][0]["state"] == "delivered")
            });
            if v["turn"]["state"] == "done" && delivered {
                if v["turn"]["attempts"].as_u64() > Some(1) {
                    ran_twice += 1;
                }
                replies_from_before_kill += v["replies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["created_at"].as_i64() < Some(killed_at))
                    .count();
            } else {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let received = peer.received();
    let answered: std::collections::HashSet<&str> = received
        .iter()
        .filter_map(|r| r.body["in_reply_to"].as_str())
        .collect();
    for id in &acked {
        assert!(
            answered.contains(id.as_str()),
            "the peer never got the reply to {id}"
        );
    }
    assert!(
        replies_from_before_kill > 0,
        "the kill should have left undelivered replies"
    );
    println!(
        "crash test: {TOTAL} messages from {CLIENTS} clients; kill -9 after {sent_before} sent and \
         {acked_before} acked; {} acked in all, every one found and run after the restart; \
         {ran_twice} ran twice; {replies_from_before_kill} replies queued before the kill were \
         delivered after it; the peer received {} deliveries",
        acked.len(),
        received.len()
    );
    drop(host);
}

/// Milliseconds since the epoch, as the store counts.
fn store_now() -> i64 {
    agent_inbox::model::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_turns_finish_and_refuses_new_messages_meanwhile() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let command = gated_agent(&gate, "DONE");
    let addr = free_addr();
    let toml = bin_config(addr, &peer.url(), &command, "", r#"["0s", "200ms"]"#)
        .replace("drain_secs = 0", "drain_secs = 30");
    let client = http_client();
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let headers = [
        ("x-shared-secret", TONY),
        ("content-type", "application/json"),
    ];
    let id = send_task_until_running(&client, &host).await;

    let pid = host.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .arg(&pid)
            .status()
            .unwrap()
            .success()
    );
    // Draining: new messages are refused with a retryable 503, the server still answers.
    let refused = eventually(
        Duration::from_secs(10),
        "new messages to be refused",
        || {
            let (client, url) = (&client, host.url("/message"));
            async move {
                match try_request(
                    client,
                    "POST",
                    &url,
                    &headers,
                    json!({"type": "TASK"}).to_string(),
                )
                .await
                {
                    Ok((503, v)) => Some(v),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert_eq!(refused["error"]["code"], "shutting_down");
    // The running agent can still reply through /send, and its turn finishes before the exit.
    std::fs::write(&gate, b"go").unwrap();
    // (A probe sent before the drain began may have been accepted and have its own agent replying.)
    eventually(Duration::from_secs(30), "the running agent's reply", || {
        let got = peer.received();
        let id = &id;
        async move {
            got.iter()
                .any(|r| r.body["in_reply_to"] == id.as_str())
                .then_some(())
        }
    })
    .await;
    let status = host.sigterm_wait();
    assert!(status.success(), "{status:?}");
    // After a restart the turn is done, not interrupted.
    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    let v = view(&client, &host, &id).await;
    assert_eq!(
        (v["turn"]["state"].as_str(), v["turn"]["attempts"].as_u64()),
        (Some("done"), Some(1)),
        "{v:#}"
    );
    drop(host);
}
