//! Pairing two inboxes with one line, through the real binary: `init` on both, `peer invite` on
//! one, `peer join` with the line it printed on the other, then the agents message each other.
//! And the bad paths: a used, expired, unknown or guessed code, an invite to an inbox that is
//! down, and `peer remove`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_inbox_tests::*;

/// One machine: an inbox `init` wrote, running.
struct Machine {
    dir: tempfile::TempDir,
    host: BinHost,
}

impl Machine {
    async fn start() -> Machine {
        Machine::start_on(unused_addr(), None).await
    }

    /// On `addr`, with `public_url` the URL its invites name (e.g. a proxy in front of it).
    async fn start_on(addr: std::net::SocketAddr, public_url: Option<&str>) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let public: Vec<&str> = public_url
            .map(|u| vec!["--public-url", u])
            .unwrap_or_default();
        let agent = ["python3", &agent_script(), "--reply", "DONE"].map(str::to_owned);
        let out = Command::new(bin())
            .args([
                "init",
                "--dir",
                path_str(dir.path()),
                "--listen",
                &addr.to_string(),
            ])
            .args(&public)
            .args(["--agent", "command", "--"])
            .args(&agent)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let toml = std::fs::read_to_string(dir.path().join("routes.toml")).unwrap();
        let host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
        Machine { dir, host }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("routes.toml")
    }

    /// The CLI against this machine's config; success, stdout, stderr.
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env_remove("INBOX_URL")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            strip_ansi(&String::from_utf8_lossy(&out.stderr)),
        )
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap()
    }
}

