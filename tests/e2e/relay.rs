//! Relay: retries while a peer is down or failing, no retries for a refusal.
//!
//! A delivery the relay gives up on is a dead letter: state `dead`.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::Value;

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

    let peer = PeerServer::start_on(take_listener(addr)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_retry_after_from_the_peer_wins_over_the_schedule() {
    let peer = PeerServer::start().await;
    peer.script([Answer::from(503).header("retry-after", "2")]);
    let host = start_host(&config(&peer.url(), &["0s", "100ms", "100ms"])).await;
    let id = send_task(&host).await;
    let (_, d) = delivery_in(&host, &id, "delivered").await;
    assert_eq!(d["attempts"], 2, "{d:#}");
    let seen = peer.attempts();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let gap = seen[1].at - seen[0].at;
    // The schedule says 100 ms (±10%); the peer asked for 2 s.
    assert!(
        gap >= Duration::from_millis(1900),
        "retried {gap:?} after a 503 with Retry-After: 2"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_and_too_many_requests_are_retried() {
    let peer = PeerServer::start().await;
    peer.script([408, 429]);
    let host = start_host(&config(&peer.url(), FAST_RETRIES)).await;
    let id = send_task(&host).await;
    let (reply, d) = delivery_in(&host, &id, "delivered").await;
    assert_eq!(d["attempts"], 3, "{d:#}");
    let seen = attempts_for(&peer, &reply["id"]);
    let statuses: Vec<u16> = seen.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [408, 429, 200], "{seen:#?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_timeout_secs_ends_an_attempt_on_a_peer_that_never_answers() {
    let (silent_url, silent) = silent_peer().await;
    let toml = Toml::tasks(&silent_url, &agent_command(&["--reply", "STATUS"]))
        .relay("attempt_timeout_secs", "1")
        .schedule(&["0s", "100ms"])
        .build();
    let host = start_host(&toml).await;
    let id = send_task(&host).await;
    let (_, first) = delivery_when(&host, &id, "a first attempt to time out", |d| {
        d["attempts"] == 1
    })
    .await;
    let (_, d) = delivery_in(&host, &id, "dead").await;
    assert_eq!(d["attempts"], 2, "{d:#}");
    let error = d["last_error"].as_str().unwrap_or("");
    assert!(error.contains("gave up after 2 attempts"), "{d:#}");
    let first_error = first["last_error"].as_str().unwrap_or("");
    assert!(
        first_error.contains("no answer within 1s"),
        "the attempt should end at attempt_timeout_secs: {first:#}"
    );
    silent.abort();
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_in_flight_deliveries_at_once() {
    const REPLIES: usize = 8;
    let peer = PeerServer::start().await;
    // Each answer takes a while, so deliveries overlap if the relay lets them.
    peer.otherwise(Answer::from(200).after(Duration::from_millis(400)));
    let mut args = Vec::new();
    for _ in 0..REPLIES {
        args.extend(["--reply", "STATUS"]);
    }
    let toml = Toml::tasks(&peer.url(), &agent_command(&args))
        .relay("max_in_flight", "2")
        .build();
    let host = start_host(&toml).await;
    let id = send_task(&host).await;
    peer.wait_for(REPLIES, Duration::from_secs(60)).await;
    let v = wait_turn_state(&host, &id, "done").await;
    assert_eq!(v["replies"].as_array().unwrap().len(), REPLIES, "{v:#}");
    assert_eq!(
        peer.most_in_flight(),
        2,
        "max_in_flight = 2 (and the limit was reached)"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_removed_from_the_config_turns_its_deliveries_dead() {
    let tony = PeerServer::start().await;
    let mel = PeerServer::start().await;
    // mel fails until the reload; the next attempt is after it.
    mel.otherwise(503);
    let two = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
        .peer("mel", &mel.url(), MEL)
        .route("tasks", "reply_to", &toml_list(&["tony", "mel"]))
        .schedule(&["0s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]);
    let host = start_host(&two.build()).await;
    let id = send_task(&host).await;
    mel.wait_attempts(1, Duration::from_secs(30)).await;
    let one = two
        .without_peer("mel")
        .route("tasks", "reply_to", &toml_list(&["tony"]));
    host.rewrite_config(&one.build());
    let reloaded = eventually(Duration::from_secs(10), "the reload", || async {
        (status(&host).await["reloads_ok"] == 1).then_some(())
    });
    reloaded.await;
    let v = eventually(
        Duration::from_secs(30),
        "mel's delivery to be dead",
        || async {
            let v = view(&host, &id).await;
            let dead = v["replies"][0]["deliveries"]
                .as_array()?
                .iter()
                .any(|d| d["peer"] == "mel" && d["state"] == "dead");
            dead.then_some(v)
        },
    )
    .await;
    let to_mel = v["replies"][0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["peer"] == "mel")
        .unwrap()
        .clone();
    assert!(
        to_mel["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no longer in the config"),
        "{to_mel:#}"
    );
    // tony still got its copy.
    let got = tony.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    host.stop().await;
}
