//! The PostgreSQL backend: several hosts share one queue. A pool of connections (deadpool); every
//! write is one transaction, so concurrent acks share the database's own group commit
//! (`synchronous_commit = on`: a commit returns once its WAL is flushed).
//!
//! Work is handed out with `SELECT … FOR UPDATE SKIP LOCKED` under a lease held by this process's
//! incarnation (`host id/start id`) until a time of the database's clock; a write that ends a turn
//! is fenced by the turn's attempt number and the lease's holder, so a host that lost its lease
//! (paused, cut off) cannot record over the host that took the turn over.

mod aliases;
mod invites;
mod reads;
mod rows;
mod schema;
mod signals;
mod writes;

use self::rows::{
    APPROVAL_COLUMNS, DELIVERY_COLUMNS, MESSAGE_COLUMNS, OUTBOUND_COLUMNS, PUSH_COLUMNS,
    REMOTE_COLUMNS, TASK_COLUMNS, approval_row, delivery_at, message_row, opt_i32, outbound_row,
    parse, push_row, remote_row, task_row, u32_at,
};
pub use self::signals::Signal;
use self::signals::{SIGNALS, listen};

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::model::{
    Approval, ApprovalKind, Attempt, AttemptOutcome, Decide, Decision, Delivery, DeliveryState,
    HostBeat, Message, Outbound, PushConfig, Refusal, RemoteKind, RemoteTask, ReplyCount,
    ReplyLimits, Task, TaskInput, TaskRecord, Turn, TurnEnd, TurnError, TurnState, Verdict, now_ms,
};
use crate::store::{
    Canceled, Claimed, Decided, Dedup, DueDelivery, Hold, Inserted, Interrupted, Lease,
    MessageFilter, NewTurn, Push, Requeued, StoreError, TaskFilter, TaskLink, TurnClaim,
};
use crate::token::{Grant, TokenHash};

/// How the inbox reaches its PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/db?...` (a secret: never shown whole).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// TLS to the database.
    pub tls: PgTls,
    /// The schema the tables live in (`search_path`); `None` for the server's default.
    pub schema: Option<String>,
    /// This process's incarnation, the holder of its leases: `host id/start id`.
    pub owner: String,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("at", &describe(&self.url))
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .field("schema", &self.schema)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// TLS to the database (`[store] sslmode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// Plain TCP (a database on the same host or a private network).
    Disable,
    /// Encrypted, the server's certificate not checked (libpq's `require`).
    Require,
    /// Encrypted, the certificate checked against the public roots or `ca_file`, and its name
    /// against the host (libpq's `verify-full`).
    VerifyFull {
        /// A PEM file of the CA(s) to trust instead of the public roots.
        ca_file: Option<PathBuf>,
    },
}