/// The `peer join …` command an invite printed, as arguments (its quotes taken off).
fn join_args(command: &str) -> Vec<String> {
    let rest = command.trim().strip_prefix("agent-inbox ").expect(command);
    rest.split_whitespace()
        .map(|w| w.trim_matches('\'').to_owned())
        .collect()
}

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("secrets/main.token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_inboxes_pair_with_one_line_and_their_agents_talk() {
    let t0 = Instant::now();
    let alice = Machine::start().await;
    let bob = Machine::start().await;

    let (ok, command, err) = alice.cli(&["peer", "invite", "bob", "--as", "alice"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("plain http"),
        "the invite says the keys would cross in the clear: {err}"
    );
    let args = join_args(&command);
    assert!(args.contains(&"--insecure".to_owned()), "{command}");
    // Without --insecure, plain http is refused, and nothing is written.
    let before = bob.text();
    let strict: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--insecure")
        .collect();
    let (ok, _, err) = bob.cli(&strict);
    assert!(!ok && err.contains("--insecure"), "{err}");
    assert_eq!(bob.text(), before);

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = bob.cli(&args);
    assert!(ok, "{out}{err}\n{}", alice.host.log());
    assert!(out.contains("paired with alice"), "{out}");
    let paired_after = t0.elapsed();

    // Both files name the other, each direction with its own key, comments kept.
    let (a, b) = (alice.text(), bob.text());
    assert!(
        a.contains("[peers.bob]") && b.contains("[peers.alice]"),
        "{a}\n{b}"
    );
    assert!(
        a.contains("from = [\"bob\"]      # pairing adds each peer"),
        "{a}"
    );
    assert!(
        b.contains("may_send = [{ to = [\"alice\"], types = [\"TASK\"] }]"),
        "{b}"
    );
    for (dir, peer) in [(alice.dir.path(), "bob"), (bob.dir.path(), "alice")] {
        for end in ["receive", "send"] {
            let f = dir.join(format!("secrets/peers/{peer}.{end}"));
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                f.display()
            );
        }
    }
    let (ok, list, _) = alice.cli(&["peer", "list"]);
    assert!(
        ok && list.contains("bob") && list.contains("a key each way"),
        "{list}"
    );

    // Bob's agent asks alice's, by its own token, and gets the answer.
    let out = Command::new(bin())
        .args([
            "send",
            "--to",
            "alice",
            "--type",
            "TASK",
            "--payload",
            "{\"q\": 1}",
        ])
        .args(["--wait", "--timeout", "60"])
        .env("INBOX_URL", bob.host.url(""))
        .env("INBOX_AGENT_TOKEN", token(bob.dir.path()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{said}\n{}\n{}",
        alice.host.log(),
        bob.host.log()
    );
    assert!(said.contains("answered: DONE"), "{said}");
    eprintln!(
        "two fresh inboxes: paired after {:.1} s, first answered send --wait after {:.1} s",
        paired_after.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    // And the other way.
    let out = Command::new(bin())
        .args([
            "send",
            "--to",
            "bob",
            "--type",
            "TASK",
            "--wait",
            "--timeout",
            "60",
        ])
        .env("INBOX_URL", alice.host.url(""))
        .env("INBOX_AGENT_TOKEN", token(alice.dir.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same line again (under another name, so this side would take it): the code worked
    // once.
    let again: Vec<&str> = args
        .iter()
        .map(|a| if *a == "alice" { "alice2" } else { *a })
        .collect();
    let before = bob.text();
    let (ok, _, err) = bob.cli(&again);
    assert!(!ok, "a used code paired again");
    assert!(err.contains("used, expired or unknown"), "{err}");
    assert_eq!(bob.text(), before);

    // Removing takes the peer, its names and its key files away, and reloads.
    let (ok, out, err) = alice.cli(&["peer", "remove", "bob"]);
    assert!(ok, "{err}");
    assert!(out.contains("removed bob"), "{out}");
    let a = alice.text();
    assert!(!a.contains("bob"), "{a}");
    assert!(!alice.dir.path().join("secrets/peers/bob.receive").exists());
    let (_, list, _) = alice.cli(&["peer", "list"]);
    assert!(list.contains("no peers"), "{list}");
    alice.host.stop();
    bob.host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_expired_unknown_or_guessed_code_pairs_nothing() {
    let alice = Machine::start().await;
    let bob = Machine::start().await;
    let invite = |ttl: &str| {
        let (ok, command, err) = alice.cli(&["peer", "invite", "bob", "--ttl", ttl]);
        assert!(ok, "{err}");
        join_args(&command)
    };
    let bob_before = bob.text();
    let alice_before = alice.text();

    // Expired.
    let args = invite("1s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = bob.cli(&args);
    assert!(!ok && err.contains("used, expired or unknown"), "{err}");
    assert_eq!(bob.text(), bob_before, "nothing half-written here");
    assert_eq!(alice.text(), alice_before, "nor there");

    // An invite to an inbox that is down: a clear error, nothing written.
    let dead = agent_inbox::wire::InviteLine {
        url: format!("http://{}", unused_addr()),
        code: "x".into(),
        as_name: "ghost".into(),
    }
    .encode();
    let (ok, _, err) = bob.cli(&["peer", "join", &dead, "--insecure"]);
    assert!(!ok && err.contains("cannot reach"), "{err}");
    assert_eq!(bob.text(), bob_before);

    // Unknown codes, the same 404 each, until the address is locked out like any wrong secret.
    let join = alice.host.url("/pair/join");
    let body = |code: &str| {
        serde_json::json!({"code": code, "url": "http://127.0.0.1:9/message/alice",
            "key": "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE="})
        .to_string()
    };
    let mut codes = Vec::new();
    for i in 0..40 {
        let r = request(
            "POST",
            &join,
            &[("content-type", "application/json")],
            body(&format!("guess-{i}")),
        )
        .await;
        codes.push(r.status);
        if r.status == 429 {
            break;
        }
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(r.code(), "not_found");
    }
    assert_eq!(codes.last(), Some(&429), "guessing is limited: {codes:?}");
    assert_eq!(alice.text(), alice_before);
    alice.host.stop();
    bob.host.stop();
}

/// A proxy in front of `upstream`: it passes every request on, one per connection, but for a
/// request whose path is `lose` it drops the answer (the upstream did the work; the client never
/// hears so). Stops when the handle is aborted.
async fn lossy_proxy(
    upstream: std::net::SocketAddr,
    lose: &'static str,
) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // The request: its head, then Content-Length bytes of body.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    let n = client.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = client.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                // One request per connection, both ways.
                let head = head.replacen("\r\n", "\r\nconnection: close\r\n", 1);
                let mut up = tokio::net::TcpStream::connect(upstream).await.unwrap();
                up.write_all(head.as_bytes()).await.unwrap();
                up.write_all(&buf[head_end..]).await.unwrap();
                let mut answer = Vec::new();
                let _ = up.read_to_end(&mut answer).await;
                if head.lines().next().is_some_and(|l| l.contains(lose)) {
                    return;
                }
                let _ = client.write_all(&answer).await;
            });
        }
    });
    (url, task)
}

