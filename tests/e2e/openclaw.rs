//! A real OpenClaw 2026.9.6 gateway's A2A channel (`channels.a2a`), both ways. Its model is
//! tests/tools/model_standin.py, an OpenAI-compatible server answering with fixed text, so the
//! gateway runs real agent turns offline. Node 24 and openclaw come from npm, cached under
//! `target/openclaw-cache/` by tests/tools/openclaw.sh.
//!
//! - A route with `driver = "a2a"` pointed at the gateway's card: the gateway agent's answer (the
//!   task's artifact) is the route's reply, relayed to the peer that asked.
//! - The gateway's 30 requests a minute per peer (polls count) met by a route allowed far more:
//!   the gateway's `-32000 "Peer is rate limited"` is backed off, and every turn still ends done.
//! - The gateway's own outbound peer pointed at our `/a2a`: `openclaw message send` reaches a
//!   route here as a message from that peer.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_inbox_tests::*;
use serde_json::json;

const TONY: &str = "tony-secret";
/// The bearer we send the gateway (its `peers.inbox.token`).
const TO_GATEWAY: &str = "inbox-to-gateway-token";
/// The bearer the gateway sends us (its `peers.inbox.outboundToken`, our peer's `a2a_token`).
const FROM_GATEWAY: &str = "gateway-to-inbox-token";
const ANSWER: &str = "The gateway agent says: forty-two.";

/// A gateway and its stand-in model, both stopped on drop.
struct Gateway {
    child: std::process::Child,
    model: std::process::Child,
    port: u16,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the model stand-in and `openclaw gateway run` on `port`, with one A2A peer `inbox`
    /// whose outbound URL is `inbox_a2a`; waits until the gateway serves its card.
    fn start(port: u16, inbox_a2a: &str) -> Gateway {
        let bin = openclaw_bin();
        let dir = tempfile::tempdir().unwrap();
        let model_port = unused_addr().port();
        let model = std::process::Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/model_standin.py"))
            .args([&model_port.to_string(), ANSWER])
            .arg(dir.path().join("model.jsonl"))
            .spawn()
            .expect("start the model stand-in");
        let config = json!({
            "gateway": {"mode": "local", "port": port, "bind": "loopback", "auth": {"mode": "none"}},
            "logging": {"file": dir.path().join("gateway-file.log")},
            "update": {"checkOnStart": false},
            "agents": {"defaults": {"model": {"primary": "standin/standin-model"}}},
            "models": {
                "mode": "merge",
                "catalogRefresh": {"enabled": false},
                "providers": {"standin": {
                    "baseUrl": format!("http://127.0.0.1:{model_port}/v1"),
                    "apiKey": "standin-key",
                    "api": "openai-completions",
                    "models": [{"id": "standin-model", "name": "Stand-in",
                                "contextWindow": 128000, "maxTokens": 4096}],
                }},
            },
            "channels": {"a2a": {"enabled": true, "peers": {"inbox": {
                "token": TO_GATEWAY,
                "url": inbox_a2a,
                "outboundToken": FROM_GATEWAY,
            }}}},
        });
        let path = |p: &str| dir.path().join(p).display().to_string();
        for d in ["home", "state", "workspace"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("openclaw.json"), config.to_string()).unwrap();
        let env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            ),
            ("HOME".into(), path("home")),
            ("OPENCLAW_HOME".into(), path("home")),
            ("OPENCLAW_STATE_DIR".into(), path("state")),
            ("OPENCLAW_CONFIG_PATH".into(), path("openclaw.json")),
            ("OPENCLAW_WORKSPACE_DIR".into(), path("workspace")),
            ("OPENCLAW_OFFLINE".into(), "1".into()),
            ("OPENCLAW_DISABLE_BONJOUR".into(), "1".into()),
            ("OPENCLAW_NO_AUTO_UPDATE".into(), "1".into()),
        ];
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let child = std::process::Command::new(bin.join("openclaw"))
            .args(["gateway", "run", "--port", &port.to_string()])
            .args(["--bind", "loopback", "--verbose"])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the gateway");
        let gateway = Gateway {
            child,
            model,
            port,
            env,
            dir,
        };
        let started = Instant::now();
        let card = gateway.card();
        loop {
            let ok = std::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &card])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                eprintln!("the gateway served its card after {:?}", started.elapsed());
                break gateway;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the gateway did not start:\n{}",
                gateway.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn card(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/agent-card.json", self.port)
    }

    fn log(&self) -> String {
        strip_ansi(
            &std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default(),
        )
    }

    /// What reached the model: each request's user text.
    fn prompts(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("model.jsonl")).unwrap_or_default()
    }

    /// Runs the `openclaw` CLI against this gateway.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = std::process::Command::new(openclaw_bin().join("openclaw"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run openclaw");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), strip_ansi(&text))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for child in [&mut self.child, &mut self.model] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Our inbox: peer `tony` (the PeerServer) asks; route `delegate` hands ASK to the gateway at its
