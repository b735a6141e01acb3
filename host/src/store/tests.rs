//! Tests of the store interface, run against every backend: a new backend is a new entry in
//! [`backends`], run through the same tests.

use super::*;
use crate::model::{DeliveryState, TurnState, now_ms};
use crate::token;

/// The variable naming the PostgreSQL the store tests use (`.ci/run` sets it).
pub(crate) const TEST_DATABASE_URL: &str = "INBOX_TEST_DATABASE_URL";

/// A fresh store of each backend with the settings that open it again: SQLite in its own temp
/// dir (kept alive beside it), and PostgreSQL in a schema of its own when `INBOX_TEST_DATABASE_URL`
/// names a database. Under `CI=true` a missing database fails the test instead of skipping it.
async fn backends() -> Vec<(&'static str, Store, (tempfile::TempDir, Settings))> {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings::Sqlite {
        data_dir: dir.path().to_owned(),
        synchronous: Synchronous::Full,
        lock_wait: Duration::from_secs(5),
    };
    let sqlite = Store::open(&settings).await.expect("open sqlite");
    let mut all = vec![("sqlite", sqlite, (dir, settings))];
    match std::env::var(TEST_DATABASE_URL) {
        Ok(url) => {
            let settings = Settings::Postgres(PgSettings {
                url,
                pool_size: 4,
                tls: PgTls::Disable,
                schema: Some(format!("t_{}", crate::model::new_id().replace('-', ""))),
                owner: format!("test-host/{}", crate::model::new_id()),
                lease: Duration::from_secs(30),
            });
            let pg = Store::open(&settings).await.expect("open postgres");
            all.push((
                "postgres",
                pg,
                (tempfile::tempdir().expect("tempdir"), settings),
            ));
        }
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI=true but {TEST_DATABASE_URL} is not set: the PostgreSQL store tests cannot run"
            )
        }
        // Said on stdout, where a test's output is shown: the PostgreSQL half did not run.
        Err(_) => println!("SKIPPED: {TEST_DATABASE_URL} is not set: PostgreSQL was not tested"),
    }
    all
}

/// A TASK from tony on route tasks, its own thread.
pub(in crate::store) fn message(id: &str) -> Message {
    Message {
        id: id.into(),
        sender: "tony".into(),
        route: "tasks".into(),
        msg_type: "TASK".into(),
        payload: "{}".into(),
        thread_id: id.into(),
        in_reply_to: None,
        hops: 0,
        sender_ref: None,
        received_at: now_ms(),
        mailbox: false,
    }
}

fn outbound(id: &str, answers: &str) -> Outbound {
    Outbound {
        id: id.into(),
        in_reply_to: Some(answers.into()),
        route: Some("tasks".into()),
        msg_type: "BREAKDOWN".into(),
        payload: "{}".into(),
        thread_id: answers.into(),
        hops: 1,
        created_at: now_ms(),
        agent: None,
    }
}

const QUEUE: Option<NewTurn> = Some(NewTurn {
    max_queued: 100,
    hold: None,
});

fn claim(route: &str) -> (String, TurnClaim) {
    let (tok, hash) = token::mint();
    (
        tok,
        TurnClaim {
            route: route.into(),
            token_hash: hash,
            token_expires_at: now_ms() + 60_000,
            terms: terms(),
        },
    )
}

fn terms() -> crate::model::TurnTerms {
    crate::model::TurnTerms {
        reply_types: vec!["DONE".into(), "STATUS".into()],
        reply_to: vec!["tony".into()],
        plugin: Some("ab12".into()),
        limits: crate::model::ReplyLimits {
            per_turn: 5,
            per_minute: 3,
        },
        approve_outbound: None,
        agent: Some("planner".into()),
    }
}

fn done() -> TurnEnd {
    TurnEnd {
        state: TurnState::Done,
        exit_code: Some(0),
        signal: None,
        error: None,
        duration_ms: 5,
        stdout_tail: "ok".into(),
        stderr_tail: String::new(),
    }
}

#[tokio::test]
async fn turns_are_claimed_oldest_first_once_and_fenced() {
    for (name, store, _dir) in backends().await {
        for id in ["m1", "m2", "m3"] {
            let inserted = store.insert_message(message(id), QUEUE, None, None).await;
            assert_eq!(inserted.expect(name), Inserted::New, "{name}");
        }
        assert_eq!(store.queue_depth(), 3, "{name}");
        assert_eq!(store.queued_routes().await.expect(name), ["tasks"]);
        assert_eq!(store.claim_turn(claim("other").1).await.expect(name), None);

        let (tok, c) = claim("tasks");
        let first = store.claim_turn(c).await.expect(name).expect("a turn");
        assert_eq!(first.message.id, "m1", "{name}: oldest first");
        assert_eq!(first.lease.generation, 1);
        let second = store.claim_turn(claim("tasks").1).await.expect(name);
        assert_eq!(second.map(|c| c.message.id), Some("m2".into()), "{name}");
        assert_eq!(store.queue_depth(), 1, "{name}");

        // The token works while the turn runs, then until its new expiry.
        let grant = store.token(token::hash(&tok)).await.expect(name);
        let grant = grant.expect("grant");
        assert_eq!((grant.message_id.as_str(), grant.expires_at), ("m1", None));
        assert!(
            store
                .renew_lease(&first.lease, Duration::from_secs(30))
                .await
                .expect(name)
        );
        let stale = Lease {
            generation: 0,
            ..first.lease.clone()
        };
        assert!(
            !store.end_turn(&stale, done(), 1).await.expect(name),
            "{name}: fenced"
        );
        assert!(store.end_turn(&first.lease, done(), 42).await.expect(name));
        assert!(
            !store.end_turn(&first.lease, done(), 42).await.expect(name),
            "{name}: a turn ends once"
        );
        let grant = store
            .token(token::hash(&tok))
            .await
            .expect(name)
            .expect("grant");
        assert_eq!(grant.expires_at, Some(42));
        // Found by its message too (a local agent answers by its own credential).
        let by_message = store.latest_grant("m1").await.expect(name).expect("grant");
        assert_eq!(
            (
                by_message.message_id,
                by_message.attempt,
                by_message.expires_at
            ),
            (grant.message_id, grant.attempt, grant.expires_at),
            "{name}"
        );
        assert!(
            store.latest_grant("m3").await.expect(name).is_none(),
            "{name}: not claimed"
        );
        let turn = store.turn("m1").await.expect(name).expect("turn");
        assert_eq!((turn.state, turn.attempts), (TurnState::Done, 1), "{name}");
    }
}