/// The confirm reaches the inviting inbox, which writes its half, but its answer is lost: the
/// joining inbox cancels there and takes its own half back, so neither side is left half-paired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_whose_answer_is_lost_leaves_no_half_pairing_on_either_side() {
    let addr_holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alice_addr = addr_holder.local_addr().unwrap();
    drop(addr_holder);
    let (proxy, task) = lossy_proxy(alice_addr, "/pair/confirm").await;
    let alice = Machine::start_on(alice_addr, Some(&proxy)).await;
    let bob = Machine::start().await;
    let (ok, command, err) = alice.cli(&["peer", "invite", "bob", "--as", "alice"]);
    assert!(ok, "{err}");
    let args = join_args(&command);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = bob.cli(&args);
    assert!(!ok, "paired though the confirm's answer was lost: {out}");
    assert!(
        err.contains("did not confirm") && err.contains("took its half back too"),
        "{err}"
    );
    assert!(!bob.text().contains("[peers.alice]"), "{}", bob.text());
    assert!(!alice.text().contains("[peers.bob]"), "{}", alice.text());
    // Its log says so (the log is written in bursts: a moment later).
    eventually(
        Duration::from_secs(5),
        "the cancel in alice's log",
        || async {
            alice
                .host
                .log()
                .contains("pairing cancelled by the other side")
                .then_some(())
        },
    )
    .await;
    for (dir, peer) in [(alice.dir.path(), "bob"), (bob.dir.path(), "alice")] {
        assert!(!dir.join(format!("secrets/peers/{peer}.receive")).exists());
    }
    task.abort();
    alice.host.stop();
    bob.host.stop();
}

