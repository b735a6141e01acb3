//! The whole message loop: message → ack → turn → /send → relay to the peer.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

/// Route `tasks` (tony's TASKs) whose agent runs `command` and may reply BREAKDOWN or STATUS.
fn config(peer_url: &str, command: &str) -> String {
    Toml::tasks(peer_url, command)
        .route("tasks", "reply_types", &toml_list(&["BREAKDOWN", "STATUS"]))
        .schedule(&["0s", "200ms", "200ms", "200ms", "200ms", "200ms"])
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_loop_delivers_the_reply_with_thread_and_in_reply_to() {
    let peer = PeerServer::start().await;
    let record = tempfile::tempdir().unwrap();
    let command = format!(
        r#"["python3", "{}", "--prompt", "{{prompt}}", "--record", "{}", "--reply", "STATUS", "--reply", "BREAKDOWN"]"#,
        agent_script(),
        record.path().display()
    );
    let host = start_host(&config(&peer.url(), &command)).await;

    let ack = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "split the work"}, "id": "tony-1"}),
    )
    .await;
    assert_eq!(ack.status, 202, "{:?}", ack.json);
    assert_eq!(ack.json["status"], "received");
    let id = ack.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ack.json["thread_id"],
        id.as_str(),
        "a new message starts its own thread"
    );

    let got = peer.wait_for(2, Duration::from_secs(30)).await;
    let types: Vec<&str> = got
        .iter()
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["STATUS", "BREAKDOWN"]);
    for r in &got {
        assert_eq!(r.body["in_reply_to"], id.as_str());
        assert_eq!(r.body["thread_id"], id.as_str());
        assert_eq!(r.body["hops"], 1);
        assert_eq!(r.headers["x-shared-secret"], TONY);
        assert_eq!(r.headers["idempotency-key"], r.body["id"].as_str().unwrap());
        assert_eq!(r.body["payload"]["from_message"], id.as_str());
    }

    let view = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(view["turn"]["state"], "done", "{view:#}");
    assert_eq!(view["turn"]["exit_code"], 0);
    assert_eq!(view["message"]["sender_ref"], "tony-1");
    let replies = view["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 2);
    for r in replies {
        assert_eq!(r["deliveries"][0]["state"], "delivered", "{r:#}");
        assert_eq!(r["deliveries"][0]["attempts"], 1);
    }

    // The agent saw the reply instructions and its env, but no peer secret.
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(record.path().join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    let prompt = rec["prompt"].as_str().unwrap();
    let token = rec["env"]["INBOX_REPLY_TOKEN"].as_str().unwrap();
    assert!(
        prompt.contains(&format!("curl -s -X POST {}", host.url("/send"))),
        "{prompt}"
    );
    // The token is in a private header file the curl reads (`-H @file`), never in the prompt
    // (which `{prompt}` puts in the agent's argv).
    assert!(!prompt.contains(token), "{prompt}");
    let file = rec["env"]["INBOX_REPLY_AUTH_FILE"].as_str().unwrap();
    assert!(prompt.contains(&format!("-H '@{file}'")), "{prompt}");
    assert!(
        prompt.contains("Valid types: BREAKDOWN, STATUS."),
        "{prompt}"
    );
    assert!(prompt.contains("split the work"), "{prompt}");
    assert!(!prompt.contains(TONY) && !rec["argv"].to_string().contains(TONY));
    assert_eq!(rec["env"]["INBOX_MESSAGE_ID"], id.as_str());
    assert_eq!(rec["env"]["INBOX_THREAD_ID"], id.as_str());
    assert_eq!(rec["env"]["INBOX_ROUTE"], "tasks");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_comes_back_while_the_agent_is_blocked() {
    let peer = PeerServer::start().await;
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let command = format!(
        r#"["python3", "{}", "--wait-for", "{}", "--reply", "BREAKDOWN"]"#,
        agent_script(),
        gate_file.display()
    );
    let host = start_host(&config(&peer.url(), &command)).await;
    let ack = post_message(&host, TONY, json!({"type": "TASK"})).await;
    assert_eq!(ack.status, 202);
    let id = ack.json["id"].as_str().unwrap().to_owned();
    // The ack came while the agent still waits for a file that only gets created below (had the
    // ack waited for the agent, the request would have timed out above).
    let view = admin_get(&host, &format!("/messages/{id}")).await;
    assert!(
        matches!(
            view.json["turn"]["state"].as_str(),
            Some("queued" | "running")
        ),
        "{:#}",
        view.json
    );
    std::fs::write(&gate_file, b"go").unwrap();
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    host.stop().await;
}
