//! Durable state in SQLite: messages, turns, reply tokens (hashed), replies and their deliveries.
//!
//! One writer thread owns the write connection and commits the pending writes of many requests in one
//! transaction (group commit), so an fsync is shared by every request in the batch. Reads use their own
//! connection (WAL lets them run beside the writer) on tokio's blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for the writer thread; a full channel pushes back on requests.
const WRITE_QUEUE: usize = 4096;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer thread is gone (shutdown or a crash).
    #[error("the store is closed")]
    Closed,
    /// A stored row did not have the expected shape.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A turn's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnState {
    /// Waiting for a free agent slot.
    Queued,
    /// The agent is running.
    Running,
    /// The agent exited 0.
    Done,
    /// The agent failed (non-zero exit, could not start, ...).
    Failed,
    /// The agent ran past its timeout and was killed.
    TimedOut,
    /// The host stopped while the agent ran.
    Interrupted,
}

impl TurnState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnState::Queued => "queued",
            TurnState::Running => "running",
            TurnState::Done => "done",
            TurnState::Failed => "failed",
            TurnState::TimedOut => "timed_out",
            TurnState::Interrupted => "interrupted",
        }
    }
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not tried yet.
    Pending,
    /// Tried, failed in a retryable way, another attempt is scheduled.
    Retrying,
    /// The peer answered 2xx.
    Delivered,
    /// A dead letter: a non-retryable answer or the schedule ran out; `outbox retry` replays it.
    Dead,
}

impl DeliveryState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

/// An accepted inbound message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// Our id for it.
    pub id: String,
    /// The peer that sent it.
    pub sender: String,
    /// The route that took it.
    pub route: String,
    /// Its type.
    #[serde(rename = "type")]
    pub msg_type: String,
    /// Its payload, as JSON text.
    #[serde(skip)]
    pub payload: String,
    /// The conversation it belongs to.
    pub thread_id: String,
    /// The message it answers, if any.
    pub in_reply_to: Option<String>,
    /// Relays so far in its thread.
    pub hops: u32,
    /// The id the sender gave it, if any.
    pub sender_ref: Option<String>,
    /// When it was acked (ms since the epoch).
    pub received_at: i64,
    /// Whether it went to a mailbox (no turn).
    pub mailbox: bool,
}

/// A turn's record.
#[derive(Debug, Clone, Serialize)]
pub struct Turn {
    /// Its state.
    pub state: TurnState,
    /// How many times it started.
    pub attempts: u32,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// The signal that killed the agent.
    pub signal: Option<i32>,
    /// Why it failed, as `code: detail`.
    pub error: Option<String>,
    /// How long the agent ran.
    pub duration_ms: Option<i64>,
    /// Last bytes of stdout.
    pub stdout_tail: Option<String>,
    /// Last bytes of stderr.
    pub stderr_tail: Option<String>,
    /// When it was queued.
    pub queued_at: i64,
    /// When it last started.
    pub started_at: Option<i64>,
    /// When it ended.
    pub ended_at: Option<i64>,
}

/// How a turn ended, to record.
#[derive(Debug, Clone)]
pub struct TurnEnd {
    /// `Done`, `Failed` or `TimedOut`.
    pub state: TurnState,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it ran.
    pub duration_ms: i64,
    /// Last bytes of stdout.
    pub stdout_tail: String,
    /// Last bytes of stderr.
    pub stderr_tail: String,
}

/// An outbound message: an agent's reply, a failure notice, or one an operator sent.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// Its id, sent as `id` and `Idempotency-Key` on every attempt.
    pub id: String,
    /// The message it answers, if any.
    pub in_reply_to: Option<String>,
    /// The route whose agent sent it, if any.
    pub route: Option<String>,
    /// Its type.
    #[serde(rename = "type")]
    pub msg_type: String,
    /// Its payload, as JSON text.
    #[serde(skip)]
    pub payload: String,
    /// The conversation it belongs to.
    pub thread_id: String,
    /// Relays so far in its thread, this one included.
    pub hops: u32,
    /// When it was queued.
    pub created_at: i64,
}

/// A reply's delivery to one peer.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// The peer.
    pub peer: String,
    /// Its state.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due, if one is.
    pub next_attempt_at: Option<i64>,
    /// The peer's last HTTP status.
    pub last_status: Option<u16>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<i64>,
}

/// A delivery that is due, with what an attempt needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The reply to send.
    pub reply: Reply,
    /// Where to.
    pub peer: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What a reply token grants.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The message whose turn got the token.
    pub message_id: String,
    /// The route of that turn.
    pub route: String,
    /// The thread to reply in.
    pub thread_id: String,
    /// Hops of the message answered.
    pub hops: u32,
    /// When the token expires; `None` while the turn is still running.
    pub expires_at: Option<i64>,
}