#[tokio::test]
async fn a_full_queue_refuses_and_a_duplicate_writes_nothing() {
    for (name, store, _dir) in backends().await {
        let small = Some(NewTurn {
            max_queued: 1,
            hold: None,
        });
        let key = |since| {
            Some(Dedup {
                key: "k1".into(),
                since,
            })
        };
        assert_eq!(
            store
                .insert_message(message("a"), small.clone(), key(0), None)
                .await
                .expect(name),
            Inserted::New
        );
        assert_eq!(
            store
                .insert_message(message("b"), small.clone(), None, None)
                .await
                .expect(name),
            Inserted::QueueFull { max_queued: 1 },
            "{name}"
        );
        assert_eq!(
            store
                .insert_message(message("c"), small, key(0), None)
                .await
                .expect(name),
            Inserted::Duplicate("a".into()),
            "{name}: a repeat is answered even when the queue is full"
        );
        for id in ["b", "c"] {
            assert!(store.message(id).await.expect(name).is_none(), "{name}");
        }
        // Outside the window the key no longer counts; mailbox messages take no queue slot.
        assert_eq!(
            store
                .insert_message(message("d"), None, key(now_ms() + 60_000), None)
                .await
                .expect(name),
            Inserted::New
        );
        // A duplicate id is refused alone; the next write still works.
        assert!(
            store
                .insert_message(message("d"), None, None, None)
                .await
                .is_err()
        );
        assert_eq!(
            store
                .insert_message(message("e"), None, None, None)
                .await
                .expect(name),
            Inserted::New
        );
        assert_eq!(store.queue_depth(), 1, "{name}");
    }
}

#[tokio::test]
async fn interrupted_turns_are_recovered_and_requeued_in_their_place() {
    for (name, old, (_dir, settings)) in backends().await {
        for id in ["a", "b"] {
            old.insert_message(message(id), QUEUE, None, None)
                .await
                .expect(name);
        }
        let a = old
            .claim_turn(claim("tasks").1)
            .await
            .expect(name)
            .expect("a");
        // The host restarts: the same file, or a new incarnation of the same host id.
        let store = match &settings {
            Settings::Postgres(p) => Store::open(&Settings::Postgres(PgSettings {
                owner: format!("test-host/{}", crate::model::new_id()),
                ..p.clone()
            }))
            .await
            .expect(name),
            Settings::Sqlite { .. } => old.clone(),
        };
        let rec = store.recover_interrupted().await.expect(name);
        assert_eq!(
            rec,
            vec![Interrupted {
                message_id: "a".into(),
                route: "tasks".into(),
                attempts: 1,
                replied: false,
            }],
            "{name}"
        );
        let turn = store.turn("a").await.expect(name).expect("turn");
        assert_eq!(turn.state, TurnState::Interrupted);
        assert_eq!(turn.error.map(|e| e.code), Some("interrupted".into()));
        assert!(
            !old.end_turn(&a.lease, done(), 0).await.expect(name),
            "{name}"
        );
        store.requeue("a").await.expect(name);
        // "a" arrived first, so it runs before "b" again; its next lease is a new generation.
        let again = store
            .claim_turn(claim("tasks").1)
            .await
            .expect(name)
            .expect("a");
        assert_eq!(
            (again.message.id.as_str(), again.lease.generation),
            ("a", 2)
        );
        store
            .fail_interrupted("b", TurnError::new("interrupted", "test"))
            .await
            .expect(name);
    }
}

/// A turn is answered once: an attempt that replied is not queued again, and the token of one
/// that is (or of an attempt a newer one replaced) commits nothing. On PostgreSQL the second
/// handle is another host that took the turn over after the first one's lease ran out: the
/// first host cannot deliver its attempt's replies.
#[tokio::test]
async fn a_superseded_attempt_cannot_reply_and_one_that_replied_is_not_run_again() {
    for (name, old, (_dir, settings)) in backends().await {
        for id in ["a", "b"] {
            old.insert_message(message(id), QUEUE, None, None)
                .await
                .expect(name);
        }
        let (ta, ca) = claim("tasks");
        let a = old.claim_turn(ca).await.expect(name).expect("a");
        let (tb, cb) = claim("tasks");
        let b = old.claim_turn(cb).await.expect(name).expect("b");
        let grant = old
            .token(token::hash(&ta))
            .await
            .expect(name)
            .expect("a's token");
        assert!(grant.current, "{name}");
        assert_eq!(grant.terms, Some(terms()), "the terms come back: {name}");
        // a's agent replies; b's does not before the stop.
        assert!(
            old.insert_reply(
                outbound("ra", "a"),
                vec!["tony".into()],
                None,
                a.lease.clone()
            )
            .await
            .expect(name),
            "{name}"
        );
        let takeover = match &settings {
            Settings::Postgres(p) => Store::open(&Settings::Postgres(PgSettings {
                owner: format!("test-host/{}", crate::model::new_id()),
                lease: Duration::from_secs(1),
                ..p.clone()
            }))
            .await
            .expect(name),
            Settings::Sqlite { .. } => old.clone(),
        };
        let mut rec = takeover.recover_interrupted().await.expect(name);
        rec.sort_by(|x, y| x.message_id.cmp(&y.message_id));
        let replied: Vec<(&str, bool)> = rec
            .iter()
            .map(|t| (t.message_id.as_str(), t.replied))
            .collect();
        assert_eq!(replied, [("a", true), ("b", false)], "{name}");
        assert_eq!(
            takeover.requeue("a").await.expect(name),
            Requeued::Replied,
            "{name}"
        );
        assert_eq!(
            takeover.requeue("b").await.expect(name),
            Requeued::Queued,
            "{name}"
        );
        // b's first attempt is superseded the moment it is queued again, before any new claim.
        let old_b = old.token(token::hash(&tb)).await.expect(name).unwrap();
        assert!(!old_b.current, "{name}");
        assert!(
            !old.insert_reply(
                outbound("rb1", "b"),
                vec!["tony".into()],
                None,
                b.lease.clone()
            )
            .await
            .expect(name),
            "the old host's attempt commits nothing: {name}"
        );
        let (tb2, cb2) = claim("tasks");
        let b2 = takeover
            .claim_turn(cb2)
            .await
            .expect(name)
            .expect("b again");
        assert_eq!(b2.lease.generation, 2, "{name}");
        assert!(
            !old.insert_reply(
                outbound("rb1", "b"),
                vec!["tony".into()],
                None,
                b.lease.clone()
            )
            .await
            .expect(name),
            "{name}"
        );
        assert!(
            takeover
                .token(token::hash(&tb2))
                .await
                .expect(name)
                .unwrap()
                .current,
            "{name}"
        );
        assert!(
            takeover
                .insert_reply(outbound("rb2", "b"), vec!["tony".into()], None, b2.lease)
                .await
                .expect(name),
            "{name}"
        );
        assert!(
            takeover.outbound("rb1").await.expect(name).is_none(),
            "{name}"
        );
        // a, given up after its reply: its token stops working at once.
        takeover
            .fail_interrupted("a", TurnError::new("interrupted", "test"))
            .await
            .expect(name);
        let old_a = takeover.token(token::hash(&ta)).await.expect(name).unwrap();
        assert!(!old_a.current && !old_a.is_valid_at(now_ms() + 1), "{name}");
    }
}

