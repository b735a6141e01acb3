//! What the operator reads: every command's table and JSON, run against a real inbox and held
//! to snapshots in `tests/snapshots/cli/` with ids, times, ports and hashes masked.
//! `UPDATE_SNAPSHOTS=1 cargo test -p agent-inbox-tests --test e2e cli_snapshots` rewrites them;
//! look at the diff before committing it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agent_inbox_tests::*;
use regex::Regex;
use serde_json::json;
use tokio::process::Command;

/// What varies from run to run, masked; columns made two spaces apart (widths follow the
/// masked values).
fn mask(text: &str) -> String {
    let rules = [
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<ID>",
        ),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d \([^)]*\)", "<TIME>"),
        (r"\d\d:\d\d:\d\d \([^)]*\)", "<TIME>"),
        (r"\b\d{13}\b", "<MS>"),
        (
            r#""(duration_ms|checks|last_seen_ms_ago)": \d+"#,
            r#""$1": <N>"#,
        ),
        (r"\d+ checks?;", "<N> checks;"),
        (r"duration \d+ ms", "duration <N> ms"),
        (r"\b[0-9a-f]{16,64}\b", "<HASH>"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<PORT>"),
        (r"/tmp/[^\s/]+", "<DIR>"),
        (r"inbox \d+\.\d+\.\d+", "inbox <VERSION>"),
        (r#""version": "[^"]*""#, r#""version": "<VERSION>""#),
        (r"(\S) {2,}", "$1  "),
    ];
    let mut out = text.to_owned();
    for (pattern, with) in rules {
        out = Regex::new(pattern)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/cli")
}

/// Holds `got` (masked) to `tests/snapshots/cli/{name}.txt`; collects a difference instead of
/// failing at once, so one run shows every changed snapshot.
fn check(name: &str, got: &str, wrong: &mut Vec<String>) {
    let path = snapshot_dir().join(format!("{name}.txt"));
    let got = mask(got);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot_dir()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(want) if want == got => {}
        Ok(want) => wrong.push(format!(
            "{name} differs from {}:\n--- want\n{want}--- got\n{got}",
            path.display()
        )),
        Err(e) => wrong.push(format!(
            "{name}: no snapshot at {} ({e}); run with UPDATE_SNAPSHOTS=1 and look at it:\n{got}",
            path.display()
        )),
    }
}

