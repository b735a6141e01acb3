//! `max_hops`: two inboxes whose agents answer each other forever are stopped.

use std::net::SocketAddr;
use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const ADMIN: &str = "admin-secret";
/// Shared by A and B, both ways.
const AB: &str = "a-b-secret";
const MAX_HOPS: u64 = 4;

/// An inbox whose agent answers every PING from `other` with a PING back to it.
fn config(other: &str, other_addr: SocketAddr) -> String {
    let command =
        serde_json::to_string(&["python3", agent_script().as_str(), "--reply", "PING"]).unwrap();
    format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        max_hops = {MAX_HOPS}
        [agent]
        command = {command}
        timeout_secs = 20
        [relay]
        retry_schedule = ["0s", "200ms", "200ms"]
        [peers.{other}]
        url = "http://{other_addr}/message"
        secret = "{AB}"
        [routes.ping]
        from = ["{other}"]
        types = ["PING"]
        reply_types = ["PING"]
        reply_to = ["{other}"]
        "#
    )
}

async fn messages(host: &Host) -> Vec<Value> {
    let r = admin_get(host, ADMIN, "/messages?limit=500").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    r.json["messages"].as_array().unwrap().clone()
}

/// Every delivery of every reply to a message stored in `host`.
async fn deliveries(host: &Host) -> Vec<Value> {
    let mut out = Vec::new();
    for m in messages(host).await {
        let id = m["id"].as_str().unwrap();
        let view = admin_get(host, ADMIN, &format!("/messages/{id}")).await;
        for r in view.json["replies"].as_array().unwrap() {
            out.extend(r["deliveries"].as_array().unwrap().iter().cloned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hops_stops_a_loop_between_two_inboxes() {
    let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr_a, addr_b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let a = start_host_on(&config("b", addr_b), la).await;
    let b = start_host_on(&config("a", addr_a), lb).await;

    // A thinks B sent it; from then on the agents bounce PINGs.
    let ack = post_message(&a, AB, json!({"type": "PING", "payload": {"n": 0}})).await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    let thread = ack.json["thread_id"].as_str().unwrap().to_owned();

    // The message that would reach max_hops is refused, and its delivery is given up (`dead`).
    let refused = eventually(
        Duration::from_secs(20),
        "a delivery refused with 422",
        || async {
            let mut all = deliveries(&a).await;
            all.extend(deliveries(&b).await);
            all.into_iter()
                .find(|d| d["state"] == "dead" && d["last_status"] == 422)
        },
    )
    .await;
    assert_eq!(refused["attempts"], 1, "a 422 is not retried: {refused:#}");
    let error = refused["last_error"].as_str().unwrap_or("");
    assert!(error.contains("loop_detected"), "{refused:#}");

    // Nothing bounces any more: every turn is over and the count stays put.
    let settled = eventually(Duration::from_secs(20), "every turn to end", || async {
        let mut all = messages(&a).await;
        all.extend(messages(&b).await);
        all.iter().all(|m| m["turn_state"] == "done").then_some(all)
    })
    .await;
    let total = settled.len();
    assert!(
        total as u64 <= MAX_HOPS + 1,
        "{total} messages stored for max_hops = {MAX_HOPS}: {settled:#?}"
    );
    for m in &settled {
        assert_eq!(m["thread_id"], thread.as_str(), "{m:#}");
        assert!(m["hops"].as_u64().unwrap() < MAX_HOPS, "{m:#}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline {
        let now = messages(&a).await.len() + messages(&b).await.len();
        assert_eq!(now, total, "the loop kept going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}
