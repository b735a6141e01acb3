//! The PostgreSQL schema as versioned migrations, applied at start under an advisory lock so that
//! hosts starting together do not race, and refused when the database is newer than the binary.

use deadpool_postgres::Client;

use crate::store::StoreError;

/// The advisory lock key the migrations run under (any fixed number; "inbox" in ASCII).
const MIGRATION_LOCK: i64 = 0x0069_6e62_6f78;

/// Migrations, in order; `inbox_schema.version` records how many have run. Append, never edit one
/// that has shipped.
///
/// Times the hosts write (`received_at`, `next_attempt_at`, ...) are ms since the epoch from the
/// host, as in SQLite; leases are `timestamptz` from the database's own clock (`now()`), so a host
/// whose clock is off cannot take or keep a lease it should not.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE messages (
        seq         BIGSERIAL PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        sender      TEXT NOT NULL,
        route       TEXT NOT NULL,
        type        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        thread_id   TEXT NOT NULL,
        in_reply_to TEXT,
        hops        BIGINT NOT NULL,
        sender_ref  TEXT,
        received_at BIGINT NOT NULL,
        mailbox     BOOLEAN NOT NULL
    );
    CREATE INDEX messages_route ON messages(route, seq);
    CREATE INDEX messages_thread ON messages(thread_id, seq);
    CREATE TABLE turns (
        seq         BIGSERIAL,
        message_id  TEXT PRIMARY KEY REFERENCES messages(id),
        route       TEXT NOT NULL,
        state       TEXT NOT NULL,
        attempts    BIGINT NOT NULL DEFAULT 0,
        exit_code   BIGINT,
        signal      BIGINT,
        error       TEXT,
        duration_ms BIGINT,
        stdout_tail TEXT,
        stderr_tail TEXT,
        queued_at   BIGINT NOT NULL,
        started_at  BIGINT,
        ended_at    BIGINT,
        leased_by   TEXT,
        lease_until TIMESTAMPTZ
    );
    CREATE INDEX turns_queued ON turns(route, seq) WHERE state = 'queued';
    CREATE INDEX turns_running ON turns(lease_until) WHERE state = 'running';
    CREATE TABLE tokens (
        hash        BYTEA PRIMARY KEY,
        message_id  TEXT NOT NULL REFERENCES messages(id),
        route       TEXT NOT NULL,
        expires_at  BIGINT NOT NULL
    );
    CREATE INDEX tokens_message ON tokens(message_id);
    CREATE TABLE replies (
        seq         BIGSERIAL PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        in_reply_to TEXT,
        route       TEXT,
        type        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        thread_id   TEXT NOT NULL,
        hops        BIGINT NOT NULL,
        created_at  BIGINT NOT NULL,
        agent       TEXT
    );
    CREATE INDEX replies_parent ON replies(in_reply_to);
    CREATE INDEX replies_agent ON replies(agent, thread_id) WHERE agent IS NOT NULL;
    CREATE TABLE deliveries (
        reply_id        TEXT NOT NULL REFERENCES replies(id),
        peer            TEXT NOT NULL,
        state           TEXT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        last_status     BIGINT,
        last_error      TEXT,
        delivered_at    BIGINT,
        leased_by       TEXT,
        lease_until     TIMESTAMPTZ,
        PRIMARY KEY (reply_id, peer)
    );
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX deliveries_peer ON deliveries(peer);
    CREATE TABLE attempts (
        seq      BIGSERIAL PRIMARY KEY,
        reply_id TEXT NOT NULL,
        peer     TEXT NOT NULL,
        n        BIGINT NOT NULL,
        at       BIGINT NOT NULL,
        status   BIGINT,
        error    TEXT
    );
    CREATE INDEX attempts_reply ON attempts(reply_id, peer, n);
    CREATE TABLE dedup (
        sender     TEXT NOT NULL,
        key        TEXT NOT NULL,
        message_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (sender, key)
    );
    CREATE INDEX dedup_age ON dedup(created_at);
    CREATE TABLE tasks (
        seq         BIGSERIAL PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        owner       TEXT NOT NULL,
        context_id  TEXT NOT NULL,
        route       TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        rejected    TEXT,
        canceled_at BIGINT
    );
    CREATE INDEX tasks_owner ON tasks(owner, seq);
    CREATE TABLE task_inputs (
        seq               BIGSERIAL PRIMARY KEY,
        task_id           TEXT NOT NULL REFERENCES tasks(id),
        message_id        TEXT UNIQUE,
        client_message_id TEXT NOT NULL,
        body              TEXT NOT NULL,
        at                BIGINT NOT NULL
    );
    CREATE INDEX task_inputs_task ON task_inputs(task_id, seq);
    CREATE TABLE push_configs (
        task_id     TEXT NOT NULL REFERENCES tasks(id),
        id          TEXT NOT NULL,
        url         TEXT NOT NULL,
        token       TEXT,
        auth_scheme TEXT,
        credentials TEXT,
        created_at  BIGINT NOT NULL,
        pushed      TEXT,
        done        BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (task_id, id)
    );
    CREATE INDEX push_pending ON push_configs(task_id) WHERE NOT done;
    CREATE TABLE approvals (
        id               TEXT PRIMARY KEY,
        kind             TEXT NOT NULL,
        route            TEXT NOT NULL,
        message_id       TEXT,
        thread_id        TEXT NOT NULL,
        reason           TEXT NOT NULL,
        created_at       BIGINT NOT NULL,
        expires_at       BIGINT NOT NULL,
        verdict          TEXT,
        decided_by       TEXT,
        via              TEXT,
        decided_at       BIGINT,
        decision_reason  TEXT,
        original_payload TEXT
    );
    CREATE INDEX approvals_waiting ON approvals(expires_at) WHERE verdict IS NULL;
    CREATE INDEX approvals_message ON approvals(message_id);
    CREATE TABLE hosts (
        host_id     TEXT PRIMARY KEY,
        incarnation TEXT NOT NULL,
        version     TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        started_at  TIMESTAMPTZ NOT NULL,
        last_seen   TIMESTAMPTZ NOT NULL,
        running     BIGINT NOT NULL
    );