#[tokio::test]
async fn deliveries_are_claimed_once_and_dead_letters_replayed() {
    for (name, store, _dir) in backends().await {
        store
            .insert_message(message("m1"), QUEUE, None, None)
            .await
            .expect(name);
        store
            .insert_outbound(
                outbound("r1", "m1"),
                vec!["tony".into(), "mel".into()],
                None,
            )
            .await
            .expect(name);
        let due = store.claim_deliveries(now_ms(), 10).await.expect(name);
        assert_eq!(due.len(), 2, "{name}");
        assert!(
            store
                .claim_deliveries(now_ms(), 10)
                .await
                .expect(name)
                .is_empty(),
            "{name}: claimed deliveries are not handed out twice"
        );
        let retry = AttemptOutcome::Retry {
            status: Some(500),
            error: "500".into(),
            next_at: now_ms(),
        };
        store.record_attempt("r1", "tony", retry).await.expect(name);
        let again = store.claim_deliveries(now_ms() + 1, 10).await.expect(name);
        assert_eq!(again.len(), 1, "{name}: released by its attempt");
        assert_eq!((again[0].peer.as_str(), again[0].attempts), ("tony", 1));
        let dead = AttemptOutcome::Dead {
            status: Some(410),
            error: "gone".into(),
        };
        store.record_attempt("r1", "tony", dead).await.expect(name);
        store.release_delivery("r1", "mel").await.expect(name);
        store
            .record_attempt("r1", "mel", AttemptOutcome::Delivered { status: 202 })
            .await
            .expect(name);
        let (_, d) = store.outbound("r1").await.expect(name).expect("r1");
        let states: Vec<_> = d
            .iter()
            .map(|d| (d.peer.as_str(), d.state, d.attempts))
            .collect();
        assert_eq!(
            states,
            [
                ("mel", DeliveryState::Delivered, 1),
                ("tony", DeliveryState::Dead, 2)
            ],
            "{name}"
        );
        assert_eq!(store.outbox(true, 10).await.expect(name).len(), 1);
        assert_eq!(store.attempts("r1", "tony").await.expect(name).len(), 2);
        assert_eq!(store.retry_now("r1").await.expect(name), 1);
        assert_eq!(
            store.retry_now("r1").await.expect(name),
            0,
            "nothing dead now"
        );
        assert_eq!(
            store
                .claim_deliveries(now_ms() + 1, 10)
                .await
                .expect(name)
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn pruning_keeps_unfinished_work() {
    for (name, store, _dir) in backends().await {
        for id in ["a", "c"] {
            store
                .insert_message(message(id), QUEUE, None, None)
                .await
                .expect(name);
        }
        store
            .insert_outbound(outbound("r", "a"), vec!["tony".into()], None)
            .await
            .expect(name);
        let later = now_ms() + 1000;
        assert_eq!(store.prune(later, later).await.expect(name), 0, "{name}");
        let a = store
            .claim_turn(claim("tasks").1)
            .await
            .expect(name)
            .expect("a");
        store.end_turn(&a.lease, done(), 0).await.expect(name);
        assert_eq!(
            store.prune(later, 0).await.expect(name),
            0,
            "its reply is pending"
        );
        store.claim_deliveries(now_ms(), 10).await.expect(name);
        store
            .record_attempt("r", "tony", AttemptOutcome::Delivered { status: 200 })
            .await
            .expect(name);
        assert_eq!(store.prune(later, 0).await.expect(name), 1, "{name}");
        assert!(store.message("a").await.expect(name).is_none());
        assert!(store.outbound("r").await.expect(name).is_none());
        assert!(
            store.message("c").await.expect(name).is_some(),
            "queued work is kept"
        );
    }
}

fn held(reason: &str, expires_at: i64) -> Option<NewTurn> {
    Some(NewTurn {
        max_queued: 100,
        hold: Some(Hold {
            reason: reason.into(),
            expires_at,
        }),
    })
}

fn decision(
    id: &str,
    verdict: crate::model::Verdict,
    edited: Option<&str>,
) -> crate::model::Decide {
    crate::model::Decide {
        id: id.into(),
        verdict,
        by: "alice".into(),
        via: "api".into(),
        at: now_ms(),
        reason: Some("because".into()),
        edited: edited.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_held_turn_waits_until_approved_and_a_rejected_one_never_runs() {
    use crate::model::Verdict;
    for (name, store, _dir) in backends().await {
        let far = now_ms() + 3_600_000;
        for id in ["h1", "h2"] {
            store
                .insert_message(message(id), held("route approves", far), None, None)
                .await
                .expect(name);
        }
        let turn = store.turn("h1").await.expect(name).expect("turn");
        assert_eq!(turn.state, TurnState::AwaitingApproval, "{name}");
        // Nothing to claim: waiting is not queued.
        assert!(
            store
                .claim_turn(claim("tasks").1)
                .await
                .expect(name)
                .is_none(),
            "{name}"
        );
        assert_eq!(store.queue_depth(), 0, "{name}");
        let waiting = store.approvals(true, 10).await.expect(name);
        assert_eq!(waiting.len(), 2, "{name}");
        assert_eq!(waiting[0].reason, "route approves", "{name}");

        let Decided::Now(a) = store
            .decide(decision("h1", Verdict::Approved, None))
            .await
            .expect(name)
        else {
            panic!("{name}: not decided");
        };
        let d = a.decision.expect("decision");
        assert_eq!(
            (d.verdict, d.by.as_str()),
            (Verdict::Approved, "alice"),
            "{name}"
        );
        // Approved: it is queued, and a claim takes it.
        let claimed = store
            .claim_turn(claim("tasks").1)
            .await
            .expect(name)
            .expect("claimed");
        assert_eq!(claimed.message.id, "h1", "{name}");
        // A second decision changes nothing.
        assert!(
            matches!(
                store
                    .decide(decision("h1", Verdict::Rejected, None))
                    .await
                    .expect(name),
                Decided::Already(_)
            ),
            "{name}"
        );

        store
            .decide(decision("h2", Verdict::Rejected, None))
            .await
            .expect(name);
        let turn = store.turn("h2").await.expect(name).expect("turn");
        assert_eq!(turn.state, TurnState::Rejected, "{name}");
        assert_eq!(
            turn.error.map(|e| e.to_string()).as_deref(),
            Some("rejected: because"),
            "{name}"
        );
        assert!(
            store
                .claim_turn(claim("tasks").1)
                .await
                .expect(name)
                .is_none(),
            "{name}"
        );
        assert!(
            store.approvals(true, 10).await.expect(name).is_empty(),
            "{name}"
        );
        assert!(
            matches!(
                store
                    .decide(decision("nope", Verdict::Approved, None))
                    .await
                    .expect(name),
                Decided::NotFound
            ),
            "{name}"
        );
    }
}

#[tokio::test]
async fn what_answers_no_message_is_listed_newest_first_by_thread_or_all() {
    for (name, store, _dir) in backends().await {
        store
            .insert_message(message("m1"), QUEUE, None, None)
            .await
            .expect(name);
        // A reply to m1 (listed under m1), an A2A push (a route, no parent: not listed), and
        // three messages a local agent sent: two into m1's thread, one starting a thread of its
        // own, whose id (a UUID, stored as 16 bytes in SQLite) is that thread's.
        let started = |id: &str, thread: &str| Outbound {
            in_reply_to: None,
            route: None,
            thread_id: thread.into(),
            agent: Some("planner".into()),
            ..outbound(id, "m1")
        };
        let s2 = crate::model::new_id();
        let push = Outbound {
            in_reply_to: None,
            msg_type: "A2A_PUSH".into(),
            ..outbound("p1", "m1")
        };
        for o in [
            outbound("r1", "m1"),
            started("s1", "m1"),
            push,
            started(&s2, &s2),
            started("s3", "m1"),
        ] {
            store
                .insert_outbound(o, vec!["tony".into()], None)
                .await
                .expect(name);
        }
        let ids = |v: Vec<Outbound>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
        let sent =
            |thread: Option<&str>, limit| store.unanswering(thread.map(str::to_owned), limit);
        assert_eq!(
            ids(sent(Some("m1"), 10).await.expect(name)),
            ["s3", "s1"],
            "{name}"
        );
        assert_eq!(
            ids(sent(Some("m1"), 1).await.expect(name)),
            ["s3"],
            "{name}"
        );
        assert_eq!(
            ids(sent(Some(&s2), 10).await.expect(name)),
            [s2.as_str()],
            "{name}"
        );
        assert_eq!(
            ids(sent(None, 10).await.expect(name)),
            ["s3", s2.as_str(), "s1"],
            "{name}"
        );
        assert!(
            sent(Some("nothing"), 10).await.expect(name).is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_held_reply_is_not_delivered_until_approved_and_an_edit_keeps_the_original() {
    use crate::model::Verdict;
    for (name, store, _dir) in backends().await {
        store
            .insert_message(message("m1"), QUEUE, None, None)
            .await
            .expect(name);
        let hold = || {
            Some(Hold {
                reason: "outbound".into(),
                expires_at: now_ms() + 60_000,
            })
        };
        let mut o = outbound("r1", "m1");
        o.payload = r#"{"text":"as the agent wrote it"}"#.into();
        store
            .insert_outbound(o, vec!["tony".into()], hold())
            .await
            .expect(name);
        store
            .insert_outbound(outbound("r2", "m1"), vec!["tony".into()], hold())
            .await
            .expect(name);
        let far = now_ms() + 3_600_000;
        assert!(
            store
                .claim_deliveries(far, 10)
                .await
                .expect(name)
                .is_empty(),
            "{name}"
        );
        let (_, d) = store.outbound("r1").await.expect(name).expect("r1");
        assert_eq!(d[0].state, DeliveryState::Held, "{name}");
        assert!(
            store
                .outbound_to_peer("tony", None, 10)
                .await
                .expect(name)
                .is_empty(),
            "{name}: a held reply is shown to its peer"
        );

        store
            .decide(decision(
                "r1",
                Verdict::Approved,
                Some(r#"{"text":"edited"}"#),
            ))
            .await
            .expect(name);
        let due = store.claim_deliveries(far, 10).await.expect(name);
        assert_eq!(due.len(), 1, "{name}");
        assert_eq!(due[0].outbound.payload, r#"{"text":"edited"}"#, "{name}");
        let a = store.approval("r1").await.expect(name).expect("approval");
        assert_eq!(
            a.decision.and_then(|d| d.original_payload).as_deref(),
            Some(r#"{"text":"as the agent wrote it"}"#),
            "{name}"
        );

        store
            .decide(decision("r2", Verdict::Rejected, None))
            .await
            .expect(name);
        let (_, d) = store.outbound("r2").await.expect(name).expect("r2");
        assert_eq!(d[0].state, DeliveryState::Withheld, "{name}");
        assert_eq!(
            d[0].last_error.as_deref(),
            Some("rejected by alice: because"),
            "{name}"
        );
        assert_eq!(
            store.approvals_for("m1").await.expect(name).len(),
            2,
            "{name}"
        );
    }
}

#[tokio::test]
async fn approvals_past_their_deadline_are_found_and_waiting_ones_survive_a_reopen() {
    for (name, store, (_dir, settings)) in backends().await {
        let now = now_ms();
        store
            .insert_message(message("old"), held("x", now - 1), None, None)
            .await
            .expect(name);
        store
            .insert_message(message("new"), held("x", now + 60_000), None, None)
            .await
            .expect(name);
        assert_eq!(
            store.expired_approvals(now, 10).await.expect(name),
            vec!["old".to_owned()],
            "{name}"
        );
        drop(store);
        let store = Store::open(&settings).await.expect("reopen");
        assert_eq!(
            store.approvals(true, 10).await.expect(name).len(),
            2,
            "{name}"
        );
        assert!(
            store.recover_interrupted().await.expect(name).is_empty(),
            "{name}"
        );
        let turn = store.turn("new").await.expect(name).expect("turn");
        assert_eq!(turn.state, TurnState::AwaitingApproval, "{name}");
    }
}

/// Polls `f` every 50 ms until it answers, for up to 10 s (a lease running out on the database's
/// clock: the wait is on the thing itself, not a sleep past it).
async fn until<T, F, Fut>(name: &str, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Another host's store on the same database: a different host id, a short lease.
async fn other_host(settings: &Settings, lease: Duration) -> Option<Store> {
    let Settings::Postgres(p) = settings else {
        return None;
    };
    Some(
        Store::open(&Settings::Postgres(PgSettings {
            owner: format!("other-host/{}", crate::model::new_id()),
            lease,
            ..p.clone()
        }))
        .await
        .expect("open the other host's store"),
    )
}

#[tokio::test]
async fn a_lease_is_one_hosts_until_it_runs_out_then_another_takes_the_turn_over() {
    for (name, store, (_dir, settings)) in backends().await {
        let Some(other) = other_host(&settings, Duration::from_secs(1)).await else {
            continue;
        };
        for id in ["a", "b"] {
            store
                .insert_message(message(id), QUEUE, None, None)
                .await
                .expect(name);
        }
        // Each claim takes a different turn: SKIP LOCKED, then the row is running.
        let mine = other
            .claim_turn(claim("tasks").1)
            .await
            .expect(name)
            .expect("a");
        let theirs = store
            .claim_turn(claim("tasks").1)
            .await
            .expect(name)
            .expect("b");
        assert_eq!(
            (mine.message.id.as_str(), theirs.message.id.as_str()),
            ("a", "b")
        );
        assert!(
            store
                .claim_turn(claim("tasks").1)
                .await
                .expect(name)
                .is_none()
        );
        // A live lease is nobody else's to recover.
        assert!(
            store.recover_interrupted().await.expect(name).is_empty(),
            "{name}"
        );
        assert!(
            other
                .renew_lease(&mine.lease, Duration::from_secs(1))
                .await
                .expect(name)
        );
        // The other host stops renewing (it is paused, or gone): once the lease has run out (on
        // the database's clock), this host takes the turn over, and the stale holder's end is
        // refused.
        let rec = until(name, "the lease to run out", || async {
            let rec = store.recover_interrupted().await.expect(name);
            (!rec.is_empty()).then_some(rec)
        })
        .await;
        assert_eq!(
            rec.iter()
                .map(|r| r.message_id.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        store.requeue("a").await.expect(name);
        let again = store
            .claim_turn(claim("tasks").1)
            .await
            .expect(name)
            .expect("a again");
        assert_eq!(again.lease.generation, 2);
        assert!(
            !other
                .renew_lease(&mine.lease, Duration::from_secs(1))
                .await
                .expect(name)
        );
        assert!(
            !other.end_turn(&mine.lease, done(), 0).await.expect(name),
            "a stale end was recorded"
        );
        assert!(store.end_turn(&again.lease, done(), 0).await.expect(name));
        // A delivery is claimed by one host at a time, until its lease runs out.
        store
            .insert_outbound(outbound("r1", "a"), vec!["tony".into()], None)
            .await
            .expect(name);
        let far = now_ms() + 60_000;
        assert_eq!(other.claim_deliveries(far, 10).await.expect(name).len(), 1);
        assert!(
            store
                .claim_deliveries(far, 10)
                .await
                .expect(name)
                .is_empty()
        );
        let claimed = until(name, "the claim to run out", || async {
            let c = store.claim_deliveries(far, 10).await.expect(name);
            (!c.is_empty()).then_some(c)
        })
        .await;
        assert_eq!(claimed.len(), 1, "{name}");
    }
}

#[tokio::test]
async fn one_idempotency_key_sent_to_two_hosts_at_once_makes_one_message() {
    for (name, store, (_dir, settings)) in backends().await {
        let Some(other) = other_host(&settings, Duration::from_secs(30)).await else {
            continue;
        };
        let key = || {
            Some(Dedup {
                key: "same".into(),
                since: 0,
            })
        };
        let mut both = Vec::new();
        for (i, s) in [store.clone(), other.clone()].into_iter().enumerate() {
            both.push(tokio::spawn(async move {
                s.insert_message(message(&format!("m{i}")), QUEUE, key(), None)
                    .await
            }));
        }
        let mut new = 0;
        for h in both {
            match h.await.expect("join").expect(name) {
                Inserted::New => new += 1,
                Inserted::Duplicate(_) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(new, 1, "{name}");
    }
}

#[tokio::test]
async fn tasks_and_their_push_configs_are_kept_and_pushed_once_per_change() {
    use crate::model::{PushConfig, Task, TaskInput};
    for (name, store, _dir) in backends().await {
        let task = Task {
            id: "t1".into(),
            owner: "tony".into(),
            context_id: "c1".into(),
            route: "tasks".into(),
            created_at: now_ms(),
            rejected: None,
            canceled_at: None,
        };
        let input = TaskInput {
            task_id: "t1".into(),
            message_id: Some("m1".into()),
            client_message_id: "cm1".into(),
            body: "{}".into(),
            at: now_ms(),
        };
        let link = TaskLink {
            new: Some(task.clone()),
            input,
        };
        store
            .insert_message(message("m1"), QUEUE, None, Some(link))
            .await
            .expect(name);
        assert_eq!(
            store.task_of_message("m1").await.expect(name).as_deref(),
            Some("t1")
        );
        let record = store.task("t1").await.expect(name).expect("task");
        assert_eq!(
            (record.task.owner.as_str(), record.inputs.len()),
            ("tony", 1),
            "{name}"
        );
        assert_eq!(record.turns[0].1.state, TurnState::Queued, "{name}");
        let mine = store
            .tasks(TaskFilter {
                owner: Some("tony".into()),
                context_id: None,
                limit: 10,
            })
            .await
            .expect(name);
        assert_eq!(mine.len(), 1, "{name}");
        let config = PushConfig {
            task_id: "t1".into(),
            id: "p1".into(),
            url: "https://example.com/push".into(),
            token: Some("tok".into()),
            auth_scheme: None,
            credentials: None,
            created_at: now_ms(),
        };
        store.put_push_config(config.clone()).await.expect(name);
        assert_eq!(
            store.push_config("t1", "p1").await.expect(name),
            Some(config.clone())
        );
        assert_eq!(store.push_pending(10).await.expect(name), ["t1"], "{name}");
        let push = |key: &str, last: bool| Push {
            outbound: outbound(&format!("push-{key}"), "m1"),
            task_id: "t1".into(),
            config_id: "p1".into(),
            state_key: key.into(),
            last,
        };
        assert!(
            store
                .enqueue_push(push("working", false))
                .await
                .expect(name)
        );
        // The same state again pushes nothing; the final one ends the config's pushes.
        assert!(
            !store
                .enqueue_push(push("working", false))
                .await
                .expect(name)
        );
        assert!(store.enqueue_push(push("done", true)).await.expect(name));
        assert!(
            store.push_configs("t1", true).await.expect(name).is_empty(),
            "{name}"
        );
        assert!(
            store.push_pending(10).await.expect(name).is_empty(),
            "{name}"
        );
        let (_, d) = store
            .outbound("push-working")
            .await
            .expect(name)
            .expect("push");
        assert_eq!(d[0].peer, crate::model::push_target("t1", "p1"), "{name}");
        // Cancelling a task with a queued turn takes it out of the queue.
        let canceled = store
            .cancel_task("t1", now_ms())
            .await
            .expect(name)
            .expect("cancel");
        assert_eq!(
            canceled.turn.map(|(m, _, s)| (m, s)),
            Some(("m1".to_owned(), TurnState::Queued)),
            "{name}"
        );
        assert!(
            store
                .cancel_task("t1", now_ms())
                .await
                .expect(name)
                .is_none(),
            "{name}"
        );
        assert_eq!(
            store.turn("m1").await.expect(name).expect("turn").state,
            TurnState::Canceled
        );
        assert!(
            store
                .claim_turn(claim("tasks").1)
                .await
                .expect(name)
                .is_none(),
            "{name}"
        );
        assert!(store.delete_push_config("t1", "p1").await.expect(name));
        assert!(!store.delete_push_config("t1", "p1").await.expect(name));
        // README: push configs are deleted with their task. Once the pushes are settled, the
        // finished task goes with retention, and its configs with it.
        store
            .put_push_config(PushConfig {
                id: "p2".into(),
                ..config.clone()
            })
            .await
            .expect(name);
        store.claim_deliveries(now_ms(), 10).await.expect(name);
        for key in ["push-working", "push-done"] {
            let (_, d) = store.outbound(key).await.expect(name).expect("push");
            store
                .record_attempt(key, &d[0].peer, AttemptOutcome::Delivered { status: 200 })
                .await
                .expect(name);
        }
        let later = now_ms() + 1000;
        assert!(store.prune(later, 0).await.expect(name) > 0, "{name}");
        assert!(store.task("t1").await.expect(name).is_none(), "{name}");
        assert_eq!(
            store.push_config("t1", "p2").await.expect(name),
            None,
            "{name}"
        );
    }
}

/// A thread's alias is scoped to its peer. Two peers that name the same thread id get
/// two threads; a thread the inbox sends into gains an alias for the receiving peer (the thread's
/// own id, or a fresh one when that peer already means another thread by it), which its
/// deliveries carry; a thread started without a name is its first sender's by its id.
#[tokio::test]
async fn thread_aliases_are_per_peer() {
    for (name, store, _keep) in backends().await {
        let from = |sender: &str, id: &str| Message {
            sender: sender.into(),
            ..message(id)
        };
        let t1 = crate::model::new_id();
        let t2 = crate::model::new_id();
        // tony names "shared" first: a new thread, t1.
        let ins = store
            .insert_message_in_thread(from("tony", &t1), "shared".into(), None, None, None)
            .await
            .expect(name);
        assert_eq!(ins, Inserted::New, "{name}");
        assert_eq!(
            store.thread_of("tony", "shared").await.expect(name),
            Some(t1.clone()),
            "{name}"
        );
        // mel names "shared" too: its own thread, t2.
        store
            .insert_message_in_thread(from("mel", &t2), "shared".into(), None, None, None)
            .await
            .expect(name);
        assert_eq!(
            store.thread_of("mel", "shared").await.expect(name),
            Some(t2.clone()),
            "{name}"
        );
        // tony again with "shared": its thread t1, where the message is stored.
        let again = crate::model::new_id();
        let mut m = from("tony", &again);
        m.thread_id = again.clone();
        store
            .insert_message_in_thread(m, "shared".into(), None, None, None)
            .await
            .expect(name);
        assert_eq!(
            store.message(&again).await.expect(name).unwrap().thread_id,
            t1,
            "{name}: the alias resolves in the insert"
        );
        // mel cannot name tony's thread by the inbox's id either.
        assert_eq!(
            store.thread_of("mel", &t1).await.expect(name),
            None,
            "{name}"
        );
        // A thread started without a name is its sender's by its id, and no one else's.
        let plain = crate::model::new_id();
        store
            .insert_message(from("tony", &plain), None, None, None)
            .await
            .expect(name);
        assert_eq!(
            store.thread_of("tony", &plain).await.expect(name),
            Some(plain.clone()),
            "{name}"
        );
        assert_eq!(
            store.alias_of(&plain, "tony").await.expect(name),
            Some(plain.clone())
        );
        assert_eq!(
            store.thread_of("mel", &plain).await.expect(name),
            None,
            "{name}"
        );
        // A reply in t1 to tony and mel: tony's delivery carries "shared"; mel, who means t2 by
        // "shared" but has no name for t1, gets t1's own id; and then mel may continue t1 by it.
        let r = crate::model::new_id();
        let mut o = outbound(&r, &t1);
        o.thread_id = t1.clone();
        store
            .insert_outbound(o, vec!["tony".into(), "mel".into()], None)
            .await
            .expect(name);
        let due = store.claim_deliveries(now_ms(), 10).await.expect(name);
        let alias = |peer: &str| {
            due.iter()
                .find(|d| d.peer == peer)
                .map(|d| d.thread_alias.clone())
        };
        assert_eq!(alias("tony").as_deref(), Some("shared"), "{name}");
        assert_eq!(alias("mel"), Some(t1.clone()), "{name}");
        assert_eq!(
            store.thread_of("mel", &t1).await.expect(name),
            Some(t1.clone())
        );
        // tony names a thread of its own by mel's thread id (t2), then a reply in t2 goes to
        // tony: tony means another thread by "t2", so t2 gets a fresh name for tony.
        let clash = crate::model::new_id();
        let mut m = from("tony", &clash);
        m.thread_id = clash.clone();
        store
            .insert_message_in_thread(m, t2.clone(), None, None, None)
            .await
            .expect(name);
        let r2 = crate::model::new_id();
        let mut o = outbound(&r2, &t2);
        o.thread_id = t2.clone();
        store
            .insert_outbound(o, vec!["tony".into()], None)
            .await
            .expect(name);
        let named = store.alias_of(&t2, "tony").await.expect(name).unwrap();
        assert_ne!(named, t2, "{name}: tony means its own thread by {t2}");
        assert_eq!(
            store.thread_of("tony", &named).await.expect(name),
            Some(t2.clone())
        );
        assert_eq!(
            store.thread_of("tony", &t2).await.expect(name),
            Some(clash.clone())
        );
    }
}

/// A turn's replies are counted per attempt in the store, within both limits, and a
/// refused one is not counted.
#[tokio::test]
async fn replies_are_counted_per_attempt_within_the_limits() {
    let limits = crate::model::ReplyLimits {
        per_turn: 3,
        per_minute: 2,
    };
    for (name, store, _keep) in backends().await {
        let t0 = now_ms();
        assert_eq!(
            store.count_reply("m1", 1, limits, t0).await.expect(name),
            Ok(())
        );
        assert_eq!(
            store.count_reply("m1", 1, limits, t0).await.expect(name),
            Ok(())
        );
        let refused = store
            .count_reply("m1", 1, limits, t0 + 1_000)
            .await
            .expect(name);
        assert_eq!(refused, Err(59_000), "{name}");
        // Another attempt has its own count.
        assert_eq!(
            store.count_reply("m1", 2, limits, t0).await.expect(name),
            Ok(())
        );
        // A new minute: one more, then the turn's three are spent.
        assert_eq!(
            store
                .count_reply("m1", 1, limits, t0 + 60_000)
                .await
                .expect(name),
            Ok(())
        );
        assert!(
            store
                .count_reply("m1", 1, limits, t0 + 180_000)
                .await
                .expect(name)
                .is_err(),
            "{name}"
        );
    }
}

/// A signed-out console session stays revoked until it would have expired, for every
/// host that reads the store.
#[tokio::test]
async fn signed_out_sessions_are_kept_until_they_expire() {
    for (name, store, _keep) in backends().await {
        let now = now_ms();
        store.revoke_session("a", now + 60_000).await.expect(name);
        store.revoke_session("b", now - 1).await.expect(name);
        store.revoke_session("a", now + 60_000).await.expect(name);
        let live = store.revoked_sessions(now).await.expect(name);
        assert_eq!(live, vec![("a".to_owned(), now + 60_000)], "{name}");
    }
}

/// README (cluster): every connection sets `synchronous_commit = on`, so an ack means the WAL
/// is flushed, even where the role's default says otherwise.
#[tokio::test]
async fn postgres_connections_commit_with_their_wal_flushed() {
    let Ok(url) = std::env::var(TEST_DATABASE_URL) else {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI=true but {TEST_DATABASE_URL} is not set"
        );
        println!("SKIPPED: {TEST_DATABASE_URL} is not set: this PostgreSQL test did not run");
        return;
    };
    let plain = || async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    };
    // The role's default says off (for new sessions); a plain connection gets it.
    let admin = plain().await;
    admin
        .batch_execute("ALTER ROLE CURRENT_USER SET synchronous_commit = off")
        .await
        .expect("set the role's default");
    let seen: String = plain()
        .await
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("SHOW")
        .get(0);
    let settings = Settings::Postgres(PgSettings {
        url: url.clone(),
        pool_size: 1,
        tls: PgTls::Disable,
        schema: Some(format!("t_{}", crate::model::new_id().replace('-', ""))),
        owner: format!("test-host/{}", crate::model::new_id()),
        lease: Duration::from_secs(30),
    });
    let store = Store::open(&settings).await;
    let ours = match &store {
        Ok(Store::Postgres(pg)) => pg
            .setting("synchronous_commit")
            .await
            .map_err(|e| e.to_string()),
        Ok(_) => Err("not a PostgreSQL store".into()),
        Err(e) => Err(e.to_string()),
    };
    admin
        .batch_execute("ALTER ROLE CURRENT_USER RESET synchronous_commit")
        .await
        .expect("reset the role's default");
    assert_eq!(seen, "off", "the role's default did not apply");
    assert_eq!(ours.expect("the store's setting"), "on");
}

#[tokio::test]
async fn remote_tasks_are_kept_updated_and_found_by_thread() {
    for (name, store, _keep) in backends().await {
        let rec = |key: &str, thread: &str, remote: Option<&str>, at: i64| RemoteTask {
            key: key.into(),
            kind: RemoteKind::Turn,
            target: "delegate".into(),
            thread_id: thread.into(),
            origin: key.trim_start_matches("turn:").into(),
            message_ref: format!("{}.1", key.trim_start_matches("turn:")),
            remote_id: remote.map(str::to_owned),
            context_id: remote.map(|_| "ctx".to_owned()),
            state: "sending".into(),
            seen: Vec::new(),
            follow_until: at + 60_000,
            done: false,
            created_at: at,
            updated_at: at,
        };
        assert_eq!(
            store.remote_task("turn:m1").await.expect(name),
            None,
            "{name}"
        );
        store
            .put_remote_task(rec("turn:m1", "th", None, 1))
            .await
            .expect(name);
        // Not answered yet: nothing in the thread to continue.
        assert_eq!(
            store
                .latest_remote_task("th", RemoteKind::Turn, "delegate")
                .await
                .expect(name),
            None,
            "{name}"
        );
        let mut answered = rec("turn:m1", "th", Some("t-1"), 1);
        answered.state = "TASK_STATE_INPUT_REQUIRED".into();
        answered.seen = vec!["a1".into(), "input-required".into()];
        answered.updated_at = 5;
        store.put_remote_task(answered.clone()).await.expect(name);
        assert_eq!(
            store.remote_task("turn:m1").await.expect(name),
            Some(answered.clone()),
            "{name}"
        );
        // A later task in the thread is the one to continue; another route's or thread's is not.
        let mut later = rec("turn:m2", "th", Some("t-2"), 9);
        later.done = true;
        store.put_remote_task(later.clone()).await.expect(name);
        let mut elsewhere = rec("turn:m3", "other", Some("t-3"), 20);
        elsewhere.target = "other-route".into();
        store.put_remote_task(elsewhere).await.expect(name);
        assert_eq!(
            store
                .latest_remote_task("th", RemoteKind::Turn, "delegate")
                .await
                .expect(name),
            Some(later),
            "{name}"
        );
        assert_eq!(
            store
                .latest_remote_task("th", RemoteKind::Delivery, "delegate")
                .await
                .expect(name),
            None,
            "{name}"
        );
        assert_eq!(
            store.remote_tasks_of("m1").await.expect(name),
            vec![answered],
            "{name}"
        );
    }
}

#[tokio::test]
async fn follow_ups_are_claimed_by_one_host_until_settled() {
    for (name, store, keep) in backends().await {
        let now = now_ms();
        let t = RemoteTask {
            key: "delivery:o1:remote".into(),
            kind: RemoteKind::Delivery,
            target: "remote".into(),
            thread_id: "th".into(),
            origin: "o1".into(),
            message_ref: "o1".into(),
            remote_id: Some("t-1".into()),
            context_id: Some("th".into()),
            state: "TASK_STATE_WORKING".into(),
            seen: Vec::new(),
            follow_until: now + 60_000,
            done: false,
            created_at: now,
            updated_at: now,
        };
        store.put_remote_task(t.clone()).await.expect(name);
        // A turn's remote task is no follow-up.
        let mut turn = t.clone();
        turn.key = "turn:m1".into();
        turn.kind = RemoteKind::Turn;
        store.put_remote_task(turn).await.expect(name);
        let claimed = store.claim_follow_ups(now, 10).await.expect(name);
        assert_eq!(claimed, vec![t.clone()], "{name}");
        // Leased: neither this store nor another host takes it again.
        assert!(
            store
                .claim_follow_ups(now, 10)
                .await
                .expect(name)
                .is_empty(),
            "{name}"
        );
        if let Some(other) = other_host(&keep.1, Duration::from_secs(30)).await {
            assert!(
                other
                    .claim_follow_ups(now, 10)
                    .await
                    .expect(name)
                    .is_empty(),
                "{name}"
            );
            let mut stolen = t.clone();
            stolen.seen = vec!["x".into()];
            assert!(
                !other.settle_follow_up(stolen, now).await.expect(name),
                "{name}: a host without the lease records nothing"
            );
        }
        let mut progressed = t.clone();
        progressed.seen = vec!["a1".into()];
        progressed.state = "TASK_STATE_WORKING".into();
        assert!(
            store
                .settle_follow_up(progressed.clone(), now + 5_000)
                .await
                .expect(name),
            "{name}"
        );
        assert_eq!(
            store.remote_task(&t.key).await.expect(name),
            Some(progressed.clone()),
            "{name}"
        );
        // Not due before next_at, due after; a done one never again.
        assert!(
            store
                .claim_follow_ups(now + 1_000, 10)
                .await
                .expect(name)
                .is_empty(),
            "{name}"
        );
        let again = store.claim_follow_ups(now + 6_000, 10).await.expect(name);
        assert_eq!(again.len(), 1, "{name}");
        let mut done = progressed;
        done.done = true;
        assert!(
            store.settle_follow_up(done, now).await.expect(name),
            "{name}"
        );
        assert!(
            store
                .claim_follow_ups(now + 60_000, 10)
                .await
                .expect(name)
                .is_empty(),
            "{name}"
        );
    }
}

/// A pairing code works once: the first join takes it, a second finds nothing, and so does a
/// join after it expired; settling moves it on only from the state named, forgetting its keys.
#[tokio::test]
async fn an_invite_is_joined_once_before_it_expires_and_settled_once() {
    use crate::store::{Invite, InviteState, Joined};
    for (name, store, _dir) in backends().await {
        let now = now_ms();
        let invite = |hash: &str, expires_at: i64| Invite {
            code_hash: hash.into(),
            peer: "bob".into(),
            created_at: now,
            expires_at,
            state: InviteState::Open,
            joined: None,
        };
        let joined = Joined {
            url: "https://bob.example/message/alice".into(),
            send_key: "whsec_send".into(),
            receive_key: "whsec_receive".into(),
            takes: vec!["TASK".into()],
        };
        store
            .insert_invite(invite("h1", now + 60_000))
            .await
            .expect(name);
        store
            .insert_invite(invite("h2", now - 1))
            .await
            .expect(name);
        let got = store
            .join_invite("h1", now, joined.clone())
            .await
            .expect(name)
            .expect("joined");
        assert_eq!(got.state, InviteState::Joined, "{name}");
        assert_eq!(got.joined.as_ref(), Some(&joined), "{name}");
        assert_eq!(
            store
                .join_invite("h1", now, joined.clone())
                .await
                .expect(name),
            None,
            "used: {name}"
        );
        assert_eq!(
            store
                .join_invite("h2", now, joined.clone())
                .await
                .expect(name),
            None,
            "expired: {name}"
        );
        assert_eq!(
            store
                .join_invite("nope", now, joined.clone())
                .await
                .expect(name),
            None,
            "unknown: {name}"
        );
        let settle = |from, to| store.settle_invite("h1", from, to);
        assert!(
            !settle(InviteState::Open, InviteState::Paired)
                .await
                .expect(name)
        );
        assert!(
            settle(InviteState::Joined, InviteState::Paired)
                .await
                .expect(name)
        );
        let after = store.invite("h1").await.expect(name).expect("kept");
        assert_eq!(after.state, InviteState::Paired, "{name}");
        assert_eq!(after.joined, None, "the keys are forgotten: {name}");
    }
}

/// The operator's list: by type, by state (a turn's, `mailbox`, `dead`), by text in the type or
/// the title, by peer, and page by page with a cursor, newest first.
#[tokio::test]
async fn messages_are_listed_by_type_state_text_and_peer_page_by_page() {
    use crate::store::{MessageFilter, StateFilter};
    for (name, store, _dir) in backends().await {
        let with = |id: &str, sender: &str, msg_type: &str, payload: &str, mailbox: bool| Message {
            sender: sender.into(),
            msg_type: msg_type.into(),
            payload: payload.into(),
            mailbox,
            ..message(id)
        };
        let far = now_ms() + 3_600_000;
        let inserts = [
            (
                with("m1", "tony", "TASK", r#"{"title": "Fix the BUILD"}"#, false),
                QUEUE,
            ),
            (
                with("m2", "mel", "NOTE", r#"{"text": "minutes"}"#, true),
                None,
            ),
            (
                with("m3", "tony", "TASK", r#"{"title": "deploy"}"#, false),
                QUEUE,
            ),
            (
                with("m4", "tony", "REVIEW", r#""look at this""#, false),
                held("why", far),
            ),
        ];
        for (m, turn) in inserts {
            store.insert_message(m, turn, None, None).await.expect(name);
        }
        // m1 fails, and its notice is a dead letter.
        let first = store
            .claim_turn(claim("tasks").1)
            .await
            .expect(name)
            .expect("m1");
        let failed = TurnEnd {
            state: TurnState::Failed,
            exit_code: Some(3),
            ..done()
        };
        assert!(store.end_turn(&first.lease, failed, 1).await.expect(name));
        store
            .insert_outbound(outbound("r1", "m1"), vec!["tony".into()], None)
            .await
            .expect(name);
        assert_eq!(
            store
                .claim_deliveries(now_ms(), 10)
                .await
                .expect(name)
                .len(),
            1
        );
        let dead = AttemptOutcome::Dead {
            status: Some(410),
            error: "gone".into(),
        };
        store.record_attempt("r1", "tony", dead).await.expect(name);

        let list = async |f: MessageFilter| -> Vec<String> {
            let f = MessageFilter {
                limit: if f.limit == 0 { 50 } else { f.limit },
                ..f
            };
            store
                .list_messages(f)
                .await
                .expect(name)
                .into_iter()
                .map(|(m, _)| m.id)
                .collect()
        };
        let state = |s: &str| MessageFilter {
            state: Some(s.parse::<StateFilter>().expect("a state")),
            ..MessageFilter::default()
        };
        let of = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (what, filter, want) in [
            (
                "type",
                MessageFilter {
                    msg_type: Some("TASK".into()),
                    ..Default::default()
                },
                of(&["m3", "m1"]),
            ),
            ("failed", state("failed"), of(&["m1"])),
            ("queued", state("queued"), of(&["m3"])),
            ("held", state("awaiting_approval"), of(&["m4"])),
            ("mailbox", state("mailbox"), of(&["m2"])),
            ("dead", state("dead"), of(&["m1"])),
            (
                "title text, any case",
                MessageFilter {
                    text: Some("build".into()),
                    ..Default::default()
                },
                of(&["m1"]),
            ),
            (
                "type text",
                MessageFilter {
                    text: Some("Revi".into()),
                    ..Default::default()
                },
                of(&["m4"]),
            ),
            (
                "peer",
                MessageFilter {
                    sender: Some("mel".into()),
                    ..Default::default()
                },
                of(&["m2"]),
            ),
            (
                "first page",
                MessageFilter {
                    limit: 2,
                    ..Default::default()
                },
                of(&["m4", "m3"]),
            ),
            (
                "next page",
                MessageFilter {
                    limit: 2,
                    before: Some("m3".into()),
                    ..Default::default()
                },
                of(&["m2", "m1"]),
            ),
            (
                "past the end",
                MessageFilter {
                    before: Some("m1".into()),
                    ..Default::default()
                },
                of(&[]),
            ),
            (
                "a cursor that names nothing",
                MessageFilter {
                    before: Some("no-such-id".into()),
                    ..Default::default()
                },
                of(&[]),
            ),
        ] {
            assert_eq!(list(filter).await, want, "{name}: {what}");
        }
        assert!(
            "shouting"
                .parse::<StateFilter>()
                .unwrap_err()
                .contains("mailbox, dead"),
            "{name}"
        );
    }
}