/// Every command's table and JSON, against one inbox with a dead letter, a held message, a
/// mailbox note, a done turn, a local agent and two peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commands_table_and_json_match_their_snapshots() {
    let peer = PeerServer::start().await;
    peer.script([503]);
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let mut toml = Toml::tasks(&peer.url(), &reply_sh(&["STATUS"]))
        .listen(addr)
        .schedule(&["0s"])
        .mailbox("notes", &["tony"], &["NOTE"])
        .agent_route("review", &["tony"], &["REVIEW"], &["STATUS"], &["tony"])
        .route("review", "approve", &quoted("inbound"))
        .peer(
            "mel",
            "http://user:pw@127.0.0.1:9/message?key=secret-in-query",
            "mel-secret-0123456789",
        )
        .build();
    toml.push_str(
        "[agents.planner]\ntoken = \"planner-token-0123456789\"\n\
         may_send = [{ to = [\"tony\"], types = [\"TASK\"] }]\nmax_per_minute = 10\n",
    );
    let host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
    let config = dir.path().join("routes.toml");
    let config = config.to_str().unwrap();
    let task = send_task(&host).await;
    let (reply, _) = delivery_in(&host, &task, "dead").await;
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    let note = post_message(
        &host,
        TONY,
        json!({"type": "NOTE", "thread_id": "snap", "payload": {"title": "Weekly notes", "body": "x"}}),
    )
    .await;
    assert_eq!(note.status, 202);
    let held = post_message(
        &host,
        TONY,
        json!({"type": "REVIEW", "payload": {"text": "please look"}}),
    )
    .await;
    assert_eq!(held.status, 202);
    let held_id = held.id();
    eventually(Duration::from_secs(20), "the message is held", || async {
        let v = admin_get(&host, &format!("/messages/{held_id}")).await;
        (v.json["turn"]["state"] == "awaiting_approval").then_some(())
    })
    .await;

    let mut wrong = Vec::new();
    let env = [("USER", "ops")];
    let mut shot = async |name: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", config]);
        let out = run_bin(&all, &env).await;
        assert!(out.status.success(), "{all:?}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        check(name, &stdout, &mut wrong);
        stdout
    };
    shot("messages", &["messages"]).await;
    shot("messages-json", &["messages", "--json"]).await;
    shot("message-detail", &["messages", &task]).await;
    shot("message-detail-json", &["messages", &task, "--json"]).await;
    shot("outbox-list", &["outbox", "list"]).await;
    shot("outbox-list-json", &["outbox", "list", "--json"]).await;
    shot("status", &["status"]).await;
    let status = shot("status-json", &["status", "--json"]).await;
    shot("pending", &["pending"]).await;
    shot("pending-json", &["pending", "--json"]).await;
    shot("approve", &["approve", &held.id()]).await;
    shot("pending-all", &["pending", "--all"]).await;
    shot("outbox-retry", &["outbox", "retry", &reply_id]).await;
    shot(
        "send",
        &[
            "send",
            "--to",
            "tony",
            "--type",
            "TASK",
            "--payload",
            r#"{"x":1}"#,
        ],
    )
    .await;
    let peers = shot("peer-list", &["peer", "list"]).await;
    shot("peer-list-json", &["peer", "list", "--json"]).await;
    // A held message cancelled: its turn, and who cancelled it.
    for (name, json) in [("cancel", false), ("cancel-json", true)] {
        let held = post_message(&host, TONY, json!({"type": "REVIEW"})).await;
        assert_eq!(held.status, 202);
        let id = held.id();
        eventually(Duration::from_secs(20), "held", || async {
            let v = admin_get(&host, &format!("/messages/{id}")).await;
            (v.json["turn"]["state"] == "awaiting_approval").then_some(())
        })
        .await;
        let mut args = vec!["cancel", id.as_str()];
        if json {
            args.push("--json");
        }
        shot(name, &args).await;
    }
    // A held message rejected, with the reason; a reload; the config checked.
    let rejected = post_message(&host, TONY, json!({"type": "REVIEW"})).await;
    assert_eq!(rejected.status, 202);
    let rejected = rejected.id();
    eventually(Duration::from_secs(20), "held", || async {
        let v = admin_get(&host, &format!("/messages/{rejected}")).await;
        (v.json["turn"]["state"] == "awaiting_approval").then_some(())
    })
    .await;
    shot(
        "reject",
        &["reject", &rejected, "--reason", "not this week"],
    )
    .await;
    shot("reload", &["reload"]).await;
    shot("check", &["check"]).await;
    // No secret in what status shows: not a peer's, not in a URL's user info or query.
    for secret in [
        "mel-secret",
        "pw@",
        "secret-in-query",
        "planner-token",
        ADMIN,
        TONY,
    ] {
        assert!(!status.contains(secret), "{secret} in status:\n{status}");
        assert!(!peers.contains(secret), "{secret} in peer list:\n{peers}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    host.stop();
}

/// `tail` says what each event is about (sender, type, state, exit code, error) without a
/// `null`, and when the inbox goes away it says so and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_lines_say_who_and_how_and_it_exits_non_zero_when_the_inbox_goes() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::tasks(
        &peer.url(),
        &agent_command(&["--stderr", "no model", "--exit", "7"]),
    )
    .listen(addr)
    .build();
    let mut host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
    let config = dir.path().join("routes.toml");
    let mut tail = Command::new(bin())
        .args(["tail", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = tokio::io::BufReader::new(tail.stderr.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut err, &mut line)
        .await
        .unwrap();
    assert!(line.contains("following"), "{line}");
    let task = send_task(&host).await;
    delivery_in(&host, &task, "delivered").await;
    host.sigterm();
    let out = tokio::time::timeout(Duration::from_secs(30), tail.wait_with_output())
        .await
        .expect("tail ends when the inbox goes")
        .unwrap();
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut err, &mut rest)
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{rest}");
    assert!(rest.contains("the inbox closed the stream"), "{rest}");
    assert!(!stdout.contains("null"), "{stdout}");
    for want in [
        "message",
        "TASK from tony",
        "failed",
        "exit 7",
        "error: agent_exited",
        "TURN_FAILED to tony",
        "delivered",
        "status 200",
    ] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
}

/// `messages --json | head -c 10`: the reader goes, the command ends quietly with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_command_quietly_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let host = BinHost::start(
        dir.path(),
        &Toml::notes().listen(addr).build(),
        addr,
        "serve.log",
    )
    .await;
    for _ in 0..200 {
        let r = post_message(
            &host,
            TONY,
            json!({"type": "NOTE", "payload": {"pad": "y".repeat(500)}}),
        )
        .await;
        assert_eq!(r.status, 202);
    }
    let config = dir.path().join("routes.toml");
    let script = format!(
        "set -o pipefail; {} messages --json --limit 200 --config {} | head -c 10 >/dev/null",
        bin().display(),
        config.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "quietly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.stop();
}