/// The database's host, port and name from a URL, for messages: never the password.
pub fn describe(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!(
                "postgres://{host}:{port}/{}",
                c.get_dbname().unwrap_or_default()
            )
        }
        Err(_) => "postgres (an unreadable URL)".into(),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // No SQLSTATE: the connection failed or closed, not the statement. Class 53 (the disk
        // is full, no memory, no connection slot), a read-only server (25006) and one shutting
        // down (57P): nothing was written, and the same write succeeds once it is back.
        let unavailable = e.code().is_none_or(|c| {
            let c = c.code();
            c.starts_with("53") || c.starts_with("57P") || c == "25006"
        });
        if unavailable {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Postgres(Arc::new(e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Handle to the PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    owner: Arc<str>,
    lease: Duration,
    /// Turns queued per route, as last counted (every second): for `/status`, the metrics and
    /// the scheduler's start. The database is the truth; this may be a second old.
    queued: Arc<Mutex<HashMap<String, usize>>>,
    /// What `LISTEN` hears: work queued by any host, and other hosts' events.
    signals: broadcast::Sender<Signal>,
}

fn tls_connector(tls: &PgTls) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use crate::tls::{Trust, client_config_for};
    let config = match tls {
        PgTls::Disable | PgTls::Require => {
            client_config_for(Trust::AnyCertificate).map_err(|e| e.to_string())
        }
        PgTls::VerifyFull { ca_file: None } => {
            client_config_for(Trust::PublicRoots).map_err(|e| e.to_string())
        }
        PgTls::VerifyFull {
            ca_file: Some(path),
        } => {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            client_config_for(Trust::Ca(&pem)).map_err(|e| format!("{}: {e}", path.display()))
        }
    }?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// An error with its causes, `a: b: c`, so a TLS refusal says why (the pool's own text does not).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PgStore {
    /// Connects once and reads the schema version, changing nothing (`agent-inbox check`).
    pub(super) async fn check(s: &PgSettings) -> Result<String, StoreError> {
        let at = describe(&s.url);
        let failed = |reason: String| StoreError::Open {
            path: at.clone().into(),
            reason,
        };
        let pool = Self::pool(s, &at)?;
        let client = pool.get().await.map_err(|e| failed(chain(&e)))?;
        let exists: bool = client
            .query_one("SELECT to_regclass('inbox_schema') IS NOT NULL", &[])
            .await?
            .get(0);
        let version: i64 = if exists {
            client
                .query_opt("SELECT version FROM inbox_schema", &[])
                .await?
                .map_or(0, |r| r.get(0))
        } else {
            0
        };
        if version > schema::latest() {
            return Err(StoreError::SchemaTooNew {
                path: at.into(),
                found: version,
                supported: schema::latest(),
            });
        }
        Ok(format!(
            "{at}: reachable, schema version {version} (this binary knows {}{})",
            schema::latest(),
            if version < schema::latest() {
                "; the first host to start migrates it"
            } else {
                ""
            }
        ))
    }

    fn pool(s: &PgSettings, at: &str) -> Result<Pool, StoreError> {
        let (config, tls) = Self::connection(s, at)?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(s.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Open {
                path: at.into(),
                reason: e.to_string(),
            })
    }

    /// How to open one connection: the parsed URL with this store's options, and its TLS.
    fn connection(
        s: &PgSettings,
        at: &str,
    ) -> Result<
        (
            tokio_postgres::Config,
            tokio_postgres_rustls::MakeRustlsConnect,
        ),
        StoreError,
    > {
        let failed = |reason: String| StoreError::Open {
            path: at.into(),
            reason,
        };
        let mut config: tokio_postgres::Config = s
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| failed(format!("a bad URL: {e}")))?;
        config.ssl_mode(match s.tls {
            PgTls::Disable => tokio_postgres::config::SslMode::Disable,
            PgTls::Require | PgTls::VerifyFull { .. } => tokio_postgres::config::SslMode::Require,
        });
        // An ack means the commit's WAL is flushed, whatever the server's default says.
        let mut options = "-c synchronous_commit=on".to_owned();
        if let Some(schema) = &s.schema {
            options.push_str(&format!(" -c search_path={schema}"));
        }
        config.options(options);
        config.connect_timeout(Duration::from_secs(5));
        config.application_name("agent-inbox");
        let tls = tls_connector(&s.tls).map_err(failed)?;
        Ok((config, tls))
    }

    /// Connects, migrates (under an advisory lock) and starts the queue counter.
    pub(super) async fn open(s: &PgSettings) -> Result<Self, StoreError> {
        let at = describe(&s.url);
        let failed = |reason: String| StoreError::Open {
            path: at.clone().into(),
            reason,
        };
        let pool = Self::pool(s, &at)?;
        let mut client = pool.get().await.map_err(|e| failed(chain(&e)))?;
        if let Some(schema) = &s.schema {
            let created = client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                    schema.replace('"', "")
                ))
                .await;
            match created {
                Ok(()) => {}
                // Hosts started together race here, and IF NOT EXISTS does not spare the loser a
                // unique violation: the schema is there either way.
                Err(e)
                    if e.code().is_some_and(|c| {
                        *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_SCHEMA
                    }) => {}
                Err(e) => return Err(failed(chain(&e))),
            }
        }
        schema::migrate(&mut client, &at)
            .await
            .map_err(|e| match e {
                StoreError::SchemaTooNew { .. } => e,
                other => failed(other.to_string()),
            })?;
        drop(client);
        let (signals, _) = broadcast::channel(SIGNALS);
        let store = Self {
            pool,
            owner: Arc::from(s.owner.as_str()),
            lease: s.lease,
            queued: Arc::default(),
            signals: signals.clone(),
        };
        let (config, tls) = Self::connection(s, &at)?;
        // Bounded: one listener per store, which ends when nobody can receive its signals.
        tokio::spawn(listen(config, tls, signals));
        store.count_all_queued().await?;
        let counter = store.clone();
        // Bounded: one task per store, which ends when the pool closes.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if counter.pool.is_closed() {
                    return;
                }
                let _ = counter.count_all_queued().await;
            }
        });
        Ok(store)
    }

    /// What `LISTEN` hears from now on.
    pub(super) fn signals(&self) -> broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    /// Tells the other hosts of events (`NOTIFY inbox_events`, one round trip; an event over
    /// NOTIFY's 8000 bytes is left out).
    pub(super) async fn publish_events(&self, json: &[String]) -> Result<(), StoreError> {
        let payloads: Vec<String> = json
            .iter()
            .map(|j| format!("{} {j}", self.owner))
            .filter(|p| p.len() < 8000)
            .collect();
        if !payloads.is_empty() {
            self.client()
                .await?
                .execute(
                    "SELECT pg_notify('inbox_events', p) FROM unnest($1::TEXT[]) AS p",
                    &[&payloads],
                )
                .await?;
        }
        Ok(())
    }

    /// A connection of the pool, for the copy from SQLite.
    pub(super) async fn client_for_copy(&self) -> Result<Client, StoreError> {
        self.client().await
    }

    async fn client(&self) -> Result<Client, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// A setting as one of the store's connections has it (`SHOW`), for tests.
    #[cfg(test)]
    pub(crate) async fn setting(&self, name: &str) -> Result<String, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(&format!("SHOW {name}"), &[])
            .await?;
        Ok(row.get(0))
    }

    /// The queue counts; plain counters, so a panic mid-update cannot leave them unusable.
    fn queued(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more (`up`) or one fewer turn queued on `route`, as this host saw it commit.
    fn count_queued(&self, route: String, up: bool) {
        let mut q = self.queued();
        let n = q.entry(route).or_default();
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }

    async fn count_all_queued(&self) -> Result<(), StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT route, count(*) FROM turns WHERE state = 'queued' GROUP BY route",
                &[],
            )
            .await?;
        let counts = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
            .collect();
        *self.queued() = counts;
        Ok(())
    }
}

