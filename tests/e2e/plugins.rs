//! WebAssembly plugins, built from `plugins/` by the tests: check, rewrite, route, reject; reply
//! instructions; reply checks and peer choice; hostile plugins contained.

use std::time::{Duration, Instant};

use agent_inbox_tests::*;
use serde_json::{Value, json};

/// A host whose dir holds `plugins` (name → file) before the config is read.
async fn host_with(toml: &str, plugins: &[(&str, &str)]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    for (name, file) in plugins {
        install_plugin(name, dir.path(), file);
    }
    start_host_in(toml, dir).await
}

fn record_command(dir: &std::path::Path, extra: &[&str]) -> String {
    let mut argv = vec![
        "python3".to_string(),
        agent_script(),
        "--prompt".into(),
        "{prompt}".into(),
        "--record".into(),
        dir.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    serde_json::to_string(&argv).unwrap()
}

fn read_prompt(dir: &std::path::Path, id: &str) -> String {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{id}.json"))).unwrap())
            .unwrap();
    v["prompt"].as_str().unwrap().to_owned()
}

/// tony's TASKs go through task-schema to `tasks`, or to the internal `frontend-tasks` (which also
/// names a type of its own, CSS) when labelled frontend; NOTEs go to a mailbox with no plugin.
fn schema_config(peer: &str, tasks_cmd: &str, frontend_cmd: &str) -> String {
    Toml::new()
        .peer("tony", peer, TONY)
        .route("tasks", "from", r#"["tony"]"#)
        .route("tasks", "types", r#"["TASK"]"#)
        .route("tasks", "agent", &format!("{{ command = {tasks_cmd} }}"))
        .route("tasks", "plugin", &quoted("task-schema.wasm"))
        .route_table(
            "tasks",
            "plugin_config",
            r#"required = { title = "string" }
max_len = { title = 20 }
defaults = { priority = 3 }
route_by = "label"
routes = { frontend = "frontend-tasks" }"#,
        )
        .route("frontend-tasks", "from", r#"["tony"]"#)
        .route("frontend-tasks", "types", r#"["TASK", "CSS"]"#)
        .route("frontend-tasks", "internal", "true")
        .route(
            "frontend-tasks",
            "agent",
            &format!("{{ command = {frontend_cmd} }}"),
        )
        .mailbox("notes", &["tony"], &["NOTE"])
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_schema_accepts_rewrites_routes_and_rejects() {
    let peer = PeerServer::start().await;
    let (tasks_rec, front_rec) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = schema_config(
        &peer.url(),
        &record_command(tasks_rec.path(), &[]),
        &record_command(front_rec.path(), &[]),
    );
    let host = host_with(&toml, &[("task-schema", "task-schema.wasm")]).await;

    // Accept: as sent.
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "fix", "priority": 1}}),
    )
    .await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let v = wait_turn_end(&host, ADMIN, r.json["id"].as_str().unwrap()).await;
    assert_eq!(v["turn"]["state"], "done", "{v:#}");
    assert_eq!(v["message"]["route"], "tasks");
    assert_eq!(
        v["message"]["payload"],
        json!({"title": "fix", "priority": 1})
    );

    // Rewrite: the missing priority is filled in from the plugin's defaults.
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "fix"}}),
    )
    .await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let v = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(v["turn"]["state"], "done", "{v:#}");
    assert_eq!(
        v["message"]["payload"],
        json!({"title": "fix", "priority": 3})
    );
    assert!(read_prompt(tasks_rec.path(), &id).contains("\"priority\": 3"));

    // Route: TASKs labelled frontend go to the internal frontend route and its agent.
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "css", "label": "frontend"}}),
    )
    .await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let v = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(v["turn"]["state"], "done", "{v:#}");
    assert_eq!(v["message"]["route"], "frontend-tasks", "{v:#}");
    assert!(read_prompt(front_rec.path(), &id).contains("css"));
    assert!(!tasks_rec.path().join(format!("{id}.json")).exists());

    // Reject: the sender sees the plugin's precise reason, and nothing is stored.
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"priority": 2}}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "plugin_rejected"),
        "{:#}",
        r.json
    );
    assert_eq!(
        r.json["error"]["message"],
        "missing required field `title` (string)"
    );
    assert_eq!(r.json["error"]["plugin"], "task-schema");
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "a title far too long for it"}}),
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "plugin_rejected"));
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`title` is too long"),
        "{:#}",
        r.json
    );
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": 5}}),
    )
    .await;
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("field `title` must be a string"),
        "{:#}",
        r.json
    );
    let listed = admin_get(&host, "/messages").await.json;
    assert_eq!(
        listed["messages"].as_array().unwrap().len(),
        3,
        "rejected messages are not stored"
    );

    // The internal route cannot be reached directly: its own type CSS is unknown to tony, and
    // tony's plain TASKs went through `tasks` above.
    let r = post_message(&host, TONY, json!({"type": "CSS", "payload": {}})).await;
    assert_eq!((r.status, r.code()), (422, "unknown_type"), "{:#}", r.json);
    assert_eq!(
        r.json["error"]["allowed"],
        json!(["NOTE", "TASK"]),
        "{:#}",
        r.json
    );
    // Routes without a plugin keep the built-in behaviour.
    let r = post_message(&host, TONY, json!({"type": "NOTE", "payload": {}})).await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    host.stop().await;
}

