//! `agent-inbox mcp`: the inbox's tools over MCP on stdio, driven by the official MCP Python SDK
//! (tests/tools/mcp_client.py) against a real pair of inboxes. Inbox "pi1" runs the agent
//! `planner` (which may send TASK to pi2, and runs route `notes`, whose turns wait on a gate);
//! inbox "pi2" answers TASKs with DONE from a real agent process.

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_inbox_tests::*;
use serde_json::{Value, json};

const PLANNER: &str = "planner-mcp-token-0123456789";
const LINK: &str = "pi-link-secret-0123456789";

struct Pair {
    pi1: BinHost,
    pi1_dir: tempfile::TempDir,
    pi2: Host,
    gate: tempfile::TempDir,
}

/// The notes route's agent: records its prompt, then waits until the gate opens.
fn gate_agent(gate: &std::path::Path) -> String {
    agent_command(&[
        "--prompt",
        "{prompt}",
        "--record",
        path_str(&gate.join("record")),
        "--wait-for",
        path_str(&gate.join("open")),
    ])
}

/// pi1's routes.toml: the planner may send pi2 `types`; its route `notes` runs `notes_agent`
/// (a TOML command array).
fn pi1_config(addr: std::net::SocketAddr, pi2: &str, notes_agent: &str, types: &str) -> String {
    format!(
        r#"
[server]
listen = "{addr}"
admin_secret = "{ADMIN}"
[relay]
retry_schedule = ["0s", "200ms", "200ms"]
[peers.pi2]
url = "{pi2}"
secret = "{LINK}"
[agents.planner]
token_env = "PLANNER_TOKEN"
may_send = [{{ to = ["pi2"], types = {types} }}]
[routes.notes]
from = ["pi2"]
types = ["NOTE"]
reply_types = ["ACK"]
reply_to = ["pi2"]
agent = {{ command = {notes_agent}, timeout_secs = 240, mcp_tools = true }}
agent_id = "planner"
[routes.done]
from = ["pi2"]
types = ["DONE", "TURN_FAILED"]
mailbox = true
"#
    )
}

