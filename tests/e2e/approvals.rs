//! A person in the loop: `approve = "inbound" | "outbound" | "both"`, a plugin's `hold`, the
//! decisions through the admin API and the command line, the timeout, the notify command, and
//! waiting items across a `kill -9`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};

/// tony's TASKs run the test agent, which replies STATUS (with `payload`, if given) to tony; the
/// route approves as `approve` says.
fn held_config(tony: &str, approve: &str, payload: Option<&str>) -> Toml {
    let mut args = vec!["--reply", "STATUS"];
    if let Some(p) = payload {
        args.extend(["--payload", p]);
    }
    Toml::tasks(tony, &agent_command(&args)).route("tasks", "approve", &quoted(approve))
}

async fn decide(host: &impl Endpoint, id: &str, verb: &str, body: Value) -> Resp {
    admin_post(
        host,
        &format!("/admin/approvals/{id}/{verb}"),
        &body.to_string(),
    )
    .await
}

/// What tony received apart from markers, once that is at least `n` messages (30 s at most).
async fn arrivals(tony: &PeerServer, n: usize) -> Vec<Received> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} deliveries"),
        || async {
            let got: Vec<Received> = tony
                .received()
                .into_iter()
                .filter(|g| g.body["type"] != "MARKER")
                .collect();
            (got.len() >= n).then_some(got)
        },
    )
    .await
}

/// The waiting items, as `GET /admin/approvals` lists them.
async fn waiting(host: &impl Endpoint) -> Vec<Value> {
    let r = admin_get(host, "/admin/approvals").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    r.json["approvals"].as_array().cloned().unwrap_or_default()
}

/// Waits until the message's turn is in `state`, and returns the message's detail.
async fn turn_state(host: &impl Endpoint, id: &str, state: &str) -> Value {
    eventually(Duration::from_secs(30), state, || async {
        let v = view(host, id).await;
        (v["turn"]["state"] == state).then_some(v)
    })
    .await
}

