//! WebAssembly plugins, built from `plugins/` by the tests: check, rewrite, route, reject; reply
//! instructions; reply checks and peer choice; hostile plugins contained.

use std::time::{Duration, Instant};

use agent_inbox_tests::*;
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret";
const TONY: &str = "tony-secret";
const MEL: &str = "mel-secret";

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

fn schema_config(peer: &str, tasks_cmd: &str, frontend_cmd: &str) -> String {
    format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [peers.tony]
        url = "{peer}"
        secret = "{TONY}"
        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        agent = {{ command = {tasks_cmd} }}
        plugin = "task-schema.wasm"
        [routes.tasks.plugin_config]
        required = {{ title = "string" }}
        max_len = {{ title = 20 }}
        defaults = {{ priority = 3 }}
        route_by = "label"
        routes = {{ frontend = "frontend-tasks" }}
        [routes.frontend-tasks]
        from = ["tony"]
        types = ["TASK"]
        internal = true
        agent = {{ command = {frontend_cmd} }}
        [routes.notes]
        from = ["tony"]
        types = ["NOTE"]
        mailbox = true
        "#
    )
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
    let listed = admin_get(&host, ADMIN, "/messages").await.json;
    assert_eq!(
        listed["messages"].as_array().unwrap().len(),
        3,
        "rejected messages are not stored"
    );

    // The internal route cannot be reached directly: TASK from tony still goes through tasks.
    let r = post_message(&host, TONY, json!({"type": "NOTE", "payload": {}})).await;
    assert_eq!(
        r.status, 202,
        "routes without a plugin keep the built-in behaviour"
    );
    host.stop().await;
}

fn instructions_config(peer_tony: &str, peer_mel: &str, command: &str) -> String {
    format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [peers.tony]
        url = "{peer_tony}"
        secret = "{TONY}"
        [peers.mel]
        url = "{peer_mel}"
        secret = "{MEL}"
        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["BREAKDOWN", "STATUS"]
        reply_to = ["tony", "mel"]
        agent = {{ command = {command} }}
        plugin = "reply-instructions.wasm"
        [routes.tasks.plugin_config]
        preamble = "Réponds en français, s'il te plaît."
        examples = {{ BREAKDOWN = {{ steps = ["…"] }} }}
        to_by_type = {{ STATUS = ["tony"] }}
        "#
    )
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
    wait_turn_end(&host, ADMIN, &id).await;

    let prompt = read_prompt(rec.path(), &id);
    for want in [
        "Réponds en français, s'il te plaît.",
        &format!("curl -s -X POST '{}'", host.url("/send")),
        "-H 'Authorization: Bearer rt_",
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
    let types = |got: &[Received]| {
        got.iter()
            .map(|r| r.body["type"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(types(&got_tony), ["STATUS", "BREAKDOWN"]);
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
    let toml = format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [peers.tony]
        url = "{}"
        secret = "{TONY}"
        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["BREAKDOWN"]
        reply_to = ["tony"]
        agent = {{ command = {command} }}
        plugin = "task-schema.wasm"
        "#,
        peer.url()
    );
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

fn hostile_config(mode: &str, render: &str, peer: &str, command: &str) -> String {
    format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [peers.tony]
        url = "{peer}"
        secret = "{TONY}"
        [routes.hostile]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["DONE"]
        reply_to = ["tony"]
        agent = {{ command = {command} }}
        plugin = "hostile.wasm"
        plugin_config = {{ mode = "{mode}", render = "{render}" }}
        [routes.notes]
        from = ["tony"]
        types = ["NOTE"]
        mailbox = true
        "#
    )
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
            std::fs::write(&path, hostile_config(mode, "", &peer.url(), command)).unwrap();
            eventually(Duration::from_secs(5), "the reload", || async {
                (admin_get(&host, ADMIN, "/status").await.json["reloads_ok"] == i as u64)
                    .then_some(())
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
        assert!(
            took < Duration::from_secs(2),
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
    std::fs::write(&path, hostile_config("accept", "", &peer.url(), command)).unwrap();
    let r = eventually(Duration::from_secs(5), "the good config", || async {
        let r = post_message(&host, TONY, json!({"type": "TASK"})).await;
        (r.status == 202).then_some(r)
    })
    .await;
    wait_turn_end(&host, ADMIN, r.json["id"].as_str().unwrap()).await;
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
    let st = eventually(Duration::from_secs(5), "the failed reload", || async {
        let st = admin_get(&host, ADMIN, "/status").await.json;
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
    let r = eventually(Duration::from_secs(5), "the new plugin", || async {
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
    let err = agent_inbox::run(config, listener, std::future::pending())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("routes.notes.plugin") && msg.contains("broken"),
        "{msg}"
    );
}
