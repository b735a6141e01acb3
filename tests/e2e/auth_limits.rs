//! Auth-failure limiting: an address that keeps failing gets 429 without its credentials being
//! checked, per kind of credential, and behind a trusted proxy the forwarded client is limited.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

fn config(limit: u32, window_secs: u64, proxies: &[&str]) -> String {
    Toml::tasks("http://127.0.0.1:9/message", &agent_command(&[]))
        .server("auth_failure_limit", &limit.to_string())
        .server("auth_failure_window_secs", &window_secs.to_string())
        .server("trusted_proxies", &toml_list(proxies))
        .mailbox("notes", &["tony"], &["NOTE"])
        .build()
}

async fn note(host: &impl Endpoint, secret: &str, forwarded: Option<&str>) -> Resp {
    let mut headers = vec![
        ("x-shared-secret", secret),
        ("content-type", "application/json"),
    ];
    if let Some(f) = forwarded {
        headers.push(("x-forwarded-for", f));
    }
    request(
        "POST",
        &host.url("/message"),
        &headers,
        r#"{"type": "NOTE"}"#,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_get_429_until_the_window_passes() {
    let host = start_host(&config(5, 2, &[])).await;
    for i in 0..5 {
        let r = note(&host, "wrong", None).await;
        assert_eq!(r.status, 401, "failure {i}: {:#}", r.json);
    }
    let limited = note(&host, "wrong", None).await;
    assert_eq!(
        (limited.status, limited.code()),
        (429, "too_many_auth_failures")
    );
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // The right secret is not even checked while the address is limited.
    let right = note(&host, TONY, None).await;
    assert_eq!(right.status, 429, "{:#}", right.json);
    // Reply tokens are counted apart: a bad token gets its own 401, not this address's 429.
    let r = post_send(&host, Some("rt_bad"), r#"{"type": "STATUS"}"#).await;
    assert_eq!(r.status, 401, "{:#}", r.json);
    // Once the window has passed, the peer gets in again.
    let ok = eventually(Duration::from_secs(10), "the window to pass", || async {
        let r = note(&host, TONY, None).await;
        (r.status == 202).then_some(r)
    })
    .await;
    assert_eq!(ok.status, 202);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reply_tokens_do_not_lock_the_peers_out() {
    let host = start_host(&config(3, 60, &[])).await;
    for _ in 0..5 {
        post_send(&host, Some("rt_bad"), r#"{"type": "STATUS"}"#).await;
    }
    let r = post_send(&host, Some("rt_bad"), r#"{"type": "STATUS"}"#).await;
    assert_eq!(r.status, 429, "tokens limited: {:#}", r.json);
    assert_eq!(note(&host, TONY, None).await.status, 202, "peers are not");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited() {
    let host = start_host(&config(3, 60, &["127.0.0.1"])).await;
    for _ in 0..3 {
        note(&host, "wrong", Some("203.0.113.7")).await;
    }
    let r = note(&host, TONY, Some("203.0.113.7")).await;
    assert_eq!(r.status, 429, "the client behind the proxy: {:#}", r.json);
    let r = note(&host, TONY, Some("203.0.113.8")).await;
    assert_eq!(
        r.status, 202,
        "another client through the same proxy: {:#}",
        r.json
    );
    host.stop().await;

    // Not trusted: X-Forwarded-For is the client's word and changes nothing.
    let host = start_host(&config(3, 60, &[])).await;
    for i in 0..3 {
        note(&host, "wrong", Some(&format!("198.51.100.{i}"))).await;
    }
    let r = note(&host, TONY, Some("198.51.100.99")).await;
    assert_eq!(r.status, 429, "the socket address is limited: {:#}", r.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiting_can_be_turned_off() {
    let host = start_host(&config(0, 60, &[])).await;
    for _ in 0..30 {
        assert_eq!(note(&host, "wrong", None).await.status, 401);
    }
    assert_eq!(note(&host, TONY, None).await.status, 202);
    let r = post_message(&host, TONY, json!({"type": "NOTE"})).await;
    assert_eq!(r.status, 202);
    host.stop().await;
}

/// Issue 28, hole 7: 20 bad `X-Shared-Secret` from 127.0.0.1 used to lock the operator's CLI out
/// (the admin bearer, same address) for the window, with nothing logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_bad_secrets_never_lock_the_operator_out_and_the_lockout_is_logged_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = unused_addr();
    let toml =
        config(3, 60, &[]).replace("[server]\n", &format!("[server]\nlisten = \"{addr}\"\n"));
    let host = BinHost::start(dir.path(), &toml, addr, "log").await;
    for _ in 0..10 {
        note(&host, "wrong", None).await;
    }
    assert_eq!(note(&host, TONY, None).await.status, 429, "the peer kind");
    // The admin bearer (the CLI), a console sign-in and a reply token are other kinds.
    assert_eq!(admin_get(&host, "/status").await.status, 200);
    let out = tokio::process::Command::new(bin())
        .args(["status", "--config"])
        .arg(dir.path().join("routes.toml"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run agent-inbox status");
    assert!(
        out.status.success(),
        "agent-inbox status: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = post_send(&host, Some("rt_bad"), r#"{"type": "STATUS"}"#).await;
    assert_eq!(r.status, 401, "{:#}", r.json);
    // And bad admin secrets lock out the admin kind only: a console sign-in is its own kind.
    for _ in 0..5 {
        let r = request(
            "GET",
            &host.url("/status"),
            &[("authorization", "Bearer nope")],
            "",
        )
        .await;
        assert!(matches!(r.status, 401 | 429), "{}", r.status);
    }
    assert_eq!(
        admin_get(&host, "/status").await.status,
        429,
        "the admin kind"
    );
    let signed_in = request(
        "POST",
        &host.url("/console/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("secret={ADMIN}"),
    )
    .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    // One line per address and kind that was locked out, naming both.
    let log = eventually(Duration::from_secs(5), "the lockout lines", || async {
        let log = host.log();
        (log.matches("too many failed credentials").count() >= 2).then_some(log)
    })
    .await;
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("too many failed credentials"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("credential=\"peer\"") && lines[0].contains("127.0.0.1"),
        "{log}"
    );
    assert!(lines[1].contains("credential=\"admin\""), "{log}");
    host.stop();
}

/// README (console): failed sign-ins count against `auth_failure_limit`, as their own kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_console_sign_ins_are_limited() {
    let host = start_host(&config(3, 60, &[])).await;
    let sign_in = |secret: &'static str| {
        let url = host.url("/console/login");
        async move {
            request(
                "POST",
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                format!("secret={secret}"),
            )
            .await
        }
    };
    for i in 0..3 {
        let r = sign_in("wrong-admin").await;
        assert_ne!(r.status, 303, "failure {i} signed in");
        assert_ne!(r.status, 429, "failure {i} limited early");
    }
    let limited = sign_in("wrong-admin").await;
    assert_eq!(limited.status, 429, "{}", limited.text);
    // The right secret is not checked while limited; a peer's own kind is not limited.
    assert_eq!(sign_in(ADMIN).await.status, 429);
    assert_eq!(note(&host, TONY, None).await.status, 202);
    host.stop().await;
}
