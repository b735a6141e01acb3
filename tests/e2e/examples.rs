//! The example plugins written in JavaScript and Python, built by the tests from `plugins/`:
//! `reply-instructions-js` does the same job as the Rust `reply-instructions` (compared by meaning:
//! the same text around the same JSON documents, not the same bytes), `payload-check-py` checks
//! payloads; both run within the limits their READMEs advise. `example_plugin_costs` (ignored)
//! measures what they cost for a 256 KiB payload, the figures in their READMEs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agent_inbox::model::{Draft as Reply, Message, ReplyContext};
use agent_inbox::plugins::{
    Engine, EngineConfig, Limits, MessageVerdict, Plugin, Rejection, ReplyVerdict, Reuse,
};
use agent_inbox_tests::*;
use serde_json::{Value, json};

/// The `plugin_limits` the READMEs advise for a JavaScript or Python plugin, as TOML.
const ADVISED_TOML: &str = "{ memory_mib = 64, deadline_ms = 250, warm_calls = 100 }";

/// [`ADVISED_TOML`] for the engine, but with a deadline a loaded test machine always meets: how
/// fast the plugins are is measured by `example_plugin_costs`, not asserted here.
fn advised_limits() -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        deadline: Duration::from_secs(20),
        reuse: Reuse::Warm { max_calls: 100 },
        ..Limits::default()
    }
}

/// The JavaScript plugin's component, built and compiled into the shared compile cache once per
/// test run: the tests here start at once, and would each compile the 12 MB component otherwise.
fn js_wasm() -> PathBuf {
    static COMPILED: OnceLock<PathBuf> = OnceLock::new();
    COMPILED
        .get_or_init(|| precompiled("reply-instructions-js", js_plugin_wasm()))
        .clone()
}

/// The Python plugin's component, like [`js_wasm`].
fn py_wasm() -> PathBuf {
    static COMPILED: OnceLock<PathBuf> = OnceLock::new();
    COMPILED
        .get_or_init(|| precompiled("payload-check-py", py_plugin_wasm()))
        .clone()
}

