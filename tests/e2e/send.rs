//! `/send`: reply tokens are checked, expire with their turn, and only allow the route's types.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

/// Route `tasks` (tony's TASKs) whose agent runs `command` and may reply BREAKDOWN or STATUS.
fn config(peer_url: &str, command: &str) -> Toml {
    Toml::tasks(peer_url, command).route(
        "tasks",
        "reply_types",
        &toml_list(&["BREAKDOWN", "STATUS"]),
    )
}

/// Starts a host whose agent records its env, with `reply_grace_secs = grace`, sends a TASK and
/// waits for its turn to be done; returns the host, the message id and the turn's reply token.
async fn finished_turn(peer: &PeerServer, grace: &str) -> (Host, String, String) {
    let record = tempfile::tempdir().unwrap();
    let command = agent_command(&["--record", path_str(record.path())]);
    let toml = config(&peer.url(), &command).server("reply_grace_secs", grace);
    let host = start_host(&toml.build()).await;
    let id = send_task(&host).await;
    wait_turn_state(&host, &id, "done").await;
    let rec = read_record(record.path(), &id).await;
    let token = rec["env"]["INBOX_REPLY_TOKEN"].as_str().unwrap().to_owned();
    (host, id, token)
}

/// A turn in progress: a host (`config` plus `server` settings) whose agent records its env and
/// then waits for the gate file. Returns the host, the message id, its reply token and the gate.
async fn running_turn(
    peer: &PeerServer,
    server: (&str, &str),
) -> (Host, String, String, tempfile::TempDir) {
    let record = tempfile::tempdir().unwrap();
    let gate = tempfile::tempdir().unwrap();
    let command = agent_command(&[
        "--record",
        path_str(record.path()),
        "--wait-for",
        path_str(&gate.path().join("open")),
    ]);
    let toml = config(&peer.url(), &command).server(server.0, server.1);
    let host = start_host(&toml.build()).await;
    let id = send_task(&host).await;
    let rec = read_record(record.path(), &id).await;
    let token = rec["env"]["INBOX_REPLY_TOKEN"].as_str().unwrap().to_owned();
    (host, id, token, gate)
}

