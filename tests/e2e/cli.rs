//! The command line, through the real binary: `check`, `serve`, `send`, `messages`, and SIGTERM.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;
use tokio::process::Command;

/// Runs the binary with `args` to completion (at most 60 s).
async fn run(args: &[&str]) -> Output {
    run_bin(args, &[]).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("routes.toml");
    write_by_rename(&path, toml);
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        dir.path(),
        r#"
        [agent]
        command = ["true"]
        [peers.tony]
        url = "http://127.0.0.1:9/message"
        secret = "s"
        [routes.a]
        from = ["tony", "ghost"]
        types = ["TASK"]
        [routes.b]
        from = ["tony"]
        types = ["TASK"]
        [routes.c]
        from = ["tony"]
        types = []
        "#,
    );
    let out = run(&["check", "--config", &bad]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    for want in [
        "3 problems",
        "routes.a.from[1]: unknown peer \"ghost\" (known: tony)",
        "routes.a and routes.b both accept type \"TASK\" from peer \"tony\"",
        "routes.c.types: must not be empty",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }

    // An unknown field stops parsing, so it is reported on its own, with its name.
    let unknown = write_config(dir.path(), "[server]\nport = 8700\n");
    let out = run(&["check", "--config", &unknown]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("port"), "{out:?}");

    let missing = dir.path().join("nope.toml").display().to_string();
    let out = run(&["check", "--config", &missing]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("cannot read"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_send_messages_then_sigterm_exits_cleanly() {
    let peer = PeerServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let config = write_config(
        dir.path(),
        &Toml::new()
            .listen(addr)
            .schedule(FAST_RETRIES)
            .peer("tony", &peer.url(), TONY)
            .mailbox("notes", &["tony"], &["NOTE"])
            .build(),
    );

    let out = run(&["check", "--config", &config]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("ok (1 peer, 1 route)"),
        "{out:?}"
    );

    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut serve = std::process::Command::new(bin());
    serve
        .args(["serve", "--config", &config])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    pass_port(&mut serve, addr);
    let mut serve = Command::from(serve)
        .kill_on_drop(true)
        .spawn()
        .expect("start serve");
    let base = format!("http://{addr}");
    let health = eventually(Duration::from_secs(20), "serve to answer /healthz", || {
        let url = format!("{base}/healthz");
        async move { try_request("GET", &url, &[], "").await.ok() }
    })
    .await;
    assert_eq!(health.status, 200);

    // `send` goes through the running inbox's relay to the peer.
    let out = run(&[
        "send",
        "--to",
        "tony",
        "--type",
        "TASK",
        "--payload",
        r#"{"a":1}"#,
        "--config",
        &config,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let ack: serde_json::Value =
        serde_json::from_str(&text(&out.stdout)).expect("send prints JSON");
    assert_eq!(ack["status"], "queued", "{ack:#}");
    let id = ack["id"].as_str().unwrap().to_owned();
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    let body = &got[0].body;
    assert_eq!(body["id"], id.as_str(), "{body:#}");
    assert_eq!(body["type"], "TASK");
    assert_eq!(body["payload"], json!({"a": 1}));
    assert_eq!(body["hops"], 0);
    assert_eq!(body["thread_id"], id.as_str());
    assert_eq!(got[0].headers["x-shared-secret"], TONY);

    // `messages` prints a table: a header, then one line per message.
    let ack = request(
        "POST",
        &format!("{base}/message"),
        &[
            ("x-shared-secret", TONY),
            ("content-type", "application/json"),
        ],
        json!({"type": "NOTE", "payload": {"hello": "cli"}}).to_string(),
    )
    .await;
    assert_eq!(ack.status, 202, "{:#}", ack.json);
    let note = ack.json["id"].as_str().unwrap();
    let out = run(&["messages", "--config", &config]).await;
    assert!(out.status.success(), "{out:?}");
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "RECEIVED", "FROM", "ROUTE", "TYPE", "TURN", "ABOUT"],
        "{table}"
    );
    let row = lines.next().unwrap_or("");
    assert!(row.starts_with(note), "{table}");
    for cell in ["tony", "notes", "NOTE", "mailbox", "cli"] {
        assert!(row.contains(cell), "{cell:?} missing in {row:?}");
    }

    // SIGTERM: drain and exit 0.
    let pid = serve.id().expect("serve is running").to_string();
    let kill = run_kill(&pid).await;
    assert!(kill.success(), "kill {pid}: {kill:?}");
    let status = tokio::time::timeout(Duration::from_secs(30), serve.wait())
        .await
        .expect("serve exits within 30 s of SIGTERM")
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        status.success(),
        "serve exited with {status:?}; log:\n{log}"
    );
}

async fn run_kill(pid: &str) -> std::process::ExitStatus {
    Command::new("kill")
        .arg(pid)
        .status()
        .await
        .expect("run kill")
}

/// Runs the binary with `args` and `--config config`; checks that it succeeded; returns stdout.
async fn cli_ok(args: &[&str], config: &Path) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    let out = run(&all).await;
    assert!(out.status.success(), "{all:?}: {out:?}");
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_outbox_status_and_send_talk_to_the_running_inbox() {
    let peer = PeerServer::start().await;
    // The one attempt fails, so the reply is a dead letter until `outbox retry`.
    peer.script([503]);
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::tasks(&peer.url(), &reply_sh(&["STATUS"]))
        .listen(addr)
        .schedule(&["0s"])
        .mailbox("notes", &["tony"], &["NOTE"])
        .build();
    let host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
    let config = dir.path().join("routes.toml");
    let task = send_task(&host).await;
    let (reply, _) = delivery_in(&host, &task, "dead").await;
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    let ack = post_message(
        &host,
        TONY,
        json!({"type": "NOTE", "thread_id": "cli-thread"}),
    )
    .await;
    assert_eq!(ack.status, 202);
    let note = ack.id();

    // `messages ID`: the message, its turn, its reply and the reply's delivery.
    let detail = cli_ok(&["messages", &task], &config).await;
    for want in [
        format!("message {task}"),
        "turn: done".to_owned(),
        format!("reply {reply_id}"),
        "dead".to_owned(),
    ] {
        assert!(detail.contains(&want), "{want:?} missing in:\n{detail}");
    }
    // `--json` is the API's answer.
    let json_out: serde_json::Value =
        serde_json::from_str(&cli_ok(&["messages", &task, "--json"], &config).await).unwrap();
    assert_eq!(json_out, view(&host, &task).await);

    // The filters.
    let rows = |table: &str| -> Vec<String> {
        table
            .lines()
            .skip(1)
            // A row's note (the outbox's error) is indented under it.
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
            .collect()
    };
    let notes = cli_ok(&["messages", "--route", "notes"], &config).await;
    assert_eq!(rows(&notes), [note.as_str()], "{notes}");
    // The admin names threads by the inbox's own id; tony calls this one "cli-thread".
    let cli_thread = view(&host, &note).await["message"]["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let thread = cli_ok(&["messages", "--thread", &cli_thread], &config).await;
    assert_eq!(rows(&thread), [note.as_str()], "{thread}");
    let newest = cli_ok(&["messages", "--limit", "1"], &config).await;
    assert_eq!(rows(&newest), [note.as_str()], "{newest}");
    let all: serde_json::Value =
        serde_json::from_str(&cli_ok(&["messages", "--json"], &config).await).unwrap();
    assert_eq!(all["messages"].as_array().unwrap().len(), 2, "{all:#}");

    // `outbox list --dead`, as a table and as JSON.
    let dead = cli_ok(&["outbox", "list", "--dead"], &config).await;
    assert_eq!(rows(&dead), [reply_id.as_str()], "{dead}");
    assert!(dead.contains("dead") && dead.contains("503"), "{dead}");
    let dead: serde_json::Value =
        serde_json::from_str(&cli_ok(&["outbox", "list", "--dead", "--json"], &config).await)
            .unwrap();
    assert_eq!(
        dead["outbox"][0]["reply"]["id"],
        reply_id.as_str(),
        "{dead:#}"
    );

    // `outbox retry` delivers it (the peer answers 200 now); a second retry finds nothing dead.
    let retried = cli_ok(&["outbox", "retry", &reply_id], &config).await;
    assert!(retried.contains("1 delivery to be tried now"), "{retried}");
    let got = peer.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["id"], reply_id.as_str());
    delivery_in(&host, &task, "delivered").await;
    let again = run(&[
        "outbox",
        "retry",
        &reply_id,
        "--config",
        config.to_str().unwrap(),
    ])
    .await;
    assert!(!again.status.success(), "{again:?}");
    assert!(text(&again.stderr).contains("409"), "{again:?}");
    let none = cli_ok(&["outbox", "list", "--dead"], &config).await;
    assert_eq!(rows(&none), Vec::<String>::new(), "{none}");

    // `status` is the API's /status.
    let st: serde_json::Value =
        serde_json::from_str(&cli_ok(&["status", "--json"], &config).await).unwrap();
    assert_eq!(
        st["config_hash"],
        status(&host).await["config_hash"],
        "{st:#}"
    );
    assert_eq!(st["draining"], false, "{st:#}");

    // `send --thread` continues a thread.
    let sent = cli_ok(
        &[
            "send",
            "--to",
            "tony",
            "--type",
            "TASK",
            "--thread",
            &cli_thread,
        ],
        &config,
    )
    .await;
    let sent: serde_json::Value = serde_json::from_str(&sent).expect("send prints JSON");
    let sent = sent["id"].as_str().unwrap().to_owned();
    let got = peer.wait_for(2, Duration::from_secs(30)).await;
    let body = &got
        .iter()
        .find(|r| r.body["id"] == sent)
        .expect("the sent message")
        .body;
    assert_eq!(
        body["thread_id"], "cli-thread",
        "tony gets its own name: {body:#}"
    );

    // `outbox list --limit`: two outbound messages now, one listed.
    let count = |out: String| {
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["outbox"]
            .as_array()
            .map(Vec::len)
    };
    assert_eq!(
        count(cli_ok(&["outbox", "list", "--json"], &config).await),
        Some(2)
    );
    assert_eq!(
        count(cli_ok(&["outbox", "list", "--json", "--limit", "1"], &config).await),
        Some(1)
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_bad_config_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The address is held here for the whole run: a serve that tried to bind it would fail with
    // "cannot listen" instead of reporting the config, so the refusal comes before any bind.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let config = write_config(
        dir.path(),
        &Toml::new()
            .listen(addr)
            .peer("tony", "http://127.0.0.1:9/message", TONY)
            .mailbox("notes", &["tony", "ghost"], &["NOTE"])
            .route("notes", "reply_to", r#"["tony"]"#)
            .build(),
    );
    let out = run(&["serve", "--config", &config]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("unknown peer \"ghost\""), "{stderr}");
    assert!(
        stderr.contains("reply_to"),
        "every problem is reported: {stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "serve created its data dir"
    );
    assert!(
        !stderr.contains("cannot listen"),
        "serve tried to bind before checking its config: {stderr}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_compiles_every_plugin_and_warns_about_an_empty_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("notes.wasm"),
        "this is a text file, not wasm\n",
    )
    .unwrap();
    // The smallest core module: valid WebAssembly, but not a component.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let toml = Toml::new()
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .mailbox("a", &["tony"], &["NOTE"])
        .route("a", "plugin", &quoted("notes.wasm"))
        .mailbox("b", &["tony"], &["TASK"])
        .route("b", "plugin", &quoted("core.wasm"))
        .build();
    let path = write_config(dir.path(), &toml);
    let out = run(&["check", "--config", &path]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    for want in ["notes.wasm", "core.wasm"] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }

    // The empty file is a config (every default), so it passes, with a warning.
    let empty = write_config(dir.path(), "");
    let out = run(&["check", "--config", &empty]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("warning: the file has no [server] table"),
        "{stdout}"
    );
    assert!(stdout.contains("no peers and no routes"), "{stdout}");
    assert!(stdout.contains("ok (0 peers, 0 routes)"), "{stdout}");
}

/// README (`listen`): a socket a service manager passes (`LISTEN_FDS`) is served instead of
/// `listen`, with a warning, and `listen` is not bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listens_on_the_socket_a_service_manager_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (passed, configured) = (unused_addr(), unused_addr());
    let toml = Toml::new()
        .listen(configured)
        .peer("tony", "http://127.0.0.1:9/message", TONY)
        .mailbox("notes", &["tony"], &["NOTE"])
        .build();
    // BinHost hands `passed` to the process and waits until it answers there.
    let host = BinHost::start(dir.path(), &toml, passed, "serve.log").await;
    // The log is written by its own thread, a little after the fact.
    eventually(
        Duration::from_secs(10),
        "the warning in the log",
        || async {
            host.log()
                .contains("serving on the socket the service manager passed")
                .then_some(())
        },
    )
    .await;
    let there = try_request("GET", &format!("http://{configured}/healthz"), &[], "").await;
    assert!(there.is_err(), "listen was bound too: {there:?}");
    host.stop();
}

/// README (health): the inbox listens only once its config is loaded and recovery has run; a
/// connection made sooner, on a socket a service manager holds, waits and is answered ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_before_serve_is_ready_waits_and_is_answered_ready() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::notes().listen(addr).build();
    write_by_rename(&dir.path().join("routes.toml"), &toml);
    // The socket listens before the process starts, as systemd's does; the request is made and
    // sent before there is any process to answer it.
    listen_reserved(addr);
    let mut early = tokio::net::TcpStream::connect(addr).await.unwrap();
    early
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["serve", "--config"])
        .arg(dir.path().join("routes.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    pass_port(&mut cmd, addr);
    let mut child = cmd.spawn().unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), early.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"status":"ready"}"#), "{answer}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

/// Runs the binary with `args` in `cwd` with `env` added (at most 60 s).
async fn run_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let child = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("INBOX_URL")
        .env_remove("INBOX_ADMIN_SECRET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let child = async {
        let mut out = child.await;
        if let Ok(o) = &mut out {
            o.stderr = strip_ansi(&text(&o.stderr)).into_bytes();
        }
        out
    };
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not finish within 60 s"))
        .expect("run the binary")
}