/// The outcome of one delivery attempt, to record.
#[derive(Debug, Clone)]
pub enum AttemptRecord {
    /// 2xx.
    Delivered {
        /// The peer's status.
        status: u16,
    },
    /// Try again at `next_at`.
    Retry {
        /// The peer's status, if it answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_at: i64,
    },
    /// Give up: the delivery becomes a dead letter.
    Dead {
        /// The peer's status, if it answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

/// One write, applied by the writer thread inside a batch.
#[derive(Debug)]
enum Write {
    Message {
        message: Message,
        queue_turn: bool,
        dedup: Option<Dedup>,
    },
    RecoverRunning,
    Requeue {
        message_id: String,
    },
    Interrupted {
        message_id: String,
        error: String,
    },
    RetryDead {
        reply_id: String,
    },
    Prune {
        before: i64,
        dedup_before: i64,
    },
    StartTurn {
        message_id: String,
        route: String,
        token_hash: Vec<u8>,
        token_expires_at: i64,
    },
    EndTurn {
        message_id: String,
        end: TurnEnd,
        token_expires_at: i64,
    },
    Reply {
        reply: Reply,
        peers: Vec<String>,
    },
    Attempt {
        reply_id: String,
        peer: String,
        record: AttemptRecord,
    },
}

/// What a write did, for the writes whose caller branches on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Applied {
    Done,
    /// The message was a repeat; this is the original's id.
    Duplicate(String),
    /// Turns that were running: (message id, route, attempts).
    Recovered(Vec<(String, String, u32)>),
    /// How many rows changed.
    Count(usize),
}

/// Idempotency for one message: the sender's key and how far back a repeat counts.
#[derive(Debug, Clone)]
pub struct Dedup {
    /// The `Idempotency-Key` header, or the body's `id`.
    pub key: String,
    /// Keys recorded before this time (ms) no longer count.
    pub since: i64,
}

/// What inserting a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// It is new and committed.
    New,
    /// The sender sent this key before; nothing was written. The original message's id.
    Duplicate(String),
}

/// How durable a commit is (SQLite's `synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync on every commit: an ack survives power loss. The default.
    Full,
    /// fsync at checkpoints only: an ack survives a process crash, not power loss.
    Normal,
    /// No fsync: for benchmarks only.
    Off,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

struct Job {
    write: Write,
    done: oneshot::Sender<Result<Applied, StoreError>>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writes: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
}

/// Migrations, in order; `PRAGMA user_version` records how many have run. Append, never edit one
/// that has shipped.
const SCHEMA: &[&str] = &[
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
];

fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    // WAL lets readers run beside the writer; FULL makes every commit durable before it returns.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", sync.pragma())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A WAL that grew (a burst beside a long read) is cut back to this when it next rewinds.
    conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in SCHEMA.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and starts the writer thread.
    pub fn open(data_dir: &Path, sync: Synchronous) -> anyhow::Result<Store> {
        Store::open_with(data_dir, sync, CHECKPOINTS)
    }

    fn open_with(
        data_dir: &Path,
        sync: Synchronous,
        checkpoints: Checkpoints,
    ) -> anyhow::Result<Store> {
        use anyhow::Context as _;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
        let path = data_dir.join("inbox.sqlite3");
        let mut writer = open_connection(&path, sync)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        migrate(&mut writer).context("cannot migrate the database schema")?;
        let reader = open_connection(&path, sync)?;
        // Checkpoints copy the WAL into the database file with fsyncs of their own; done by the
        // writer (SQLite's default) they would stall every ack in the batch that triggers one.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = open_connection(&path, sync)?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let writer_open = open.clone();
        let restart = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let restart_wanted = restart.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer_loop(writer, rx, restart);
                writer_open.store(false, std::sync::atomic::Ordering::Relaxed);
            })
            .context("cannot start the store writer thread")?;
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, open, checkpoints, restart_wanted))
            .context("cannot start the store checkpoint thread")?;
        Ok(Store {
            writes: tx,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    async fn write(&self, write: Write) -> Result<Applied, StoreError> {
        let (done, rx) = oneshot::channel();
        self.writes
            .send(Job { write, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another read panicked; the connection itself is fine.
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Records an accepted message (and its queued turn) durably, unless `dedup` says it is a repeat.
    pub async fn insert_message(
        &self,
        message: Message,
        queue_turn: bool,
        dedup: Option<Dedup>,
    ) -> Result<Inserted, StoreError> {
        match self
            .write(Write::Message {
                message,
                queue_turn,
                dedup,
            })
            .await?
        {
            Applied::Duplicate(id) => Ok(Inserted::Duplicate(id)),
            _ => Ok(Inserted::New),
        }
    }

    /// Marks every turn left `running` by a previous process `interrupted`; returns
    /// (message id, route, attempts) of each.
    pub async fn recover_running(&self) -> Result<Vec<(String, String, u32)>, StoreError> {
        match self.write(Write::RecoverRunning).await? {
            Applied::Recovered(v) => Ok(v),
            _ => Ok(Vec::new()),
        }
    }

    /// Puts an interrupted turn back in the queue (state `queued`).
    pub async fn requeue(&self, message_id: &str) -> Result<(), StoreError> {
        self.write(Write::Requeue {
            message_id: message_id.into(),
        })
        .await
        .map(drop)
    }

    /// Leaves an interrupted turn `interrupted` for good, with the reason.
    pub async fn fail_interrupted(
        &self,
        message_id: &str,
        error: String,
    ) -> Result<(), StoreError> {
        self.write(Write::Interrupted {
            message_id: message_id.into(),
            error,
        })
        .await
        .map(drop)
    }

    /// Makes a reply's dead deliveries due again with a fresh schedule; returns how many.
    pub async fn retry_dead(&self, reply_id: &str) -> Result<usize, StoreError> {
        match self
            .write(Write::RetryDead {
                reply_id: reply_id.into(),
            })
            .await?
        {
            Applied::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Deletes finished records from before `before` and idempotency keys from before
    /// `dedup_before`; returns how many messages and replies went. Deletes in bounded batches.
    pub async fn prune(&self, before: i64, dedup_before: i64) -> Result<usize, StoreError> {
        match self
            .write(Write::Prune {
                before,
                dedup_before,
            })
            .await?
        {
            Applied::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Marks a turn running and stores the hash of its reply token.
    pub async fn start_turn(
        &self,
        message_id: &str,
        route: &str,
        token_hash: Vec<u8>,
        token_expires_at: i64,
    ) -> Result<(), StoreError> {
        self.write(Write::StartTurn {
            message_id: message_id.into(),
            route: route.into(),
            token_hash,
            token_expires_at,
        })
        .await
        .map(drop)
    }

    /// Records how a turn ended and when its token now expires.
    pub async fn end_turn(
        &self,
        message_id: &str,
        end: TurnEnd,
        token_expires_at: i64,
    ) -> Result<(), StoreError> {
        self.write(Write::EndTurn {
            message_id: message_id.into(),
            end,
            token_expires_at,
        })
        .await
        .map(drop)
    }

    /// Records an outbound message with one pending delivery per peer.
    pub async fn insert_reply(&self, reply: Reply, peers: Vec<String>) -> Result<(), StoreError> {
        self.write(Write::Reply { reply, peers }).await.map(drop)
    }

    /// Records one delivery attempt and the delivery's new state.
    pub async fn record_attempt(
        &self,
        reply_id: &str,
        peer: &str,
        record: AttemptRecord,
    ) -> Result<(), StoreError> {
        self.write(Write::Attempt {
            reply_id: reply_id.into(),
            peer: peer.into(),
            record,
        })
        .await
        .map(drop)
    }

    /// Looks up a reply token by its hash.
    pub async fn token(&self, hash: Vec<u8>) -> Result<Option<TokenGrant>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT t.message_id, t.route, m.thread_id, m.hops, t.expires_at,
                        tu.state IN ('running', 'queued')
                 FROM tokens t JOIN messages m ON m.id = t.message_id
                 LEFT JOIN turns tu ON tu.message_id = t.message_id
                 WHERE t.hash = ?1",
                params![hash],
                |r| {
                    let running: Option<bool> = r.get(5)?;
                    Ok(TokenGrant {
                        message_id: r.get(0)?,
                        route: r.get(1)?,
                        thread_id: r.get(2)?,
                        hops: r.get(3)?,
                        expires_at: if running == Some(true) {
                            None
                        } else {
                            Some(r.get(4)?)
                        },
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// One message by id.
    pub async fn message(&self, id: String) -> Result<Option<Message>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"),
                params![id],
                message_row,
            )
            .optional()?)
        })
        .await
    }

    /// A message's turn, if it has one.
    pub async fn turn(&self, message_id: String) -> Result<Option<Turn>, StoreError> {
        self.read(move |c| turn_of(c, &message_id)).await
    }

    /// Replies to a message, each with its deliveries.
    pub async fn replies_to(
        &self,
        message_id: String,
    ) -> Result<Vec<(Reply, Vec<Delivery>)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {REPLY_COLUMNS} FROM replies WHERE in_reply_to = ?1 ORDER BY seq"
            ))?;
            let replies = stmt
                .query_map(params![message_id], reply_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::with_capacity(replies.len());
            for r in replies {
                let d = deliveries_of(c, &r.id)?;
                out.push((r, d));
            }
            Ok(out)
        })
        .await
    }

    /// One reply by id, with its deliveries.
    pub async fn reply(&self, id: String) -> Result<Option<(Reply, Vec<Delivery>)>, StoreError> {
        self.read(move |c| {
            let r = c
                .query_row(
                    &format!("SELECT {REPLY_COLUMNS} FROM replies WHERE id = ?1"),
                    params![id],
                    reply_row,
                )
                .optional()?;
            match r {
                Some(r) => {
                    let d = deliveries_of(c, &r.id)?;
                    Ok(Some((r, d)))
                }
                None => Ok(None),
            }
        })
        .await
    }

    /// Messages, newest first, filtered, each with its turn's state (mailbox messages have none).
    pub async fn list_messages(
        &self,
        filter: MessageFilter,
    ) -> Result<Vec<(Message, Option<TurnState>)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS_M}, t.state FROM messages m
                 LEFT JOIN turns t ON t.message_id = m.id
                 WHERE (?1 IS NULL OR m.route = ?1) AND (?2 IS NULL OR m.thread_id = ?2)
                   AND (?3 IS NULL OR m.sender = ?3)
                 ORDER BY m.seq DESC LIMIT ?4"
            ))?;
            let rows = stmt
                .query_map(
                    params![filter.route, filter.thread, filter.sender, filter.limit],
                    |r| Ok((message_row(r)?, r.get::<_, Option<String>>(11)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(m, s)| Ok((m, s.as_deref().map(parse_turn_state).transpose()?)))
                .collect()
        })
        .await
    }

    /// Replies with a delivery to `peer`, newest first.
    pub async fn replies_for_peer(
        &self,
        peer: String,
        thread: Option<String>,
        limit: u32,
    ) -> Result<Vec<Reply>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {REPLY_COLUMNS_R} FROM replies r JOIN deliveries d ON d.reply_id = r.id
                 WHERE d.peer = ?1 AND (?2 IS NULL OR r.thread_id = ?2)
                 ORDER BY r.seq DESC LIMIT ?3"
            ))?;
            let rows = stmt
                .query_map(params![peer, thread, limit], reply_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Turns left queued, oldest first, for re-queueing at start-up.
    pub async fn queued_turns(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT t.route, t.message_id FROM turns t JOIN messages m ON m.id = t.message_id
                 WHERE t.state = 'queued' ORDER BY m.seq",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Deliveries due by `now`, soonest first, at most `limit`.
    pub async fn due_deliveries(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {REPLY_COLUMNS_R}, d.peer, d.attempts FROM deliveries d
                 JOIN replies r ON r.id = d.reply_id
                 WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= ?1
                 ORDER BY d.next_attempt_at LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![now, limit], |r| {
                    Ok(DueDelivery {
                        reply: reply_row(r)?,
                        peer: r.get(9)?,
                        attempts: r.get(10)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Deliveries with their replies, newest first; only dead letters if `dead_only`.
    pub async fn outbox(
        &self,
        dead_only: bool,
        limit: u32,
    ) -> Result<Vec<(Reply, Delivery)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {REPLY_COLUMNS_R}, d.peer, d.state, d.attempts, d.next_attempt_at, d.last_status,
                        d.last_error, d.delivered_at
                 FROM deliveries d JOIN replies r ON r.id = d.reply_id
                 WHERE (?1 = 0 OR d.state = 'dead')
                 ORDER BY r.seq DESC LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![dead_only, limit], |r| {
                    Ok((
                        reply_row(r)?,
                        r.get::<_, String>(10)?,
                        Delivery {
                            peer: r.get(9)?,
                            state: DeliveryState::Pending,
                            attempts: r.get(11)?,
                            next_attempt_at: r.get(12)?,
                            last_status: r.get(13)?,
                            last_error: r.get(14)?,
                            delivered_at: r.get(15)?,
                        },
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(reply, state, mut d)| {
                    d.state = parse_delivery_state(&state)?;
                    Ok((reply, d))
                })
                .collect()
        })
        .await
    }

    /// Recorded attempts of one delivery: (n, at, status, error).
    pub async fn attempts(
        &self,
        reply_id: String,
        peer: String,
    ) -> Result<Vec<(u32, i64, Option<u16>, Option<String>)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT n, at, status, error FROM attempts WHERE reply_id = ?1 AND peer = ?2 ORDER BY rowid",
            )?;
            let rows = stmt
                .query_map(params![reply_id, peer], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// When the next delivery after `after` is due, if any is scheduled.
    pub async fn next_due(&self, after: i64) -> Result<Option<i64>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE next_attempt_at > ?1",
                params![after],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

/// Which messages to list.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only this thread.
    pub thread: Option<String>,
    /// Only from this sender.
    pub sender: Option<String>,
    /// At most this many.
    pub limit: u32,
}

const MESSAGE_COLUMNS: &str = "id, sender, route, type, payload, thread_id, in_reply_to, hops, \
                               sender_ref, received_at, mailbox";
const MESSAGE_COLUMNS_M: &str = "m.id, m.sender, m.route, m.type, m.payload, m.thread_id, \
                                 m.in_reply_to, m.hops, m.sender_ref, m.received_at, m.mailbox";
const REPLY_COLUMNS: &str =
    "id, in_reply_to, route, type, payload, thread_id, hops, created_at, seq";
const REPLY_COLUMNS_R: &str = "r.id, r.in_reply_to, r.route, r.type, r.payload, r.thread_id, \
                               r.hops, r.created_at, r.seq";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        sender: r.get(1)?,
        route: r.get(2)?,
        msg_type: r.get(3)?,
        payload: r.get(4)?,
        thread_id: r.get(5)?,
        in_reply_to: r.get(6)?,
        hops: r.get(7)?,
        sender_ref: r.get(8)?,
        received_at: r.get(9)?,
        mailbox: r.get(10)?,
    })
}

fn reply_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Reply> {
    Ok(Reply {
        id: r.get(0)?,
        in_reply_to: r.get(1)?,
        route: r.get(2)?,
        msg_type: r.get(3)?,
        payload: r.get(4)?,
        thread_id: r.get(5)?,
        hops: r.get(6)?,
        created_at: r.get(7)?,
    })
}

fn parse_turn_state(s: &str) -> Result<TurnState, StoreError> {
    Ok(match s {
        "queued" => TurnState::Queued,
        "running" => TurnState::Running,
        "done" => TurnState::Done,
        "failed" => TurnState::Failed,
        "timed_out" => TurnState::TimedOut,
        "interrupted" => TurnState::Interrupted,
        other => return Err(StoreError::Corrupt(format!("turn state {other:?}"))),
    })
}

fn parse_delivery_state(s: &str) -> Result<DeliveryState, StoreError> {
    Ok(match s {
        "pending" => DeliveryState::Pending,
        "retrying" => DeliveryState::Retrying,
        "delivered" => DeliveryState::Delivered,
        "dead" => DeliveryState::Dead,
        other => return Err(StoreError::Corrupt(format!("delivery state {other:?}"))),
    })
}

fn turn_of(c: &Connection, message_id: &str) -> Result<Option<Turn>, StoreError> {
    let row = c
        .query_row(
            "SELECT state, attempts, exit_code, signal, error, duration_ms, stdout_tail, stderr_tail,
                    queued_at, started_at, ended_at FROM turns WHERE message_id = ?1",
            params![message_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Turn {
                        state: TurnState::Queued,
                        attempts: r.get(1)?,
                        exit_code: r.get(2)?,
                        signal: r.get(3)?,
                        error: r.get(4)?,
                        duration_ms: r.get(5)?,
                        stdout_tail: r.get(6)?,
                        stderr_tail: r.get(7)?,
                        queued_at: r.get(8)?,
                        started_at: r.get(9)?,
                        ended_at: r.get(10)?,
                    },
                ))
            },
        )
        .optional()?;
    match row {
        Some((state, mut turn)) => {
            turn.state = parse_turn_state(&state)?;
            Ok(Some(turn))
        }
        None => Ok(None),
    }
}

