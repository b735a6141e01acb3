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

    // The console's thread shows the remote task: its id, state and artifacts (in a browser).
    let shown = admin_get(
        &local,
        &format!("/messages/{}", ack["id"].as_str().unwrap()),
    )
    .await;
    let task = shown.json["remote_tasks"][0].clone();
    assert_eq!(task["origin"], ack["id"], "{:#}", shown.json);
    let remote_id = task["remote_task_id"].as_str().unwrap().to_owned();
    let artifacts: Vec<String> = task["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(artifacts.len(), 1, "{task:#}");
    let thread = shown.json["message"]["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/console-shots/console-remote-task.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let base = local.url("");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let mut args = vec![
            base.trim_end_matches('/').to_owned(),
            ADMIN.to_owned(),
            thread,
            path_str(&shot).to_owned(),
            remote_id,
            "TASK_STATE_COMPLETED".to_owned(),
        ];
        args.extend(artifacts);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_tool("console_remote_check.py", &args, b"")
    })
    .await
    .unwrap();
    assert!(ok, "the browser check failed:\n{out}");
    assert!(out.contains("and its artifacts"), "{out}");

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
    // The message shows the remote task its turn was.
    let remote_task = &shown.json["remote_tasks"][0];
    assert_eq!(remote_task["kind"], "turn", "{:#}", shown.json);
    assert_eq!(remote_task["target"], "delegate");
    assert_eq!(remote_task["state"], "TASK_STATE_FAILED");
    assert_eq!(remote_task["done"], true);
    assert!(remote_task["remote_task_id"].is_string());
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

const PLANNER: &str = "planner-agent-token";

