//! Standard Webhooks peers: the relay signs what it sends them, `/message/{peer}` verifies what
//! they send, replays are duplicates, and secrets rotate without downtime.

use std::time::Duration;

use agent_inbox::model::now_ms;
use agent_inbox::signature::{self, Signed, SigningKey};
use agent_inbox_tests::*;
use serde_json::json;

/// Two 32-byte keys, as a Standard Webhooks library writes them.
const KEY: &str = "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=";
const NEW_KEY: &str = "whsec_YSBuZXcgc2lnbmluZyBrZXkgZm9yIHRvbnksIDMyIGI=";

fn key(k: &str) -> SigningKey {
    SigningKey::parse(k).expect("a valid key")
}

/// Tony signs; everything it sends lands in a mailbox.
fn config(peer_url: &str, secrets: &[&str]) -> String {
    Toml::new()
        .schedule(FAST_RETRIES)
        .peer("tony", peer_url, KEY)
        .peer_key("tony", "auth", &quoted("standard-webhooks"))
        .peer_key("tony", "secret", &toml_list(secrets))
        .mailbox("notes", &["tony"], &["*"])
        .build()
}

/// POSTs `body` to `/message/{peer}` with the given signing headers.
async fn post_signed(host: &Host, peer: &str, id: &str, ts: &str, sig: &str, body: &str) -> Resp {
    request(
        "POST",
        &host.url(&format!("/message/{peer}")),
        &[
            ("content-type", "application/json"),
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
        ],
        body.to_owned(),
    )
    .await
}

