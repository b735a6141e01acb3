//! The A2A front door: the official Python client end to end, and the edges in Rust (every error
//! code, another peer's task, a repeated messageId, a plugin's refusal, a reload of the card, a
//! task that survives kill -9).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agent_inbox_tests::*;
use serde_json::{Value, json};

const CLIENT: &str = "client-a2a-token";
const OTHER: &str = "other-a2a-token";

fn a2a_agent() -> String {
    agents_dir().join("a2a-agent.py").display().to_string()
}

/// Peers `client` and `other` (A2A only: tokens, no url), route `ask` as the default skill, whose
/// agent is tests/agents/a2a-agent.py; `route_keys` are more keys of the route, `agent_keys` more
/// keys of its agent.
fn config(route_keys: &str, agent_keys: &str) -> String {
    format!(
        r#"
[server]
admin_secret = "{ADMIN}"
[relay]
retry_schedule = ["0s", "1s", "1s", "1s", "2s", "2s", "4s"]
[a2a]
name = "Test inbox"
description = "A2A under test"
max_wait_secs = 20
allow_private_push_urls = true
[peers.client]
a2a_token = "{CLIENT}"
[peers.other]
a2a_token = "{OTHER}"
[routes.ask]
from = ["client", "other"]
reply_types = ["ANSWER", "QUESTION"]
agent = {{ command = ["python3", "{agent}", "-m", "{{prompt}}"], timeout_secs = 60, kill_grace_secs = 1 {agent_keys} }}
a2a = {{ type = "ASK", default = true, input_required_types = ["QUESTION"], tags = ["echo"] }}
{route_keys}
"#,
        agent = a2a_agent()
    )
}

/// One JSON-RPC call to `/a2a` with `token`; the whole answer.
async fn rpc_as(host: &impl Endpoint, token: &str, method: &str, params: Value) -> Resp {
    let auth = format!("Bearer {token}");
    request(
        "POST",
        &host.url("/a2a"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("a2a-version", "1.0"),
        ],
        json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string(),
    )
    .await
}

/// The `result` of a call as `client`; panics on an error.
async fn rpc(host: &impl Endpoint, method: &str, params: Value) -> Value {
    let r = rpc_as(host, CLIENT, method, params).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.get("error").is_none(), "{method}: {:#}", r.json);
    r.json["result"].clone()
}

/// The JSON-RPC error code of a call's answer (which must be an HTTP 200).
fn code(r: &Resp) -> i64 {
    assert_eq!(r.status, 200, "JSON-RPC errors travel in a 200: {}", r.text);
    r.json["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error: {:#}", r.json))
}

fn send_params(id: &str, text: &str) -> Value {
    json!({
        "message": {"messageId": id, "role": "ROLE_USER", "parts": [{"text": text}]},
        "configuration": {"returnImmediately": true}
    })
}