/// The advisory lock retention pruning takes, so one host prunes at a time.
const PRUNE_LOCK: i64 = 0x0069_6e62_6f79;
/// Rows deleted per prune step.
const PRUNE_BATCH: i64 = 500;

/// Ends a transaction that writes nothing, and waits until it has ended. A dropped transaction
/// is rolled back only once its connection's task writes the ROLLBACK; until then its row locks
/// stay, and another host's `FOR UPDATE SKIP LOCKED` claim passes the row by as if it were taken.
async fn abandon<T>(tx: deadpool_postgres::Transaction<'_>, value: T) -> Result<T, StoreError> {
    tx.rollback().await?;
    Ok(value)
}

#[expect(
    clippy::too_many_arguments,
    reason = "one per column; both callers have them as separate fields"
)]
async fn insert_approval(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    kind: ApprovalKind,
    route: &str,
    message_id: Option<&str>,
    thread_id: &str,
    hold: &Hold,
    at: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO approvals (id, kind, route, message_id, thread_id, reason, created_at,
                                expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &id,
            &kind.as_str(),
            &route,
            &message_id,
            &thread_id,
            &hold.reason,
            &at,
            &hold.expires_at,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_task(tx: &deadpool_postgres::Transaction<'_>, t: &Task) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tasks (id, owner, context_id, route, created_at, rejected, canceled_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &t.id,
            &t.owner,
            &t.context_id,
            &t.route,
            &t.created_at,
            &t.rejected,
            &t.canceled_at,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_input(
    tx: &deadpool_postgres::Transaction<'_>,
    i: &TaskInput,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO task_inputs (task_id, message_id, client_message_id, body, at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &i.task_id,
            &i.message_id,
            &i.client_message_id,
            &i.body,
            &i.at,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_outbound(
    tx: &deadpool_postgres::Transaction<'_>,
    o: &Outbound,
    peers: &[String],
    hold: Option<&Hold>,
    attempt: Option<i64>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO replies (id, in_reply_to, route, type, payload, thread_id, hops, created_at,
                              agent, attempt)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &o.id,
            &o.in_reply_to,
            &o.route,
            &o.msg_type,
            &o.payload,
            &o.thread_id,
            &(o.hops as i64),
            &o.created_at,
            &o.agent,
            &attempt,
        ],
    )
    .await?;
    let (state, due) = match hold {
        None => (DeliveryState::Pending, Some(o.created_at)),
        Some(_) => (DeliveryState::Held, None),
    };
    for p in peers {
        tx.execute(
            "INSERT INTO deliveries (reply_id, peer, state, next_attempt_at) VALUES ($1, $2, $3, $4)",
            &[&o.id, p, &state.as_str(), &due],
        )
        .await?;
        // Each peer gets the thread under its own name for it.
        aliases::ensure(tx, &o.thread_id, p).await?;
    }
    if let Some(hold) = hold {
        insert_approval(
            tx,
            &o.id,
            ApprovalKind::Outbound,
            o.route.as_deref().unwrap_or_default(),
            o.in_reply_to.as_deref(),
            &o.thread_id,
            hold,
            o.created_at,
        )
        .await?;
    }
    Ok(())
}

async fn turn(c: &Client, message_id: &str) -> Result<Option<Turn>, StoreError> {
    let row = c
        .query_opt(
            "SELECT state, attempts, exit_code, signal, error, duration_ms, stdout_tail,
                    stderr_tail, queued_at, started_at, ended_at, canceled_by, canceled_via,
                    canceled_at
             FROM turns WHERE message_id = $1",
            &[&message_id],
        )
        .await?;
    row.map(|r| {
        let canceled = match (r.get(11), r.get(12), r.get(13)) {
            (Some(by), Some(via), Some(at)) => Some(crate::model::Cancel { by, via, at }),
            _ => None,
        };
        Ok(Turn {
            canceled,
            state: parse(&r, 0)?,
            attempts: u32_at(&r, 1),
            exit_code: opt_i32(&r, 2),
            signal: opt_i32(&r, 3),
            error: r.get::<_, Option<String>>(4).map(|e| TurnError::parse(&e)),
            duration_ms: r.get(5),
            stdout_tail: r.get(6),
            stderr_tail: r.get(7),
            queued_at: r.get(8),
            started_at: r.get(9),
            ended_at: r.get(10),
        })
    })
    .transpose()
}

async fn deliveries_of(c: &Client, outbound_id: &str) -> Result<Vec<Delivery>, StoreError> {
    c.query(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.reply_id = $1 ORDER BY d.peer"
        ),
        &[&outbound_id],
    )
    .await?
    .iter()
    .map(|r| delivery_at(r, 0))
    .collect()
}

/// A task with its inputs, their turns and the replies on them.
async fn task_record(c: &Client, task: Task) -> Result<TaskRecord, StoreError> {
    let inputs: Vec<TaskInput> = c
        .query(
            "SELECT task_id, message_id, client_message_id, body, at FROM task_inputs
             WHERE task_id = $1 ORDER BY seq",
            &[&task.id],
        )
        .await?
        .iter()
        .map(|r| TaskInput {
            task_id: r.get(0),
            message_id: r.get(1),
            client_message_id: r.get(2),
            body: r.get(3),
            at: r.get(4),
        })
        .collect();
    let (mut turns, mut replies, mut held) = (Vec::new(), Vec::new(), false);
    for id in inputs.iter().filter_map(|i| i.message_id.as_deref()) {
        if let Some(t) = turn(c, id).await? {
            turns.push((id.to_owned(), t));
        }
        replies.extend(
            c.query(
                &format!(
                    "SELECT {OUTBOUND_COLUMNS} FROM replies r WHERE r.in_reply_to = $1
                       AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.id = r.id
                                       AND (a.verdict IS NULL OR a.verdict = 'rejected'))
                     ORDER BY r.seq"
                ),
                &[&id],
            )
            .await?
            .iter()
            .map(outbound_row),
        );
        held |= c
            .query_opt(
                "SELECT 1 FROM approvals WHERE message_id = $1 AND kind = 'outbound'
                   AND verdict IS NULL LIMIT 1",
                &[&id],
            )
            .await?
            .is_some();
    }
    Ok(TaskRecord {
        task,
        inputs,
        turns,
        replies,
        held,
    })
}
