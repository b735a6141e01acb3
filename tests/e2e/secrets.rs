//! Secrets: an agent never sees a peer's secret or the admin secret, and no secret or reply token
//! shows up in the log or in an error body.
//!
//! The inbox runs as its own process ([`BinHost`]) so its secrets come from its environment
//! (`secret_env`, `admin_secret_env`) and its log is a file we can read.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

/// Secrets only the inbox's environment holds, long and distinct so a leak cannot hide.
const TONY_ENV: &str = "tony-env-secret-3f9a1c7e5b2d";
const MEL_ENV: &str = "mel-env-secret-8e4b0a6c2f1d";
const ADMIN_ENV: &str = "admin-env-secret-5c7d9e1f3a2b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_agents_logs_and_error_bodies() {
    let peer = PeerServer::start().await;
    // mel's first delivery fails, so the relay's error path is logged too.
    let mel = PeerServer::start().await;
    mel.script([500]);
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let addr = unused_addr();
    let toml = Toml::tasks(
        &peer.url(),
        &agent_command(&["--record", path_str(&record), "--reply", "STATUS"]),
    )
    .listen(addr)
    .without_server("admin_secret")
    .server("admin_secret_env", &quoted("INBOX_TEST_ADMIN"))
    .peer_env("tony", &peer.url(), "INBOX_TEST_TONY")
    .peer_env("mel", &mel.url(), "INBOX_TEST_MEL")
    .route("tasks", "reply_to", &toml_list(&["tony", "mel"]))
    .build();
    let env = [
        ("INBOX_TEST_TONY", TONY_ENV),
        ("INBOX_TEST_MEL", MEL_ENV),
        ("INBOX_TEST_ADMIN", ADMIN_ENV),
        ("RUST_LOG", "debug"),
    ];
    let host = BinHost::start_with_env(dir.path(), &toml, addr, "serve.log", &env).await;

    let mut bodies = Vec::new();
    let ack = post_message(&host, TONY_ENV, json!({"type": "TASK"})).await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    let id = ack.id();
    let rec = read_record(&record, &id).await;
    let token = rec["env"]["INBOX_REPLY_TOKEN"].as_str().unwrap().to_owned();
    assert!(token.starts_with("rt_"), "{rec:#}");
    // Both replies are relayed (mel's after a retry): the relay signed them with the secrets.
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].headers["x-shared-secret"], TONY_ENV);
    let got = mel.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].headers["x-shared-secret"], MEL_ENV);

    // The agent saw no secret: not by the variable's name, not by its value.
    let environ = rec["environ"].as_object().expect("the agent's environment");
    for var in ["INBOX_TEST_TONY", "INBOX_TEST_MEL", "INBOX_TEST_ADMIN"] {
        assert!(!environ.contains_key(var), "the agent got {var}");
    }
    let everything = rec.to_string();
    for secret in [TONY_ENV, MEL_ENV, ADMIN_ENV] {
        assert!(!everything.contains(secret), "the agent saw {secret}");
    }

    // Error answers that involve a secret or a token.
    let wrong = post_message(&host, &format!("{TONY_ENV}x"), json!({"type": "TASK"})).await;
    bodies.push(wrong);
    bodies.push(post_message(&host, TONY_ENV, json!({"type": "NOPE"})).await);
    bodies.push(post_message(&host, ADMIN_ENV, json!({"type": "TASK"})).await);
    bodies.push(post_send(&host, Some(&format!("{token}x")), r#"{"type": "STATUS"}"#).await);
    bodies.push(post_send(&host, Some(&token), r#"{"type": "NOPE"}"#).await);
    bodies.push(post_send(&host, Some(&token), "{not json").await);
    bodies.push(post_send(&host, Some(TONY_ENV), r#"{"type": "STATUS"}"#).await);
    bodies.push(
        request(
            "GET",
            &host.url("/messages"),
            &[("authorization", &format!("Bearer {TONY_ENV}"))],
            "",
        )
        .await,
    );
    let auth = format!("Bearer {ADMIN_ENV}");
    bodies.push(
        request(
            "POST",
            &host.url("/admin/send"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            json!({"to": "ghost", "type": "TASK"}).to_string(),
        )
        .await,
    );
    // The views an admin reads: the message, its turn and its deliveries (with mel's error).
    bodies.push(
        request(
            "GET",
            &host.url(&format!("/messages/{id}")),
            &[("authorization", &auth)],
            "",
        )
        .await,
    );
    // Each answer is the one its request must get (a secret in a 500 would pass otherwise).
    let statuses: Vec<u16> = bodies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [401, 422, 401, 401, 422, 400, 401, 401, 400, 200],
        "{bodies:#?}"
    );
    for r in &bodies {
        for secret in [TONY_ENV, MEL_ENV, ADMIN_ENV, token.as_str()] {
            assert!(
                !r.text.contains(secret),
                "{secret:?} in an answer: {} {}",
                r.status,
                r.text
            );
        }
    }

    // Nor in the log, at debug level, through a whole turn, relay retries and errors.
    let log_path = host.log_path.clone();
    host.stop();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("listening"), "the log was written: {log}");
    for secret in [TONY_ENV, MEL_ENV, ADMIN_ENV, token.as_str()] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    // The part after rt_ alone is the secret part of the token.
    assert!(
        !log.contains(&token["rt_".len()..]),
        "the token in the log:\n{log}"
    );
}

/// README (rotation): with `secret_env = [NEW, OLD]` the inbox accepts either and sends the new
/// one; with `admin_secret_env = [NEW, OLD]` the CLI uses the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_rotation_the_relay_sends_the_new_secret_and_the_cli_uses_the_first() {
    const NEW: &str = "tony-new-secret-71c2";
    const OLD: &str = "tony-old-secret-0a9d";
    const ADMIN_NEW: &str = "admin-new-secret-5e13";
    const ADMIN_OLD: &str = "admin-old-secret-b7f0";
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let rotating = |admin: &[&str]| {
        Toml::tasks(&peer.url(), &agent_command(&["--reply", "STATUS"]))
            .listen(addr)
            .without_server("admin_secret")
            .server("admin_secret_env", &toml_list(admin))
            .peer_env("tony", &peer.url(), "TONY_NEW")
            .peer_key("tony", "secret_env", &toml_list(&["TONY_NEW", "TONY_OLD"]))
            .build()
    };
    let env = [
        ("TONY_NEW", NEW),
        ("TONY_OLD", OLD),
        ("ADMIN_NEW", ADMIN_NEW),
        ("ADMIN_OLD", ADMIN_OLD),
    ];
    // The server accepts only the new admin secret; the CLI's config lists both.
    let host = BinHost::start_with_env(
        dir.path(),
        &rotating(&["ADMIN_NEW"]),
        addr,
        "serve.log",
        &env,
    )
    .await;
    for secret in [NEW, OLD] {
        let ack = post_message(&host, secret, json!({"type": "TASK"})).await;
        assert_eq!(ack.status, 202, "{secret}: {:#}", ack.json);
    }
    let got = peer.wait_for(2, Duration::from_secs(30)).await;
    assert!(
        got.iter().all(|r| r.headers["x-shared-secret"] == NEW),
        "the relay sent the old secret"
    );
    let cli_config = dir.path().join("cli.toml");
    write_by_rename(&cli_config, rotating(&["ADMIN_NEW", "ADMIN_OLD"]));
    let out = tokio::process::Command::new(bin())
        .args(["status", "--config"])
        .arg(&cli_config)
        .envs(env)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the CLI did not use the first admin secret: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.stop();
}

/// Every `*_env` secret may be a `*_file` (systemd credentials, container secrets): read at start
/// and at every reload, so rewriting the file and reloading rotates it, though the config text,
/// and so the config hash clients see, is unchanged. `check` warns about a file others may read
/// and refuses one others may write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_files_rotate_with_a_reload_and_are_checked_for_who_may_write_them() {
    use std::os::unix::fs::PermissionsExt as _;
    const OLD: &str = "tony-file-secret-old-41d7";
    const NEW: &str = "tony-file-secret-new-93b2";
    const ADMIN_FILE: &str = "admin-file-secret-6a0e";
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, value: &str, mode: u32| {
        let path = dir.path().join(name);
        let tmp = dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    put("admin.secret", ADMIN_FILE, 0o600);
    put("tony.secret", OLD, 0o600);
    let addr = unused_addr();
    let toml = Toml::notes()
        .listen(addr)
        .without_server("admin_secret")
        .server("admin_secret_file", "\"admin.secret\"")
        .peer_key("tony", "secret_file", "\"tony.secret\"")
        .build()
        .replace(&format!("secret = \"{TONY}\"\n"), "");
    let host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
    let config = dir.path().join("routes.toml");
    let note = json!({"type": "NOTE"});
    assert_eq!(post_message(&host, OLD, note.clone()).await.status, 202);
    let (code, status, err) = cli_with_config(&config, &["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let hash =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["config_hash"].clone();

    // The rotation: the file is rewritten, then the inbox reloads.
    put("tony.secret", NEW, 0o600);
    let (code, out, err) = cli_with_config(&config, &["reload"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("reloaded"),
        "a changed secret file is a change: {out}"
    );
    assert_eq!(post_message(&host, NEW, note.clone()).await.status, 202);
    assert_eq!(post_message(&host, OLD, note.clone()).await.status, 401);
    let (_, after, _) = cli_with_config(&config, &["status", "--json"]).await;
    assert_eq!(
        hash(&status),
        hash(&after),
        "the hash clients see is the text's"
    );

    // check: others may read it, a warning; others may write it, refused.
    std::fs::set_permissions(
        dir.path().join("tony.secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, out, err) = cli_with_config(&config, &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("peers.tony.secret_file: others may read tony.secret"),
        "{out}{err}"
    );
    std::fs::set_permissions(
        dir.path().join("tony.secret"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let (code, out, err) = cli_with_config(&config, &["check"]).await;
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("others may write it"),
        "{out}{err}"
    );
    let log = host.log();
    for secret in [OLD, NEW, ADMIN_FILE] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
    host.stop();
}