async fn pair() -> Pair {
    pair_sending(r#"["TASK"]"#).await
}

/// The pair, with the planner allowed to send pi2 `types` (a TOML list). pi2 also takes SLOW,
/// whose turn waits on a file no one writes, so an `ask` with it gets no answer.
async fn pair_sending(types: &str) -> Pair {
    pair_with(types, None, &[]).await
}

/// The pair, pi1's notes route running `notes_agent` (else the gate agent), and pi1 started
/// with `env` besides the planner's token.
async fn pair_with(types: &str, notes_agent: Option<String>, env: &[(&str, &str)]) -> Pair {
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = unused_addr();
    let gate = tempfile::tempdir().unwrap();
    let pi2 = Toml::new()
        .command(&agent_command(&["--reply", "DONE"]))
        .schedule(FAST_RETRIES)
        .peer("pi1", &format!("http://{addr}/message"), LINK)
        .agent_route("tasks", &["pi1"], &["TASK"], &["DONE"], &["pi1"])
        .agent_route("slow", &["pi1"], &["SLOW"], &["DONE"], &["pi1"])
        .route(
            "slow",
            "agent",
            &format!(
                "{{ command = {}, timeout_secs = 300 }}",
                agent_command(&["--wait-for", "/nonexistent/never", "--reply", "DONE"])
            ),
        )
        .mailbox("acks", &["pi1"], &["ACK"])
        .build();
    let pi2 = start_host_on(&pi2, l2).await;
    let pi1_dir = tempfile::tempdir().unwrap();
    let notes_agent = notes_agent.unwrap_or_else(|| gate_agent(gate.path()));
    let toml = pi1_config(addr, &pi2.url("/message"), &notes_agent, types);
    let mut env = env.to_vec();
    env.push(("PLANNER_TOKEN", PLANNER));
    let pi1 = BinHost::start_with_env(pi1_dir.path(), &toml, addr, "pi1.log", &env).await;
    Pair {
        pi1,
        pi1_dir,
        pi2,
        gate,
    }
}

impl Pair {
    /// pi2 sends a NOTE; the planner's turn of it runs (waiting on the gate). Its id and thread.
    async fn running_note(&self) -> (String, String) {
        let note = post_message(
            &self.pi1,
            LINK,
            json!({"type": "NOTE", "payload": {"text": "hi"}}),
        )
        .await;
        assert_eq!(note.status, 202, "{}", note.text);
        let note_id = note.id();
        wait_running(&self.pi1, &note_id).await;
        let thread = note.json["thread_id"].as_str().unwrap().to_owned();
        (note_id, thread)
    }

    /// The planner's ACK (`{"seen": true}`) reached pi2.
    async fn ack_reached_pi2(&self) {
        let acks = eventually(Duration::from_secs(20), "the ACK at pi2", || async {
            let r = admin_get(&self.pi2, "/messages?route=acks").await;
            r.json["messages"]
                .as_array()
                .filter(|m| !m.is_empty())
                .cloned()
        })
        .await;
        assert_eq!(acks[0]["payload"], json!({"seen": true}));
    }
}

/// The MCP server's command line: nothing secret in it.
fn server_argv() -> Vec<String> {
    vec![
        path_str(&bin()).to_owned(),
        "mcp".into(),
        "--watch-secs".into(),
        "1".into(),
    ]
}

/// How the SDK client reaches the tools.
#[derive(Clone, Copy)]
enum Via {
    /// `agent-inbox mcp`, a client of the inbox at the URL.
    Stdio,
    /// `POST {url}/mcp` on the inbox itself.
    Http,
}

/// Runs the SDK client on `plan` against `agent-inbox mcp` for the agent at `url`; calls `during`
/// with each transcript line as it comes. Returns the transcript and the client's stderr (the
/// server's log).
fn run_plan(url: &str, plan: &Value, during: impl FnMut(&Value)) -> (Vec<Value>, String) {
    run_plan_via(Via::Stdio, url, PLANNER, plan, during)
}

/// [`run_plan`] over either transport, as the agent holding `token`.
fn run_plan_via(
    via: Via,
    url: &str,
    token: &str,
    plan: &Value,
    mut during: impl FnMut(&Value),
) -> (Vec<Value>, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mcp_client.py");
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(tools_python());
    cmd.arg(script).arg(plan.to_string());
    match via {
        Via::Stdio => cmd.arg("--").args(server_argv()),
        Via::Http => cmd.arg("--http").arg(format!("{url}/mcp")),
    };
    let mut child = cmd
        .env("INBOX_URL", url)
        .env("INBOX_AGENT_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("start the MCP client");
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(json!({"unparsed": line}));
        during(&v);
        lines.push(v);
    }
    child.wait().unwrap();
    (lines, std::fs::read_to_string(stderr.path()).unwrap())
}

fn text_of(step: &Value) -> String {
    step["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_uses_every_tool_against_a_real_pair() {
    let p = pair().await;
    let url = p.pi1.url("");
    let url = url.trim_end_matches('/').to_owned();

    // A real turn of the planner's route: pi2 sends a NOTE, the planner's turn waits on its gate.
    let (note_id, thread) = p.running_note().await;
    // The route's agent has the tools (mcp_tools): its prompt says to answer with `reply`, and
    // holds no curl line and no credential.
    let rec = read_record(&p.gate.path().join("record"), &note_id).await;
    let prompt = rec["prompt"].as_str().unwrap_or_default();
    assert!(prompt.contains("call the inbox's `reply` tool"), "{prompt}");
    assert!(
        prompt.contains(&format!("message_id: {note_id}")),
        "{prompt}"
    );
    assert!(prompt.contains("type: one of ACK"), "{prompt}");
    assert!(
        !prompt.contains("curl") && !prompt.contains("Bearer"),
        "{prompt}"
    );

    let plan = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "contacts"},
        {"op": "call", "tool": "ask", "args": {"to": "pi2", "type": "TASK", "payload": {"q": "six times seven"}, "timeout_secs": 60}},
        {"op": "call", "tool": "send_message", "args": {"to": "pi2", "type": "TASK", "payload": {"n": 2}}},
        {"op": "call", "tool": "reply", "args": {"message_id": note_id, "type": "ACK", "payload": {"seen": true}}},
        {"op": "call", "tool": "list_threads"},
        {"op": "call", "tool": "read_thread", "args": {"thread_id": thread}},
        // Refusals: tool errors that say what to do next.
        {"op": "call", "tool": "send_message", "args": {"to": "pi2", "type": "NOTE", "payload": {}}},
        {"op": "call", "tool": "send_message", "args": {"type": "TASK", "payload": {}}},
        {"op": "call", "tool": "reply", "args": {"message_id": note_id, "type": "WRONG", "payload": {}}},
        {"op": "call", "tool": "reply", "args": {"message_id": "01a24914-9057-748a-9bf8-655872010cdd", "type": "ACK", "payload": {}}},
        {"op": "call", "tool": "no_such_tool"},
        // The server keeps running after a protocol error; a reload that changes may_send is
        // announced, and the new schema lists it.
        {"op": "list_tools"},
        {"op": "wait_list_changed", "secs": 30},
        {"op": "list_tools"},
    ]);
    let config_path = p.pi1_dir.path().join("routes.toml");
    let pi2_url = p.pi2.url("/message");
    let gate = p.gate.path().to_owned();
    let addr = p.pi1.addr;
    let url2 = url.clone();
    let (transcript, server_log) = tokio::task::spawn_blocking(move || {
        run_plan(&url2, &plan, |line| {
            // After the second list_tools (the one after the protocol error), reload with a
            // wider may_send.
            if line["op"] == "call" && line["tool"] == "no_such_tool" {
                write_by_rename(
                    &config_path,
                    pi1_config(addr, &pi2_url, &gate_agent(&gate), r#"["TASK", "NOTE"]"#),
                );
            }
        })
    })
    .await
    .unwrap();
    let dump = || {
        transcript
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    eprintln!("--- MCP transcript (Python SDK over stdio)\n{}", dump());
    let step = |i: usize| &transcript[i];
    assert_eq!(step(0)["op"], "initialize", "{}", dump());
    assert_eq!(step(0)["server"]["name"], "agent-inbox");
    assert_eq!(step(0)["tools_list_changed"], true);

    // tools/list: the enums come from the config.
    let tools = step(1)["tools"].as_array().unwrap();
    let tool = |name: &str| tools.iter().find(|t| t["name"] == name).unwrap().clone();
    let send = tool("send_message");
    assert_eq!(
        send["inputSchema"]["properties"]["to"]["enum"],
        json!(["pi2"])
    );
    assert_eq!(
        send["inputSchema"]["properties"]["type"]["enum"],
        json!(["TASK"])
    );
    assert!(send["description"].as_str().unwrap().contains("pi2: TASK"));
    assert_eq!(
        tool("reply")["inputSchema"]["properties"]["type"]["enum"],
        json!(["ACK"])
    );
    assert_eq!(tools.len(), 6);

    // contacts
    assert_eq!(
        step(2)["result"]["structuredContent"]["contacts"][0]["name"],
        "pi2"
    );

    // ask: a real peer agent's answer, with progress on the way.
    let ask = step(3);
    let ask_took = ask["secs"].as_f64().unwrap_or_default();
    assert_eq!(ask["result"]["isError"], false, "{}", dump());
    assert_eq!(ask["result"]["structuredContent"]["outcome"], "answered");
    assert_eq!(ask["result"]["structuredContent"]["type"], "DONE");
    assert!(
        !ask["progress"].as_array().unwrap().is_empty(),
        "no progress notifications: {ask:#}"
    );

    // send_message
    let sent = step(4);
    assert_eq!(sent["result"]["isError"], false, "{}", dump());
    assert!(sent["result"]["structuredContent"]["thread_id"].is_string());

    // reply, inside the real turn: it reaches pi2.
    assert_eq!(step(5)["result"]["isError"], false, "{}", dump());
    p.ack_reached_pi2().await;

    // list_threads and read_thread
    let threads = &step(6)["result"]["structuredContent"]["threads"];
    assert!(
        threads
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["thread_id"] == thread.as_str()),
        "{}",
        dump()
    );
    let read = &step(7)["result"]["structuredContent"]["messages"];
    assert!(read.to_string().contains("\"hi\""), "{}", dump());
    assert!(
        read.to_string().contains("seen"),
        "the reply is in the thread: {read}"
    );

    // Refusals are tool errors that say what to do next.
    for (i, words) in [
        (8, "may not send NOTE to pi2. Allowed: pi2: TASK"),
        (9, "\"to\" is required"),
        (10, "valid types: ACK"),
        (11, "not_found"),
    ] {
        assert_eq!(step(i)["result"]["isError"], true, "{}", dump());
        assert!(text_of(step(i)).contains(words), "{i}: {}", dump());
    }
    // An unknown tool is a protocol error, and the server answers the next request.
    assert_eq!(step(12)["raised"], "MCPError", "{}", dump());
    assert_eq!(step(13)["tools"].as_array().map(Vec::len), Some(6));
    // The reload is announced, and the new schema offers NOTE.
    assert_eq!(step(14)["list_changed"], true, "{}", dump());
    assert_eq!(
        step(15)["tools"][0]["inputSchema"]["properties"]["type"]["enum"],
        json!(["NOTE", "TASK"])
    );

    // The same exchange with `agent-inbox send --wait`, as the agent, for the time beside ask's.
    let t0 = Instant::now();
    let out = Command::new(bin())
        .args([
            "send",
            "--to",
            "pi2",
            "--type",
            "TASK",
            "--payload",
            r#"{"q": "again"}"#,
        ])
        .args(["--wait", "--timeout", "60", "--url", &url])
        .env("INBOX_AGENT_TOKEN", PLANNER)
        .output()
        .unwrap();
    let send_wait = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "the same exchange: ask {ask_took:.3} s, agent-inbox send --wait {:.3} s",
        send_wait.as_secs_f64()
    );

    // No token anywhere: not in a tool result, not in the server's log, not in its argv, not in
    // the inbox's log.
    let everything = format!("{}\n{server_log}\n{}", dump(), p.pi1.log());
    assert!(!everything.contains(PLANNER), "the token leaked");
    assert!(!server_argv().iter().any(|a| a.contains(PLANNER)));
    std::fs::write(p.gate.path().join("open"), "").unwrap();
    p.pi1.stop();
    p.pi2.stop().await;
}

