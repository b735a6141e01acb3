//! Relay: retries while a peer is down or failing, no retries for a refusal.
//!
//! A delivery the relay gives up on is a dead letter: state `dead`.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::Value;
use tokio::net::TcpListener;

/// An agent that replies one STATUS to tony at `peer_url`, retried along `schedule`.
fn config(peer_url: &str, schedule: &[&str]) -> String {
    Toml::tasks(peer_url, &agent_command(&["--reply", "STATUS"]))
        .schedule(schedule)
        .build()
}

/// The attempts the peer saw for reply `reply_id`, whatever it answered.
fn attempts_for(peer: &PeerServer, reply_id: &Value) -> Vec<Received> {
    peer.attempts()
        .into_iter()
        .filter(|a| a.body["id"] == *reply_id)
        .collect()
}

/// A positive signal that the relay has moved on: a new TASK whose reply fails twice (500) and is
/// delivered on its third attempt, so its delivery lands after any retry still due on [`FAST_RETRIES`]
/// for an earlier reply. Returns the new message's id.
async fn a_later_reply_gets_through_after_two_retries(host: &Host, peer: &PeerServer) -> String {
    peer.script([500, 500]);
    let id = send_task(host).await;
    delivery_in(host, &id, "delivered").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_arrives_after_the_peer_comes_up() {
    let addr = unused_addr();
    let mut schedule = vec!["0s"];
    schedule.extend(["200ms"; 40]);
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
    // Delivered once: nothing more for this reply reaches the peer, even after a later reply has
    // gone through retries of its own.
    a_later_reply_gets_through_after_two_retries(&host, &peer).await;
    let again = attempts_for(&peer, &reply["id"]);
    assert_eq!(again.len(), 1, "delivered once: {again:#?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_is_not_retried() {
    let peer = PeerServer::start().await;
    peer.script([400]);
    let host = start_host(&config(&peer.url(), FAST_RETRIES)).await;
    let id = send_task(&host).await;

    let (reply, d) = delivery_in(&host, &id, "dead").await;
    assert_eq!(d["attempts"], 1, "{d:#}");
    assert_eq!(d["last_status"], 400, "{d:#}");
    assert_eq!(d["next_attempt_at"], Value::Null, "{d:#}");
    // Had the 400 been retried, the retries would have come before this later reply's third try.
    a_later_reply_gets_through_after_two_retries(&host, &peer).await;
    let (_, d) = delivery_in(&host, &id, "dead").await;
    assert_eq!(d["attempts"], 1, "a 400 was retried: {d:#}");
    let seen = attempts_for(&peer, &reply["id"]);
    assert_eq!(seen.len(), 1, "a 400 was retried: {seen:#?}");
    assert_eq!(seen[0].status, 400);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_delivered() {
    let peer = PeerServer::start().await;
    peer.script([500, 500]);
    let host = start_host(&config(&peer.url(), FAST_RETRIES)).await;
    let id = send_task(&host).await;

    let (reply, d) = delivery_in(&host, &id, "delivered").await;
    assert_eq!(d["attempts"], 3, "{d:#}");
    assert_eq!(d["last_status"], 200, "{d:#}");
    // Every attempt, failed or not, carried the same id and Idempotency-Key, so the peer can
    // drop duplicates.
    let seen = peer.attempts();
    let statuses: Vec<u16> = seen.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [500, 500, 200], "{seen:#?}");
    for a in &seen {
        assert_eq!(a.body["id"], reply["id"], "{a:#?}");
        assert_eq!(
            a.headers["idempotency-key"],
            reply["id"].as_str().unwrap(),
            "{a:#?}"
        );
        assert_eq!(
            a.body, seen[0].body,
            "every attempt carries the same message"
        );
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_when_the_schedule_is_spent() {
    let peer = PeerServer::start().await;
    peer.script([503, 503, 503]);
    let host = start_host(&config(&peer.url(), FAST_RETRIES)).await;
    let id = send_task(&host).await;

    let (reply, d) = delivery_in(&host, &id, "dead").await;
    assert_eq!(d["attempts"], 3, "one attempt per schedule entry: {d:#}");
    assert_eq!(d["last_status"], 503, "{d:#}");
    // A fourth attempt would come before the later reply's third try, and be seen (and answered
    // 200) by the peer.
    a_later_reply_gets_through_after_two_retries(&host, &peer).await;
    let seen = attempts_for(&peer, &reply["id"]);
    let statuses: Vec<u16> = seen.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [503, 503, 503], "{seen:#?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_does_not_hold_up_retries_to_another() {
    let (silent_url, silent) = silent_peer().await;
    let mel = PeerServer::start().await;
    mel.script([500]);
    let toml = Toml::tasks(&silent_url, &agent_command(&["--reply", "STATUS"]))
        .relay("attempt_timeout_secs", "60")
        .peer("mel", &mel.url(), MEL)
        .route("tasks", "reply_to", &toml_list(&["tony", "mel"]));
    let host = start_host(&toml.build()).await;
    let id = send_task(&host).await;

    // mel's first attempt fails with 500; its retry is due 200 ms later, while the attempt to the
    // silent peer is still waiting for an answer (up to 60 s). The retry must not wait for it:
    // mel's delivery lands while tony's first attempt is still unanswered.
    let got = mel.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    let v = view(&host, &id).await;
    let to_tony = v["replies"][0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["peer"] == "tony")
        .cloned()
        .unwrap_or_else(|| panic!("no delivery to tony: {v:#}"));
    assert_eq!(
        to_tony["attempts"], 0,
        "tony's attempt ended first: {to_tony:#}"
    );
    assert_eq!(to_tony["last_error"], Value::Null, "{to_tony:#}");
    silent.abort();
    host.stop().await;
}