"#,
    // Version 2: wake-ups. A turn that becomes queued and a delivery that becomes due notify
    // `inbox_work` in their own transaction (sent at commit, once per payload per transaction),
    // so idle hosts start at once instead of polling.
    r#"
    CREATE FUNCTION inbox_notify_turn() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('inbox_work', 'turn:' || NEW.route);
        RETURN NULL;
    END $$;
    CREATE TRIGGER turns_queued_notify AFTER INSERT OR UPDATE OF state ON turns
        FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION inbox_notify_turn();
    CREATE FUNCTION inbox_notify_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('inbox_work', 'delivery');
        RETURN NULL;
    END $$;
    CREATE TRIGGER deliveries_due_notify AFTER INSERT OR UPDATE OF next_attempt_at ON deliveries
        FOR EACH ROW WHEN (NEW.next_attempt_at IS NOT NULL) EXECUTE FUNCTION inbox_notify_delivery();
"#,
    // Version 3: a running turn cancelled on any host (an A2A CancelTask) tells the host that runs
    // it at once, instead of at its next lease renewal.
    r#"
    CREATE FUNCTION inbox_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('inbox_work', 'cancel:' || NEW.message_id);
        RETURN NULL;
    END $$;
    CREATE TRIGGER turns_canceled_notify AFTER UPDATE OF state ON turns
        FOR EACH ROW WHEN (OLD.state = 'running' AND NEW.state = 'canceled')
        EXECUTE FUNCTION inbox_notify_cancel();
"#,
    // Version 4: a token knows the attempt it was minted for (0: before this version), and each
    // attempt's replies are counted. Console sessions that signed out stay refused until they
    // would have expired; every host hears of a sign-out on `inbox_work`.
    r#"
    ALTER TABLE tokens ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE reply_counts (
        message_id   TEXT NOT NULL,
        attempt      BIGINT NOT NULL,
        total        BIGINT NOT NULL,
        window_start BIGINT NOT NULL,
        in_window    BIGINT NOT NULL,
        PRIMARY KEY (message_id, attempt)
    );
    CREATE TABLE revoked_sessions (
        id    TEXT PRIMARY KEY,
        until BIGINT NOT NULL
    );
    -- What a peer calls a thread, per peer (see aliases.rs). Existing threads keep their id,
    -- which becomes their first sender's alias; each peer a reply went to in a thread calls it
    -- by its id, as it did.
    CREATE TABLE thread_aliases (
        peer      TEXT NOT NULL,
        alias     TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        PRIMARY KEY (peer, alias)
    );
    CREATE UNIQUE INDEX thread_aliases_thread ON thread_aliases (thread_id, peer);
    INSERT INTO thread_aliases (peer, alias, thread_id)
        SELECT DISTINCT ON (m.thread_id) m.sender, m.thread_id, m.thread_id FROM messages m
        WHERE m.thread_id <> m.id
          AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.id = m.thread_id)
        ORDER BY m.thread_id, m.seq
        ON CONFLICT DO NOTHING;
    INSERT INTO thread_aliases (peer, alias, thread_id)
        SELECT d.peer, r.thread_id, r.thread_id FROM deliveries d JOIN replies r ON r.id = d.reply_id
        WHERE d.peer NOT LIKE 'a2a-push:%'
        ORDER BY r.seq
        ON CONFLICT DO NOTHING;
