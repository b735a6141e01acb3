//! Mailboxes and the reading endpoints: who sees what.

use agent_inbox_tests::*;
use serde_json::{Value, json};

/// tony and mel may leave NOTEs in `notes`; tony also MEMOs in `other`.
fn config() -> String {
    Toml::new()
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .peer("mel", "http://127.0.0.1:9/message", MEL)
        .mailbox("notes", &["tony", "mel"], &["NOTE"])
        .mailbox("other", &["tony"], &["MEMO"])
        .build()
}

async fn post(host: &Host, secret: &str, body: Value) -> String {
    let ack = post_message(host, secret, body).await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    ack.json["id"].as_str().unwrap().to_owned()
}

fn ids(list: &Resp) -> Vec<String> {
    assert_eq!(list.status, 200, "{:#}", list.json);
    list.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn peer_get(host: &Host, secret: &str, path: &str) -> Resp {
    request("GET", &host.url(path), &[("x-shared-secret", secret)], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_route_keeps_messages_without_a_turn() {
    let host = start_host(&config()).await;
    let from_tony = post(&host, TONY, json!({"type": "NOTE", "payload": {"n": 1}})).await;
    let from_mel = post(&host, MEL, json!({"type": "NOTE", "payload": {"n": 2}})).await;
    let memo = post(&host, TONY, json!({"type": "MEMO", "payload": {"n": 3}})).await;

    let list = admin_get(&host, "/messages?route=notes").await;
    assert_eq!(
        ids(&list),
        [from_mel.as_str(), from_tony.as_str()],
        "newest first"
    );
    let messages = list.json["messages"].as_array().unwrap();
    assert_eq!(messages[0]["payload"], json!({"n": 2}));
    assert_eq!(messages[0]["sender"], "mel");
    assert_eq!(messages[1]["payload"], json!({"n": 1}));
    assert_eq!(messages[1]["sender"], "tony");
    for m in messages {
        assert_eq!(m["route"], "notes");
        assert_eq!(m["type"], "NOTE");
        assert_eq!(m["mailbox"], true);
        assert!(
            m.get("turn_state").is_none(),
            "a mailbox has no turn: {m:#}"
        );
    }
    let all = admin_get(&host, "/messages").await;
    assert_eq!(ids(&all).len(), 3);
    assert!(ids(&all).contains(&memo));

    let view = admin_get(&host, &format!("/messages/{from_tony}")).await;
    assert_eq!(view.status, 200, "{:#}", view.json);
    assert_eq!(view.json["turn"], Value::Null, "{:#}", view.json);
    assert_eq!(view.json["replies"], json!([]));
    assert_eq!(view.json["message"]["payload"], json!({"n": 1}));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_reads_only_its_own_messages() {
    let host = start_host(&config()).await;
    let t1 = post(&host, TONY, json!({"type": "NOTE", "payload": {"n": 1}})).await;
    let m1 = post(&host, MEL, json!({"type": "NOTE", "payload": {"n": 2}})).await;
    let t2 = post(&host, TONY, json!({"type": "MEMO", "payload": {"n": 3}})).await;

    let tony = peer_get(&host, TONY, "/messages").await;
    assert_eq!(ids(&tony), [t2.as_str(), t1.as_str()]);
    let mel = peer_get(&host, MEL, "/messages").await;
    assert_eq!(ids(&mel), [m1.as_str()]);
    // Filters do not widen what a peer sees.
    let mel_notes = peer_get(&host, MEL, "/messages?route=notes").await;
    assert_eq!(ids(&mel_notes), [m1.as_str()]);

    let own = peer_get(&host, TONY, &format!("/messages/{t1}")).await;
    assert_eq!(own.status, 200, "{:#}", own.json);
    assert_eq!(own.json["message"]["id"], t1.as_str());
    let other = peer_get(&host, TONY, &format!("/messages/{m1}")).await;
    assert_eq!(other.status, 404, "{:#}", other.json);
    assert_eq!(other.code(), "not_found");
    // Exactly what an id that does not exist gets, so a peer cannot probe for ids.
    let nowhere = peer_get(&host, TONY, "/messages/no-such-id").await;
    assert_eq!(other.json, nowhere.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_needs_no_auth() {
    let host = start_host(&config()).await;
    let r = request("GET", &host.url("/healthz"), &[], "").await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    assert_eq!(r.json["status"], "ok");
    host.stop().await;
}

/// Posts `n` NOTEs as tony, each with `thread_id` if given; returns their ids.
async fn many_notes(host: &Host, n: usize, thread: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut body = json!({"type": "NOTE"});
        if let Some(t) = thread {
            body["thread_id"] = json!(t);
        }
        let r = post_message(host, TONY, body).await;
        assert_eq!(r.status, 202, "{:#}", r.json);
        ids.push(r.id());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_thread_and_limits_to_50_by_default_and_500_at_most() {
    let host = start_host(&config()).await;
    let in_thread = many_notes(&host, 3, Some("thread-a")).await;
    many_notes(&host, 510, None).await;

    // tony calls the thread "thread-a"; the admin names it by the inbox's own id.
    let thread = view(&host, &in_thread[0]).await["message"]["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = admin_get(&host, &format!("/messages?thread={thread}")).await;
    let mut got = ids(&r);
    got.sort();
    let mut want = in_thread.clone();
    want.sort();
    assert_eq!(got, want, "only the thread's messages");
    for m in r.json["messages"].as_array().unwrap() {
        assert_eq!(m["thread_id"], thread.as_str(), "{m:#}");
    }
    // tony reads it by its own name, and sees its own name.
    let r = peer_get(&host, TONY, "/messages?thread=thread-a").await;
    let mut got = ids(&r);
    got.sort();
    assert_eq!(got, want, "tony's name for the thread");
    for m in r.json["messages"].as_array().unwrap() {
        assert_eq!(m["thread_id"], "thread-a", "{m:#}");
    }
    // A peer's thread filter stays within what it may see.
    assert_eq!(
        ids(&peer_get(&host, MEL, "/messages?thread=thread-a").await),
        Vec::<String>::new()
    );

    assert_eq!(
        ids(&admin_get(&host, "/messages").await).len(),
        50,
        "default limit"
    );
    assert_eq!(ids(&admin_get(&host, "/messages?limit=7").await).len(), 7);
    assert_eq!(
        ids(&admin_get(&host, "/messages?limit=100000").await).len(),
        500,
        "at most 500"
    );
    assert_eq!(
        ids(&peer_get(&host, TONY, "/messages?limit=100000").await).len(),
        500
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reads_the_replies_addressed_to_it_and_not_others() {
    let tony = PeerServer::start().await;
    let mel = PeerServer::start().await;
    let toml = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
        .peer("mel", &mel.url(), MEL)
        .agent_route("mel-tasks", &["mel"], &["TASK"], &["STATUS"], &["mel"])
        .build();
    let host = start_host(&toml).await;
    let from_tony = send_task(&host).await;
    let ack = post_message(&host, MEL, json!({"type": "TASK"})).await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    let from_mel = ack.id();
    tony.wait_for(1, std::time::Duration::from_secs(30)).await;
    mel.wait_for(1, std::time::Duration::from_secs(30)).await;
    let to_tony = view(&host, &from_tony).await["replies"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let to_mel = view(&host, &from_mel).await["replies"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let reply_ids = |r: &Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{:#}", r.json);
        r.json["replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        reply_ids(&peer_get(&host, TONY, "/messages").await),
        [to_tony.as_str()]
    );
    assert_eq!(
        reply_ids(&peer_get(&host, MEL, "/messages").await),
        [to_mel.as_str()]
    );
    // A reply by its id: the peer it is addressed to sees it, the other gets a 404.
    let own = peer_get(&host, TONY, &format!("/messages/{to_tony}")).await;
    assert_eq!(own.status, 200, "{:#}", own.json);
    assert_eq!(own.json["reply"]["id"], to_tony.as_str());
    let other = peer_get(&host, TONY, &format!("/messages/{to_mel}")).await;
    assert_eq!(
        (other.status, other.code()),
        (404, "not_found"),
        "{:#}",
        other.json
    );
    // In its own message's view, tony sees the reply to it.
    let v = peer_get(&host, TONY, &format!("/messages/{from_tony}")).await;
    assert_eq!(v.json["replies"][0]["id"], to_tony.as_str(), "{:#}", v.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_send_and_admin_outbox_need_the_admin_secret() {
    let host = start_host(&config()).await;
    let body = json!({"to": "tony", "type": "TASK"}).to_string();
    for (name, headers) in [
        ("no secret", vec![]),
        ("a peer's secret", vec![("x-shared-secret", TONY)]),
        (
            "a peer's secret as bearer",
            vec![("authorization", "Bearer tony-secret")],
        ),
        (
            "a wrong bearer",
            vec![("authorization", "Bearer admin-secretx")],
        ),
    ] {
        let mut h = headers.clone();
        h.push(("content-type", "application/json"));
        let r = request("POST", &host.url("/admin/send"), &h, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthorized"),
            "/admin/send with {name}"
        );
        let r = request("GET", &host.url("/admin/outbox"), &headers, "").await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthorized"),
            "/admin/outbox with {name}"
        );
        let r = request("POST", &host.url("/admin/outbox/x/retry"), &headers, "").await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthorized"),
            "retry with {name}"
        );
    }
    // Nothing was queued by the refused sends; the admin's goes through.
    assert_eq!(
        admin_get(&host, "/admin/outbox").await.json["outbox"],
        json!([])
    );
    let r = admin_post(&host, "/admin/send", &body).await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let listed = admin_get(&host, "/admin/outbox").await.json;
    assert_eq!(
        listed["outbox"][0]["reply"]["id"],
        r.id().as_str(),
        "{listed:#}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_its_own_message_a_peer_sees_only_the_replies_addressed_to_it() {
    let tony = PeerServer::start().await;
    let mel = PeerServer::start().await;
    // reply-instructions sends STATUS to mel only; BREAKDOWN goes to both reply_to peers.
    let command = agent_command(&["--reply", "STATUS", "--reply", "BREAKDOWN"]);
    let toml = Toml::new()
        .schedule(FAST_RETRIES)
        .peer("tony", &tony.url(), TONY)
        .peer("mel", &mel.url(), MEL)
        .agent_route(
            "tasks",
            &["tony"],
            &["TASK"],
            &["BREAKDOWN", "STATUS"],
            &["tony", "mel"],
        )
        .route("tasks", "agent", &format!("{{ command = {command} }}"))
        .route("tasks", "plugin", &quoted("reply-instructions.wasm"))
        .route_table(
            "tasks",
            "plugin_config",
            r#"to_by_type = { STATUS = ["mel"] }"#,
        )
        .build();
    let dir = tempfile::tempdir().unwrap();
    install_plugin("reply-instructions", dir.path(), "reply-instructions.wasm");
    let host = start_host_in(&toml, dir).await;
    let id = send_task(&host).await;
    mel.wait_for(2, std::time::Duration::from_secs(30)).await;
    tony.wait_for(1, std::time::Duration::from_secs(30)).await;
    let all = view(&host, &id).await;
    assert_eq!(all["replies"].as_array().unwrap().len(), 2, "{all:#}");

    let types = |v: &serde_json::Value| -> Vec<String> {
        v["replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["type"].as_str().unwrap().to_owned())
            .collect()
    };
    let own = peer_get(&host, TONY, &format!("/messages/{id}")).await;
    assert_eq!(own.status, 200, "{:#}", own.json);
    assert_eq!(
        types(&own.json),
        ["BREAKDOWN"],
        "tony sees mel's STATUS: {:#}",
        own.json
    );
    // The BREAKDOWN went to both peers; tony sees its own delivery, not mel's.
    let peers: Vec<&str> = own.json["replies"][0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["peer"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["tony"], "{:#}", own.json);
    let admin_peers = all["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["deliveries"].as_array().unwrap().len())
        .sum::<usize>();
    assert_eq!(admin_peers, 3, "the admin sees every delivery: {all:#}");
    let listed = peer_get(&host, TONY, "/messages").await;
    assert_eq!(types(&listed.json), ["BREAKDOWN"], "{:#}", listed.json);
    let mut mels = types(&peer_get(&host, MEL, "/messages").await.json);
    mels.sort();
    assert_eq!(mels, ["BREAKDOWN", "STATUS"]);
    host.stop().await;
}

/// README: `GET /admin/outbox` lists 100 by default, and at most 1000 whatever `limit` asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_lists_100_by_default_and_at_most_1000() {
    let peer = PeerServer::start().await;
    let host = start_host(&Toml::tasks(&peer.url(), &agent_command(&[])).build()).await;
    // 1001 replies, 50 at a time: this test is about the list's limits, and a thousand
    // connections at once from one address on a busy machine meet the per-address cap.
    for batch in (0..1001).collect::<Vec<_>>().chunks(50) {
        let sends: Vec<_> = batch
            .iter()
            .map(|&i| {
                let url = host.url("/admin/send");
                tokio::spawn(async move {
                    let auth = format!("Bearer {ADMIN}");
                    let body = json!({"to": "tony", "type": "NOTE", "payload": {"n": i}});
                    request(
                        "POST",
                        &url,
                        &[
                            ("authorization", &auth),
                            ("content-type", "application/json"),
                        ],
                        body.to_string(),
                    )
                    .await
                    .status
                })
            })
            .collect();
        for s in sends {
            assert_eq!(s.await.unwrap(), 202);
        }
    }
    let count = |r: Resp| r.json["outbox"].as_array().map_or(0, Vec::len);
    assert_eq!(count(admin_get(&host, "/admin/outbox").await), 100);
    assert_eq!(
        count(admin_get(&host, "/admin/outbox?limit=1000").await),
        1000
    );
    assert_eq!(
        count(admin_get(&host, "/admin/outbox?limit=5000").await),
        1000
    );
    assert_eq!(count(admin_get(&host, "/admin/outbox?limit=7").await), 7);
    host.stop().await;
}

/// README (reading): `GET /messages` filters by peer, type, state and text on the server and
/// pages by cursor; a bad state is a 400 that names the good ones; a peer still sees only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_on_the_server_and_pages_by_cursor() {
    let peer = PeerServer::start().await;
    let toml = Toml::tasks(&peer.url(), &agent_command(&["--exit", "3"]))
        .peer("mel", "http://127.0.0.1:9/message", "mel-secret-0123456789")
        .mailbox("notes", &["tony", "mel"], &["NOTE"]);
    let host = start_host(&toml.build()).await;
    let ack = post_message(
        &host,
        TONY,
        json!({"type": "TASK", "payload": {"title": "Fix the build"}}),
    )
    .await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    let task = ack.id();
    wait_turn_end(&host, ADMIN, &task).await;
    let mut notes = Vec::new();
    for i in 0..5 {
        let r = post_message(
            &host,
            "mel-secret-0123456789",
            json!({"type": "NOTE", "payload": {"text": format!("note {i}")}}),
        )
        .await;
        assert_eq!(r.status, 202, "{:#}", r.json);
        notes.push(r.id());
    }
    let ids = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = async |q: &str| admin_get(&host, &format!("/messages?{q}")).await;
    let failed = get("state=failed").await;
    assert_eq!(ids(&failed.json), vec![task.clone()], "{:#}", failed.json);
    assert_eq!(failed.json["messages"][0]["title"], "Fix the build");
    assert_eq!(ids(&get("q=BUILD").await.json), vec![task.clone()]);
    assert_eq!(ids(&get("type=TASK").await.json), vec![task.clone()]);
    assert_eq!(ids(&get("peer=mel&limit=50").await.json).len(), 5);
    // Page by page, newest first, each message once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("peer=mel&limit=2&before={c}"),
            None => "peer=mel&limit=2".to_owned(),
        };
        let page = get(&q).await;
        assert_eq!(page.status, 200, "{:#}", page.json);
        seen.extend(ids(&page.json));
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 5, "{seen:?}");
    }
    notes.reverse();
    assert_eq!(seen, notes);
    let bad = get("state=shouting").await;
    assert_eq!(bad.status, 400, "{:#}", bad.json);
    assert_eq!(bad.code(), "bad_field");
    assert!(
        bad.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mailbox, dead"),
        "{:#}",
        bad.json
    );
    // A peer asking for another's messages still gets its own only.
    let theirs = request(
        "GET",
        &host.url("/messages?peer=mel"),
        &[("x-shared-secret", TONY)],
        "",
    )
    .await;
    assert_eq!(theirs.status, 200);
    assert_eq!(ids(&theirs.json), vec![task.clone()], "{:#}", theirs.json);
    host.stop().await;
}
