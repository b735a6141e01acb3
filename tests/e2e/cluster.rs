//! Several hosts, one queue: inbox processes sharing one PostgreSQL (`[store] kind =
//! "postgres"`), each test in a schema of its own. They need `INBOX_TEST_DATABASE_URL` (`.ci/run`
//! starts PostgreSQL and sets it); without it they say so and pass, except under `CI=true`, where
//! they fail.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::{Value, json};

/// The test database's URL, or `None` (said on stdout, where a test's output is shown) outside
/// CI when there is none.
fn database() -> Option<String> {
    match std::env::var("INBOX_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but INBOX_TEST_DATABASE_URL is not set: the cluster tests cannot run")
        }
        Err(_) => {
            println!(
                "SKIPPED: INBOX_TEST_DATABASE_URL is not set: this PostgreSQL test did not run"
            );
            None
        }
    }
}

/// `[store]` on the test database, in `schema`, with short leases so a test sees a take-over.
fn store_toml(schema: &str) -> String {
    format!(
        "[store]\nkind = \"postgres\"\nurl_env = \"INBOX_DATABASE_URL\"\nschema = \"{schema}\"\n\
         pool_size = 4\nlease_secs = 2\nrenew_secs = 1\n"
    )
}

fn schema() -> String {
    format!("c_{}", uuid_ish())
}

fn uuid_ish() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A host of the cluster: the shared config with its own `listen`, `host_id` and `public_url`.
async fn host(
    dir: &std::path::Path,
    base: &Toml,
    schema: &str,
    addr: std::net::SocketAddr,
    id: &str,
    public: std::net::SocketAddr,
    url: &str,
) -> BinHost {
    let toml = base
        .clone()
        .listen(addr)
        .server("host_id", &quoted(id))
        .server("public_url", &quoted(&format!("http://{public}")))
        .build()
        + &store_toml(schema);
    std::fs::create_dir_all(dir).unwrap();
    BinHost::start_with_env(dir, &toml, addr, "log", &[("INBOX_DATABASE_URL", url)]).await
}

/// Host `id` of `base`, in `work/<id>`, replying through `public`.
async fn host_at(
    work: &std::path::Path,
    base: &Toml,
    schema: &str,
    addr: std::net::SocketAddr,
    id: &str,
    public: std::net::SocketAddr,
    url: &str,
) -> BinHost {
    host(&work.join(id), base, schema, addr, id, public, url).await
}

/// Hosts `host-a` and `host-b` of `base` on the test database, each its own `public_url`.
async fn two_hosts(
    work: &std::path::Path,
    base: &Toml,
    schema: &str,
    url: &str,
) -> (BinHost, BinHost) {
    let (a_addr, b_addr) = (unused_addr(), unused_addr());
    let a = host_at(work, base, schema, a_addr, "host-a", a_addr, url).await;
    let b = host_at(work, base, schema, b_addr, "host-b", b_addr, url).await;
    (a, b)
}

/// tony's TASKs, whose agent waits for the file `gate` before it replies STATUS.
fn gated(tony: &PeerServer, gate: &std::path::Path) -> Toml {
    Toml::tasks(
        &tony.url(),
        &agent_command(&["--wait-for", path_str(gate), "--reply", "STATUS"]),
    )
}

