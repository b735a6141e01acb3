//! The web console in a real browser (chromium, through chromium-driver and selenium): sign in,
//! a conversation with a turn that runs and finishes live, a `<script>` payload that stays text,
//! a dead letter retried with a click. Screenshots go to target/console-shots/; the ones README
//! shows are kept in tests/screenshots/.

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
    // The console names threads by the inbox's own id (tony calls this one "browser-thread").
    let thread = view(&host, &m.id()).await["message"]["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-shots");
    let base = host.url("");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run_tool(
            "console_check.py",
            &[base.trim_end_matches('/'), ADMIN, &thread, path_str(&shots)],
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
    keep_screenshot("console-thread.png");
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
    // Nor with a token the page did not give.
    let write = request(
        "POST",
        &host.url("/admin/reload"),
        &[
            ("cookie", &cookie),
            ("x-csrf-token", "not-the-page-s-token"),
        ],
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
    // The session stands for the admin bearer: the reload ran (nothing changed).
    assert_eq!(write.status, 200, "{:#}", write.json);
    assert_eq!(write.json["status"], "unchanged", "{:#}", write.json);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_from_the_console_in_a_real_browser() {
    let tony = PeerServer::start().await;
    let toml = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
        .route("tasks", "approve", &quoted("inbound"))
        .build()
        + "[agents.planner]\ntoken = \"planner-token\"\napprove = \"outbound\"\n\
           may_send = [{ to = [\"tony\"], types = [\"TASK\"] }]\n";
    // The venv first (its first use installs it).
    tokio::task::spawn_blocking(tools_python).await.unwrap();
    let host = start_host(&toml).await;
    let waiting = |r: &Resp, id: &str| {
        r.json["approvals"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["approval"]["id"] == id))
    };

    // An earlier message of the thread, approved over the API: the thread the console shows has
    // a decided message with a reply before the one that waits.
    let first = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "thread_id": "release-thread", "payload": {"title": "Draft the notes"}}),
    )
    .await;
    assert_eq!(first.status, 202, "{:#}", first.json);
    let first = first.id();
    let ok = admin_post(
        &host,
        &format!("/admin/approvals/{first}/approve"),
        &json!({"by": "Bo Operator"}).to_string(),
    )
    .await;
    assert_eq!(ok.status, 200, "{:#}", ok.json);
    wait_turn_state(&host, &first, "done").await;
    tony.wait_for(1, Duration::from_secs(20)).await;

    // The one the browser approves: acked, its turn held.
    let m = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "thread_id": "release-thread", "payload": {
            "title": "Ship the release", "notes": "<b>not bold</b>"}}),
    )
    .await;
    assert_eq!(m.status, 202, "{:#}", m.json);
    let id = m.id();
    let list = admin_get(&host, "/admin/approvals").await;
    assert_eq!(list.status, 200, "{:#}", list.json);
    let items = list.json["approvals"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{:#}", list.json);
    assert_eq!(items[0]["approval"]["id"], id.as_str());
    assert_eq!(items[0]["approval"]["state"], "waiting");
    assert_eq!(items[0]["approval"]["kind"], "inbound");
    assert_eq!(items[0]["message"]["id"], id.as_str());
    assert_eq!(view(&host, &id).await["turn"]["state"], "awaiting_approval");
    // And a message the agent started, held before it leaves (the browser rejects it).
    let started = request(
        "POST",
        &host.url("/send"),
        &[
            ("authorization", "Bearer planner-token"),
            ("content-type", "application/json"),
        ],
        json!({"to": "tony", "type": "TASK", "payload": {"title": "Ask tony"}}).to_string(),
    )
    .await;
    assert_eq!(started.status, 202, "{:#}", started.json);
    let started = started.json["id"].as_str().unwrap().to_owned();

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-shots");
    let base = host.url("");
    let (run_id, run_started, run_shots) = (id.clone(), started.clone(), shots.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run_tool(
            "console_approval_check.py",
            &[
                base.trim_end_matches('/'),
                ADMIN,
                &run_id,
                &run_started,
                path_str(&run_shots),
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert!(ok, "the browser check failed:\n{out}");
    for step in [
        "signed in",
        "the nav shows 2 items waiting",
        "the held message waits in the queue, with its thread of 2 messages",
        "deciding without a name is refused in the browser",
        "rejecting without a reason is refused in the browser",
        "approved as Ada Reviewer; the item left the waiting list",
        "it is listed as decided: approved, by the approver, via the console",
        "the approver's name is remembered",
        "the thread shows the turn done, approved by the approver via the console",
        "the message the agent started: shown as the agent's, in its thread, rejected with a reason",
        "the conversations list has the thread the agent started",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    keep_screenshot("console-approvals.png");
    assert!(shots.join("console-approvals.png").is_file());

    // The approved turn ran and its reply reached tony; the decision is on the message.
    let got = tony.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].body["type"], "STATUS");
    let v = wait_turn_state(&host, &id, "done").await;
    let a = &v["approval"];
    assert_eq!(a["state"], "approved", "{v:#}");
    assert_eq!(a["via"], "console", "{v:#}");
    assert_eq!(a["decided_by"], "Ada Reviewer", "{v:#}");
    assert!(a["decision_reason"].is_null(), "{v:#}");
    assert!(!waiting(&admin_get(&host, "/admin/approvals").await, &id));
    // The rejected one never left.
    assert_eq!(
        tony.received().len(),
        2,
        "the message the agent started went out"
    );
    let v = view(&host, &started).await;
    assert_eq!(v["reply"]["deliveries"][0]["state"], "withheld", "{v:#}");
    assert_eq!(v["reply"]["approval"]["decision_reason"], "not this week");
    host.stop().await;
}

/// The operator's views in a real browser: conversations filtered and paged, a running turn
/// cancelled, a missing thread, dead letters retried as a selection, the config without secrets.
/// Its screenshots are kept in `tests/screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_views_work_in_a_real_browser() {
    let tony = PeerServer::start().await;
    // The first two replies are refused for good (two dead letters), the rest taken.
    tony.script([400, 400]);
    let toml = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
        .peer("mel", "http://127.0.0.1:9/message", "mel-secret-0123456789")
        .agent_route("slow", &["tony"], &["SLOW"], &["STATUS"], &["tony"])
        .route(
            "slow",
            "agent",
            &format!(
                "{{ command = {} }}",
                agent_command(&["--ticks", "40", "--sleep", "120"])
            ),
        )
        .agent_route("fail", &["tony"], &["FAIL"], &["STATUS"], &["tony"])
        .route(
            "fail",
            "agent",
            &format!(
                "{{ command = {}, on_failure = \"ignore\" }}",
                agent_command(&["--exit", "3"])
            ),
        )
        .mailbox("notes", &["mel"], &["NOTE"])
        .build();
    tokio::task::spawn_blocking(tools_python).await.unwrap();
    let host = start_host(&toml).await;
    // Enough notes, each its own thread, for a second page.
    for i in 0..55 {
        let n = post_message(
            &host,
            "mel-secret-0123456789",
            json!({"type": "NOTE", "payload": {"text": format!("Minutes of meeting {i}")}}),
        )
        .await;
        assert_eq!(n.status, 202);
    }
    for i in 0..2 {
        let t = post_message(
            &host,
            TONY,
            json!({"type": "TASK", "payload": {"title": format!("Plan step {i}")}}),
        )
        .await;
        assert_eq!(t.status, 202);
        delivery_in(&host, &t.id(), "dead").await;
    }
    let failed = post_message(
        &host,
        TONY,
        json!({"type": "FAIL", "payload": {"title": "The broken build"}}),
    )
    .await;
    wait_turn_state(&host, &failed.id(), "failed").await;
    let running = post_message(
        &host,
        TONY,
        json!({"type": "SLOW", "payload": {"title": "A long analysis"}}),
    )
    .await;
    wait_running(&host, &running.id()).await;
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("screenshots");
    let base = host.url("");
    let running_id = running.id();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run_tool(
            "console_views_check.py",
            &[
                base.trim_end_matches('/'),
                ADMIN,
                &running_id,
                path_str(&shots),
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert!(ok, "the browser check failed:\n{out}");
    for step in [
        "paged to older conversations by cursor",
        "the URL keeps the filter",
        "conversations show titles",
        "the running turn's output shows live",
        "cancelled the running turn from its thread, by name",
        "a missing thread says so",
        "as a selection; the nav counted them",
        "no secret",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    let turn = view(&host, &running.id()).await["turn"].clone();
    assert_eq!(turn["canceled"]["via"], "console", "{turn:#}");
    assert_eq!(turn["canceled"]["by"], "Ops Person", "{turn:#}");
    // The two retried dead letters went out.
    tony.wait_for(2, Duration::from_secs(20)).await;
    host.stop().await;
}

/// Copies a screenshot a browser check took into `tests/screenshots/`, where README shows it.
fn keep_screenshot(name: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let from = root.join("../target/console-shots").join(name);
    std::fs::copy(&from, root.join("screenshots").join(name))
        .unwrap_or_else(|e| panic!("keep {}: {e}", from.display()));
}
