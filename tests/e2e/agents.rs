//! Local agents start conversations: `[agents.NAME]` tokens on `POST /send`, `may_send`, the rate
//! limit, revocation by reload, `agent-inbox send` run as an agent runs it, and two inboxes whose
//! agents message each other (the two-Raspberry-Pi scenario).

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const PLANNER: &str = "planner-token";
const WORKER: &str = "worker-token";
/// The secret the two inboxes share.
const LINK: &str = "pi-link-secret";

/// `[agents.NAME]` with a token, `may_send` (TOML) and a rate.
fn agent(name: &str, token: &str, may_send: &str, per_minute: u32) -> String {
    format!(
        "[agents.{name}]\ntoken = \"{token}\"\nmay_send = {may_send}\nmax_per_minute = {per_minute}\n"
    )
}

async fn send_as(host: &impl Endpoint, token: &str, body: Value) -> Resp {
    let auth = format!("Bearer {token}");
    request(
        "POST",
        &host.url("/send"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// Messages of `route` on `host`, as the admin reads them.
async fn route_messages(host: &impl Endpoint, route: &str) -> Vec<Value> {
    admin_get(host, &format!("/messages?route={route}"))
        .await
        .json["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn wait_messages(host: &impl Endpoint, route: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(30), "messages on the route", || async {
        let m = route_messages(host, route).await;
        (m.len() >= n).then_some(m)
    })
    .await
}

/// Message `id` on `host` as the other pi (a peer, by the link secret) reads it: with threads
/// named as that peer names them.
async fn as_the_other_pi(host: &impl Endpoint, id: &str) -> Value {
    let r = request(
        "GET",
        &host.url(&format!("/messages/{id}")),
        &[("x-shared-secret", LINK)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    r.json
}

/// Inbox "pi1" (agent `planner`, which may send TASK to pi2) and inbox "pi2" (route `tasks` from
/// pi1, whose agent replies DONE; agent `worker`, which may send NOTE to pi1). Each is the other's
/// peer; pi1 keeps pi2's DONEs in the mailbox `done`, pi2 keeps pi1's answers to NOTEs in `acks`.
async fn two_pis() -> (Host, Host) {
    let (l1, l2) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let pi1 = Toml::new()
        .command(&agent_command(&["--reply", "ACK"]))
        .schedule(FAST_RETRIES)
        .peer("pi2", &format!("http://{a2}/message"), LINK)
        .mailbox("done", &["pi2"], &["DONE"])
        .agent_route("notes", &["pi2"], &["NOTE"], &["ACK"], &["pi2"])
        .build()
        + &agent(
            "planner",
            PLANNER,
            r#"[{ to = ["pi2"], types = ["TASK"] }]"#,
            3,
        );
    let pi2 = Toml::new()
        .command(&agent_command(&["--reply", "DONE"]))
        .schedule(FAST_RETRIES)
        .peer("pi1", &format!("http://{a1}/message"), LINK)
        .agent_route("tasks", &["pi1"], &["TASK"], &["DONE"], &["pi1"])
        .mailbox("acks", &["pi1"], &["ACK"])
        .build()
        + &agent(
            "worker",
            WORKER,
            r#"[{ to = ["pi1"], types = ["NOTE"] }]"#,
            10,
        );
    (start_host_on(&pi1, l1).await, start_host_on(&pi2, l2).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_two_inboxes_start_threads_and_get_their_answers_back() {
    let (pi1, pi2) = two_pis().await;
    // pi1's planner asks pi2 for something.
    let ack = send_as(
        &pi1,
        PLANNER,
        json!({"to": "pi2", "type": "TASK", "payload": {"title": "scan"}}),
    )
    .await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    let thread = ack.json["thread_id"].as_str().unwrap().to_owned();
    // pi2 took it as a message of pi1's, on its route, at hop 0, in a thread of its own that pi1
    // names as pi1 does.
    let got = wait_messages(&pi2, "tasks", 1).await;
    assert_eq!(got[0]["sender"], "pi1");
    assert_eq!(got[0]["hops"], 0);
    let seen = as_the_other_pi(&pi2, got[0]["id"].as_str().unwrap()).await;
    assert_eq!(seen["message"]["thread_id"], json!(thread), "{seen:#}");
    // pi2's agent answered DONE, and it came back to pi1 into the same thread.
    let back = wait_messages(&pi1, "done", 1).await;
    assert_eq!(back[0]["thread_id"], json!(thread), "{back:#?}");
    assert_eq!(back[0]["type"], "DONE");

    // And the other way: pi2's worker notes something to pi1, whose agent acknowledges.
    let ack = send_as(
        &pi2,
        WORKER,
        json!({"to": "pi1", "type": "NOTE", "payload": {"text": "done scanning"}}),
    )
    .await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    let thread = ack.json["thread_id"].as_str().unwrap().to_owned();
    let acks = wait_messages(&pi2, "acks", 1).await;
    assert_eq!(acks[0]["thread_id"], json!(thread), "{acks:#?}");
    pi1.stop().await;
    pi2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_agent_may_not_do_is_refused() {
    let (pi1, pi2) = two_pis().await;
    // A peer outside may_send, and a type outside it: 403, naming what is allowed.
    for body in [
        json!({"to": "nobody", "type": "TASK"}),
        json!({"to": "pi2", "type": "NOTE"}),
    ] {
        let r = send_as(&pi1, PLANNER, body.clone()).await;
        assert_eq!(
            (r.status, r.code().to_owned()),
            (403, "not_allowed".into()),
            "{body}: {:#}",
            r.json
        );
        assert_eq!(
            r.json["error"]["allowed"],
            json!(["pi2: TASK"]),
            "{:#}",
            r.json
        );
    }
    // The rate: three a minute, then 429 with Retry-After.
    for _ in 0..3 {
        assert_eq!(
            send_as(&pi1, PLANNER, json!({"to": "pi2", "type": "TASK"}))
                .await
                .status,
            202
        );
    }
    let r = send_as(&pi1, PLANNER, json!({"to": "pi2", "type": "TASK"})).await;
    assert_eq!(
        (r.status, r.code().to_owned()),
        (429, "rate_limited".into()),
        "{:#}",
        r.json
    );
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // A thread too long: max_hops applies to the hops the thread already has.
    // pi1 has seen a thread at hop 7 (pi2 calls it "deep"); continuing it would be hop 8,
    // max_hops. The agent names it by the inbox's own id, as INBOX_THREAD_ID gives it.
    let deep = post_message(
        &pi1,
        LINK,
        json!({"type": "DONE", "thread_id": "deep", "hops": 7}),
    )
    .await;
    assert_eq!(deep.status, 202, "{:#}", deep.json);
    let deep_thread = view(&pi1, &deep.id()).await["message"]["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = std::fs::read_to_string(pi1.config_path()).unwrap()
        + &agent(
            "looper",
            "looper-token",
            r#"[{ to = ["pi2"], types = ["TASK"] }]"#,
            10,
        );
    let before = status(&pi1).await["config_hash"].clone();
    pi1.rewrite_config(&text);
    let r = admin_reload(&pi1).await;
    // Applied by this request or by the watcher just before it: either way, in force now.
    assert_eq!(r.status, 200, "{:#}", r.json);
    assert_ne!(r.json["config_hash"], before, "the new config is in force");
    let r = send_as(
        &pi1,
        "looper-token",
        json!({"to": "pi2", "type": "TASK", "thread_id": deep_thread}),
    )
    .await;
    assert_eq!(
        (r.status, r.code().to_owned()),
        (422, "loop_detected".into()),
        "{:#}",
        r.json
    );
    // An agent token is no admin secret.
    let auth = format!("Bearer {PLANNER}");
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/admin/outbox"),
        ("POST", "/admin/send"),
    ] {
        let r = request(
            method,
            &pi1.url(path),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            r#"{"to":"pi2","type":"TASK"}"#,
        )
        .await;
        assert_eq!(r.status, 401, "{method} {path}: {:#}", r.json);
    }
    // A reload that removes the agent revokes its token at once.
    let without = std::fs::read_to_string(pi1.config_path()).unwrap();
    let cut = without.find("[agents.looper]").unwrap();
    let before = status(&pi1).await["config_hash"].clone();
    pi1.rewrite_config(&without[..cut]);
    let r = admin_reload(&pi1).await;
    // Applied by this request or by the watcher just before it: either way, in force now.
    assert_eq!(r.status, 200, "{:#}", r.json);
    assert_ne!(r.json["config_hash"], before, "the new config is in force");
    let r = send_as(&pi1, "looper-token", json!({"to": "pi2", "type": "TASK"})).await;
    assert_eq!(r.status, 401, "{:#}", r.json);
    pi1.stop().await;
    pi2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_token_cannot_start_a_thread() {
    // The route's agent tries to send to a peer with its turn's reply token.
    let record = tempfile::tempdir().unwrap();
    let out = record.path().join("status");
    // Once naming a peer, once naming a thread: both are a new message, which a reply token
    // cannot send.
    let script = format!(
        "import json, os, urllib.request, urllib.error\n\
         codes = []\n\
         for body in ({{'to': 'tony', 'type': 'STATUS'}}, {{'thread_id': 'elsewhere', 'type': 'STATUS'}}):\n\
         \x20   req = urllib.request.Request(os.environ['INBOX_REPLY_URL'], method='POST', \
         data=json.dumps(body).encode(), headers={{\
         'Authorization': 'Bearer ' + os.environ['INBOX_REPLY_TOKEN'], 'Content-Type': 'application/json'}})\n\
         \x20   try:\n        urllib.request.urlopen(req); codes.append('202')\n\
         \x20   except urllib.error.HTTPError as e:\n        codes.append(str(e.code))\n\
         open({:?}, 'w').write(' '.join(codes))\n",
        path_str(&out)
    );
    let peer = PeerServer::start().await;
    let toml = Toml::tasks(&peer.url(), &toml_list(&["python3", "-c", &script]))
        .route("tasks", "reply_types", &toml_list(&["STATUS"]))
        .build();
    let host = start_host(&toml).await;
    let m = post_message(&host, TONY, json!({"type": "TASK"})).await;
    wait_turn_end(&host, ADMIN, &m.id()).await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "403 403");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_inbox_send_works_as_an_agent_runs_it() {
    let (pi1, pi2) = two_pis().await;
    // Only the agent's environment: its token and the inbox's URL (and PATH for python3).
    let out = tokio::task::spawn_blocking({
        let url = pi1.url("");
        move || {
            use std::io::Write as _;
            let mut child = std::process::Command::new(bin())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("INBOX_AGENT_TOKEN", PLANNER)
                .env("INBOX_URL", url.trim_end_matches('/'))
                .args(["send", "--to", "pi2", "--type", "TASK", "--payload", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run agent-inbox send");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(br#"{"title": "from stdin"}"#)
                .unwrap();
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ack: Value = serde_json::from_slice(&out.stdout).expect("the answer as JSON on stdout");
    assert_eq!(ack["status"], "queued");
    let got = wait_messages(&pi2, "tasks", 1).await;
    let seen = as_the_other_pi(&pi2, got[0]["id"].as_str().unwrap()).await;
    assert_eq!(seen["message"]["thread_id"], ack["thread_id"], "{seen:#}");
    assert_eq!(got[0]["payload"], json!({"title": "from stdin"}));
    // --wait: the answer (pi2's agent's DONE, back on pi1 in the thread) on stdout.
    let waited = tokio::task::spawn_blocking({
        let url = pi1.url("");
        move || {
            std::process::Command::new(bin())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("INBOX_AGENT_TOKEN", PLANNER)
                .env("INBOX_URL", url.trim_end_matches('/'))
                .args([
                    "send",
                    "--to",
                    "pi2",
                    "--type",
                    "TASK",
                    "--wait",
                    "--timeout",
                    "30",
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "{err}");
    assert!(err.contains("answered: DONE"), "{err}");
    let answer: Value = serde_json::from_slice(&waited.stdout).expect("the answer's payload");
    assert!(answer.is_object(), "{answer}");
    // What an agent may read: the threads it started, nothing else.
    let auth = format!("Bearer {PLANNER}");
    let mine = format!("/messages?thread={}", ack["thread_id"].as_str().unwrap());
    let r = request("GET", &pi1.url(&mine), &[("authorization", &auth)], "").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    // The answers say which agent sent what.
    let sent = admin_get(&pi1, "/admin/outbox").await.json;
    assert!(
        sent["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["reply"]["agent"] == "planner"),
        "{sent:#}"
    );
    for path in [
        "/messages",
        "/messages?thread=not-mine",
        "/events",
        "/events?thread=not-mine&timeout=1",
    ] {
        let r = request("GET", &pi1.url(path), &[("authorization", &auth)], "").await;
        assert_eq!(r.status, 404, "{path}: {:#}", r.json);
    }
    // A refusal is a non-zero exit with the server's reason.
    let refused = std::process::Command::new(bin())
        .env_clear()
        .env("INBOX_AGENT_TOKEN", PLANNER)
        .env("INBOX_URL", pi1.url(""))
        .args(["send", "--to", "pi2", "--type", "NOTE"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pi2: TASK"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The flags instead of the environment, and the payload from a file.
    let payload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(payload.path(), r#"{"title": "from a file"}"#).unwrap();
    let flagged = std::process::Command::new(bin())
        .env_clear()
        .args(["send", "--token", PLANNER, "--url"])
        .arg(pi1.url("").trim_end_matches('/'))
        .args(["--to", "pi2", "--type", "TASK", "--payload"])
        .arg(format!("@{}", path_str(payload.path())))
        .output()
        .unwrap();
    assert!(
        flagged.status.success(),
        "{}",
        String::from_utf8_lossy(&flagged.stderr)
    );
    let got = wait_messages(&pi2, "tasks", 3).await;
    assert!(
        got.iter()
            .any(|m| m["payload"] == json!({"title": "from a file"})),
        "{got:#?}"
    );
    pi1.stop().await;
    pi2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_route_hands_its_agent_the_token_to_start_threads() {
    // pi1's route `kick` is run by the planner: its turn runs `agent-inbox send` with nothing but
    // what the inbox put in its environment.
    let (l1, l2) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let bin = bin();
    let send = toml_list(&[
        path_str(&bin),
        "send",
        "--to",
        "pi2",
        "--type",
        "TASK",
        "--payload",
        r#"{"title": "from a turn"}"#,
    ]);
    let pi1 = Toml::new()
        .command(&send)
        .peer("pi2", &format!("http://{a2}/message"), LINK)
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .agent_route("kick", &["tony"], &["KICK"], &[], &[])
        .route("kick", "agent_id", &quoted("planner"))
        .build()
        + &agent(
            "planner",
            PLANNER,
            r#"[{ to = ["pi2"], types = ["TASK"] }]"#,
            10,
        );
    let pi2 = Toml::new()
        .command(&agent_command(&[]))
        .peer("pi1", &format!("http://{a1}/message"), LINK)
        .mailbox("tasks", &["pi1"], &["TASK"])
        .build();
    let (pi1, pi2) = (start_host_on(&pi1, l1).await, start_host_on(&pi2, l2).await);
    let m = post_message(&pi1, TONY, json!({"type": "KICK"})).await;
    let turn = wait_turn_end(&pi1, ADMIN, &m.id()).await;
    assert_eq!(turn["turn"]["state"], "done", "{turn:#}");
    let got = wait_messages(&pi2, "tasks", 1).await;
    assert_eq!(got[0]["payload"], json!({"title": "from a turn"}));
    pi1.stop().await;
    pi2.stop().await;
}

#[test]
fn the_openclaw_skill_is_well_formed_and_matches_the_cli() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../integrations/openclaw/agent-inbox");
    let (ok, out) = run_tool(
        "skill_check.py",
        &[path_str(&dir), "agent-inbox", "INBOX_AGENT_TOKEN,INBOX_URL"],
        b"",
    );
    assert!(ok, "{out}");
    // What the skill teaches is what the command takes.
    let help = std::process::Command::new(bin())
        .args(["send", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let skill = std::fs::read_to_string(dir.join("SKILL.md")).unwrap();
    for flag in ["--to", "--type", "--payload", "--thread"] {
        assert!(
            skill.contains(flag) && help.contains(flag),
            "{flag}:\n{help}"
        );
    }
    for var in ["INBOX_AGENT_TOKEN", "INBOX_URL"] {
        assert!(help.contains(var), "{var}:\n{help}");
    }
}

/// README: a route with `agent_id` hands its turns `INBOX_AGENT_ID`, `INBOX_AGENT_TOKEN` and
/// `INBOX_URL`; every token variable (`token_env`) is otherwise removed from the agents'
/// environment, like the peers' secrets; `INBOX_SENDER_MESSAGE_ID` is the id the sender gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gets_its_own_identity_and_no_other_token_or_secret() {
    let record = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::new()
        .listen(addr)
        .command(&agent_command(&["--record", path_str(record.path())]))
        .peer_env("tony", "http://127.0.0.1:9/message", "TONY_SECRET")
        .agent_route("kick", &["tony"], &["KICK"], &[], &[])
        .route("kick", "agent_id", &quoted("planner"))
        .mailbox("notes", &["tony"], &["NOTE"])
        .build()
        + "[agents.planner]\ntoken_env = \"PLANNER_TOKEN\"\nmay_send = [{ to = [\"tony\"], types = [\"NOTE\"] }]\n"
        + "[agents.worker]\ntoken_env = \"WORKER_TOKEN\"\nmay_send = [{ to = [\"tony\"], types = [\"NOTE\"] }]\n";
    let host = BinHost::start_with_env(
        dir.path(),
        &toml,
        addr,
        "log",
        &[
            ("TONY_SECRET", TONY),
            ("PLANNER_TOKEN", PLANNER),
            ("WORKER_TOKEN", WORKER),
        ],
    )
    .await;
    let m = post_message(&host, TONY, json!({"type": "KICK", "id": "tony-own-id-7"})).await;
    assert_eq!(m.status, 202, "{:#}", m.json);
    let env = read_record(record.path(), &m.id()).await["environ"].clone();
    assert_eq!(env["INBOX_AGENT_ID"], "planner", "{env:#}");
    assert_eq!(env["INBOX_AGENT_TOKEN"], PLANNER);
    assert_eq!(env["INBOX_URL"], format!("http://{addr}"));
    assert_eq!(env["INBOX_SENDER_MESSAGE_ID"], "tony-own-id-7");
    for gone in ["PLANNER_TOKEN", "WORKER_TOKEN", "TONY_SECRET"] {
        assert!(env.get(gone).is_none(), "{gone} reached the agent: {env:#}");
    }
    // Not a value under another name either.
    let all = env.to_string();
    assert!(!all.contains(WORKER) && !all.contains(TONY), "{all}");
    host.stop();
}

/// `GET /agent/me`, and what an agent does by its own token with the turns it runs: it answers
/// a message of its route (`POST /agent/messages/{id}/reply`, the turn's reply types, while the
/// turn is on) and reads that message's thread; another agent can do neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_and_reads_its_own_turns_by_its_own_token() {
    let (l1, l2) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let a2 = l2.local_addr().unwrap();
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let pi1 = Toml::new()
        .command(&agent_command(&["--wait-for", path_str(&release)]))
        .schedule(FAST_RETRIES)
        .peer("pi2", &format!("http://{a2}/message"), LINK)
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .agent_route("tasks", &["pi2"], &["TASK"], &["DONE"], &["pi2"])
        .route("tasks", "agent_id", &quoted("planner"))
        .build()
        + &agent(
            "planner",
            PLANNER,
            r#"[{ to = ["pi2"], types = ["TASK", "NOTE"] }, { to = ["tony"], types = ["NOTE"] }]"#,
            10,
        )
        + &agent(
            "worker",
            WORKER,
            r#"[{ to = ["tony"], types = ["NOTE"] }]"#,
            10,
        );
    let pi2 = Toml::new()
        .command(&agent_command(&[]))
        .peer(
            "pi1",
            &format!("http://{}/message", l1.local_addr().unwrap()),
            LINK,
        )
        .mailbox("done", &["pi1"], &["DONE"])
        .build();
    let (pi1, pi2) = (start_host_on(&pi1, l1).await, start_host_on(&pi2, l2).await);
    let get_as = |token: &'static str, path: String| {
        let url = pi1.url(&path);
        async move {
            request(
                "GET",
                &url,
                &[("authorization", &format!("Bearer {token}"))],
                "",
            )
            .await
        }
    };
    let reply_as = |token: &'static str, id: String, body: Value| {
        let url = pi1.url(&format!("/agent/messages/{id}/reply"));
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await
        }
    };

    let me = get_as(PLANNER, "/agent/me".into()).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["name"], "planner");
    assert_eq!(me.json["routes"][0]["name"], "tasks");
    assert_eq!(me.json["routes"][0]["reply_types"], json!(["DONE"]));
    let contacts = me.json["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 2, "{:#}", me.json);
    assert_eq!(contacts[0]["name"], "pi2");
    assert_eq!(contacts[0]["kind"], "inbox");
    assert_eq!(contacts[0]["types"], json!(["TASK", "NOTE"]));
    assert!(
        me.json["config_hash"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    assert!(
        !me.text.contains(PLANNER),
        "the token is never answered back"
    );
    let nobody = get_as("not-a-token", "/agent/me".into()).await;
    assert_eq!(nobody.status, 401);

    // pi2 sends a TASK; pi1's turn (the planner's) waits, and the planner answers it by its
    // own token instead of the turn's.
    let m = post_message(&pi1, LINK, json!({"type": "TASK", "payload": {"n": 1}})).await;
    let id = m.id();
    wait_running(&pi1, &id).await;
    let wrong = reply_as(PLANNER, id.clone(), json!({"type": "NOPE", "payload": {}})).await;
    assert_eq!(wrong.status, 422, "{}", wrong.text);
    assert!(wrong.text.contains("DONE"), "{}", wrong.text);
    let other = reply_as(WORKER, id.clone(), json!({"type": "DONE", "payload": {}})).await;
    assert_eq!(other.status, 404, "another agent's turn: {}", other.text);
    let ok = reply_as(
        PLANNER,
        id.clone(),
        json!({"type": "DONE", "payload": {"by": "token"}}),
    )
    .await;
    assert_eq!(ok.status, 202, "{}", ok.text);
    let got = wait_messages(&pi2, "done", 1).await;
    assert_eq!(got[0]["payload"], json!({"by": "token"}));

    // It reads the thread of its turn; another agent does not.
    let thread = m.json["thread_id"].as_str().unwrap().to_owned();
    let read = get_as(PLANNER, format!("/messages?thread={thread}")).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.json["messages"][0]["id"], id.as_str());
    let listed = get_as(PLANNER, "/messages?route=tasks".into()).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(
        get_as(WORKER, format!("/messages?thread={thread}"))
            .await
            .status,
        404
    );
    assert_eq!(
        get_as(WORKER, "/messages?route=tasks".into()).await.status,
        404
    );

    // A message that is no turn of its: not found, like another agent's.
    let unknown = reply_as(
        PLANNER,
        "01a24914-9057-748a-9bf8-655872010cdd".into(),
        json!({"type": "DONE"}),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    std::fs::write(&release, "").unwrap();
    wait_turn_end(&pi1, ADMIN, &id).await;
    pi1.stop().await;
    pi2.stop().await;
}