/// The CLI reaches a running inbox without its config (`INBOX_URL` with `INBOX_ADMIN_SECRET`, or
/// `--admin-secret-file`), taking `INBOX_URL` as the base URL or the `/send` URL; and with its
/// config it reads only `[server]`, so `status`, `messages` and `reload` work while routes.toml is
/// broken: a peer whose secret is not in this shell, then a file cut short mid-edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_needs_no_config_and_reads_only_server_from_a_broken_one() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::notes().listen(addr).build();
    let host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
    let elsewhere = tempfile::tempdir().unwrap();
    let base = format!("http://{addr}");
    let send_url = format!("{base}/send");

    // No config file at all.
    for url in [base.as_str(), send_url.as_str()] {
        let env = [("INBOX_URL", url), ("INBOX_ADMIN_SECRET", ADMIN)];
        let out = run_in(elsewhere.path(), &env, &["status"]).await;
        assert!(out.status.success(), "{url}: {out:?}");
        assert!(text(&out.stdout).contains("config "), "{out:?}");
        let out = run_in(elsewhere.path(), &env, &["messages", "--json"]).await;
        assert!(out.status.success(), "{url}: {out:?}");
    }
    let secret = elsewhere.path().join("admin-secret");
    std::fs::write(&secret, format!("{ADMIN}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = secret.display().to_string();
    let by_file = ["status", "--url", &base, "--admin-secret-file", &secret];
    let out = run_in(elsewhere.path(), &[], &by_file).await;
    assert!(out.status.success(), "{out:?}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run_in(elsewhere.path(), &[], &by_file).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("others may write it"), "{out:?}");
    let env = [
        ("INBOX_URL", base.as_str()),
        ("INBOX_ADMIN_SECRET", "wrong"),
    ];
    let out = run_in(elsewhere.path(), &env, &["status"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unauthorized"), "{out:?}");
    // Neither a URL nor a config: the error says what to give.
    let out = run_in(elsewhere.path(), &[], &["status"]).await;
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("INBOX_URL") && said.contains("routes.toml"),
        "{said}"
    );

    // A broken routes.toml: a peer whose secret this shell (and the server) lacks.
    let config = dir.path().join("routes.toml");
    let broken = format!(
        "{toml}\n[peers.bob]\nurl = \"http://127.0.0.1:9/message\"\nsecret_env = \"NOT_IN_THIS_SHELL\"\n"
    );
    write_by_rename(&config, &broken);
    let at = dir.path().display().to_string();
    let out = run_in(dir.path(), &[], &["status"]).await;
    assert!(out.status.success(), "{out:?}");
    eprintln!(
        "--- agent-inbox status, routes.toml broken (in {at})\n{}",
        text(&out.stdout)
    );
    let out = run_in(dir.path(), &[], &["messages"]).await;
    assert!(out.status.success(), "{out:?}");
    // reload runs, and says why the server keeps its config.
    let out = run_in(dir.path(), &[], &["reload"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("NOT_IN_THIS_SHELL"),
        "{}",
        text(&out.stderr)
    );
    // Cut short mid-edit: not TOML at all past [server].
    let cut = &broken[..broken.find("[peers.bob]").unwrap() + "[peers.bob]\nurl = \"http".len()];
    write_by_rename(&config, cut.replace("[peers.bob]", "[peers.bob"));
    let out = run_in(dir.path(), &[], &["status"]).await;
    assert!(out.status.success(), "{out:?}");
    host.stop();
}

/// `agent-inbox init` writes a commented routes.toml for one local agent, its admin secret and
/// the agent's token in 0600 files in a 0700 `secrets/`, that `check` passes and `serve` runs
/// (the CLI reading the admin secret from its file); run again, it overwrites nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_an_inbox_that_serves_and_overwrites_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let inbox = dir.path().join("inbox");
    let at = inbox.display().to_string();
    let listen = addr.to_string();
    let init = [
        "init", "--dir", &at, "--listen", &listen, "--agent", "command", "--", "true",
    ];
    let out = run(&init).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("agent-inbox serve --config"),
        "{out:?}"
    );
    let mode = |p: &str| {
        std::fs::metadata(inbox.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("secrets"), 0o700);
    assert_eq!(mode("secrets/admin.secret"), 0o600);
    assert_eq!(mode("secrets/main.token"), 0o600);
    let config = inbox.join("routes.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("# routes.toml, written by `agent-inbox init`"));
    let (code, out, err) = cli_with_config(&config, &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let host = BinHost::start(&inbox, &toml, addr, "serve.log").await;
    let (code, out, err) = cli_with_config(&config, &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    // Again: refused, nothing touched.
    let out = run(&init).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("overwrites nothing"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), toml);
    host.stop();
}

/// README: after the operator fixes what made a delivery fail, `outbox retry` tries it now
/// instead of at its next scheduled try (an hour away here); `outbox list` shows that try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_retry_tries_a_delivery_waiting_for_its_next_try_now() {
    let peer = PeerServer::start().await;
    peer.script([503]);
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::tasks(&peer.url(), &reply_sh(&["STATUS"]))
        .listen(addr)
        .schedule(&["0s", "1h"])
        .build();
    let host = BinHost::start(dir.path(), &toml, addr, "serve.log").await;
    let config = dir.path().join("routes.toml");
    let task = send_task(&host).await;
    let (reply, _) = delivery_in(&host, &task, "retrying").await;
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    let listed = cli_ok(&["outbox", "list"], &config).await;
    // An hour away, give or take the schedule's jitter.
    assert!(
        listed.contains("(in ") && (listed.contains(" min)") || listed.contains(" h)")),
        "{listed}"
    );
    assert!(listed.contains("error: peer answered 503"), "{listed}");
    let retried = cli_ok(&["outbox", "retry", &reply_id], &config).await;
    assert!(retried.contains("1 delivery to be tried now"), "{retried}");
    // Received well before the hour: the peer takes it this time.
    let got = peer.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body["id"], reply_id.as_str());
    delivery_in(&host, &task, "delivered").await;
    host.stop();
}
