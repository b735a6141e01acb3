//! Never lose an acked message: idempotency, retries, dead letters, restarts and a kill -9 mid-load.
//!
//! The restart tests run the real binary ([`BinHost`]) so a stop is a real process exit: agents
//! outlive it, and kill -9 leaves the database as a crash would.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_inbox_tests::*;
use serde_json::{Value, json};

/// Route `tasks` (tony's TASKs), whose agent runs `command` and may reply DONE, retried along
/// `schedule`.
fn config(peer_url: &str, command: &str, schedule: &[&str]) -> String {
    Toml::tasks(peer_url, command)
        .route("tasks", "reply_types", &toml_list(&["DONE"]))
        .schedule(schedule)
        .build()
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
    let host = start_host(&config(&peer.url(), &command, FAST_RETRIES)).await;
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

    for id in [first.id(), a.id()] {
        wait_turn_state(&host, &id, "done").await;
    }
    let listed = admin_get(&host, "/messages").await.json;
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
    peer.script([500, 500, 500]);
    let schedule = ["0s", "100ms", "100ms", "100ms", "100ms"];
    let host = start_host(&config(&peer.url(), &reply_sh(&[]), &schedule)).await;
    let id = send_task(&host).await;
    let (reply, d) = delivery_in(&host, &id, "delivered").await;
    assert_eq!(d["attempts"], 4, "{d:#}");
    assert_eq!(d["last_status"], 200);
    // Every attempt carried the same id and Idempotency-Key, so the peer could dedup.
    let seen = peer.attempts();
    let statuses: Vec<u16> = seen.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [500, 500, 500, 200], "{seen:#?}");
    for a in &seen {
        assert_eq!(a.body["id"], reply["id"], "{a:#?}");
        assert_eq!(a.headers["idempotency-key"], reply["id"].as_str().unwrap());
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_is_a_dead_letter_at_once() {
    let peer = PeerServer::start().await;
    peer.script([410]);
    let schedule = ["0s", "100ms", "100ms"];
    let host = start_host(&config(&peer.url(), &reply_sh(&[]), &schedule)).await;
    let id = send_task(&host).await;
    let (_, d) = delivery_in(&host, &id, "dead").await;
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
    peer.script([503, 503]);
    let host = start_host(&config(&peer.url(), &reply_sh(&[]), &["0s", "100ms"])).await;
    let id = send_task(&host).await;
    let (reply, d) = delivery_in(&host, &id, "dead").await;
    assert_eq!(d["attempts"], 2);
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{d:#}"
    );
    let reply_id = reply["id"].as_str().unwrap().to_owned();

    let dead = admin_get(&host, "/admin/outbox?dead=1").await.json;
    let listed: Vec<&str> = dead["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reply"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [reply_id.as_str()]);
    // `dead=true` is `dead=1`; a limit must be positive, and caps the list.
    let same = admin_get(&host, "/admin/outbox?dead=true&limit=1").await;
    assert_eq!(same.json, dead, "{:#}", same.json);
    let zero = admin_get(&host, "/admin/outbox?limit=0").await;
    assert_eq!(
        (zero.status, zero.code()),
        (400, "bad_field"),
        "{:#}",
        zero.json
    );

    let retry = format!("/admin/outbox/{reply_id}/retry");
    let r = admin_post(&host, &retry, "").await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["deliveries"], 1);
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["id"], reply_id.as_str());
    delivery_in(&host, &id, "delivered").await;
    // Nothing is dead any more, so a second retry is a conflict.
    let again = admin_post(&host, &retry, "").await;
    assert_eq!((again.status, again.code()), (409, "conflict"));
    host.stop().await;
}

// ---- the real binary: restarts and crashes ----

/// The config of a [`BinHost`] on `addr`: route `tasks` (tony's TASKs) replying DONE or BREAKDOWN,
/// with no drain on stop, plus `agent` settings.
fn bin_config(
    addr: SocketAddr,
    peer_url: &str,
    command: &str,
    agent: &[(&str, &str)],
    schedule: &[&str],
) -> String {
    let mut toml = Toml::tasks(peer_url, command)
        .listen(addr)
        .server("drain_secs", "0")
        .agent("max_queued", "100000")
        .schedule(schedule)
        .route("tasks", "reply_types", &toml_list(&["DONE", "BREAKDOWN"]));
    for (k, v) in agent {
        toml = toml.agent(k, v);
    }
    toml.build()
}

