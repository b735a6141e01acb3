//! The web console in a real browser (chromium, through chromium-driver and selenium): sign in,
//! a conversation with a turn that runs and finishes live, a `<script>` payload that stays text,
//! a dead letter retried with a click. Screenshots go to target/console-shots/.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let tony = PeerServer::start().await;
    // The agent's reply is refused for good once (a dead letter), then accepted.
    tony.script([400]);
    let toml = Toml::tasks(
        &tony.url(),
        &agent_command(&["--sleep", "8", "--reply", "STATUS"]),
    )
    .build();
    // The venv first (its first use installs it), so the browser comes while the turn runs.
    tokio::task::spawn_blocking(tools_python).await.unwrap();
    let host = start_host(&toml).await;
    let m = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "thread_id": "browser-thread", "payload": {
            "title": "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 1\">"}}),
    )
    .await;
    assert_eq!(m.status, 202);
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-shots");
    let base = host.url("");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run_tool(
            "console_check.py",
            &[
                base.trim_end_matches('/'),
                ADMIN,
                "browser-thread",
                path_str(&shots),
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert!(ok, "the browser check failed:\n{out}");
    for step in [
        "a wrong secret: the sign-in page again",
        "the session cookie is HttpOnly and SameSite=Strict",
        "the thread shows its turn running",
        "the turn finished, live",
        "did not run",
        "retried the dead letter",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    // The retry really went out.
    let got = tony.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["type"], "STATUS");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_needs_its_csrf_token_to_change_anything() {
    let host = start_host(&Toml::new().build()).await;
    let r = request(
        "POST",
        &host.url("/console/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("secret={ADMIN}"),
    )
    .await;
    assert_eq!(r.status, 303);
    let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    // A read with the cookie works; a write without the page's token does not.
    let read = request("GET", &host.url("/status"), &[("cookie", &cookie)], "").await;
    assert_eq!(read.status, 200);
    let write = request(
        "POST",
        &host.url("/admin/reload"),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(write.status, 401, "{:#}", write.json);
    // The page carries the token; with it the write goes through.
    let page = request("GET", &host.url("/console"), &[("cookie", &cookie)], "").await;
    let csrf = page
        .text
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page's CSRF token")
        .to_owned();
    let write = request(
        "POST",
        &host.url("/admin/reload"),
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        "",
    )
    .await;
    assert_ne!(write.status, 401, "{:#}", write.json);
    // The page forbids inline script and framing.
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    // A forged or expired cookie is nobody.
    let forged = request(
        "GET",
        &host.url("/status"),
        &[("cookie", "inbox_console=99999999999999.00")],
        "",
    )
    .await;
    assert_eq!(forged.status, 401);
    host.stop().await;
}