/// tony's TASKs go to `tasks`, whose reply-instructions plugin writes the prompt and sends STATUS
/// to tony only; BREAKDOWNs go to tony and mel.
fn instructions_config(peer_tony: &str, peer_mel: &str, command: &str) -> String {
    Toml::new()
        .peer("tony", peer_tony, TONY)
        .peer("mel", peer_mel, MEL)
        .agent_route(
            "tasks",
            &["tony"],
            &["TASK"],
            &["BREAKDOWN", "STATUS"],
            &["tony", "mel"],
        )
        .route("tasks", "agent", &format!("{{ command = {command} }}"))
        .route("tasks", "plugin", &quoted("reply-instructions.wasm"))
        .route_table(
            "tasks",
            "plugin_config",
            r#"preamble = "Réponds en français, s'il te plaît."
examples = { BREAKDOWN = { steps = ["…"] } }
to_by_type = { STATUS = ["tony"] }"#,
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_instructions_reach_the_agent_and_replies_go_to_the_chosen_peers() {
    let (tony, mel) = (PeerServer::start().await, PeerServer::start().await);
    let rec = tempfile::tempdir().unwrap();
    let command = record_command(rec.path(), &["--reply", "STATUS", "--reply", "BREAKDOWN"]);
    let host = host_with(
        &instructions_config(&tony.url(), &mel.url(), &command),
        &[("reply-instructions", "reply-instructions.wasm")],
    )
    .await;
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "docs"}}),
    )
    .await;
    assert_eq!(r.status, 202);
    let id = r.json["id"].as_str().unwrap().to_owned();
    wait_turn_state(&host, &id, "done").await;

    let prompt = read_prompt(rec.path(), &id);
    for want in [
        "Réponds en français, s'il te plaît.",
        &format!("curl -s -X POST '{}'", host.url("/send")),
        // The credential is the inbox's 0600 header file: no token on curl's command line.
        "-H '@",
        "where body.json is one of these, one per reply type",
        "\"type\": \"BREAKDOWN\"",
        "\"type\": \"STATUS\"",
        "\"steps\"",
    ] {
        assert!(
            prompt.contains(want),
            "missing {want:?} in the prompt:\n{prompt}"
        );
    }
    assert!(
        !prompt.contains("To send your response, POST to /send"),
        "the plugin's text replaced the built-in one:\n{prompt}"
    );

    // STATUS goes to tony only (to_by_type); BREAKDOWN to both reply_to peers.
    let got_tony = tony.wait_for(2, Duration::from_secs(20)).await;
    let got_mel = mel.wait_for(1, Duration::from_secs(20)).await;
    // Sorted: the relay delivers the two replies concurrently, so they may arrive either way.
    let types = |got: &[Received]| {
        let mut t = got
            .iter()
            .map(|r| r.body["type"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        t.sort();
        t
    };
    assert_eq!(types(&got_tony), ["BREAKDOWN", "STATUS"]);
    assert_eq!(types(&got_mel), ["BREAKDOWN"]);
    assert_eq!(got_mel[0].headers["x-shared-secret"], MEL);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reply_rejects_a_bad_reply() {
    let peer = PeerServer::start().await;
    let rec = tempfile::tempdir().unwrap();
    // The agent replies with a payload that is not an object; task-schema refuses such replies.
    let command = record_command(
        rec.path(),
        &["--reply", "BREAKDOWN", "--payload", "\"just text\""],
    );
    let toml = Toml::new()
        .peer("tony", &peer.url(), TONY)
        .agent_route("tasks", &["tony"], &["TASK"], &["BREAKDOWN"], &["tony"])
        .route("tasks", "agent", &format!("{{ command = {command} }}"))
        .route("tasks", "plugin", &quoted("task-schema.wasm"))
        .build();
    let host = host_with(&toml, &[("task-schema", "task-schema.wasm")]).await;
    let r = post_message(&host, TONY, json!({"type": "TASK", "payload": {}})).await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let v = wait_turn_end(&host, ADMIN, &id).await;
    // agent.py exits 4 when /send refuses its reply, and prints the answer.
    assert_eq!(v["turn"]["exit_code"], 4, "{v:#}");
    let out = v["turn"]["stdout_tail"].as_str().unwrap();
    assert!(
        out.contains("send failed BREAKDOWN 422") && out.contains("plugin_rejected"),
        "{out}"
    );
    assert!(
        out.contains("BREAKDOWN reply payload must be a JSON object"),
        "{out}"
    );
    assert!(
        v["replies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["type"] == "TURN_FAILED"),
        "{v:#}"
    );
    host.stop().await;
}

/// tony's TASKs go to `hostile`, whose plugin misbehaves as `mode` says in check-message and as
/// `render` says in render-turn; NOTEs go to a mailbox with no plugin.
fn hostile_config(mode: &str, render: &str, peer: &str, command: &str) -> String {
    hostile_toml(mode, render, peer, command).build()
}

/// [`hostile_config`] as a builder, to add to.
fn hostile_toml(mode: &str, render: &str, peer: &str, command: &str) -> Toml {
    Toml::new()
        .peer("tony", peer, TONY)
        .agent_route("hostile", &["tony"], &["TASK"], &["DONE"], &["tony"])
        .route("hostile", "agent", &format!("{{ command = {command} }}"))
        .route("hostile", "plugin", &quoted("hostile.wasm"))
        .route(
            "hostile",
            "plugin_config",
            &format!("{{ mode = {}, render = {} }}", quoted(mode), quoted(render)),
        )
        .mailbox("notes", &["tony"], &["NOTE"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_stopped_and_contained() {
    let peer = PeerServer::start().await;
    let command = r#"["true"]"#;
    let host = host_with(
        &hostile_config("loop", "", &peer.url(), command),
        &[("hostile", "hostile.wasm")],
    )
    .await;
    let path = host.dir.path().join("routes.toml");
    let cases = [
        ("loop", "deadline"),
        ("oom", "memory"),
        ("trap", "unreachable"),
        ("panic", "hostile plugin panicked on purpose"),
        ("bad-json", "rewrite payload is not JSON"),
    ];
    for (i, (mode, want)) in cases.iter().enumerate() {
        if i > 0 {
            write_by_rename(&path, hostile_config(mode, "", &peer.url(), command));
            eventually(Duration::from_secs(20), "the reload", || async {
                (admin_get(&host, "/status").await.json["reloads_ok"] == i as u64).then_some(())
            })
            .await;
        }
        let started = Instant::now();
        let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
        let took = started.elapsed();
        assert_eq!(
            (r.status, r.code()),
            (500, "plugin_failed"),
            "{mode}: {:#}",
            r.json
        );
        assert_eq!(r.json["error"]["plugin"], "hostile");
        let msg = r.json["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{mode}: {msg}");
        // Generous: the deadline is 50 ms, but this machine may be busy; a plugin that is never
        // stopped would hold the request far longer.
        assert!(
            took < Duration::from_secs(15),
            "{mode}: answered after {took:?}"
        );
        println!("hostile {mode}: plugin_failed after {took:?}");
        // Other routes keep working.
        assert_eq!(
            post_message(&host, TONY, json!({"type": "NOTE"}))
                .await
                .status,
            202
        );
    }
    // And the same route works again with a good plugin config.
    write_by_rename(&path, hostile_config("accept", "", &peer.url(), command));
    let r = eventually(Duration::from_secs(20), "the good config", || async {
        let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
        (r.status == 202).then_some(r)
    })
    .await;
    wait_turn_state(&host, &r.id(), "done").await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_render_turn_fails_the_turn_and_notifies() {
    let peer = PeerServer::start().await;
    let host = host_with(
        &hostile_config("accept", "panic", &peer.url(), r#"["true"]"#),
        &[("hostile", "hostile.wasm")],
    )
    .await;
    let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
    assert_eq!(
        r.status, 202,
        "check-message accepts; the failure comes later, off the request path"
    );
    let id = r.json["id"].as_str().unwrap().to_owned();
    let v = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(v["turn"]["state"], "failed");
    let err = v["turn"]["error"].as_str().unwrap();
    assert!(
        err.starts_with("plugin_failed: plugin hostile failed")
            && err.contains("panicked on purpose"),
        "{err}"
    );
    let got = peer.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED");
    assert_eq!(got[0].body["payload"]["error"], "plugin_failed");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_that_is_not_a_component_keeps_the_old_plugin() {
    let peer = PeerServer::start().await;
    let toml = hostile_config("count", "", &peer.url(), r#"["true"]"#);
    let host = host_with(&toml, &[("hostile", "hostile.wasm")]).await;
    let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
    assert_eq!(
        (r.status, r.json["error"]["message"].as_str()),
        (400, Some("call 1"))
    );
    let hash = r.headers["x-config-hash"].clone();

    // A core module, not a component, written by rename as a deploy would.
    let plugin = host.dir.path().join("hostile.wasm");
    let tmp = host.dir.path().join("hostile.wasm.tmp");
    std::fs::write(&tmp, core_module_bytes()).unwrap();
    std::fs::rename(&tmp, &plugin).unwrap();
    let st = eventually(Duration::from_secs(20), "the failed reload", || async {
        let st = admin_get(&host, "/status").await.json;
        (st["reloads_failed"] == 1).then_some(st)
    })
    .await;
    assert!(
        st["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("hostile"),
        "{st:#}"
    );
    let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
    assert_eq!(
        r.json["error"]["message"], "call 1",
        "the old plugin still answers"
    );
    assert_eq!(r.headers["x-config-hash"], hash);

    // A different good plugin under the same name takes effect.
    install_plugin("task-schema", host.dir.path(), "hostile.wasm.tmp");
    std::fs::rename(&tmp, &plugin).unwrap();
    let r = eventually(Duration::from_secs(20), "the new plugin", || async {
        let r = post_message(&host, TONY, json!({"type": "TASK", "payload": 1})).await;
        (r.json["error"]["message"] == "payload must be a JSON object").then_some(r)
    })
    .await;
    assert_ne!(r.headers["x-config-hash"], hash);
    host.stop().await;
}

/// The smallest valid core wasm module: valid WebAssembly, but not a component.
fn core_module_bytes() -> Vec<u8> {
    vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_plugin_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"not wasm at all").unwrap();
    let toml = r#"
        [peers.tony]
        url = "http://127.0.0.1:9/message"
        secret = "s"
        [routes.notes]
        from = ["tony"]
        types = ["NOTE"]
        mailbox = true
        plugin = "broken.wasm"
    "#;
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).unwrap();
    let config = agent_inbox::config::Config::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = agent_inbox::wiring::run(config, listener, std::future::pending())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("routes.notes.plugin") && msg.contains("broken"),
        "{msg}"
    );
}

/// The hostile plugin as its own process, so its output reaches a log file: `[plugins]` and route
/// settings on top of [`hostile_toml`].
async fn hostile_bin(dir: &std::path::Path, toml: Toml) -> BinHost {
    install_plugin("hostile", dir, "hostile.wasm");
    let addr = unused_addr();
    BinHost::start(dir, &toml.listen(addr).build(), addr, "serve.log").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_logs_and_output_reach_the_inbox_log_and_output_is_capped() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = hostile_bin(
        dir.path(),
        hostile_toml("log", "", &peer.url(), r#"["true"]"#),
    )
    .await;
    let id = send_task(&host).await;
    let log = eventually(Duration::from_secs(10), "the plugin's lines", || async {
        let log = host.log();
        log.contains("hostile stderr line").then_some(log)
    })
    .await;
    for want in [
        "hostile says hello",
        "hostile stdout line",
        "hostile stderr line",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("{want:?} not in the log:\n{log}"));
        assert!(line.contains("hostile"), "under the plugin's name: {line}");
    }
    let hello = log
        .lines()
        .find(|l| l.contains("hostile says hello"))
        .unwrap();
    assert!(hello.contains(&id), "with its fields: {hello}");

    // flood prints ~5.6 MB in one call; 16 KiB of it is kept, the rest dropped (and said so).
    write_by_rename(
        &dir.path().join("routes.toml"),
        hostile_toml("flood", "", &peer.url(), r#"["true"]"#)
            // Printing 100,000 lines takes longer than the default 50 ms.
            .route("hostile", "plugin_limits", "{ deadline_ms = 20000 }")
            .listen(host.addr)
            .build(),
    );
    // One message per try, and a try waits for its own lines (the log is written a few
    // milliseconds behind), so the lines counted below come from one call.
    let r = eventually(Duration::from_secs(10), "the flood config", || async {
        let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
        if r.status != 202 {
            return None;
        }
        wait_turn_state(&host, &r.id(), "done").await;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if host.log().contains("flood line") {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    })
    .await;
    wait_turn_state(&host, &r.id(), "done").await;
    let log = host.log();
    // Each stream on its own: stdout's "flood line", stderr's "flood err line".
    for prefix in ["flood line ", "flood err line "] {
        let flood: Vec<&str> = log.lines().filter(|l| l.contains(prefix)).collect();
        // The bytes the plugin printed for the lines forwarded (the log adds fields after each).
        let kept: usize = flood
            .iter()
            .map(|l| {
                let rest = &l[l.find(prefix).unwrap() + prefix.len()..];
                let i = rest.split_whitespace().next().unwrap();
                // The last line kept may be cut short: count its dots.
                let dots = rest[i.len() + 1..]
                    .chars()
                    .take_while(|&c| c == '.')
                    .count();
                prefix.len() + i.len() + 1 + dots + 1
            })
            .sum();
        assert!(!flood.is_empty(), "none of {prefix:?} was forwarded");
        assert!(
            kept <= 16 * 1024 + 1 && flood.len() < 400,
            "{} {prefix:?} lines ({kept} bytes) forwarded from one call, past the 16 KiB cap",
            flood.len()
        );
    }
    assert!(
        log.contains("plugin output past the per-call limit was dropped"),
        "the drop is not logged:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_stops_a_plugin_parked_in_a_host_call_and_a_looping_render_turn() {
    let peer = PeerServer::start().await;
    // check-message sleeps 10 s in a WASI call, where no epoch check runs.
    let host = host_with(
        &hostile_config("sleep", "", &peer.url(), r#"["true"]"#),
        &[("hostile", "hostile.wasm")],
    )
    .await;
    let started = Instant::now();
    let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
    let took = started.elapsed();
    assert_eq!((r.status, r.code()), (500, "plugin_failed"), "{:#}", r.json);
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("deadline"), "{msg}");
    // Generous, but shorter than the sleep: the call was cut, not waited out.
    assert!(took < Duration::from_secs(9), "answered after {took:?}");

    // render-turn loops: the turn fails with plugin_failed, and the sender is told.
    host.rewrite_config(&hostile_config(
        "accept",
        "loop",
        &peer.url(),
        r#"["true"]"#,
    ));
    let r = eventually(Duration::from_secs(10), "the accepting config", || async {
        let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
        (r.status == 202).then_some(r)
    })
    .await;
    let v = wait_turn_state(&host, &r.id(), "failed").await;
    let err = v["turn"]["error"].as_str().unwrap();
    assert!(
        err.starts_with("plugin_failed") && err.contains("deadline"),
        "{err}"
    );
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED");
    assert_eq!(got[0].body["payload"]["error"], "plugin_failed");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_calls_reuse_an_instance_that_many_times() {
    let peer = PeerServer::start().await;
    let toml = hostile_toml("count", "", &peer.url(), r#"["true"]"#)
        .route("hostile", "plugin_limits", "{ warm_calls = 3 }")
        .build();
    let host = host_with(&toml, &[("hostile", "hostile.wasm")]).await;
    let mut calls = Vec::new();
    for _ in 0..7 {
        let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
        assert_eq!(r.status, 400, "{:#}", r.json);
        calls.push(r.json["error"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        calls,
        [
            "call 1", "call 2", "call 3", "call 1", "call 2", "call 3", "call 1"
        ],
        "one instance serves warm_calls = 3 calls, then a fresh one"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_max_instances_fails_as_plugin_failed() {
    let peer = PeerServer::start().await;
    // One instance in all; each call holds it for its whole deadline (2 s) in a WASI sleep.
    let toml = hostile_toml("sleep", "", &peer.url(), r#"["true"]"#)
        .plugins("max_instances", "1")
        .route("hostile", "plugin_limits", "{ deadline_ms = 2000 }")
        .build();
    let host = host_with(&toml, &[("hostile", "hostile.wasm")]).await;
    let (a, b) = tokio::join!(
        post_message(&host, TONY, json!({"type": "TASK"})),
        post_message(&host, TONY, json!({"type": "TASK"})),
    );
    let mut messages = Vec::new();
    for r in [&a, &b] {
        assert_eq!((r.status, r.code()), (500, "plugin_failed"), "{:#}", r.json);
        messages.push(r.json["error"]["message"].as_str().unwrap().to_owned());
    }
    messages.sort();
    assert!(
        messages.iter().any(|m| m.contains("deadline"))
            && messages.iter().any(|m| m.contains("no free instance slot")),
        "one call holds the only instance until its deadline, the other finds none: {messages:#?}"
    );
    // Other routes do not need an instance and keep working.
    assert_eq!(
        post_message(&host, TONY, json!({"type": "NOTE"}))
            .await
            .status,
        202
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_an_unchanged_plugin_from_the_compile_cache() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = hostile_toml("accept", "", &peer.url(), r#"["true"]"#);
    let host = hostile_bin(dir.path(), toml.clone()).await;
    let log_path = host.log_path.clone();
    host.stop();
    let first = strip_ansi(&std::fs::read_to_string(log_path).unwrap());
    let cache = dir.path().join("data").join("plugin-cache");
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("no cache at {}: {e}", cache.display()))
        .collect();
    assert!(!cached.is_empty(), "nothing cached in {}", cache.display());
    let loaded = |log: &str| -> String {
        log.lines()
            .find(|l| l.contains("plugin loaded"))
            .unwrap_or_else(|| panic!("no \"plugin loaded\" line:\n{log}"))
            .to_owned()
    };
    assert!(
        loaded(&first).contains("from_cache=false"),
        "{}",
        loaded(&first)
    );

    let addr = unused_addr();
    let host = BinHost::start(dir.path(), &toml.listen(addr).build(), addr, "serve-2.log").await;
    // The log is written a few milliseconds behind (a thread writes it out in bursts).
    let second = eventually(Duration::from_secs(5), "the second start's log", || async {
        let log = host.log();
        log.contains("plugin loaded").then(|| loaded(&log))
    })
    .await;
    assert!(second.contains("from_cache=true"), "{second}");
    assert_eq!(
        post_message(&host, TONY, json!({"type": "TASK"}))
            .await
            .status,
        202
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_to_a_route_that_does_not_exist_is_plugin_failed() {
    let peer = PeerServer::start().await;
    let toml = Toml::new()
        .peer("tony", &peer.url(), TONY)
        .route("tasks", "from", r#"["tony"]"#)
        .route("tasks", "types", r#"["TASK"]"#)
        .route("tasks", "agent", r#"{ command = ["true"] }"#)
        .route("tasks", "plugin", &quoted("task-schema.wasm"))
        .route_table(
            "tasks",
            "plugin_config",
            r#"route_by = "label"
routes = { frontend = "nowhere" }"#,
        )
        .build();
    let host = host_with(&toml, &[("task-schema", "task-schema.wasm")]).await;
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"label": "frontend"}}),
    )
    .await;
    assert_eq!((r.status, r.code()), (500, "plugin_failed"), "{:#}", r.json);
    assert_eq!(r.json["error"]["plugin"], "task-schema");
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("nowhere"), "{msg}");
    // Nothing was stored; an unlabelled TASK still goes through.
    assert_eq!(
        admin_get(&host, "/messages").await.json["messages"],
        json!([])
    );
    assert_eq!(
        post_message(&host, TONY, json!({"type": "TASK"}))
            .await
            .status,
        202
    );
    host.stop().await;
}

/// tony's TASKs go to `tasks`, whose plugin is the test-only shaper (it does what each payload
/// asks) with `limits`; the agent runs `command` and may reply STATUS or BREAKDOWN to tony. mel is
/// a known peer outside the route's reply_to.
async fn shaper_host(tony: &str, mel: &str, command: &str, limits: &str) -> Host {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shaper_wasm(), dir.path().join("shaper.wasm")).unwrap();
    let toml = Toml::new()
        .schedule(FAST_RETRIES)
        .peer("tony", tony, TONY)
        .peer("mel", mel, MEL)
        .agent_route(
            "tasks",
            &["tony"],
            &["TASK"],
            &["STATUS", "BREAKDOWN"],
            &["tony"],
        )
        .route("tasks", "agent", &format!("{{ command = {command} }}"))
        .route("tasks", "plugin", &quoted("shaper.wasm"))
        .route("tasks", "plugin_limits", limits)
        .build();
    start_host_in(&toml, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_that_failed_is_not_used_again() {
    let host = shaper_host(
        "http://127.0.0.1:9/message",
        "http://127.0.0.1:9/message",
        r#"["true"]"#,
        "{ warm_calls = 100 }",
    )
    .await;
    let call = |what: &'static str| {
        let host = &host;
        async move { post_message(host, TONY, json!({"type": "TASK", "payload": {"do": what}})).await }
    };
    let counted = |r: Resp| {
        assert_eq!(r.status, 400, "{:#}", r.json);
        r.json["error"]["message"].as_str().unwrap().to_owned()
    };
    assert_eq!(counted(call("count").await), "call 1");
    assert_eq!(
        counted(call("count").await),
        "call 2",
        "warm: the same instance"
    );
    let r = call("trap").await;
    assert_eq!((r.status, r.code()), (500, "plugin_failed"), "{:#}", r.json);
    assert_eq!(
        counted(call("count").await),
        "call 1",
        "the instance that trapped served the next call"
    );
    assert_eq!(counted(call("count").await), "call 2");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reply_may_rewrite_a_reply_but_not_send_it_outside_reply_to() {
    let (tony, mel) = (PeerServer::start().await, PeerServer::start().await);
    let rec = tempfile::tempdir().unwrap();
    // The agent's STATUS asks the plugin to turn it into a BREAKDOWN with another payload.
    let rewrite = json!({"rewrite_type": "BREAKDOWN", "rewrite_payload": {"steps": ["a", "b"]}});
    let command = record_command(
        rec.path(),
        &["--reply", "STATUS", "--payload", &rewrite.to_string()],
    );
    let host = shaper_host(&tony.url(), &mel.url(), &command, "{}").await;
    let id = send_task(&host).await;
    wait_turn_state(&host, &id, "done").await;
    let got = tony.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "BREAKDOWN", "{:#}", got[0].body);
    assert_eq!(got[0].body["payload"], json!({"steps": ["a", "b"]}));
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    host.stop().await;

    // This time the plugin names mel, a known peer but not in the route's reply_to.
    let stray = json!({"to": ["mel"]});
    let command = record_command(
        rec.path(),
        &["--reply", "STATUS", "--payload", &stray.to_string()],
    );
    let host = shaper_host(&tony.url(), &mel.url(), &command, "{}").await;
    let id = send_task(&host).await;
    let v = wait_turn_end(&host, ADMIN, &id).await;
    // agent.py exits 4 when /send refuses its reply, and prints the answer.
    assert_eq!(v["turn"]["exit_code"], 4, "{v:#}");
    let out = v["turn"]["stdout_tail"].as_str().unwrap();
    assert!(
        out.contains("send failed STATUS 500") && out.contains("plugin_failed"),
        "{out}"
    );
    assert!(out.contains("mel") && out.contains("reply_to"), "{out}");
    // Nothing went to mel; tony only hears that the turn failed.
    let notice = tony.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(notice[1].body["type"], "TURN_FAILED", "{notice:#?}");
    assert!(mel.attempts().is_empty(), "{:#?}", mel.attempts());
    host.stop().await;
}

/// README (`max_json_depth`): a plugin rewrite nested deeper than the limit is `plugin_failed`,
/// and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_nested_past_max_json_depth_is_plugin_failed() {
    let host = shaper_host(
        "http://127.0.0.1:9/message",
        "http://127.0.0.1:9/message",
        r#"["true"]"#,
        "{}",
    )
    .await;
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"do": "deepen", "levels": 65}}),
    )
    .await;
    assert_eq!((r.status, r.code()), (500, "plugin_failed"), "{:#}", r.json);
    let listed = admin_get(&host, "/messages").await.json;
    assert_eq!(listed["messages"], json!([]), "{listed:#}");
    // Within the limit, the rewrite is taken.
    let ok = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"do": "deepen", "levels": 10}}),
    )
    .await;
    assert_eq!(ok.status, 202, "{:#}", ok.json);
    host.stop().await;
}

/// README (the sandbox): a plugin gets no filesystem, environment or arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sees_no_file_directory_environment_or_argument() {
    let host = host_with(
        &hostile_config("probe", "", "http://127.0.0.1:9/message", r#"["true"]"#),
        &[("hostile", "hostile.wasm")],
    )
    .await;
    let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
    assert_eq!(
        (r.status, r.code()),
        (400, "plugin_rejected"),
        "{:#}",
        r.json
    );
    assert_eq!(
        r.json["error"]["message"], "file=denied dir=denied env=0 args=0",
        "{:#}",
        r.json
    );
    host.stop().await;
}

/// README (the sandbox): with `warm_calls`, up to 4 instances per plugin stay warm, one for each
/// call running at once: of 8 calls at once after 8 others, at most 4 find a warm instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_four_instances_of_a_plugin_stay_warm() {
    let host = shaper_host(
        "http://127.0.0.1:9/message",
        "http://127.0.0.1:9/message",
        r#"["true"]"#,
        "{ warm_calls = 100, deadline_ms = 5000 }",
    )
    .await;
    let round = || async {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let url = host.url("/message");
                tokio::spawn(async move {
                    let headers = [
                        ("x-shared-secret", TONY),
                        ("content-type", "application/json"),
                    ];
                    let body = json!({"type": "TASK", "payload": {"do": "slow-count"}});
                    let r = request("POST", &url, &headers, body.to_string()).await;
                    assert_eq!(r.status, 400, "{:#}", r.json);
                    r.json["error"]["message"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        let mut counts = Vec::new();
        for c in calls {
            counts.push(c.await.unwrap());
        }
        counts
    };
    let first = round().await;
    assert!(
        first.iter().all(|c| c == "call 1"),
        "the first 8 overlapped, each on a fresh instance: {first:?}"
    );
    let second = round().await;
    let warm = second.iter().filter(|c| *c == "call 2").count();
    assert!(
        (1..=4).contains(&warm),
        "{warm} of 8 found a warm instance: {second:?}"
    );
    host.stop().await;
}