fn deliveries_of(c: &Connection, reply_id: &str) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT peer, state, attempts, next_attempt_at, last_status, last_error, delivered_at
         FROM deliveries WHERE reply_id = ?1 ORDER BY peer",
    )?;
    let rows = stmt
        .query_map(params![reply_id], |r| {
            Ok((
                r.get::<_, String>(1)?,
                Delivery {
                    peer: r.get(0)?,
                    state: DeliveryState::Pending,
                    attempts: r.get(2)?,
                    next_attempt_at: r.get(3)?,
                    last_status: r.get(4)?,
                    last_error: r.get(5)?,
                    delivered_at: r.get(6)?,
                },
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(s, mut d)| {
            d.state = parse_delivery_state(&s)?;
            Ok(d)
        })
        .collect()
}

/// When the checkpoint thread copies the WAL back into the database file, and when it also rewinds
/// the WAL.
#[derive(Debug, Clone, Copy)]
struct Checkpoints {
    every: std::time::Duration,
    /// WAL frames (pages) past which a checkpoint also rewinds the WAL.
    restart_at_frames: i64,
}

/// Every 500 ms; rewind past 32 MiB of WAL (at 4 KiB pages).
const CHECKPOINTS: Checkpoints = Checkpoints {
    every: std::time::Duration::from_millis(500),
    restart_at_frames: 8192,
};

/// Checkpoints the WAL beside the writer until the store closes.
///
/// A PASSIVE checkpoint never blocks the writer, but under steady writes it never catches up
/// either, and SQLite only rewinds the WAL once everything in it has been copied: the WAL grew for
/// as long as the load lasted (637 MB after a few benchmark runs), and a crash would leave all of
/// it to replay. So when the WAL is long, a RESTART checkpoint follows the passive one: it holds
/// the writer only while it copies what the passive one left and syncs the database, and the next
/// commit starts again at the WAL's beginning. The checkpoint thread runs the passive ones and asks
/// the writer (through `restart`) for the RESTART.
fn checkpoint_loop(
    conn: Connection,
    open: Arc<std::sync::atomic::AtomicBool>,
    policy: Checkpoints,
    restart: Arc<std::sync::atomic::AtomicBool>,
) {
    while open.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(policy.every);
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames >= policy.restart_at_frames => {
                restart.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will try again"),
        }
    }
}

/// The RESTART checkpoint, run by the writer between batches. From another connection it would
/// wait for the write lock by polling, and a writer that takes the lock again at once for the next
/// batch starves it (tried: the WAL still reached 11.6 MB beside an 18 MB database in the test
/// below).
fn restart_checkpoint(conn: &Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
        Ok(0) => {}
        Ok(_) => tracing::debug!("WAL restart checkpoint busy (a long read); will try again"),
        Err(e) => tracing::warn!(error = %e, "WAL restart checkpoint failed; will try again"),
    }
}