/// The same tools over Streamable HTTP at `POST /mcp` on the inbox itself, driven by the SDK's
/// HTTP client with the agent's token as its bearer: every tool against the real pair, the doors
/// (`GET`/`DELETE` 405, no or a wrong token 401 with `WWW-Authenticate: Bearer`, a malformed
/// frame 400 with a JSON-RPC error, a body over the limit 413), a revoked token, and a drain
/// that ends a waiting `ask` with a tool error saying where its answer will come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_tools_over_streamable_http_at_mcp() {
    let p = pair_sending(r#"["TASK", "SLOW"]"#).await;
    let url = p.pi1.url("").trim_end_matches('/').to_owned();
    let mcp = format!("{url}/mcp");
    let bearer = format!("Bearer {PLANNER}");

    // The doors.
    let auth = [("authorization", bearer.as_str())];
    for method in ["GET", "DELETE"] {
        let r = request(method, &mcp, &auth, "").await;
        assert_eq!(r.status, 405, "{method}: {}", r.text);
        assert_eq!(r.headers["allow"], "POST");
    }
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let rpc = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    for token in [None, Some("Bearer not-the-token"), Some("Bearer ")] {
        let mut headers = rpc.to_vec();
        headers.extend(token.map(|t| ("authorization", t)));
        let r = request("POST", &mcp, &headers, list.clone()).await;
        assert_eq!(r.status, 401, "{token:?}: {}", r.text);
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    let mut with_token = rpc.to_vec();
    with_token.push(("authorization", bearer.as_str()));
    let r = request("POST", &mcp, &with_token, "{not json").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"]["code"], -32700, "{}", r.text);
    let r = request("POST", &mcp, &with_token, r#"{"jsonrpc": "2.0"}"#).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"]["code"], -32600, "{}", r.text);
    let big = format!(
        r#"{{"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {{"x": "{}"}}}}"#,
        "a".repeat(300_000)
    );
    let r = request("POST", &mcp, &with_token, big).await;
    assert_eq!(r.status, 413, "{}", r.text);
    let r = request("POST", &mcp, &with_token, list.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["tools"].as_array().map(Vec::len), Some(6));
    assert!(
        r.headers.get("mcp-session-id").is_none(),
        "stateless: no session"
    );

    // A real turn of the planner's route, answered with `reply` over HTTP.
    let (note_id, thread) = p.running_note().await;

    let plan = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "contacts"},
        {"op": "call", "tool": "ask", "args": {"to": "pi2", "type": "TASK", "payload": {"q": "six times seven"}, "timeout_secs": 60}},
        {"op": "call", "tool": "send_message", "args": {"to": "pi2", "type": "TASK", "payload": {"n": 2}}},
        {"op": "call", "tool": "reply", "args": {"message_id": note_id, "type": "ACK", "payload": {"seen": true}}},
        {"op": "call", "tool": "list_threads"},
        {"op": "call", "tool": "read_thread", "args": {"thread_id": thread}},
        {"op": "call", "tool": "send_message", "args": {"to": "pi2", "type": "NOTE", "payload": {}}},
        {"op": "call", "tool": "reply", "args": {"message_id": note_id, "type": "WRONG", "payload": {}}},
        {"op": "call", "tool": "no_such_tool"},
        {"op": "call", "tool": "contacts"},
    ]);
    let url2 = url.clone();
    let (transcript, client_log) =
        tokio::task::spawn_blocking(move || run_plan_via(Via::Http, &url2, PLANNER, &plan, |_| {}))
            .await
            .unwrap();
    let dump = || {
        transcript
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    eprintln!(
        "--- MCP transcript (Python SDK over Streamable HTTP)\n{}",
        dump()
    );
    let step = |i: usize| &transcript[i];
    assert_eq!(
        step(0)["server"]["name"],
        "agent-inbox",
        "{}\n{client_log}",
        dump()
    );
    // No session outlives a request, so no list_changed is promised.
    assert_eq!(step(0)["tools_list_changed"], false);
    let tools = step(1)["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 6, "{}", dump());
    assert_eq!(
        tools[0]["inputSchema"]["properties"]["type"]["enum"],
        json!(["SLOW", "TASK"])
    );
    assert_eq!(
        step(2)["result"]["structuredContent"]["contacts"][0]["name"],
        "pi2"
    );
    let ask = step(3);
    assert_eq!(
        ask["result"]["structuredContent"]["outcome"],
        "answered",
        "{}",
        dump()
    );
    assert_eq!(ask["result"]["structuredContent"]["type"], "DONE");
    assert!(
        !ask["progress"].as_array().unwrap().is_empty(),
        "progress notifications come on the request's event stream: {ask:#}"
    );
    assert_eq!(step(4)["result"]["isError"], false, "{}", dump());
    assert_eq!(step(5)["result"]["isError"], false, "{}", dump());
    p.ack_reached_pi2().await;
    assert!(
        step(6)["result"]["structuredContent"]["threads"]
            .to_string()
            .contains(&thread)
    );
    assert!(
        step(7)["result"]["structuredContent"]["messages"]
            .to_string()
            .contains("seen")
    );
    for (i, words) in [(8, "may not send NOTE to pi2"), (9, "valid types: ACK")] {
        assert_eq!(step(i)["result"]["isError"], true, "{}", dump());
        assert!(text_of(step(i)).contains(words), "{i}: {}", dump());
    }
    assert_eq!(step(10)["raised"], "MCPError", "{}", dump());
    assert_eq!(
        step(11)["result"]["isError"],
        false,
        "the next request is served: {}",
        dump()
    );

    // A reload revokes the token: the next request is refused at the door.
    let new_token = "a-new-token-0123456789";
    let toml = std::fs::read_to_string(p.pi1_dir.path().join("routes.toml"))
        .unwrap()
        .replace(
            "token_env = \"PLANNER_TOKEN\"",
            &format!("token = \"{new_token}\""),
        );
    write_by_rename(&p.pi1_dir.path().join("routes.toml"), toml);
    let reloaded = admin_post(&p.pi1, "/admin/reload", "").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text);
    let r = request("POST", &mcp, &with_token, list.clone()).await;
    assert_eq!(r.status, 401, "{}", r.text);

    // A drain ends a waiting ask with a tool error that says where the answer will come.
    std::fs::write(p.gate.path().join("open"), "").unwrap();
    let plan = json!([
        {"op": "call", "tool": "ask", "args": {"to": "pi2", "type": "SLOW", "payload": {}, "timeout_secs": 120}},
    ]);
    let url2 = url.clone();
    let asking = tokio::task::spawn_blocking(move || {
        run_plan_via(Via::Http, &url2, new_token, &plan, |_| {})
    });
    let mut pi1 = p.pi1;
    // The SLOW turn running at pi2 means the ask is waiting.
    eventually(Duration::from_secs(20), "the SLOW turn at pi2", || async {
        let r = admin_get(&p.pi2, "/messages?route=slow").await;
        (r.json["messages"][0]["turn_state"] == "running").then_some(())
    })
    .await;
    let t0 = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = pi1.sigterm();
        (status, pi1)
    });
    let (transcript, _) = asking.await.unwrap();
    let ended_after = t0.elapsed();
    let (status, pi1) = status.await.unwrap();
    assert!(status.success(), "{}", pi1.log());
    let ask = &transcript[1];
    assert_eq!(ask["result"]["isError"], true, "{transcript:#?}");
    let said = text_of(ask);
    assert!(
        said.contains("shutting down") && said.contains("read_thread"),
        "{said}"
    );
    eprintln!(
        "a drain ended the waiting ask after {:.3} s: {said}",
        ended_after.as_secs_f64()
    );

    // No token in any tool result or in the inbox's log.
    let everything = format!("{}\n{}", dump(), pi1.log());
    assert!(
        !everything.contains(PLANNER) && !everything.contains(new_token),
        "the token leaked"
    );
    p.pi2.stop().await;
}

