//! `max_hops`: two inboxes whose agents answer each other forever are stopped.

use std::net::SocketAddr;
use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Shared by A and B, both ways.
const AB: &str = "a-b-secret";
const MAX_HOPS: u64 = 4;

/// An inbox whose agent answers every PING from `other` with a PING back to it.
fn config(other: &str, other_addr: SocketAddr) -> String {
    Toml::new()
        .server("max_hops", &MAX_HOPS.to_string())
        .command(&agent_command(&["--reply", "PING"]))
        .agent("timeout_secs", "20")
        .schedule(FAST_RETRIES)
        .peer(other, &format!("http://{other_addr}/message"), AB)
        .agent_route("ping", &[other], &["PING"], &["PING"], &[other])
        .build()
}

async fn messages(host: &Host) -> Vec<Value> {
    let r = admin_get(host, "/messages?limit=500").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    r.json["messages"].as_array().unwrap().clone()
}

/// Every delivery of every reply to a message stored in `host`.
async fn deliveries(host: &Host) -> Vec<Value> {
    let mut out = Vec::new();
    for m in messages(host).await {
        let id = m["id"].as_str().unwrap();
        let view = admin_get(host, &format!("/messages/{id}")).await;
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

    // Nothing bounces any more: every turn is over and every delivery settled (delivered or
    // dead), so nothing is left that could store another message.
    let settled = eventually(
        Duration::from_secs(20),
        "every turn and delivery to settle",
        || async {
            let mut all = messages(&a).await;
            all.extend(messages(&b).await);
            let mut ds = deliveries(&a).await;
            ds.extend(deliveries(&b).await);
            let turns_over = all.iter().all(|m| m["turn_state"] == "done");
            let settled = ds
                .iter()
                .all(|d| d["state"] == "delivered" || d["state"] == "dead");
            (turns_over && settled).then_some(all)
        },
    )
    .await;
    let total = settled.len();
    assert!(
        total as u64 <= MAX_HOPS + 1,
        "{total} messages stored for max_hops = {MAX_HOPS}: {settled:#?}"
    );
    for m in &settled {
        assert!(m["hops"].as_u64().unwrap() < MAX_HOPS, "{m:#}");
    }
    // One thread on each side: A's is the first message's; B keeps the exchange in one thread of
    // its own, which A's messages name as A does.
    for m in messages(&a).await {
        assert_eq!(m["thread_id"], thread.as_str(), "{m:#}");
    }
    let on_b: std::collections::HashSet<String> = messages(&b)
        .await
        .iter()
        .map(|m| m["thread_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    let now = messages(&a).await.len() + messages(&b).await.len();
    assert_eq!(now, total, "the loop kept going");
    a.stop().await;
    b.stop().await;
}