fn precompiled(name: &str, wasm: PathBuf) -> PathBuf {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    engine
        .load(name, &wasm, &shared_plugin_cache(), Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    wasm
}

/// Loads a component with `limits` off the async runtime (a first load compiles for seconds),
/// through the compile cache the tests share.
async fn load(engine: &Engine, name: &str, wasm: PathBuf, limits: Limits) -> Plugin {
    let (engine, name) = (engine.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || engine.load(&name, &wasm, &shared_plugin_cache(), limits))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn message(payload: &str, in_reply_to: Option<&str>) -> Message {
    Message {
        id: "m-1".into(),
        route: "tasks".into(),
        sender: "tony".into(),
        msg_type: "TASK".into(),
        payload: payload.into(),
        thread_id: "t-1".into(),
        in_reply_to: in_reply_to.map(Into::into),
        hops: 2,
        sender_ref: None,
        received_at: 0,
        mailbox: false,
    }
}

fn reply_context(types: &[&str]) -> ReplyContext {
    ReplyContext {
        url: "http://127.0.0.1:8700/send".into(),
        auth_header: "Authorization: Bearer rt_0123".into(),
        mcp_tools: false,
        reply_types: types.iter().map(|t| t.to_string()).collect(),
        deadline: "2026-11-24T12:00:00Z".into(),
        ca_file: None,
        max_replies: 20,
    }
}

/// A turn text as a list of blocks (split at blank lines), with the JSON document that ends a block
/// parsed: `("Type: TASK\n…\nPayload:", Some({...}))`. Two texts with equal meanings hold the
/// same words around the same JSON values, whatever the key order or number spelling (`2.0` or
/// `2`: every number is compared as an f64, as JavaScript sees it).
fn meaning(text: &str) -> Vec<(String, Option<Value>)> {
    fn numbers_as_f64(value: Value) -> Value {
        match value {
            Value::Number(n) => json!(n.as_f64()),
            Value::Array(items) => items.into_iter().map(numbers_as_f64).collect(),
            Value::Object(fields) => fields
                .into_iter()
                .map(|(k, v)| (k, numbers_as_f64(v)))
                .collect(),
            other => other,
        }
    }
    text.split("\n\n")
        .map(|block| {
            for (i, _) in block.match_indices('\n') {
                if let Ok(value) = serde_json::from_str(&block[i + 1..]) {
                    return (block[..i].to_owned(), Some(numbers_as_f64(value)));
                }
            }
            (block.to_owned(), None)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_plugin_does_the_same_job_as_the_rust_one() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let js = load(
        &engine,
        "reply-instructions-js",
        js_wasm(),
        advised_limits(),
    )
    .await;
    let rust = load(
        &engine,
        "reply-instructions",
        plugin_wasm("reply-instructions"),
        Limits::default(),
    )
    .await;

    let configs = [
        "{}",
        r#"{"preamble": "Réponds en français.\n", "examples": {"BREAKDOWN": {"steps": ["a", 1.5, {"z": 1, "a": [true, null]}]}}}"#,
        r#"{"examples": {"STATUS": {"state": "working", "it's": "quoted"}}}"#,
    ];
    let payloads = [
        r#"{"title":"docs","n":[1,2.0,-3e2]}"#,
        r#""just text""#,
        "{}",
    ];
    for config in configs {
        for payload in payloads {
            for (types, irt) in [(&["BREAKDOWN", "STATUS"][..], None), (&[][..], Some("m-0"))] {
                let (m, c) = (message(payload, irt), reply_context(types));
                let want = rust.render_turn(&m, &c, config).await.unwrap().unwrap();
                let got = js.render_turn(&m, &c, config).await.unwrap().unwrap();
                let at = format!("config {config}, payload {payload}, types {types:?}");
                assert_eq!(meaning(&got), meaning(&want), "{at}\n{got}\n---\n{want}");
                if !types.is_empty() {
                    assert!(got.contains("Bearer rt_0123"), "{at}: no token\n{got}");
                    assert!(
                        got.contains("curl -s -X POST 'http://127.0.0.1:8700/send'"),
                        "{at}: no curl command\n{got}"
                    );
                    assert!(
                        got.contains("Valid types: BREAKDOWN, STATUS."),
                        "{at}\n{got}"
                    );
                }
            }
        }
    }

    let config = r#"{"to_by_type": {"STATUS": ["tony", "someone-else"]}}"#;
    let peers = ["tony".to_string(), "mel".to_string()];
    for (msg_type, to) in [
        ("STATUS", Some(vec!["tony".to_string()])),
        ("BREAKDOWN", None),
    ] {
        let reply = Reply {
            msg_type: msg_type.into(),
            payload: "{}".into(),
        };
        let m = message("{}", None);
        let want = rust.check_reply(&m, &reply, &peers, config).await.unwrap();
        let got = js.check_reply(&m, &reply, &peers, config).await.unwrap();
        assert_eq!(got, want, "{msg_type}");
        let expected = match to {
            Some(to) => ReplyVerdict::Relay {
                rewrite: None,
                to: Some(to),
            },
            None => ReplyVerdict::Accept,
        };
        assert_eq!(got, expected, "{msg_type}");
    }

    // A broken plugin_config is the operator's mistake: the call fails instead of guessing.
    let err = js
        .render_turn(&message("{}", None), &reply_context(&[]), "[1]")
        .await
        .unwrap_err();
    assert!(
        format!("{err}").contains("plugin_config must be a JSON object"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_plugin_passes_a_huge_payload_through_unparsed() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let js = load(
        &engine,
        "reply-instructions-js",
        js_wasm(),
        advised_limits(),
    )
    .await;
    let payload = payload_of(256 << 10);
    let text = js
        .render_turn(&message(&payload, None), &reply_context(&["STATUS"]), "{}")
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.contains(&format!("Payload:\n{payload}\n")),
        "the payload is not there as sent"
    );
    // Below the guard's length it is pretty-printed.
    let small = payload_of(1 << 10);
    let text = js
        .render_turn(&message(&small, None), &reply_context(&["STATUS"]), "{}")
        .await
        .unwrap()
        .unwrap();
    let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&small).unwrap());
    assert!(text.contains(&pretty.unwrap()), "{text}");
    // A deep one under the guard's length (the host refuses bodies nested past 128 levels, but a
    // plugin should not count on it) gets into the text too, one way or the other.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let text = js
        .render_turn(&message(&deep, None), &reply_context(&["STATUS"]), "{}")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap();
    assert!(text.contains("Payload:\n["), "{}", &text[..200]);
}

/// A route `tasks` (TONY sends TASKs to it) whose agent records its prompt in `record`, running
/// `plugin` with the advised limits and `config` (TOML for `plugin_config`).
fn example_route(plugin: &str, config: &str, record: &Path) -> String {
    let command = serde_json::to_string(&[
        "python3".to_string(),
        agent_script(),
        "--prompt".into(),
        "{prompt}".into(),
        "--record".into(),
        record.display().to_string(),
    ])
    .unwrap();
    format!(
        r#"
        [server]
        admin_secret = "{ADMIN}"
        [plugins]
        cache_dir = {cache:?}
        [peers.tony]
        url = "http://127.0.0.1:9/message"
        secret = "{TONY}"
        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["BREAKDOWN", "STATUS"]
        reply_to = ["tony"]
        agent = {{ command = {command} }}
        plugin = "{plugin}"
        plugin_limits = {ADVISED_TOML}
        plugin_config = {config}
        "#,
        cache = shared_plugin_cache().display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_runs_the_javascript_plugin_with_the_advised_limits() {
    let rec = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(js_wasm(), dir.path().join("instructions.wasm")).unwrap();
    let config =
        r#"{ preamble = "Réponds en français.", examples = { STATUS = { state = "working" } } }"#;
    let host = start_host_in(&example_route("instructions.wasm", config, rec.path()), dir).await;
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "docs"}}),
    )
    .await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let id = r.json["id"].as_str().unwrap();
    let prompt = read_record(rec.path(), id).await["prompt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(prompt.starts_with("Réponds en français.\n\n"), "{prompt}");
    for want in [
        format!("curl -s -X POST '{}'", host.url("/send")),
        // The credential is a 0600 header file, so no token is ever on curl's command line.
        "-H '@".into(),
        "\"state\": \"working\"".into(),
        "Valid types: BREAKDOWN, STATUS.".into(),
    ] {
        assert!(prompt.contains(&want), "no {want:?} in:\n{prompt}");
    }
    let turn = wait_turn_end(&host, ADMIN, id).await;
    assert_eq!(turn["turn"]["state"], "done", "{turn:#}");
    host.stop().await;
}

/// The Python plugin's config: a title (string) and a priority (integer).
const PY_CONFIG: &str = r#"{"required": {"title": "string", "priority": "integer"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_checks_payloads() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let py = load(&engine, "payload-check-py", py_wasm(), advised_limits()).await;
    let reject = |status: u16, reason: &str| {
        MessageVerdict::Reject(Rejection {
            status,
            reason: reason.into(),
        })
    };
    let huge = format!(r#"{{"title": "{}"}}"#, "x".repeat(256 << 10));
    let cases = [
        (
            r#"{"title": "docs", "priority": 1}"#,
            MessageVerdict::Accept,
        ),
        (
            r#"{"priority": true}"#,
            reject(
                422,
                "missing field `title` (string); field `priority` must be of type integer",
            ),
        ),
        (
            r#"{"title": 5, "priority": 1.5}"#,
            reject(
                422,
                "field `title` must be of type string; field `priority` must be of type integer",
            ),
        ),
        ("[1, 2]", reject(422, "payload must be a JSON object")),
        (&huge, reject(413, "payload is over 262144 characters")),
    ];
    for (payload, want) in cases {
        let got = py
            .check_message(&message(payload, None), PY_CONFIG)
            .await
            .unwrap();
        assert_eq!(got, want, "{}", &payload[..payload.len().min(80)]);
    }
    // Its other hooks keep the built-in behaviour.
    let (m, ctx) = (message("{}", None), reply_context(&["STATUS"]));
    assert_eq!(py.render_turn(&m, &ctx, PY_CONFIG).await.unwrap(), None);
    let reply = Reply {
        msg_type: "STATUS".into(),
        payload: "{}".into(),
    };
    let peers = ["tony".to_string()];
    let verdict = py.check_reply(&m, &reply, &peers, PY_CONFIG).await.unwrap();
    assert_eq!(verdict, ReplyVerdict::Accept);
    // A broken config fails the call: the operator's mistake is not blamed on the sender.
    let broken = py.check_message(&m, "not json").await;
    assert!(broken.is_err(), "{broken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_runs_the_python_plugin_with_the_advised_limits() {
    let rec = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(py_wasm(), dir.path().join("check.wasm")).unwrap();
    let config = r#"{ required = { title = "string" } }"#;
    let host = start_host_in(&example_route("check.wasm", config, rec.path()), dir).await;

    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"label": "x"}}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "plugin_rejected"),
        "{:#}",
        r.json
    );
    assert_eq!(r.json["error"]["message"], "missing field `title` (string)");

    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "docs"}}),
    )
    .await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let turn = wait_turn_end(&host, ADMIN, r.json["id"].as_str().unwrap()).await;
    assert_eq!(turn["turn"]["state"], "done", "{turn:#}");
    host.stop().await;
}

