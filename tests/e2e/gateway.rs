//! The OpenClaw gateway as an agent driver, against a stand-in that follows the gateway's hook
//! contract (`tests/tools/gateway_standin.py`): the request it gets, a busy session retried, a
//! failed and a skipped run, a wrong token, and the agent's reply through `/send`.

use std::io::BufRead as _;
use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};

const HOOK_TOKEN: &str = "gateway-hook-token";

struct StandIn {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl StandIn {
    fn start() -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gateway_standin.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args([HOOK_TOKEN, path_str(&log)])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the stand-in gateway");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        StandIn {
            child,
            port: first.trim().parse().expect("its port"),
            log,
            _dir: dir,
        }
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(addr: std::net::SocketAddr, peer_url: &str, port: u16, token_var: &str) -> String {
    config_toml(addr, peer_url, port, token_var).build()
}

fn config_toml(addr: std::net::SocketAddr, peer_url: &str, port: u16, token_var: &str) -> Toml {
    Toml::new()
        .listen(addr)
        .schedule(FAST_RETRIES)
        .peer("tony", peer_url, TONY)
        .agent_route("tasks", &["tony"], &["TASK"], &["STATUS"], &["tony"])
        .route(
            "tasks",
            "agent",
            &format!(
                "{{ driver = \"openclaw-gateway\", url = \"http://127.0.0.1:{port}/hooks/agent\", \
                 token_env = \"{token_var}\", agent_id = \"main\", timeout_secs = 30 }}"
            ),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_runs_through_the_gateway_and_its_agent_replies() {
    let gateway = StandIn::start();
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = config(addr, &peer.url(), gateway.port, "HOOK_TOKEN");
    let host = BinHost::start_with_env(
        dir.path(),
        &toml,
        addr,
        "inbox.log",
        &[("HOOK_TOKEN", HOOK_TOKEN)],
    )
    .await;

    // A busy session first (409), then the run: the turn waits, retries, and completes.
    let m = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "thread_id": "conv-1",
        "payload": {"note": "GATEWAY_BUSY_ONCE"}}),
    )
    .await;
    assert_eq!(m.status, 202);
    let v = wait_turn_state(&host, &m.id(), "done").await;
    let said: Value = serde_json::from_str(v["turn"]["stdout_tail"].as_str().unwrap()).unwrap();
    assert_eq!(said["completion"]["status"], "ok", "{v:#}");
    // The agent replied through /send, as its prompt said; the reply went to tony.
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["type"], "STATUS");
    // The session follows the inbox's own thread id (tony calls it "conv-1").
    let thread = v["message"]["thread_id"].as_str().unwrap();
    assert_ne!(thread, "conv-1");
    assert_eq!(
        got[0].body["payload"]["session"],
        format!("hook:inbox:{thread}").as_str()
    );
    assert_eq!(got[0].body["thread_id"], "conv-1", "tony's own name for it");
    // What the gateway got: the contract's fields, the same run key on the retry.
    let reqs = gateway.requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    let r = &reqs[0];
    assert_eq!(r["agentId"], "main");
    assert_eq!(r["sessionKey"], format!("hook:inbox:{thread}").as_str());
    assert_eq!(r["sessionMode"], "persistent");
    assert_eq!(r["waitForCompletion"], true);
    assert_eq!(r["deliver"], false);
    assert_eq!(r["timeoutSeconds"], 30);
    assert_eq!(r["idempotencyKey"], json!(format!("{}:1", m.id())));
    assert_eq!(reqs[1]["idempotencyKey"], r["idempotencyKey"]);
    assert!(
        r["message"].as_str().unwrap().contains("/send"),
        "the prompt carries the reply instructions"
    );
    // The gateway's agent cannot read the inbox's files: its prompt carries the reply's header
    // itself, in the hook call's body (never an argv).
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("-H 'Authorization: Bearer rt_"),
        "{r:#}"
    );
    // The hook token is not in the agent's world: not in the log, not in the prompt.
    assert!(!host.log().contains(HOOK_TOKEN));
    assert!(!r["message"].as_str().unwrap().contains(HOOK_TOKEN));

    // A run the gateway fails, or skips: the turn fails with the gateway's words.
    for (marker, words) in [
        ("GATEWAY_ERROR", "the gateway's run failed"),
        ("GATEWAY_SKIP", "skipped the run"),
    ] {
        let m = post_message(
            &host,
            TONY,
            json!({"type": "TASK", "payload": {"note": marker}}),
        )
        .await;
        let v = wait_turn_state(&host, &m.id(), "failed").await;
        let err = v["turn"]["error"].as_str().unwrap();
        assert!(
            err.starts_with("gateway_failed") && err.contains(words),
            "{err}"
        );
    }
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_hook_token_fails_the_turn_at_once() {
    let gateway = StandIn::start();
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = config(addr, &peer.url(), gateway.port, "WRONG_HOOK_TOKEN_VAR");
    let host = BinHost::start_with_env(
        dir.path(),
        &toml,
        addr,
        "inbox.log",
        &[("WRONG_HOOK_TOKEN_VAR", "not-the-token")],
    )
    .await;
    let m = post_message(&host, TONY, json!({"type": "TASK"})).await;
    let v = wait_turn_state(&host, &m.id(), "failed").await;
    let err = v["turn"]["error"].as_str().unwrap();
    assert!(err.contains("refused the hook token (401)"), "{err}");
    assert!(v["turn"]["duration_ms"].as_i64().unwrap() < 5_000, "{v:#}");
    host.stop();
}