/// Runs SQL on the test database, in `schema`; returns the first column of each row.
fn sql(url: &str, schema: &str, query: &str) -> Vec<String> {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-Atc", &format!("SET search_path = {schema}; {query}")])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty() && *l != "SET")
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_one_queue_and_an_agent_replies_through_another() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let base = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
        .agent("max_concurrent", "2");
    let (a_addr, b_addr, c_addr) = (unused_addr(), unused_addr(), unused_addr());
    // Every agent replies to host b, wherever its turn ran (as through a load balancer).
    let start =
        |addr, id: &'static str| host_at(work.path(), &base, &schema, addr, id, b_addr, &url);
    let c = start(c_addr, "host-c").await;
    let a = start(a_addr, "host-a").await;
    let b = start(b_addr, "host-b").await;
    let mut ids = Vec::new();
    for i in 0..18 {
        let body = json!({"type": "TASK", "payload": {"n": i}});
        let r = match i % 3 {
            0 => post_message(&a, TONY, body).await,
            1 => post_message(&b, TONY, body).await,
            _ => post_message(&c, TONY, body).await,
        };
        assert_eq!(r.status, 202, "{:#}", r.json);
        ids.push(r.id());
    }
    // Every acked message got its turn, and every reply reached tony.
    let got = tony.wait_for(18, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 18);
    let answered: std::collections::HashSet<String> = got
        .iter()
        .map(|r| r.body["in_reply_to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        answered.len(),
        18,
        "a message was answered twice or not at all"
    );
    // One Idempotency-Key sent to two hosts at once: one message, one turn.
    let key = [("idempotency-key", "same-key-twice")];
    let body = json!({"type": "TASK", "payload": {"twice": true}});
    let (one, two) = tokio::join!(
        post_message_with(&a, TONY, &key, body.clone()),
        post_message_with(&c, TONY, &key, body.clone())
    );
    let mut statuses = [one.status, two.status];
    statuses.sort();
    assert_eq!(statuses, [200, 202], "{:#} {:#}", one.json, two.json);
    assert_eq!(one.json["id"], two.json["id"]);
    tony.wait_for(19, Duration::from_secs(30)).await;
    let got = received_before_marker(&a, "tony", &tony).await;
    assert_eq!(got.len(), 19, "{got:#?}");
    // Reads work from any host.
    for id in &ids {
        let v = view(&a, id).await;
        assert_eq!(v["turn"]["state"], "done", "{v:#}");
        assert_eq!(v["turn"]["attempts"], 1, "{v:#}");
    }
    // The hosts shared the turns (the queue is shared), and the replies all went through b.
    // The logs are written a few milliseconds behind: wait for the last lines.
    let ran: Vec<usize> = eventually(Duration::from_secs(5), "every turn's log line", || async {
        let ran: Vec<usize> = [&a, &b, &c]
            .iter()
            .map(|h| h.log().matches("turn ended").count())
            .collect();
        let replies = b.log().matches("reply queued").count();
        (ran.iter().sum::<usize>() >= 19 && replies >= 19).then_some(ran)
    })
    .await;
    // The 18, and the one message the repeated key made.
    assert_eq!(ran.iter().sum::<usize>(), 19, "{ran:?}");
    assert!(ran.iter().filter(|n| **n > 0).count() >= 2, "{ran:?}");
    assert_eq!(b.log().matches("reply queued").count(), 19);
    assert_eq!(a.log().matches("reply queued").count(), 0);
    assert_eq!(c.log().matches("reply queued").count(), 0);

    // Each host lists both, running the same config.
    let status = admin_get(&a, "/status").await;
    let cluster = &status.json["cluster"];
    assert_eq!(cluster["host_id"], "host-a", "{:#}", status.json);
    let hosts: Vec<&str> = cluster["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host_id"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["host-a", "host-b", "host-c"], "{:#}", status.json);
    assert!(
        cluster["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["config_differs"] == false),
        "{:#}",
        status.json
    );

    // Events of a message acked by one host reach a follower of the other. The admin follows
    // the inbox's own thread id, which tony names "followed".
    let first = post_message(
        &a,
        TONY,
        json!({"type": "TASK", "thread_id": "followed", "payload": {}}),
    )
    .await;
    assert_eq!(first.status, 202);
    let thread = view(&a, &first.id()).await["message"]["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let follow = b.url(&format!("/events?thread={thread}&timeout=8"));
    let auth = format!("Bearer {ADMIN}");
    // The stream's first frame says b follows; what a acks from now on must reach it.
    let following = open_stream("GET", &follow, &[("authorization", &auth)], "").await;
    let r = post_message(
        &a,
        TONY,
        json!({"type": "TASK", "thread_id": "followed", "payload": {}}),
    )
    .await;
    assert_eq!(r.status, 202);
    let seen = following.rest().await.text;
    for event in ["message_accepted", "outbound_queued"] {
        assert!(
            seen.contains(event),
            "{event} missing from b's feed:\n{seen}"
        );
    }

    // `check` reaches the database and reads its schema.
    let out = tokio::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(work.path().join("host-a").join("routes.toml"))
        .env("INBOX_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("reachable, schema version"), "{text}");
    assert!(
        !text.contains("inbox-test"),
        "the password was printed: {text}"
    );
    a.stop();
    b.stop();
    c.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_stops_the_start_and_check_without_its_password() {
    // No test database needed: the point is that there is none to reach.
    let work = tempfile::tempdir().unwrap();
    let addr = unused_addr();
    let toml = Toml::new().listen(addr).build() + &store_toml("nowhere");
    let path = work.path().join("routes.toml");
    write_by_rename(&path, &toml);
    // Nothing listens on port 9 of this machine.
    let url = "postgres://inbox:s3cret-pw@127.0.0.1:9/inbox";
    for cmd in ["check", "serve"] {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(bin())
                .args([cmd, "--config"])
                .arg(&path)
                .env("INBOX_DATABASE_URL", url)
                .output(),
        )
        .await
        .expect("it gives up")
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{cmd}: {text}");
        assert!(text.contains("127.0.0.1:9"), "{cmd}: {text}");
        assert!(
            !text.contains("s3cret-pw"),
            "{cmd} printed the password: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_turn_is_taken_over_once_its_lease_runs_out() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("open");
    let base = gated(&tony, &gate);
    let (mut a, mut b) = two_hosts(work.path(), &base, &schema, &url).await;
    let id = post_message(&a, TONY, json!({"type": "TASK", "payload": {}}))
        .await
        .id();
    let holder = eventually(Duration::from_secs(20), "the turn to run", || async {
        sql(
            &url,
            &schema,
            &format!("SELECT leased_by FROM turns WHERE message_id = '{id}' AND state = 'running'"),
        )
        .into_iter()
        .next()
    })
    .await;
    // Kill whichever host runs it; the other takes it over once the lease (2 s) has run out.
    let (dead, alive) = if holder.starts_with("host-a/") {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    dead.kill9();
    std::fs::write(&gate, "").unwrap();
    let got = tony.wait_for(1, Duration::from_secs(40)).await;
    assert_eq!(got[0].body["in_reply_to"], id.as_str());
    let v = eventually(Duration::from_secs(20), "the re-run to end", || async {
        let v = view(alive, &id).await;
        (v["turn"]["state"] == "done").then_some(v)
    })
    .await;
    assert_eq!(v["turn"]["attempts"], 2, "{v:#}");
    assert!(alive.log().contains("took over turns"), "{}", alive.log());
    if holder.starts_with("host-a/") {
        b.stop();
    } else {
        a.stop();
    }
}

/// A TCP proxy to the database that a test can cut (every connection closed, new ones refused)
/// and restore, so the database goes away for the inbox without stopping the PostgreSQL the other
/// tests use.
struct Cut {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cut {
    async fn start(target: std::net::SocketAddr) -> Cut {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, l) = (open.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        Cut { addr, open, live }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for t in self.live.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_under_load_gets_503s_loses_nothing_and_recovers() {
    let Some(url) = database() else { return };
    // postgres://user:password@HOST:PORT/db: the proxy stands in for HOST:PORT.
    let (head, rest) = url.split_once('@').expect("a URL with user@host");
    let (hostport, tail) = rest.split_once('/').expect("a URL with a database");
    let target = tokio::net::lookup_host(hostport)
        .await
        .unwrap()
        .next()
        .unwrap();
    let cut = Cut::start(target).await;
    let via_proxy = format!("{head}@{}/{tail}", cut.addr);
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let record = tempfile::tempdir().unwrap();
    let base = Toml::tasks(
        &tony.url(),
        &agent_command(&["--record", path_str(record.path()), "--reply", "STATUS"]),
    );
    let addr = unused_addr();
    let host = host(
        &work.path().join("a"),
        &base,
        &schema,
        addr,
        "host-a",
        addr,
        &via_proxy,
    )
    .await;
    let mut acked = Vec::new();
    let mut refused = 0;
    let send = |n: usize| {
        let host = &host;
        async move { post_message(host, TONY, json!({"type": "TASK", "payload": {"n": n}})).await }
    };
    for n in 0..5 {
        let r = send(n).await;
        assert_eq!(r.status, 202, "{:#}", r.json);
        acked.push(r.id());
    }
    // A reply token of one of them, to try /send with while the database is away.
    let token = read_record(record.path(), &acked[0]).await["environ"]["INBOX_REPLY_TOKEN"]
        .as_str()
        .unwrap()
        .to_owned();
    cut.cut();
    // While it is away: 503 store_unavailable with Retry-After, never an ack.
    let mut n = 5;
    let outage = std::time::Instant::now();
    while refused < 3 {
        assert!(
            outage.elapsed() < Duration::from_secs(40),
            "no 503 while the database was away"
        );
        let r = send(n).await;
        n += 1;
        match r.status {
            202 => acked.push(r.id()),
            503 => {
                assert_eq!(r.code(), "store_unavailable", "{:#}", r.json);
                assert!(r.headers.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("{other}: {:#}", r.json),
        }
    }
    // /send cannot check the token or store the reply: 503 too, so the agent's curl retries.
    let sent = post_send(&host, Some(&token), r#"{"type": "STATUS"}"#).await;
    assert_eq!(
        (sent.status, sent.code()),
        (503, "store_unavailable"),
        "{:#}",
        sent.json
    );
    assert!(sent.headers.contains_key("retry-after"));
    // /readyz says why (a load balancer stops sending): the failed writes marked the store as
    // one that cannot write, else its read finds it away.
    eventually(Duration::from_secs(20), "readyz: 503 with why", || async {
        let r = request("GET", &host.url("/readyz"), &[], "").await;
        (r.status == 503
            && (r.text.contains("the store cannot write")
                || r.text.contains("the store does not answer")))
        .then_some(())
    })
    .await;
    cut.restore();
    eventually(Duration::from_secs(40), "readyz: ready again", || async {
        let r = request("GET", &host.url("/readyz"), &[], "").await;
        (r.status == 200).then_some(())
    })
    .await;
    // It recovers on its own, and every acked message gets its turn.
    let again = eventually(Duration::from_secs(40), "acks again", || async {
        let r = send(1000).await;
        (r.status == 202).then(|| r.id())
    })
    .await;
    acked.push(again);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut states = Vec::new();
        for id in &acked {
            let v = view(&host, id).await;
            states.push((v["turn"]["state"].clone(), v["turn"]["error"].clone()));
        }
        // `failed`: an agent whose own /send got a 503 while the database was away (the test
        // agent does not retry; the reply instructions' curl does). Its end was still recorded.
        if states.iter().all(|(s, _)| s == "done" || s == "failed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every acked message's turn ended: {states:?}\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stored = sql(&url, &schema, "SELECT count(*) FROM messages");
    assert_eq!(
        stored,
        [acked.len().to_string()],
        "acked {} messages",
        acked.len()
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_inbox_is_copied_into_postgres_and_goes_on_there() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let (sqlite_dir, pg_dir) = (work.path().join("sqlite"), work.path().join("pg"));
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    std::fs::create_dir_all(&pg_dir).unwrap();
    let base = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
        .agent_route("held", &["tony"], &["HELD"], &["STATUS"], &["tony"])
        .route("held", "approve", &quoted("inbound"));
    let addr = unused_addr();
    let small = base.clone().listen(addr).build();
    let mut host = BinHost::start(&sqlite_dir, &small, addr, "log").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let r = post_message(&host, TONY, json!({"type": "TASK", "payload": {"n": n}})).await;
        ids.push(r.id());
    }
    let held = post_message(&host, TONY, json!({"type": "HELD", "payload": {}}))
        .await
        .id();
    tony.wait_for(3, Duration::from_secs(30)).await;
    for id in &ids {
        eventually(Duration::from_secs(20), "done", || async {
            (view(&host, id).await["turn"]["state"] == "done").then_some(())
        })
        .await;
    }
    let schema = schema();
    let pg_toml = base.clone().listen(addr).build() + &store_toml(&schema);
    write_by_rename(&pg_dir.join("routes.toml"), &pg_toml);
    let data = sqlite_dir.join("data");
    let migrate = || {
        let (data, config, url) = (data.clone(), pg_dir.join("routes.toml"), url.clone());
        async move {
            let out = tokio::process::Command::new(bin())
                .args(["store", "migrate", "--from"])
                .arg(&data)
                .arg("--config")
                .arg(&config)
                .env("INBOX_DATABASE_URL", &url)
                .output()
                .await
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        }
    };
    // Not while the inbox runs on it.
    let (ok, text) = migrate().await;
    assert!(!ok && text.contains("stop it first"), "{text}");
    host.sigterm();
    let (ok, text) = migrate().await;
    assert!(ok, "{text}");
    assert!(text.contains("messages  4"), "{text}");
    assert!(
        !text.contains("inbox-test"),
        "the password was printed: {text}"
    );
    // Twice is refused: the database is no longer empty.
    let (ok, text) = migrate().await;
    assert!(!ok && text.contains("already holds messages"), "{text}");

    // The same inbox, on PostgreSQL: its history is there, and what waited still waits.
    let host = BinHost::start_with_env(
        &pg_dir,
        &pg_toml,
        addr,
        "log",
        &[("INBOX_DATABASE_URL", &url)],
    )
    .await;
    for id in &ids {
        let v = view(&host, id).await;
        assert_eq!(v["turn"]["state"], "done", "{v:#}");
        assert_eq!(
            v["replies"][0]["deliveries"][0]["state"], "delivered",
            "{v:#}"
        );
    }
    assert_eq!(
        view(&host, &held).await["turn"]["state"],
        "awaiting_approval"
    );
    let r = admin_post(
        &host,
        &format!("/admin/approvals/{held}/approve"),
        &json!({"by": "ops"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.json);
    tony.wait_for(4, Duration::from_secs(30)).await;
    // New messages continue the numbering after the copied ones.
    let r = post_message(&host, TONY, json!({"type": "TASK", "payload": {}})).await;
    assert_eq!(r.status, 202, "{:#}", r.json);
    let list = admin_get(&host, "/messages?limit=1").await;
    assert_eq!(list.json["messages"][0]["id"], r.id().as_str());
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_paused_past_its_lease_records_nothing_stale_when_it_wakes() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("open");
    let base = gated(&tony, &gate);
    let (a, b) = two_hosts(work.path(), &base, &schema, &url).await;
    let id = post_message(&a, TONY, json!({"type": "TASK", "payload": {}}))
        .await
        .id();
    let holder_of = |attempt: u32| {
        let (url, schema, id) = (url.clone(), schema.clone(), id.clone());
        move || {
            let (url, schema, id) = (url.clone(), schema.clone(), id.clone());
            async move {
                sql(
                    &url,
                    &schema,
                    &format!(
                        "SELECT leased_by FROM turns WHERE message_id = '{id}'
                           AND state = 'running' AND attempts = {attempt}"
                    ),
                )
                .into_iter()
                .next()
            }
        }
    };
    let first = eventually(Duration::from_secs(20), "the turn to run", holder_of(1)).await;
    let (paused, other) = if first.starts_with("host-a/") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    paused.signal("STOP");
    // The other host takes the turn over once the lease (2 s) has run out.
    let second = eventually(Duration::from_secs(30), "the take-over", holder_of(2)).await;
    assert!(!second.starts_with(&first[..7]), "{first} {second}");
    // The paused host wakes: its renewal finds the lease gone, it stops its agent, and its end
    // is refused.
    paused.signal("CONT");
    eventually(
        Duration::from_secs(20),
        "the woken host to give up",
        || async { paused.log().contains("lost the turn's lease").then_some(()) },
    )
    .await;
    std::fs::write(&gate, "").unwrap();
    let v = eventually(Duration::from_secs(30), "the take-over to end", || async {
        let v = view(other, &id).await;
        (v["turn"]["state"] == "done").then_some(v)
    })
    .await;
    assert_eq!(v["turn"]["attempts"], 2, "{v:#}");
    let got = received_before_marker(other, "tony", &tony).await;
    assert_eq!(got.len(), 1, "the stopped agent replied too: {got:#?}");
    assert_eq!(view(other, &id).await["turn"]["attempts"], 2);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_require_and_verify_full() {
    let Some(url) = database() else { return };
    // Debian's PostgreSQL serves TLS with its snakeoil certificate, made for "localhost".
    assert_eq!(
        sql(&url, "public", "SHOW ssl"),
        ["on"],
        "the test database serves no TLS"
    );
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let (head, rest) = url.split_once('@').unwrap();
    let (hostport, tail) = rest.split_once('/').unwrap();
    let port = hostport.rsplit_once(':').map_or("5432", |(_, p)| p);
    let by_name = format!("{head}@localhost:{port}/{tail}");
    let tony = PeerServer::start().await;
    let work = tempfile::tempdir().unwrap();
    for (name, extra, db_url) in [
        ("require", "sslmode = \"require\"\n".to_owned(), url.clone()),
        (
            "verify-full",
            format!("sslmode = \"verify-full\"\nca_file = \"{snakeoil}\"\n"),
            by_name.clone(),
        ),
    ] {
        let schema = schema();
        let addr = unused_addr();
        let toml = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
            .listen(addr)
            .server("host_id", &quoted(name))
            .build()
            + &store_toml(&schema)
            + &extra;
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let host =
            BinHost::start_with_env(&dir, &toml, addr, "log", &[("INBOX_DATABASE_URL", &db_url)])
                .await;
        let r = post_message(&host, TONY, json!({"type": "TASK", "payload": {}})).await;
        assert_eq!(r.status, 202, "{name}: {:#}", r.json);
        // Its connections are encrypted.
        let encrypted = sql(
            &url,
            "public",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'agent-inbox' AND s.ssl
               AND a.datname = current_database()
               AND a.backend_start > now() - interval '60 seconds'",
        );
        assert_ne!(encrypted, ["0"], "{name}: no encrypted connection");
        host.stop();
    }
    // verify-full refuses a certificate that does not name the host it reached (127.0.0.1).
    let addr = unused_addr();
    let toml = Toml::new().listen(addr).build()
        + &store_toml(&schema())
        + &format!("sslmode = \"verify-full\"\nca_file = \"{snakeoil}\"\n");
    let path = work.path().join("routes.toml");
    write_by_rename(&path, &toml);
    let out = tokio::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .env("INBOX_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_delivery_leaves_it_to_another_with_the_same_key() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    // The first attempt hangs long enough for its host to be killed during it.
    tony.script([Answer::from(200).after(Duration::from_secs(30))]);
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let base = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]));
    let (mut a, mut b) = two_hosts(work.path(), &base, &schema, &url).await;
    post_message(&a, TONY, json!({"type": "TASK", "payload": {}})).await;
    let holder = eventually(Duration::from_secs(30), "an attempt in flight", || async {
        sql(
            &url,
            &schema,
            "SELECT leased_by FROM deliveries WHERE leased_by IS NOT NULL",
        )
        .into_iter()
        .next()
    })
    .await;
    // The turn has ended (its reply is what is in flight): killed mid-turn instead, it would end
    // interrupted after its reply, with a TURN_FAILED notice, a second delivery.
    eventually(Duration::from_secs(30), "the turn to end", || async {
        let s = sql(&url, &schema, "SELECT state FROM turns");
        (s == ["done"]).then_some(())
    })
    .await;
    let alive = if holder.starts_with("host-a/") {
        a.kill9();
        &b
    } else {
        b.kill9();
        &a
    };
    // Once the lease (2 s) has run out, the other host attempts it, with the same key.
    let attempts = eventually(Duration::from_secs(30), "a second attempt", || async {
        let all = tony.attempts();
        (all.len() >= 2).then_some(all)
    })
    .await;
    let keys: std::collections::HashSet<&str> = attempts
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 1, "{attempts:#?}");
    let state = eventually(Duration::from_secs(30), "delivered", || async {
        let s = sql(&url, &schema, "SELECT state FROM deliveries");
        (s == ["delivered"]).then_some(s)
    })
    .await;
    assert_eq!(state, ["delivered"]);
    let _ = alive;
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_a2a_cancel_on_one_host_stops_the_agent_on_another_at_once() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("never");
    let base = Toml::tasks(
        &tony.url(),
        &agent_command(&["--wait-for", path_str(&gate), "--reply", "STATUS"]),
    )
    .peer_key("tony", "a2a_token", &quoted("tony-a2a"))
    .route("tasks", "a2a", r#"{ type = "TASK" }"#);
    // Renewals every 10 s: a cancel that arrives within 3 s came through NOTIFY.
    let store = |addr: std::net::SocketAddr, id: &str| {
        base.clone()
            .listen(addr)
            .server("host_id", &quoted(id))
            .build()
            + "[a2a]\n"
            + &format!(
                "[store]\nkind = \"postgres\"\nurl_env = \"INBOX_DATABASE_URL\"\nschema = \"{schema}\"\n\
                 pool_size = 4\nlease_secs = 30\nrenew_secs = 10\n"
            )
    };
    let (a_addr, b_addr) = (unused_addr(), unused_addr());
    let mut hosts = Vec::new();
    for (addr, id) in [(a_addr, "host-a"), (b_addr, "host-b")] {
        let dir = work.path().join(id);
        std::fs::create_dir_all(&dir).unwrap();
        hosts.push(
            BinHost::start_with_env(
                &dir,
                &store(addr, id),
                addr,
                "log",
                &[("INBOX_DATABASE_URL", &url)],
            )
            .await,
        );
    }
    let call = |host: &BinHost, method: &str, params: serde_json::Value| {
        let url = host.url("/a2a");
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", "Bearer tony-a2a"),
                    ("content-type", "application/json"),
                    ("a2a-version", "1.0"),
                ],
                body.to_string(),
            )
            .await
        }
    };
    let sent = call(
        &hosts[0],
        "SendMessage",
        json!({"message": {"messageId": "x-1", "role": "ROLE_USER", "parts": [{"text": "wait"}]},
               "configuration": {"returnImmediately": true}}),
    )
    .await;
    let task = sent.json["result"]["task"]["id"]
        .as_str()
        .expect("a task")
        .to_owned();
    let holder = eventually(Duration::from_secs(20), "the turn to run", || async {
        sql(
            &url,
            &schema,
            "SELECT leased_by FROM turns WHERE state = 'running'",
        )
        .into_iter()
        .next()
    })
    .await;
    let (running, other) = if holder.starts_with("host-a/") {
        (&hosts[0], &hosts[1])
    } else {
        (&hosts[1], &hosts[0])
    };
    let t0 = std::time::Instant::now();
    let r = call(other, "CancelTask", json!({"id": task})).await;
    assert_eq!(
        r.json["result"]["status"]["state"], "TASK_STATE_CANCELED",
        "{:#}",
        r.json
    );
    eventually(
        Duration::from_secs(3),
        "the running host to stop its agent",
        || async { running.log().contains("turn cancelled").then_some(()) },
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(tony.received().is_empty(), "the cancelled agent replied");
}

/// Issue 28, hole 10, on a cluster: a session signed out on one host answers 401 on the other at
/// once (the sign-out is announced), and on a host that starts later (it is in the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_sign_out_on_one_host_holds_on_every_host() {
    let Some(url) = database() else { return };
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let base = Toml::tasks("http://127.0.0.1:9/message", &agent_command(&[]));
    let (a, b) = two_hosts(work.path(), &base, &schema, &url).await;
    let (gone, kept) = (console_sign_in(&a).await, console_sign_in(&a).await);
    let status_on = |host: &BinHost, cookie: &str| {
        let (url, cookie) = (host.url("/status"), cookie.to_owned());
        async move {
            request("GET", &url, &[("cookie", &cookie)], "")
                .await
                .status
        }
    };
    assert_eq!(
        status_on(&b, &gone).await,
        200,
        "one admin secret, one session on every host"
    );
    let out = request("POST", &a.url("/console/logout"), &[("cookie", &gone)], "").await;
    assert_eq!(out.status, 303);
    assert_eq!(status_on(&a, &gone).await, 401);
    eventually(
        Duration::from_secs(10),
        "host b to hear of the sign-out",
        || async { (status_on(&b, &gone).await == 401).then_some(()) },
    )
    .await;
    assert_eq!(status_on(&b, &kept).await, 200);
    // A host that starts after the sign-out reads it from the store.
    let c_addr = unused_addr();
    let c = host_at(work.path(), &base, &schema, c_addr, "host-c", c_addr, &url).await;
    assert_eq!(status_on(&c, &gone).await, 401);
    assert_eq!(status_on(&c, &kept).await, 200);
    for h in [a, b, c] {
        h.stop();
    }
}

/// README (cluster): `/status` (and `agent-inbox status`) lists the hosts, and one whose config
/// hash is not this host's says `config_differs: true`; a database a newer binary migrated is
/// refused at start, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_another_config_is_flagged_and_a_newer_schema_is_refused() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let base = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]));
    let other = base.clone().mailbox("extra", &["tony"], &["EXTRA"]);
    let (a_addr, b_addr) = (unused_addr(), unused_addr());
    let a = host_at(work.path(), &base, &schema, a_addr, "host-a", a_addr, &url).await;
    let b = host_at(work.path(), &other, &schema, b_addr, "host-b", b_addr, &url).await;
    let hosts = eventually(Duration::from_secs(20), "both hosts in /status", || async {
        let s = status(&a).await;
        let hosts = s["cluster"]["hosts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (hosts.len() == 2).then_some(hosts)
    })
    .await;
    let differs = |id: &str| {
        hosts
            .iter()
            .find(|h| h["host_id"] == id)
            .map(|h| h["config_differs"].clone())
    };
    assert_eq!(differs("host-a"), Some(Value::Bool(false)), "{hosts:#?}");
    assert_eq!(differs("host-b"), Some(Value::Bool(true)), "{hosts:#?}");
    // The command line shows the same view.
    let out = tokio::process::Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(work.path().join("host-a").join("routes.toml"))
        .env("INBOX_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("host-b") && text.contains("config_differs"),
        "{text}"
    );
    a.stop();
    b.stop();

    // A newer binary migrated the database: this one refuses to start, and says why.
    sql(&url, &schema, "UPDATE inbox_schema SET version = 999");
    let out = tokio::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(work.path().join("host-a").join("routes.toml"))
        .env("INBOX_DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("999"), "{err}");
}

/// README (wake-ups): a turn queued on one host `NOTIFY`s the others, so an idle host starts it
/// at once instead of at its next 5 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_queued_on_a_busy_host_starts_on_an_idle_one_at_once() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("open");
    // host-a runs one turn at a time, and its agent waits for the gate; host-b's answers at once.
    let busy = gated(&tony, &gate).agent("max_concurrent", "1");
    let idle = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]));
    let (a_addr, b_addr) = (unused_addr(), unused_addr());
    let a = host_at(work.path(), &busy, &schema, a_addr, "host-a", a_addr, &url).await;
    let first = post_message(&a, TONY, json!({"type": "TASK"})).await.id();
    eventually(
        Duration::from_secs(20),
        "host-a running the first",
        || async { (view(&a, &first).await["turn"]["state"] == "running").then_some(()) },
    )
    .await;
    let b = host_at(work.path(), &idle, &schema, b_addr, "host-b", b_addr, &url).await;
    // Three in turn, each acked by the busy host: each starts on host-b well before a poll.
    // (One could come by a poll by chance; three in a row would not.)
    let mut delays = Vec::new();
    for _ in 0..3 {
        let id = post_message(&a, TONY, json!({"type": "TASK"})).await.id();
        let v = wait_turn_state(&b, &id, "done").await;
        let started = v["turn"]["started_at"].as_i64().unwrap();
        let received = v["message"]["received_at"].as_i64().unwrap();
        delays.push(started - received);
    }
    assert!(
        delays.iter().all(|d| *d < 1_500),
        "turn start after the ack, ms: {delays:?} (the poll is every 5 s)"
    );
    std::fs::write(&gate, "").unwrap();
    wait_turn_state(&a, &first, "done").await;
    a.stop();
    b.stop();
}

/// README (cluster): migrations run under an advisory lock, so hosts may start together on a
/// new database; and retention runs on one host at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_started_together_on_a_new_schema_all_come_up() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let base = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]));
    let addrs = [unused_addr(), unused_addr(), unused_addr()];
    let (a, b, c) = tokio::join!(
        host_at(
            work.path(),
            &base,
            &schema,
            addrs[0],
            "host-a",
            addrs[0],
            &url
        ),
        host_at(
            work.path(),
            &base,
            &schema,
            addrs[1],
            "host-b",
            addrs[1],
            &url
        ),
        host_at(
            work.path(),
            &base,
            &schema,
            addrs[2],
            "host-c",
            addrs[2],
            &url
        ),
    );
    // One schema, migrated once: every host serves, and the version row is single.
    assert_eq!(
        sql(&url, &schema, "SELECT count(*) FROM inbox_schema"),
        ["1"]
    );
    for host in [&a, &b, &c] {
        let r = post_message(host, TONY, json!({"type": "TASK"})).await;
        assert_eq!(r.status, 202, "{:#}", r.json);
    }
    // Each host pruned at start, one at a time: none failed for the lock.
    for host in [&a, &b, &c] {
        assert!(!host.log().contains("pruning failed"), "{}", host.log());
    }
    a.stop();
    b.stop();
    c.stop();
}

/// README (cluster): `max_queued` counts for the whole cluster, in each ack's transaction, so the
/// queue overshoots by at most the acks in flight across the cluster (each host's `pool_size`);
/// past it, `503 queue_full`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_holds_across_hosts_within_the_acks_in_flight() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("open");
    // One agent at a time per host, each waiting for the gate: the rest stay queued.
    let base = gated(&tony, &gate)
        .agent("max_concurrent", "1")
        .agent("max_queued", "5");
    let (a, b) = two_hosts(work.path(), &base, &schema, &url).await;
    let mut sends = Vec::new();
    for n in 0..40 {
        let target = if n % 2 == 0 {
            a.url("/message")
        } else {
            b.url("/message")
        };
        sends.push(tokio::spawn(async move {
            let body = json!({"type": "TASK", "payload": {"n": n}}).to_string();
            let headers = [
                ("x-shared-secret", TONY),
                ("content-type", "application/json"),
            ];
            let r = request("POST", &target, &headers, body).await;
            (r.status, r.code().to_owned())
        }));
    }
    let mut acked = 0;
    for s in sends {
        match s.await.unwrap() {
            (202, _) => acked += 1,
            (503, code) => assert_eq!(code, "queue_full"),
            other => panic!("{other:?}"),
        }
    }
    // 5 queued, 2 running (one per host), plus at most the acks in flight: pool_size 4 each.
    assert!(acked >= 5, "{acked} acked");
    assert!(
        acked <= 5 + 2 + 8,
        "{acked} acked: past the overshoot bound"
    );
    std::fs::write(&gate, "").unwrap();
    a.stop();
    b.stop();
}