/// A JSON object of about `bytes` bytes: many small records, as a real big payload would be.
fn payload_of(bytes: usize) -> String {
    let mut items = Vec::new();
    let mut len = 0;
    while len + 100 < bytes {
        let item = json!({"id": items.len(), "done": false, "text": "add a dark mode to the settings page"});
        len += item.to_string().len() + 1;
        items.push(item);
    }
    let payload = json!({"title": "a big task", "items": items}).to_string();
    assert!(payload.len() <= bytes, "{} > {bytes}", payload.len());
    payload
}

/// Measures what each example plugin costs for payloads up to 256 KiB (the host's default
/// `max_body_bytes`): the first compile; the smallest `memory_mib` a call on a fresh instance passes
/// with; the median time of a call on a fresh and on a warm instance; and the slowest of 250 calls
/// under the advised limits, which must all pass. The figures in the plugins' READMEs come from it:
///
/// `cargo test -p agent-inbox-tests --test e2e example_plugin_costs -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name"]
async fn example_plugin_costs() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let plugins = [
        (
            "reply-instructions (Rust)",
            plugin_wasm("reply-instructions"),
            "render-turn",
        ),
        ("reply-instructions-js", js_wasm(), "render-turn"),
        ("reply-instructions-js", js_wasm(), "check-message"),
        (
            "task-schema (Rust)",
            plugin_wasm("task-schema"),
            "check-message",
        ),
        ("payload-check-py", py_wasm(), "check-message"),
    ];
    let ctx = reply_context(&["BREAKDOWN", "STATUS"]);
    // What the first load of each component costs (then the compile cache answers).
    for (i, (name, wasm, _)) in plugins.iter().enumerate() {
        if i > 0 && plugins[i - 1].0 == *name {
            continue;
        }
        let cache = tempfile::tempdir().unwrap();
        let (engine, owned, wasm) = (engine.clone(), name.to_string(), wasm.clone());
        let (compiled, cached) = tokio::task::spawn_blocking(move || {
            let load = || engine.load(&owned, &wasm, cache.path(), Limits::default());
            (load().unwrap().load_time(), load().unwrap().load_time())
        })
        .await
        .unwrap();
        println!(
            "{name}: compiled in {:.1} s, then loaded from the cache in {:.0} ms",
            compiled.as_secs_f64(),
            cached.as_secs_f64() * 1e3
        );
    }
    println!(
        "| plugin | hook | payload | memory_mib needed | fresh call | warm call | slowest of 250 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, wasm, hook) in plugins {
        for size in [1 << 10, 64 << 10, 256 << 10] {
            let m = message(&payload_of(size), None);
            let config = if hook == "check-message" {
                PY_CONFIG
            } else {
                "{}"
            };
            let limits = |mib: usize, reuse: Reuse| Limits {
                memory_bytes: mib << 20,
                deadline: Duration::from_secs(20),
                reuse,
                ..Limits::default()
            };
            let call = |plugin: Plugin| {
                let (m, ctx) = (m.clone(), ctx.clone());
                async move {
                    let started = Instant::now();
                    let result = if hook == "render-turn" {
                        plugin.render_turn(&m, &ctx, config).await.map(drop)
                    } else {
                        plugin.check_message(&m, config).await.map(drop)
                    };
                    result.map(|()| started.elapsed())
                }
            };
            // The smallest cap, in MiB, at which a fresh call passes (binary search).
            let (mut low, mut high) = (0, 256);
            while high - low > 1 {
                let mid = (low + high) / 2;
                let plugin = load(&engine, name, wasm.clone(), limits(mid, Reuse::Fresh)).await;
                if call(plugin).await.is_ok() {
                    high = mid;
                } else {
                    low = mid;
                }
            }
            let median = |mut times: Vec<Duration>| {
                times.sort();
                times[times.len() / 2]
            };
            let fresh = load(&engine, name, wasm.clone(), limits(256, Reuse::Fresh)).await;
            let mut times = Vec::new();
            for _ in 0..11 {
                times.push(call(fresh.clone()).await.unwrap());
            }
            let fresh_time = median(times);
            let warm = limits(256, Reuse::Warm { max_calls: 1000 });
            let warm = load(&engine, name, wasm.clone(), warm).await;
            let mut times = Vec::new();
            for _ in 0..21 {
                times.push(call(warm.clone()).await.unwrap());
            }
            let warm_time = median(times[1..].to_vec());
            // Warm instances serving call after call (a JS heap grows between its garbage
            // collections) stay within the advised cap; the slowest of those calls.
            let advised = load(&engine, name, wasm.clone(), advised_limits()).await;
            let mut slowest = Duration::ZERO;
            for i in 0..250 {
                match call(advised.clone()).await {
                    Ok(took) => slowest = slowest.max(took),
                    Err(e) => panic!("{name}: call {i} failed under the advised limits: {e}"),
                }
            }
            println!(
                "| {name} | {hook} | {:.0} KiB | {high} | {:.2} ms | {:.2} ms | {:.1} ms |",
                m.payload.len() as f64 / 1024.0,
                fresh_time.as_secs_f64() * 1e3,
                warm_time.as_secs_f64() * 1e3,
                slowest.as_secs_f64() * 1e3
            );
        }
    }
}

