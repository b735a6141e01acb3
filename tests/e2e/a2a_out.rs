//! A2A out: a route whose agent is a remote A2A agent (`driver = "a2a"`). Here the remote is
//! another inbox's `/a2a` (its agent a subprocess), so both ends are the real thing: the answer
//! comes back as the task's artifact, becomes the route's reply, and reaches the peer; a question
//! (`INPUT_REQUIRED`) is answered in the same remote task by the thread's next message; a failed
//! remote task fails the turn with `TURN_FAILED`.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};

const REMOTE_TOKEN: &str = "remote-a2a-token";
const TONY: &str = "tony-secret";

/// The remote inbox: A2A on, peer `caller` with `REMOTE_TOKEN`, route `ask` (type ASK, the
/// default skill) run by tests/agents/a2a-agent.py.
fn remote_config() -> String {
    let agent = agents_dir().join("a2a-agent.py").display().to_string();
    format!(
        r#"
[server]
admin_secret = "{ADMIN}"
[a2a]
name = "Remote inbox"
[peers.caller]
a2a_token = "{REMOTE_TOKEN}"
[routes.ask]
from = ["caller"]
reply_types = ["ANSWER", "QUESTION"]
agent = {{ command = ["python3", "{agent}", "-m", "{{prompt}}"], timeout_secs = 60, kill_grace_secs = 1 }}
a2a = {{ type = "ASK", default = true, input_required_types = ["QUESTION"] }}
"#
    )
}

/// The local inbox: peer `tony` (the PeerServer), route `delegate` whose agent is the remote
/// inbox over A2A (`url` its endpoint or its card).
fn local_config(tony_url: &str, remote_url: &str) -> String {
    format!(
        r#"
[server]
admin_secret = "{ADMIN}"
[relay]
retry_schedule = ["0s", "1s", "1s"]
[peers.tony]
url = "{tony_url}"
secret = "{TONY}"
[routes.delegate]
from = ["tony"]
types = ["ASK"]
reply_types = ["ANSWER", "QUESTION"]
reply_to = ["tony"]
agent = {{ driver = "a2a", url = "{remote_url}", token_env = "REMOTE_A2A_BEARER", timeout_secs = 60 }}
"#
    )
}

async fn ask(local: &impl Endpoint, text: &str, thread: Option<&str>) -> Value {
    let mut body = json!({"type": "ASK", "payload": {"text": text}});
    if let Some(t) = thread {
        body["thread_id"] = t.into();
    }
    let r = post_message(local, TONY, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_hands_its_turns_to_another_inbox_over_a2a() {
    let remote = start_host(&remote_config()).await;
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = local_config(&tony.url(), &remote.url("/a2a"));
    let env = [("REMOTE_A2A_BEARER", REMOTE_TOKEN)];
    let local = BinHost::start_with_env(dir.path(), &toml, addr, "local.log", &env).await;

    // An answer: the remote task's artifact is the reply, relayed to tony.
    let ack = ask(&local, "hello there", None).await;
    let got = tony.wait_for(1, Duration::from_secs(30)).await;
    let reply = &got[0].body;
    assert_eq!(reply["type"], "ANSWER", "{reply:#}");
    assert_eq!(reply["payload"]["text"], "echo: hello there");
    assert_eq!(reply["in_reply_to"], ack["id"]);
    assert_eq!(reply["thread_id"], ack["thread_id"]);

    // A question: INPUT_REQUIRED ends the turn with a QUESTION reply; the thread's next message
    // continues the same remote task.
    let first = ask(&local, "ask me", None).await;
    let got = tony.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got[1].body["type"], "QUESTION", "{:#}", got[1].body);
    assert_eq!(got[1].body["payload"]["text"], "Which colour do you want?");
    let thread = first["thread_id"].as_str().unwrap().to_owned();
    ask(&local, "blue", Some(&thread)).await;
    let got = tony.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(
        got[2].body["payload"]["text"],
        "echo: blue",
        "{:#?}\n{}",
        remote_tasks(&remote).await,
        local.log()
    );
    // One remote task took both messages.
    let tasks = remote_tasks(&remote).await;
    let colour: Vec<&Value> = tasks
        .iter()
        .filter(|t| {
            t["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|m| m.to_string().contains("ask me")))
        })
        .collect();
    assert_eq!(colour.len(), 1, "{tasks:#?}");
    assert_eq!(colour[0]["status"]["state"], "TASK_STATE_COMPLETED");
    let history = colour[0]["history"].as_array().unwrap();
    assert!(
        history.iter().any(|m| m.to_string().contains("blue")),
        "{history:#?}"
    );

    // A failed remote task fails the turn, and TURN_FAILED goes out.
    let failed = ask(&local, "fail now", None).await;
    let got = tony.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(got[3].body["type"], "TURN_FAILED", "{:#}", got[3].body);
    assert_eq!(got[3].body["payload"]["error"], "remote_failed");
    let shown = request(
        "GET",
        &local.url(&format!("/messages/{}", failed["id"].as_str().unwrap())),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        "",
    )
    .await;
    assert_eq!(shown.json["turn"]["state"], "failed", "{:#}", shown.json);
    assert!(
        shown.json["turn"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("remote_failed: the remote agent's task failed")),
        "{:#}",
        shown.json
    );

    // The card works as the URL too (its interface is read from it).
    write_by_rename(
        &dir.path().join("routes.toml"),
        local_config(&tony.url(), &remote.url("/.well-known/agent-card.json")),
    );
    let reloaded = admin_post(&local, "/admin/reload", "").await;
    assert_eq!(reloaded.status, 200, "{:#}", reloaded.json);
    ask(&local, "by the card", None).await;
    let got = tony.wait_for(5, Duration::from_secs(30)).await;
    assert_eq!(got[4].body["payload"]["text"], "echo: by the card");

    local.stop();
    remote.stop().await;
}

/// Every task at the remote inbox (as its admin sees them), with history.
async fn remote_tasks(remote: &Host) -> Vec<Value> {
    let r = request(
        "POST",
        &remote.url("/a2a"),
        &[
            ("authorization", &format!("Bearer {ADMIN}")),
            ("content-type", "application/json"),
            ("a2a-version", "1.0"),
        ],
        json!({"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {"historyLength": 10}})
            .to_string(),
    )
    .await;
    r.json["result"]["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
