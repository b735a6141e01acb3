//! A full disk: the store that cannot write is unavailable, not broken. Acks are refused as 503
//! with `Retry-After` (nothing is logged or answered as received that was not committed),
//! `/readyz` says so until a probe write succeeds, and once space returns the agent's retried
//! reply lands and the turn's end is recorded.
//!
//! The data directory is a real tmpfs of a few MiB, mounted for the test (CI runs as root); a
//! filler file takes the rest of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

/// A tmpfs of `mib` MiB mounted on `at`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs as its data directory, which needs root (CI runs as \
             root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create the filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // What one page more would take.
    while f.write(&chunk[..512]).is_ok_and(|n| n > 0) {}
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_acks_as_503_and_loses_no_reply() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, 8);
    let gate = dir.path().join("gate");
    let command = toml_list(&[
        "python3".to_owned(),
        agents_dir().join("prompt-curl.py").display().to_string(),
        "--wait-for".to_owned(),
        gate.display().to_string(),
    ]);
    let addr = unused_addr();
    let toml = Toml::tasks(&peer.url(), &command)
        .mailbox("notes", &["tony"], &["NOTE"])
        .agent("stdin", "true")
        .agent("timeout_secs", "120")
        .listen(addr)
        .build();
    let host = BinHost::start(dir.path(), &toml, addr, "log").await;
    let id = send_task(&host).await;
    wait_running(&host, &id).await;

    let filler = fill(&data);
    // Messages until the store refuses them (the WAL's room ahead may take a few first).
    let (mut acked, mut refused) = (Vec::new(), 0);
    for n in 0..400 {
        let r = post_message(
            &host,
            TONY,
            json!({"type": "NOTE", "payload": {"n": n, "pad": "x".repeat(2000)}}),
        )
        .await;
        match r.status {
            202 => acked.push(r.id()),
            503 => {
                assert_eq!(r.code(), "store_unavailable", "{:#}", r.json);
                assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
                refused += 1;
                if refused >= 20 {
                    break;
                }
            }
            other => panic!("a full disk answered {other}: {:#}", r.json),
        }
    }
    assert!(
        refused >= 20,
        "the full disk never refused an ack ({} acked)",
        acked.len()
    );
    let ready = request("GET", &host.url("/readyz"), &[], "").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    // The agent answers now: its reply's curl gets 503 and retries (after Retry-After).
    // One log line per refusal: the 503s above are all in the log before the agent goes on.
    let refusals = |log: &str| log.matches("refused: the store is unavailable").count();
    let before = eventually(Duration::from_secs(10), "the refusals logged", || async {
        let n = refusals(&host.log());
        (n >= refused).then_some(n)
    })
    .await;
    std::fs::write(&gate, b"go").unwrap();
    let replying = dir.path().join("gate.replying");
    eventually(Duration::from_secs(20), "the agent to reply", || async {
        replying.exists().then_some(())
    })
    .await;
    // Its first try meets the full disk: the log says so (the only request made meanwhile).
    eventually(
        Duration::from_secs(20),
        "the reply refused by the full disk",
        || async { (refusals(&host.log()) > before).then_some(()) },
    )
    .await;
    let v = view(&host, &id).await;
    assert_eq!(v["turn"]["state"], "running", "{v:#}");
    assert!(
        peer.received().is_empty(),
        "nothing can be committed, so nothing is relayed"
    );

    std::fs::remove_file(&filler).unwrap();
    eventually(Duration::from_secs(30), "/readyz to recover", || async {
        let r = request("GET", &host.url("/readyz"), &[], "").await;
        (r.status == 200).then_some(())
    })
    .await;
    let got = peer.wait_for(1, Duration::from_secs(120)).await;
    assert_eq!(
        got[0].body["in_reply_to"],
        id.as_str(),
        "the reply landed once space returned"
    );
    let v = wait_turn_state(&host, &id, "done").await;
    assert_eq!(v["turn"]["attempts"], 1, "{v:#}");
    // Every ack is there; the log names exactly what was committed.
    for a in &acked {
        let r = admin_get(&host, &format!("/messages/{a}")).await;
        assert_eq!(r.status, 200, "acked message {a} is missing");
    }
    let log = host.log();
    let received = log.matches("message received").count();
    assert_eq!(
        received,
        acked.len() + 1,
        "one line per committed message:\n{log}"
    );
    println!(
        "full disk: {} acks taken before the disk was full, {refused} refused as 503 with \
         Retry-After, replies lost 0, the turn's end recorded after space returned",
        acked.len()
    );
    host.stop();
}
