//! Agent turns: timeouts, concurrency and queue limits, failure notices, large prompts.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};

/// The usual route `tasks` (tony's TASKs, replying STATUS to tony) running `command`, with
/// `route_agent` as its `agent = { ... }` overrides.
fn config(peer_url: &str, command: &str, route_agent: &str) -> Toml {
    Toml::tasks(peer_url, command).route("tasks", "agent", &format!("{{ {route_agent} }}"))
}

async fn send(host: &Host, msg_type: &str, payload: Value) -> String {
    let ack = post_message(host, TONY, json!({"type": msg_type, "payload": payload})).await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    ack.id()
}

/// The one TURN_FAILED the peer got for `id`.
async fn failure_notice(peer: &PeerServer, id: &str) -> Received {
    eventually(
        Duration::from_secs(20),
        "a TURN_FAILED for the message",
        || async {
            peer.received()
                .into_iter()
                .find(|r| r.body["type"] == "TURN_FAILED" && r.body["in_reply_to"] == id)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_agents_children_too() {
    let peer = PeerServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("sleeper.pid");
    let command = agent_command(&["--fork-sleeper", path_str(&pidfile), "--sleep", "60"]);
    // Not 1 s: on a loaded machine python alone can take over a second to start, and the sleeper
    // must exist before the timeout for the test to mean anything.
    let host = start_host(
        &config(
            &peer.url(),
            &command,
            "timeout_secs = 3, kill_grace_secs = 1",
        )
        .build(),
    )
    .await;

    let id = send(&host, "TASK", json!({})).await;
    let pid: u32 = eventually(Duration::from_secs(20), "the sleeper's pid file", || {
        let pidfile = pidfile.clone();
        async move { std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok() }
    })
    .await;
    // Had the sleeper died while the turn still ran, the check below would prove nothing.
    let gone_early = process_is_gone(pid);
    let view = admin_get(&host, &format!("/messages/{id}")).await;
    assert!(
        !(gone_early && view.json["turn"]["state"] == "running"),
        "the sleeper died on its own: {:#}",
        view.json
    );

    let view = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(view["turn"]["state"], "timed_out", "{view:#}");
    eventually(
        Duration::from_secs(20),
        "the agent's forked child to be gone",
        || async move { process_is_gone(pid).then_some(()) },
    )
    .await;

    let notice = failure_notice(&peer, &id).await;
    assert_eq!(notice.body["payload"]["state"], "timed_out", "{notice:#?}");
    assert_eq!(notice.body["in_reply_to"], id.as_str());
    assert_eq!(notice.body["thread_id"], id.as_str());
    host.stop().await;
}

/// The pid an agent wrote to `file`, once it is there.
async fn pid_in(file: &std::path::Path) -> u32 {
    eventually(
        Duration::from_secs(20),
        "the sleeper's pid file",
        || async { std::fs::read_to_string(file).ok()?.trim().parse().ok() },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_left_the_agents_session_ends_with_its_turn() {
    let peer = PeerServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (done_file, timed_file) = (tmp.path().join("done.pid"), tmp.path().join("timed.pid"));
    // One agent ends on its own, one runs into its timeout; each leaves a setsid'd child that
    // ignores SIGTERM behind.
    let host = start_host(
        &config(
            &peer.url(),
            &agent_command(&[
                "--setsid-sleeper",
                path_str(&done_file),
                "--reply",
                "STATUS",
            ]),
            "timeout_secs = 3, kill_grace_secs = 1",
        )
        .route("slow", "from", r#"["tony"]"#)
        .route("slow", "types", r#"["SLOW"]"#)
        .route(
            "slow",
            "agent",
            &format!(
                "{{ command = {}, timeout_secs = 3, kill_grace_secs = 1 }}",
                agent_command(&["--setsid-sleeper", path_str(&timed_file), "--sleep", "60"])
            ),
        )
        .build(),
    )
    .await;
    let done = send(&host, "TASK", json!({})).await;
    let timed = send(&host, "SLOW", json!({})).await;
    let (done_pid, timed_pid) = (pid_in(&done_file).await, pid_in(&timed_file).await);
    let v = wait_turn_state(&host, &done, "done").await;
    assert!(
        process_is_gone(done_pid),
        "the setsid'd child is gone when the turn has ended: {v:#}"
    );
    let v = wait_turn_state(&host, &timed, "timed_out").await;
    assert!(process_is_gone(timed_pid), "{v:#}");
    // The agent's own exit status still reaches the record through its supervisor.
    assert_eq!(v["turn"]["signal"], 15, "ended by SIGTERM: {v:#}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_exit_code_and_signal_reach_the_turn_through_its_supervisor() {
    let peer = PeerServer::start().await;
    let host = start_host(
        &config(
            &peer.url(),
            &agent_command(&["--exit", "7"]),
            "timeout_secs = 20",
        )
        .build(),
    )
    .await;
    let id = send(&host, "TASK", json!({})).await;
    let v = wait_turn_state(&host, &id, "failed").await;
    assert_eq!(v["turn"]["exit_code"], 7, "{v:#}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_concurrent_agents_alive() {
    let peer = PeerServer::start().await;
    let running = tempfile::tempdir().unwrap();
    let command = agent_command(&["--running-dir", path_str(running.path()), "--sleep", "0.5"]);
    let host = start_host(&config(&peer.url(), &command, "max_concurrent = 2").build()).await;

    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(send(&host, "TASK", json!({ "n": i })).await);
    }
    for id in &ids {
        let view = wait_turn_end(&host, ADMIN, id).await;
        assert_eq!(view["turn"]["state"], "done", "{view:#}");
    }

    let mut seen = Vec::new();
    for id in &ids {
        let text = std::fs::read_to_string(running.path().join(format!("seen-{id}")))
            .unwrap_or_else(|e| panic!("seen-{id}: {e}"));
        seen.push(text.trim().parse::<u32>().unwrap());
    }
    assert!(
        seen.iter().all(|&n| n <= 2),
        "an agent saw more than max_concurrent = 2 running: {seen:?}"
    );
    assert!(
        seen.contains(&2),
        "no two agents ever overlapped, so the limit was not exercised: {seen:?}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_queue_full_with_retry_after() {
    let peer = PeerServer::start().await;
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let command = agent_command(&["--wait-for", path_str(&gate_file)]);
    let host =
        start_host(&config(&peer.url(), &command, "max_concurrent = 1, max_queued = 2").build())
            .await;

    // The first runs (blocked on the gate); the next two wait in the queue.
    let mut accepted = Vec::new();
    for i in 0..3 {
        accepted.push(send(&host, "TASK", json!({ "n": i })).await);
    }
    let full = post_message(&host, TONY, json!({"type": "TASK", "payload": {"n": 3}})).await;
    assert_eq!(full.status, 503, "{:#}", full.json);
    assert_eq!(full.code(), "queue_full", "{:#}", full.json);
    assert!(full.json["error"]["message"].is_string(), "{:#}", full.json);
    let retry_after = full
        .headers
        .get("retry-after")
        .expect("a Retry-After header on 503")
        .to_str()
        .unwrap();
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s > 0),
        "Retry-After: {retry_after:?}"
    );

    std::fs::write(&gate_file, b"go").unwrap();
    for id in &accepted {
        let view = wait_turn_end(&host, ADMIN, id).await;
        assert_eq!(view["turn"]["state"], "done", "{view:#}");
    }
    // The refused message left nothing behind.
    let all = admin_get(&host, "/messages?route=tasks").await;
    assert_eq!(
        all.json["messages"].as_array().unwrap().len(),
        3,
        "{:#}",
        all.json
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_turn_notifies_the_peer() {
    let peer = PeerServer::start().await;
    let command = agent_command(&["--exit", "3"]);
    let host = start_host(&config(&peer.url(), &command, "").build()).await;

    let id = send(&host, "TASK", json!({})).await;
    let view = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(view["turn"]["state"], "failed", "{view:#}");
    assert_eq!(view["turn"]["exit_code"], 3);

    let notice = failure_notice(&peer, &id).await;
    let body = &notice.body;
    assert_eq!(body["payload"]["state"], "failed", "{body:#}");
    assert_eq!(body["payload"]["exit_code"], 3, "{body:#}");
    assert_eq!(body["payload"]["error"], "agent_exited", "{body:#}");
    assert_eq!(body["in_reply_to"], id.as_str());
    assert_eq!(body["thread_id"], id.as_str());
    assert_eq!(body["hops"], 1);
    assert_eq!(notice.headers["x-shared-secret"], TONY);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_turn_on_an_ignore_route_notifies_nobody() {
    let peer = PeerServer::start().await;
    let command = agent_command(&["--exit", "3"]);
    let toml = config(&peer.url(), &command, "")
        .agent_route("quiet", &["tony"], &["QUIET"], &["STATUS"], &["tony"])
        .route("quiet", "agent", r#"{ on_failure = "ignore" }"#);
    let host = start_host(&toml.build()).await;

    let quiet_id = send(&host, "QUIET", json!({})).await;
    let view = wait_turn_end(&host, ADMIN, &quiet_id).await;
    assert_eq!(view["turn"]["state"], "failed", "{view:#}");
    assert_eq!(view["turn"]["exit_code"], 3);

    // A notifying route's failure afterwards proves the relay works: a notice for the quiet turn,
    // queued when it ended, would have reached the peer first.
    let loud_id = send(&host, "TASK", json!({})).await;
    failure_notice(&peer, &loud_id).await;
    let view = admin_get(&host, &format!("/messages/{quiet_id}")).await;
    assert_eq!(
        view.json["replies"],
        json!([]),
        "nothing may be queued for an ignored failure: {:#}",
        view.json
    );
    let about_quiet: Vec<_> = peer
        .received()
        .into_iter()
        .filter(|r| r.body["in_reply_to"] == quiet_id.as_str())
        .collect();
    assert!(about_quiet.is_empty(), "{about_quiet:#?}");
    assert_eq!(peer.received().len(), 1, "{:#?}", peer.received());
    host.stop().await;
}

/// `TURN_FAILED`'s `error` is documented as the code part of the turn's `code: detail` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_notices_carry_a_stable_error_code() {
    let peer = PeerServer::start().await;
    let command = agent_command(&["--sleep", "60"]);
    let toml = config(
        &peer.url(),
        &command,
        "timeout_secs = 1, kill_grace_secs = 1",
    )
    .agent_route("missing", &["tony"], &["MISSING"], &["STATUS"], &["tony"])
    .route(
        "missing",
        "agent",
        r#"{ command = ["/nonexistent/agent-inbox-test-agent"] }"#,
    );
    let host = start_host(&toml.build()).await;

    let mut wrong = Vec::new();
    for (msg_type, code) in [("TASK", "timed_out"), ("MISSING", "spawn_failed")] {
        let id = send(&host, msg_type, json!({})).await;
        let view = wait_turn_end(&host, ADMIN, &id).await;
        let error = view["turn"]["error"].as_str().unwrap_or("");
        if !error.starts_with(&format!("{code}:")) {
            wrong.push(format!(
                "{msg_type}: turn error {error:?}, want `{code}: detail`"
            ));
        }
        let notice = failure_notice(&peer, &id).await;
        if notice.body["payload"]["error"] != code {
            wrong.push(format!(
                "{msg_type}: TURN_FAILED payload.error {}, want {code:?}",
                notice.body["payload"]["error"]
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    host.stop().await;
}

/// A turn whose agent exits non-zero says why: the peer gets the exit code and a stable code,
/// the admin also the last stderr line, and the peer that line only on a route that opts in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_failed_carries_the_reason_and_stderr_only_where_a_route_opts_in() {
    let peer = PeerServer::start().await;
    let command = agent_command(&[
        "--stderr",
        "first words",
        "--stderr",
        "db password rejected",
        "--exit",
        "7",
    ]);
    let toml = config(&peer.url(), &command, "")
        .agent_route("open", &["tony"], &["OPEN"], &["STATUS"], &["tony"])
        .route("open", "agent", r#"{ on_failure = "notify_with_stderr" }"#);
    let host = start_host(&toml.build()).await;

    let closed = send(&host, "TASK", json!({})).await;
    let view = wait_turn_end(&host, ADMIN, &closed).await;
    assert_eq!(view["turn"]["state"], "failed", "{view:#}");
    let error = view["turn"]["error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("agent_exited:")
            && error.contains("status 7")
            && error.ends_with("db password rejected"),
        "the admin sees the code, the status and the last stderr line: {view:#}"
    );
    let notice = failure_notice(&peer, &closed).await;
    let payload = &notice.body["payload"];
    assert_eq!(payload["error"], "agent_exited", "{payload:#}");
    assert_eq!(payload["exit_code"], 7, "{payload:#}");
    assert!(
        payload.get("detail").is_none(),
        "stderr stays home by default: {payload:#}"
    );
    assert!(
        !notice.body.to_string().contains("password"),
        "{:#}",
        notice.body
    );

    let open = send(&host, "OPEN", json!({})).await;
    wait_turn_end(&host, ADMIN, &open).await;
    let notice = failure_notice(&peer, &open).await;
    let payload = &notice.body["payload"];
    assert_eq!(payload["error"], "agent_exited", "{payload:#}");
    assert_eq!(payload["detail"], "db password rejected", "{payload:#}");
    host.stop().await;
}

/// 200 KiB of text with distinct ends, so a cut anywhere shows.
fn big_text() -> String {
    let mut s = String::from("BEGIN-");
    let mut i = 0u32;
    while s.len() < 200 * 1024 - 4 {
        s.push_str(&format!("{i:07} "));
        i += 1;
    }
    s.truncate(200 * 1024 - 4);
    s.push_str("-END");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_of_200_kib_reaches_the_agent_through_prompt_file() {
    let peer = PeerServer::start().await;
    let record = tempfile::tempdir().unwrap();
    let command = agent_command(&[
        "--prompt-file",
        "{prompt_file}",
        "--record",
        path_str(record.path()),
    ]);
    let host = start_host(&config(&peer.url(), &command, "").build()).await;

    let text = big_text();
    assert_eq!(text.len(), 200 * 1024);
    let id = send(&host, "TASK", json!({ "text": text })).await;
    let view = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(view["turn"]["state"], "done", "{view:#}");
    let rec = read_record(record.path(), &id).await;
    let prompt = rec["prompt"].as_str().expect("the agent read a prompt");
    assert!(
        prompt.contains(&text),
        "the prompt ({} bytes) does not hold the whole 200 KiB string",
        prompt.len()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_of_200_kib_as_an_argument_fails_as_prompt_too_large() {
    let peer = PeerServer::start().await;
    let command = agent_command(&["--prompt", "{prompt}"]);
    let host = start_host(&config(&peer.url(), &command, "").build()).await;

    let id = send(&host, "TASK", json!({ "text": big_text() })).await;
    let view = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(view["turn"]["state"], "failed", "{view:#}");
    let error = view["turn"]["error"].as_str().unwrap_or("");
    assert!(error.starts_with("prompt_too_large"), "{error:?}");
    assert!(error.contains("{prompt_file}"), "{error:?}");
    let notice = failure_notice(&peer, &id).await;
    assert_eq!(notice.body["payload"]["error"], "prompt_too_large");
    host.stop().await;
}