/// Drains the write channel in batches: one transaction, one fsync, many requests.
fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    restart: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = commit_batch(&mut conn, &batch);
        for (job, result) in batch.drain(..).zip(results) {
            // The requester may have gone away (client hung up); the write stands regardless.
            let _ = job.done.send(result);
        }
        // After the answers, so the acks just committed do not wait for it.
        if restart.swap(false, std::sync::atomic::Ordering::Relaxed) {
            restart_checkpoint(&conn);
        }
    }
}

fn commit_batch(conn: &mut Connection, batch: &[Job]) -> Vec<Result<Applied, StoreError>> {
    // Almost every batch applies cleanly, so try it without per-write savepoints (they cost as much
    // as a small insert); if any write fails, roll back and redo the batch isolating each write.
    match apply_batch(conn, batch, false) {
        Ok(results) => results,
        Err(_) => match apply_batch(conn, batch, true) {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                batch
                    .iter()
                    .map(|_| Err(StoreError::Sqlite(clone_err(&e))))
                    .collect()
            }
        },
    }
}

/// Applies a batch in one transaction. Without `isolate`, the first failing write aborts the whole
/// batch (`Err`); with it, each write runs in a savepoint and fails alone.
///
/// Transaction control goes through cached statements: `Connection::transaction` would parse
/// `BEGIN`/`COMMIT` again for every batch.
fn apply_batch(
    conn: &mut Connection,
    batch: &[Job],
    isolate: bool,
) -> Result<Vec<Result<Applied, StoreError>>, rusqlite::Error> {
    fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
        conn.prepare_cached(sql)?.execute([]).map(drop)
    }
    exec(conn, "BEGIN")?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        if isolate {
            exec(conn, "SAVEPOINT w")?;
            match apply(conn, &job.write) {
                Ok(applied) => {
                    exec(conn, "RELEASE w")?;
                    results.push(Ok(applied));
                }
                Err(e) => {
                    exec(conn, "ROLLBACK TO w")?;
                    exec(conn, "RELEASE w")?;
                    results.push(Err(e));
                }
            }
        } else {
            match apply(conn, &job.write) {
                Ok(applied) => results.push(Ok(applied)),
                Err(e) => {
                    let _ = exec(conn, "ROLLBACK");
                    return Err(rusqlite::Error::ToSqlConversionFailure(
                        e.to_string().into(),
                    ));
                }
            }
        }
    }
    if let Err(e) = exec(conn, "COMMIT") {
        let _ = exec(conn, "ROLLBACK");
        return Err(e);
    }
    Ok(results)
}

fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.to_string().into())
}