/// The README's "Two machines", word for word: every command of its blocks, run in order, each
/// on its machine (a home directory of its own). Only the addresses and ports (both machines
/// say 8700; here they share one host) and the agent command (a test agent for `openclaw`) are
/// changed; the `peer join` line is the one `peer invite` printed, as a user pastes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_two_machines_commands_work_word_for_word() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme.find("\n## Two machines\n").expect("the section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    // Each ```sh block: the machine (its first line, `# on NAME`), then its commands.
    let mut steps: Vec<(String, String)> = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        let mut lines = block.lines();
        let machine = lines
            .next()
            .and_then(|l| l.strip_prefix("# on "))
            .expect("a block starts with `# on NAME`")
            .to_owned();
        for line in lines.filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            steps.push((machine.clone(), line.to_owned()));
        }
    }
    assert_eq!(steps.len(), 7, "{steps:#?}");

    // The binary on PATH as `agent-inbox`; a home, an address and a port for each machine.
    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(bin(), bin_dir.path().join("agent-inbox")).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let homes = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let ports = [unused_addr().port(), unused_addr().port()];
    let which = |m: &str| match m {
        "alice" => 0,
        "bob" => 1,
        other => panic!("no machine {other}"),
    };
    let agent = format!(
        " --agent command -- python3 {} --reply DONE",
        agent_script()
    );
    let t0 = Instant::now();
    let mut servers = Vec::new();
    let mut invite_line = String::new();
    let mut answered = None;
    for (machine, line) in &steps {
        let m = which(machine);
        let mut cmd = line
            .replace("alice.example:8700", &format!("127.0.0.1:{}", ports[0]))
            .replace("bob.example:8700", &format!("127.0.0.1:{}", ports[1]))
            .replace(":8700", &format!(":{}", ports[m]));
        if cmd.starts_with("agent-inbox init ") {
            cmd.push_str(&agent);
        }
        if cmd.contains("'ainv1.…'") {
            cmd = cmd.replace("'ainv1.…'", &format!("'{invite_line}'"));
        }
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .current_dir(homes[m].path())
            .env("HOME", homes[m].path())
            .env("PATH", &path)
            .env_remove("INBOX_URL");
        if cmd.starts_with("agent-inbox serve ") {
            let log = std::fs::File::create(homes[m].path().join("serve.log")).unwrap();
            let child = sh
                .arg(format!("exec {cmd}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let ready = format!("http://127.0.0.1:{}/readyz", ports[m]);
            eventually(Duration::from_secs(20), "serve ready", || async {
                try_request("GET", &ready, &[], "")
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
            })
            .await;
            servers.push(child);
            continue;
        }
        let out = sh.arg(&cmd).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{machine}: {cmd}\n{stdout}{stderr}");
        if cmd.contains("peer invite") {
            let printed = stdout.trim();
            let quoted = printed
                .split('\'')
                .nth(1)
                .expect("the invite line in quotes");
            invite_line = quoted.to_owned();
        }
        if cmd.contains("send ") && cmd.contains("--wait") {
            assert!(stderr.contains("answered: DONE"), "{stderr}");
            answered = Some(t0.elapsed());
        }
    }
    let answered = answered.expect("the send --wait ran");
    eprintln!(
        "the README's two machines: from two fresh directories to the first answered send --wait \
         in {:.1} s",
        answered.as_secs_f64()
    );
    for mut s in servers {
        let _ = Command::new("kill")
            .args(["-TERM", &s.id().to_string()])
            .status();
        assert!(s.wait().unwrap().success());
    }
}

/// Hostile fields: a name, a URL, a type or a key with a newline (or a quote, which would break
/// out of a TOML string) is refused with 400 before any code is used or anything is written; a
/// pasted invite line that was altered does not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pairing_fields_are_refused_before_anything_is_written() {
    let alice = Machine::start().await;
    let before = alice.text();
    let secret = std::fs::read_to_string(alice.dir.path().join("secrets/admin.secret")).unwrap();
    let bearer = format!("Bearer {}", secret.trim());
    let as_admin = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    for peer in ["bo\nb", "bob\"]\n[server]", "../bob", ""] {
        let r = request(
            "POST",
            &alice.host.url("/admin/peers/invite"),
            &as_admin,
            serde_json::json!({ "peer": peer }).to_string(),
        )
        .await;
        assert_eq!(r.status, 400, "{peer:?}: {}", r.text);
    }
    let (ok, command, err) = alice.cli(&["peer", "invite", "bob"]);
    assert!(ok, "{err}");
    let line = join_args(&command)[2].clone();
    let code = agent_inbox::wire::InviteLine::decode(&line).unwrap().code;
    let key = "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=";
    let join_url = alice.host.url("/pair/join");
    let pair_join = |body: serde_json::Value| {
        let url = join_url.clone();
        async move {
            request(
                "POST",
                &url,
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await
        }
    };
    for (url, takes, k) in [
        ("http://x/message/a\n[server]", "TASK", key),
        ("http://x/message/a", "TASK\"\n", key),
        ("http://x/message/a", "TASK", "whsec_not\nbase64"),
    ] {
        let r = pair_join(serde_json::json!({"code": code, "url": url, "key": k,
            "takes": [takes]}))
        .await;
        assert_eq!(r.status, 400, "{url:?} {takes:?} {k:?}: {}", r.text);
    }
    // The code was not used by any of those: it still works (here, for a join that then
    // confirms nothing).
    let r = pair_join(serde_json::json!({"code": code,
        "url": "http://127.0.0.1:9/message/alice", "key": key, "takes": ["TASK"]}))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // An altered line, and a name with a newline, on the joining side.
    let bob = Machine::start().await;
    let altered = format!("{}x", &line[..line.len() - 3]);
    let (ok, _, err) = bob.cli(&["peer", "join", &altered, "--insecure"]);
    assert!(!ok && err.contains("invite"), "{err}");
    let (ok, _, err) = bob.cli(&["peer", "join", &line, "--as", "al\nice", "--insecure"]);
    assert!(!ok && err.contains("a peer name is"), "{err}");
    assert_eq!(alice.text(), before);
    alice.host.stop();
    bob.host.stop();
}
