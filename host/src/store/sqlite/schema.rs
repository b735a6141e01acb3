//! The SQLite schema as versioned migrations, and how connections are opened.

use std::path::Path;

use rusqlite::Connection;

use crate::model::Synchronous;
use crate::store::StoreError;

/// Migrations, in order; `PRAGMA user_version` records how many have run. Append, never edit one
/// that has shipped.
const MIGRATIONS: &[&str] = &[
    // Version 1. Rowids (seq) are plain INTEGER PRIMARY KEYs: AUTOINCREMENT would cost a write to
    // sqlite_sequence on every insert. Retention scans in seq order, which is arrival order, so
    // there is no index on the timestamps.
    r#"
    CREATE TABLE messages (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        sender      TEXT NOT NULL,
        route       TEXT NOT NULL,
        type        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        thread_id   TEXT NOT NULL,
        in_reply_to TEXT,
        hops        INTEGER NOT NULL,
        sender_ref  TEXT,
        received_at INTEGER NOT NULL,
        mailbox     INTEGER NOT NULL
    );
    CREATE INDEX messages_route ON messages(route, seq);
    CREATE INDEX messages_thread ON messages(thread_id, seq);
    CREATE INDEX messages_sender ON messages(sender, seq);
    CREATE TABLE turns (
        message_id  TEXT PRIMARY KEY REFERENCES messages(id),
        route       TEXT NOT NULL,
        state       TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        exit_code   INTEGER,
        signal      INTEGER,
        error       TEXT,
        duration_ms INTEGER,
        stdout_tail TEXT,
        stderr_tail TEXT,
        queued_at   INTEGER NOT NULL,
        started_at  INTEGER,
        ended_at    INTEGER
    );
    CREATE INDEX turns_state ON turns(state);
    CREATE TABLE tokens (
        hash        BLOB PRIMARY KEY,
        message_id  TEXT NOT NULL REFERENCES messages(id),
        route       TEXT NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE TABLE replies (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        in_reply_to TEXT,
        route       TEXT,
        type        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        thread_id   TEXT NOT NULL,
        hops        INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX replies_parent ON replies(in_reply_to);
    CREATE TABLE deliveries (
        reply_id        TEXT NOT NULL REFERENCES replies(id),
        peer            TEXT NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_status     INTEGER,
        last_error      TEXT,
        delivered_at    INTEGER,
        PRIMARY KEY (reply_id, peer)
    );
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
    CREATE TABLE attempts (
        reply_id TEXT NOT NULL,
        peer     TEXT NOT NULL,
        n        INTEGER NOT NULL,
        at       INTEGER NOT NULL,
        status   INTEGER,
        error    TEXT
    );
    CREATE INDEX attempts_reply ON attempts(reply_id, peer, n);
    -- Idempotency keys, per sender.
    CREATE TABLE dedup (
        sender     TEXT NOT NULL,
        key        TEXT NOT NULL,
        message_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (sender, key)
    ) WITHOUT ROWID;
    CREATE INDEX dedup_age ON dedup(created_at);
    CREATE INDEX deliveries_state ON deliveries(state);
    "#,
    // Version 2: the store owns the turn queue. A claim takes a route's oldest queued turn (the
    // turns rowid is arrival order), and recovery finds running ones, each through a partial
    // index that holds only those rows; together they replace the index over every state.
    r#"
    DROP INDEX turns_state;
    CREATE INDEX turns_queued ON turns(route) WHERE state = 'queued';
    CREATE INDEX turns_running ON turns(route) WHERE state = 'running';
    "#,
    // Version 3: an index only where a read uses it. `messages_sender` served only a peer's own
    // list, and without statistics the planner also took it for a peer's thread read (every row
    // of a busy peer, 190 ms at 1M rows, instead of the thread's few). A peer's list now walks
    // the table newest first with the filter (28 ms at 1M rows for a peer with one message in
    // 10,000), and each ack writes one index fewer.
    r#"
    DROP INDEX messages_sender;
    "#,
    // Version 4: A2A tasks. A task's state is not stored: it follows from its inputs' turns and
    // their replies. An input with no message is a rejected task's first message.
    r#"
    CREATE TABLE tasks (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        owner       TEXT NOT NULL,
        context_id  TEXT NOT NULL,
        route       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        rejected    TEXT,
        canceled_at INTEGER
    );
    CREATE INDEX tasks_owner ON tasks(owner, seq);
    CREATE TABLE task_inputs (
        seq               INTEGER PRIMARY KEY,
        task_id           TEXT NOT NULL REFERENCES tasks(id),
        message_id        TEXT UNIQUE,
        client_message_id TEXT NOT NULL,
        body              TEXT NOT NULL,
        at                INTEGER NOT NULL
    );
    CREATE INDEX task_inputs_task ON task_inputs(task_id, seq);
    -- Push configs; `pushed` is the last task state pushed through one (so each change is
    -- pushed once, by one host), `done` that its final state was.
    CREATE TABLE push_configs (
        task_id     TEXT NOT NULL REFERENCES tasks(id),
        id          TEXT NOT NULL,
        url         TEXT NOT NULL,
        token       TEXT,
        auth_scheme TEXT,
        credentials TEXT,
        created_at  INTEGER NOT NULL,
        pushed      TEXT,
        done        INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (task_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX push_pending ON push_configs(task_id) WHERE done = 0;
    -- The local agent (`[agents.NAME]`) that sent an outbound message: what it may read back is
    -- the threads it started.
    ALTER TABLE replies ADD COLUMN agent TEXT;
    CREATE INDEX replies_agent ON replies(agent, thread_id) WHERE agent IS NOT NULL;
    "#,
    // Version 5: what waits for a person. `id` is the held message's (its turn waits in
    // `awaiting_approval`) or the held reply's (its deliveries wait in `held`); the decision
    // columns stay NULL until someone (or the timeout) decides. Waiting rows are found by
    // deadline through a partial index that holds only them.
    r#"
    CREATE TABLE approvals (
        id               TEXT PRIMARY KEY,
        kind             TEXT NOT NULL,
        route            TEXT NOT NULL,
        message_id       TEXT,
        thread_id        TEXT NOT NULL,
        reason           TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        expires_at       INTEGER NOT NULL,
        verdict          TEXT,
        decided_by       TEXT,
        via              TEXT,
        decided_at       INTEGER,
        decision_reason  TEXT,
        original_payload TEXT
    );
    CREATE INDEX approvals_waiting ON approvals(expires_at) WHERE verdict IS NULL;
    CREATE INDEX approvals_message ON approvals(message_id);
    "#,
    // Version 6: a message that starts its own thread (its thread id is its id) stores '' as its
    // thread_id, and the thread index holds only messages that continue a thread. The id is not
    // written twice, and the common ack, a new thread, writes one index fewer (BENCHMARKS.md).
    // Reads give such a message its id back (`reads::thread_id_of!`).
    r#"
    DROP INDEX messages_thread;
    UPDATE messages SET thread_id = '' WHERE thread_id = id;
    CREATE INDEX messages_thread ON messages(thread_id, seq) WHERE thread_id <> '';
    "#,
    // Version 7: ids the inbox made (UUID text) become 16-byte blobs, in every column that holds
    // one (`key::KEY_COLUMNS`); other ids stay text. `inbox_key` is registered for the migration.
    // The foreign keys hold again once every table is converted: checked at commit.
    r#"
    PRAGMA defer_foreign_keys = ON;
    UPDATE messages SET id = inbox_key(id), thread_id = inbox_key(thread_id),
                        in_reply_to = inbox_key(in_reply_to);
    UPDATE turns SET message_id = inbox_key(message_id);
    UPDATE tokens SET message_id = inbox_key(message_id);
    UPDATE replies SET id = inbox_key(id), in_reply_to = inbox_key(in_reply_to),
                       thread_id = inbox_key(thread_id);
    UPDATE deliveries SET reply_id = inbox_key(reply_id);
    UPDATE attempts SET reply_id = inbox_key(reply_id);
    UPDATE dedup SET message_id = inbox_key(message_id);
    UPDATE tasks SET id = inbox_key(id), context_id = inbox_key(context_id);
    UPDATE task_inputs SET task_id = inbox_key(task_id), message_id = inbox_key(message_id);
    UPDATE push_configs SET task_id = inbox_key(task_id);
    UPDATE approvals SET id = inbox_key(id), message_id = inbox_key(message_id),
                         thread_id = inbox_key(thread_id);
    "#,
    // Version 8: a token knows the attempt it was minted for (0: before this version), and each
    // attempt's replies are counted (`max_replies_per_turn`, `max_replies_per_minute`). Console
    // sessions that signed out stay refused until they would have expired.
    r#"
    ALTER TABLE tokens ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE reply_counts (
        message_id   TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        total        INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        in_window    INTEGER NOT NULL,
        PRIMARY KEY (message_id, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE revoked_sessions (
        id    TEXT PRIMARY KEY,
        until INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- What a peer calls a thread (its thread_id or A2A contextId), per peer: two peers that name
    -- the same id get two threads. A thread's first message without a thread_id needs no row:
    -- its id is its sender's name for it (see `aliases.rs`).
    CREATE TABLE thread_aliases (
        peer      TEXT NOT NULL,
        alias     TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        PRIMARY KEY (peer, alias)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX thread_aliases_thread ON thread_aliases(thread_id, peer);
    -- Existing threads keep their id, which becomes their first sender's alias; and each peer
    -- a reply went to in a thread calls it by its id, as it did.
    INSERT OR IGNORE INTO thread_aliases (peer, alias, thread_id)
        SELECT m.sender, m.thread_id, m.thread_id FROM messages m
        WHERE m.thread_id <> ''
          AND m.seq = (SELECT min(f.seq) FROM messages f WHERE f.thread_id = m.thread_id)
          AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.id = m.thread_id);
    INSERT OR IGNORE INTO thread_aliases (peer, alias, thread_id)
        SELECT d.peer, r.thread_id, r.thread_id FROM deliveries d JOIN replies r ON r.id = d.reply_id
        WHERE d.peer NOT LIKE 'a2a-push:%'
        ORDER BY r.seq;
    "#,
    // Version 9: a token carries what its turn's prompt promised (reply types, reply_to, the
    // check-reply plugin, the reply limits: JSON), so a reload or a restart cannot change how
    // that turn's replies are checked; and a reply records the attempt that sent it, so a turn
    // an interruption cut short is not run again once it has answered.
    r#"
    ALTER TABLE tokens ADD COLUMN terms TEXT;
    ALTER TABLE replies ADD COLUMN attempt INTEGER;
    CREATE INDEX replies_in_reply_to ON replies(in_reply_to) WHERE attempt IS NOT NULL;
    -- The last write probe (`/readyz` is ready only while the store takes writes).
    CREATE TABLE probes (
        holder TEXT PRIMARY KEY,
        at     INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- Messages a peer sent in a known thread that were refused (the thread's id as text).
    CREATE TABLE refusals (
        thread_id TEXT NOT NULL,
        peer      TEXT NOT NULL,
        type      TEXT NOT NULL,
        code      TEXT NOT NULL,
        detail    TEXT NOT NULL,
        at        INTEGER NOT NULL
    );
    CREATE INDEX refusals_thread ON refusals(thread_id);
    "#,
    // Version 10: tasks at remote A2A agents that the inbox follows (ids as text: they join
    // nothing here). The lease columns are for followers that no turn holds (deliveries).
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
        follow_until INTEGER NOT NULL,
        done         INTEGER NOT NULL,
        next_at      INTEGER NOT NULL DEFAULT 0,
        lease_holder TEXT,
        lease_until  INTEGER,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX remote_tasks_thread ON remote_tasks(thread_id, kind, target, updated_at);
    CREATE INDEX remote_tasks_origin ON remote_tasks(origin);
    "#,
    // Version 11: a turn's newest token is found by its message (a local agent replies by its
    // own credential, naming the message).
    r#"
    CREATE INDEX tokens_message ON tokens(message_id, attempt);
    "#,
    // Version 12: pairing invites, by their one-time code's hash.
    r#"
    CREATE TABLE invites (
        code_hash   TEXT PRIMARY KEY,
        peer        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        state       TEXT NOT NULL,
        url         TEXT,
        send_key    TEXT,
        receive_key TEXT,
        takes       TEXT
    ) WITHOUT ROWID;
    "#,
    // Version 13: the operator's views. A message keeps its title (what it is about, for the
    // text filter; older ones have none and match by type only); lists filter by type through
    // its index and by an unusual turn state through a partial index (a done turn is not in
    // it, so an ack writes nothing more for it); by peer through the sender index again (a
    // read that also names a thread keeps to the thread's index: `+m.sender`, see
    // `reads::list_statement`); a peer's last delivery is found by its attempts; a cancelled turn records who cancelled it, how and when.
    r#"
    ALTER TABLE messages ADD COLUMN title TEXT;
    CREATE INDEX messages_type ON messages(type, seq);
    CREATE INDEX messages_sender ON messages(sender, seq);
    CREATE INDEX turns_notable ON turns(state)
        WHERE state IN ('failed', 'timed_out', 'interrupted', 'canceled', 'rejected', 'awaiting_approval');
    CREATE INDEX attempts_peer ON attempts(peer, at);
    ALTER TABLE turns ADD COLUMN canceled_by TEXT;
    ALTER TABLE turns ADD COLUMN canceled_via TEXT;
    ALTER TABLE turns ADD COLUMN canceled_at INTEGER;
    "#,
];

/// The newest schema version this binary knows.
pub(super) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

fn pragma(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
        Synchronous::Off => "OFF",
    }
}

/// Opens a connection with the settings every connection of the store shares.
pub(super) fn connect(path: &Path, sync: Synchronous) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    // WAL lets readers run beside the writer; FULL makes every commit durable before it returns.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", pragma(sync))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A WAL that grew past the writer's rewind point (a burst beside a long read) is cut back to
    // this when it next rewinds; below it the file is reused in place, never regrown.
    conn.pragma_update(None, "journal_size_limit", 160 << 20)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Brings the schema up to date; refuses a database a newer binary wrote.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > latest() {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported: latest(),
        });
    }
    super::key::register(conn)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageFilter;
    use crate::store::sqlite::reads;

    /// A database as a binary of schema `version` left it (in a directory dropped with it).
    fn database_at(version: usize) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.sqlite3");
        let c = connect(&path, Synchronous::Off).unwrap();
        for (i, sql) in MIGRATIONS.iter().take(version).enumerate() {
            c.execute_batch(sql).unwrap();
            c.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        (dir, path, c)
    }

    /// Every id column `key` knows is converted by the v7 migration, and no other.
    #[test]
    fn version_7_converts_every_id_column() {
        let v7 = MIGRATIONS[6];
        let mut converted = 0;
        for (table, columns) in crate::store::sqlite::key::KEY_COLUMNS {
            // Tables made after v7 store ids in their stored form from the start.
            if MIGRATIONS[7..]
                .iter()
                .any(|m| m.contains(&format!("CREATE TABLE {table} (")))
            {
                continue;
            }
            let update = v7
                .split(';')
                .find(|s| s.trim_start().starts_with(&format!("UPDATE {table} SET")))
                .unwrap_or_else(|| panic!("no UPDATE of {table}"));
            for c in *columns {
                assert!(
                    update.contains(&format!("{c} = inbox_key({c})")),
                    "{table}.{c}"
                );
                converted += 1;
            }
        }
        assert_eq!(v7.matches("inbox_key(").count(), converted);
    }

    /// A v6 database holding UUID text ids (a message with a turn and a token, a reply to it with
    /// a delivery, a task with an input and a push config, an approval) migrates to v7: those ids
    /// become blobs, a client's context id stays text, the foreign keys hold, and reads give
    /// every id back as it was written.
    #[test]
    fn version_7_stores_uuid_ids_as_16_bytes_and_reads_give_the_text_back() {
        let (_dir, path, mut c) = database_at(6);
        let (m, r, t) = (
            crate::model::new_id(),
            crate::model::new_id(),
            crate::model::new_id(),
        );
        c.execute_batch(&format!(
            "INSERT INTO messages (id, sender, route, type, payload, thread_id, in_reply_to, hops,
                                   sender_ref, received_at, mailbox)
             VALUES ('{m}', 'tony', 'inbox', 'NOTE', '{{}}', 'ctx-1', NULL, 0, NULL, 1, 0);
             INSERT INTO turns (message_id, route, state, queued_at) VALUES ('{m}', 'inbox', 'done', 1);
             INSERT INTO tokens (hash, message_id, route, expires_at) VALUES (x'00', '{m}', 'inbox', 9);
             INSERT INTO replies (id, in_reply_to, route, type, payload, thread_id, hops, created_at)
             VALUES ('{r}', '{m}', 'inbox', 'DONE', '{{}}', 'ctx-1', 1, 2);
             INSERT INTO deliveries (reply_id, peer, state) VALUES ('{r}', 'tony', 'delivered');
             INSERT INTO tasks (id, owner, context_id, route, created_at) VALUES ('{t}', 'a', 'ctx-1', 'inbox', 1);
             INSERT INTO task_inputs (task_id, message_id, client_message_id, body, at)
             VALUES ('{t}', '{m}', 'c1', '{{}}', 1);
             INSERT INTO push_configs (task_id, id, url, created_at) VALUES ('{t}', 'p1', 'http://x', 1);
             INSERT INTO approvals (id, kind, route, message_id, thread_id, reason, created_at, expires_at)
             VALUES ('{r}', 'outbound', 'inbox', '{m}', 'ctx-1', 'check', 2, 3);"
        ))
        .unwrap();
        migrate(&mut c, &path).unwrap();
        let kinds: Vec<String> = c
            .prepare(
                "SELECT typeof(m.id) || typeof(m.thread_id) || typeof(tu.message_id)
                        || typeof(tk.message_id) || typeof(r.id) || typeof(r.in_reply_to)
                        || typeof(d.reply_id) || typeof(t.id) || typeof(i.task_id)
                        || typeof(p.task_id) || typeof(a.id)
                 FROM messages m, turns tu, tokens tk, replies r, deliveries d, tasks t,
                      task_inputs i, push_configs p, approvals a",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kinds, ["blobtextblobblobblobblobblobblobblobblobblob"]);
        let violations: i64 = c
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(violations, 0);
        let message = reads::message(&c, &m).unwrap().unwrap();
        assert_eq!(
            (message.id.as_str(), message.thread_id.as_str()),
            (m.as_str(), "ctx-1")
        );
        let replies = reads::outbound_for(&c, &m).unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0.id, r);
        assert_eq!(replies[0].0.in_reply_to.as_deref(), Some(m.as_str()));
        assert_eq!(replies[0].1.len(), 1, "its delivery");
        let task = reads::task(&c, &t).unwrap().unwrap();
        assert_eq!(task.task.id, t);
        assert_eq!(task.inputs[0].message_id.as_deref(), Some(m.as_str()));
        assert_eq!(task.turns.len(), 1);
        assert_eq!(reads::push_configs(&c, &t, false).unwrap().len(), 1);
        let approval = reads::approval(&c, &r).unwrap().unwrap();
        assert_eq!(approval.message_id.as_deref(), Some(m.as_str()));
        assert_eq!(reads::task_of_message(&c, &m).unwrap(), Some(t));
    }

    /// A v5 database with a thread (its first message and a reply into it) migrates to v6, and
    /// reads give every message its thread id back.
    #[test]
    fn version_6_stores_a_threads_first_id_once_and_reads_give_it_back() {
        let (_dir, path, mut c) = database_at(5);
        let insert = "INSERT INTO messages (id, sender, route, type, payload, thread_id,
                      in_reply_to, hops, sender_ref, received_at, mailbox)
                      VALUES (?1, 'tony', 'inbox', 'NOTE', '{}', ?2, NULL, 0, NULL, 1, 1)";
        c.execute(insert, ["root", "root"]).unwrap();
        c.execute(insert, ["other", "other"]).unwrap();
        c.execute(insert, ["answer", "root"]).unwrap();
        migrate(&mut c, &path).unwrap();
        let stored: Vec<(String, String)> = c
            .prepare("SELECT id, thread_id FROM messages ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            stored,
            [("root", ""), ("other", ""), ("answer", "root")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        let root = reads::message(&c, "root").unwrap().unwrap();
        assert_eq!(root.thread_id, "root");
        let thread = reads::list_messages(
            &c,
            &MessageFilter {
                route: None,
                thread: Some("root".into()),
                limit: 50,
                ..MessageFilter::default()
            },
        )
        .unwrap();
        let ids: Vec<(&str, &str)> = thread
            .iter()
            .map(|(m, _)| (m.id.as_str(), m.thread_id.as_str()))
            .collect();
        assert_eq!(ids, [("answer", "root"), ("root", "root")]);
    }
}
