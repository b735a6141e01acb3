//! Refusals are visible on both sides: the inbox that refuses a peer's message logs it and, in a
//! thread it knows, records it (so `send --wait` there ends at once, exit 4); the inbox whose
//! delivery died logs the peer, its status and its error code, and keeps the code for the console.

use std::time::{Duration, Instant};

use agent_inbox_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_asking_side_refuses_ends_send_wait_at_once_and_both_logs_say_why() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (unused_addr(), unused_addr());
    // A asks b QUESTIONs and takes only DONE back; b's agent answers BREAKDOWN.
    let toml_a = Toml::new()
        .listen(a)
        .server("public_url", &quoted(&format!("http://{a}")))
        .schedule(FAST_RETRIES)
        .peer("b", &format!("http://{b}/message"), "a-b-secret")
        .mailbox("answers", &["b"], &["DONE"])
        .build();
    let toml_b = Toml::new()
        .listen(b)
        .command(&agent_command(&["--reply", "BREAKDOWN"]))
        .schedule(FAST_RETRIES)
        .peer("a", &format!("http://{a}/message"), "a-b-secret")
        .agent_route("questions", &["a"], &["QUESTION"], &["BREAKDOWN"], &["a"])
        .build();
    let host_a = BinHost::start(dir_a.path(), &toml_a, a, "log").await;
    let host_b = BinHost::start(dir_b.path(), &toml_b, b, "log").await;

    let started = Instant::now();
    let (code, out, err) = cli_with_config(
        &dir_a.path().join("routes.toml"),
        &[
            "send",
            "--to",
            "b",
            "--type",
            "QUESTION",
            "--wait",
            "--timeout",
            "60",
        ],
    )
    .await;
    assert_eq!(code, 4, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it ended before its timeout"
    );
    for want in ["b answered with BREAKDOWN", "unknown_type"] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    // The refusal is in A's thread, for the admin to read.
    let thread = err
        .lines()
        .find_map(|l| l.split(" in thread ").nth(1))
        .expect("the thread is named")
        .trim()
        .to_owned();
    let list = admin_get(&host_a, &format!("/messages?thread={thread}")).await;
    let refused = &list.json["refused"][0];
    assert_eq!(
        (&refused["peer"], &refused["type"], &refused["code"]),
        (&json!("b"), &json!("BREAKDOWN"), &json!("unknown_type")),
        "{:#}",
        list.json
    );
    // A's log names the peer, the type and the code; b's names A, the status and the code.
    // (The log reaches its file a moment after the event: polled.)
    let line = eventually(
        Duration::from_secs(10),
        "the refusal in A's log",
        || async {
            host_a
                .log()
                .lines()
                .find(|l| l.contains("message refused"))
                .map(str::to_owned)
        },
    )
    .await;
    for want in ["peer=b", "msg_type=BREAKDOWN", "code=unknown_type"] {
        assert!(line.contains(want), "no {want} in {line}");
    }
    let dead = eventually(Duration::from_secs(20), "b's dead letter", || async {
        let r = admin_get(&host_b, "/admin/outbox?dead=1").await;
        r.json["outbox"]
            .as_array()
            .filter(|o| !o.is_empty())
            .map(|o| o[0].clone())
    })
    .await;
    let error = dead["delivery"]["last_error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("peer answered 422 unknown_type:"),
        "{dead:#}"
    );
    let line = eventually(
        Duration::from_secs(10),
        "the dead letter in b's log",
        || async {
            host_b
                .log()
                .lines()
                .find(|l| l.contains("dead letter"))
                .map(str::to_owned)
        },
    )
    .await;
    for want in ["peer=a", "status=Some(422)", "unknown_type"] {
        assert!(line.contains(want), "no {want} in {line}");
    }
    host_a.stop();
    host_b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_once_per_peer_and_code_in_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::notes().listen(addr).build();
    let host = BinHost::start(dir.path(), &toml, addr, "log").await;
    for _ in 0..50 {
        let r = post_message(&host, TONY, json!({"type": "NOPE"})).await;
        assert_eq!(r.code(), "unknown_type");
    }
    let r = post_message(&host, TONY, json!({"type": "NOTE", "hops": 99})).await;
    assert_eq!(r.code(), "loop_detected");
    let ok = post_message(&host, TONY, json!({"type": "NOTE"})).await;
    assert_eq!(ok.status, 202);
    host.stop();
    let log = strip_ansi(&std::fs::read_to_string(dir.path().join("log")).unwrap());
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("message refused"))
        .collect();
    assert_eq!(lines.len(), 2, "one per code in the burst:\n{log}");
    assert!(lines[0].contains("code=unknown_type") && lines[1].contains("code=loop_detected"));
}