"#,
    // Version 5: a token carries what its turn's prompt promised (JSON), and a reply records the
    // attempt that sent it (see the SQLite schema's version 9).
    r#"
    ALTER TABLE tokens ADD COLUMN terms TEXT;
    ALTER TABLE replies ADD COLUMN attempt BIGINT;
    -- Each host's last write probe (`/readyz` is ready only while the store takes writes).
    CREATE TABLE probes (
        holder TEXT PRIMARY KEY,
        at     BIGINT NOT NULL
    );
    -- Messages a peer sent in a known thread that were refused.
    CREATE TABLE refusals (
        seq       BIGSERIAL PRIMARY KEY,
        thread_id TEXT NOT NULL,
        peer      TEXT NOT NULL,
        type      TEXT NOT NULL,
        code      TEXT NOT NULL,
        detail    TEXT NOT NULL,
        at        BIGINT NOT NULL
    );
    CREATE INDEX refusals_thread ON refusals(thread_id);
"#,
    // Version 10: tasks at remote A2A agents that the inbox follows; deliveries' followers hold
    // a lease on the database's clock, like turns.
    r#"
    CREATE TABLE remote_tasks (
        key          TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,
        target       TEXT NOT NULL,
        thread_id    TEXT NOT NULL,
        origin       TEXT NOT NULL,
        message_ref  TEXT NOT NULL,
        remote_id    TEXT,
        context_id   TEXT,
        state        TEXT NOT NULL,
        seen         TEXT NOT NULL,
        follow_until BIGINT NOT NULL,
        done         BOOLEAN NOT NULL,
        next_at      BIGINT NOT NULL DEFAULT 0,
        lease_holder TEXT,
        lease_until  TIMESTAMPTZ,
        created_at   BIGINT NOT NULL,
        updated_at   BIGINT NOT NULL
    );
    CREATE INDEX remote_tasks_thread ON remote_tasks(thread_id, kind, target, updated_at);
    CREATE INDEX remote_tasks_origin ON remote_tasks(origin);
"#,
    // Version 11: pairing invites, by their one-time code's hash.
    r#"
    CREATE TABLE invites (
        code_hash   TEXT PRIMARY KEY,
        peer        TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        expires_at  BIGINT NOT NULL,
        state       TEXT NOT NULL,
        url         TEXT,
        send_key    TEXT,
        receive_key TEXT,
        takes       TEXT
    );
"#,
    // Version 12: the operator's views (as SQLite's version 13): a message's title, lists by
    // type and by an unusual turn state, a peer's last attempt, who cancelled a turn.
    r#"
    ALTER TABLE messages ADD COLUMN title TEXT;
    CREATE INDEX messages_type ON messages(type, seq);
    CREATE INDEX messages_sender ON messages(sender, seq);
    CREATE INDEX turns_notable ON turns(state)
        WHERE state IN ('failed', 'timed_out', 'interrupted', 'canceled', 'rejected', 'awaiting_approval');
    CREATE INDEX attempts_peer ON attempts(peer, at);
    ALTER TABLE turns ADD COLUMN canceled_by TEXT;
    ALTER TABLE turns ADD COLUMN canceled_via TEXT;
    ALTER TABLE turns ADD COLUMN canceled_at BIGINT;
"#,
];

/// The newest schema version this binary knows.
pub(super) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema up to date under the advisory lock; refuses a database a newer binary wrote.
/// `at` names the database in errors (never with its password).
pub(super) async fn migrate(client: &mut Client, at: &str) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(client, at).await;
    // Unlocked whatever happened; a lost connection releases it anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply(client: &mut Client, at: &str) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS inbox_schema (version BIGINT NOT NULL)")
        .await?;
    let version: i64 = match client
        .query_opt("SELECT version FROM inbox_schema", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            client
                .execute("INSERT INTO inbox_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if version > latest() {
        return Err(StoreError::SchemaTooNew {
            path: at.into(),
            found: version,
            supported: latest(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("UPDATE inbox_schema SET version = $1", &[&((i + 1) as i64)])
            .await?;
        tx.commit().await?;
    }
    Ok(())
}
