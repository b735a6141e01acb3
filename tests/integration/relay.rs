//! Relay: retries while a peer is down or failing, no retries for a refusal.
//!
//! A delivery the relay gives up on is a dead letter: state `dead`.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const ADMIN: &str = "admin-secret";
const TONY: &str = "tony-secret";

/// An agent that replies one STATUS to tony at `peer_url`.
fn config(peer_url: &str, schedule: &str) -> String {
    let command =
        serde_json::to_string(&["python3", agent_script().as_str(), "--reply", "STATUS"]).unwrap();
    format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [agent]
        command = {command}
        timeout_secs = 20
        [relay]
        retry_schedule = {schedule}
        [peers.tony]
        url = "{peer_url}"
        secret = "{TONY}"
        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["STATUS"]
        reply_to = ["tony"]
        "#
    )
}

async fn send_task(host: &Host) -> String {
    let ack = post_message(host, TONY, json!({"type": "TASK"})).await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    ack.json["id"].as_str().unwrap().to_owned()
}

/// The delivery of message `id`'s one reply, once `done` says it is what we wait for.
async fn delivery_when(
    host: &Host,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Value) {
    eventually(Duration::from_secs(20), what, || async {
        let view = admin_get(host, ADMIN, &format!("/messages/{id}")).await;
        let reply = view.json["replies"].get(0)?.clone();
        let d = reply["deliveries"].get(0)?.clone();
        done(&d).then_some((reply, d))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_arrives_after_the_peer_comes_up() {
    let addr = unused_addr();
    let schedule = format!(r#"["0s"{}]"#, r#", "200ms""#.repeat(40));
    let host = start_host(&config(&format!("http://{addr}/message"), &schedule)).await;
    let id = send_task(&host).await;

    let (_, d) = delivery_when(&host, &id, "a failed attempt on a down peer", |d| {
        d["state"] == "retrying" && d["attempts"].as_u64() >= Some(1)
    })
    .await;
    assert!(d["last_error"].is_string(), "{d:#}");

    let peer = PeerServer::start_on(TcpListener::bind(addr).await.expect("rebind")).await;
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["type"], "STATUS");
    assert_eq!(got[0].body["in_reply_to"], id.as_str());

    let (reply, d) = delivery_when(&host, &id, "the delivery to be recorded", |d| {
        d["state"] == "delivered"
    })
    .await;
    assert!(d["attempts"].as_u64().unwrap() >= 2, "{d:#}");
    assert_eq!(d["last_status"], 200, "{d:#}");
    assert_eq!(got[0].body["id"], reply["id"]);
    assert_eq!(got.len(), 1, "delivered once: {got:#?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_is_not_retried() {
    let peer = PeerServer::start().await;
    peer.statuses.lock().unwrap().push_back(400);
    let host = start_host(&config(&peer.url(), r#"["0s", "200ms", "200ms"]"#)).await;
    let id = send_task(&host).await;

    let (_, d) = delivery_when(&host, &id, "the delivery to be given up (dead)", |d| {
        d["state"] == "dead"
    })
    .await;
    assert_eq!(d["attempts"], 1, "{d:#}");
    assert_eq!(d["last_status"], 400, "{d:#}");
    assert_eq!(d["next_attempt_at"], Value::Null, "{d:#}");
    // Long enough for two more scheduled attempts, had there been any.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline {
        let (_, d) = delivery_when(&host, &id, "the delivery", |_| true).await;
        assert_eq!(d["attempts"], 1, "a 400 was retried: {d:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(peer.received().is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_delivered() {
    let peer = PeerServer::start().await;
    peer.statuses.lock().unwrap().extend([500, 500]);
    let host = start_host(&config(&peer.url(), r#"["0s", "200ms", "200ms"]"#)).await;
    let id = send_task(&host).await;

    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    let (reply, d) = delivery_when(&host, &id, "the delivery to be recorded", |d| {
        d["state"] == "delivered"
    })
    .await;
    assert_eq!(d["attempts"], 3, "{d:#}");
    assert_eq!(d["last_status"], 200, "{d:#}");
    // Every attempt carried the same id, so the peer can drop duplicates.
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].body["id"], reply["id"]);
    assert_eq!(
        got[0].headers["idempotency-key"],
        reply["id"].as_str().unwrap()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_when_the_schedule_is_spent() {
    let peer = PeerServer::start().await;
    peer.statuses.lock().unwrap().extend([503, 503, 503, 503]);
    let host = start_host(&config(&peer.url(), r#"["0s", "200ms", "200ms"]"#)).await;
    let id = send_task(&host).await;

    let (_, d) = delivery_when(&host, &id, "the delivery to be given up (dead)", |d| {
        d["state"] == "dead"
    })
    .await;
    assert_eq!(d["attempts"], 3, "one attempt per schedule entry: {d:#}");
    assert_eq!(d["last_status"], 503, "{d:#}");
    assert!(peer.received().is_empty());
    host.stop().await;
}

/// A peer that accepts connections and never answers.
async fn silent_peer() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/message", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_does_not_hold_up_retries_to_another() {
    let (silent_url, silent) = silent_peer().await;
    let mel = PeerServer::start().await;
    mel.statuses.lock().unwrap().push_back(500);
    let command =
        serde_json::to_string(&["python3", agent_script().as_str(), "--reply", "STATUS"]).unwrap();
    let host = start_host(&format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [agent]
        command = {command}
        timeout_secs = 20
        [relay]
        retry_schedule = ["0s", "200ms", "200ms"]
        attempt_timeout_secs = 15
        [peers.tony]
        url = "{silent_url}"
        secret = "{TONY}"
        [peers.mel]
        url = "{mel_url}"
        secret = "mel-secret"
        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["STATUS"]
        reply_to = ["tony", "mel"]
        "#,
        mel_url = mel.url()
    ))
    .await;
    let id = send_task(&host).await;

    // mel's first attempt fails with 500; its retry is due 200 ms later, while the attempt to the
    // silent peer is still waiting for an answer (up to 15 s). The retry must not wait for it.
    let got = mel.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    silent.abort();
    host.stop().await;
}
