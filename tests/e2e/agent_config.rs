//! The `[agent]` settings as config sets them: a program path relative to routes.toml, the
//! working directory, `stdin`, `output_cap_bytes`, and a `types = ["*"]` fallback route.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_program_runs_from_the_config_dir_in_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    // agents/where.sh, relative to routes.toml (the test process runs elsewhere).
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    let script = dir.path().join("agents").join("where.sh");
    std::fs::write(&script, "#!/bin/sh\npwd > \"$INBOX_MESSAGE_ID.cwd\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(std::env::current_dir().unwrap(), dir.path());
    let toml = Toml::tasks("http://127.0.0.1:9/message", r#"["agents/where.sh"]"#).build();
    let host = start_host_in(&toml, dir).await;
    let id = send_task(&host).await;
    wait_turn_state(&host, &id, "done").await;
    // The file went into the agent's working directory: routes.toml's.
    let written = host.dir.path().join(format!("{id}.cwd"));
    let cwd =
        std::fs::read_to_string(&written).unwrap_or_else(|e| panic!("{}: {e}", written.display()));
    assert_eq!(
        std::fs::canonicalize(cwd.trim()).unwrap(),
        std::fs::canonicalize(host.dir.path()).unwrap()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_true_pipes_the_prompt_and_false_gives_nothing() {
    let record = tempfile::tempdir().unwrap();
    // agent.py reads its prompt from stdin when given neither --prompt nor --prompt-file.
    let command = agent_command(&["--record", path_str(record.path())]);
    let toml = Toml::tasks("http://127.0.0.1:9/message", &command)
        .agent_route("piped", &["tony"], &["PIPED"], &["STATUS"], &["tony"])
        .route("piped", "agent", "{ stdin = true }")
        .build();
    let host = start_host(&toml).await;
    let plain = send_task(&host).await;
    let ack = post_message(
        &host,
        TONY,
        json!({"type": "PIPED", "payload": {"marker": "through-stdin"}}),
    )
    .await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    let piped = ack.id();
    wait_turn_state(&host, &plain, "done").await;
    wait_turn_state(&host, &piped, "done").await;
    let prompt = read_record(record.path(), &piped).await["prompt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(prompt.contains("through-stdin"), "{prompt}");
    assert!(prompt.contains("Valid types: STATUS."), "{prompt}");
    let none = read_record(record.path(), &plain).await;
    assert_eq!(none["prompt"], "", "stdin = false is empty: {none:#}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_cap_bytes_keeps_the_end_of_stdout_and_stderr() {
    let command = agent_command(&["--print-bytes", "5000"]);
    let toml = Toml::tasks("http://127.0.0.1:9/message", &command)
        .agent("output_cap_bytes", "1000")
        .build();
    let host = start_host(&toml).await;
    let id = send_task(&host).await;
    let v = wait_turn_state(&host, &id, "done").await;
    for tail in ["stdout_tail", "stderr_tail"] {
        let text = v["turn"][tail].as_str().unwrap_or("");
        assert!(
            (900..=1000).contains(&text.len()),
            "{tail}: {} bytes kept of 5000 with output_cap_bytes = 1000",
            text.len()
        );
        assert!(text.ends_with("TAIL"), "{tail} keeps the end: {text:?}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_route_takes_the_types_no_other_route_names() {
    let peer = PeerServer::start().await;
    let record = tempfile::tempdir().unwrap();
    let command = agent_command(&["--record", path_str(record.path()), "--reply", "STATUS"]);
    let toml = Toml::new()
        .command(&command)
        .schedule(FAST_RETRIES)
        .peer("tony", &peer.url(), TONY)
        .peer("mel", &peer.url(), MEL)
        .agent_route("anything", &["tony"], &["*"], &["STATUS"], &["tony"])
        .mailbox("notes", &["tony", "mel"], &["NOTE"])
        .build();
    let host = start_host(&toml).await;
    let id = send_type(&host, "WHATEVER").await;
    let v = wait_turn_state(&host, &id, "done").await;
    assert_eq!(v["message"]["route"], "anything", "{v:#}");
    assert_eq!(v["message"]["type"], "WHATEVER", "{v:#}");
    let rec = read_record(record.path(), &id).await;
    assert_eq!(rec["env"]["INBOX_MESSAGE_TYPE"], "WHATEVER");
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    // A type another route names still goes there.
    let note = send_type(&host, "NOTE").await;
    assert_eq!(view(&host, &note).await["message"]["route"], "notes");
    // The fallback is tony's only: mel gets unknown_type for what tony may send.
    let r = post_message(&host, MEL, json!({"type": "WHATEVER"})).await;
    assert_eq!((r.status, r.code()), (422, "unknown_type"), "{:#}", r.json);
    host.stop().await;
}
