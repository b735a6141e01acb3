//! Mailboxes and the reading endpoints: who sees what.

use agent_inbox_tests::*;
use serde_json::{Value, json};

/// tony and mel may leave NOTEs in `notes`; tony also MEMOs in `other`.
fn config() -> String {
    Toml::new()
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .peer("mel", "http://127.0.0.1:9/message", MEL)
        .mailbox("notes", &["tony", "mel"], &["NOTE"])
        .mailbox("other", &["tony"], &["MEMO"])
        .build()
}

async fn post(host: &Host, secret: &str, body: Value) -> String {
    let ack = post_message(host, secret, body).await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    ack.json["id"].as_str().unwrap().to_owned()
}

fn ids(list: &Resp) -> Vec<String> {
    assert_eq!(list.status, 200, "{:#}", list.json);
    list.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn peer_get(host: &Host, secret: &str, path: &str) -> Resp {
    request("GET", &host.url(path), &[("x-shared-secret", secret)], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_route_keeps_messages_without_a_turn() {
    let host = start_host(&config()).await;
    let from_tony = post(&host, TONY, json!({"type": "NOTE", "payload": {"n": 1}})).await;
    let from_mel = post(&host, MEL, json!({"type": "NOTE", "payload": {"n": 2}})).await;
    let memo = post(&host, TONY, json!({"type": "MEMO", "payload": {"n": 3}})).await;

    let list = admin_get(&host, "/messages?route=notes").await;
    assert_eq!(
        ids(&list),
        [from_mel.as_str(), from_tony.as_str()],
        "newest first"
    );
    let messages = list.json["messages"].as_array().unwrap();
    assert_eq!(messages[0]["payload"], json!({"n": 2}));
    assert_eq!(messages[0]["sender"], "mel");
    assert_eq!(messages[1]["payload"], json!({"n": 1}));
    assert_eq!(messages[1]["sender"], "tony");
    for m in messages {
        assert_eq!(m["route"], "notes");
        assert_eq!(m["type"], "NOTE");
        assert_eq!(m["mailbox"], true);
        assert!(
            m.get("turn_state").is_none(),
            "a mailbox has no turn: {m:#}"
        );
    }
    let all = admin_get(&host, "/messages").await;
    assert_eq!(ids(&all).len(), 3);
    assert!(ids(&all).contains(&memo));

    let view = admin_get(&host, &format!("/messages/{from_tony}")).await;
    assert_eq!(view.status, 200, "{:#}", view.json);
    assert_eq!(view.json["turn"], Value::Null, "{:#}", view.json);
    assert_eq!(view.json["replies"], json!([]));
    assert_eq!(view.json["message"]["payload"], json!({"n": 1}));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_reads_only_its_own_messages() {
    let host = start_host(&config()).await;
    let t1 = post(&host, TONY, json!({"type": "NOTE", "payload": {"n": 1}})).await;
    let m1 = post(&host, MEL, json!({"type": "NOTE", "payload": {"n": 2}})).await;
    let t2 = post(&host, TONY, json!({"type": "MEMO", "payload": {"n": 3}})).await;

    let tony = peer_get(&host, TONY, "/messages").await;
    assert_eq!(ids(&tony), [t2.as_str(), t1.as_str()]);
    let mel = peer_get(&host, MEL, "/messages").await;
    assert_eq!(ids(&mel), [m1.as_str()]);
    // Filters do not widen what a peer sees.
    let mel_notes = peer_get(&host, MEL, "/messages?route=notes").await;
    assert_eq!(ids(&mel_notes), [m1.as_str()]);

    let own = peer_get(&host, TONY, &format!("/messages/{t1}")).await;
    assert_eq!(own.status, 200, "{:#}", own.json);
    assert_eq!(own.json["message"]["id"], t1.as_str());
    let other = peer_get(&host, TONY, &format!("/messages/{m1}")).await;
    assert_eq!(other.status, 404, "{:#}", other.json);
    assert_eq!(other.code(), "not_found");
    // Exactly what an id that does not exist gets, so a peer cannot probe for ids.
    let nowhere = peer_get(&host, TONY, "/messages/no-such-id").await;
    assert_eq!(other.json, nowhere.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_needs_no_auth() {
    let host = start_host(&config()).await;
    let r = request("GET", &host.url("/healthz"), &[], "").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    assert_eq!(r.json["status"], "ok");
    host.stop().await;
}
