//! A person cancels a turn: queued, held or running, from the API or the command line, recorded
//! with who, how and when; the peer hears `TURN_FAILED`; nothing else is cancelled.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

async fn cancel(host: &BinHost, id: &str, body: &str) -> Resp {
    admin_post(host, &format!("/admin/messages/{id}/cancel"), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_cancels_a_running_or_queued_turn_and_the_peer_hears_it() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::tasks(
        &peer.url(),
        &agent_command(&["--sleep", "60", "--reply", "STATUS"]),
    )
    .listen(addr)
    .agent("max_concurrent", "1")
    .mailbox("notes", &["tony"], &["NOTE"])
    .build();
    let host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
    let running = send_task(&host).await;
    wait_running(&host, &running).await;
    let queued = send_task(&host).await;

    // The queued one, from the API: it never runs.
    let r = cancel(&host, &queued, r#"{"by": "ops"}"#).await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    assert_eq!(r.json["state"], "canceled");
    assert_eq!(r.json["canceled"]["by"], "ops");
    assert_eq!(r.json["canceled"]["via"], "api");
    // The running one, from the command line (who: the login name from the environment).
    let config = dir.path().join("routes.toml");
    let out = run_bin(
        &["cancel", &running, "--config", config.to_str().unwrap()],
        &[("USER", "alice")],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("turn canceled by alice (api)"), "{stdout}");
    let view = admin_get(&host, &format!("/messages/{running}")).await;
    let turn = &view.json["turn"];
    assert_eq!(turn["state"], "canceled", "{:#}", view.json);
    assert_eq!(turn["canceled"]["by"], "alice");
    assert!(
        turn["error"]
            .as_str()
            .unwrap()
            .starts_with("canceled: cancelled by alice"),
        "{turn:#}"
    );
    // The peer hears both, as it would of any failure; the sleeping agent never replies.
    let got = peer.wait_for(2, Duration::from_secs(20)).await;
    for r in &got {
        assert_eq!(r.body["type"], "TURN_FAILED", "{:#}", r.body);
        assert_eq!(r.body["payload"]["state"], "canceled", "{:#}", r.body);
        assert_eq!(r.body["payload"]["error"], "canceled", "{:#}", r.body);
        assert!(
            !r.body.to_string().contains("alice"),
            "a person's name stays home: {:#}",
            r.body
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(peer.received().len(), 2, "{:#?}", peer.received());
    // The queued turn never started.
    let view = admin_get(&host, &format!("/messages/{queued}")).await;
    assert_eq!(view.json["turn"]["attempts"], 0, "{:#}", view.json);

    // Ended already, a mailbox note, an unknown id, and no one named.
    assert_eq!(
        cancel(&host, &running, r#"{"by": "ops"}"#).await.status,
        409
    );
    let note = post_message(&host, TONY, json!({"type": "NOTE"})).await;
    assert_eq!(
        cancel(&host, &note.id(), r#"{"by": "ops"}"#).await.status,
        409
    );
    assert_eq!(
        cancel(&host, "no-such-message", r#"{"by": "ops"}"#)
            .await
            .status,
        404
    );
    for bad in [
        r#"{"by": ""}"#,
        r#"{"by": "a\nb"}"#,
        r#"{}"#,
        r#"{"by": "ops", "why": 1}"#,
    ] {
        let r = cancel(&host, &queued, bad).await;
        assert_eq!(r.status, 400, "{bad}: {:#}", r.json);
    }
    host.stop();
}