/// Runs the binary (as an operator would) to completion.
async fn cli(args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin())
            .args(args)
            .env("USER", "cli-user")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the command finished")
    .expect("run the binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn config_arg(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_message_waits_for_approval_then_its_turn_runs() {
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notified");
    let notify = format!(
        "[approval]\nnotify_command = [\"sh\", \"-c\", \"echo \\\"$0 $1 $2\\\" >> {}\", \"{{kind}}\", \"{{id}}\", \"{{url}}\"]\n",
        notes.display()
    );
    let toml = held_config(&tony.url(), "inbound", None).build() + &notify;
    let host = start_host_in(&toml, dir).await;
    let r = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "deploy"}}),
    )
    .await;
    // Acked as usual: durable, 202.
    assert_eq!(r.status, 202, "{:#}", r.json);
    let id = r.id();
    turn_state(&host, &id, "awaiting_approval").await;
    let items = waiting(&host).await;
    assert_eq!(items.len(), 1, "{items:#?}");
    let item = &items[0];
    assert_eq!(item["approval"]["id"], id.as_str());
    assert_eq!(item["approval"]["kind"], "inbound");
    assert_eq!(item["approval"]["state"], "waiting");
    assert_eq!(item["message"]["payload"]["title"], "deploy");
    assert!(
        item["approval"]["reason"]
            .as_str()
            .unwrap()
            .contains("approves inbound"),
        "{item:#}"
    );
    // The notify command ran, off the request path, with the placeholders filled in.
    // Its whole line: the shell creates the file before it writes to it.
    let line = eventually(Duration::from_secs(10), "the notify command", || async {
        std::fs::read_to_string(&notes)
            .ok()
            .filter(|t| t.ends_with('\n'))
    })
    .await;
    assert!(
        line.starts_with(&format!("inbound {id} http://")) && line.contains("/console"),
        "{line}"
    );
    // Nothing runs while it waits: its turn was never claimed (a claim is the only way to run).
    let v = view(&host, &id).await;
    assert_eq!(v["turn"]["state"], "awaiting_approval", "{v:#}");
    assert_eq!(v["turn"]["attempts"], 0, "{v:#}");

    // A decision needs a name; a reject needs a reason; an inbound message cannot be edited.
    let r = decide(&host, &id, "approve", json!({})).await;
    assert_eq!(r.status, 400, "{:#}", r.json);
    let r = decide(&host, &id, "reject", json!({"by": "alice"})).await;
    assert_eq!(r.status, 400, "{:#}", r.json);
    assert!(r.text.contains("reason"), "{}", r.text);
    let r = decide(
        &host,
        &id,
        "approve",
        json!({"by": "alice", "payload": {"x": 1}}),
    )
    .await;
    assert_eq!(r.status, 400, "{:#}", r.json);
    let r = decide(&host, "no-such-id", "approve", json!({"by": "alice"})).await;
    assert_eq!(r.status, 404, "{:#}", r.json);

    let r = decide(&host, &id, "approve", json!({"by": "alice"})).await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    assert_eq!(r.json["state"], "approved");
    let got = arrivals(&tony, 1).await;
    assert_eq!(got[0].body["type"], "STATUS");
    let v = turn_state(&host, &id, "done").await;
    // Who decided, and when, is on the message.
    assert_eq!(v["approval"]["state"], "approved", "{v:#}");
    assert_eq!(v["approval"]["decided_by"], "alice");
    assert_eq!(v["approval"]["via"], "api");
    assert!(v["approval"]["decided_at"].as_i64().unwrap() > 0);
    // Decided once.
    let r = decide(&host, &id, "reject", json!({"by": "bob", "reason": "late"})).await;
    assert_eq!(r.status, 409, "{:#}", r.json);
    assert!(waiting(&host).await.is_empty());
    let all = admin_get(&host, "/admin/approvals?all=true").await;
    assert_eq!(all.json["approvals"][0]["approval"]["decided_by"], "alice");
    // And in the metrics: the hold and the decision (the registry is the process's, so other
    // tests' holds may have added to the count; this one made it at least 1).
    let m = admin_get(&host, "/metrics").await.text;
    assert!(
        m.lines()
            .any(|l| l.starts_with("inbox_approval_decisions_total{")
                && l.contains("verdict=\"approved\"")
                && l.contains("via=\"api\"")),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("inbox_approvals_held_total{")
                && l.contains("route=\"tasks\"")
                && l.contains("kind=\"inbound\"")
                && l.rsplit(' ')
                    .next()
                    .and_then(|n| n.parse::<f64>().ok())
                    .is_some_and(|n| n >= 1.0)),
        "{m}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_never_runs_and_the_peer_hears_why() {
    let tony = PeerServer::start().await;
    let host = start_host(&held_config(&tony.url(), "inbound", None).build()).await;
    let id = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "rm -rf /"}}),
    )
    .await
    .id();
    turn_state(&host, &id, "awaiting_approval").await;
    let r = decide(
        &host,
        &id,
        "reject",
        json!({"by": "alice", "reason": "not on production"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    let got = arrivals(&tony, 1).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED", "{:#}", got[0].body);
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    assert_eq!(got[0].body["payload"]["state"], "rejected");
    assert_eq!(got[0].body["payload"]["error"], "rejected");
    assert_eq!(got[0].body["payload"]["reason"], "not on production");
    let v = turn_state(&host, &id, "rejected").await;
    assert_eq!(v["turn"]["attempts"], 0, "the agent ran: {v:#}");
    assert_eq!(v["approval"]["decision_reason"], "not on production");
    let notices = v["replies"].as_array().expect("the message's replies");
    assert_eq!(notices.len(), 1, "only the notice was queued: {v:#}");
    assert_eq!(
        received_before_marker(&host, "tony", &tony).await.len(),
        1,
        "more than the notice arrived"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_deciding_rejects_on_its_own() {
    let tony = PeerServer::start().await;
    let toml = held_config(&tony.url(), "inbound", None)
        .route("tasks", "approval_timeout_secs", "1")
        .build();
    let host = start_host(&toml).await;
    let id = post_message(&host, TONY, json!({"type": "TASK", "payload": {}}))
        .await
        .id();
    // The message's view reads its turn and its approval one after the other: wait for both.
    let v = eventually(
        Duration::from_secs(30),
        "the timeout's rejection",
        || async {
            let v = view(&host, &id).await;
            (v["turn"]["state"] == "rejected" && v["approval"]["state"] != "waiting").then_some(v)
        },
    )
    .await;
    assert_eq!(v["approval"]["decided_by"], "timeout", "{v:#}");
    assert_eq!(v["approval"]["via"], "timeout");
    let got = arrivals(&tony, 1).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED");
    assert!(
        got[0].body["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("approval_timeout_secs"),
        "{:#}",
        got[0].body
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_reply_goes_out_only_when_approved_and_an_edit_is_what_is_sent() {
    let tony = PeerServer::start().await;
    // The command line finds the inbox through the config's `listen`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let toml = held_config(&tony.url(), "outbound", Some(r#"{"text":"draft"}"#))
        .listen(listener.local_addr().unwrap())
        .build();
    let host = start_host_on(&toml, listener).await;
    let config = config_arg(&host.config_path());
    let mut ids = Vec::new();
    for title in ["one", "two"] {
        let id = post_message(
            &host,
            TONY,
            json!({"type": "TASK", "payload": {"title": title}}),
        )
        .await
        .id();
        turn_state(&host, &id, "done").await;
        ids.push(id);
    }
    let replies = eventually(Duration::from_secs(20), "two held replies", || async {
        let items = waiting(&host).await;
        (items.len() == 2).then_some(items)
    })
    .await;
    for item in &replies {
        assert_eq!(item["approval"]["kind"], "outbound");
        assert_eq!(item["reply"]["payload"]["text"], "draft");
        assert_eq!(item["reply"]["deliveries"][0]["state"], "held");
    }
    let reply_of = |message: &str| {
        replies
            .iter()
            .find(|i| i["approval"]["message_id"] == message)
            .map(|i| i["approval"]["id"].as_str().unwrap().to_owned())
            .expect("a held reply for each message")
    };
    let (first, second) = (reply_of(&ids[0]), reply_of(&ids[1]));
    // Held (each delivery `held` above, so no claim finds it): not sent, and the peer cannot
    // read it either.
    let mine = request(
        "GET",
        &host.url("/messages"),
        &[("x-shared-secret", TONY)],
        "",
    )
    .await;
    assert_eq!(mine.json["replies"], json!([]), "{:#}", mine.json);
    assert!(
        received_before_marker(&host, "tony", &tony)
            .await
            .is_empty(),
        "a held reply went out"
    );
    let (ok, out) = cli(&["pending", "--config", &config]).await;
    assert!(
        ok && out.contains(&first) && out.contains("reply STATUS"),
        "{out}"
    );

    let (ok, out) = cli(&["pending", "--json", "--config", &config]).await;
    let listed: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(ok, "{out}");
    assert_eq!(
        listed["approvals"].as_array().map(Vec::len),
        Some(2),
        "{out}"
    );

    // Edited (the payload read from a file), then approved from the command line: the peer
    // gets the edit.
    let edit = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(edit.path(), r#"{"text":"edited by a person"}"#).unwrap();
    let from_file = format!("@{}", path_str(edit.path()));
    let (ok, out) = cli(&[
        "approve",
        &first,
        "--payload",
        &from_file,
        "--config",
        &config,
    ])
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("approved by cli-user"), "{out}");
    let got = arrivals(&tony, 1).await;
    assert_eq!(
        got[0].body["payload"],
        json!({"text": "edited by a person"})
    );
    let v = view(&host, &first).await;
    assert_eq!(v["reply"]["payload"]["text"], "edited by a person");
    assert_eq!(
        v["reply"]["approval"]["original_payload"],
        json!({"text": "draft"})
    );
    assert_eq!(v["reply"]["approval"]["decided_by"], "cli-user");

    // Rejected: never sent, and the record says why.
    let (ok, out) = cli(&[
        "reject",
        &second,
        "--reason",
        "leaks a hostname",
        "--by",
        "bob",
        "--config",
        &config,
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(
        received_before_marker(&host, "tony", &tony).await.len(),
        1,
        "a rejected reply went out"
    );
    let v = view(&host, &second).await;
    let d = &v["reply"]["deliveries"][0];
    assert_eq!(d["state"], "withheld", "{v:#}");
    assert_eq!(d["last_error"], "rejected by bob: leaks a hostname");
    assert_eq!(v["reply"]["approval"]["state"], "rejected");
    // Nothing is left waiting, and `outbox retry` has no dead letter to replay.
    assert!(waiting(&host).await.is_empty());
    let (ok, out) = cli(&["pending", "--json", "--config", &config]).await;
    assert!(ok, "{out}");
    let none: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(none["approvals"], json!([]), "{out}");
    // --all lists the decided ones, newest first, and --limit cuts the list.
    let (ok, out) = cli(&[
        "pending", "--all", "--json", "--limit", "1", "--config", &config,
    ])
    .await;
    assert!(ok, "{out}");
    let decided: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        decided["approvals"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
    assert_eq!(
        decided["approvals"][0]["approval"]["id"],
        second.as_str(),
        "{out}"
    );
    let r = admin_post(&host, &format!("/admin/outbox/{second}/retry"), "").await;
    assert_eq!(r.status, 409, "{:#}", r.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_s_own_messages_wait_like_the_replies_of_the_route_it_runs() {
    let tony = PeerServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The route holds its agent's replies and names that agent, which has no `approve` of its
    // own: what it starts with its token waits too.
    let toml = held_config(&tony.url(), "outbound", None)
        .route("tasks", "agent_id", &quoted("planner"))
        .listen(listener.local_addr().unwrap())
        .build()
        + "[agents.planner]\ntoken = \"planner-token\"\n\
           may_send = [{ to = [\"tony\"], types = [\"TASK\"] }]\n";
    let host = start_host_on(&toml, listener).await;
    let config = config_arg(&host.config_path());
    let mut sent = Vec::new();
    for title in ["one", "two"] {
        let ack = request(
            "POST",
            &host.url("/send"),
            &[
                ("authorization", "Bearer planner-token"),
                ("content-type", "application/json"),
            ],
            json!({"to": "tony", "type": "TASK", "payload": {"title": title}}).to_string(),
        )
        .await;
        assert_eq!(ack.status, 202, "{:#}", ack.json);
        sent.push((
            ack.json["id"].as_str().unwrap().to_owned(),
            ack.json["thread_id"].as_str().unwrap().to_owned(),
        ));
    }
    let items = waiting(&host).await;
    assert_eq!(items.len(), 2, "{items:#?}");
    for item in &items {
        let (a, r) = (&item["approval"], &item["reply"]);
        assert_eq!(a["kind"], "outbound");
        assert_eq!(a["route"], "");
        assert_eq!(a["message_id"], Value::Null);
        assert_eq!(a["reason"], "agent planner's messages wait for approval");
        assert_eq!(r["agent"], "planner");
        assert_eq!(r["in_reply_to"], Value::Null);
        assert_eq!(r["deliveries"][0]["state"], "held", "{item:#}");
    }
    let (ok, out) = cli(&["pending", "--config", &config]).await;
    assert!(
        ok && out.contains(&sent[0].0) && out.contains("TASK from agent planner"),
        "{out}"
    );
    // Its thread, as the admin reads it, has it (it answers no message, so no detail does).
    let thread = admin_get(&host, &format!("/messages?thread={}", sent[0].1)).await;
    assert_eq!(thread.json["messages"], json!([]), "{:#}", thread.json);
    assert_eq!(
        thread.json["replies"][0]["id"],
        json!(sent[0].0),
        "{:#}",
        thread.json
    );
    assert_eq!(thread.json["replies"].as_array().map(Vec::len), Some(1));
    let held = view(&host, &sent[0].0).await;
    assert_eq!(held["reply"]["deliveries"][0]["state"], "held", "{held:#}");
    assert!(
        received_before_marker(&host, "tony", &tony)
            .await
            .is_empty(),
        "a held message went out"
    );

    // Edited and approved: tony gets the edit, in the thread the agent was told.
    let r = decide(
        &host,
        &sent[0].0,
        "approve",
        json!({"by": "alice", "payload": {"title": "one, reworded"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    let got = arrivals(&tony, 1).await;
    assert_eq!(got[0].body["payload"], json!({"title": "one, reworded"}));
    assert_eq!(got[0].body["thread_id"], json!(sent[0].1));
    // Rejected: never sent.
    let r = decide(
        &host,
        &sent[1].0,
        "reject",
        json!({"by": "bob", "reason": "not now"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    assert_eq!(
        received_before_marker(&host, "tony", &tony).await.len(),
        1,
        "a rejected message went out"
    );
    let v = view(&host, &sent[1].0).await;
    assert_eq!(v["reply"]["deliveries"][0]["state"], "withheld", "{v:#}");
    assert_eq!(v["reply"]["approval"]["decided_by"], "bob");

    // `agent-inbox send --wait`, as the agent runs it: a rejection ends the wait (exit 4).
    let waiting_cli = tokio::process::Command::new(bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("INBOX_AGENT_TOKEN", "planner-token")
        .env("INBOX_URL", host.url("").trim_end_matches('/'))
        .args([
            "send",
            "--to",
            "tony",
            "--type",
            "TASK",
            "--wait",
            "--timeout",
            "60",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let reject_it = async {
        let item = eventually(
            Duration::from_secs(30),
            "the third held message",
            || async { waiting(&host).await.into_iter().next() },
        )
        .await;
        // Whether or not the command has subscribed yet: it also reads its message's record.
        let id = item["approval"]["id"].as_str().unwrap().to_owned();
        let r = decide(&host, &id, "reject", json!({"by": "bob", "reason": "no"})).await;
        assert_eq!(r.status, 200, "{:#}", r.json);
    };
    let (out, ()) = tokio::join!(waiting_cli, reject_it);
    let out = out.expect("run agent-inbox send --wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("rejected by bob"), "{err}");
    assert_eq!(
        received_before_marker(&host, "tony", &tony).await.len(),
        1,
        "a rejected message went out"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_holds_by_payload_beside_a_plugin_built_for_the_old_wit() {
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    install_plugin("task-schema", dir.path(), "task-schema.wasm");
    std::fs::copy(legacy_wasm(), dir.path().join("legacy.wasm")).unwrap();
    let toml = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
        .route("tasks", "plugin", &quoted("task-schema.wasm"))
        .route_table("tasks", "plugin_config", r#"hold_words = ["production"]"#)
        .agent_route("old", &["tony"], &["OLD"], &["STATUS"], &["tony"])
        .route("old", "plugin", &quoted("legacy.wasm"))
        .build();
    let host = start_host_in(&toml, dir).await;
    // The payload decides: this one waits, that one runs at once.
    let held = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "restart Production"}}),
    )
    .await;
    assert_eq!(held.status, 202, "{:#}", held.json);
    let free = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "tidy"}}),
    )
    .await;
    turn_state(&host, &free.id(), "done").await;
    let v = turn_state(&host, &held.id(), "awaiting_approval").await;
    assert_eq!(
        v["approval"]["reason"], "plugin: the payload mentions \"production\"",
        "{v:#}"
    );
    // The 0.1.0 plugin still loads and runs its hooks: it refuses, and it writes the prompt.
    let r = post_message(
        &host,
        TONY,
        json!({"type": "OLD", "payload": {"refuse": true}}),
    )
    .await;
    assert_eq!(r.status, 422, "{:#}", r.json);
    assert_eq!(r.json["error"]["message"], "refused by a 0.1.0 plugin");
    let old = post_message(&host, TONY, json!({"type": "OLD", "payload": {"x": 1}})).await;
    assert_eq!(old.status, 202, "{:#}", old.json);
    turn_state(&host, &old.id(), "done").await;

    let r = decide(&host, &held.id(), "approve", json!({"by": "alice"})).await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    turn_state(&host, &held.id(), "done").await;
    // tidy, the 0.1.0 route's turn, and the approved one each replied.
    arrivals(&tony, 3).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_items_survive_kill_9_and_are_decided_after_the_restart() {
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = held_config(&tony.url(), "both", Some(r#"{"text":"answer"}"#))
        .listen(addr)
        .build();
    let mut host = BinHost::start(dir.path(), &toml, addr, "log1").await;
    let first = post_message(&host, TONY, json!({"type": "TASK", "payload": {"n": 1}}))
        .await
        .id();
    let second = post_message(&host, TONY, json!({"type": "TASK", "payload": {"n": 2}}))
        .await
        .id();
    turn_state(&host, &second, "awaiting_approval").await;
    // The first is approved and replies; its reply waits too.
    let r = decide(&host, &first, "approve", json!({"by": "alice"})).await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    turn_state(&host, &first, "done").await;
    let reply = eventually(Duration::from_secs(20), "the held reply", || async {
        waiting(&host)
            .await
            .into_iter()
            .find(|i| i["approval"]["kind"] == "outbound")
            .map(|i| i["approval"]["id"].as_str().unwrap().to_owned())
    })
    .await;
    host.kill9();
    let host = BinHost::start(dir.path(), &toml, addr, "log2").await;
    // Both still wait: the message's turn and the reply.
    let items = waiting(&host).await;
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["approval"]["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&second.as_str()) && ids.contains(&reply.as_str()),
        "{items:#?}"
    );
    assert_eq!(
        view(&host, &second).await["turn"]["state"],
        "awaiting_approval"
    );
    // Still held in the store (what the relay would send), not merely not arrived yet.
    let held = view(&host, &reply).await;
    assert_eq!(held["reply"]["deliveries"][0]["state"], "held", "{held:#}");
    let r = decide(&host, &reply, "approve", json!({"by": "alice"})).await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    let got = arrivals(&tony, 1).await;
    assert_eq!(got[0].body["payload"]["text"], "answer");
    let r = decide(&host, &second, "approve", json!({"by": "alice"})).await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    turn_state(&host, &second, "done").await;
    host.stop();
}

/// README: a held item publishes `approval_waiting` and its decision `approval_decided`; a held
/// reply's `outbound_queued` comes only with its approval; `send --wait` says on stderr that
/// what it sent is held for a person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_and_decisions_are_events_and_send_wait_says_held() {
    let tony = PeerServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let toml = held_config(&tony.url(), "outbound", None)
        .route("tasks", "agent_id", &quoted("planner"))
        .listen(addr)
        .build()
        + "[agents.planner]\ntoken = \"planner-token\"\n\
           may_send = [{ to = [\"tony\"], types = [\"TASK\"] }]\n";
    let host = start_host_on(&toml, listener).await;
    let auth = format!("Bearer {ADMIN}");
    let follow = host.url("/events?timeout=6");
    let events = open_stream("GET", &follow, &[("authorization", &auth)], "").await;
    let id = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .id();
    turn_state(&host, &id, "done").await;
    let reply = eventually(Duration::from_secs(20), "the held reply", || async {
        waiting(&host)
            .await
            .first()
            .map(|i| i["approval"]["id"].as_str().unwrap().to_owned())
    })
    .await;
    // Approved from the command line, the edit read from stdin (`--payload -`).
    let mut approve = tokio::process::Command::new(bin())
        .args([
            "approve",
            &reply,
            "--payload",
            "-",
            "--by",
            "alice",
            "--config",
        ])
        .arg(host.config_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = approve.stdin.take().unwrap();
        stdin.write_all(br#"{"text": "from stdin"}"#).await.unwrap();
    }
    let out = approve.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = arrivals(&tony, 1).await;
    assert_eq!(got[0].body["payload"], json!({"text": "from stdin"}));
    let seen: Vec<Value> = events
        .rest()
        .await
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let at = |kind: &str| {
        seen.iter()
            .position(|e| e["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind}: {seen:#?}"))
    };
    assert!(at("approval_waiting") < at("approval_decided"), "{seen:#?}");
    assert!(
        at("approval_decided") < at("outbound_queued"),
        "the held reply was queued before its approval: {seen:#?}"
    );

    // The agent's own message, sent with --wait, waits for a person: the command says so.
    let out = tokio::process::Command::new(bin())
        .env_clear()
        .env("INBOX_AGENT_TOKEN", "planner-token")
        .env("INBOX_URL", format!("http://{addr}"))
        .args([
            "send",
            "--to",
            "tony",
            "--type",
            "TASK",
            "--wait",
            "--timeout",
            "2",
        ])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("held for a person's approval"), "{err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    host.stop().await;
}

/// README: held items do not count against `max_queued`, and an approved turn joins the queue
/// even past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_are_not_queued_and_approved_ones_join_past_max_queued() {
    let tony = PeerServer::start().await;
    let toml = held_config(&tony.url(), "inbound", None)
        .agent("max_queued", "1")
        .agent("max_concurrent", "1")
        .build();
    let host = start_host(&toml).await;
    let mut held = Vec::new();
    for n in 0..3 {
        let r = post_message(&host, TONY, json!({"type": "TASK", "payload": {"n": n}})).await;
        assert_eq!(r.status, 202, "held message {n}: {:#}", r.json);
        held.push(r.id());
    }
    for id in &held {
        turn_state(&host, id, "awaiting_approval").await;
        let r = decide(&host, id, "approve", json!({"by": "alice"})).await;
        assert_eq!(r.status, 200, "{:#}", r.json);
    }
    for id in &held {
        turn_state(&host, id, "done").await;
    }
    host.stop().await;
}

/// README: `approval_timeout_secs` still applies after a restart: what nobody decided in time
/// is rejected by the timeout, by the next process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_timeout_holds_across_a_restart() {
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = held_config(&tony.url(), "inbound", None)
        .route("tasks", "approval_timeout_secs", "4")
        .listen(addr)
        .build();
    let mut host = BinHost::start(dir.path(), &toml, addr, "first.log").await;
    let id = post_message(&host, TONY, json!({"type": "TASK"}))
        .await
        .id();
    turn_state(&host, &id, "awaiting_approval").await;
    assert!(host.sigterm().success(), "{}", host.log());
    let host = BinHost::start(dir.path(), &toml, addr, "second.log").await;
    let v = eventually(
        Duration::from_secs(30),
        "the timeout's rejection",
        || async {
            let v = view(&host, &id).await;
            (v["turn"]["state"] == "rejected" && v["approval"]["state"] != "waiting").then_some(v)
        },
    )
    .await;
    assert_eq!(v["approval"]["decided_by"], "timeout", "{v:#}");
    let got = arrivals(&tony, 1).await;
    assert_eq!(got[0].body["type"], "TURN_FAILED");
    host.stop();
}

/// README (`notify_command`): it runs one at a time, without the inbox's secrets in its
/// environment, within `notify_timeout_secs`; a failure (an exit code, a timeout) is logged and
/// counted, never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_commands_run_one_at_a_time_without_secrets_and_failures_are_counted() {
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (lines, env_file) = (dir.path().join("notified"), dir.path().join("env"));
    let script = format!(
        "echo start $1 >> {l}; env > {e}; if [ $2 = SLOW ]; then sleep 20; fi; sleep 0.3; \
         echo end $1 >> {l}; exit 1",
        l = lines.display(),
        e = env_file.display()
    );
    let addr = unused_addr();
    let toml = held_config(&tony.url(), "inbound", None)
        .route("tasks", "types", &toml_list(&["TASK", "SLOW"]))
        .listen(addr)
        .without_server("admin_secret")
        .server("admin_secret_env", &quoted("INBOX_ADMIN"))
        .peer_env("tony", &tony.url(), "INBOX_TONY")
        .build()
        + &format!(
            "[approval]\nnotify_timeout_secs = 1\nnotify_command = [\"sh\", \"-c\", {}, \"sh\", \"{{id}}\", \"{{type}}\"]\n",
            quoted(&script)
        );
    let env = [("INBOX_ADMIN", ADMIN), ("INBOX_TONY", TONY)];
    let host = BinHost::start_with_env(dir.path(), &toml, addr, "inbox.log", &env).await;
    // Two at once: their commands still run one after the other.
    let (a, b) = tokio::join!(
        post_message(&host, TONY, json!({"type": "TASK"})),
        post_message(&host, TONY, json!({"type": "TASK"}))
    );
    let (a, b) = (a.id(), b.id());
    let text = eventually(Duration::from_secs(20), "both notify commands", || async {
        let t = std::fs::read_to_string(&lines).unwrap_or_default();
        (t.lines().filter(|l| l.starts_with("end")).count() == 2).then_some(t)
    })
    .await;
    let order: Vec<&str> = text.lines().collect();
    assert!(
        order
            == [
                &format!("start {a}"),
                &format!("end {a}"),
                &format!("start {b}"),
                &format!("end {b}")
            ]
            || order
                == [
                    &format!("start {b}"),
                    &format!("end {b}"),
                    &format!("start {a}"),
                    &format!("end {a}")
                ],
        "they overlapped: {order:?}"
    );
    let seen = std::fs::read_to_string(&env_file).unwrap();
    for secret in [ADMIN, TONY] {
        assert!(
            !seen.contains(secret),
            "a secret reached the notify command:\n{seen}"
        );
    }
    // One that outlasts notify_timeout_secs is ended, and counted with the two that exited 1.
    let slow = post_message(&host, TONY, json!({"type": "SLOW"})).await;
    assert_eq!(slow.status, 202, "{:#}", slow.json);
    let metrics = eventually(
        Duration::from_secs(20),
        "three failures counted",
        || async {
            let m = admin_get(&host, "/metrics").await.text;
            m.lines()
                .any(|l| l.starts_with("inbox_approval_notify_failures_total") && l.ends_with(" 3"))
                .then_some(m)
        },
    )
    .await;
    assert!(metrics.contains("inbox_approval_notify_failures_total"));
    eventually(
        Duration::from_secs(10),
        "the failures in the log",
        || async {
            (host.log().matches("approval notify_command failed").count() == 3).then_some(())
        },
    )
    .await;
    host.stop();
}

/// README (`notify_command`): its queue is bounded: past it, an announcement is dropped, logged
/// and counted, and the message is still held and acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_notify_queue_drops_announcements_and_never_waits() {
    let tony = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    // The first announcement blocks the queue for a minute.
    let toml = held_config(&tony.url(), "inbound", None)
        .listen(addr)
        .build()
        + "[approval]\nnotify_timeout_secs = 60\nnotify_command = [\"sleep\", \"60\"]\n";
    let host = BinHost::start(dir.path(), &toml, addr, "inbox.log").await;
    // One running, 256 queued: the rest are dropped. 270 all at once, 10 connections at a time.
    let url = host.url("/message");
    let mut acked = 0;
    for chunk in 0..27 {
        let mut sends = Vec::new();
        for i in 0..10 {
            let url = url.clone();
            sends.push(tokio::spawn(async move {
                let body = json!({"type": "TASK", "payload": {"n": chunk * 10 + i}}).to_string();
                let headers = [
                    ("x-shared-secret", TONY),
                    ("content-type", "application/json"),
                ];
                request("POST", &url, &headers, body).await.status
            }));
        }
        for s in sends {
            if s.await.unwrap() == 202 {
                acked += 1;
            }
        }
    }
    assert_eq!(
        acked, 270,
        "every message is acked and held, announced or not"
    );
    eventually(
        Duration::from_secs(20),
        "the drops logged and counted",
        || async {
            let m = admin_get(&host, "/metrics").await.text;
            let counted = m
                .lines()
                .find(|l| l.starts_with("inbox_approval_notify_failures_total"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|n| n >= 10.0);
            (counted && host.log().contains("approval notify queue full")).then_some(())
        },
    )
    .await;
    assert_eq!(waiting(&host).await.len(), 100, "the list's default limit");
    // A stop does not wait for the command still running (a minute's sleep).
    let stopping = std::time::Instant::now();
    host.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the stop waited {:?} for the notify command",
        stopping.elapsed()
    );
}