/// Protocol edges straight on stdio: a malformed frame, then a good request, then a call after
/// the agent's token was revoked by a reload. Each gets a clean answer, and the server runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_a_revoked_token_get_clean_errors() {
    let p = pair().await;
    let url = p.pi1.url("").trim_end_matches('/').to_owned();
    let mut child = Command::new(bin())
        .args(["mcp", "--watch-secs", "1"])
        .env("INBOX_URL", &url)
        .env("INBOX_AGENT_TOKEN", PLANNER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut send = |line: &str| {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    let mut answer_to = |id: u64| -> Value {
        loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "the server exited");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    };
    send(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}})
        .to_string(),
    );
    assert!(answer_to(1)["result"]["serverInfo"].is_object());
    send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
    send("{this is not json");
    send(r#"{"jsonrpc": "2.0", "id": 2, "method": "tools/list"}"#);
    let listed = answer_to(2);
    assert_eq!(
        listed["result"]["tools"].as_array().map(Vec::len),
        Some(6),
        "{listed:#}"
    );
    // Arguments of the wrong shape: a tool error, not a crash.
    send(
        &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "send_message", "arguments": {"to": 7, "type": ["x"]}}})
        .to_string(),
    );
    let bad = answer_to(3);
    assert_eq!(bad["result"]["isError"], true, "{bad:#}");
    // The token is revoked by a reload: a clean error, and the server still answers.
    let toml = std::fs::read_to_string(p.pi1_dir.path().join("routes.toml"))
        .unwrap()
        .replace(
            "token_env = \"PLANNER_TOKEN\"",
            "token = \"a-new-token-0123456789\"",
        );
    write_by_rename(&p.pi1_dir.path().join("routes.toml"), toml);
    let reloaded = admin_post(&p.pi1, "/admin/reload", "").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text);
    send(
        &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
        "name": "contacts", "arguments": {}}})
        .to_string(),
    );
    let revoked = answer_to(4);
    let said = revoked.to_string();
    assert!(said.contains("unauthorized"), "{revoked:#}");
    send(r#"{"jsonrpc": "2.0", "id": 5, "method": "ping"}"#);
    assert!(answer_to(5)["result"].is_object());
    let _ = child.kill();
    let _ = child.wait();
    std::fs::write(p.gate.path().join("open"), "").unwrap();
    p.pi1.stop();
    p.pi2.stop().await;
}