fn assert_unauthorized(r: &Resp) {
    assert_eq!(r.status, 401, "{:#}", r.json);
    assert_eq!(r.code(), "unauthorized", "{:#}", r.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_refuses_unknown_and_missing_tokens() {
    let peer = PeerServer::start().await;
    let host = start_host(&config(&peer.url(), &agent_command(&[])).build()).await;
    let body = r#"{"type": "STATUS", "payload": {}}"#;

    let random = post_send(
        &host,
        Some("rt_0123456789abcdef0123456789abcdef0123456789abcdef"),
        body,
    )
    .await;
    assert_unauthorized(&random);
    let none = post_send(&host, None, body).await;
    assert_unauthorized(&none);
    assert_eq!(random.json, none.json, "no hint which part was wrong");
    // The admin secret and a peer secret are not reply tokens.
    assert_unauthorized(&post_send(&host, Some(ADMIN), body).await);
    assert_unauthorized(&post_send(&host, Some(TONY), body).await);
    // Nothing was queued for the relay.
    let outbox = admin_get(&host, "/admin/outbox").await;
    assert_eq!(outbox.status, 200, "{:#}", outbox.json);
    assert_eq!(outbox.json["outbox"], json!([]), "{:#}", outbox.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_token_expires_when_its_turn_ends_with_no_grace() {
    let peer = PeerServer::start().await;
    let (host, id, token) = finished_turn(&peer, "0").await;

    // The token lapses the moment the turn ends (within the clock's millisecond).
    let refused = eventually(Duration::from_secs(2), "the token to be refused", || {
        let token = token.clone();
        let host = &host;
        async move {
            let r = post_send(host, Some(&token), r#"{"type": "STATUS"}"#).await;
            (r.status != 202).then_some(r)
        }
    })
    .await;
    assert_unauthorized(&refused);
    let view = admin_get(&host, &format!("/messages/{id}")).await;
    assert_eq!(view.json["replies"], json!([]), "{:#}", view.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_token_stays_valid_within_the_grace_after_its_turn() {
    let peer = PeerServer::start().await;
    let (host, id, token) = finished_turn(&peer, "600").await;

    let late = post_send(
        &host,
        Some(&token),
        r#"{"type": "STATUS", "payload": {"late": true}}"#,
    )
    .await;
    assert_eq!(late.status, 202, "{:#}", late.json);
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    assert_eq!(got[0].body["payload"], json!({"late": true}));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_token_works_while_the_turn_runs_and_checks_the_type() {
    let peer = PeerServer::start().await;
    let (host, id, token, gate) = running_turn(&peer, ("reply_grace_secs", "0")).await;
    let token = token.as_str();

    let unknown = post_send(&host, Some(token), r#"{"type": "NOPE", "payload": {}}"#).await;
    assert_eq!(unknown.status, 422, "{:#}", unknown.json);
    assert_eq!(unknown.code(), "unknown_type");
    assert_eq!(
        unknown.json["error"]["allowed"],
        json!(["BREAKDOWN", "STATUS"])
    );
    let message = unknown.json["error"]["message"].as_str().unwrap();
    assert!(message.contains("BREAKDOWN, STATUS"), "{message}");

    let missing = post_send(&host, Some(token), r#"{"payload": {}}"#).await;
    assert_eq!(missing.status, 400, "{:#}", missing.json);
    assert_eq!(missing.code(), "missing_type");

    let ok = post_send(
        &host,
        Some(token),
        r#"{"type": "STATUS", "payload": {"n": 1}}"#,
    )
    .await;
    assert_eq!(ok.status, 202, "{:#}", ok.json);
    assert_eq!(ok.json["status"], "queued");
    let reply_id = ok.json["id"].as_str().unwrap().to_owned();

    let view = admin_get(&host, &format!("/messages/{id}")).await;
    assert_eq!(view.json["turn"]["state"], "running", "{:#}", view.json);
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["id"], reply_id.as_str());
    assert_eq!(got[0].body["type"], "STATUS");
    assert_eq!(got[0].body["in_reply_to"], id.as_str());

    std::fs::write(gate.path().join("open"), b"go").unwrap();
    let view = wait_turn_end(&host, ADMIN, &id).await;
    assert_eq!(view["turn"]["state"], "done", "{view:#}");
    // Only the accepted reply was queued.
    assert_eq!(view["replies"].as_array().unwrap().len(), 1, "{view:#}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_refuses_a_body_too_large_a_wrong_media_type_and_bad_json() {
    let peer = PeerServer::start().await;
    let (host, id, token, gate) = running_turn(&peer, ("max_body_bytes", "1024")).await;
    let auth = format!("Bearer {token}");
    let send = |content_type: &'static str, body: String| {
        let (url, auth) = (host.url("/send"), auth.clone());
        async move {
            request(
                "POST",
                &url,
                &[("authorization", &auth), ("content-type", content_type)],
                body,
            )
            .await
        }
    };
    let big = json!({"type": "STATUS", "payload": {"pad": "x".repeat(2000)}}).to_string();
    let r = send("application/json", big).await;
    assert_eq!(
        (r.status, r.code()),
        (413, "body_too_large"),
        "{:#}",
        r.json
    );
    let r = send("text/plain", r#"{"type": "STATUS"}"#.into()).await;
    assert_eq!(
        (r.status, r.code()),
        (415, "unsupported_media_type"),
        "{:#}",
        r.json
    );
    let r = send("application/json", "{not json".into()).await;
    assert_eq!((r.status, r.code()), (400, "bad_json"), "{:#}", r.json);
    // The token still works for a good reply, and only that one was queued.
    let r = send("application/json", r#"{"type": "STATUS"}"#.into()).await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    std::fs::write(gate.path().join("open"), b"go").unwrap();
    let v = wait_turn_state(&host, &id, "done").await;
    assert_eq!(v["replies"].as_array().unwrap().len(), 1, "{v:#}");
    host.stop().await;
}
