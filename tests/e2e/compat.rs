//! Databases written by earlier versions: today's binary opens them, migrates them, and answers
//! exactly as the version that wrote them did; a database from a newer version is refused.

use agent_inbox_tests::*;

/// The config the fixture's database was written under (tests/fixtures/schema-v1.sqlite3, made by
/// commit 496bfff: a TASK whose turn timed out, its dead TURN_FAILED notice, a mailbox NOTE).
const V1_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_secret = "admin-secret"
data_dir = "data"

[agent]
command = ["sh", "-c", "sleep 5"]
timeout_secs = 1
kill_grace_secs = 1

[relay]
retry_schedule = ["0s"]
attempt_timeout_secs = 1

[peers.tony]
url = "http://127.0.0.1:9/message"
secret = "tony-secret"

[routes.tasks]
from = ["tony"]
types = ["TASK"]
reply_types = ["DONE"]
reply_to = ["tony"]

[routes.notes]
from = ["tony"]
types = ["NOTE"]
mailbox = true
"#;

const V1_TASK: &str = "01a220b0-f2bd-76ff-ad45-47e2fd033530";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn dir_with_v1_database() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    std::fs::copy(
        fixture("schema-v1.sqlite3"),
        dir.path().join("data/inbox.sqlite3"),
    )
    .expect("copy the fixture");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_written_by_schema_v1_reads_back_the_same() {
    let host = start_host_in(V1_CONFIG, dir_with_v1_database()).await;
    let got = request(
        "GET",
        &host.url(&format!("/messages/{V1_TASK}")),
        &[("authorization", "Bearer admin-secret")],
        "",
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.json);
    let mut want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("schema-v1-detail.json")).expect("read"),
    )
    .expect("json");
    // Added since, and read from the stored payload: an old message has its title too.
    want["message"]["title"] = "legacy".into();
    // The turn error was stored as "code: detail" text; it reads back as the same string.
    assert_eq!(got.json["turn"]["error"], "timed_out: timed out after 1s");
    assert_eq!(got.json, want);
    let list = request(
        "GET",
        &host.url("/messages?route=notes"),
        &[("authorization", "Bearer admin-secret")],
        "",
    )
    .await;
    assert_eq!(list.json["messages"][0]["payload"]["text"], "hello");
    // And it takes new work on top of the old.
    let r = post_message(
        &host,
        "tony-secret",
        serde_json::json!({"type": "NOTE", "payload": {}}),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.json);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_version_is_refused_with_a_clear_message() {
    let dir = dir_with_v1_database();
    let db = dir.path().join("data/inbox.sqlite3");
    // As a newer binary would leave it: a schema version past the ones this binary knows.
    let bumped = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version = 999'); c.commit()",
        ])
        .arg(&db)
        .status()
        .expect("python3");
    assert!(bumped.success());
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, V1_CONFIG).expect("write");
    let config = agent_inbox::config::Config::load(&path).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = agent_inbox::wiring::run(config, listener, std::future::pending())
        .await
        .expect_err("a newer schema must be refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("schema version 999") && msg.contains("newer"),
        "{msg}"
    );
}