/// The repository's routes.toml, as the README's quick start runs it (on another port): a TASK
/// from the demo peer is broken down by the demo agent and the BREAKDOWN lands in the mailbox, and
/// an A2A client's task completes with the breakdown as its artifact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_config_works_as_the_readme_says() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tests/agents")).unwrap();
    std::fs::copy(
        root.join("tests/agents/demo-agent.py"),
        dir.path().join("tests/agents/demo-agent.py"),
    )
    .unwrap();
    let addr = unused_addr();
    let toml = std::fs::read_to_string(root.join("routes.toml"))
        .unwrap()
        .replace("127.0.0.1:8700", &addr.to_string());
    let host = BinHost::start(dir.path(), &toml, addr, "inbox.log").await;
    let auth = [
        ("x-shared-secret", "demo-secret"),
        ("content-type", "application/json"),
    ];
    let r = request(
        "POST",
        &host.url("/message"),
        &auth,
        serde_json::json!({"type": "TASK", "payload": {"title": "Ship it"}}).to_string(),
    )
    .await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let thread = r.json["thread_id"].as_str().unwrap().to_owned();
    let answer = eventually(
        Duration::from_secs(30),
        "the breakdown in the mailbox",
        || async {
            let list = admin_get_with(&host, "demo-admin-secret", "/messages?route=replies").await;
            list.json["messages"]
                .as_array()
                .and_then(|m| m.first().cloned())
        },
    )
    .await;
    assert_eq!(answer["type"], "BREAKDOWN");
    assert_eq!(answer["thread_id"], serde_json::json!(thread));
    assert_eq!(answer["payload"]["steps"][0], "Understand Ship it");

    let a2a = request(
        "POST",
        &host.url("/a2a"),
        &[
            ("authorization", "Bearer demo-a2a-token"),
            ("content-type", "application/json"),
            ("a2a-version", "1.0"),
        ],
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
            "message": {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "Plan the release"}]}}})
        .to_string(),
    )
    .await;
    let task = &a2a.json["result"]["task"];
    assert_eq!(
        task["status"]["state"], "TASK_STATE_COMPLETED",
        "{:#}",
        a2a.json
    );
    assert_eq!(
        task["artifacts"][0]["parts"][0]["data"]["payload"]["steps"][0],
        "Understand Plan the release"
    );
    host.stop();
}

async fn admin_get_with(host: &impl Endpoint, secret: &str, path: &str) -> Resp {
    let auth = format!("Bearer {secret}");
    request("GET", &host.url(path), &[("authorization", &auth)], "").await
}
