//! One process per SQLite data directory: a second `serve` on a directory an inbox runs on
//! refuses to start and names the first; a restart that overlaps the old process's drain waits
//! for it. Real processes throughout ([`BinHost`] and the `serve` binary).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_inbox_tests::*;

/// Route `tasks` (tony's TASKs) whose agent waits for `gate`, then replies DONE; `drain_secs` and
/// `kill_grace_secs` as given (together, how long a second start waits for the lock).
fn config(addr: SocketAddr, peer_url: &str, gate: &Path, drain: u64, grace: u64) -> Toml {
    Toml::tasks(
        peer_url,
        &agent_command(&["--wait-for", path_str(gate), "--reply", "DONE"]),
    )
    .listen(addr)
    .server("drain_secs", &drain.to_string())
    .agent("kill_grace_secs", &grace.to_string())
    .route("tasks", "reply_types", &toml_list(&["DONE"]))
}

/// Runs `serve` on `config` in `dir` with its log in `dir/log` (not waiting for anything).
fn spawn_serve(dir: &Path, config: &str, addr: SocketAddr) -> std::process::Child {
    write_by_rename(&dir.join("routes.toml"), config);
    let log = std::fs::File::create(dir.join("log")).expect("the log");
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["serve", "--config"])
        .arg(dir.join("routes.toml"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    pass_port(&mut cmd, addr);
    cmd.spawn().expect("spawn serve")
}

/// Waits up to `limit` for `child` to exit.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_data_directory_refuses_to_start_and_names_the_first() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let addr = unused_addr();
    let first = config(addr, &peer.url(), &gate, 2, 1);
    let host = BinHost::start(dir.path(), &first.build(), addr, "first.log").await;
    let id = send_task(&host).await;
    wait_running(&host, &id).await;

    // A second inbox, elsewhere and on another port, pointed at the same data directory.
    let other = tempfile::tempdir().unwrap();
    let other_addr = unused_addr();
    let data = dir.path().join("data");
    let second = config(other_addr, &peer.url(), &gate, 2, 1)
        .server("data_dir", &quoted(path_str(&data)))
        .build();
    let started = Instant::now();
    let mut child = spawn_serve(other.path(), &second, other_addr);
    // While it waits for the lock (drain + kill grace: 3 s), it has bound nothing.
    let waiting = tokio::time::timeout(
        Duration::from_secs(2),
        try_request("GET", &format!("http://{other_addr}/healthz"), &[], ""),
    )
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the second serve is still waiting for the lock"
    );
    assert!(
        !matches!(waiting, Ok(Ok(_))),
        "a serve waiting for the lock must not listen: {waiting:?}"
    );
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let log = strip_ansi(&std::fs::read_to_string(other.path().join("log")).unwrap());
    assert!(!status.success(), "a second serve exits non-zero: {log}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "it waited drain + kill grace before giving up ({:?})",
        started.elapsed()
    );
    assert!(
        log.contains(&format!("pid {}", host.pid())) && log.contains(&addr.to_string()),
        "the refusal names the first inbox's pid and address: {log}"
    );
    // `check` still works beside the running inbox (it does not open the store).
    let (code, out, err) = cli_with_config(&dir.path().join("routes.toml"), &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    // The first inbox's turn was left alone: still its first attempt, and it ends with its one
    // reply.
    std::fs::write(&gate, b"go").unwrap();
    let v = wait_turn_state(&host, &id, "done").await;
    assert_eq!(v["turn"]["attempts"], 1, "{v:#}");
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "DONE");
    assert!(!host.log().contains("lease"), "{}", host.log());
    host.stop();
    assert_eq!(peer.received().len(), 1, "one reply, from one agent run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_overlaps_the_drain_waits_for_the_old_process_to_exit() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let addr = unused_addr();
    let toml = config(addr, &peer.url(), &gate, 3, 1).build();
    let mut old = BinHost::start(dir.path(), &toml, addr, "old.log").await;
    let id = send_task(&old).await;
    wait_running(&old, &id).await;
    old.signal("TERM");
    // The new process starts while the old one drains (its agent is still running).
    let new = BinHost::start(dir.path(), &toml, addr, "new.log").await;
    let status = old.wait_exit();
    assert!(status.success(), "{}", old.log());
    assert!(
        new.log()
            .contains("another process holds the data directory; waiting for it to stop"),
        "{}",
        new.log()
    );
    // The old process ended its agent at the end of its drain; the new one runs the turn again.
    std::fs::write(&gate, b"go").unwrap();
    let v = wait_turn_state(&new, &id, "done").await;
    assert_eq!(v["turn"]["attempts"], 2, "{v:#}");
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["type"], "DONE");
    new.stop();
    let dones = peer
        .received()
        .iter()
        .filter(|r| r.body["type"] == "DONE")
        .count();
    assert_eq!(dones, 1, "one answer: {:#?}", peer.received());
}