fn apply(c: &Connection, write: &Write) -> Result<Applied, StoreError> {
    match write {
        Write::Message {
            message: m,
            queue_turn,
            dedup,
        } => {
            if let Some(d) = dedup {
                let original: Option<String> = c
                    .prepare_cached(
                        "SELECT message_id FROM dedup WHERE sender = ?1 AND key = ?2 AND created_at >= ?3",
                    )?
                    .query_row(params![m.sender, d.key, d.since], |r| r.get(0))
                    .optional()?;
                if let Some(id) = original {
                    return Ok(Applied::Duplicate(id));
                }
                c.prepare_cached(
                    "INSERT OR REPLACE INTO dedup (sender, key, message_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![m.sender, d.key, m.id, m.received_at])?;
            }
            c.prepare_cached(
                "INSERT INTO messages (id, sender, route, type, payload, thread_id, in_reply_to, hops,
                                       sender_ref, received_at, mailbox)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                m.id,
                m.sender,
                m.route,
                m.msg_type,
                m.payload,
                m.thread_id,
                m.in_reply_to,
                m.hops,
                m.sender_ref,
                m.received_at,
                m.mailbox
            ])?;
            if *queue_turn {
                c.prepare_cached(
                    "INSERT INTO turns (message_id, route, state, queued_at) VALUES (?1, ?2, 'queued', ?3)",
                )?
                .execute(params![m.id, m.route, m.received_at])?;
            }
        }
        Write::StartTurn {
            message_id,
            route,
            token_hash,
            token_expires_at,
        } => {
            c.prepare_cached(
                "UPDATE turns SET state = 'running', attempts = attempts + 1, started_at = ?2,
                                  route = ?3, ended_at = NULL
                 WHERE message_id = ?1",
            )?
            .execute(params![message_id, now_ms(), route])?;
            c.prepare_cached(
                "INSERT INTO tokens (hash, message_id, route, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![token_hash, message_id, route, token_expires_at])?;
        }
        Write::EndTurn {
            message_id,
            end,
            token_expires_at,
        } => {
            c.prepare_cached(
                "UPDATE turns SET state = ?2, exit_code = ?3, signal = ?4, error = ?5, duration_ms = ?6,
                                  stdout_tail = ?7, stderr_tail = ?8, ended_at = ?9
                 WHERE message_id = ?1",
            )?
            .execute(params![
                message_id,
                end.state.as_str(),
                end.exit_code,
                end.signal,
                end.error,
                end.duration_ms,
                end.stdout_tail,
                end.stderr_tail,
                now_ms()
            ])?;
            c.prepare_cached("UPDATE tokens SET expires_at = ?2 WHERE message_id = ?1")?
                .execute(params![message_id, token_expires_at])?;
        }
        Write::Reply { reply: r, peers } => {
            c.prepare_cached(
                "INSERT INTO replies (id, in_reply_to, route, type, payload, thread_id, hops, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                r.id,
                r.in_reply_to,
                r.route,
                r.msg_type,
                r.payload,
                r.thread_id,
                r.hops,
                r.created_at
            ])?;
            let mut stmt = c.prepare_cached(
                "INSERT INTO deliveries (reply_id, peer, state, next_attempt_at) VALUES (?1, ?2, 'pending', ?3)",
            )?;
            for p in peers {
                stmt.execute(params![r.id, p, r.created_at])?;
            }
        }
        Write::Attempt {
            reply_id,
            peer,
            record,
        } => {
            let now = now_ms();
            let (state, status, error, next_at, delivered_at) = match record {
                AttemptRecord::Delivered { status } => (
                    DeliveryState::Delivered,
                    Some(*status),
                    None,
                    None,
                    Some(now),
                ),
                AttemptRecord::Retry {
                    status,
                    error,
                    next_at,
                } => (
                    DeliveryState::Retrying,
                    *status,
                    Some(error.as_str()),
                    Some(*next_at),
                    None,
                ),
                AttemptRecord::Dead { status, error } => (
                    DeliveryState::Dead,
                    *status,
                    Some(error.as_str()),
                    None,
                    None,
                ),
            };
            let n: u32 = c
                .prepare_cached(
                    "UPDATE deliveries SET state = ?3, attempts = attempts + 1, next_attempt_at = ?4,
                                           last_status = ?5, last_error = ?6, delivered_at = ?7
                     WHERE reply_id = ?1 AND peer = ?2 RETURNING attempts",
                )?
                .query_row(
                    params![reply_id, peer, state.as_str(), next_at, status, error, delivered_at],
                    |r| r.get(0),
                )?;
            c.prepare_cached(
                "INSERT INTO attempts (reply_id, peer, n, at, status, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![reply_id, peer, n, now, status, error])?;
        }
        Write::RecoverRunning => {
            let rows = c
                .prepare(
                    "UPDATE turns SET state = 'interrupted', ended_at = ?1,
                                      error = 'interrupted: the host stopped while the agent ran'
                     WHERE state = 'running' RETURNING message_id, route, attempts",
                )?
                .query_map(params![now_ms()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Applied::Recovered(rows));
        }
        Write::Requeue { message_id } => {
            c.prepare_cached("UPDATE turns SET state = 'queued' WHERE message_id = ?1")?
                .execute(params![message_id])?;
        }
        Write::Interrupted { message_id, error } => {
            c.prepare_cached(
                "UPDATE turns SET state = 'interrupted', error = ?2, ended_at = ?3 WHERE message_id = ?1",
            )?
            .execute(params![message_id, error, now_ms()])?;
        }
        Write::RetryDead { reply_id } => {
            // A fresh schedule: attempts restarts at 0 (the attempts table keeps the history).
            let n = c
                .prepare_cached(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?2
                     WHERE reply_id = ?1 AND state = 'dead'",
                )?
                .execute(params![reply_id, now_ms()])?;
            return Ok(Applied::Count(n));
        }
        Write::Prune {
            before,
            dedup_before,
        } => return prune(c, *before, *dedup_before).map(Applied::Count),
    }
    Ok(Applied::Done)
}

/// Rows deleted per prune step, so one prune never holds the writer for long.
const PRUNE_BATCH: i64 = 500;

fn prune(c: &Connection, before: i64, dedup_before: i64) -> Result<usize, StoreError> {
    c.prepare_cached("DELETE FROM dedup WHERE created_at < ?1")?
        .execute(params![dedup_before])?;
    // Finished messages: mailbox, or a turn in a final state, and every reply to it settled.
    let ids: Vec<String> = c
        .prepare_cached(
            "SELECT m.id FROM messages m LEFT JOIN turns t ON t.message_id = m.id
             WHERE m.received_at < ?1
               AND (t.state IS NULL OR t.state IN ('done', 'failed', 'timed_out', 'interrupted'))
               AND NOT EXISTS (SELECT 1 FROM replies r JOIN deliveries d ON d.reply_id = r.id
                               WHERE r.in_reply_to = m.id AND d.state IN ('pending', 'retrying'))
             ORDER BY m.seq LIMIT ?2",
        )?
        .query_map(params![before, PRUNE_BATCH], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        for sql in [
            "DELETE FROM attempts WHERE reply_id IN (SELECT id FROM replies WHERE in_reply_to = ?1)",
            "DELETE FROM deliveries WHERE reply_id IN (SELECT id FROM replies WHERE in_reply_to = ?1)",
            "DELETE FROM replies WHERE in_reply_to = ?1",
            "DELETE FROM tokens WHERE message_id = ?1",
            "DELETE FROM turns WHERE message_id = ?1",
            "DELETE FROM messages WHERE id = ?1",
        ] {
            c.prepare_cached(sql)?.execute(params![id])?;
        }
    }
    // Replies that answer no stored message (operator sends, or their message already went).
    let orphans: Vec<String> = c
        .prepare_cached(
            "SELECT r.id FROM replies r WHERE r.created_at < ?1
               AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.in_reply_to)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.reply_id = r.id
                               AND d.state IN ('pending', 'retrying'))
             ORDER BY r.seq LIMIT ?2",
        )?
        .query_map(params![before, PRUNE_BATCH], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &orphans {
        for sql in [
            "DELETE FROM attempts WHERE reply_id = ?1",
            "DELETE FROM deliveries WHERE reply_id = ?1",
            "DELETE FROM replies WHERE id = ?1",
        ] {
            c.prepare_cached(sql)?.execute(params![id])?;
        }
    }
    Ok(ids.len() + orphans.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Message {
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

    /// Under writes that never pause, passive checkpoints alone never let SQLite rewind the WAL;
    /// the RESTART past the threshold keeps it short while the database itself grows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wal_stays_bounded_under_steady_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = Checkpoints {
            every: std::time::Duration::from_millis(10),
            restart_at_frames: 64,
        };
        let store = Store::open_with(dir.path(), Synchronous::Normal, policy).expect("open");
        let (db, wal) = (
            dir.path().join("inbox.sqlite3"),
            dir.path().join("inbox.sqlite3-wal"),
        );
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let payload = format!("{{\"text\":\"{}\"}}", "x".repeat(2000));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (store, payload) = (store.clone(), payload.clone());
                tokio::spawn(async move {
                    for i in 0..1800 {
                        let mut m = message(&format!("w{w}-{i}"));
                        m.payload = payload.clone();
                        store.insert_message(m, false, None).await.expect("insert");
                    }
                })
            })
            .collect();
        let mut max_wal = 0;
        while !writers.iter().all(|w| w.is_finished()) {
            max_wal = max_wal.max(size(&wal));
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        for w in writers {
            w.await.expect("writer");
        }
        // 14,400 messages of 2 KB: ~40 MiB in the database, each page through the WAL first. With
        // passive checkpoints alone the WAL holds every frame ever written, 7.7 times the
        // database (261 MB beside 34 MB); rewound, it stays around the database's size or less
        // (0.3-0.6 of it on a quiet machine, up to 1.1 with every unit test running beside it,
        // where the checkpoint passes are slower).
        let db_size = size(&db);
        assert!(db_size > 32 << 20, "database only {db_size} bytes");
        assert!(
            max_wal < 3 * db_size,
            "the WAL reached {max_wal} bytes while the database grew to {db_size}"
        );
    }

    #[tokio::test]
    async fn message_turn_token_reply_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Synchronous::Full).expect("open");
        store
            .insert_message(message("m1"), true, None)
            .await
            .expect("insert");
        // A duplicate id is refused alone; the next write still works.
        assert!(
            store
                .insert_message(message("m1"), true, None)
                .await
                .is_err()
        );
        assert_eq!(
            store.queued_turns().await.expect("queued"),
            vec![("tasks".to_string(), "m1".to_string())]
        );
        store
            .start_turn("m1", "tasks", vec![1, 2, 3], now_ms() + 1000)
            .await
            .expect("start");
        let grant = store
            .token(vec![1, 2, 3])
            .await
            .expect("read")
            .expect("token");
        assert_eq!(grant.message_id, "m1");
        assert_eq!(grant.expires_at, None, "running turn: token has no end yet");
        store
            .end_turn(
                "m1",
                TurnEnd {
                    state: TurnState::Done,
                    exit_code: Some(0),
                    signal: None,
                    error: None,
                    duration_ms: 5,
                    stdout_tail: "ok".into(),
                    stderr_tail: String::new(),
                },
                42,
            )
            .await
            .expect("end");
        let grant = store
            .token(vec![1, 2, 3])
            .await
            .expect("read")
            .expect("token");
        assert_eq!(grant.expires_at, Some(42));
        let turn = store.turn("m1".into()).await.expect("read").expect("turn");
        assert_eq!((turn.state, turn.attempts), (TurnState::Done, 1));

        let reply = Reply {
            id: "r1".into(),
            in_reply_to: Some("m1".into()),
            route: Some("tasks".into()),
            msg_type: "BREAKDOWN".into(),
            payload: "{}".into(),
            thread_id: "m1".into(),
            hops: 1,
            created_at: 0,
        };
        store
            .insert_reply(reply, vec!["tony".into(), "mel".into()])
            .await
            .expect("reply");
        let due = store.due_deliveries(now_ms(), 10).await.expect("due");
        assert_eq!(due.len(), 2);
        store
            .record_attempt(
                "r1",
                "tony",
                AttemptRecord::Retry {
                    status: Some(500),
                    error: "500".into(),
                    next_at: i64::MAX,
                },
            )
            .await
            .expect("attempt");
        store
            .record_attempt("r1", "mel", AttemptRecord::Delivered { status: 202 })
            .await
            .expect("attempt");
        assert!(
            store
                .due_deliveries(now_ms(), 10)
                .await
                .expect("due")
                .is_empty()
        );
        let replies = store.replies_to("m1".into()).await.expect("replies");
        let states: Vec<_> = replies[0]
            .1
            .iter()
            .map(|d| (d.peer.as_str(), d.state, d.attempts))
            .collect();
        assert_eq!(
            states,
            vec![
                ("mel", DeliveryState::Delivered, 1),
                ("tony", DeliveryState::Retrying, 1)
            ]
        );
    }

    #[tokio::test]
    async fn dedup_recovery_dead_letters_and_pruning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Synchronous::Full).expect("open");
        let key = |since| {
            Some(Dedup {
                key: "k1".into(),
                since,
            })
        };
        let now = now_ms();
        assert_eq!(
            store
                .insert_message(message("a"), true, key(0))
                .await
                .unwrap(),
            Inserted::New
        );
        assert_eq!(
            store
                .insert_message(message("b"), true, key(0))
                .await
                .unwrap(),
            Inserted::Duplicate("a".into())
        );
        // Outside the window the key no longer counts.
        assert_eq!(
            store
                .insert_message(message("c"), true, key(now + 60_000))
                .await
                .unwrap(),
            Inserted::New
        );
        assert!(store.message("b".into()).await.unwrap().is_none());

        // A turn left running is interrupted, then re-queued.
        store
            .start_turn("a", "tasks", vec![9], now + 1000)
            .await
            .unwrap();
        let rec = store.recover_running().await.unwrap();
        assert_eq!(rec, vec![("a".to_string(), "tasks".to_string(), 1)]);
        assert_eq!(
            store.turn("a".into()).await.unwrap().unwrap().state,
            TurnState::Interrupted
        );
        store.requeue("a").await.unwrap();
        assert_eq!(
            store.turn("a".into()).await.unwrap().unwrap().state,
            TurnState::Queued
        );

        // A dead delivery is replayed with a fresh schedule.
        let reply = Reply {
            id: "r".into(),
            in_reply_to: Some("a".into()),
            route: Some("tasks".into()),
            msg_type: "BREAKDOWN".into(),
            payload: "{}".into(),
            thread_id: "a".into(),
            hops: 1,
            created_at: 0,
        };
        store
            .insert_reply(reply, vec!["tony".into()])
            .await
            .unwrap();
        assert_eq!(store.retry_dead("r").await.unwrap(), 0, "nothing dead yet");
        store
            .record_attempt(
                "r",
                "tony",
                AttemptRecord::Dead {
                    status: Some(410),
                    error: "gone".into(),
                },
            )
            .await
            .unwrap();
        let dead = store.outbox(true, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].1.state, DeliveryState::Dead);
        assert_eq!(store.retry_dead("r").await.unwrap(), 1);
        assert!(store.outbox(true, 10).await.unwrap().is_empty());
        assert_eq!(store.due_deliveries(now_ms(), 10).await.unwrap().len(), 1);

        // Pruning keeps unfinished work: "a" is queued and its reply pending; "c" is queued too.
        assert_eq!(store.prune(now_ms() + 1, now_ms() + 1).await.unwrap(), 0);
        store
            .end_turn(
                "a",
                TurnEnd {
                    state: TurnState::Done,
                    exit_code: Some(0),
                    signal: None,
                    error: None,
                    duration_ms: 1,
                    stdout_tail: String::new(),
                    stderr_tail: String::new(),
                },
                0,
            )
            .await
            .unwrap();
        assert_eq!(
            store.prune(now_ms() + 1, 0).await.unwrap(),
            0,
            "its reply is still pending"
        );
        store
            .record_attempt("r", "tony", AttemptRecord::Delivered { status: 200 })
            .await
            .unwrap();
        assert_eq!(store.prune(now_ms() + 1, 0).await.unwrap(), 1);
        assert!(store.message("a".into()).await.unwrap().is_none());
        assert!(store.reply("r".into()).await.unwrap().is_none());
        assert!(
            store.message("c".into()).await.unwrap().is_some(),
            "queued work is kept"
        );
    }
}