/// Signs `body` with `keys` now, as a sender would.
fn sign_now(keys: &[SigningKey], id: &str, body: &str) -> (String, String) {
    let now = now_ms() / 1000;
    (
        now.to_string(),
        signature::sign(keys, id, now, body.as_bytes()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_message_is_verified_and_a_replay_is_a_duplicate() {
    let host = start_host(&config("http://127.0.0.1:9/message", &[KEY])).await;
    let body = r#"{"type": "NOTE", "payload": {"text": "signed"}}"#;
    let (ts, sig) = sign_now(&[key(KEY)], "msg_1", body);
    let first = post_signed(&host, "tony", "msg_1", &ts, &sig, body).await;
    assert_eq!(first.status, 202, "{:#}", first.json);
    // The same signed request again (a replay, within the tolerance): the duplicate answer.
    let again = post_signed(&host, "tony", "msg_1", &ts, &sig, body).await;
    assert_eq!(again.status, 200, "{:#}", again.json);
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["id"], first.json["id"]);
    let stored = admin_get(&host, "/messages").await;
    assert_eq!(stored.json["messages"].as_array().map(Vec::len), Some(1));

    let refused = |r: &Resp| (r.status, r.code().to_owned());
    // A body changed after signing.
    let r = post_signed(&host, "tony", "msg_2", &ts, &sig, body).await;
    assert_eq!(refused(&r), (401, "bad_signature".into()), "another id");
    let tampered = body.replace("signed", "forged");
    let (ts2, sig2) = sign_now(&[key(KEY)], "msg_3", body);
    let r = post_signed(&host, "tony", "msg_3", &ts2, &sig2, &tampered).await;
    assert_eq!(refused(&r), (401, "bad_signature".into()));
    // Signed with another key.
    let (ts3, sig3) = sign_now(&[key(NEW_KEY)], "msg_4", body);
    let r = post_signed(&host, "tony", "msg_4", &ts3, &sig3, body).await;
    assert_eq!(refused(&r), (401, "bad_signature".into()));
    // A name that is not a signed peer's fails like a wrong signature.
    let (ts4, sig4) = sign_now(&[key(KEY)], "msg_5", body);
    let r = post_signed(&host, "mel", "msg_5", &ts4, &sig4, body).await;
    assert_eq!(refused(&r), (401, "bad_signature".into()));
    // Too old and too far ahead.
    // Well past the 300 s tolerance: the test's clock and the host's may differ by a moment.
    for skew in [-400, 400] {
        let when = now_ms() / 1000 + skew;
        let sig = signature::sign(&[key(KEY)], "msg_6", when, body.as_bytes());
        let r = post_signed(&host, "tony", "msg_6", &when.to_string(), &sig, body).await;
        assert_eq!(refused(&r), (401, "stale_signature".into()), "skew {skew}");
    }
    // A header missing.
    let r = request(
        "POST",
        &host.url("/message/tony"),
        &[
            ("content-type", "application/json"),
            ("webhook-id", "msg_7"),
            ("webhook-timestamp", &ts),
        ],
        body,
    )
    .await;
    assert_eq!(refused(&r), (401, "missing_signature".into()));
    // The signing key is never a bearer: as X-Shared-Secret on /message it is just wrong.
    let r = post_message(&host, KEY, json!({"type": "NOTE"})).await;
    assert_eq!(refused(&r), (401, "unauthorized".into()));
    let stored = admin_get(&host, "/messages").await;
    assert_eq!(
        stored.json["messages"].as_array().map(Vec::len),
        Some(1),
        "nothing refused was stored: {:#}",
        stored.json
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_signs_every_attempt_with_the_same_id() {
    let peer = PeerServer::start().await;
    peer.script([503u16]);
    let host = start_host(&config(&peer.url(), &[KEY])).await;
    let sent = admin_post(
        &host,
        "/admin/send",
        r#"{"to": "tony", "type": "NOTE", "payload": {"n": 1}}"#,
    )
    .await;
    assert_eq!(sent.status, 202, "{:#}", sent.json);
    peer.wait_for(1, Duration::from_secs(20)).await;
    let attempts = peer.attempts();
    assert_eq!(attempts.len(), 2, "a 503, then the delivery");
    let id = sent.id();
    for a in &attempts {
        let h = |name: &str| a.headers.get(name).map(|v| v.as_bytes());
        assert_eq!(h("webhook-id"), Some(id.as_bytes()), "the stable id");
        assert!(h("x-shared-secret").is_none(), "the key never travels");
        let verdict = signature::verify(
            &[key(KEY)],
            Signed {
                id: h("webhook-id"),
                timestamp: h("webhook-timestamp"),
                signature: h("webhook-signature"),
            },
            &a.raw,
            now_ms() / 1000,
            300,
        );
        assert_eq!(verdict, Ok(()), "{:?}", a.headers);
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotates_without_downtime() {
    let peer = PeerServer::start().await;
    let host = start_host(&config(&peer.url(), &[KEY])).await;
    let body = r#"{"type": "NOTE"}"#;
    let send = |keys: Vec<SigningKey>, id: &'static str| {
        let host = &host;
        async move {
            let (ts, sig) = sign_now(&keys, id, body);
            post_signed(host, "tony", id, &ts, &sig, body).await.status
        }
    };
    assert_eq!(send(vec![key(KEY)], "r1").await, 202);
    assert_eq!(send(vec![key(NEW_KEY)], "r2").await, 401, "not yet");

    // Overlap: both keys verify; the relay signs with both, the new one first.
    host.rewrite_config(&config(&peer.url(), &[NEW_KEY, KEY]));
    assert_eq!(admin_reload(&host).await.status, 200);
    assert_eq!(send(vec![key(KEY)], "r3").await, 202);
    assert_eq!(send(vec![key(NEW_KEY)], "r4").await, 202);
    admin_post(&host, "/admin/send", r#"{"to": "tony", "type": "NOTE"}"#).await;
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    let sigs = got[0].headers["webhook-signature"].to_str().expect("ascii");
    assert_eq!(sigs.split(' ').count(), 2, "one signature per key: {sigs}");
    let ts: i64 = got[0].headers["webhook-timestamp"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number");
    let id = got[0].headers["webhook-id"].to_str().expect("ascii");
    assert_eq!(
        sigs,
        signature::sign(&[key(NEW_KEY), key(KEY)], id, ts, &got[0].raw)
    );

    // The old key retired.
    host.rewrite_config(&config(&peer.url(), &[NEW_KEY]));
    assert_eq!(admin_reload(&host).await.status, 200);
    assert_eq!(send(vec![key(KEY)], "r5").await, 401);
    assert_eq!(send(vec![key(NEW_KEY)], "r6").await, 202);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_admin_secrets_rotate_too() {
    let toml = |tony: &[&str], admin: &[&str]| {
        Toml::new()
            .server("admin_secret", &toml_list(admin))
            .peer("tony", "http://127.0.0.1:9/message", TONY)
            .peer_key("tony", "secret", &toml_list(tony))
            .mailbox("notes", &["tony"], &["*"])
            .build()
    };
    let host = start_host(&toml(&["tony-new", TONY], &["admin-new", ADMIN])).await;
    for secret in ["tony-new", TONY] {
        let r = post_message(&host, secret, json!({"type": "NOTE"})).await;
        assert_eq!(r.status, 202, "{secret}: {:#}", r.json);
    }
    let as_admin = |secret: &'static str| {
        let url = host.url("/status");
        async move {
            request(
                "GET",
                &url,
                &[("authorization", &format!("Bearer {secret}"))],
                "",
            )
            .await
            .status
        }
    };
    assert_eq!(as_admin("admin-new").await, 200);
    assert_eq!(as_admin(ADMIN).await, 200);
    // A secret listed for two peers, or twice, is refused at load.
    let dup = Toml::new()
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .peer("mel", "http://127.0.0.1:9/message", MEL)
        .peer_key("mel", "secret", &toml_list(&[MEL, TONY]))
        .build();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, dup).expect("write");
    let err = agent_inbox::config::Config::load(&path).expect_err("duplicate secret");
    assert!(err.to_string().contains("same secret as peers"), "{err}");
    // Retire the old ones (stopping the host first would do; a reload is the point).
    host.rewrite_config(&toml(&["tony-new"], &["admin-new"]));
    let r = request(
        "POST",
        &host.url("/admin/reload"),
        &[("authorization", "Bearer admin-new")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    let r = post_message(&host, TONY, json!({"type": "NOTE"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(as_admin(ADMIN).await, 401);
    assert_eq!(as_admin("admin-new").await, 200);
    host.stop().await;
}

/// The reference Python library signs and the inbox verifies; the inbox signs and the library
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_library_and_the_inbox_agree() {
    let python = tokio::task::spawn_blocking(tools_python)
        .await
        .expect("venv");
    assert!(python.exists());
    let peer = PeerServer::start().await;
    let host = start_host(&config(&peer.url(), &[KEY])).await;

    let body = r#"{"type": "NOTE", "payload": {"from": "python", "n": [1, 2.5]}}"#;
    let now = (now_ms() / 1000).to_string();
    let (ok, sig) = run_tool(
        "standard_webhooks.py",
        &["sign", KEY, "msg_py_1", &now],
        body.as_bytes(),
    );
    assert!(ok, "{sig}");
    let r = post_signed(&host, "tony", "msg_py_1", &now, sig.trim(), body).await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let (ok, sig) = run_tool(
        "standard_webhooks.py",
        &["sign", NEW_KEY, "msg_py_2", &now],
        body.as_bytes(),
    );
    assert!(ok, "{sig}");
    let r = post_signed(&host, "tony", "msg_py_2", &now, sig.trim(), body).await;
    assert_eq!(r.code(), "bad_signature", "another key: {:#}", r.json);

    admin_post(
        &host,
        "/admin/send",
        r#"{"to": "tony", "type": "NOTE", "payload": {"é": 1}}"#,
    )
    .await;
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| {
                let v = got[0].headers[*h].to_str().expect("ascii").to_owned();
                ((*h).to_owned(), serde_json::Value::String(v))
            })
            .collect();
    let headers = serde_json::Value::Object(headers).to_string();
    let (ok, out) = run_tool(
        "standard_webhooks.py",
        &["verify", KEY, &headers],
        &got[0].raw,
    );
    assert!(ok, "the library refused the inbox's signature: {out}");
    let (ok, _) = run_tool(
        "standard_webhooks.py",
        &["verify", NEW_KEY, &headers],
        &got[0].raw,
    );
    assert!(!ok, "and it does check: another key is refused");
    host.stop().await;
}

/// Each direction its own key (`send_secret`, as pairing writes it): the relay signs with the
/// send key only, `/message/{peer}` verifies with the receive key only, and neither key is
/// accepted for the other direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_direction_has_its_own_key() {
    let peer = PeerServer::start().await;
    let toml = config(&peer.url(), &[KEY]).replace(
        "auth = \"standard-webhooks\"",
        &format!(
            "auth = \"standard-webhooks\"\nsend_secret = {}",
            quoted(NEW_KEY)
        ),
    );
    assert!(toml.contains("send_secret"), "{toml}");
    let host = start_host(&toml).await;
    let sent = admin_post(
        &host,
        "/admin/send",
        r#"{"to": "tony", "type": "NOTE", "payload": {}}"#,
    )
    .await;
    assert_eq!(sent.status, 202, "{:#}", sent.json);
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    let h = |name: &str| got[0].headers.get(name).map(|v| v.as_bytes());
    let signed = |keys: &[SigningKey]| {
        signature::verify(
            keys,
            Signed {
                id: h("webhook-id"),
                timestamp: h("webhook-timestamp"),
                signature: h("webhook-signature"),
            },
            &got[0].raw,
            now_ms() / 1000,
            300,
        )
    };
    assert_eq!(signed(&[key(NEW_KEY)]), Ok(()), "signed with the send key");
    assert!(signed(&[key(KEY)]).is_err(), "not with the receive key");
    let body = r#"{"type": "NOTE"}"#;
    let (ts, sig) = sign_now(&[key(KEY)], "in_1", body);
    assert_eq!(
        post_signed(&host, "tony", "in_1", &ts, &sig, body)
            .await
            .status,
        202
    );
    let (ts, sig) = sign_now(&[key(NEW_KEY)], "in_2", body);
    assert_eq!(
        post_signed(&host, "tony", "in_2", &ts, &sig, body)
            .await
            .status,
        401
    );
    host.stop().await;
}
