//! The HTTP API against its contract, `openapi.yaml`: the document the binary serves is that file;
//! every answer a real inbox gives in a battery of real requests (every operation, its successes
//! and its refusals, a turn with a reply, dead letters, the auth limiter, a full queue) has its
//! status, headers and body in the document; and schemathesis, generating requests from the
//! document, finds nothing against a live inbox.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use agent_inbox::model::now_ms;
use agent_inbox::signature::{self, SigningKey};
use agent_inbox_tests::*;
use serde_json::{Value, json};

/// A signed peer's key (Standard Webhooks).
const KEY: &str = "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=";

/// The contract, read from the repository.
struct Contract {
    doc: Value,
    /// (method, path template, status) of every answer checked.
    seen: std::sync::Mutex<BTreeSet<(String, String, u16)>>,
}

impl Contract {
    /// The document the binary serves (`openapi.yaml`, converted by `host/build.rs`).
    fn load() -> Contract {
        Contract {
            doc: serde_json::from_str(agent_inbox::http::OPENAPI_JSON).expect("JSON"),
            seen: Default::default(),
        }
    }

    /// Follows a local `$ref` (`#/components/...`).
    fn deref<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {r}")),
            None => v,
        }
    }

    /// Fails unless the document has `method path` answering `resp.status` with these headers and
    /// this body.
    fn check(&self, method: &str, path: &str, resp: &Resp) {
        let what = format!("{method} {path} -> {}", resp.status);
        let item = &self.doc["paths"][path];
        assert!(item.is_object(), "{what}: the contract has no such path");
        let op = &item[method.to_ascii_lowercase()];
        let answer = if op.is_object() {
            let status = resp.status.to_string();
            let range = format!("{}XX", status.chars().next().unwrap_or('0'));
            let answer = op["responses"]
                .get(&status)
                .or_else(|| op["responses"].get(&range))
                .unwrap_or_else(|| {
                    panic!("{what}: status not in the contract; body {}", resp.text)
                });
            self.deref(answer)
        } else {
            // A method the path does not take: 405, naming the ones it does.
            assert_eq!(
                resp.status, 405,
                "{what}: the contract has no such operation"
            );
            let allowed: Vec<String> = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(m, _)| m.to_ascii_uppercase())
                .collect();
            let allow = resp.headers.get("allow").map(|v| v.to_str().unwrap_or(""));
            assert_eq!(allow, Some(allowed.join(", ").as_str()), "{what}");
            &self.doc["components"]["responses"]["MethodNotAllowed"]
        };
        for (name, header) in answer["headers"].as_object().into_iter().flatten() {
            if self.deref(header)["required"] == true {
                assert!(
                    resp.headers.contains_key(name.as_str()),
                    "{what}: no {name} header; headers {:?}",
                    resp.headers
                );
            }
        }
        let schema = &answer["content"]["application/json"]["schema"];
        let ct = resp
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or(""));
        // A text answer the contract has (the metrics, an event stream) is checked as text.
        let media = ct.map(|c| c.split(';').next().unwrap_or("").trim());
        let text_type = [
            "text/plain",
            "text/event-stream",
            "text/html",
            "text/javascript",
            "text/css",
        ]
        .into_iter()
        .find(|t| answer["content"][*t].is_object() && media == Some(*t));
        if let Some(media) = text_type {
            // A text answer (the metrics, an event stream): its media type, and a body.
            assert!(ct.is_some_and(|c| c.starts_with(media)), "{what}: {ct:?}");
            assert!(!resp.text.is_empty(), "{what}: an empty text body");
        } else if schema.is_null() {
            assert!(
                resp.text.is_empty(),
                "{what}: a body the contract has none for"
            );
        } else {
            assert_eq!(ct, Some("application/json"), "{what}");
            // The schema, with the document's components beside it so `#/components/...` resolves.
            let rooted = json!({"allOf": [schema], "components": self.doc["components"]});
            let validator = jsonschema::validator_for(&rooted).expect("a valid schema");
            let errors: Vec<String> = validator
                .iter_errors(&resp.json)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{what}: {errors:#?}\nbody: {:#}",
                resp.json
            );
        }
        self.seen
            .lock()
            .expect("lock")
            .insert((method.to_owned(), path.to_owned(), resp.status));
    }

    /// Every (method, path) in the document.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                ops.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        ops
    }
}

/// Waits until the turn of message `id` is in `state`.
async fn wait_state(host: &impl Endpoint, id: &str, state: &str) {
    eventually(Duration::from_secs(20), state, || async {
        (view(host, id).await["turn"]["state"] == state).then_some(())
    })
    .await;
}

