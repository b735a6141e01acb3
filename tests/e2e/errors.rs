//! Every error code of the API, each with its status, the one error shape and the config hash.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_BODY: usize = 1024;
const MAX_HOPS: u64 = 3;

fn config() -> String {
    Toml::new()
        .server("max_body_bytes", &MAX_BODY.to_string())
        .server("max_hops", &MAX_HOPS.to_string())
        .command(&agent_command(&[]))
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .route("tasks", "from", r#"["tony"]"#)
        .route("tasks", "types", r#"["TASK"]"#)
        .mailbox("notes", &["tony"], &["NOTE", "MEMO"])
        .build()
}

/// Starts the inbox and returns it with the hash its responses must carry.
async fn host() -> (Host, String) {
    let toml = config();
    let hash = agent_inbox::config::hash_contents(&toml, &[]);
    (start_host(&toml).await, hash)
}

/// Checks status, code, the `{"error": {"code", "message"}}` shape and `x-config-hash`.
fn assert_error(r: &Resp, hash: &str, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:#}", r.json);
    assert_eq!(r.code(), code, "{:#}", r.json);
    let obj = r.json.as_object().expect("a JSON object body");
    assert_eq!(obj.len(), 1, "only `error` at the top: {:#}", r.json);
    let message = r.json["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "a message: {:#}", r.json);
    assert_eq!(
        r.headers["content-type"], "application/json",
        "{:?}",
        r.headers
    );
    assert_config_hash(r, hash);
}

fn assert_config_hash(r: &Resp, hash: &str) {
    assert_eq!(
        r.headers.get("x-config-hash").map(|v| v.to_str().unwrap()),
        Some(hash),
        "{:?}",
        r.headers
    );
}

async fn post_raw(host: &Host, content_type: &str, body: &str) -> Resp {
    request(
        "POST",
        &host.url("/message"),
        &[("x-shared-secret", TONY), ("content-type", content_type)],
        body.to_owned(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400() {
    let (host, hash) = host().await;
    let json = "application/json";
    assert_error(
        &post_raw(&host, json, "{not json").await,
        &hash,
        400,
        "bad_json",
    );
    assert_error(&post_raw(&host, json, "").await, &hash, 400, "bad_json");
    assert_error(
        &post_raw(&host, json, "[1]").await,
        &hash,
        400,
        "not_object",
    );
    assert_error(
        &post_raw(&host, json, "\"TASK\"").await,
        &hash,
        400,
        "not_object",
    );
    assert_error(
        &post_raw(&host, json, r#"{"payload": {}}"#).await,
        &hash,
        400,
        "missing_type",
    );
    assert_error(
        &post_raw(&host, json, r#"{"type": "", "payload": {}}"#).await,
        &hash,
        400,
        "missing_type",
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_is_422_and_lists_the_senders_types() {
    let (host, hash) = host().await;
    let r = post_message(&host, TONY, json!({"type": "NOPE"})).await;
    assert_error(&r, &hash, 422, "unknown_type");
    assert_eq!(r.json["error"]["allowed"], json!(["MEMO", "NOTE", "TASK"]));
    // Types are case-sensitive.
    let r = post_message(&host, TONY, json!({"type": "task"})).await;
    assert_error(&r, &hash, 422, "unknown_type");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_detected_at_max_hops() {
    let (host, hash) = host().await;
    let r = post_message(&host, TONY, json!({"type": "NOTE", "hops": MAX_HOPS})).await;
    assert_error(&r, &hash, 422, "loop_detected");
    let message = r.json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("max_hops is {MAX_HOPS}")),
        "{message}"
    );
    let r = post_message(&host, TONY, json!({"type": "NOTE", "hops": MAX_HOPS + 5})).await;
    assert_error(&r, &hash, 422, "loop_detected");
    // One below the limit is still accepted.
    let ok = post_message(&host, TONY, json!({"type": "NOTE", "hops": MAX_HOPS - 1})).await;
    assert_eq!(ok.status, 202, "{:#}", ok.json);
    assert_config_hash(&ok, &hash);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_bytes_is_413_by_content_length() {
    let (host, hash) = host().await;
    let big = json!({"type": "NOTE", "payload": {"pad": "x".repeat(MAX_BODY)}}).to_string();
    assert!(big.len() > MAX_BODY);
    assert_error(
        &post_raw(&host, "application/json", &big).await,
        &hash,
        413,
        "body_too_large",
    );
    // Right at the limit is fine.
    let prefix = r#"{"type": "NOTE", "payload": {"pad": ""#;
    let suffix = r#""}}"#;
    let fits = format!(
        "{prefix}{}{suffix}",
        "x".repeat(MAX_BODY - prefix.len() - suffix.len())
    );
    assert_eq!(fits.len(), MAX_BODY);
    let ok = post_raw(&host, "application/json", &fits).await;
    assert_eq!(ok.status, 202, "{:#}", ok.json);
    host.stop().await;
}

/// Sends `head` then `chunks` as a chunked body over a raw socket; returns the whole answer.
async fn chunked_exchange(host: &Host, chunks: &[String]) -> String {
    let mut s = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let head = format!(
        "POST /message HTTP/1.1\r\nHost: {}\r\nX-Shared-Secret: {TONY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        host.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for c in chunks {
        // The server may answer and close as soon as the limit is passed; later writes may fail.
        if s.write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "no complete answer within 20 s: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_bytes_is_413_when_chunked() {
    let (host, hash) = host().await;
    let mut chunks = vec![r#"{"type": "NOTE", "payload": {"pad": ""#.to_owned()];
    chunks.extend((0..6).map(|_| "y".repeat(300)));
    chunks.push(r#""}}"#.to_owned());
    assert!(chunks.iter().map(String::len).sum::<usize>() > MAX_BODY);
    let answer = chunked_exchange(&host, &chunks).await;
    let status_line = answer.lines().next().unwrap_or("");
    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "status line {status_line:?} in {answer:?}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("x-config-hash: {hash}")),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(json["error"]["code"], "body_too_large", "{answer}");
    assert!(json["error"]["message"].is_string(), "{answer}");

    // A small chunked body is read and accepted, so it was the size that was refused.
    let small = vec![
        r#"{"type": "NOTE", "#.to_owned(),
        r#""payload": {}}"#.to_owned(),
    ];
    let answer = chunked_exchange(&host, &small).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_content_type_is_415() {
    let (host, hash) = host().await;
    let body = r#"{"type": "NOTE"}"#;
    let r = post_raw(&host, "text/plain", body).await;
    assert_error(&r, &hash, 415, "unsupported_media_type");
    let r = post_raw(&host, "application/x-www-form-urlencoded", body).await;
    assert_error(&r, &hash, 415, "unsupported_media_type");
    // Parameters and a +json suffix are fine.
    let ok = post_raw(&host, "application/json; charset=utf-8", body).await;
    assert_eq!(ok.status, 202, "{:#}", ok.json);
    let ok = post_raw(&host, "application/vnd.test+json", body).await;
    assert_eq!(ok.status, 202, "{:#}", ok.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_secret_is_401_with_the_same_body() {
    let (host, hash) = host().await;
    let body = json!({"type": "NOTE"}).to_string();
    let wrong = request(
        "POST",
        &host.url("/message"),
        &[
            ("x-shared-secret", "not-the-secret"),
            ("content-type", "application/json"),
        ],
        body.clone(),
    )
    .await;
    let missing = request(
        "POST",
        &host.url("/message"),
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_error(&wrong, &hash, 401, "unauthorized");
    assert_error(&missing, &hash, 401, "unauthorized");
    assert_eq!(wrong.json, missing.json);
    // The admin secret is not a peer secret, and reads need one of the two.
    let as_admin = request(
        "POST",
        &host.url("/message"),
        &[
            ("x-shared-secret", ADMIN),
            ("content-type", "application/json"),
        ],
        json!({"type": "NOTE"}).to_string(),
    )
    .await;
    assert_error(&as_admin, &hash, 401, "unauthorized");
    let r = request("GET", &host.url("/messages"), &[], "").await;
    assert_error(&r, &hash, 401, "unauthorized");
    let r = request(
        "GET",
        &host.url("/messages"),
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_error(&r, &hash, 401, "unauthorized");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_ids_are_404_and_wrong_methods_405() {
    let (host, hash) = host().await;
    let r = request("GET", &host.url("/nope"), &[], "").await;
    assert_error(&r, &hash, 404, "not_found");
    let r = request("POST", &host.url("/message/extra/more"), &[], "").await;
    assert_error(&r, &hash, 404, "not_found");
    // /message/{peer} exists for every name: one that is no peer's is refused like a request
    // without its credentials, so the answer does not tell which names are peers.
    let r = request("POST", &host.url("/message/extra"), &[], "").await;
    assert_error(&r, &hash, 401, "missing_signature");
    let r = admin_get(&host, "/messages/0190aaaa-0000-7000-8000-000000000000").await;
    assert_error(&r, &hash, 404, "not_found");

    let r = request("GET", &host.url("/message"), &[], "").await;
    assert_error(&r, &hash, 405, "method_not_allowed");
    let r = request("DELETE", &host.url("/messages"), &[], "").await;
    assert_error(&r, &hash, 405, "method_not_allowed");

    // Successes carry the hash too.
    let ok = request("GET", &host.url("/healthz"), &[], "").await;
    assert_eq!(ok.status, 200);
    assert_config_hash(&ok, &hash);
    host.stop().await;
}

/// RFC 9110 §15.5.6: a 405 response MUST carry an `Allow` header listing the supported methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed_says_which_methods_are() {
    let (host, hash) = host().await;
    for (method, path, allowed) in [
        ("GET", "/message", "POST"),
        ("GET", "/send", "POST"),
        ("POST", "/messages", "GET"),
        ("PUT", "/healthz", "GET"),
    ] {
        let r = request(method, &host.url(path), &[], "").await;
        assert_error(&r, &hash, 405, "method_not_allowed");
        let allow = r
            .headers
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(
            allow.split(',').any(|m| m.trim() == allowed),
            "{method} {path}: Allow should list {allowed}, got {allow:?}"
        );
    }
    host.stop().await;
}
