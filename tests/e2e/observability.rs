//! Seeing inside a running inbox: Prometheus metrics, JSON logs, readiness. The inbox runs as its
//! own process ([`BinHost`]), so its metrics are its own.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};

/// The value of one sample line (`name{labels} value`) in Prometheus text.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(host: &BinHost) -> String {
    let r = admin_get(host, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    r.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_with_bounded_labels() {
    let dir = tempfile::tempdir().unwrap();
    let peer = PeerServer::start().await;
    let addr = unused_addr();
    let toml = Toml::tasks(&peer.url(), &agent_command(&["--reply", "STATUS"]))
        .listen(addr)
        .server("data_dir", &quoted("data"))
        .mailbox("notes", &["tony"], &["NOTE"])
        .build();
    let host = BinHost::start(dir.path(), &toml, addr, "inbox.log").await;
    let task = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "thread_id": "thread-xyz"}),
    )
    .await;
    assert_eq!(task.status, 202);
    let note = post_message(&host, TONY, json!({"type": "NOTE"})).await;
    assert_eq!(note.status, 202);
    let refused = post_message(&host, TONY, json!({"type": "NOPE"})).await;
    assert_eq!(refused.status, 422);
    wait_turn_state(&host, &task.id(), "done").await;
    peer.wait_for(1, Duration::from_secs(20)).await;
    let text = eventually(Duration::from_secs(10), "the delivery counted", || async {
        let t = scrape(&host).await;
        sample(
            &t,
            r#"inbox_delivery_attempts_total{peer="tony",outcome="delivered"}"#,
        )
        .is_some()
        .then_some(t)
    })
    .await;
    // This process saw exactly this: two messages acked, one refused, one turn, one delivery.
    for (line, exactly) in [
        (
            r#"inbox_messages_accepted_total{route="tasks",msg_type="TASK"}"#,
            1.0,
        ),
        (
            r#"inbox_messages_accepted_total{route="notes",msg_type="NOTE"}"#,
            1.0,
        ),
        (r#"inbox_messages_refused_total{code="unknown_type"}"#, 1.0),
        ("inbox_ack_seconds_count", 2.0),
        (
            r#"inbox_turns_ended_total{route="tasks",state="done"}"#,
            1.0,
        ),
        (r#"inbox_turn_seconds_count{route="tasks"}"#, 1.0),
        (
            r#"inbox_delivery_attempts_total{peer="tony",outcome="delivered"}"#,
            1.0,
        ),
        (r#"inbox_delivery_attempt_seconds_count{peer="tony"}"#, 1.0),
        // Present from the start; counts only once the WAL grows past its rewind point.
        ("inbox_store_wal_restart_seconds_count", 0.0),
        (r#"inbox_turns_queued{route="tasks"}"#, 0.0),
        (r#"inbox_turns_running{route="tasks"}"#, 0.0),
    ] {
        let v = sample(&text, line).unwrap_or_else(|| panic!("no {line} in:\n{text}"));
        assert_eq!(v, exactly, "{line}:\n{text}");
    }
    // How many commits carried those writes depends on how they were batched: at least one, at
    // most one per write (2 messages, 1 refusal's nothing, the claim, the reply's count and its
    // insert, the turn's end, the delivery's record, the probe).
    for line in [
        "inbox_store_commit_seconds_count",
        "inbox_store_commit_batch_size_count",
    ] {
        let v = sample(&text, line).unwrap_or_else(|| panic!("no {line} in:\n{text}"));
        assert!((1.0..=40.0).contains(&v), "{line} = {v}:\n{text}");
    }
    let hash = task.headers["x-config-hash"].to_str().unwrap().to_owned();
    assert!(
        text.contains("inbox_config_info{hash=\"") && text.contains(&hash[..8]),
        "the config hash {hash}:\n{text}"
    );
    // No id is ever a label.
    for id in [task.id(), note.id(), "thread-xyz".to_owned()] {
        assert!(!text.contains(&id), "{id} in:\n{text}");
    }
    // A reload is counted (written by rename, as a deploy would; the watcher or this request
    // applies it, whichever reads it first, and the other finds it unchanged).
    write_by_rename(
        &dir.path().join("routes.toml"),
        toml.replace("[routes.notes]", "# reloaded\n[routes.notes]"),
    );
    let r = admin_post(&host, "/admin/reload", "").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    let text = scrape(&host).await;
    assert_eq!(
        sample(&text, r#"inbox_reloads_total{outcome="applied"}"#),
        Some(1.0),
        "{text}"
    );
    // The admin bearer only.
    let r = request(
        "GET",
        &host.url("/metrics"),
        &[("x-shared-secret", TONY)],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_readiness_follows_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let peer = PeerServer::start().await;
    let addr = unused_addr();
    let toml = Toml::tasks(&peer.url(), &agent_command(&["--sleep", "3"]))
        .listen(addr)
        .server("data_dir", &quoted("data"))
        .server("drain_secs", "20")
        .build();
    let mut host = BinHost::start_with_env(
        dir.path(),
        &toml,
        addr,
        "inbox.log",
        &[("INBOX_LOG_FORMAT", "json")],
    )
    .await;
    let ready = request("GET", &host.url("/readyz"), &[], "").await;
    assert_eq!(
        (ready.status, ready.json["status"].clone()),
        (200, json!("ready"))
    );
    let m = post_message(&host, TONY, json!({"type": "TASK"})).await;
    assert_eq!(m.status, 202);
    eventually(Duration::from_secs(10), "the turn to start", || async {
        let v = admin_get(&host, &format!("/messages/{}", m.id()))
            .await
            .json;
        (v["turn"]["state"] == "running").then_some(())
    })
    .await;
    // Draining (the turn still runs): not ready.
    host.signal("TERM");
    let draining = eventually(Duration::from_secs(5), "readyz to say draining", || async {
        let r = try_request("GET", &host.url("/readyz"), &[], "")
            .await
            .ok()?;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(draining.json["status"], "draining");
    host.wait_exit();
    let log = host.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let received = lines
        .iter()
        .find(|l| l["message"] == "message received")
        .unwrap_or_else(|| panic!("no 'message received' line in:\n{log}"));
    assert_eq!(received["message_id"], json!(m.id()));
    assert_eq!(received["level"], "INFO");
    assert!(
        !log.contains(TONY) && !log.contains(ADMIN),
        "a secret in the log"
    );
}

/// Inbox A (the operator's: its config names its own address, for the CLI) and inbox B, whose
/// route `tasks` answers A's TASKs with DONE, and `fails` fails (a TURN_FAILED goes back).
async fn a_and_b() -> (Host, Host) {
    let (la, lb) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (a, b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let toml_a = Toml::new()
        .server("public_url", &quoted(&format!("http://{a}")))
        .schedule(FAST_RETRIES)
        .peer("b", &format!("http://{b}/message"), "a-b-secret")
        .mailbox("answers", &["b"], &["DONE", "TURN_FAILED"])
        .build();
    let toml_b = Toml::new()
        .server("public_url", &quoted(&format!("http://{b}")))
        .command(&agent_command(&[
            "--reply",
            "DONE",
            "--payload",
            r#"{"result": 42}"#,
        ]))
        .schedule(FAST_RETRIES)
        .peer("a", &format!("http://{a}/message"), "a-b-secret")
        .agent_route("tasks", &["a"], &["TASK"], &["DONE"], &["a"])
        .agent_route("fails", &["a"], &["FAIL"], &["DONE"], &["a"])
        .route("fails", "agent", r#"{ command = ["false"] }"#)
        .agent_route("slow", &["a"], &["SLOW"], &["DONE"], &["a"])
        .route(
            "slow",
            "agent",
            &format!("{{ command = {} }}", agent_command(&["--sleep", "20"])),
        )
        .build();
    (
        start_host_on(&toml_a, la).await,
        start_host_on(&toml_b, lb).await,
    )
}

/// Runs the real CLI with `args` (and `--config` A's routes.toml); its exit code, stdout, stderr.
async fn cli(a: &Host, args: &[&str]) -> (i32, String, String) {
    cli_with_config(&a.config_path(), args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_follows_the_conversation_to_its_answer() {
    let (a, b) = a_and_b().await;
    let (code, out, err) = cli(
        &a,
        &[
            "send",
            "--to",
            "b",
            "--type",
            "TASK",
            "--wait",
            "--timeout",
            "30",
        ],
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"result": 42}),
        "{out}"
    );
    for progress in [
        "queued ",
        "sent to b (attempt 1): delivered",
        "answered: DONE",
    ] {
        assert!(err.contains(progress), "no {progress:?} in:\n{err}");
    }
    // A turn that fails on the other side answers TURN_FAILED: exit 3.
    let (code, out, err) = cli(
        &a,
        &[
            "send",
            "--to",
            "b",
            "--type",
            "FAIL",
            "--wait",
            "--timeout",
            "30",
        ],
    )
    .await;
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("answered: TURN_FAILED"), "{err}");
    // No answer in time: exit 2.
    let (code, _, err) = cli(
        &a,
        &[
            "send",
            "--to",
            "b",
            "--type",
            "SLOW",
            "--wait",
            "--timeout",
            "2",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no answer within 2 s"), "{err}");
    a.stop().await;
    b.stop().await;
}

/// A running `agent-inbox tail --json` (with `args`) on `config`, subscribed: its stdout lines
/// arrive on `lines`; it is killed on drop.
struct Tail {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Tail {
    async fn start(config: &std::path::Path, args: &[&str]) -> Tail {
        let mut child = std::process::Command::new(bin())
            .args(["tail", "--json"])
            .args(args)
            .arg("--config")
            .arg(config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        // The tail says on stderr once it is subscribed: only then is every event certain to
        // reach it.
        let (subscribed, connected) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("following the inbox's events") {
                    let _ = subscribed.send(());
                }
            }
        });
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        tokio::task::spawn_blocking(move || connected.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the tail subscribed");
        Tail { child, lines }
    }

    /// The events printed up to and including the first that `last` picks (30 s at most: a
    /// tail that never prints it fails here instead of hanging the suite).
    async fn until(self, last: impl Fn(&Value) -> bool + Send + 'static) -> Vec<Value> {
        let Tail { mut child, lines } = self;
        let seen = tokio::task::spawn_blocking(move || {
            let end = std::time::Instant::now() + Duration::from_secs(30);
            let mut seen = Vec::new();
            loop {
                let left = end.saturating_duration_since(std::time::Instant::now());
                let line = lines
                    .recv_timeout(left)
                    .unwrap_or_else(|_| panic!("the awaited event within 30 s; saw {seen:#?}"));
                let event: Value = serde_json::from_str(&line).expect("a JSON line");
                let done = last(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
        })
        .await
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_events_as_they_happen() {
    let (a, b) = a_and_b().await;
    let tail = Tail::start(&a.config_path(), &[]).await;
    let (code, _, err) = cli(&a, &["send", "--to", "b", "--type", "TASK"]).await;
    assert_eq!(code, 0, "{err}");
    let events = tail.until(|e| e["event"] == "message_accepted").await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for kind in ["outbound_queued", "delivery_attempted", "message_accepted"] {
        assert!(kinds.contains(&kind), "{kind} not in {kinds:?}");
    }
    a.stop().await;
    b.stop().await;
}

/// README: `tail --route` keeps one route's messages and turns, `--thread` one thread's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_one_route_or_one_thread() {
    let (a, b) = a_and_b().await;
    let send = |kind: &'static str, thread: &'static str| {
        let b = &b;
        async move {
            let r = post_message_with(
                b,
                "a-b-secret",
                &[],
                json!({"type": kind, "thread_id": thread}),
            )
            .await;
            assert_eq!(r.status, 202, "{}", r.text);
            // The admin reads the inbox's own thread id (a peer's ack names its alias).
            view(b, &r.id()).await["message"]["thread_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // The inbox's own id of the thread a calls "wanted".
    let wanted = send("FAIL", "wanted").await;
    let by_route = Tail::start(&b.config_path(), &["--route", "fails"]).await;
    let by_thread = Tail::start(&b.config_path(), &["--thread", &wanted]).await;
    // What must not show comes first: a TASK (route tasks) in another thread, then a FAIL in
    // the thread followed.
    send("TASK", "other").await;
    send("FAIL", "wanted").await;
    let routed = by_route
        .until(|e| e["event"] == "message_accepted" && e["route"] == "fails")
        .await;
    assert!(
        routed
            .iter()
            .all(|e| e["route"].is_null() || e["route"] == "fails"),
        "{routed:#?}"
    );
    let threaded = by_thread.until(|e| e["event"] == "message_accepted").await;
    assert_eq!(
        threaded.last().unwrap()["msg_type"],
        "FAIL",
        "{threaded:#?}"
    );
    assert!(
        threaded.iter().all(|e| e["msg_type"] != "TASK"),
        "{threaded:#?}"
    );
    a.stop().await;
    b.stop().await;
}

/// README: `--log-format json` writes one JSON object per line (`timestamp`, `level`, `target`,
/// `message` and the event's fields, such as `message_id`); no line carries a secret or a
/// payload; colour only at a terminal (this log is a file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_log_has_one_object_per_line_and_no_payload_secret_or_colour() {
    const MARKER: &str = "payload-marker-7f3c";
    let dir = tempfile::tempdir().unwrap();
    let peer = PeerServer::start().await;
    // A failed attempt first, so delivery lines are in the log too.
    peer.script([Answer::from(500).body("peer says no")]);
    let addr = unused_addr();
    let toml = Toml::tasks(&peer.url(), &agent_command(&["--reply", "STATUS"]))
        .listen(addr)
        .schedule(&["0s", "100ms"])
        .build();
    let host = BinHost::start_with(
        dir.path(),
        &toml,
        addr,
        "inbox.log",
        &[],
        &["--log-format", "json"],
    )
    .await;
    let task = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"text": MARKER}}),
    )
    .await;
    assert_eq!(task.status, 202);
    let id = task.id();
    wait_turn_state(&host, &id, "done").await;
    peer.wait_for(1, Duration::from_secs(20)).await;
    let wrong = post_message(&host, "wrong-secret-123", json!({"type": "TASK"})).await;
    assert_eq!(wrong.status, 401);
    host.stop();
    let raw = std::fs::read_to_string(dir.path().join("inbox.log")).unwrap();
    assert!(!raw.contains('\u{1b}'), "colour in a file log:\n{raw}");
    let mut about_it = 0;
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "no {field}: {line}");
        }
        if v["message_id"] == id.as_str() {
            about_it += 1;
        }
        for never in [MARKER, TONY, "wrong-secret-123"] {
            assert!(!line.contains(never), "{never} in the log: {line}");
        }
    }
    assert!(about_it > 0, "no line names the message:\n{raw}");
}

/// README (`GET /events`): `?route=` keeps the events of one route (and those that name none);
/// the kinds include `message_accepted`, `turn_started`, `turn_ended` and `config_reloaded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_route_carry_each_kind_of_a_turn_and_a_reload() {
    let peer = PeerServer::start().await;
    let toml = Toml::tasks(&peer.url(), &agent_command(&["--reply", "STATUS"]))
        .mailbox("notes", &["tony"], &["NOTE"])
        .build();
    let host = start_host(&toml).await;
    let auth = format!("Bearer {ADMIN}");
    let following = open_stream(
        "GET",
        &host.url("/events?route=tasks&timeout=4"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(following.status, 200);
    let note = post_message(&host, TONY, json!({"type": "NOTE"})).await;
    assert_eq!(note.status, 202);
    let task = send_task(&host).await;
    wait_turn_state(&host, &task, "done").await;
    host.rewrite_config(&format!(
        "{toml}\n# touched\n[routes.more]\nfrom = [\"tony\"]\ntypes = [\"MORE\"]\nmailbox = true\n"
    ));
    let reload = admin_reload(&host).await;
    assert_eq!(reload.status, 200, "{}", reload.text);
    assert_eq!(reload.json["status"], "reloaded", "{}", reload.text);
    let seen: Vec<Value> = following
        .rest()
        .await
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|l| serde_json::from_str(l).expect("an event is JSON"))
        .collect();
    let kinds: Vec<&str> = seen.iter().filter_map(|e| e["event"].as_str()).collect();
    for kind in [
        "message_accepted",
        "turn_started",
        "turn_ended",
        "config_reloaded",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {seen:#?}");
    }
    assert!(
        seen.iter()
            .all(|e| e["route"].is_null() || e["route"] == "tasks"),
        "another route's event passed ?route=tasks: {seen:#?}"
    );
    assert!(
        !seen.iter().any(|e| e["id"] == note.id().as_str()),
        "the note (route notes) was followed: {seen:#?}"
    );
    host.stop().await;
}

/// README (`send --wait`): exit 4 when no answer will come because the message is a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_exits_4_on_a_dead_letter() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    // Nothing listens at the peer's (held) address: the one attempt fails, the letter is dead.
    let gone = unused_addr();
    let toml = Toml::new()
        .server("public_url", &quoted(&format!("http://{a}")))
        .schedule(&["0s"])
        .peer("gone", &format!("http://{gone}/message"), "gone-secret")
        .mailbox("answers", &["gone"], &["DONE"])
        .build();
    let host = start_host_on(&toml, listener).await;
    let (code, _, err) = cli(
        &host,
        &[
            "send",
            "--to",
            "gone",
            "--type",
            "TASK",
            "--wait",
            "--timeout",
            "30",
        ],
    )
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no answer will come"), "{err}");
    host.stop().await;
}

/// README (metrics): plugin calls and failures are counted per route and hook; a type no route
/// names is counted as `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_calls_and_failures_are_counted_and_unnamed_types_are_other() {
    let dir = tempfile::tempdir().unwrap();
    install_plugin("hostile", dir.path(), "hostile.wasm");
    let addr = unused_addr();
    let toml = Toml::new()
        .listen(addr)
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .mailbox("guarded", &["tony"], &["GUARDED"])
        .route("guarded", "plugin", &quoted("hostile.wasm"))
        .route("guarded", "plugin_config", r#"{ mode = "trap" }"#)
        .mailbox("anything", &["tony"], &["*"])
        .build();
    let host = BinHost::start(dir.path(), &toml, addr, "inbox.log").await;
    let trapped = post_message(&host, TONY, json!({"type": "GUARDED"})).await;
    assert_eq!(trapped.code(), "plugin_failed", "{:#}", trapped.json);
    let odd = post_message(&host, TONY, json!({"type": "ODDLY_NAMED"})).await;
    assert_eq!(odd.status, 202, "{:#}", odd.json);
    let text = scrape(&host).await;
    let labels = r#"{route="guarded",hook="check-message"}"#;
    assert_eq!(
        sample(&text, &format!("inbox_plugin_call_seconds_count{labels}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("inbox_plugin_failures_total{labels}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"inbox_messages_accepted_total{route="anything",msg_type="other"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("ODDLY_NAMED"),
        "a type outside the config became a label"
    );
    host.stop();
}

/// README (logs): a log line never holds up a request: when stderr stalls and the buffer
/// (4 MiB) fills, lines are dropped, and how many is said at exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stderr_drops_lines_instead_of_holding_requests_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::notes().listen(addr).build();
    write_by_rename(&dir.path().join("routes.toml"), &toml);
    // stderr is a pipe nobody reads until the end: the log writer blocks once it is full.
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["serve", "--config"])
        .arg(dir.path().join("routes.toml"))
        .env("RUST_LOG", "trace")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    pass_port(&mut cmd, addr);
    let mut child = cmd.spawn().unwrap();
    let base = format!("http://{addr}");
    eventually(Duration::from_secs(30), "serve ready", || {
        let url = format!("{base}/readyz");
        async move {
            try_request("GET", &url, &[], "")
                .await
                .ok()
                .filter(|r| r.status == 200)
        }
    })
    .await;
    // Requests go on being answered while nothing drains the log (some 230 bytes of log each
    // at trace: 24,000 of them are past the 4 MiB buffer and the pipe's 64 KiB).
    for _ in 0..1200 {
        let mut all = Vec::new();
        for _ in 0..20 {
            let url = format!("{base}/healthz");
            all.push(tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), request("GET", &url, &[], ""))
                    .await
                    .expect("answered while the log is stuck")
                    .status
            }));
        }
        for t in all {
            assert_eq!(t.await.unwrap(), 200);
        }
    }
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text).ok();
        text
    });
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let text = reader.join().unwrap();
    assert!(
        text.contains("log lines were dropped in all"),
        "no count of dropped lines at exit ({} bytes read):\n{}",
        text.len(),
        &text[text.len().saturating_sub(2000)..]
    );
}

/// Every family README's metrics table names.
fn documented_families() -> Vec<String> {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let mut names: Vec<String> = readme
        .lines()
        .filter(|l| l.starts_with("| `inbox_"))
        .filter_map(|l| l.split('|').nth(1))
        .collect::<Vec<_>>()
        .join(" ")
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("inbox_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// README (metrics): every labelled family the config knows of (routes, peers, hooks, outcomes)
/// is there at zero before anything happens, so an alert can be written on day one; a reload
/// that drops a route or a peer drops their series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_before_any_traffic_has_every_documented_family_and_a_reload_drops_removed_series()
{
    let dir = tempfile::tempdir().unwrap();
    install_plugin("noop", dir.path(), "noop.wasm");
    let addr = unused_addr();
    let toml = Toml::tasks(
        "http://127.0.0.1:9/message",
        &agent_command(&["--reply", "STATUS"]),
    )
    .listen(addr)
    .server("data_dir", &quoted("data"))
    .route("tasks", "approve", &quoted("both"))
    .route("tasks", "plugin", &quoted("noop.wasm"))
    .peer(
        "gone",
        "http://127.0.0.1:9/message",
        "gone-secret-0123456789",
    )
    .mailbox("old", &["gone"], &["OLD_NOTE"])
    .build();
    let host = BinHost::start(dir.path(), &toml, addr, "inbox.log").await;
    let text = scrape(&host).await;
    let families = documented_families();
    assert!(families.len() >= 18, "the README's families: {families:?}");
    let missing: Vec<_> = families
        .iter()
        .filter(|f| {
            !text
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(f.as_str()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "no series for {missing:?} before any traffic:\n{text}"
    );
    for (line, zero) in [
        (r#"inbox_reloads_total{outcome="failed"}"#, 0.0),
        (r#"inbox_reloads_total{outcome="applied"}"#, 0.0),
        (
            r#"inbox_delivery_attempts_total{peer="tony",outcome="dead"}"#,
            0.0,
        ),
        (
            r#"inbox_turns_ended_total{route="tasks",state="failed"}"#,
            0.0,
        ),
        (
            r#"inbox_plugin_failures_total{route="tasks",hook="check-message"}"#,
            0.0,
        ),
        (
            r#"inbox_messages_accepted_total{route="old",msg_type="OLD_NOTE"}"#,
            0.0,
        ),
        (r#"inbox_messages_refused_total{code="unauthorized"}"#, 0.0),
        (
            r#"inbox_approvals_held_total{route="tasks",kind="outbound"}"#,
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, line), Some(zero), "{line}:\n{text}");
    }

    // Drop the route and the peer: their series go; the others stay.
    let edited = Toml::tasks(
        "http://127.0.0.1:9/message",
        &agent_command(&["--reply", "STATUS"]),
    )
    .listen(addr)
    .server("data_dir", &quoted("data"))
    .route("tasks", "approve", &quoted("both"))
    .route("tasks", "plugin", &quoted("noop.wasm"))
    .build();
    write_by_rename(&dir.path().join("routes.toml"), edited);
    let r = admin_post(&host, "/admin/reload", "").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    let text = scrape(&host).await;
    for gone in [r#"route="old""#, r#"peer="gone""#] {
        assert!(
            !text.contains(gone),
            "{gone} still labels a series:\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            r#"inbox_delivery_attempts_total{peer="tony",outcome="dead"}"#
        ),
        Some(0.0),
        "{text}"
    );
    host.stop();
}

/// README (console): a running turn's output reaches the admin while the agent runs, as
/// `turn_output` events: at most about two a second per stream, each under PostgreSQL's
/// 8,000-byte NOTIFY limit, saying how much a flood left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turns_output_reaches_the_admin_live_and_bounded() {
    let peer = PeerServer::start().await;
    let toml = Toml::tasks(
        &peer.url(),
        &agent_command(&["--print-bytes", "300000", "--ticks", "10"]),
    )
    .build();
    let host = start_host(&toml).await;
    let auth = format!("Bearer {ADMIN}");
    let following = open_stream(
        "GET",
        &host.url("/events?timeout=5"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(following.status, 200);
    let started = std::time::Instant::now();
    let task = send_task(&host).await;
    let seen: Vec<(String, Value)> = following
        .rest()
        .await
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|l| (l.to_owned(), serde_json::from_str::<Value>(l).unwrap()))
        .filter(|(_, e)| e["event"] == "turn_output" && e["message_id"] == task.as_str())
        .collect();
    let secs = started.elapsed().as_secs_f64();
    let out: String = seen
        .iter()
        .filter(|(_, e)| e["stream"] == "stdout")
        .map(|(_, e)| e["text"].as_str().unwrap().to_owned())
        .collect();
    for i in [0, 5, 9] {
        assert!(
            out.contains(&format!("tick {i}")),
            "tick {i} missing: {out:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|(_, e)| e["stream"] == "stderr" && e["text"].as_str().unwrap().contains("tock"))
    );
    assert!(
        seen.iter()
            .any(|(_, e)| e["skipped"].as_u64().unwrap_or(0) > 250_000),
        "the flood is left out and said so"
    );
    for (line, _) in &seen {
        assert!(line.len() < 8000, "an event of {} bytes", line.len());
    }
    // Two streams, one event each per half second at most (and one last flush each).
    let most = 2.0 * (secs / 0.5 + 2.0);
    assert!(
        (seen.len() as f64) <= most,
        "{} events in {secs:.1} s",
        seen.len()
    );
    wait_turn_state(&host, &task, "done").await;
    host.stop().await;
}