/// An agent that waits for `gate` to exist, then replies with `reply`.
fn gated_agent(gate: &Path, reply: &str) -> String {
    agent_command(&["--wait-for", path_str(gate), "--reply", reply])
}

/// Sends a TASK as tony and waits until its turn runs; returns the message id.
async fn send_task_until_running(host: &BinHost) -> String {
    let id = send_task(host).await;
    wait_running(host, &id).await;
    id
}

/// The pids of the agents that wrote to `dir` (`--status-dir`), each with its status lines.
fn agent_statuses(dir: &Path) -> Vec<(u32, Vec<String>)> {
    let mut all: Vec<(u32, Vec<String>)> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let pid = e.file_name().to_str()?.parse().ok()?;
                    let text = std::fs::read_to_string(e.path()).ok()?;
                    Some((pid, text.lines().map(str::to_owned).collect()))
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all
}

/// An agent that waits for `dir/gate`, then replies `reply`, noting its pid and each reply's
/// status under `dir/statuses`; returns the gate, the statuses folder and the command.
fn status_agent(dir: &Path, reply: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let (gate, statuses) = (dir.join("gate"), dir.join("statuses"));
    let command = agent_command(&[
        "--wait-for",
        path_str(&gate),
        "--status-dir",
        path_str(&statuses),
        "--reply",
        reply,
    ]);
    (gate, statuses, command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_ends_the_agents_it_cannot_wait_for_and_the_turn_fails_once() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (gate, statuses, command) = status_agent(dir.path(), "BREAKDOWN");
    let addr = unused_addr();
    let toml = bin_config(
        addr,
        &peer.url(),
        &command,
        &[("on_interrupt", "\"fail\""), ("kill_grace_secs", "1")],
        &["0s", "200ms", "200ms", "200ms"],
    );
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let id = send_task_until_running(&host).await;
    let agents = eventually(Duration::from_secs(20), "the agent to start", || async {
        let a = agent_statuses(&statuses);
        (!a.is_empty()).then_some(a)
    })
    .await;
    let pid = agents[0].0;

    // drain_secs = 0: the stop cannot wait for the agent, so it ends it, and settles the turn.
    let status = host.sigterm();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
    assert!(
        process_is_gone(pid),
        "no agent outlives its inbox; log:\n{}",
        host.log()
    );
    assert!(
        host.log().contains("ending the agents still running"),
        "{}",
        host.log()
    );
    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    // on_interrupt = "fail": the turn is interrupted, and the peer hears it once.
    let v = wait_turn_state(&host, &id, "interrupted").await;
    assert_eq!(v["turn"]["attempts"], 1, "{v:#}");
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED");
    assert_eq!(got[0].body["payload"]["state"], "interrupted");
    // Opening the gate now wakes no agent: none is left to answer.
    std::fs::write(&gate, b"go").unwrap();
    host.stop();
    assert_eq!(
        agent_statuses(&statuses),
        [(pid, vec!["started".to_owned()])],
        "one agent ran, and never replied"
    );
    assert_eq!(peer.received().len(), 1, "{:#?}", peer.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_the_agent_still_alive_cannot_answer_a_turn_that_runs_again() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (gate, statuses, command) = status_agent(dir.path(), "DONE");
    let addr = unused_addr();
    let toml = bin_config(
        addr,
        &peer.url(),
        &command,
        &[],
        &["0s", "200ms", "200ms", "200ms"],
    );
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let id = send_task_until_running(&host).await;
    eventually(
        Duration::from_secs(20),
        "the first agent to start",
        || async { (agent_statuses(&statuses).len() == 1).then_some(()) },
    )
    .await;
    host.kill9();
    let first = agent_statuses(&statuses)[0].0;
    assert!(
        !process_is_gone(first),
        "the first agent outlives a kill -9"
    );
    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    eventually(Duration::from_secs(30), "the re-run to start", || async {
        let v = view(&host, &id).await;
        let running = v["turn"]["attempts"] == 2 && v["turn"]["state"] == "running";
        (running && agent_statuses(&statuses).len() == 2).then_some(())
    })
    .await;
    // Both agents answer now: the first with its old token, the second with the new one.
    std::fs::write(&gate, b"go").unwrap();
    let v = wait_turn_state(&host, &id, "done").await;
    assert_eq!(v["turn"]["attempts"], 2, "{v:#}");
    let finished = eventually(Duration::from_secs(30), "both agents to answer", || async {
        let all = agent_statuses(&statuses);
        all.iter().all(|(_, lines)| lines.len() == 2).then_some(all)
    })
    .await;
    assert_eq!(finished.len(), 2, "{finished:?}");
    for (pid, lines) in &finished {
        let want = if *pid == first { "409" } else { "202" };
        assert_eq!(lines[1], want, "agent {pid} (first: {first}): {finished:?}");
    }
    peer.wait_for(1, Duration::from_secs(30)).await;
    host.stop();
    let dones: Vec<_> = peer
        .received()
        .into_iter()
        .filter(|r| r.body["in_reply_to"] == id.as_str())
        .collect();
    assert_eq!(dones.len(), 1, "the peer gets one answer: {dones:#?}");
    assert_eq!(dones[0].body["type"], "DONE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_interrupted_by_kill_9_runs_again_once() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let command = gated_agent(&gate, "DONE");
    let addr = unused_addr();
    let toml = bin_config(
        addr,
        &peer.url(),
        &command,
        &[],
        &["0s", "200ms", "200ms", "200ms"],
    );
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let id = send_task_until_running(&host).await;
    host.kill9();
    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    eventually(Duration::from_secs(30), "the re-run to start", || async {
        let v = view(&host, &id).await;
        (v["turn"]["attempts"] == 2 && v["turn"]["state"] == "running").then_some(())
    })
    .await;
    std::fs::write(&gate, b"go").unwrap();
    let v = wait_turn_state(&host, &id, "done").await;
    assert_eq!(v["turn"]["attempts"], 2, "run twice, not more: {v:#}");
    // Its one DONE reply reaches the peer (the first run was killed before it could reply).
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_acked_message_and_no_reply() {
    const TOTAL: usize = 2000;
    const KILL_AFTER: usize = 1000;
    const CLIENTS: usize = 32;
    let peer = PeerServer::start().await;
    // The peer is down (503) until after the restart, so every reply is undelivered at the kill.
    peer.otherwise(503);
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let mut schedule = vec!["0s"];
    schedule.extend(["2s"; 100]);
    let toml = bin_config(
        addr,
        &peer.url(),
        &reply_sh(&["DONE"]),
        &[("max_concurrent", "8")],
        &schedule,
    );
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let load = |url: String| {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (acked, next, url) = (acked.clone(), next.clone(), url.clone());
            clients.push(tokio::spawn(async move {
                let mut errors = 0;
                while next.fetch_add(1, Ordering::SeqCst) < TOTAL {
                    let body = json!({"type": "TASK", "payload": {"n": 1}}).to_string();
                    let headers = [
                        ("x-shared-secret", TONY),
                        ("content-type", "application/json"),
                    ];
                    match try_request("POST", &url, &headers, body).await {
                        Ok(r) if r.status == 202 => acked.lock().unwrap().push(r.id()),
                        Ok(r) => panic!("unexpected answer {}: {}", r.status, r.json),
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
    peer.otherwise(200);
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= TOTAL - CLIENTS * 4,
        "most messages acked: {}",
        acked.len()
    );

    // Every acked message is there and gets its turn; every reply reaches the peer.
    let mut pending: Vec<String> = acked.clone();
    let mut ran_twice = 0;
    let mut interrupted_after_reply = 0;
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
            // A 404 here is an acked message lost in the crash.
            let r = admin_get(&host, &format!("/messages/{id}")).await;
            assert_eq!(
                r.status, 200,
                "acked message {id} is missing after the crash: {:#}",
                r.json
            );
            let v = r.json;
            let delivered = v["replies"].as_array().is_some_and(|r| {
                !r.is_empty() && r.iter().all(|r| r["deliveries"][0]["state"] == "delivered")
            });
            // A turn cut short by the kill after its reply was committed is not run again: it
            // ends interrupted (and the peer also hears TURN_FAILED), answered once.
            let settled = v["turn"]["state"] == "done"
                || (v["turn"]["state"] == "interrupted"
                    && v["replies"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["type"] == "DONE")));
            if settled && delivered {
                if v["turn"]["state"] == "interrupted" {
                    interrupted_after_reply += 1;
                }
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
         {ran_twice} ran twice; {interrupted_after_reply} had replied when the kill cut them short \
         and were not run again; {replies_from_before_kill} replies queued before the kill were \
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
    graceful_stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_running_turns_finish_and_refuses_new_messages_meanwhile() {
    graceful_stop("INT").await;
}

/// `signal` drains: new messages get a retryable 503 while the running turn finishes, then the
/// process exits 0 and the turn is done (not interrupted) after a restart.
async fn graceful_stop(signal: &str) {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let command = gated_agent(&gate, "DONE");
    let addr = unused_addr();
    let toml = bin_config(addr, &peer.url(), &command, &[], &["0s", "200ms"])
        .replace("drain_secs = 0", "drain_secs = 30");
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let id = send_task_until_running(&host).await;

    host.signal(signal);
    // Draining: new messages are refused with a retryable 503, the server still answers.
    let refused = eventually(
        Duration::from_secs(10),
        "new messages to be refused",
        || async {
            let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
            (r.status == 503).then_some(r)
        },
    )
    .await;
    assert_eq!(refused.code(), "shutting_down", "{:#}", refused.json);
    let retry_after = refused
        .headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s > 0),
        "Retry-After on shutting_down: {retry_after:?}"
    );
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
    let status = host.wait_exit();
    assert!(status.success(), "{status:?}");
    // After a restart the turn is done, not interrupted.
    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    let v = view(&host, &id).await;
    assert_eq!(
        (v["turn"]["state"].as_str(), v["turn"]["attempts"].as_u64()),
        (Some("done"), Some(1)),
        "{v:#}"
    );
    drop(host);
}

// ---- the durability settings ----

/// fsync and fdatasync calls `host` makes while `work` runs, counted by strace attached to every
/// thread of the process. SQLite keeps `synchronous` per connection, so another connection cannot
/// read it back: what the setting does, an fsync per commit, is what we count.
async fn syncs_during<F: std::future::Future<Output = ()>>(host: &BinHost, work: F) -> usize {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut strace = tokio::process::Command::new("strace")
        .args(["-f", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(out.path())
        .args(["-p", &host.pid()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("this test needs strace (apt-get install strace) to count the host's fsyncs");
    // strace says on stderr when it has attached to each thread; wait for the first.
    let mut err = tokio::io::BufReader::new(strace.stderr.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncBufReadExt;
        loop {
            line.clear();
            let n = err.read_line(&mut line).await.unwrap();
            assert!(n > 0, "strace exited before attaching (is ptrace allowed?)");
            if line.contains("attached") {
                return;
            }
        }
    })
    .await
    .expect("strace did not attach within 30 s");
    // Let it attach to the rest of the threads (it lists them one line each, all at once).
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = err.lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    work.await;
    // SIGINT detaches strace cleanly and flushes its output.
    let ok = std::process::Command::new("kill")
        .args(["-INT", &strace.id().unwrap().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    tokio::time::timeout(Duration::from_secs(30), strace.wait())
        .await
        .expect("strace did not detach")
        .unwrap();
    let text = std::fs::read_to_string(out.path()).unwrap();
    text.lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .count()
}

/// Posts `n` NOTEs one after the other, each acked before the next.
async fn acks_in_turn(host: &BinHost, n: usize) {
    for i in 0..n {
        let r = post_message(host, TONY, json!({"type": "NOTE", "payload": {"i": i}})).await;
        assert_eq!(r.status, 202, "{:#}", r.json);
    }
}

async fn mailbox_host(dir: &Path, synchronous: Option<&str>) -> BinHost {
    let addr = unused_addr();
    let mut toml = Toml::new()
        .listen(addr)
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .mailbox("notes", &["tony"], &["NOTE"]);
    if let Some(mode) = synchronous {
        toml = toml.server("synchronous", &quoted(mode));
    }
    BinHost::start(dir, &toml.build(), addr, "serve.log").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_every_ack_is_fsynced_and_concurrent_acks_share_a_sync() {
    const N: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let host = mailbox_host(dir.path(), None).await;
    acks_in_turn(&host, 1).await;
    let syncs = syncs_during(&host, acks_in_turn(&host, N)).await;
    assert!(
        syncs >= N,
        "{syncs} fsyncs for {N} acks one after the other: synchronous = \"full\" is not in force"
    );

    // Group commit: many acks at once share commits, so they share fsyncs.
    const CONCURRENT: usize = 64;
    let syncs = syncs_during(&host, async {
        let mut all = Vec::new();
        for i in 0..CONCURRENT {
            let url = host.url("/message");
            all.push(tokio::spawn(async move {
                let body = json!({"type": "NOTE", "payload": {"i": i}}).to_string();
                let headers = [
                    ("x-shared-secret", TONY),
                    ("content-type", "application/json"),
                ];
                request("POST", &url, &headers, body).await.status
            }));
        }
        for t in all {
            assert_eq!(t.await.unwrap(), 202);
        }
    })
    .await;
    println!("{syncs} fsyncs for {CONCURRENT} concurrent acks");
    assert!(
        syncs < CONCURRENT,
        "{syncs} fsyncs for {CONCURRENT} concurrent acks: no commit was shared"
    );
    host.stop();

    // The count can tell: with "normal" a commit does not fsync (only a checkpoint would).
    let dir = tempfile::tempdir().unwrap();
    let host = mailbox_host(dir.path(), Some("normal")).await;
    acks_in_turn(&host, 1).await;
    let syncs = syncs_during(&host, acks_in_turn(&host, N)).await;
    assert!(
        syncs < N,
        "{syncs} fsyncs for {N} acks with synchronous = \"normal\""
    );
    host.stop();

    // "off" (for benchmarks): no commit waits for the disk.
    let dir = tempfile::tempdir().unwrap();
    let host = mailbox_host(dir.path(), Some("off")).await;
    acks_in_turn(&host, 1).await;
    let syncs = syncs_during(&host, acks_in_turn(&host, N)).await;
    assert!(
        syncs < N,
        "{syncs} fsyncs for {N} acks with synchronous = \"off\""
    );
    host.stop();
}

// ---- idempotency ----

/// tony and mel may leave NOTEs in a mailbox; `server` settings on top.
fn notes_config(server: &[(&str, &str)]) -> String {
    let mut toml = Toml::new()
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .peer("mel", "http://127.0.0.1:9/message", MEL)
        .mailbox("notes", &["tony", "mel"], &["NOTE"]);
    for (k, v) in server {
        toml = toml.server(k, v);
    }
    toml.build()
}

async fn note_with_key(
    host: &Host,
    secret: &str,
    key: Option<&str>,
    body_id: Option<&str>,
) -> Resp {
    let mut body = json!({"type": "NOTE"});
    if let Some(id) = body_id {
        body["id"] = json!(id);
    }
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    post_message_with(host, secret, &headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_is_per_sender_and_the_header_wins_over_the_body_id() {
    let host = start_host(&notes_config(&[])).await;
    // The same key from two peers is two messages.
    let tony = note_with_key(&host, TONY, Some("k-1"), None).await;
    let mel = note_with_key(&host, MEL, Some("k-1"), None).await;
    assert_eq!(
        (tony.status, mel.status),
        (202, 202),
        "{:#} {:#}",
        tony.json,
        mel.json
    );
    assert_ne!(tony.id(), mel.id());
    let again = note_with_key(&host, MEL, Some("k-1"), None).await;
    assert_eq!(again.status, 200, "{:#}", again.json);
    assert_eq!(again.json, json!({"status": "duplicate", "id": mel.id()}));

    // With both, the header is the key and the body's id is not.
    let first = note_with_key(&host, TONY, Some("header-key"), Some("body-id")).await;
    assert_eq!(first.status, 202, "{:#}", first.json);
    let same_header = note_with_key(&host, TONY, Some("header-key"), Some("other-body-id")).await;
    assert_eq!(same_header.status, 200, "{:#}", same_header.json);
    assert_eq!(same_header.json["id"], first.id().as_str());
    let same_body = note_with_key(&host, TONY, None, Some("body-id")).await;
    assert_eq!(
        same_body.status, 202,
        "the body id was not the key: {:#}",
        same_body.json
    );
    assert_ne!(same_body.id(), first.id());

    let listed = admin_get(&host, "/messages").await.json;
    assert_eq!(
        listed["messages"].as_array().unwrap().len(),
        4,
        "{listed:#}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_key_expires_after_dedup_window_secs() {
    // Three seconds: two requests on loopback always fit, so the repeat is checked every time.
    let host = start_host(&notes_config(&[("dedup_window_secs", "3")])).await;
    let started = Instant::now();
    let first = note_with_key(&host, TONY, Some("k"), None).await;
    assert_eq!(first.status, 202);
    let again = note_with_key(&host, TONY, Some("k"), None).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "two requests took the whole window: {:?}",
        started.elapsed()
    );
    assert_eq!(
        again.status, 200,
        "a repeat within the window: {:#}",
        again.json
    );
    // Once the window has passed, the same key is a new message.
    let later = eventually(Duration::from_secs(20), "the key to expire", || async {
        let r = note_with_key(&host, TONY, Some("k"), None).await;
        (r.status == 202).then_some(r)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the key expired before dedup_window_secs = 3: after {:?}",
        started.elapsed()
    );
    assert_ne!(later.id(), first.id());
    host.stop().await;
}

// ---- retention ----

const DAY_MS: i64 = 24 * 3600 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_days_drives_the_prune_and_old_dedup_keys_go() {
    let peer = PeerServer::start().await;
    // mel is down: a reply to it stays undelivered (retrying), so its message is not finished.
    // retention_days = 10: records of 11 days go, records of 9 days stay (the default, 14, would
    // keep both).
    let toml = {
        Toml::tasks(&peer.url(), r#"["true"]"#)
            .server("retention_days", "10")
            .server("dedup_window_secs", "3600")
            .peer("mel", "http://127.0.0.1:9/message", MEL)
            .mailbox("notes", &["tony"], &["NOTE"])
            .agent_route("pending", &["tony"], &["PENDING"], &["STATUS"], &["mel"])
            .route(
                "pending",
                "agent",
                &format!("{{ command = {} }}", reply_sh(&["STATUS"])),
            )
            .schedule(&["0s", "1h"])
            .build()
    };
    let host = start_host(&toml).await;
    let old_note = note_with_key(&host, TONY, Some("old-key"), None).await.id();
    let young_note = note_with_key(&host, TONY, Some("young-key"), None)
        .await
        .id();
    let old_task = send_task(&host).await;
    wait_turn_state(&host, &old_task, "done").await;
    let old_pending = send_type(&host, "PENDING").await;
    wait_turn_state(&host, &old_pending, "done").await;
    delivery_when(&host, &old_pending, "a failed attempt to mel", |d| {
        d["state"] == "retrying"
    })
    .await;
    // Stop, age the records as eleven days would, and start again on the same data.
    let dir = host.stop_keeping_dir().await;
    let db = database(dir.path());
    let now = agent_inbox::model::now_ms();
    let old = now - 11 * DAY_MS;
    for id in [&old_note, &old_task, &old_pending] {
        sqlite(
            &db,
            &format!(
                "UPDATE messages SET received_at = {old} WHERE id = {}",
                sql_id(id)
            ),
        );
    }
    // Younger than retention_days: kept.
    let young = now - 9 * DAY_MS;
    sqlite(
        &db,
        &format!(
            "UPDATE messages SET received_at = {young} WHERE id = {}",
            sql_id(&young_note)
        ),
    );
    sqlite(
        &db,
        &format!(
            "UPDATE dedup SET created_at = {} WHERE key = 'old-key'",
            now - 2 * 3600 * 1000
        ),
    );
    let host = start_host_in(&toml, dir).await;
    // The prune runs at start: the finished old records go.
    eventually(Duration::from_secs(30), "the prune", || async {
        let r = admin_get(&host, &format!("/messages/{old_note}")).await;
        (r.status == 404).then_some(())
    })
    .await;
    // In the same prune: the old task whose turn is done.
    let r = admin_get(&host, &format!("/messages/{old_task}")).await;
    assert_eq!(r.status, 404, "finished and old: {:#}", r.json);
    // An old message with a delivery still retrying is not finished; a young one is not old.
    assert_eq!(
        view(&host, &old_pending).await["message"]["id"],
        old_pending.as_str()
    );
    assert_eq!(
        view(&host, &young_note).await["message"]["id"],
        young_note.as_str()
    );
    let db = database(host.dir.path());
    let keys = sqlite(&db, "SELECT key FROM dedup ORDER BY key");
    assert_eq!(
        keys,
        [json!(["young-key"])],
        "only the key within dedup_window_secs stays"
    );
    host.stop().await;
}

// ---- recovery ----

/// Waits until message `id`'s turn is `interrupted` (a final state [`wait_turn_end`] does not
/// wait for), and returns the view.
async fn wait_interrupted(host: &BinHost, id: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        "the turn to be interrupted",
        || async {
            let v = view(host, id).await;
            (v["turn"]["state"] == "interrupted").then_some(v)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_interrupted_twice_is_not_run_a_third_time() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let addr = unused_addr();
    let toml = bin_config(
        addr,
        &peer.url(),
        &gated_agent(&gate, "DONE"),
        &[],
        FAST_RETRIES,
    );
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let id = send_task_until_running(&host).await;
    host.kill9();
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    eventually(Duration::from_secs(30), "the re-run to start", || async {
        let v = view(&host, &id).await;
        (v["turn"]["attempts"] == 2 && v["turn"]["state"] == "running").then_some(())
    })
    .await;
    host.kill9();
    let host = BinHost::start(dir.path(), &toml, addr, "host-3.log").await;
    // Interrupted again after its one re-run: it fails as interrupted, and tony hears of it.
    let v = wait_interrupted(&host, &id).await;
    assert_eq!(v["turn"]["attempts"], 2, "{v:#}");
    let notice = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(notice[0].body["type"], "TURN_FAILED", "{notice:#?}");
    assert_eq!(notice[0].body["in_reply_to"], id.as_str());
    assert_eq!(notice[0].body["payload"]["state"], "interrupted");
    // The notice was queued with the verdict, so once it is delivered the verdict is final.
    let v = view(&host, &id).await;
    assert_eq!(
        (v["turn"]["state"].as_str(), v["turn"]["attempts"].as_u64()),
        (Some("interrupted"), Some(2)),
        "{v:#}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_turns_come_back_oldest_first_after_a_crash() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let addr = unused_addr();
    let toml = bin_config(
        addr,
        &peer.url(),
        &gated_agent(&gate, "DONE"),
        &[("max_concurrent", "1")],
        FAST_RETRIES,
    );
    let mut host = BinHost::start(dir.path(), &toml, addr, "host-1.log").await;
    let running = send_task_until_running(&host).await;
    let mut queued = Vec::new();
    for _ in 0..4 {
        queued.push(send_task(&host).await);
    }
    for id in &queued {
        assert_eq!(view(&host, id).await["turn"]["state"], "queued");
    }
    host.kill9();
    let host = BinHost::start(dir.path(), &toml, addr, "host-2.log").await;
    std::fs::write(&gate, b"go").unwrap();
    let mut started = Vec::new();
    for id in &queued {
        let v = wait_turn_state(&host, id, "done").await;
        started.push(v["turn"]["started_at"].as_i64().unwrap());
    }
    let rerun = wait_turn_state(&host, &running, "done").await;
    assert_eq!(rerun["turn"]["attempts"], 2, "{rerun:#}");
    // One agent at a time: the order they started in is the order they were queued in.
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "queued turns did not start oldest first");
    assert!(
        started.windows(2).all(|w| w[0] < w[1]),
        "one at a time: {started:?}"
    );
    host.stop();
}

/// README (retention): finished records older than `retention_days` are pruned in the
/// background, at start and then hourly; recent ones and unfinished work stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_retention_are_pruned_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let host = mailbox_host(dir.path(), None).await;
    let old = post_message(&host, TONY, json!({"type": "NOTE"}))
        .await
        .id();
    let recent = post_message(&host, TONY, json!({"type": "NOTE"}))
        .await
        .id();
    let addr = host.addr;
    host.stop();
    // The first one is made 15 days old (retention_days defaults to 14).
    let day = 86_400_000i64;
    sqlite(
        &database(dir.path()),
        &format!(
            "UPDATE messages SET received_at = received_at - {} WHERE id = (SELECT id FROM messages ORDER BY received_at LIMIT 1)",
            15 * day
        ),
    );
    let toml = std::fs::read_to_string(dir.path().join("routes.toml")).unwrap();
    let host = BinHost::start(dir.path(), &toml, addr, "second.log").await;
    eventually(Duration::from_secs(20), "the old record pruned", || async {
        let r = admin_get(&host, &format!("/messages/{old}")).await;
        (r.status == 404).then_some(())
    })
    .await;
    assert_eq!(
        admin_get(&host, &format!("/messages/{recent}"))
            .await
            .status,
        200
    );
    eventually(Duration::from_secs(10), "the prune logged", || async {
        host.log().contains("pruned finished records").then_some(())
    })
    .await;
    host.stop();
}