/// The environment OpenClaw runs in here: its home, state and config (`openclaw.json`) under
/// `home`, offline, with its bin directory (node 24 and openclaw) first on PATH.
fn openclaw_env(bin_dir: &std::path::Path, home: &std::path::Path) -> Vec<(String, String)> {
    let at = |p: &str| home.join(p).display().to_string();
    vec![
        (
            "PATH".into(),
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        ),
        ("HOME".into(), at("")),
        ("OPENCLAW_HOME".into(), at("")),
        ("OPENCLAW_STATE_DIR".into(), at("state")),
        ("OPENCLAW_CONFIG_PATH".into(), at("openclaw.json")),
        ("OPENCLAW_OFFLINE".into(), "1".into()),
        ("OPENCLAW_NO_AUTO_UPDATE".into(), "1".into()),
        ("OPENCLAW_DISABLE_BONJOUR".into(), "1".into()),
    ]
}

/// A real OpenClaw 2026.9.6 takes `agent-inbox mcp` as an MCP server (`openclaw mcp set` with
/// the token as `${INBOX_AGENT_TOKEN}`, resolved from its environment, so neither its config
/// nor any argv holds it) and `openclaw mcp probe` lists our six tools; so it does for the same
/// tools over Streamable HTTP at `/mcp`, with the bearer header from its environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_probes_the_inbox_as_an_mcp_server() {
    let p = pair().await;
    let url = p.pi1.url("").trim_end_matches('/').to_owned();
    let bin_dir = tokio::task::spawn_blocking(openclaw_bin).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("openclaw.json");
    std::fs::write(&config, r#"{"update": {"checkOnStart": false}}"#).unwrap();
    let server = json!({
        "command": path_str(&bin()),
        "args": ["mcp"],
        "env": {"INBOX_URL": url, "INBOX_AGENT_TOKEN": "${INBOX_AGENT_TOKEN}"},
    });
    let env = openclaw_env(&bin_dir, home.path());
    let openclaw = |args: &[&str]| {
        let out = Command::new(bin_dir.join("openclaw"))
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("INBOX_AGENT_TOKEN", PLANNER)
            .output()
            .expect("run openclaw");
        let text = strip_ansi(&format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        (out.status.success(), text)
    };
    let set = server.to_string();
    let (ok, out) = tokio::task::block_in_place(|| openclaw(&["mcp", "set", "inbox", &set]));
    assert!(ok, "{out}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        !saved.contains(PLANNER),
        "the token is not in OpenClaw's config"
    );
    let (ok, out) = tokio::task::block_in_place(|| openclaw(&["mcp", "probe", "inbox", "--json"]));
    assert!(ok, "{out}");
    eprintln!("--- openclaw mcp probe inbox --json\n{out}");
    let start = out.find('{').expect("JSON");
    let probe: Value = serde_json::from_str(&out[start..]).expect("probe JSON");
    assert_eq!(probe["servers"]["inbox"]["tools"], 6, "{probe:#}");
    assert_eq!(probe["servers"]["inbox"]["listChanged"]["tools"], true);
    let tools = probe["tools"].to_string();
    for t in [
        "ask",
        "contacts",
        "list_threads",
        "read_thread",
        "reply",
        "send_message",
    ] {
        assert!(tools.contains(&format!("inbox__{t}")), "{t}: {tools}");
    }
    // The same tools over Streamable HTTP at /mcp, the bearer header read from its environment.
    let remote = json!({
        "url": format!("{url}/mcp"),
        "transport": "streamable-http",
        "headers": {"Authorization": "Bearer ${INBOX_AGENT_TOKEN}"},
    })
    .to_string();
    let (ok, out) =
        tokio::task::block_in_place(|| openclaw(&["mcp", "set", "inbox_http", &remote]));
    assert!(ok, "{out}");
    assert!(!std::fs::read_to_string(&config).unwrap().contains(PLANNER));
    let (ok, out) =
        tokio::task::block_in_place(|| openclaw(&["mcp", "probe", "inbox_http", "--json"]));
    assert!(ok, "{out}");
    eprintln!("--- openclaw mcp probe inbox_http --json\n{out}");
    let probe: Value = serde_json::from_str(&out[out.find('{').expect("JSON")..]).unwrap();
    assert_eq!(probe["servers"]["inbox_http"]["tools"], 6, "{probe:#}");
    assert!(
        probe["tools"].to_string().contains("inbox_http__reply"),
        "{probe:#}"
    );
    std::fs::write(p.gate.path().join("open"), "").unwrap();
    p.pi1.stop();
    p.pi2.stop().await;
}

/// A real OpenClaw agent turn answers through the `reply` tool. pi1's notes route runs
/// `openclaw agent exec` (embedded, no gateway) with the inbox's prompt; its config names
/// `agent-inbox mcp` as an MCP server whose URL and token are `${INBOX_URL}` and
/// `${INBOX_AGENT_TOKEN}`, which the inbox gives the turn (the route has `agent_id`), so they are
/// in no file. The model is the stand-in, told to call the tool whose name ends with `reply`
/// with the `message_id` the prompt names: the ACK reaches pi2 through the tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openclaw_agent_turn_answers_with_the_reply_tool() {
    let bin_dir = tokio::task::spawn_blocking(openclaw_bin).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let model_port = unused_addr().port();
    let model_log = home.path().join("model.jsonl");
    let mut model = Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/model_standin.py"))
        .args([&model_port.to_string(), "Answered through the inbox."])
        .arg(&model_log)
        .args(["--call-tool", "reply", "ACK"])
        .spawn()
        .expect("start the model stand-in");
    let config = json!({
        "update": {"checkOnStart": false},
        "agents": {"defaults": {"model": {"primary": "standin/standin-model"}}},
        "models": {"mode": "merge", "catalogRefresh": {"enabled": false},
            "providers": {"standin": {
                "baseUrl": format!("http://127.0.0.1:{model_port}/v1"),
                "apiKey": "standin-key",
                "api": "openai-completions",
                "models": [{"id": "standin-model", "name": "Stand-in",
                            "contextWindow": 128000, "maxTokens": 4096}]}}},
        // The tools' schemas go to the model directly (Tool Search would defer them).
        "tools": {"toolSearch": false},
        "mcp": {"servers": {"inbox": {
            "command": path_str(&bin()),
            "args": ["mcp"],
            "env": {"INBOX_URL": "${INBOX_URL}", "INBOX_AGENT_TOKEN": "${INBOX_AGENT_TOKEN}"},
        }}},
    });
    let config_path = home.path().join("openclaw.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    std::fs::create_dir_all(home.path().join("state")).unwrap();
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let command = toml_list(&[
        path_str(&bin_dir.join("openclaw")),
        "agent",
        "exec",
        "{prompt}",
        "--config",
        path_str(&config_path),
        "--cwd",
        path_str(&work),
        "--json",
    ]);
    let env = openclaw_env(&bin_dir, home.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = pair_with(r#"["TASK"]"#, Some(command), &env).await;

    let t0 = Instant::now();
    let note = post_message(
        &p.pi1,
        LINK,
        json!({"type": "NOTE", "payload": {"text": "please acknowledge"}}),
    )
    .await;
    assert_eq!(note.status, 202, "{}", note.text);
    let note_id = note.id();
    let acks = eventually(Duration::from_secs(180), "the ACK at pi2", || async {
        let r = admin_get(&p.pi2, "/messages?route=acks").await;
        r.json["messages"]
            .as_array()
            .filter(|m| !m.is_empty())
            .cloned()
    })
    .await;
    let took = t0.elapsed();
    assert_eq!(
        acks[0]["payload"],
        json!({"answered_by": "openclaw", "via": "mcp"}),
        "{acks:#?}"
    );
    let turn = eventually(Duration::from_secs(60), "the turn's end", || async {
        let v = admin_get(&p.pi1, &format!("/messages/{note_id}"))
            .await
            .json;
        (v["turn"]["state"] != "running" && v["turn"]["state"] != "queued").then_some(v)
    })
    .await;
    assert_eq!(turn["turn"]["state"], "done", "{turn:#}\n{}", p.pi1.log());
    // What the model saw: the inbox's tools among OpenClaw's, then the tool's result.
    let seen: Vec<Value> = std::fs::read_to_string(&model_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        seen[0]["tools"].to_string().contains("inbox__reply"),
        "{seen:#?}"
    );
    let result = seen.last().unwrap()["tool_results"].to_string();
    assert!(result.contains("queued: relayed to the peers"), "{result}");
    eprintln!(
        "an OpenClaw turn answered through inbox__reply: NOTE to ACK at pi2 in {:.1} s; the \
         tool's result: {result}",
        took.as_secs_f64()
    );
    assert!(
        !std::fs::read_to_string(&config_path)
            .unwrap()
            .contains(PLANNER)
    );
    let _ = model.kill();
    let _ = model.wait();
    p.pi1.stop();
    p.pi2.stop().await;
}
