//! Several hosts, one queue: inbox processes sharing one PostgreSQL (`[store] kind =
//! "postgres"`), each test in a schema of its own. They need `INBOX_TEST_DATABASE_URL` (`.ci/run`
//! starts PostgreSQL and sets it); without it they say so and pass, except under `CI=true`, where
//! they fail.

use std::time::Duration;

use agent_inbox_tests::*;
use serde_json::json;

/// The test database's URL, or `None` (with a note on stderr) outside CI when there is none.
fn database() -> Option<String> {
    match std::env::var("INBOX_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but INBOX_TEST_DATABASE_URL is not set: the cluster tests cannot run")
        }
        Err(_) => {
            eprintln!("INBOX_TEST_DATABASE_URL is not set: this PostgreSQL test did not run");
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
async fn two_hosts_share_one_queue_and_an_agent_replies_through_either() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let base = Toml::tasks(&tony.url(), &agent_command(&["--reply", "STATUS"]))
        .agent("max_concurrent", "2");
    let (a_addr, b_addr) = (unused_addr(), unused_addr());
    // Every agent replies to host b, wherever its turn ran (as through a load balancer).
    let a = host(
        &work.path().join("a"),
        &base,
        &schema,
        a_addr,
        "host-a",
        b_addr,
        &url,
    )
    .await;
    let b = host(
        &work.path().join("b"),
        &base,
        &schema,
        b_addr,
        "host-b",
        b_addr,
        &url,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..16 {
        let body = json!({"type": "TASK", "payload": {"n": i}});
        let r = if i % 2 == 0 {
            post_message(&a, TONY, body).await
        } else {
            post_message(&b, TONY, body).await
        };
        assert_eq!(r.status, 202, "{:#}", r.json);
        ids.push(r.id());
    }
    // Every acked message got its turn, and every reply reached tony.
    let got = tony.wait_for(16, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 16);
    let answered: std::collections::HashSet<String> = got
        .iter()
        .map(|r| r.body["in_reply_to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        answered.len(),
        16,
        "a message was answered twice or not at all"
    );
    // Reads work from either host.
    for id in &ids {
        let v = view(&a, id).await;
        assert_eq!(v["turn"]["state"], "done", "{v:#}");
        assert_eq!(v["turn"]["attempts"], 1, "{v:#}");
    }
    // Both hosts ran turns (the queue is shared), and the replies all went through b.
    let ran_a = a.log().matches("turn ended").count();
    let ran_b = b.log().matches("turn ended").count();
    assert_eq!(ran_a + ran_b, 16, "a: {ran_a}, b: {ran_b}");
    assert!(ran_a > 0 && ran_b > 0, "a: {ran_a}, b: {ran_b}");
    assert_eq!(b.log().matches("reply queued").count(), 16);
    assert_eq!(a.log().matches("reply queued").count(), 0);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_turn_is_taken_over_once_its_lease_runs_out() {
    let Some(url) = database() else { return };
    let tony = PeerServer::start().await;
    let schema = schema();
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("open");
    let base = Toml::tasks(
        &tony.url(),
        &agent_command(&["--wait-for", path_str(&gate), "--reply", "STATUS"]),
    );
    let (a_addr, b_addr) = (unused_addr(), unused_addr());
    let mut a = host(
        &work.path().join("a"),
        &base,
        &schema,
        a_addr,
        "host-a",
        a_addr,
        &url,
    )
    .await;
    let mut b = host(
        &work.path().join("b"),
        &base,
        &schema,
        b_addr,
        "host-b",
        b_addr,
        &url,
    )
    .await;
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
