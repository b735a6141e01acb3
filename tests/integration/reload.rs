//! Hot reload of routes.toml: new rules take effect without a restart; a broken file changes nothing.
//!
//! Every wait polls for up to 5 s; nothing asserts a tighter wall-clock bound.

use std::path::Path;
use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

const ADMIN: &str = "admin-secret";
const TONY: &str = "tony-secret";

fn config(types: &str) -> String {
    format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [peers.tony]
        url = "http://127.0.0.1:9/message"
        secret = "{TONY}"
        [routes.inbox]
        from = ["tony"]
        types = {types}
        mailbox = true
        "#
    )
}

async fn status_of(host: &Host) -> serde_json::Value {
    admin_get(host, ADMIN, "/status").await.json
}

/// `POST /admin/reload` with the admin secret.
async fn admin_reload(host: &Host) -> Resp {
    let auth = format!("Bearer {ADMIN}");
    request(
        "POST",
        &host.url("/admin/reload"),
        &[("authorization", &auth)],
        "",
    )
    .await
}

/// Waits for the host's first look at its files, made once its watch is in place, and returns how
/// many checks it has made. An edit before that may be seen half-written by that first look (an
/// empty routes.toml is a valid config) and counted as one more reload.
async fn watching(host: &Host) -> u64 {
    eventually(Duration::from_secs(5), "the watch to start", || async {
        let n = status_of(host).await["checks"].as_u64().unwrap_or(0);
        (n >= 1).then_some(n)
    })
    .await
}

/// Polls until a message of `msg_type` gets `want` (202 or 422), for up to 5 s.
async fn until_type_answers(host: &Host, msg_type: &str, want: u16) -> Resp {
    eventually(
        Duration::from_secs(5),
        &format!("{msg_type} to answer {want}"),
        || async {
            let r = post_message(host, TONY, json!({"type": msg_type})).await;
            (r.status == want).then_some(r)
        },
    )
    .await
}

fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_type_is_accepted_without_a_restart() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let before = post_message(&host, TONY, json!({"type": "TASK"})).await;
    assert_eq!((before.status, before.code()), (422, "unknown_type"));
    let old_hash = before.headers["x-config-hash"].to_str().unwrap().to_owned();
    watching(&host).await;
    std::fs::write(
        host.dir.path().join("routes.toml"),
        config(r#"["NOTE", "TASK"]"#),
    )
    .unwrap();
    let after = until_type_answers(&host, "TASK", 202).await;
    let new_hash = after.headers["x-config-hash"].to_str().unwrap().to_owned();
    assert_ne!(new_hash, old_hash, "the answer names the new config");
    let st = status_of(&host).await;
    assert_eq!(st["config_hash"], new_hash.as_str());
    assert_eq!(st["reloads_ok"], 1);
    assert_eq!(st["last_reload_error"], serde_json::Value::Null);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_old_config_and_says_why() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let path = host.dir.path().join("routes.toml");
    let hash = status_of(&host).await["config_hash"].clone();

    // TOML syntax error.
    std::fs::write(&path, "[server\nthis is not toml").unwrap();
    let st = eventually(Duration::from_secs(5), "the failed reload", || async {
        let st = status_of(&host).await;
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
    std::fs::write(
        &path,
        config(r#"["NOTE"]"#).replace(r#"from = ["tony"]"#, r#"from = ["ghost"]"#),
    )
    .unwrap();
    let st = eventually(
        Duration::from_secs(5),
        "the second failed reload",
        || async {
            let st = status_of(&host).await;
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
    std::fs::write(&path, config(r#"["NOTE", "TASK"]"#)).unwrap();
    until_type_answers(&host, "TASK", 202).await;
    let st = status_of(&host).await;
    assert_eq!(st["last_reload_error"], serde_json::Value::Null);
    assert_eq!(st["reloads_ok"], 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_by_rename_is_picked_up() {
    let host = start_host(&config(r#"["NOTE"]"#)).await;
    let path = host.dir.path().join("routes.toml");
    write_by_rename(&path, &config(r#"["NOTE", "TASK"]"#));
    until_type_answers(&host, "TASK", 202).await;
    // And again: the watch survived the first rename.
    write_by_rename(&path, &config(r#"["NOTE", "TASK", "PING"]"#));
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
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status_of(&host).await;
    assert_eq!(
        st["checks"],
        base + 1,
        "only the explicit reload read the files: {st}"
    );
    // A real edit is still one check (plus nothing afterwards).
    write_by_rename(
        &host.dir.path().join("routes.toml"),
        &config(r#"["NOTE", "TASK"]"#),
    );
    until_type_answers(&host, "TASK", 202).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status_of(&host).await;
    assert_eq!(st["reloads_ok"], 1);
    assert_eq!(st["checks"], base + 2, "one check for the edit: {st}");
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
    std::fs::write(&path, config(r#"["TASK"]"#)).unwrap();
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
    std::fs::write(host.dir.path().join("routes.toml"), "[peers.x]\nurl = 5\n").unwrap();
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
    let with_route = |route: &str| {
        format!(
            r#"
            [server]
            admin_secret = "{ADMIN}"
            [agent]
            command = ["python3", "{script}", "--wait-for", "{gate}"]
            max_concurrent = 1
            [peers.tony]
            url = "{peer}"
            secret = "{TONY}"
            [routes.notes]
            from = ["tony"]
            types = ["NOTE"]
            mailbox = true
            {route}
            "#,
            script = agent_script(),
            gate = gate.display(),
            peer = peer.url(),
        )
    };
    let tasks = "[routes.tasks]\nfrom = [\"tony\"]\ntypes = [\"TASK\"]";
    let host = start_host(&with_route(tasks)).await;
    let first = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .json["id"]
        .clone();
    let second = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .json["id"]
        .clone();
    let (first, second) = (first.as_str().unwrap(), second.as_str().unwrap());
    eventually(Duration::from_secs(5), "the first turn to run", || async {
        let v = admin_get(&host, ADMIN, &format!("/messages/{first}"))
            .await
            .json;
        (v["turn"]["state"] == "running").then_some(())
    })
    .await;

    std::fs::write(host.dir.path().join("routes.toml"), with_route("")).unwrap();
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
    // The sender hears about it, since the route's reply_to went with the route.
    let got = peer.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED");
    assert_eq!(got[0].body["in_reply_to"], second);
    assert_eq!(got[0].body["payload"]["error"], "route_removed");
    host.stop().await;
}
