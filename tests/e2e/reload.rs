//! Hot reload of routes.toml: new rules take effect without a restart; a broken file changes nothing.
//!
//! Every wait polls with a generous limit (20 s); nothing asserts a wall-clock bound.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

/// tony may send `types` (a TOML array) to the mailbox `inbox`.
fn config(types: &str) -> String {
    config_toml(types).build()
}

fn config_toml(types: &str) -> Toml {
    Toml::new()
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .route("inbox", "from", r#"["tony"]"#)
        .route("inbox", "types", types)
        .route("inbox", "mailbox", "true")
}

/// Waits for the host's first look at its files, made once its watch is in place, and returns how
/// many checks it has made. An edit before that may be seen half-written by that first look (an
/// empty routes.toml is a valid config) and counted as one more reload.
async fn watching(host: &impl Endpoint) -> u64 {
    eventually(Duration::from_secs(20), "the watch to start", || async {
        let n = status(host).await["checks"].as_u64().unwrap_or(0);
        (n >= 1).then_some(n)
    })
    .await
}

/// Waits until `/status` counts `n` successful reloads, and returns it.
async fn reloads_ok(host: &Host, n: u64) -> serde_json::Value {
    eventually(Duration::from_secs(10), &format!("reload {n}"), || async {
        let st = status(host).await;
        (st["reloads_ok"] == n).then_some(st)
    })
    .await
}

/// Polls until a message of `msg_type` gets `want` (202 or 422), for up to 20 s.
async fn until_type_answers(host: &impl Endpoint, msg_type: &str, want: u16) -> Resp {
    eventually(
        Duration::from_secs(20),
        &format!("{msg_type} to answer {want}"),
        || async {
            let r = post_message(host, TONY, json!({"type": msg_type})).await;
            (r.status == want).then_some(r)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_type_is_accepted_without_a_restart() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let before = post_message(&host, TONY, json!({"type": "TASK"})).await;
    assert_eq!((before.status, before.code()), (422, "unknown_type"));
    let old_hash = before.headers["x-config-hash"].to_str().unwrap().to_owned();
    watching(&host).await;
    host.rewrite_config(&config(r#"["NOTE", "TASK"]"#));
    let after = until_type_answers(&host, "TASK", 202).await;
    let new_hash = after.headers["x-config-hash"].to_str().unwrap().to_owned();
    assert_ne!(new_hash, old_hash, "the answer names the new config");
    let st = status(&host).await;
    assert_eq!(st["config_hash"], new_hash.as_str());
    assert_eq!(st["reloads_ok"], 1);
    assert_eq!(st["last_reload_error"], serde_json::Value::Null);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_old_config_and_says_why() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let path = host.dir.path().join("routes.toml");
    let hash = status(&host).await["config_hash"].clone();

    // TOML syntax error.
    write_by_rename(&path, "[server\nthis is not toml");
    let st = eventually(Duration::from_secs(20), "the failed reload", || async {
        let st = status(&host).await;
        (st["reloads_failed"] == 1).then_some(st)
    })
    .await;
    assert!(
        st["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("routes.toml"),
        "{st:#}"
    );
    assert_eq!(st["config_hash"], hash);
    assert_eq!(
        post_message(&host, TONY, json!({"type": "NOTE"}))
            .await
            .status,
        202
    );

    // Valid TOML, invalid config: every problem is reported, the old rules stay.
    write_by_rename(
        &path,
        config(r#"["NOTE"]"#).replace(r#"from = ["tony"]"#, r#"from = ["ghost"]"#),
    );
    let st = eventually(
        Duration::from_secs(20),
        "the second failed reload",
        || async {
            let st = status(&host).await;
            (st["reloads_failed"] == 2).then_some(st)
        },
    )
    .await;
    assert!(
        st["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("unknown peer \"ghost\""),
        "{st:#}"
    );
    let r = post_message(&host, TONY, json!({"type": "NOTE"})).await;
    assert_eq!(r.status, 202);
    assert_eq!(
        r.headers["x-config-hash"].to_str().unwrap(),
        hash.as_str().unwrap()
    );

    // Fixing the file recovers and clears the error.
    write_by_rename(&path, config(r#"["NOTE", "TASK"]"#));
    until_type_answers(&host, "TASK", 202).await;
    let st = status(&host).await;
    assert_eq!(st["last_reload_error"], serde_json::Value::Null);
    assert_eq!(st["reloads_ok"], 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_by_rename_is_picked_up() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let path = host.dir.path().join("routes.toml");
    write_by_rename(&path, config(r#"["NOTE", "TASK"]"#));
    until_type_answers(&host, "TASK", 202).await;
    // And again: the watch survived the first rename.
    write_by_rename(&path, config(r#"["NOTE", "TASK", "PING"]"#));
    until_type_answers(&host, "PING", 202).await;
    host.stop().await;
}

/// Reading routes.toml is itself a watcher event; before the fix each reload's reads set off the
/// next one, ten times a second forever. Other files in the directory (the database lives in
/// `data/` beside it) must not set one off either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_host_reads_its_config_only_when_it_changes() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    // Messages write the database under the config's directory; an unrelated file appears there.
    for _ in 0..20 {
        assert_eq!(
            post_message(&host, TONY, json!({"type": "NOTE"}))
                .await
                .status,
            202
        );
    }
    std::fs::write(host.dir.path().join("notes.txt"), "not config").unwrap();
    // Once the watch is in place the host looks at its files once (a write before the watch
    // existed raised no event).
    let base = watching(&host).await;
    // An explicit check reads the files; a watcher event caused by that read would follow ~100 ms
    // later and count as another.
    let r = admin_reload(&host).await;
    assert_eq!(r.json["status"], "unchanged");
    // A real edit is one check. The watcher handles its events in order, so once the edit is in
    // force any event the explicit reload's read set off has been counted too.
    host.rewrite_config(&config(r#"["NOTE", "TASK"]"#));
    let st = reloads_ok(&host, 1).await;
    assert_eq!(
        st["checks"],
        base + 2,
        "only the explicit reload and the edit read the files: {st}"
    );
    // Likewise the edit's own read set off nothing: the next edit is the next check.
    host.rewrite_config(&config(r#"["NOTE", "TASK", "PING"]"#));
    let st = reloads_ok(&host, 2).await;
    assert_eq!(st["checks"], base + 3, "one check per edit: {st}");
    until_type_answers(&host, "PING", 202).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_and_recreated_is_picked_up() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let path = host.dir.path().join("routes.toml");
    watching(&host).await;
    std::fs::remove_file(&path).unwrap();
    // While it is gone the old config serves (a reload attempt, if any, fails and changes nothing).
    assert_eq!(
        post_message(&host, TONY, json!({"type": "NOTE"}))
            .await
            .status,
        202
    );
    write_by_rename(&path, config(r#"["TASK"]"#));
    until_type_answers(&host, "TASK", 202).await;
    until_type_answers(&host, "NOTE", 422).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_needs_the_admin_secret_and_reports_unchanged_or_failed() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let reload = || admin_reload(&host);
    let r = reload().await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("unchanged"))
    );
    // Without the admin secret: refused.
    let r = request(
        "POST",
        &host.url("/admin/reload"),
        &[("x-shared-secret", TONY)],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = request("GET", &host.url("/status"), &[], "").await;
    assert_eq!(r.status, 401);
    // A broken file: the explicit reload says why (whether or not the watcher got there first).
    host.rewrite_config("[peers.x]\nurl = 5\n");
    let r = reload().await;
    assert_eq!((r.status, r.code()), (422, "reload_failed"), "{:#}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{:#}",
        r.json
    );
    assert_eq!(
        post_message(&host, TONY, json!({"type": "NOTE"}))
            .await
            .status,
        202
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_turn_whose_route_was_removed_fails_as_route_removed() {
    let peer = PeerServer::start().await;
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let without_tasks = Toml::new()
        .command(&agent_command(&["--wait-for", path_str(&gate)]))
        .agent("max_concurrent", "1")
        .peer("tony", &peer.url(), TONY)
        .mailbox("notes", &["tony"], &["NOTE"]);
    let with_tasks = without_tasks
        .clone()
        .route("tasks", "from", r#"["tony"]"#)
        .route("tasks", "types", r#"["TASK"]"#);
    let host = start_host(&with_tasks.build()).await;
    let first = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .json["id"]
        .clone();
    let second = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .json["id"]
        .clone();
    let (first, second) = (first.as_str().unwrap(), second.as_str().unwrap());
    eventually(Duration::from_secs(20), "the first turn to run", || async {
        let v = admin_get(&host, &format!("/messages/{first}")).await.json;
        (v["turn"]["state"] == "running").then_some(())
    })
    .await;

    host.rewrite_config(&without_tasks.build());
    until_type_answers(&host, "TASK", 422).await;
    std::fs::write(&gate, b"go").unwrap();

    // The running turn kept its own config and finished; the queued one found its route gone.
    let v = wait_turn_end(&host, ADMIN, first).await;
    assert_eq!(v["turn"]["state"], "done", "{v:#}");
    let v = wait_turn_end(&host, ADMIN, second).await;
    assert_eq!(v["turn"]["state"], "failed", "{v:#}");
    assert!(
        v["turn"]["error"]
            .as_str()
            .unwrap()
            .starts_with("route_removed"),
        "{v:#}"
    );
    // The sender hears about it, since the route's reply_to went with the route. (TASKs posted
    // while the reload was on its way were queued too, and get notices of their own: find this
    // one's.)
    let notice = eventually(
        Duration::from_secs(20),
        "the notice for the second",
        || async {
            peer.received()
                .into_iter()
                .find(|r| r.body["in_reply_to"] == second)
        },
    )
    .await;
    assert_eq!(notice.body["type"], "TURN_FAILED");
    assert_eq!(notice.body["payload"]["error"], "route_removed");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_agent_inbox_reload_read_the_files_again() {
    // A process of its own: SIGHUP to this test process would reach every in-process host.
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::new()
        .listen(addr)
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .mailbox("inbox", &["tony"], &["NOTE"])
        .build();
    let host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
    let base = eventually(Duration::from_secs(10), "the watch to start", || async {
        let n = status(&host).await["checks"].as_u64().unwrap_or(0);
        (n >= 1).then_some(n)
    })
    .await;
    host.signal("HUP");
    let st = eventually(Duration::from_secs(10), "SIGHUP's check", || async {
        let st = status(&host).await;
        (st["checks"] == base + 1).then_some(st)
    })
    .await;
    assert_eq!(st["reloads_ok"], 0, "nothing changed: {st:#}");
    assert_eq!(st["reloads_failed"], 0, "{st:#}");

    // `agent-inbox reload` asks the running inbox to check now.
    let config = dir.path().join("routes.toml");
    let out = std::process::Command::new(bin())
        .args(["reload", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("unchanged"), "{stdout}");
    let st = status(&host).await;
    assert_eq!(st["checks"], base + 2, "{st:#}");

    // And a changed file it reports as reloaded (the watcher may get there first: then unchanged).
    let changed = Toml::new()
        .listen(addr)
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .mailbox("inbox", &["tony"], &["NOTE", "TASK"])
        .build();
    write_by_rename(&config, changed);
    host.signal("HUP");
    until_type_answers(&host, "TASK", 202).await;
    assert_eq!(status(&host).await["reloads_ok"], 1);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_needs_a_restart_is_logged_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = |max_connections: &str, types: &[&str]| {
        Toml::new()
            .listen(addr)
            .server("max_connections", max_connections)
            .peer("tony", "http://127.0.0.1:9/message", TONY)
            .mailbox("inbox", &["tony"], types)
            .build()
    };
    let host = BinHost::start(dir.path(), &toml("100", &["NOTE"]), addr, "serve.log").await;
    write_by_rename(
        &dir.path().join("routes.toml"),
        toml("50", &["NOTE", "TASK"]),
    );
    // The rest of the change is live.
    until_type_answers(&host, "TASK", 202).await;
    // The log is written a few milliseconds behind.
    let log = eventually(Duration::from_secs(5), "the reload's log line", || async {
        let log = host.log();
        log.contains("needs a restart").then_some(log)
    })
    .await;
    let line = log
        .lines()
        .find(|l| l.contains("needs a restart"))
        .unwrap_or_else(|| panic!("no \"needs a restart\" in the log:\n{log}"));
    assert!(line.contains("server.max_connections"), "{line}");
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_under_the_config_it_started_with() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let old_hash = status(&host).await["config_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    watching(&host).await;
    // Headers and half the body now, the rest after the reload.
    let body = json!({"type": "NOTE", "payload": {"n": 1}}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut s = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let request = format!(
        "POST /message HTTP/1.1\r\nHost: {}\r\nX-Shared-Secret: {TONY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        host.addr,
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    // The new config no longer takes NOTE.
    host.rewrite_config(&config(r#"["TASK"]"#));
    until_type_answers(&host, "NOTE", 422).await;
    s.write_all(tail.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut answer))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 202"),
        "the request that started under the old config: {answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("x-config-hash: {old_hash}")),
        "{answer}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_turn_takes_the_route_settings_in_force_when_it_starts() {
    let peer = PeerServer::start().await;
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let (before, after) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_record = |record: &std::path::Path| {
        Toml::tasks(
            &peer.url(),
            &agent_command(&["--wait-for", path_str(&gate), "--record", path_str(record)]),
        )
        .agent("max_concurrent", "1")
        .build()
    };
    let host = start_host(&with_record(before.path())).await;
    watching(&host).await;
    let first = send_task(&host).await;
    wait_running(&host, &first).await;
    let second = send_task(&host).await;
    assert_eq!(view(&host, &second).await["turn"]["state"], "queued");
    host.rewrite_config(&with_record(after.path()));
    eventually(Duration::from_secs(10), "the reload", || async {
        (status(&host).await["reloads_ok"] == 1).then_some(())
    })
    .await;
    std::fs::write(&gate, b"go").unwrap();
    wait_turn_state(&host, &first, "done").await;
    wait_turn_state(&host, &second, "done").await;
    // The running turn kept its command; the queued one started under the new one.
    read_record(before.path(), &first).await;
    read_record(after.path(), &second).await;
    assert!(!after.path().join(format!("{first}.json")).exists());
    assert!(!before.path().join(format!("{second}.json")).exists());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_bytes_and_max_hops_are_live() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    watching(&host).await;
    let big = json!({"type": "NOTE", "payload": {"pad": "x".repeat(2000)}});
    assert_eq!(post_message(&host, TONY, big.clone()).await.status, 202);
    let hops = json!({"type": "NOTE", "hops": 4});
    assert_eq!(post_message(&host, TONY, hops.clone()).await.status, 202);
    let tighter = Toml::new()
        .server("max_body_bytes", "1024")
        .server("max_hops", "3")
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .route("inbox", "from", r#"["tony"]"#)
        .route("inbox", "types", r#"["NOTE"]"#)
        .route("inbox", "mailbox", "true")
        .build();
    host.rewrite_config(&tighter);
    let r = eventually(
        Duration::from_secs(10),
        "the new max_body_bytes",
        || async {
            let r = post_message(&host, TONY, big.clone()).await;
            (r.status == 413).then_some(r)
        },
    )
    .await;
    assert_eq!(r.code(), "body_too_large");
    let r = post_message(&host, TONY, hops).await;
    assert_eq!((r.status, r.code()), (422, "loop_detected"), "{:#}", r.json);
    host.stop().await;
}

/// Waits until `/status` counts `n` failed reloads, and returns it.
async fn reloads_failed(host: &impl Endpoint, n: u64) -> serde_json::Value {
    eventually(
        Duration::from_secs(20),
        &format!("failed reload {n}"),
        || async {
            let st = status(host).await;
            (st["reloads_failed"] == n).then_some(st)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_cut_short_routes_toml_is_refused_and_the_operator_keeps_access() {
    // Its own process, so the metrics are its own.
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let full = config_toml(r#"["NOTE"]"#).listen(addr).build();
    let host = BinHost::start(dir.path(), &full, addr, "log").await;
    let path = dir.path().join("routes.toml");
    let hash = status(&host).await["config_hash"].clone();
    watching(&host).await;

    // `: > routes.toml`, in place: the watcher sees an empty file.
    std::fs::File::create(&path).unwrap();
    let st = reloads_failed(&host, 1).await;
    let why = st["last_reload_error"].as_str().unwrap();
    assert!(why.contains("no [server] table"), "{st:#}");
    assert_eq!(st["config_hash"], hash, "the last good config stays");
    // The peer is still a peer, and the operator still gets in to see why.
    assert_eq!(
        post_message(&host, TONY, json!({"type": "NOTE"}))
            .await
            .status,
        202
    );
    let metrics = admin_get(&host, "/metrics").await;
    assert!(
        metrics
            .text
            .contains(r#"inbox_reloads_total{outcome="failed"} 1"#),
        "{}",
        metrics.text
    );

    // A file cut in half: [server] and the peer are there, the route is not.
    let cut = &full[..full.find("[routes.").expect("a route")];
    std::fs::write(&path, cut).unwrap();
    let st = reloads_failed(&host, 2).await;
    assert!(
        st["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("it would remove every route"),
        "{st:#}"
    );
    assert_eq!(st["config_hash"], hash);

    // A truncate, then the write a moment later, in place: read once, whole.
    let (ok_before, failed_before) = (st["reloads_ok"].clone(), st["reloads_failed"].clone());
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&path).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        f.write_all(config(r#"["NOTE", "TASK"]"#).as_bytes())
            .unwrap();
    }
    until_type_answers(&host, "TASK", 202).await;
    let st = status(&host).await;
    assert_eq!(
        st["reloads_failed"], failed_before,
        "never read half-written: {st:#}"
    );
    assert_eq!(st["reloads_ok"], ok_before.as_u64().unwrap() + 1, "{st:#}");
    assert_eq!(st["last_reload_error"], serde_json::Value::Null);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptying_a_running_inbox_takes_allow_empty() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    watching(&host).await;
    let empty = Toml::new().build();
    host.rewrite_config(&empty);
    let st = reloads_failed(&host, 1).await;
    assert!(
        st["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("--allow-empty"),
        "{st:#}"
    );
    let refused = admin_reload(&host).await;
    assert_eq!((refused.status, refused.code()), (422, "reload_failed"));
    let meant = admin_post(&host, "/admin/reload?allow_empty=true", "").await;
    assert_eq!(meant.status, 200, "{:#}", meant.json);
    assert_eq!(meant.json["status"], "reloaded");
    let r = post_message(&host, TONY, json!({"type": "NOTE"})).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "tony is gone");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_the_config_in_force_clears_the_reload_error() {
    let good = config(r#"["NOTE"]"#);
    let host = start_host(&good).await;
    watching(&host).await;
    host.rewrite_config("[server\nnot toml");
    reloads_failed(&host, 1).await;
    host.rewrite_config(&good);
    let st = eventually(Duration::from_secs(20), "the error to clear", || async {
        let st = status(&host).await;
        st["last_reload_error"].is_null().then_some(st)
    })
    .await;
    assert_eq!(st["reloads_ok"], 0, "nothing was swapped: {st:#}");
    let r = admin_reload(&host).await;
    assert_eq!(r.json["status"], "unchanged");
    assert!(status(&host).await["last_reload_error"].is_null());
    host.stop().await;
}

/// tony's TASKs to route `tasks`, whose agent waits for `gate` then replies DONE; the route may
/// reply `reply_types` to `reply_to`; mel is a second peer.
fn turn_config(
    peer: &str,
    mel: &str,
    gate: &std::path::Path,
    reply_types: &[&str],
    reply_to: &[&str],
) -> String {
    Toml::tasks(
        peer,
        &agent_command(&["--wait-for", path_str(gate), "--reply", "DONE"]),
    )
    .peer("mel", mel, "mel-secret")
    .route("tasks", "reply_types", &toml_list(reply_types))
    .route("tasks", "reply_to", &toml_list(reply_to))
    .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turn_keeps_the_reply_rules_its_prompt_promised() {
    let (tony, mel) = (PeerServer::start().await, PeerServer::start().await);
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("gate");
    let host = start_host(&turn_config(
        &tony.url(),
        &mel.url(),
        &gate,
        &["DONE", "STATUS"],
        &["tony"],
    ))
    .await;
    watching(&host).await;
    let id = send_task(&host).await;
    wait_running(&host, &id).await;
    // Mid-turn, DONE stops being a reply type and replies go to mel instead.
    host.rewrite_config(&turn_config(
        &tony.url(),
        &mel.url(),
        &gate,
        &["STATUS", "DONE2"],
        &["mel"],
    ));
    reloads_ok(&host, 1).await;
    std::fs::write(&gate, b"go").unwrap();
    let v = wait_turn_state(&host, &id, "done").await;
    let replies = v["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 1, "{v:#}");
    assert_eq!(replies[0]["type"], "DONE");
    let got = tony.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "DONE");
    // A later turn takes the new rules: DONE is refused, and it says so to the peer.
    let later = send_task(&host).await;
    let v = wait_turn_state(&host, &later, "failed").await;
    assert!(
        v["replies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["type"] == "TURN_FAILED"),
        "{v:#}"
    );
    host.stop().await;
    assert!(
        mel.received()
            .iter()
            .all(|r| r.body["in_reply_to"] != id.as_str()),
        "{:#?}",
        mel.received()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turn_whose_route_is_removed_still_answers_where_it_was_told() {
    let tony = PeerServer::start().await;
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("gate");
    let with_route = turn_config(&tony.url(), &tony.url(), &gate, &["DONE"], &["tony"]);
    let host = start_host(&with_route).await;
    watching(&host).await;
    let id = send_task(&host).await;
    wait_running(&host, &id).await;
    let without = Toml::new()
        .peer("tony", &tony.url(), TONY)
        .mailbox("notes", &["tony"], &["NOTE"])
        .build();
    host.rewrite_config(&without);
    reloads_ok(&host, 1).await;
    std::fs::write(&gate, b"go").unwrap();
    wait_turn_state(&host, &id, "done").await;
    let got = tony.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "DONE");
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    host.stop().await;
}