/// default budget; route `burst` hands BURST to it allowed 600 calls a minute, far above the
/// gateway's 30; peer `openclaw` is the gateway calling our `/a2a`, its messages the turns of route
/// `from-gateway` (tests/agents/a2a-agent.py, which echoes).
fn inbox_config(addr: std::net::SocketAddr, tony: &str, card: &str) -> String {
    format!(
        r#"
[server]
listen = "{addr}"
admin_secret = "{ADMIN}"
[relay]
retry_schedule = ["0s", "1s", "1s"]
[a2a]
name = "Inbox under test"
[peers.tony]
url = "{tony}"
secret = "{TONY}"
[peers.openclaw]
a2a_token = "{FROM_GATEWAY}"
[routes.delegate]
from = ["tony"]
types = ["ASK"]
reply_types = ["ANSWER"]
reply_to = ["tony"]
agent = {{ driver = "a2a", url = "{card}", token_env = "GATEWAY_BEARER", reply_type = "ANSWER", timeout_secs = 300 }}
[routes.burst]
from = ["tony"]
types = ["BURST"]
reply_types = ["ANSWER"]
reply_to = ["tony"]
agent = {{ driver = "a2a", url = "{card}", token_env = "GATEWAY_BEARER", reply_type = "ANSWER", timeout_secs = 300, max_calls_per_minute = 600, max_concurrent = 8 }}
[routes.from-gateway]
from = ["openclaw"]
types = ["NOTE"]
agent = {{ command = ["python3", "{agent}", "-m", "{{prompt}}"], timeout_secs = 60, kill_grace_secs = 1 }}
a2a = {{ type = "NOTE", default = true }}
"#,
        agent = agents_dir().join("a2a-agent.py").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_openclaw_gateway_answers_over_a2a_both_ways() {
    let started = Instant::now();
    let addr = unused_addr();
    let gateway_port = unused_addr().port();
    let inbox_a2a = format!("http://{addr}/a2a");
    let gateway = tokio::task::spawn_blocking(move || Gateway::start(gateway_port, &inbox_a2a))
        .await
        .unwrap();
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = inbox_config(addr, &tony.url(), &gateway.card());
    let env = [("GATEWAY_BEARER", TO_GATEWAY)];
    let inbox = BinHost::start_with_env(dir.path(), &toml, addr, "inbox.log", &env).await;
    let context = |what: &str| {
        format!(
            "{what}\n--- inbox log\n{}\n--- gateway log (tail)\n{}",
            inbox.log(),
            tail(&gateway.log(), 60)
        )
    };

    // The gateway agent's answer, the task's artifact, reaches tony as the route's reply.
    let t0 = Instant::now();
    let ask = post_message(
        &inbox,
        TONY,
        json!({"type": "ASK", "payload": {"text": "What is six times seven?"}}),
    )
    .await;
    assert_eq!(ask.status, 202, "{}", ask.text);
    let got = tony.wait_for(1, Duration::from_secs(120)).await;
    let reply = &got[0].body;
    assert_eq!(reply["type"], "ANSWER", "{}", context(&reply.to_string()));
    assert_eq!(reply["payload"]["text"], ANSWER, "{reply:#}");
    assert_eq!(reply["in_reply_to"], ask.json["id"]);
    eprintln!(
        "the artifact text reached tony after {:?}: {:?}",
        t0.elapsed(),
        reply["payload"]["text"]
    );
    assert!(
        gateway.prompts().contains("What is six times seven?"),
        "the message never reached the model: {}",
        gateway.prompts()
    );
    // (The reply can reach tony a moment before the turn is recorded as ended.)
    let shown = wait_turn_end(&inbox, ADMIN, ask.json["id"].as_str().unwrap()).await;
    assert_eq!(shown["turn"]["state"], "done", "{shown:#}");
    let task = &shown["remote_tasks"][0];
    assert_eq!(task["state"], "TASK_STATE_COMPLETED", "{shown:#}");
    assert!(task["remote_task_id"].is_string(), "{task:#}");

    // More calls than the gateway's 30 a minute: it answers -32000 under HTTP 200, the inbox
    // backs off, and every turn still ends done with its answer.
    const BURST: usize = 8;
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..BURST {
        let r = post_message(
            &inbox,
            TONY,
            json!({"type": "BURST", "payload": {"text": format!("burst {i}")}}),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_owned());
    }
    let got = tony.wait_for(1 + BURST, Duration::from_secs(280)).await;
    for r in &got[1..] {
        assert_eq!(r.body["type"], "ANSWER", "{}", context(&r.body.to_string()));
        assert_eq!(r.body["payload"]["text"], ANSWER);
    }
    for id in &ids {
        let shown = wait_turn_end(&inbox, ADMIN, id).await;
        assert_eq!(shown["turn"]["state"], "done", "{shown:#}");
    }
    let metrics = admin_get(&inbox, "/metrics").await.text;
    let limited = counter_sum(
        &metrics,
        "inbox_a2a_client_calls_total",
        "outcome=\"rate_limited\"",
    );
    let ok = counter_sum(&metrics, "inbox_a2a_client_calls_total", "outcome=\"ok\"");
    assert!(
        limited > 0.0,
        "the gateway never said slow down ({ok} calls ok):\n{metrics}"
    );
    eprintln!(
        "{BURST} turns past the gateway's 30/min: all done after {:?}; calls ok {ok}, rate limited {limited}",
        t0.elapsed()
    );

    // The other way: the gateway's outbound peer is our /a2a.
    let t0 = Instant::now();
    let note = "A note from the gateway, sent with openclaw message send.";
    let (sent, out) = tokio::task::block_in_place(|| {
        gateway.cli(&[
            "message",
            "send",
            "--channel",
            "a2a",
            "--target",
            "inbox",
            "--message",
            note,
        ])
    });
    assert!(sent, "{}", context(&out));
    let found = eventually(Duration::from_secs(60), "the gateway's note", || async {
        let r = admin_get(&inbox, "/messages?route=from-gateway").await;
        r.json["messages"].as_array().and_then(|m| {
            m.iter()
                .find(|m| m.to_string().contains("A note from the gateway"))
                .cloned()
        })
    })
    .await;
    assert_eq!(found["type"], "NOTE", "{found:#}");
    eprintln!(
        "the gateway's outbound message reached our /a2a after {:?}; whole test {:?}",
        t0.elapsed(),
        started.elapsed()
    );
    inbox.stop();
    drop(gateway);
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The sum of a counter's samples whose labels contain `label`.
fn counter_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