/// README (gateway driver): 503 (not admitted) and 429 are retried with the same run key; 400
/// fails the turn at once; a rerun after a crash is a new attempt with a new key; the hook
/// token never reaches a subprocess agent's environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_s_answers_are_retried_or_fail_and_a_crash_rerun_is_a_new_run() {
    let gateway = StandIn::start();
    let peer = PeerServer::start().await;
    let record = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    // Beside the gateway route, a subprocess agent that records its environment.
    let toml = config_toml(addr, &peer.url(), gateway.port, "HOOK_TOKEN")
        .agent_route("local", &["tony"], &["LOCAL"], &["STATUS"], &["tony"])
        .route(
            "local",
            "agent",
            &format!(
                "{{ command = {} }}",
                agent_command(&["--record", path_str(record.path())])
            ),
        )
        .build();
    let env = [("HOOK_TOKEN", HOOK_TOKEN)];
    let mut host = BinHost::start_with_env(dir.path(), &toml, addr, "inbox.log", &env).await;
    let keys = |id: &str| -> Vec<String> {
        gateway
            .requests()
            .iter()
            .filter_map(|r| r["idempotencyKey"].as_str())
            .filter(|k| k.starts_with(id))
            .map(str::to_owned)
            .collect()
    };
    for marker in ["GATEWAY_NOT_ADMITTED_ONCE", "GATEWAY_RATE_ONCE"] {
        let m = post_message(
            &host,
            TONY,
            json!({"type": "TASK", "payload": {"note": marker}}),
        )
        .await;
        wait_turn_state(&host, &m.id(), "done").await;
        let id = m.id();
        assert_eq!(
            keys(&id),
            [format!("{id}:1"), format!("{id}:1")],
            "{marker}"
        );
    }
    let m = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"note": "GATEWAY_BAD"}}),
    )
    .await;
    let v = wait_turn_state(&host, &m.id(), "failed").await;
    assert!(
        v["turn"]["error"].as_str().unwrap().contains("400"),
        "{v:#}"
    );
    assert_eq!(keys(&m.id()).len(), 1, "a 400 is not retried");

    let local = post_message(&host, TONY, json!({"type": "LOCAL"}))
        .await
        .id();
    let env_seen = read_record(record.path(), &local).await["environ"].clone();
    assert!(env_seen.get("HOOK_TOKEN").is_none(), "{env_seen:#}");
    assert!(!env_seen.to_string().contains(HOOK_TOKEN));

    // A crash while the gateway runs attempt 1: the next process runs attempt 2, a new run.
    let slow = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"note": "GATEWAY_SLOW"}}),
    )
    .await
    .id();
    eventually(
        Duration::from_secs(20),
        "the first run at the gateway",
        || async { (!keys(&slow).is_empty()).then_some(()) },
    )
    .await;
    host.kill9();
    let host = BinHost::start_with_env(dir.path(), &toml, addr, "inbox-2.log", &env).await;
    let v = wait_turn_state(&host, &slow, "done").await;
    assert_eq!(v["turn"]["attempts"], 2, "{v:#}");
    assert_eq!(keys(&slow), [format!("{slow}:1"), format!("{slow}:2")]);
    host.stop();
}