async fn call(
    c: &Contract,
    host: &impl Endpoint,
    method: &str,
    template: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let resp = request(method, &host.url(path), headers, body.to_owned()).await;
    c.check(method, template, &resp);
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_openapi_yaml() {
    let host = start_host(&Toml::new().build()).await;
    let served = request("GET", &host.url("/openapi.json"), &[], "").await;
    assert_eq!(served.status, 200);
    // Read by an independent YAML parser (PyYAML, which schemathesis brings).
    let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    let (ok, text) = run_tool("yaml2json.py", &[yaml.to_str().expect("a UTF-8 path")], b"");
    assert!(ok, "{text}");
    let from_yaml: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(served.json, from_yaml);
    host.stop().await;
}

#[test]
fn the_path_table_is_the_documents() {
    let doc = Contract::load();
    let documented: BTreeSet<(String, String)> = doc
        .operations()
        .into_iter()
        .map(|(m, p)| {
            // `/messages/{id}` and `/messages/{}` are the same route.
            let mut out = String::new();
            let mut in_param = false;
            for ch in p.chars() {
                match ch {
                    '{' => {
                        in_param = true;
                        out.push('{');
                    }
                    '}' => {
                        in_param = false;
                        out.push('}');
                    }
                    _ if in_param => {}
                    _ => out.push(ch),
                }
            }
            (m.to_ascii_lowercase(), out)
        })
        .collect();
    let served: BTreeSet<(String, String)> = agent_inbox::http::routes()
        .into_iter()
        .map(|(p, m)| (m.to_owned(), p))
        .collect();
    assert_eq!(documented, served);
}

#[test]
fn the_error_codes_are_the_documents() {
    let doc = Contract::load();
    let documented: BTreeSet<String> = doc.doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("an enum")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect();
    let served: BTreeSet<String> = agent_inbox::http::ApiError::examples()
        .iter()
        .map(|e| e.code().to_owned())
        .collect();
    assert_eq!(documented, served);
}

/// A config with every kind of route and peer: tony (shared secret) sends TASKs to an agent that
/// records its environment in `record` and replies STATUS, and anything to a mailbox; sw signs
/// (Standard Webhooks).
fn battery_config(tony_url: &str, record: &Path) -> String {
    Toml::tasks(
        tony_url,
        &agent_command(&["--record", path_str(record), "--reply", "STATUS"]),
    )
    .server("max_body_bytes", "4096")
    .server("auth_failure_limit", "0")
    .peer("sw", "http://127.0.0.1:9/message", KEY)
    .peer_key("sw", "auth", &quoted("standard-webhooks"))
    .mailbox("notes", &["tony", "sw"], &["NOTE"])
    .peer_key("tony", "a2a_token", &quoted(TONY_A2A))
    .route("tasks", "a2a", r#"{ type = "TASK" }"#)
    .route("tasks", "agent_id", &quoted("helper"))
    .agent_route("held", &["tony"], &["HELD"], &["STATUS"], &["tony"])
    .route("held", "approve", &quoted("both"))
    .build()
        + "[a2a]\n"
        + &agents_toml()
}

/// The local agent's token in the contract tests' configs (and tests/tools/schemathesis.toml).
const HELPER: &str = "helper-agent-token";

/// A local agent `helper` that may send TASKs to tony (and, for the 429, `slow`, once a minute).
fn agents_toml() -> String {
    format!(
        "[agents.helper]\ntoken = \"{HELPER}\"\nmay_send = [{{ to = [\"tony\"], types = [\"TASK\"] }}]\n\
         max_per_minute = 100000\n\
         [agents.slow]\ntoken = \"slow-agent-token\"\nmay_send = [{{ to = [\"tony\"], types = [\"TASK\"] }}]\n\
         max_per_minute = 1\n"
    )
}

/// Tony's A2A token in the contract tests' configs (and tests/tools/schemathesis.toml).
const TONY_A2A: &str = "tony-a2a-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_contract() {
    let c = Contract::load();
    let tony = PeerServer::start().await;
    // The first delivery is refused for good (a dead letter); later ones succeed.
    tony.script([400]);
    let record = tempfile::tempdir().unwrap();
    let host = start_host(&battery_config(&tony.url(), record.path())).await;
    let admin = format!("Bearer {ADMIN}");
    let admin = [("authorization", admin.as_str())];
    let as_tony = [
        ("x-shared-secret", TONY),
        ("content-type", "application/json"),
    ];
    let c = &c;
    let h = &host;

    // Open endpoints.
    call(c, h, "GET", "/healthz", "/healthz", &[], "").await;
    assert_eq!(
        call(c, h, "GET", "/readyz", "/readyz", &[], "")
            .await
            .status,
        200
    );
    let metrics = call(c, h, "GET", "/metrics", "/metrics", &admin, "").await;
    assert_eq!(metrics.status, 200);
    let r = call(c, h, "GET", "/metrics", "/metrics", &[], "").await;
    assert_eq!(r.status, 401);
    // The console: its pages, a failed and a good sign-in, and a read with the session cookie.
    for page in ["/console", "/console/app.js", "/console/style.css"] {
        assert_eq!(call(c, h, "GET", page, page, &[], "").await.status, 200);
    }
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = call(
        c,
        h,
        "POST",
        "/console/login",
        "/console/login",
        &form,
        "secret=nope",
    )
    .await;
    assert_eq!(r.status, 401);
    let good = format!("secret={ADMIN}");
    let r = call(
        c,
        h,
        "POST",
        "/console/login",
        "/console/login",
        &form,
        &good,
    )
    .await;
    assert_eq!(r.status, 303);
    let cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let with_cookie = [("cookie", cookie.as_str())];
    assert_eq!(
        call(c, h, "GET", "/status", "/status", &with_cookie, "")
            .await
            .status,
        200
    );
    assert_eq!(
        call(c, h, "POST", "/console/logout", "/console/logout", &[], "")
            .await
            .status,
        303
    );
    let events = call(c, h, "GET", "/events", "/events?timeout=1", &admin, "").await;
    assert_eq!(events.status, 200);
    let r = call(c, h, "GET", "/events", "/events?timeout=0", &admin, "").await;
    assert_eq!(r.status, 400);
    call(c, h, "GET", "/openapi.json", "/openapi.json", &[], "").await;
    call(c, h, "POST", "/healthz", "/healthz", &[], "").await;

    // POST /message: received, duplicate, and every refusal.
    let task = r#"{"type": "TASK", "payload": {"n": 1}, "id": "t-1"}"#;
    let ack = call(c, h, "POST", "/message", "/message", &as_tony, task).await;
    assert_eq!(ack.status, 202);
    let task_id = ack.id();
    let dup = call(c, h, "POST", "/message", "/message", &as_tony, task).await;
    assert_eq!(dup.status, 200);
    for (body, status) in [
        ("{", 400),
        ("[1]", 400),
        (r#"{"payload": {}}"#, 400),
        (r#"{"type": "NO SPACES"}"#, 400),
        (r#"{"type": "UNROUTED"}"#, 422),
        (r#"{"type": "NOTE", "hops": 8}"#, 422),
        (
            &format!(r#"{{"type": "NOTE", "payload": "{}"}}"#, "x".repeat(5000)),
            413,
        ),
    ] {
        let r = call(c, h, "POST", "/message", "/message", &as_tony, body).await;
        assert_eq!(r.status, status, "{body:.40}: {:#}", r.json);
    }
    let r = call(
        c,
        h,
        "POST",
        "/message",
        "/message",
        &[("x-shared-secret", "wrong")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 401);
    let text = [("x-shared-secret", TONY), ("content-type", "text/plain")];
    let r = call(
        c,
        h,
        "POST",
        "/message",
        "/message",
        &text,
        r#"{"type":"NOTE"}"#,
    )
    .await;
    assert_eq!(r.status, 415);
    let r = call(c, h, "GET", "/message", "/message", &[], "").await;
    assert_eq!(r.status, 405);

    // POST /message/{peer}: by secret, signed, and each signature refusal.
    let r = call(
        c,
        h,
        "POST",
        "/message/{peer}",
        "/message/tony",
        &as_tony,
        r#"{"type":"NOTE"}"#,
    )
    .await;
    assert_eq!(r.status, 202);
    let body = r#"{"type": "NOTE"}"#;
    let now = now_ms() / 1000;
    let key = SigningKey::parse(KEY).expect("key");
    let good = signature::sign(std::slice::from_ref(&key), "sw-1", now, body.as_bytes());
    let (now_s, stale_s) = (now.to_string(), (now - 3600).to_string());
    let stale = signature::sign(&[key], "sw-1", now - 3600, body.as_bytes());
    for (ts, sig, status) in [
        (now_s.as_str(), good.as_str(), 202),
        (now_s.as_str(), good.as_str(), 200),
        (now_s.as_str(), "v1,AAAA", 401),
        (stale_s.as_str(), stale.as_str(), 401),
    ] {
        let headers = [
            ("webhook-id", "sw-1"),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
            ("content-type", "application/json"),
        ];
        let r = call(
            c,
            h,
            "POST",
            "/message/{peer}",
            "/message/sw",
            &headers,
            body,
        )
        .await;
        assert_eq!(r.status, status, "{:#}", r.json);
    }
    let r = call(c, h, "POST", "/message/{peer}", "/message/sw", &[], body).await;
    assert_eq!(r.code(), "missing_signature");

    // The turn ran and its agent replied: /send's answer is in the agent's stdout.
    let turn = wait_turn_end(h, ADMIN, &task_id).await;
    assert_eq!(turn["turn"]["state"], "done", "{turn:#}");
    // A real /send with the turn's token (still good for its reply grace): its 202 is checked
    // against the contract like every other answer.
    let rec = read_record(record.path(), &task_id).await;
    let token = format!(
        "Bearer {}",
        rec["env"]["INBOX_REPLY_TOKEN"].as_str().expect("the token")
    );
    let with_token = [
        ("authorization", token.as_str()),
        ("content-type", "application/json"),
    ];
    let sent = call(
        c,
        h,
        "POST",
        "/send",
        "/send",
        &with_token,
        r#"{"type":"STATUS","payload":{"again":true}}"#,
    )
    .await;
    assert_eq!(sent.status, 202, "{:#}", sent.json);
    assert!(sent.json["id"].is_string(), "{:#}", sent.json);
    // The local agent that runs the route answers the same message by its own token, and says
    // who it is.
    let helper = format!("Bearer {HELPER}");
    let as_helper = [
        ("authorization", helper.as_str()),
        ("content-type", "application/json"),
    ];
    let own = format!("/agent/messages/{task_id}/reply");
    let r = call(
        c,
        h,
        "POST",
        "/agent/messages/{id}/reply",
        &own,
        &as_helper,
        r#"{"type":"STATUS","payload":{"by":"helper"}}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let r = call(c, h, "GET", "/agent/me", "/agent/me", &as_helper, "").await;
    assert_eq!(r.json["name"], "helper", "{:#}", r.json);
    // The same agent's MCP tools over Streamable HTTP: a request, a notification, and each
    // refusal of the door.
    let mut as_mcp = as_helper.to_vec();
    as_mcp.push(("accept", "application/json, text/event-stream"));
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let r = call(c, h, "POST", "/mcp", "/mcp", &as_mcp, list).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["tools"].as_array().map(Vec::len), Some(6));
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let r = call(c, h, "POST", "/mcp", "/mcp", &as_mcp, initialized).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = call(c, h, "POST", "/mcp", "/mcp", &as_mcp, "{not json").await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = call(c, h, "POST", "/mcp", "/mcp", &as_helper, list).await;
    assert_eq!(r.status, 406, "{}", r.text);
    let undeclared = [as_mcp[0], as_mcp[2]];
    let r = call(c, h, "POST", "/mcp", "/mcp", &undeclared, list).await;
    assert_eq!(r.status, 415, "{}", r.text);
    let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(300_000));
    let r = call(c, h, "POST", "/mcp", "/mcp", &as_mcp, &big).await;
    assert_eq!(r.status, 413, "{}", r.text);
    let stranger = [
        ("authorization", "Bearer not-a-token"),
        ("content-type", "application/json"),
    ];
    let r = call(c, h, "POST", "/mcp", "/mcp", &stranger, list).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = call(c, h, "GET", "/mcp", "/mcp", &as_helper, "").await;
    assert_eq!(r.status, 405, "{}", r.text);
    // The agent's own reply: the one whose delivery tony refuses (a dead letter, below).
    let reply_id = turn["replies"][0]["id"]
        .as_str()
        .expect("the agent's reply")
        .to_owned();
    let bearer = [
        ("authorization", "Bearer not-a-token"),
        ("content-type", "application/json"),
    ];
    let r = call(
        c,
        h,
        "POST",
        "/send",
        "/send",
        &bearer,
        r#"{"type":"STATUS"}"#,
    )
    .await;
    assert_eq!(r.status, 401);

    // The reply's first delivery was refused for good: a dead letter, then requeued.
    eventually(Duration::from_secs(20), "a dead letter", || async {
        let r = admin_get(h, "/admin/outbox?dead=1").await;
        (r.json["outbox"].as_array().is_some_and(|o| !o.is_empty())).then_some(())
    })
    .await;
    call(
        c,
        h,
        "GET",
        "/admin/outbox",
        "/admin/outbox?dead=1",
        &admin,
        "",
    )
    .await;
    call(
        c,
        h,
        "GET",
        "/admin/outbox",
        "/admin/outbox?dead=maybe",
        &admin,
        "",
    )
    .await;
    let retry = format!("/admin/outbox/{reply_id}/retry");
    let r = call(c, h, "POST", "/admin/outbox/{id}/retry", &retry, &admin, "").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    tony.wait_for(1, Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(20),
        "the retry to be delivered",
        || async {
            let v = view(h, &reply_id).await;
            (v["reply"]["deliveries"][0]["state"] == "delivered").then_some(())
        },
    )
    .await;
    let r = call(c, h, "POST", "/admin/outbox/{id}/retry", &retry, &admin, "").await;
    assert_eq!(r.status, 409);
    let r = call(
        c,
        h,
        "POST",
        "/admin/outbox/{id}/retry",
        "/admin/outbox/nope/retry",
        &admin,
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    call(
        c,
        h,
        "GET",
        "/admin/outbox",
        "/admin/outbox?limit=5",
        &admin,
        "",
    )
    .await;

    // Reading, as the admin and as a peer.
    for (path, status) in [
        ("/messages", 200),
        ("/messages?route=tasks&limit=2", 200),
        ("/messages?limit=0", 400),
    ] {
        let r = call(c, h, "GET", "/messages", path, &admin, "").await;
        assert_eq!(r.status, status, "{path}: {:#}", r.json);
    }
    call(c, h, "GET", "/messages", "/messages", &as_tony, "").await;
    call(c, h, "GET", "/messages", "/messages", &[], "").await;
    for id in [task_id.as_str(), reply_id.as_str(), "no-such-id"] {
        call(
            c,
            h,
            "GET",
            "/messages/{id}",
            &format!("/messages/{id}"),
            &admin,
            "",
        )
        .await;
    }

    // Admin.
    let send = r#"{"to": "tony", "type": "STATUS", "payload": {"note": "hi"}}"#;
    let admin_json = [admin[0], ("content-type", "application/json")];
    let r = call(
        c,
        h,
        "POST",
        "/admin/send",
        "/admin/send",
        &admin_json,
        send,
    )
    .await;
    assert_eq!(r.status, 202);
    let r = call(
        c,
        h,
        "POST",
        "/admin/send",
        "/admin/send",
        &admin_json,
        r#"{"to": "nobody", "type": "X"}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    call(c, h, "POST", "/admin/send", "/admin/send", &as_tony, send).await;
    call(c, h, "POST", "/admin/reload", "/admin/reload", &admin, "").await;
    call(c, h, "GET", "/status", "/status", &admin, "").await;
    call(c, h, "GET", "/status", "/status", &[], "").await;
    // A local agent starts a thread (202), outside its may_send (403), over its rate (429).
    let helper = format!("Bearer {HELPER}");
    let as_helper = [
        ("authorization", helper.as_str()),
        ("content-type", "application/json"),
    ];
    let task = r#"{"to": "tony", "type": "TASK", "payload": {"n": 2}}"#;
    let r = call(c, h, "POST", "/send", "/send", &as_helper, task).await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let note = r#"{"to": "tony", "type": "NOTE"}"#;
    let r = call(c, h, "POST", "/send", "/send", &as_helper, note).await;
    assert_eq!(r.status, 403, "{:#}", r.json);
    let as_slow = [
        ("authorization", "Bearer slow-agent-token"),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        call(c, h, "POST", "/send", "/send", &as_slow, task)
            .await
            .status,
        202
    );
    let r = call(c, h, "POST", "/send", "/send", &as_slow, task).await;
    assert_eq!(r.status, 429, "{:#}", r.json);

    // A2A (last: its turn replies to tony, whose first delivery the script refuses): the card, a JSON-RPC result, a JSON-RPC error (in a 200), and the two HTTP refusals.
    let card_path = "/.well-known/agent-card.json";
    assert_eq!(
        call(c, h, "GET", card_path, card_path, &[], "")
            .await
            .status,
        200
    );
    let a2a_auth = format!("Bearer {TONY_A2A}");
    let as_a2a = [
        ("authorization", a2a_auth.as_str()),
        ("content-type", "application/json"),
    ];
    let send = r#"{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message":
        {"messageId": "c-1", "role": "ROLE_USER", "parts": [{"text": "hi"}]},
        "configuration": {"returnImmediately": true}}}"#;
    let sent = call(c, h, "POST", "/a2a", "/a2a", &as_a2a, send).await;
    let state = &sent.json["result"]["task"]["status"]["state"];
    assert!(
        state == "TASK_STATE_SUBMITTED" || state == "TASK_STATE_WORKING",
        "{:#}",
        sent.json
    );
    let get = r#"{"jsonrpc": "2.0", "id": "g", "method": "GetTask", "params": {"id": "nope"}}"#;
    let missing = call(c, h, "POST", "/a2a", "/a2a", &as_a2a, get).await;
    assert_eq!(missing.json["error"]["code"], -32001);
    let wrong = [
        ("authorization", "Bearer wrong"),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        call(c, h, "POST", "/a2a", "/a2a", &wrong, get).await.status,
        401
    );
    let big = format!(
        r#"{{"jsonrpc": "2.0", "id": 1, "method": "{}"}}"#,
        "x".repeat(5000)
    );
    assert_eq!(
        call(c, h, "POST", "/a2a", "/a2a", &as_a2a, &big)
            .await
            .status,
        413
    );

    // A person in the loop: a HELD message waits, is approved; its reply waits, is edited and
    // approved.
    let held = call(
        c,
        h,
        "POST",
        "/message",
        "/message",
        &as_tony,
        r#"{"type": "HELD"}"#,
    )
    .await;
    assert_eq!(held.status, 202, "{:#}", held.json);
    let held = held.id();
    wait_state(h, &held, "awaiting_approval").await;
    let list = "/admin/approvals";
    for (path, status) in [
        ("/admin/approvals", 200),
        ("/admin/approvals?all=true&limit=5", 200),
        ("/admin/approvals?all=maybe", 400),
        ("/admin/approvals", 401),
    ] {
        let who: &[(&str, &str)] = if status == 401 { &as_tony } else { &admin };
        let r = call(c, h, "GET", list, path, who, "").await;
        assert_eq!(r.status, status, "{path}: {:#}", r.json);
    }
    let one = "/admin/approvals/{id}";
    let r = call(
        c,
        h,
        "GET",
        one,
        &format!("/admin/approvals/{held}"),
        &admin,
        "",
    )
    .await;
    assert_eq!(r.json["approval"]["state"], "waiting", "{:#}", r.json);
    let r = call(c, h, "GET", one, "/admin/approvals/nope", &admin, "").await;
    assert_eq!(r.status, 404);
    let (approve, reject) = (
        "/admin/approvals/{id}/approve",
        "/admin/approvals/{id}/reject",
    );
    let admin_json = [
        ("authorization", admin[0].1),
        ("content-type", "application/json"),
    ];
    let at = |verb: &str, id: &str| format!("/admin/approvals/{id}/{verb}");
    let by = r#"{"by": "c"}"#;
    // A reject with no reason, an unknown id, the approval, and a second decision.
    for (template, verb, id, status) in [
        (reject, "reject", held.as_str(), 400),
        (approve, "approve", "nope", 404),
        (approve, "approve", held.as_str(), 200),
        (approve, "approve", held.as_str(), 409),
    ] {
        let r = call(c, h, "POST", template, &at(verb, id), &admin_json, by).await;
        assert_eq!(r.status, status, "{verb} {id}: {:#}", r.json);
    }
    // A person cancels another held message's turn: no one named, an unknown id, the cancel,
    // and a second one.
    let doomed = call(
        c,
        h,
        "POST",
        "/message",
        "/message",
        &as_tony,
        r#"{"type": "HELD"}"#,
    )
    .await;
    assert_eq!(doomed.status, 202, "{:#}", doomed.json);
    let doomed = doomed.id();
    wait_state(h, &doomed, "awaiting_approval").await;
    let cancel = "/admin/messages/{id}/cancel";
    let cancel_at = |id: &str| format!("/admin/messages/{id}/cancel");
    for (id, body, status) in [
        (doomed.as_str(), r#"{"by": " "}"#, 400),
        ("nope", by, 404),
        (doomed.as_str(), by, 200),
        (doomed.as_str(), by, 409),
    ] {
        let r = call(c, h, "POST", cancel, &cancel_at(id), &admin_json, body).await;
        assert_eq!(r.status, status, "cancel {id} {body}: {:#}", r.json);
    }
    let reply = eventually(Duration::from_secs(20), "the held reply", || async {
        let r = admin_get(h, "/admin/approvals").await;
        r.json["approvals"]
            .as_array()
            .and_then(|a| a.first())
            .map(|i| i["approval"]["id"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    call(
        c,
        h,
        "GET",
        one,
        &format!("/admin/approvals/{reply}"),
        &admin,
        "",
    )
    .await;
    let edit = r#"{"by": "c", "payload": {"edited": true}}"#;
    let r = call(
        c,
        h,
        "POST",
        approve,
        &at("approve", &reply),
        &admin_json,
        edit,
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    for id in [held.as_str(), reply.as_str()] {
        call(
            c,
            h,
            "GET",
            "/messages/{id}",
            &format!("/messages/{id}"),
            &admin,
            "",
        )
        .await;
    }
    // Another HELD message, rejected.
    let other = call(
        c,
        h,
        "POST",
        "/message",
        "/message",
        &as_tony,
        r#"{"type": "HELD"}"#,
    )
    .await;
    let other = other.id();
    wait_state(h, &other, "awaiting_approval").await;
    let why = r#"{"by": "c", "reason": "no"}"#;
    let r = call(
        c,
        h,
        "POST",
        reject,
        &at("reject", &other),
        &admin_json,
        why,
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    pairing_answers(c, h, &admin_json).await;
    host.stop().await;

    // The limiter's 429, and a full queue's 503.
    let gate = tempfile::tempdir().expect("tempdir");
    let gated = agent_command(&["--wait-for", path_str(&gate.path().join("open"))]);
    let toml = Toml::tasks(&tony.url(), &gated)
        .server("auth_failure_limit", "2")
        .route("tasks", "agent", "{ max_concurrent = 1, max_queued = 1 }")
        .build();
    let host = start_host(&toml).await;
    let h = &host;
    let task = r#"{"type": "TASK"}"#;
    let first = call(c, h, "POST", "/message", "/message", &as_tony, task).await;
    wait_state(h, &first.id(), "running").await;
    for status in [202, 503] {
        let r = call(c, h, "POST", "/message", "/message", &as_tony, task).await;
        assert_eq!(r.status, status, "{:#}", r.json);
    }
    for status in [401, 401, 429] {
        let r = call(
            c,
            h,
            "GET",
            "/status",
            "/status",
            &[("authorization", "Bearer x")],
            "",
        )
        .await;
        assert_eq!(r.status, status, "{:#}", r.json);
    }
    std::fs::write(gate.path().join("open"), "").expect("open the gate");
    host.stop().await;

    // Every operation in the document was answered at least once with a success.
    let seen = c.seen.lock().expect("lock").clone();
    for (method, path) in c.operations() {
        assert!(
            seen.iter()
                // A 303 is the success of a form post (the console's sign-in and sign-out).
                .any(|(m, p, s)| *m == method
                    && *p == path
                    && ((200..300).contains(s) || *s == 303)),
            "{method} {path}: never answered with a success in this battery"
        );
    }
}

/// schemathesis (4.x, pinned in tests/tools/requirements.txt) generates requests from the
/// contract, valid and invalid, and runs every check it has against a live inbox.
///
/// The config cannot spawn many agents: a mailbox takes any type, and the one agent route runs
/// `true`. The auth limiter is off, or the generated bad credentials would lock the good ones out.
/// Checks are all on; `tests/tools/schemathesis.toml` widens, for three operations only, which
/// answers count as accepting valid data: a schema cannot say which peers, types and hop counts
/// a config allows, so a valid-by-schema body may be refused by the config (400 unknown peer,
/// 422 unknown type or loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let toml = Toml::new()
        .command(r#"["true"]"#)
        .server("auth_failure_limit", "0")
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .schedule(&["0s", "1s"])
        .agent_route("tasks", &["tony"], &["TASK"], &["STATUS"], &["tony"])
        .route("inbox", "from", r#"["tony"]"#)
        .route("inbox", "types", r#"["*"]"#)
        .route("inbox", "mailbox", "true")
        .peer_key("tony", "a2a_token", &quoted(TONY_A2A))
        .route("tasks", "a2a", r#"{ type = "TASK" }"#)
        .build()
        + "[a2a]\n"
        + &agents_toml();
    let host = start_host(&toml).await;
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools");
    let st = tools_python().with_file_name("st");
    let work = tempfile::tempdir().expect("tempdir");
    let url = host.url("/openapi.json");
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261128".into());
    let out = tokio::process::Command::new(&st)
        .current_dir(work.path())
        .arg("--config-file")
        .arg(tools.join("schemathesis.toml"))
        .args(["run", &url, "--checks", "all", "--max-examples", "50"])
        .args(["--seed", &seed, "--no-color"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("schemathesis ends within 10 minutes")
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis failed (seed {seed}):\n{text}"
    );
    // It really ran every operation the document has, except the one it read the document from.
    let ops = Contract::load().operations().len() - 1;
    assert!(
        text.contains(&format!("Operations:       {ops} selected / {ops} total")),
        "{text}"
    );
    assert!(text.contains(&format!("Tested: {ops}")), "{text}");
    host.stop().await;
}

/// Pairing's doors, last (they change the battery's routes.toml): an invite; a join, confirm and
/// cancel made by hand (the test is the joining inbox, signing with the key it was given); the
/// refusals; the peer list; and a real join of a second inbox, then its removal.
async fn pairing_answers(c: &Contract, h: &Host, admin: &[(&str, &str)]) {
    use agent_inbox::wire::InviteLine;
    let line = invite(c, h, admin, "carol").await;
    let code = InviteLine::decode(&line).unwrap().code;
    let r = call(
        c,
        h,
        "POST",
        "/admin/peers/invite",
        "/admin/peers/invite",
        admin,
        r#"{"peer": "tony"}"#,
    )
    .await;
    assert_eq!(r.status, 409, "an existing peer: {}", r.text);
    let json_only = [("content-type", "application/json")];
    let carol_key = "whsec_Y2Fyb2wncyBrZXksIHRoaXJ0eS10d28gYnl0ZXMhIQ==";
    let join = serde_json::json!({"code": code, "url": "http://127.0.0.1:9/message/battery",
        "key": carol_key, "takes": ["TASK"]})
    .to_string();
    let r = call(c, h, "POST", "/pair/join", "/pair/join", &json_only, &join).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let theirs = SigningKey::parse(r.json["key"].as_str().unwrap()).unwrap();
    let r = call(c, h, "POST", "/pair/join", "/pair/join", &json_only, &join).await;
    assert_eq!(r.status, 404, "the code worked once: {}", r.text);
    let code_body = serde_json::json!({ "code": code }).to_string();
    let signed = |key: &SigningKey| {
        let now = now_ms() / 1000;
        let sig = signature::sign(
            std::slice::from_ref(key),
            "pair_1",
            now,
            code_body.as_bytes(),
        );
        (now.to_string(), sig)
    };
    let wrong = SigningKey::parse(carol_key).unwrap();
    let (ts, sig) = signed(&wrong);
    let bad = signed_headers(&ts, &sig);
    let r = call(
        c,
        h,
        "POST",
        "/pair/confirm",
        "/pair/confirm",
        &bad,
        &code_body,
    )
    .await;
    assert_eq!(r.status, 401, "signed with the wrong key: {}", r.text);
    let (ts, sig) = signed(&theirs);
    let good = signed_headers(&ts, &sig);
    let r = call(
        c,
        h,
        "POST",
        "/pair/confirm",
        "/pair/confirm",
        &good,
        &code_body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(c, h, "GET", "/admin/peers", "/admin/peers", admin, "").await;
    assert!(r.text.contains("carol"), "{}", r.text);
    let r = call(
        c,
        h,
        "POST",
        "/pair/cancel",
        "/pair/cancel",
        &good,
        &code_body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !call(c, h, "GET", "/admin/peers", "/admin/peers", admin, "")
            .await
            .text
            .contains("carol")
    );
    let r = call(
        c,
        h,
        "POST",
        "/pair/cancel",
        "/pair/cancel",
        &good,
        r#"{"code": "nope"}"#,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // A real join: a second inbox invites, this one joins, then removes it.
    let other = start_host(&Toml::new().build()).await;
    let other_admin = format!("Bearer {ADMIN}");
    let other_admin = [
        ("authorization", other_admin.as_str()),
        ("content-type", "application/json"),
    ];
    let line = invite(c, &other, &other_admin, "battery").await;
    let body = serde_json::json!({"invite": line, "as": "dora", "insecure": true}).to_string();
    let r = call(
        c,
        h,
        "POST",
        "/admin/peers/join",
        "/admin/peers/join",
        admin,
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        c,
        h,
        "POST",
        "/admin/peers/join",
        "/admin/peers/join",
        admin,
        &body,
    )
    .await;
    assert_eq!(r.status, 409, "dora is a peer already: {}", r.text);
    let body = serde_json::json!({"invite": "ainv1.bm9wZQ", "insecure": true}).to_string();
    let r = call(
        c,
        h,
        "POST",
        "/admin/peers/join",
        "/admin/peers/join",
        admin,
        &body,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let dead = InviteLine {
        url: format!("http://{}", unused_addr()),
        code: "x".into(),
        as_name: "ghost".into(),
    }
    .encode();
    let body = serde_json::json!({"invite": dead, "insecure": true}).to_string();
    let r = call(
        c,
        h,
        "POST",
        "/admin/peers/join",
        "/admin/peers/join",
        admin,
        &body,
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text);
    let r = call(
        c,
        h,
        "POST",
        "/admin/peers/{name}/remove",
        "/admin/peers/dora/remove",
        admin,
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        c,
        h,
        "POST",
        "/admin/peers/{name}/remove",
        "/admin/peers/dora/remove",
        admin,
        "",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    other.stop().await;
}

/// An invite from `h` for `peer`: its line.
async fn invite(c: &Contract, h: &Host, admin: &[(&str, &str)], peer: &str) -> String {
    let body = format!("{{\"peer\": \"{peer}\", \"as\": \"battery\"}}");
    let r = call(
        c,
        h,
        "POST",
        "/admin/peers/invite",
        "/admin/peers/invite",
        admin,
        &body,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["invite"].as_str().unwrap().to_owned()
}

/// A JSON body's headers, signed (Standard Webhooks) with id `pair_1`.
fn signed_headers<'a>(ts: &'a str, sig: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("content-type", "application/json"),
        ("webhook-id", "pair_1"),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ]
}