/// The local inbox with the remote inbox as an A2A peer (`a2a_url`): a local agent `planner`
/// may send it ASK, and its answers land in the mailbox route `answers`.
fn peer_config(remote_url: &str) -> String {
    format!(
        r#"
[server]
admin_secret = "{ADMIN}"
[relay]
retry_schedule = ["0s", "1s", "1s"]
[peers.remote]
a2a_url = "{remote_url}"
a2a_bearer_env = "REMOTE_A2A_BEARER"
a2a_reply_type = "ANSWER"
[agents.planner]
token = "{PLANNER}"
may_send = [{{ to = ["remote"], types = ["ASK"] }}]
[routes.answers]
from = ["remote"]
types = ["ANSWER", "QUESTION", "TURN_FAILED"]
mailbox = true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_a2a_peer_gets_tasks_and_its_answers_come_back_into_the_thread() {
    let remote = start_host(&remote_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let env = [("REMOTE_A2A_BEARER", REMOTE_TOKEN)];
    let toml = peer_config(&remote.url("/a2a"));
    let local = BinHost::start_with_env(dir.path(), &toml, addr, "local.log", &env).await;

    // The agent's `send --wait`: the message is a task at the peer, and its answer comes back
    // into the thread, printed.
    let url = local.url("");
    let waited = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("INBOX_AGENT_TOKEN", PLANNER)
            .env("INBOX_URL", url.trim_end_matches('/'))
            .args([
                "send",
                "--to",
                "remote",
                "--type",
                "ASK",
                "--payload",
                r#"{"text": "how are you"}"#,
                "--wait",
                "--timeout",
                "30",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "{err}\n{}", local.log());
    let answer: Value = serde_json::from_slice(&waited.stdout).expect("the answer's payload");
    assert_eq!(answer["text"], "echo: how are you", "{answer:#}");
    // The outbound message shows the task it became at the peer, followed to its end.
    let outbox = admin_get(&local, "/admin/outbox").await.json;
    let sent = outbox["outbox"][0]["reply"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // (Recorded just after the answer is accepted: wait for it.)
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let shown = admin_get(&local, &format!("/messages/{sent}")).await.json;
        if shown["remote_tasks"][0]["done"] == true || std::time::Instant::now() > end {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let remote_task = &shown["remote_tasks"][0];
    assert_eq!(remote_task["kind"], "delivery", "{shown:#}");
    assert_eq!(remote_task["target"], "remote");
    assert_eq!(remote_task["state"], "TASK_STATE_COMPLETED");
    assert_eq!(remote_task["origin"], sent.as_str());
    assert_eq!(remote_task["artifacts"].as_array().map(Vec::len), Some(1));

    // As the admin: a question, answered in the same remote task by the thread's next message.
    let asked = admin_post(
        &local,
        "/admin/send",
        &json!({"to": "remote", "type": "ASK", "payload": {"text": "ask me"}}).to_string(),
    )
    .await;
    assert_eq!(asked.status, 202, "{:#}", asked.json);
    let thread = asked.json["thread_id"].as_str().unwrap().to_owned();
    let got = wait_thread_from(&local, &thread, "remote", 1).await;
    // Typed by the answer's own {type, payload} data part.
    assert_eq!(got[0]["type"], "QUESTION", "{got:#?}");
    assert_eq!(got[0]["payload"]["text"], "Which colour do you want?");
    let again = admin_post(
        &local,
        "/admin/send",
        &json!({"to": "remote", "type": "ASK", "payload": {"text": "green"}, "thread_id": thread})
            .to_string(),
    )
    .await;
    assert_eq!(again.status, 202, "{:#}", again.json);
    let got = wait_thread_from(&local, &thread, "remote", 2).await;
    assert_eq!(got[1]["payload"]["text"], "echo: green", "{got:#?}");
    let tasks = remote_tasks(&remote).await;
    assert_eq!(
        tasks
            .iter()
            .filter(|t| t.to_string().contains("green"))
            .count(),
        1,
        "one remote task took both: {tasks:#?}"
    );

    // A failed remote task comes back as TURN_FAILED from the peer, with its words.
    let failed = admin_post(
        &local,
        "/admin/send",
        &json!({"to": "remote", "type": "ASK", "payload": {"text": "fail please"}}).to_string(),
    )
    .await;
    let thread = failed.json["thread_id"].as_str().unwrap().to_owned();
    let got = wait_thread_from(&local, &thread, "remote", 1).await;
    assert_eq!(got[0]["type"], "TURN_FAILED", "{got:#?}");
    assert_eq!(got[0]["payload"]["error"], "remote_failed");
    assert!(
        got[0]["payload"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("the agent's turn ended failed")),
        "{got:#?}"
    );
    local.stop();
    remote.stop().await;
}

/// The official Python SDK's server (tests/tools/a2a_sdk_agent.py) as the remote agent.
struct SdkAgent {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SdkAgent {
    fn start() -> SdkAgent {
        Self::start_on(0)
    }

    /// On `port` (0: any), e.g. the port of one that was stopped: a restart, its tasks forgotten.
    fn start_on(port: u16) -> SdkAgent {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/a2a_sdk_agent.py");
        let mut child = std::process::Command::new(tools_python())
            .arg(script)
            .arg(port.to_string())
            .args([REMOTE_TOKEN, path_str(&log), "--lifetime", "300"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the SDK agent");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        SdkAgent {
            child,
            port: first.trim().parse().expect("its port"),
            log,
            _dir: dir,
        }
    }

    fn card(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/agent-card.json", self.port)
    }

    /// The JSON-RPC methods it was called with, in order.
    fn methods(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["method"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for SdkAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_agent_runs_turns_in_every_state() {
    let agent = tokio::task::spawn_blocking(SdkAgent::start).await.unwrap();
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = local_config(&tony.url(), &agent.card())
        .replace(
            "reply_types = [\"ANSWER\", \"QUESTION\"]",
            "reply_types = [\"ANSWER\", \"QUESTION\", \"NOTE\"]",
        )
        .replace(
            "timeout_secs = 60 }",
            "timeout_secs = 60, reply_type = \"NOTE\", question_type = \"QUESTION\" }",
        );
    let env = [("REMOTE_A2A_BEARER", REMOTE_TOKEN)];
    let local = BinHost::start_with_env(dir.path(), &toml, addr, "local.log", &env).await;
    let find = |got: &[Received], f: &dyn Fn(&Value) -> bool| {
        got.iter()
            .map(|r| r.body.clone())
            .find(|b| f(b))
            .unwrap_or_else(|| {
                panic!(
                    "no such delivery: {:#?}",
                    got.iter().map(|r| &r.body).collect::<Vec<_>>()
                )
            })
    };

    ask(&local, "complete this", None).await;
    let got = tony.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "ANSWER", "{:#}", got[0].body);
    assert_eq!(got[0].body["payload"]["text"], "done: complete this");

    // Streamed: three artifacts, the second in two chunks; a text-only one is a NOTE.
    ask(&local, "stream it", None).await;
    let got = tony.wait_for(4, Duration::from_secs(30)).await;
    let s2 = find(&got, &|b| {
        b["payload"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("part two"))
    });
    assert_eq!(s2["type"], "NOTE");
    assert_eq!(
        s2["payload"]["text"],
        "second artifact, part one; \n\npart two"
    );
    let s3 = find(&got, &|b| b["payload"]["text"] == "third artifact");
    assert_eq!(s3["type"], "ANSWER");
    find(&got, &|b| b["payload"]["text"] == "first artifact");
    assert!(
        agent.methods().iter().any(|m| m == "SubscribeToTask"),
        "{:?}",
        agent.methods()
    );

    // A question, and its answer in the same remote task.
    let asked = ask(&local, "ask me", None).await;
    let got = tony.wait_for(5, Duration::from_secs(30)).await;
    let q = find(&got, &|b| b["type"] == "QUESTION");
    assert_eq!(q["payload"]["text"], "Which colour?");
    ask(&local, "red", asked["thread_id"].as_str()).await;
    let got = tony.wait_for(6, Duration::from_secs(30)).await;
    let c = find(&got, &|b| b["payload"]["colour"] == "red");
    assert_eq!(c["type"], "ANSWER");

    // Failed and rejected tasks fail the turn with their own codes.
    ask(&local, "fail please", None).await;
    ask(&local, "reject this", None).await;
    let got = tony.wait_for(8, Duration::from_secs(30)).await;
    find(&got, &|b| {
        b["type"] == "TURN_FAILED" && b["payload"]["error"] == "remote_failed"
    });
    find(&got, &|b| {
        b["type"] == "TURN_FAILED" && b["payload"]["error"] == "remote_rejected"
    });
    local.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_while_following_remote_tasks_loses_and_doubles_nothing() {
    const N: usize = 3;
    let agent = tokio::task::spawn_blocking(SdkAgent::start).await.unwrap();
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    // The route's agent and a peer are the same SDK agent: 2N tasks followed at once.
    let toml = local_config(&tony.url(), &agent.card()).replace(
        "timeout_secs = 60 }",
        "timeout_secs = 60, max_calls_per_minute = 600 }",
    ) + &format!(
        r#"
[peers.sdk]
a2a_card_url = "{}"
a2a_bearer_env = "REMOTE_A2A_BEARER"
a2a_reply_type = "ANSWER"
a2a_max_calls_per_minute = 600
[routes.from-sdk]
from = ["sdk"]
types = ["ANSWER", "TURN_FAILED"]
mailbox = true
"#,
        agent.card()
    );
    let env = [("REMOTE_A2A_BEARER", REMOTE_TOKEN)];
    let mut local = BinHost::start_with_env(dir.path(), &toml, addr, "first.log", &env).await;
    let mut threads = Vec::new();
    for i in 0..N {
        ask(&local, &format!("slow 4 turn {i}"), None).await;
        let sent = admin_post(
            &local,
            "/admin/send",
            &json!({"to": "sdk", "type": "ASK", "payload": {"text": format!("slow 4 peer {i}")}})
                .to_string(),
        )
        .await;
        assert_eq!(sent.status, 202, "{:#}", sent.json);
        threads.push(sent.json["thread_id"].as_str().unwrap().to_owned());
    }
    // Every task is at the agent, recorded and being followed: then the inbox dies. (A kill
    // between the agent taking a SendMessage and the inbox recording its answer sends it again
    // after the restart, with the same messageId: a remote that dedups by it makes no second
    // task, the SDK's server does; that window is not what this test is about.)
    let sends = || {
        agent
            .methods()
            .iter()
            .filter(|m| *m == "SendMessage")
            .count()
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while sends() < 2 * N {
        assert!(std::time::Instant::now() < end, "{:?}", agent.methods());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subscribed = || {
        agent
            .methods()
            .iter()
            .filter(|m| *m == "SubscribeToTask")
            .count()
    };
    loop {
        let outbox = admin_get(&local, "/admin/outbox").await.json;
        let handed = outbox["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["delivery"]["peer"] == "sdk" && i["delivery"]["state"] == "delivered")
            .count();
        if handed == N && subscribed() >= N {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "{outbox:#} {:?}",
            agent.methods()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    local.kill9();
    let local = BinHost::start_with_env(dir.path(), &toml, addr, "second.log", &env).await;
    // The turns resume their tasks, the follow-ups theirs: every answer arrives, once.
    let got = tony.wait_for(N, Duration::from_secs(40)).await;
    for t in &threads {
        wait_thread_from(&local, t, "sdk", 1).await;
    }
    // Time for a double to show up, if there were one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_after = tony.received();
    assert_eq!(
        got_after.len(),
        N,
        "{:#?}",
        got_after.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    for r in &got {
        assert_eq!(r.body["payload"]["text"], "slept 4 s", "{:#}", r.body);
    }
    for t in &threads {
        let answers = wait_thread_from(&local, t, "sdk", 1).await;
        assert_eq!(answers.len(), 1, "{answers:#?}");
        assert_eq!(answers[0]["payload"]["text"], "slept 4 s");
    }
    assert_eq!(
        sends(),
        2 * N,
        "nothing was sent twice: {:?}",
        agent.methods()
    );
    println!(
        "kill -9: remote tasks followed {}, lost 0, doubled 0 (SendMessage calls {})",
        2 * N,
        sends()
    );
    local.stop();
}

/// The messages of `thread` from `sender`, oldest first, once there are `n`.
async fn wait_thread_from(
    host: &impl Endpoint,
    thread: &str,
    sender: &str,
    n: usize,
) -> Vec<Value> {
    let end = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let r = admin_get(host, &format!("/messages?thread={thread}")).await;
        let mut got: Vec<Value> = r.json["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m["sender"] == sender)
            .collect();
        got.reverse();
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < end,
            "{n} answers never came: {:#}",
            r.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The local inbox with its own A2A door on for peer `caller`, whose tasks of type ASK are the
/// turns of route `delegate` (the SDK agent at `card`, `timeout_secs` long).
fn door_config(tony_url: &str, card: &str, timeout_secs: u64) -> String {
    local_config(tony_url, card)
        .replace(
            "timeout_secs = 60 }",
            &format!(
                "timeout_secs = {timeout_secs} }}\na2a = {{ type = \"ASK\", default = true }}"
            ),
        )
        .replace("from = [\"tony\"]", "from = [\"tony\", \"caller\"]")
        + &format!("[a2a]\nname = \"Local inbox\"\n[peers.caller]\na2a_token = \"{CALLER}\"\n")
}

const CALLER: &str = "caller-a2a-token";

/// A JSON-RPC call to the local inbox's `/a2a` as peer `caller`.
async fn call_door(local: &impl Endpoint, method: &str, params: Value) -> Value {
    let r = request(
        "POST",
        &local.url("/a2a"),
        &[
            ("authorization", &format!("Bearer {CALLER}")),
            ("content-type", "application/json"),
            ("a2a-version", "1.0"),
        ],
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_or_a_cancel_of_the_turn_sends_cancel_task_to_the_remote() {
    let agent = tokio::task::spawn_blocking(SdkAgent::start).await.unwrap();
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = door_config(&tony.url(), &agent.card(), 3);
    let env = [("REMOTE_A2A_BEARER", REMOTE_TOKEN)];
    let local = BinHost::start_with_env(dir.path(), &toml, addr, "local.log", &env).await;

    // A timeout: the turn ends timed_out, the remote task is canceled there, TURN_FAILED goes out.
    let slow = ask(&local, "slow 30", None).await;
    let shown = wait_turn_end(&local, ADMIN, slow["id"].as_str().unwrap()).await;
    assert_eq!(shown["turn"]["state"], "timed_out", "{shown:#}");
    let got = tony.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED", "{:#}", got[0].body);
    let cancels = || {
        agent
            .methods()
            .iter()
            .filter(|m| *m == "CancelTask")
            .count()
    };
    assert_eq!(cancels(), 1, "{:?}\n{}", agent.methods(), local.log());
    let task = &shown["remote_tasks"][0];
    assert_eq!(task["state"], "TASK_STATE_CANCELED", "{shown:#}");

    // A cancel: an A2A client cancels the task our turn is; the remote's task is canceled too.
    let sent = call_door(
        &local,
        "SendMessage",
        json!({"message": {"messageId": "cancel-me", "role": "ROLE_USER",
                           "parts": [{"text": "slow 30"}]},
               "configuration": {"returnImmediately": true}}),
    )
    .await;
    let ours = sent["result"]["task"]["id"].as_str().unwrap().to_owned();
    // Once the turn's remote task exists, cancel ours.
    eventually(
        Duration::from_secs(20),
        "the remote task to be sent",
        || async {
            let n = agent
                .methods()
                .iter()
                .filter(|m| *m == "SendMessage")
                .count();
            (n >= 2).then_some(())
        },
    )
    .await;
    let canceled = call_door(&local, "CancelTask", json!({"id": ours})).await;
    assert_eq!(
        canceled["result"]["status"]["state"], "TASK_STATE_CANCELED",
        "{canceled:#}"
    );
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while cancels() < 2 {
        assert!(
            std::time::Instant::now() < end,
            "no second CancelTask: {:?}\n{}",
            agent.methods(),
            local.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    local.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_forgets_the_task_fails_the_turn_saying_so() {
    let agent = tokio::task::spawn_blocking(SdkAgent::start).await.unwrap();
    let port = agent.port;
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = local_config(&tony.url(), &agent.card());
    let env = [("REMOTE_A2A_BEARER", REMOTE_TOKEN)];
    let local = BinHost::start_with_env(dir.path(), &toml, addr, "local.log", &env).await;

    let slow = ask(&local, "slow 30", None).await;
    let id = slow["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), "the remote task id", || async {
        let shown = admin_get(&local, &format!("/messages/{id}")).await.json;
        shown["remote_tasks"][0]["remote_task_id"]
            .is_string()
            .then_some(())
    })
    .await;
    // The remote restarts, as an OpenClaw gateway does, and its in-memory tasks are gone.
    drop(agent);
    let _again = tokio::task::spawn_blocking(move || SdkAgent::start_on(port))
        .await
        .unwrap();
    let shown = wait_turn_end(&local, ADMIN, &id).await;
    assert_eq!(shown["turn"]["state"], "failed", "{shown:#}");
    let error = shown["turn"]["error"].as_str().unwrap_or("");
    assert!(error.starts_with("remote_task_lost"), "{shown:#}");
    let got = tony.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED", "{:#}", got[0].body);
    assert_eq!(got[0].body["payload"]["error"], "remote_task_lost");
    local.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_that_names_another_origin_passes_the_ssrf_guard() {
    // The card's server, and the (private, loopback) origin its interface names.
    let elsewhere = PeerServer::start().await;
    let card_server = PeerServer::start().await;
    card_server.otherwise(
        Answer::from(200)
            .header("content-type", "application/json")
            .body(
                json!({
                    "name": "Lure",
                    "supportedInterfaces": [{"url": elsewhere.url().replace("/message", "/a2a"),
                        "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
                    "capabilities": {},
                    "skills": [],
                })
                .to_string(),
            ),
    );
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let card = format!(
        "{}/.well-known/agent-card.json",
        card_server.url().trim_end_matches("/message")
    );
    let toml = local_config(&tony.url(), &card);
    let env = [("REMOTE_A2A_BEARER", REMOTE_TOKEN)];
    let local = BinHost::start_with_env(dir.path(), &toml, addr, "local.log", &env).await;

    let m = ask(&local, "hello", None).await;
    let shown = wait_turn_end(&local, ADMIN, m["id"].as_str().unwrap()).await;
    assert_eq!(shown["turn"]["state"], "failed", "{shown:#}");
    let error = shown["turn"]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("its interface") && error.contains("not a public address"),
        "{shown:#}"
    );
    let got = tony.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED", "{:#}", got[0].body);
    assert!(
        elsewhere.received().is_empty(),
        "the foreign origin was called"
    );
    assert!(!card_server.received().is_empty());
    local.stop();
}

/// `GET /agent/me` (and so the MCP `contacts` tool) says what an A2A peer's card says of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sees_what_an_a2a_peers_card_says_of_it() {
    let agent = tokio::task::spawn_blocking(SdkAgent::start).await.unwrap();
    let toml = format!(
        r#"
[server]
admin_secret = "{ADMIN}"
[peers.sdk]
a2a_card_url = "{card}"
a2a_bearer_env = "REMOTE_A2A_BEARER"
[agents.planner]
token = "{PLANNER}"
may_send = [{{ to = ["sdk"], types = ["ASK"] }}]
[routes.answers]
from = ["sdk"]
types = ["REPLY", "TURN_FAILED"]
mailbox = true
"#,
        card = agent.card()
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let env = [("REMOTE_A2A_BEARER", REMOTE_TOKEN)];
    let local = BinHost::start_with_env(dir.path(), &toml, addr, "local.log", &env).await;
    let me = request(
        "GET",
        &local.url("/agent/me"),
        &[("authorization", &format!("Bearer {PLANNER}"))],
        "",
    )
    .await;
    assert_eq!(me.status, 200, "{}", me.text);
    let sdk = &me.json["contacts"][0];
    assert_eq!(sdk["kind"], "a2a", "{:#}", me.json);
    assert_eq!(sdk["card"]["name"], "scripted-agent", "{:#}", me.json);
    assert!(
        sdk["card"]["description"]
            .as_str()
            .unwrap()
            .contains("scripted A2A")
    );
    assert_eq!(sdk["card"]["skills"][0]["id"], "scripted");
    local.stop();
}