async fn wait_state(host: &impl Endpoint, id: &str, state: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let task = rpc(host, "GetTask", json!({"id": id})).await;
        if task["status"]["state"] == state {
            return task;
        }
        assert!(Instant::now() < end, "task never reached {state}: {task:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_drives_tasks_through_every_state() {
    let host = start_host(&config("", "")).await;
    let base = host.url("");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run_tool(
            "a2a_client.py",
            &[base.trim_end_matches('/'), CLIENT, OTHER, ADMIN],
            b"",
        )
    })
    .await
    .expect("the client ran");
    assert!(ok, "a2a-sdk client failed:\n{out}");
    for line in [
        "returnImmediately + GetTask: COMPLETED",
        "blocking SendMessage: COMPLETED",
        "follow-up in the same contextId",
        "INPUT_REQUIRED and its answer: COMPLETED",
        "CancelTask on a running turn: CANCELED",
        "'TASK_STATE_COMPLETED'] ['echo: sleep 1 streamed']",
        "push after the receiver came back",
        "another peer's GetTask: TaskNotFoundError",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // The push went through the outbox: its first attempt failed (the receiver was down), a
    // later one delivered it.
    let outbox = admin_get(&host, "/admin/outbox").await.json;
    let pushes: Vec<&Value> = outbox["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["reply"]["type"] == "A2A_PUSH" && i["delivery"]["state"] == "delivered")
        .collect();
    assert!(
        pushes
            .iter()
            .any(|i| i["delivery"]["attempts"].as_u64() >= Some(2)),
        "{outbox:#}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_spec_code_in_a_200() {
    let host = start_host(&config("", "")).await;
    let url = host.url("/a2a");
    let raw = |body: &'static str, content_type: &'static str| {
        let url = url.clone();
        async move {
            let auth = format!("Bearer {CLIENT}");
            request(
                "POST",
                &url,
                &[("authorization", &auth), ("content-type", content_type)],
                body,
            )
            .await
        }
    };
    assert_eq!(code(&raw("{not json", "application/json").await), -32700);
    assert_eq!(code(&raw("[]", "application/json").await), -32600);
    assert_eq!(
        code(
            &raw(
                r#"{"jsonrpc":"2.0","id":1,"method":"Nope"}"#,
                "application/json"
            )
            .await
        ),
        -32601
    );
    assert_eq!(
        code(
            &raw(
                r#"{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{}}"#,
                "application/json"
            )
            .await
        ),
        -32602
    );
    let wrong_type = raw(
        r#"{"jsonrpc":"2.0","id":1,"method":"GetTask"}"#,
        "text/plain",
    )
    .await;
    assert_eq!(code(&wrong_type), -32005);
    let unknown = rpc_as(&host, CLIENT, "GetTask", json!({"id": "nope"})).await;
    assert_eq!(code(&unknown), -32001);
    assert_eq!(
        unknown.json["error"]["data"][0]["reason"], "TASK_NOT_FOUND",
        "{:#}",
        unknown.json
    );
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "CancelTask", json!({"id": "nope"})).await),
        -32001
    );
    // A finished task: cannot be cancelled (-32002), takes no message (-32004), has no stream.
    let done = rpc(&host, "SendMessage", send_params("e-1", "hi")).await;
    let id = done["task"]["id"].as_str().unwrap().to_owned();
    wait_state(&host, &id, "TASK_STATE_COMPLETED").await;
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "CancelTask", json!({"id": id})).await),
        -32002
    );
    let mut more = send_params("e-2", "more");
    more["message"]["taskId"] = json!(id);
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "SendMessage", more).await),
        -32004
    );
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "SubscribeToTask", json!({"id": id})).await),
        -32004
    );
    assert_eq!(
        code(
            &rpc_as(
                &host,
                CLIENT,
                "CreateTaskPushNotificationConfig",
                json!({"taskId": "nope", "url": "https://example.com/hook"})
            )
            .await
        ),
        -32001
    );
    // A url part is not fetched; a big raw part is not taken.
    let url_part = json!({"message": {"messageId": "e-3", "role": "ROLE_USER",
        "parts": [{"url": "https://example.com/x.pdf", "mediaType": "application/pdf"}]}});
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "SendMessage", url_part).await),
        -32005
    );
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "GetExtendedAgentCard", json!({})).await),
        -32007
    );
    // An unknown skill names the ones there are.
    let mut skill = send_params("e-4", "hi");
    skill["message"]["metadata"] = json!({"skill": "nope"});
    let r = rpc_as(&host, CLIENT, "SendMessage", skill).await;
    assert_eq!(code(&r), -32602);
    assert!(
        r.json["error"]["message"].as_str().unwrap().contains("ask"),
        "{:#}",
        r.json
    );
    // Versions: 1.0 only; 0.3's methods without the header are 0.3.
    let v = |version: &'static str, method: &'static str| {
        let url = host.url("/a2a");
        async move {
            let auth = format!("Bearer {CLIENT}");
            let mut headers = vec![
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ];
            if !version.is_empty() {
                headers.push(("a2a-version", version));
            }
            request(
                "POST",
                &url,
                &headers,
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"id": "x"}})
                    .to_string(),
            )
            .await
        }
    };
    assert_eq!(code(&v("99.0", "GetTask").await), -32009);
    assert_eq!(code(&v("0.3", "GetTask").await), -32009);
    assert_eq!(code(&v("", "tasks/get").await), -32009);
    assert_eq!(
        code(&v("", "GetTask").await),
        -32001,
        "no header: served as 1.0"
    );
    // Only authentication is an HTTP error: 401 with the scheme, and 413 for a body too big.
    let r = rpc_as(&host, "wrong-token", "GetTask", json!({"id": "x"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let big = json!({"message": {"messageId": "big", "role": "ROLE_USER",
        "parts": [{"text": "x".repeat(300_000)}]}});
    assert_eq!(rpc_as(&host, CLIENT, "SendMessage", big).await.status, 413);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_visible_only_to_its_peer_and_the_admin() {
    let host = start_host(&config("", "")).await;
    let mine = rpc(&host, "SendMessage", send_params("v-1", "mine")).await;
    let id = mine["task"]["id"].as_str().unwrap().to_owned();
    for (method, params) in [
        ("GetTask", json!({"id": id})),
        ("CancelTask", json!({"id": id})),
        ("SubscribeToTask", json!({"id": id})),
        (
            "SendMessage",
            json!({"message": {"messageId": "v-2", "role": "ROLE_USER", "taskId": id,
                "parts": [{"text": "hijack"}]}}),
        ),
    ] {
        let r = rpc_as(&host, OTHER, method, params).await;
        assert_eq!(code(&r), -32001, "{method}: {:#}", r.json);
        assert!(
            !r.text.contains("mine"),
            "{method} leaked the task: {}",
            r.text
        );
    }
    let theirs = rpc_as(&host, OTHER, "ListTasks", json!({})).await;
    assert_eq!(
        theirs.json["result"]["tasks"],
        json!([]),
        "{:#}",
        theirs.json
    );
    assert_eq!(theirs.json["result"]["nextPageToken"], "");
    let admin = rpc_as(&host, ADMIN, "GetTask", json!({"id": id})).await;
    assert_eq!(
        admin.json["result"]["id"],
        json!(id),
        "the admin reads every task"
    );
    let listed = rpc(&host, "ListTasks", json!({"includeArtifacts": true})).await;
    assert_eq!(listed["tasks"][0]["id"], json!(id));
    assert_eq!(listed["totalSize"], 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_message_id_answers_with_the_same_task_and_runs_one_turn() {
    let host = start_host(&config("", "")).await;
    let a = rpc(&host, "SendMessage", send_params("dup-1", "once")).await;
    let b = rpc(&host, "SendMessage", send_params("dup-1", "once")).await;
    assert_eq!(a["task"]["id"], b["task"]["id"]);
    let id = a["task"]["id"].as_str().unwrap().to_owned();
    wait_state(&host, &id, "TASK_STATE_COMPLETED").await;
    let listed = admin_get(&host, "/messages").await.json;
    assert_eq!(
        listed["messages"].as_array().unwrap().len(),
        1,
        "{listed:#}"
    );
    // The same messageId from another peer is another peer's message.
    let c = rpc_as(&host, OTHER, "SendMessage", send_params("dup-1", "once")).await;
    assert_ne!(c.json["result"]["task"]["id"], a["task"]["id"]);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_refusal_is_a_rejected_task_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = install_plugin("task-schema", dir.path(), "schema.wasm");
    let keys = format!(
        "plugin = {}\nplugin_config = {{ max_len = {{ text = 10 }} }}",
        quoted(path_str(&plugin))
    );
    let host = start_host_in(&config(&keys, ""), dir).await;
    let r = rpc(
        &host,
        "SendMessage",
        send_params("p-1", "far more than ten characters"),
    )
    .await;
    let task = &r["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_REJECTED", "{r:#}");
    let reason = task["status"]["message"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(reason.contains("text"), "{reason}");
    // Stored: GetTask reads it later, and no turn ran.
    let id = task["id"].as_str().unwrap();
    let again = rpc(&host, "GetTask", json!({"id": id})).await;
    assert_eq!(again["status"]["state"], "TASK_STATE_REJECTED");
    let ok = rpc(&host, "SendMessage", send_params("p-2", "short")).await;
    let ok_id = ok["task"]["id"].as_str().unwrap().to_owned();
    wait_state(&host, &ok_id, "TASK_STATE_COMPLETED").await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_a_running_agent_and_drops_a_queued_turn() {
    // One agent at a time, so the second task waits in the queue.
    let host = start_host(&config("", ", max_concurrent = 1")).await;
    let running = rpc(&host, "SendMessage", send_params("c-1", "sleep 30")).await;
    let queued = rpc(&host, "SendMessage", send_params("c-2", "after")).await;
    let (r, q) = (
        running["task"]["id"].as_str().unwrap().to_owned(),
        queued["task"]["id"].as_str().unwrap().to_owned(),
    );
    wait_state(&host, &r, "TASK_STATE_WORKING").await;
    assert_eq!(
        rpc(&host, "GetTask", json!({"id": q})).await["status"]["state"],
        "TASK_STATE_SUBMITTED"
    );
    let t0 = Instant::now();
    let q_canceled = rpc(&host, "CancelTask", json!({"id": q})).await;
    assert_eq!(q_canceled["status"]["state"], "TASK_STATE_CANCELED");
    let r_canceled = rpc(&host, "CancelTask", json!({"id": r})).await;
    assert_eq!(r_canceled["status"]["state"], "TASK_STATE_CANCELED");
    // The agent's process group is signalled at once: its turn ends long before its 30 s sleep.
    let listed = admin_get(&host, "/messages").await.json;
    let ids: Vec<String> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    // One message per task (r running, q queued): an empty list would check nothing.
    assert_eq!(ids.len(), 2, "{listed:#}");
    for id in &ids {
        let v = wait_turn_end(&host, ADMIN, id).await;
        assert_eq!(v["turn"]["state"], "canceled", "{v:#}");
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // Cancelled stays cancelled once the turns have ended (nothing of theirs is left to land),
    // and cancelling again is refused as not cancelable.
    assert_eq!(
        rpc(&host, "GetTask", json!({"id": r})).await["status"]["state"],
        "TASK_STATE_CANCELED"
    );
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "CancelTask", json!({"id": r})).await),
        -32002
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_follows_the_config_and_its_reloads() {
    let host = start_host(&config("", "")).await;
    let card = request("GET", &host.url("/.well-known/agent-card.json"), &[], "").await;
    assert_eq!(card.status, 200);
    let c = &card.json;
    assert_eq!(c["name"], "Test inbox");
    assert_eq!(
        c["supportedInterfaces"][0],
        json!({"url": host.url("/a2a"), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"})
    );
    assert!(c.get("url").is_none(), "no 0.3-style top-level url");
    assert_eq!(c["skills"][0]["id"], "ask");
    assert_eq!(
        c["securityRequirements"][0]["schemes"]["bearer"],
        json!({"list": []})
    );
    assert_eq!(
        c["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );
    // Validators, so that a client re-reads the card only when it changed (CARD-CACHE-002).
    let url = host.url("/.well-known/agent-card.json");
    let etag = card.headers["etag"].to_str().unwrap().to_owned();
    let modified = card.headers["last-modified"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(httpdate_ok(&modified), "{modified}");
    let again = request("GET", &url, &[("if-none-match", &etag)], "").await;
    assert_eq!(again.status, 304);
    assert!(again.text.is_empty());
    assert_eq!(again.headers["etag"], etag.as_str());
    let weak = format!("\"other\", W/{etag}");
    let again = request("GET", &url, &[("if-none-match", &weak)], "").await;
    assert_eq!(again.status, 304);
    let since = request("GET", &url, &[("if-modified-since", &modified)], "").await;
    assert_eq!(since.status, 304);
    let other = request("GET", &url, &[("if-none-match", "\"other\"")], "").await;
    assert_eq!(other.status, 200);
    assert_eq!(
        other.headers["etag"],
        etag.as_str(),
        "the same bytes, the same tag"
    );
    assert_eq!(other.headers["last-modified"], modified.as_str());
    host.rewrite_config(&config("", "").replace(
        "tags = [\"echo\"] }",
        "tags = [\"echo\"], skill = \"echo\", name = \"Echo\" }",
    ));
    // The file watcher may have swapped it in already: then this reload finds it unchanged.
    let reloaded = admin_post(&host, "/admin/reload", "").await;
    assert_eq!(reloaded.status, 200, "{:#}", reloaded.json);
    let card = request("GET", &host.url("/.well-known/agent-card.json"), &[], "").await;
    assert_eq!(card.json["skills"][0]["id"], "echo", "{:#}", card.json);
    assert_eq!(card.json["skills"][0]["name"], "Echo");
    // The reload changed the card: the old tag no longer matches.
    assert_ne!(card.headers["etag"], etag.as_str());
    let stale = request("GET", &url, &[("if-none-match", &etag)], "").await;
    assert_eq!(stale.status, 200);
    host.stop().await;
}

/// An IMF-fixdate, as HTTP dates are sent ("Sun, 06 Nov 1994 08:49:37 GMT").
fn httpdate_ok(d: &str) -> bool {
    d.len() == 29 && d.ends_with(" GMT") && d.as_bytes()[3] == b','
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_kill_9_and_completes_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = unused_addr();
    let toml = config("", "").replace(
        "[server]\n",
        &format!("[server]\nlisten = \"{addr}\"\ndata_dir = \"data\"\n"),
    );
    // Debug logging, so that no line about the push config can hide its secrets.
    let env = [("RUST_LOG", "debug")];
    let mut inbox = BinHost::start_with_env(dir.path(), &toml, addr, "first.log", &env).await;
    // A push config whose token and credentials must never reach the log (its receiver is down).
    let mut params = send_params("k-1", "sleep 2");
    params["configuration"]["taskPushNotificationConfig"] = json!({
        "url": "http://127.0.0.1:9/hook", "token": "push-token-4d1e",
        "authentication": {"scheme": "Bearer", "credentials": "push-credential-93ab"}
    });
    let running = rpc(&inbox, "SendMessage", params).await;
    let id = running["task"]["id"].as_str().unwrap().to_owned();
    wait_state(&inbox, &id, "TASK_STATE_WORKING").await;
    inbox.kill9();
    let inbox = BinHost::start(dir.path(), &toml, addr, "second.log").await;
    // Recovery re-runs the interrupted turn (on_interrupt = "rerun"), and the task follows it.
    let task = wait_state(&inbox, &id, "TASK_STATE_COMPLETED").await;
    let texts: Vec<&str> = task["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["parts"][0]["text"].as_str())
        .collect();
    assert!(texts.contains(&"echo: sleep 2"), "{task:#}");
    assert_eq!(task["history"][0]["messageId"], "k-1");
    // The pushes were tried (and failed: nothing listens), and logged without their secrets.
    let outbox = admin_get(&inbox, "/admin/outbox").await.json;
    assert!(
        outbox["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["reply"]["type"] == "A2A_PUSH"),
        "{outbox:#}"
    );
    // Its delivery attempts are counted under the peer label `a2a-push`.
    eventually(
        Duration::from_secs(20),
        "a push attempt counted",
        || async {
            let m = admin_get(&inbox, "/metrics").await.text;
            m.lines()
                .any(|l| {
                    l.starts_with("inbox_delivery_attempts_total{")
                        && l.contains(r#"peer="a2a-push""#)
                })
                .then_some(())
        },
    )
    .await;
    inbox.stop();
    for log in ["first.log", "second.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        for secret in ["push-token-4d1e", "push-credential-93ab"] {
            assert!(!text.contains(secret), "{secret} in {log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_urls_to_private_addresses_are_refused() {
    let host = start_host(&config("", "").replace("allow_private_push_urls = true", "")).await;
    let done = rpc(&host, "SendMessage", send_params("s-1", "hi")).await;
    let id = done["task"]["id"].as_str().unwrap().to_owned();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        // IPv6 forms that carry 127.0.0.1: compatible, 6to4, Teredo (client inverted), and the
        // local-use NAT64 prefix.
        "http://[::127.0.0.1]:9/hook",
        "http://[2002:7f00:1::]:9/hook",
        "http://[2001:0:808:808::80ff:fffe]:9/hook",
        "http://[64:ff9b:1::7f00:1]:9/hook",
        "ftp://example.com/hook",
    ] {
        let r = rpc_as(
            &host,
            CLIENT,
            "CreateTaskPushNotificationConfig",
            json!({"taskId": id, "url": url}),
        )
        .await;
        assert_eq!(code(&r), -32602, "{url}: {:#}", r.json);
    }
    // Inline, it is refused before a task is made.
    let mut inline = send_params("s-2", "hi");
    inline["configuration"]["taskPushNotificationConfig"] = json!({"url": "http://127.0.0.1:9/x"});
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "SendMessage", inline).await),
        -32602
    );
    let listed = rpc(&host, "ListTasks", json!({})).await;
    assert_eq!(listed["totalSize"], 1, "{listed:#}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_blocking_calls_end_with_the_task_as_it_stands_on_shutdown() {
    let toml = config("", "").replace("[server]\n", "[server]\ndrain_secs = 20\n");
    let host = start_host(&toml).await;
    let long = rpc(&host, "SendMessage", send_params("d-1", "sleep 15")).await;
    let id = long["task"]["id"].as_str().unwrap().to_owned();
    wait_state(&host, &id, "TASK_STATE_WORKING").await;
    // The stream's first frame (the task as it stands) says the inbox follows it.
    let auth = format!("Bearer {CLIENT}");
    let stream = open_stream(
        "POST",
        &host.url("/a2a"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &json!({"jsonrpc": "2.0", "id": 9, "method": "SubscribeToTask", "params": {"id": id}})
            .to_string(),
    )
    .await;
    let stream = tokio::spawn(stream.rest());
    let blocking = tokio::spawn(rpc_as_owned(
        host.url("/a2a"),
        "SendMessage",
        json!({"message": {"messageId": "d-2", "role": "ROLE_USER", "parts": [{"text": "sleep 15"}]}}),
    ));
    // The blocking call's task exists: the call now waits on it.
    eventually(
        Duration::from_secs(10),
        "the blocking call's task",
        || async { (rpc(&host, "ListTasks", json!({})).await["totalSize"] == 2).then_some(()) },
    )
    .await;
    let t0 = Instant::now();
    let stopping = tokio::spawn(host.stop());
    // Both end within a second or so of the drain, long before the turns (15 s) or the drain
    // (20 s) would.
    let stream = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("the stream ends on shutdown")
        .unwrap();
    assert!(
        stream.headers["content-type"] == "text/event-stream",
        "{}",
        stream.text
    );
    let last = stream
        .text
        .lines()
        .rfind(|l| l.starts_with("data: "))
        .unwrap();
    assert!(last.contains("TASK_STATE_WORKING"), "{}", stream.text);
    let blocked = tokio::time::timeout(Duration::from_secs(5), blocking)
        .await
        .expect("the blocking call answers on shutdown")
        .unwrap();
    let state = &blocked.json["result"]["task"]["status"]["state"];
    assert!(
        state == "TASK_STATE_WORKING" || state == "TASK_STATE_SUBMITTED",
        "{:#}",
        blocked.json
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // A panic in the stop (a hang, an error) fails the test here.
    stopping.await.expect("the host stopped cleanly");
}

async fn rpc_as_owned(url: String, method: &'static str, params: Value) -> Resp {
    let auth = format!("Bearer {CLIENT}");
    request(
        "POST",
        &url,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_no_private_address_once_they_are_disallowed() {
    // Allowed when the config is set, then disallowed by a reload: the push that follows is
    // refused at connect time, whatever the URL said when it was accepted.
    let receiver = PeerServer::start().await;
    receiver.otherwise(200);
    let host = start_host(&config("", "")).await;
    let hook = receiver.url().replace("127.0.0.1", "localhost");
    let mut params = send_params("r-1", "sleep 2");
    params["configuration"]["taskPushNotificationConfig"] = json!({"url": hook});
    let sent = rpc(&host, "SendMessage", params).await;
    let id = sent["task"]["id"].as_str().unwrap().to_owned();
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let before = status(&host).await["config_hash"].clone();
    host.rewrite_config(&config("", "").replace("allow_private_push_urls = true", ""));
    let r = admin_post(&host, "/admin/reload", "").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    assert_ne!(r.json["config_hash"], before, "the new config is in force");
    let before = receiver.received().len();
    wait_state(&host, &id, "TASK_STATE_COMPLETED").await;
    let dead = eventually(Duration::from_secs(20), "the push to fail", || async {
        let outbox = admin_get(&host, "/admin/outbox?dead=1").await.json;
        outbox["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reply"]["type"] == "A2A_PUSH")
            .cloned()
    })
    .await;
    let error = dead["delivery"]["last_error"].as_str().unwrap_or("");
    assert!(error.contains("public address"), "{dead:#}");
    assert_eq!(receiver.received().len(), before, "nothing more arrived");
    host.stop().await;
}

/// Issue 28, hole 7: on `/a2a` a 429 of the auth-failure limiter is a JSON-RPC error object that
/// an A2A client can read, and bad A2A tokens do not lock the admin out on the same address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_a2a_client_over_its_auth_failure_limit_reads_a_json_rpc_error() {
    let toml = config("", "").replace("[server]\n", "[server]\nauth_failure_limit = 3\n");
    let host = start_host(&toml).await;
    for _ in 0..3 {
        let r = rpc_as(&host, "wrong-token", "ListTasks", json!({})).await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let r = rpc_as(&host, CLIENT, "ListTasks", json!({})).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.json["jsonrpc"], "2.0", "{:#}", r.json);
    assert_eq!(r.json["id"], Value::Null, "{:#}", r.json);
    assert_eq!(r.json["error"]["code"], -32029, "{:#}", r.json);
    assert_eq!(
        r.json["error"]["data"][0]["reason"], "TOO_MANY_AUTH_FAILURES",
        "{:#}",
        r.json
    );
    assert_eq!(admin_get(&host, "/status").await.status, 200);
    host.stop().await;
}

/// Issue 28, hole 3, on A2A: a `contextId` is the caller's own name for a thread. Two peers that
/// pick the same one get two threads (two agent sessions); a malformed one is `InvalidParams`,
/// and a malformed task id is `TaskNotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_that_pick_the_same_context_id_get_two_threads() {
    let host = start_host(&config("", "")).await;
    let in_context = |token: &'static str, id: &'static str| {
        let host = &host;
        async move {
            let mut p = send_params(id, "hi");
            p["message"]["contextId"] = json!("ctx-1");
            let r = rpc_as(host, token, "SendMessage", p).await;
            assert!(r.json.get("error").is_none(), "{:#}", r.json);
            r.json["result"]["task"]["id"].as_str().unwrap().to_owned()
        }
    };
    let mine = in_context(CLIENT, "m-1").await;
    let theirs = in_context(OTHER, "m-2").await;
    let thread = |task: Value| {
        task["artifacts"][0]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|p| p["data"]["payload"]["thread"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no thread in {task:#}"))
    };
    let mine = wait_state(&host, &mine, "TASK_STATE_COMPLETED").await;
    let auth = format!("Bearer {OTHER}");
    let theirs_task = eventually(Duration::from_secs(30), "the other task", || async {
        let r = request(
            "POST",
            &host.url("/a2a"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("a2a-version", "1.0"),
            ],
            json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": theirs}})
                .to_string(),
        )
        .await;
        (r.json["result"]["status"]["state"] == "TASK_STATE_COMPLETED")
            .then_some(r.json["result"].clone())
    })
    .await;
    assert_eq!(mine["contextId"], "ctx-1");
    assert_eq!(theirs_task["contextId"], "ctx-1");
    assert_ne!(
        thread(mine.clone()),
        thread(theirs_task.clone()),
        "{mine:#} {theirs_task:#}"
    );
    for bad in ["ctx\n1", "a b", "ctx\u{0}", &"c".repeat(129)] {
        let mut p = send_params("m-3", "hi");
        p["message"]["contextId"] = json!(bad);
        let r = rpc_as(&host, CLIENT, "SendMessage", p).await;
        assert_eq!(code(&r), -32602, "{bad:?}: {:#}", r.json);
    }
    for bad in ["m\n4", "m\u{1b}"] {
        let r = rpc_as(&host, CLIENT, "SendMessage", send_params(bad, "hi")).await;
        assert_eq!(code(&r), -32602, "messageId {bad:?}: {:#}", r.json);
    }
    let r = rpc_as(&host, CLIENT, "GetTask", json!({"id": "t\n1"})).await;
    assert_eq!(code(&r), -32001, "{:#}", r.json);
    assert!(
        !r.text.contains("t\\n1"),
        "a malformed id is not echoed: {}",
        r.text
    );
    // Numbers and strings that would not read back are a parse error (in a 200).
    for body in [
        r#"{"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {"n": 1e999}}"#,
        r#"{"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {"s": "\ud800"}}"#,
    ] {
        let auth = format!("Bearer {CLIENT}");
        let r = request(
            "POST",
            &host.url("/a2a"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("a2a-version", "1.0"),
            ],
            body,
        )
        .await;
        assert_eq!(code(&r), -32700, "{body}: {}", r.text);
    }
    host.stop().await;
}

/// README (A2A auth and methods): the admin reads, lists and cancels every task and creates
/// none; a signed peer's signing key is never a bearer; a follow-up whose `contextId` is not its
/// task's is `InvalidParams`; `ListTasks` pages (`pageSize` 1-100, default 50, `pageToken`); a
/// blocking `SendMessage` answers after `max_wait_secs` with the task as it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_lists_every_task_and_paging_and_waiting_keep_their_bounds() {
    const KEY: &str = "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=";
    let signer = format!(
        "[peers.signer]\nurl = \"http://127.0.0.1:9/message\"\nauth = \"standard-webhooks\"\nsecret = \"{KEY}\"\n"
    );
    let toml = config("", "")
        .replace("max_wait_secs = 20", "max_wait_secs = 2")
        .replace("timeout_secs = 60", "timeout_secs = 60, max_concurrent = 1")
        .replace("[server]\n", "[server]\ndrain_secs = 1\n")
        + &signer;
    let host = start_host(&toml).await;

    // The signing key is no bearer.
    assert_eq!(rpc_as(&host, KEY, "ListTasks", json!({})).await.status, 401);

    // Blocking: the first turn runs 15 s; the call answers after max_wait_secs (2 s).
    let t0 = Instant::now();
    let blocking = rpc(
        &host,
        "SendMessage",
        json!({"message": {"messageId": "w-1", "role": "ROLE_USER", "parts": [{"text": "sleep 15"}]}}),
    )
    .await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    let first = blocking["task"]["id"].as_str().unwrap().to_owned();
    let context = blocking["task"]["contextId"].as_str().unwrap().to_owned();
    assert_eq!(blocking["task"]["status"]["state"], "TASK_STATE_WORKING");

    // A follow-up naming the task with another context.
    let mut follow = send_params("w-2", "more");
    follow["message"]["taskId"] = json!(first);
    follow["message"]["contextId"] = json!(format!("{context}-other"));
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "SendMessage", follow).await),
        -32602
    );

    // 51 more tasks from client (queued behind the first), and one from the other peer.
    for i in 0..51 {
        rpc(&host, "SendMessage", send_params(&format!("p-{i}"), "hi")).await;
    }
    let theirs = rpc_as(&host, OTHER, "SendMessage", send_params("o-1", "hi")).await;
    assert!(theirs.json.get("error").is_none(), "{:#}", theirs.json);
    let page = rpc(&host, "ListTasks", json!({})).await;
    assert_eq!(
        page["tasks"].as_array().unwrap().len(),
        50,
        "default pageSize"
    );
    assert_eq!(page["totalSize"], 52);
    let token = page["nextPageToken"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let rest = rpc(&host, "ListTasks", json!({"pageToken": token})).await;
    assert_eq!(rest["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(
        code(&rpc_as(&host, CLIENT, "ListTasks", json!({"pageSize": 101})).await),
        -32602
    );
    // 0 is protobuf's "not set": the default.
    let zero = rpc(&host, "ListTasks", json!({"pageSize": 0})).await;
    assert_eq!(zero["tasks"].as_array().unwrap().len(), 50);

    // The filters: by context, by state; and historyLength cuts the history.
    let by_context = rpc(&host, "ListTasks", json!({"contextId": context})).await;
    assert_eq!(by_context["totalSize"], 1, "{by_context:#}");
    let working = rpc(&host, "ListTasks", json!({"status": "TASK_STATE_WORKING"})).await;
    assert_eq!(working["totalSize"], 1, "{working:#}");
    assert_eq!(working["tasks"][0]["id"], first.as_str());
    let bare = rpc(&host, "GetTask", json!({"id": first, "historyLength": 0})).await;
    assert!(
        bare["history"].as_array().is_none_or(Vec::is_empty),
        "{bare:#}"
    );

    // The admin sees all 53, cancels the other peer's, and creates nothing.
    let all = rpc_as(&host, ADMIN, "ListTasks", json!({"pageSize": 100})).await;
    assert_eq!(all.json["result"]["totalSize"], 53, "{:#}", all.json);
    let other_id = theirs.json["result"]["task"]["id"].as_str().unwrap();
    let canceled = rpc_as(&host, ADMIN, "CancelTask", json!({"id": other_id})).await;
    assert_eq!(
        canceled.json["result"]["status"]["state"], "TASK_STATE_CANCELED",
        "{:#}",
        canceled.json
    );
    assert_eq!(
        code(&rpc_as(&host, ADMIN, "SendMessage", send_params("a-1", "hi")).await),
        -32004
    );
    let after = rpc_as(&host, ADMIN, "ListTasks", json!({"pageSize": 100})).await;
    assert_eq!(after.json["result"]["totalSize"], 53);
    host.stop().await;
}

/// README (`CancelTask`): the cancelled turn's reply token stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_tasks_reply_token_stops_working() {
    let record = tempfile::tempdir().unwrap();
    let gate = record.path().join("never");
    let command = agent_command(&[
        "--record",
        path_str(record.path()),
        "--wait-for",
        path_str(&gate),
        "--reply",
        "ANSWER",
    ]);
    // The route's agent, made one that records its environment and waits.
    let toml = config("", "");
    let (head, tail) = toml.split_once("agent = { command = ").unwrap();
    let tail = &tail[tail.find(", timeout_secs").unwrap()..];
    let host = start_host(&format!("{head}agent = {{ command = {command}{tail}")).await;
    let sent = rpc(&host, "SendMessage", send_params("c-1", "hi")).await;
    let id = sent["task"]["id"].as_str().unwrap().to_owned();
    wait_state(&host, &id, "TASK_STATE_WORKING").await;
    let messages = admin_get(&host, "/messages").await.json;
    let message = messages["messages"][0]["id"].as_str().unwrap().to_owned();
    let token = read_record(record.path(), &message).await["environ"]["INBOX_REPLY_TOKEN"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"type": "ANSWER", "payload": {}}).to_string();
    let canceled = rpc(&host, "CancelTask", json!({"id": id})).await;
    assert_eq!(canceled["status"]["state"], "TASK_STATE_CANCELED");
    let r = post_send(&host, Some(&token), &body).await;
    assert_eq!(r.status, 401, "{}", r.text);
    host.stop().await;
}

/// README (parts become the payload): text parts joined as `text`, data parts under `data`,
/// raw parts inline up to 64 KiB (`text/*` as text, `application/json` as data, anything else
/// kept under `files` with its media type and name), `metadata` under `metadata`; a `url` part
/// or a bigger raw one is `-32005`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_become_the_payload_and_nothing_is_fetched() {
    let host = start_host(&config("", "")).await;
    // "hello", {"j":2} and four PNG-ish bytes, in base64.
    let (hello, json_raw, png) = ("aGVsbG8=", "eyJqIjoyfQ==", "iVBORw==");
    let sent = rpc(
        &host,
        "SendMessage",
        json!({
            "message": {
                "messageId": "parts-1", "role": "ROLE_USER",
                "metadata": {"m": 1},
                "parts": [
                    {"text": "a"},
                    {"data": {"k": 1}},
                    {"raw": hello, "mediaType": "text/plain; charset=utf-8"},
                    {"raw": json_raw, "mediaType": "application/json"},
                    {"raw": png, "mediaType": "image/png", "filename": "dot.png"},
                    {"text": "b"}
                ]
            },
            "configuration": {"returnImmediately": true}
        }),
    )
    .await;
    assert!(sent["task"]["id"].is_string(), "{sent:#}");
    let listed = admin_get(&host, "/messages").await.json;
    let id = listed["messages"][0]["id"].as_str().unwrap().to_owned();
    let payload = view(&host, &id).await["message"]["payload"].clone();
    assert_eq!(
        payload,
        json!({
            "text": "a\n\nhello\n\nb",
            "data": [{"k": 1}, {"j": 2}],
            "files": [{"raw": png, "mediaType": "image/png", "filename": "dot.png"}],
            "metadata": {"m": 1}
        })
    );
    let big = "A".repeat((64 * 1024 + 3) / 3 * 4 + 4);
    for (n, part) in [
        json!({"url": "https://example.com/file.txt"}),
        json!({"raw": big, "mediaType": "application/octet-stream"}),
    ]
    .into_iter()
    .enumerate()
    {
        let r = rpc_as(
            &host,
            CLIENT,
            "SendMessage",
            json!({"message": {"messageId": format!("too-{n}"), "role": "ROLE_USER", "parts": [part]}}),
        )
        .await;
        assert_eq!(code(&r), -32005, "{:#}", r.json);
    }
    host.stop().await;
}

/// README (push configs): at most 10 per task; `Delete...` is idempotent; secrets never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_takes_ten_push_configs_and_deleting_twice_is_fine() {
    let host = start_host(&config("", "")).await;
    let sent = rpc(&host, "SendMessage", send_params("push-1", "hi")).await;
    let task = sent["task"]["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for n in 0..10 {
        let made = rpc(
            &host,
            "CreateTaskPushNotificationConfig",
            json!({"taskId": task, "url": format!("http://127.0.0.1:9/hook-{n}"), "token": "tok-secret-9"}),
        )
        .await;
        ids.push(made["id"].as_str().expect("an id").to_owned());
    }
    let eleventh = rpc_as(
        &host,
        CLIENT,
        "CreateTaskPushNotificationConfig",
        json!({"taskId": task, "url": "http://127.0.0.1:9/hook-10"}),
    )
    .await;
    assert_eq!(code(&eleventh), -32602, "{:#}", eleventh.json);
    let listed = push_configs(&host, &task).await;
    assert_eq!(
        listed["configs"].as_array().map(Vec::len),
        Some(10),
        "{listed:#}"
    );
    assert!(!listed.to_string().contains("tok-secret-9"), "{listed:#}");
    for _ in 0..2 {
        rpc(
            &host,
            "DeleteTaskPushNotificationConfig",
            json!({"taskId": task, "id": ids[0]}),
        )
        .await;
    }
    let listed = push_configs(&host, &task).await;
    assert_eq!(
        listed["configs"].as_array().map(Vec::len),
        Some(9),
        "{listed:#}"
    );
    host.stop().await;
}

async fn push_configs(host: &impl Endpoint, task: &str) -> Value {
    rpc(
        host,
        "ListTaskPushNotificationConfigs",
        json!({"taskId": task}),
    )
    .await
}

/// README (A2A states): a task whose message waits for approval is `SUBMITTED`; rejected, it is
/// `REJECTED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_task_is_submitted_then_rejected_and_a_held_reply_keeps_it_working() {
    let host = start_host(&config("approve = \"inbound\"", "")).await;
    let sent = rpc(&host, "SendMessage", send_params("held-1", "hi")).await;
    let id = sent["task"]["id"].as_str().unwrap().to_owned();
    let listed = admin_get(&host, "/messages").await.json;
    let message = listed["messages"][0]["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), "the message held", || async {
        (view(&host, &message).await["turn"]["state"] == "awaiting_approval").then_some(())
    })
    .await;
    let task = rpc(&host, "GetTask", json!({"id": id})).await;
    assert_eq!(task["status"]["state"], "TASK_STATE_SUBMITTED", "{task:#}");
    let r = admin_post(
        &host,
        &format!("/admin/approvals/{message}/reject"),
        &json!({"by": "alice", "reason": "not today"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    let task = wait_state(&host, &id, "TASK_STATE_REJECTED").await;
    assert_eq!(task["status"]["state"], "TASK_STATE_REJECTED");
    host.stop().await;

    // A reply held for a person: the turn is over, but the task is still WORKING until the
    // reply is let out.
    let host = start_host(&config("approve = \"outbound\"", "")).await;
    let sent = rpc(&host, "SendMessage", send_params("held-2", "hi")).await;
    let id = sent["task"]["id"].as_str().unwrap().to_owned();
    let listed = admin_get(&host, "/messages").await.json;
    let message = listed["messages"][0]["id"].as_str().unwrap().to_owned();
    wait_turn_state(&host, &message, "done").await;
    let reply = eventually(Duration::from_secs(20), "the held reply", || async {
        let r = admin_get(&host, "/admin/approvals").await.json;
        r["approvals"][0]["approval"]["id"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    let task = rpc(&host, "GetTask", json!({"id": id})).await;
    assert_eq!(task["status"]["state"], "TASK_STATE_WORKING", "{task:#}");
    let r = admin_post(
        &host,
        &format!("/admin/approvals/{reply}/approve"),
        &json!({"by": "alice"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    wait_state(&host, &id, "TASK_STATE_COMPLETED").await;
    host.stop().await;
}

/// README (A2A states): a turn interrupted for good (`on_interrupt = "fail"`, then a crash)
/// leaves its task `FAILED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_turn_was_interrupted_for_good_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = unused_addr();
    let toml = config("", ", on_interrupt = \"fail\"").replace(
        "[server]\n",
        &format!("[server]\nlisten = \"{addr}\"\ndata_dir = \"data\"\n"),
    );
    let mut inbox = BinHost::start(dir.path(), &toml, addr, "first.log").await;
    let running = rpc(&inbox, "SendMessage", send_params("f-1", "sleep 30")).await;
    let id = running["task"]["id"].as_str().unwrap().to_owned();
    wait_state(&inbox, &id, "TASK_STATE_WORKING").await;
    inbox.kill9();
    let inbox = BinHost::start(dir.path(), &toml, addr, "second.log").await;
    let task = wait_state(&inbox, &id, "TASK_STATE_FAILED").await;
    assert_eq!(task["status"]["state"], "TASK_STATE_FAILED", "{task:#}");
    inbox.stop();
}

/// README (`ListTasks`): it looks through the caller's newest 1000 tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tasks_looks_through_the_newest_thousand() {
    // Held for a person, so no agent runs for the 1001 tasks.
    let host = start_host(&config("approve = \"inbound\"", "")).await;
    let url = host.url("/a2a");
    for chunk in 0..77 {
        let mut sends = Vec::new();
        for i in 0..13 {
            let n = chunk * 13 + i;
            sends.push(tokio::spawn(rpc_as_owned(
                url.clone(),
                "SendMessage",
                send_params(&format!("w-{n}"), "hi"),
            )));
        }
        for s in sends {
            let r = s.await.unwrap();
            assert!(r.json.get("error").is_none(), "{:#}", r.json);
        }
    }
    let listed = rpc(&host, "ListTasks", json!({"pageSize": 1})).await;
    assert_eq!(listed["totalSize"], 1000, "{listed:#}");
    host.stop().await;
}
