//! The PostgreSQL backend: several hosts share one queue. A pool of connections (deadpool); every
//! write is one transaction, so concurrent acks share the database's own group commit
//! (`synchronous_commit = on`: a commit returns once its WAL is flushed).
//!
//! Work is handed out with `SELECT … FOR UPDATE SKIP LOCKED` under a lease held by this process's
//! incarnation (`host id/start id`) until a time of the database's clock; a write that ends a turn
//! is fenced by the turn's attempt number and the lease's holder, so a host that lost its lease
//! (paused, cut off) cannot record over the host that took the turn over.

mod aliases;
mod rows;
mod schema;
mod signals;

use self::rows::{
    APPROVAL_COLUMNS, DELIVERY_COLUMNS, MESSAGE_COLUMNS, OUTBOUND_COLUMNS, PUSH_COLUMNS,
    TASK_COLUMNS, approval_row, delivery_at, message_row, opt_i32, outbound_row, parse, push_row,
    task_row, u32_at,
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
use tokio_postgres::types::ToSql;

use crate::model::{
    Approval, ApprovalKind, Attempt, AttemptOutcome, Decide, Decision, Delivery, DeliveryState,
    HostBeat, Message, Outbound, PushConfig, Refusal, ReplyCount, ReplyLimits, Task, TaskInput,
    TaskRecord, Turn, TurnEnd, TurnError, TurnState, Verdict, now_ms,
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
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                    schema.replace('"', "")
                ))
                .await
                .map_err(|e| failed(e.to_string()))?;
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

    pub(super) async fn insert_message(
        &self,
        mut m: Message,
        alias: Option<String>,
        turn: Option<NewTurn>,
        dedup: Option<Dedup>,
        task: Option<TaskLink>,
    ) -> Result<Inserted, StoreError> {
        if alias.is_none()
            && dedup.is_none()
            && task.is_none()
            && turn.as_ref().is_none_or(|t| t.hold.is_none())
        {
            return self.insert_plain(m, turn).await;
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if let Some(d) = &dedup {
            // The key is taken by this insert, or by a live earlier one: the unique key decides,
            // so two hosts that get the same key at once make one message.
            let mine = tx
                .query_opt(
                    "INSERT INTO dedup (sender, key, message_id, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (sender, key) DO UPDATE
                         SET message_id = EXCLUDED.message_id, created_at = EXCLUDED.created_at
                         WHERE dedup.created_at < $5
                     RETURNING message_id",
                    &[&m.sender, &d.key, &m.id, &m.received_at, &d.since],
                )
                .await?;
            if mine.is_none() {
                let original: String = tx
                    .query_one(
                        "SELECT message_id FROM dedup WHERE sender = $1 AND key = $2",
                        &[&m.sender, &d.key],
                    )
                    .await?
                    .get(0);
                return Ok(Inserted::Duplicate(original));
            }
        }
        if let Some(t) = &turn {
            // Exact for this transaction's view; two hosts at the limit at once may each add one.
            let n: i64 = tx
                .query_one(
                    "SELECT count(*) FROM turns WHERE route = $1 AND state = 'queued'",
                    &[&m.route],
                )
                .await?
                .get(0);
            if n as usize >= t.max_queued {
                return Ok(Inserted::QueueFull {
                    max_queued: t.max_queued,
                });
            }
        }
        if let Some(alias) = &alias {
            m.thread_id = aliases::resolve(&tx, &m.sender, alias, &m.thread_id).await?;
        }
        tx.execute(
            "INSERT INTO messages (id, sender, route, type, payload, thread_id, in_reply_to, hops,
                                   sender_ref, received_at, mailbox)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &m.id,
                &m.sender,
                &m.route,
                &m.msg_type,
                &m.payload,
                &m.thread_id,
                &m.in_reply_to,
                &(m.hops as i64),
                &m.sender_ref,
                &m.received_at,
                &m.mailbox,
            ],
        )
        .await?;
        let mut queued = false;
        if let Some(t) = &turn {
            let state = if t.hold.is_some() {
                TurnState::AwaitingApproval
            } else {
                queued = true;
                TurnState::Queued
            };
            tx.execute(
                "INSERT INTO turns (message_id, route, state, queued_at) VALUES ($1, $2, $3, $4)",
                &[&m.id, &m.route, &state.as_str(), &m.received_at],
            )
            .await?;
            if let Some(hold) = &t.hold {
                insert_approval(
                    &tx,
                    &m.id,
                    ApprovalKind::Inbound,
                    &m.route,
                    Some(&m.id),
                    &m.thread_id,
                    hold,
                    m.received_at,
                )
                .await?;
            }
        }
        if let Some(link) = &task {
            if let Some(t) = &link.new {
                insert_task(&tx, t).await?;
            }
            insert_input(&tx, &link.input).await?;
        }
        tx.commit().await?;
        if queued {
            self.count_queued(m.route.clone(), true);
        }
        Ok(Inserted::New)
    }

    /// The common ack (no idempotency key, no task, not held) as one statement, committed on its
    /// own: one round trip instead of BEGIN, the statements and COMMIT. With a turn, the queue's
    /// limit is checked in the same statement.
    async fn insert_plain(
        &self,
        m: Message,
        turn: Option<NewTurn>,
    ) -> Result<Inserted, StoreError> {
        let c = self.client().await?;
        let hops = m.hops as i64;
        let values: [&(dyn ToSql + Sync); 11] = [
            &m.id,
            &m.sender,
            &m.route,
            &m.msg_type,
            &m.payload,
            &m.thread_id,
            &m.in_reply_to,
            &hops,
            &m.sender_ref,
            &m.received_at,
            &m.mailbox,
        ];
        let Some(t) = turn else {
            c.execute(
                "INSERT INTO messages (id, sender, route, type, payload, thread_id, in_reply_to,
                                       hops, sender_ref, received_at, mailbox)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &values,
            )
            .await?;
            return Ok(Inserted::New);
        };
        let max = t.max_queued as i64;
        let mut params: Vec<&(dyn ToSql + Sync)> = values.to_vec();
        params.push(&max);
        let inserted = c
            .execute(
                "WITH m AS (
                     INSERT INTO messages (id, sender, route, type, payload, thread_id,
                                           in_reply_to, hops, sender_ref, received_at, mailbox)
                     SELECT $1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::TEXT, $6::TEXT, $7::TEXT,
                            $8::BIGINT, $9::TEXT, $10::BIGINT, $11::BOOLEAN
                     WHERE (SELECT count(*) FROM turns WHERE route = $3::TEXT AND state = 'queued')
                           < $12::BIGINT
                     RETURNING id, route, received_at)
                 INSERT INTO turns (message_id, route, state, queued_at)
                 SELECT id, route, 'queued', received_at FROM m",
                &params,
            )
            .await?;
        if inserted == 0 {
            return Ok(Inserted::QueueFull {
                max_queued: t.max_queued,
            });
        }
        self.count_queued(m.route.clone(), true);
        Ok(Inserted::New)
    }

    pub(super) async fn insert_task(&self, task: Task, input: TaskInput) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        insert_task(&tx, &task).await?;
        insert_input(&tx, &input).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn cancel_task(
        &self,
        task_id: &str,
        at: i64,
    ) -> Result<Option<Canceled>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE tasks SET canceled_at = $2 WHERE id = $1 AND canceled_at IS NULL",
                &[&task_id, &at],
            )
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        let latest = tx
            .query_opt(
                "SELECT t.message_id, t.route, t.state FROM task_inputs i
                 JOIN turns t ON t.message_id = i.message_id
                 WHERE i.task_id = $1 ORDER BY i.seq DESC LIMIT 1 FOR UPDATE OF t",
                &[&task_id],
            )
            .await?;
        let Some(row) = latest else {
            tx.commit().await?;
            return Ok(Some(Canceled { turn: None }));
        };
        let (message_id, route): (String, String) = (row.get(0), row.get(1));
        let state: TurnState = parse(&row, 2)?;
        if state.is_final() {
            tx.commit().await?;
            return Ok(Some(Canceled { turn: None }));
        }
        // The host that runs it sees `canceled` when it next renews its lease, and its end is
        // refused by the fence.
        tx.execute(
            "UPDATE turns SET state = 'canceled', ended_at = $2,
                              error = 'canceled: the client cancelled the task'
             WHERE message_id = $1",
            &[&message_id, &at],
        )
        .await?;
        tx.execute(
            "UPDATE tokens SET expires_at = $2 WHERE message_id = $1",
            &[&message_id, &at],
        )
        .await?;
        tx.execute(
            "UPDATE approvals SET verdict = 'rejected', decided_by = 'client', via = 'a2a',
                                  decided_at = $2, decision_reason = 'the client cancelled the task'
             WHERE id = $1 AND verdict IS NULL",
            &[&message_id, &at],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Canceled {
            turn: Some((message_id, route, state)),
        }))
    }

    pub(super) async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"),
                &[&id],
            )
            .await?;
        match row {
            Some(r) => Ok(Some(task_record(&c, task_row(&r)).await?)),
            None => Ok(None),
        }
    }

    pub(super) async fn agent_started(
        &self,
        agent: &str,
        thread: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM replies WHERE agent = $1 AND thread_id = $2 LIMIT 1",
                &[&agent, &thread],
            )
            .await?
            .is_some())
    }

    pub(super) async fn task_of_message(
        &self,
        message_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT task_id FROM task_inputs WHERE message_id = $1",
                &[&message_id],
            )
            .await?
            .map(|r| r.get(0)))
    }

    pub(super) async fn tasks(&self, f: TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks
                     WHERE ($1::TEXT IS NULL OR owner = $1) AND ($2::TEXT IS NULL OR context_id = $2)
                     ORDER BY seq DESC LIMIT $3"
                ),
                &[&f.owner, &f.context_id, &(f.limit as i64)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(task_record(&c, task_row(r)).await?);
        }
        Ok(out)
    }

    pub(super) async fn put_push_config(&self, p: PushConfig) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO push_configs
                     (task_id, id, url, token, auth_scheme, credentials, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (task_id, id) DO UPDATE SET
                     url = EXCLUDED.url, token = EXCLUDED.token,
                     auth_scheme = EXCLUDED.auth_scheme, credentials = EXCLUDED.credentials,
                     created_at = EXCLUDED.created_at, pushed = NULL, done = false",
                &[
                    &p.task_id,
                    &p.id,
                    &p.url,
                    &p.token,
                    &p.auth_scheme,
                    &p.credentials,
                    &p.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn delete_push_config(
        &self,
        task_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .client()
            .await?
            .execute(
                "DELETE FROM push_configs WHERE task_id = $1 AND id = $2",
                &[&task_id, &id],
            )
            .await?
            > 0)
    }

    pub(super) async fn push_config(
        &self,
        task_id: &str,
        id: &str,
    ) -> Result<Option<PushConfig>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {PUSH_COLUMNS} FROM push_configs WHERE task_id = $1 AND id = $2"),
                &[&task_id, &id],
            )
            .await?
            .map(|r| push_row(&r)))
    }

    pub(super) async fn push_configs(
        &self,
        task_id: &str,
        pending_only: bool,
    ) -> Result<Vec<PushConfig>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {PUSH_COLUMNS} FROM push_configs
                     WHERE task_id = $1 AND (NOT $2 OR NOT done) ORDER BY created_at, id"
                ),
                &[&task_id, &pending_only],
            )
            .await?
            .iter()
            .map(push_row)
            .collect())
    }

    pub(super) async fn push_pending(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT DISTINCT task_id FROM push_configs WHERE NOT done LIMIT $1",
                &[&(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub(super) async fn enqueue_push(&self, push: Push) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The row's update is the claim: of two hosts pushing the same change, one changes it.
        let changed = tx
            .execute(
                "UPDATE push_configs SET pushed = $3, done = $4
                 WHERE task_id = $1 AND id = $2 AND NOT done AND pushed IS DISTINCT FROM $3",
                &[&push.task_id, &push.config_id, &push.state_key, &push.last],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        let target = crate::model::push_target(&push.task_id, &push.config_id);
        insert_outbound(&tx, &push.outbound, &[target], None, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn claim_turn(&self, claim: TurnClaim) -> Result<Option<Claimed>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "UPDATE turns SET state = 'running', attempts = attempts + 1, started_at = $2,
                                  ended_at = NULL, leased_by = $3,
                                  lease_until = now() + make_interval(secs => $4)
                 WHERE message_id = (
                     SELECT message_id FROM turns WHERE route = $1 AND state = 'queued'
                     ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING message_id, attempts",
                &[&claim.route, &now_ms(), &&*self.owner, &secs(self.lease)],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (id, attempts): (String, u32) = (row.get(0), u32_at(&row, 1));
        let terms = serde_json::to_string(&claim.terms)
            .map_err(|e| StoreError::Corrupt(format!("a turn's terms: {e}")))?;
        tx.execute(
            "INSERT INTO tokens (hash, message_id, route, expires_at, attempt, terms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &&claim.token_hash.0[..],
                &id,
                &claim.route,
                &claim.token_expires_at,
                &i64::from(attempts),
                &terms,
            ],
        )
        .await?;
        let message = message_row(
            &tx.query_one(
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"),
                &[&id],
            )
            .await?,
        );
        tx.commit().await?;
        self.count_queued(claim.route.clone(), false);
        Ok(Some(Claimed {
            message,
            lease: Lease {
                message_id: id,
                generation: attempts,
            },
        }))
    }

    pub(super) async fn renew_lease(
        &self,
        lease: &Lease,
        length: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self
            .client()
            .await?
            .execute(
                "UPDATE turns SET lease_until = now() + make_interval(secs => $3)
                 WHERE message_id = $1 AND attempts = $2 AND state = 'running' AND leased_by = $4",
                &[
                    &lease.message_id,
                    &(lease.generation as i64),
                    &secs(length),
                    &&*self.owner,
                ],
            )
            .await?
            > 0)
    }

    pub(super) async fn end_turn(
        &self,
        lease: &Lease,
        end: TurnEnd,
        token_expires_at: i64,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE turns SET state = $3, exit_code = $4, signal = $5, error = $6,
                                  duration_ms = $7, stdout_tail = $8, stderr_tail = $9,
                                  ended_at = $10, leased_by = NULL, lease_until = NULL
                 WHERE message_id = $1 AND attempts = $2 AND state = 'running' AND leased_by = $11",
                &[
                    &lease.message_id,
                    &(lease.generation as i64),
                    &end.state.as_str(),
                    &end.exit_code.map(i64::from),
                    &end.signal.map(i64::from),
                    &end.error.as_ref().map(TurnError::to_string),
                    &end.duration_ms,
                    &end.stdout_tail,
                    &end.stderr_tail,
                    &now_ms(),
                    &&*self.owner,
                ],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE tokens SET expires_at = $2 WHERE message_id = $1",
            &[&lease.message_id, &token_expires_at],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Turns whose holder is gone: any lease that ran out, and any held by an earlier incarnation
    /// of this host (it restarted, so that process is gone).
    pub(super) async fn recover_interrupted(&self) -> Result<Vec<Interrupted>, StoreError> {
        let error = TurnError::new("interrupted", "the host stopped while the agent ran");
        let host = self.owner.split('/').next().unwrap_or_default();
        let rows = self
            .client()
            .await?
            .query(
                "WITH gone AS (
                     UPDATE turns SET state = 'interrupted', ended_at = $1, error = $2,
                                      leased_by = NULL, lease_until = NULL
                     WHERE state = 'running'
                       AND (lease_until < now()
                            OR (split_part(leased_by, '/', 1) = $3 AND leased_by <> $4))
                     RETURNING message_id, route, attempts)
                 SELECT g.message_id, g.route, g.attempts,
                        EXISTS (SELECT 1 FROM replies r
                                WHERE r.in_reply_to = g.message_id AND r.attempt = g.attempts)
                 FROM gone g",
                &[&now_ms(), &error.to_string(), &host, &&*self.owner],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Interrupted {
                message_id: r.get(0),
                route: r.get(1),
                attempts: u32_at(r, 2),
                replied: r.get(3),
            })
            .collect())
    }

    pub(super) async fn insert_refusal(&self, r: Refusal) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO refusals (thread_id, peer, type, code, detail, at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &r.thread_id,
                    &r.peer,
                    &r.msg_type,
                    &r.code,
                    &r.detail,
                    &r.at,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn refusals(&self, thread: &str) -> Result<Vec<Refusal>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT thread_id, peer, type, code, detail, at FROM refusals
                 WHERE thread_id = $1 ORDER BY seq LIMIT 100",
                &[&thread],
            )
            .await?
            .iter()
            .map(|r| Refusal {
                thread_id: r.get(0),
                peer: r.get(1),
                msg_type: r.get(2),
                code: r.get(3),
                detail: r.get(4),
                at: r.get(5),
            })
            .collect())
    }

    pub(super) async fn probe(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO probes (holder, at) VALUES ($1, $2)
                 ON CONFLICT (holder) DO UPDATE SET at = EXCLUDED.at",
                &[&&*self.owner, &now_ms()],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn interrupt(&self, lease: &Lease) -> Result<Option<Interrupted>, StoreError> {
        let error = TurnError::new("interrupted", "the inbox stopped while the agent ran");
        let row = self
            .client()
            .await?
            .query_opt(
                "WITH gone AS (
                     UPDATE turns SET state = 'interrupted', ended_at = $3, error = $4,
                                      leased_by = NULL, lease_until = NULL
                     WHERE message_id = $1 AND attempts = $2 AND state = 'running'
                       AND leased_by = $5
                     RETURNING message_id, route, attempts)
                 SELECT g.route,
                        EXISTS (SELECT 1 FROM replies r
                                WHERE r.in_reply_to = g.message_id AND r.attempt = g.attempts)
                 FROM gone g",
                &[
                    &lease.message_id,
                    &i64::from(lease.generation),
                    &now_ms(),
                    &error.to_string(),
                    &&*self.owner,
                ],
            )
            .await?;
        Ok(row.map(|r| Interrupted {
            message_id: lease.message_id.clone(),
            route: r.get(0),
            attempts: lease.generation,
            replied: r.get(1),
        }))
    }

    pub(super) async fn requeue(&self, message_id: &str) -> Result<Requeued, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The row lock first: a reply of this attempt being committed holds it (see
        // `attempt_is_current`), so the next statement, with a snapshot of its own, sees it.
        let Some(row) = tx
            .query_opt(
                "SELECT attempts FROM turns WHERE message_id = $1 AND state = 'interrupted'
                 FOR UPDATE",
                &[&message_id],
            )
            .await?
        else {
            return Ok(Requeued::NotInterrupted);
        };
        let attempts = u32_at(&row, 0);
        let replied: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM replies WHERE in_reply_to = $1 AND attempt = $2)",
                &[&message_id, &i64::from(attempts)],
            )
            .await?
            .get(0);
        if replied {
            return Ok(Requeued::Replied);
        }
        let route: String = tx
            .query_one(
                "UPDATE turns SET state = 'queued' WHERE message_id = $1 RETURNING route",
                &[&message_id],
            )
            .await?
            .get(0);
        tx.commit().await?;
        self.count_queued(route, true);
        Ok(Requeued::Queued)
    }

    pub(super) async fn fail_interrupted(
        &self,
        message_id: &str,
        error: TurnError,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = now_ms();
        tx.execute(
            "UPDATE turns SET state = 'interrupted', error = $2, ended_at = $3
             WHERE message_id = $1",
            &[&message_id, &error.to_string(), &now],
        )
        .await?;
        // Given up: an agent still alive from that attempt can no longer answer for it.
        tx.execute(
            "UPDATE tokens SET expires_at = least(expires_at, $2) WHERE message_id = $1",
            &[&message_id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn queued_routes(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT DISTINCT route FROM turns WHERE state = 'queued' ORDER BY route",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub(super) fn queue_depth(&self) -> usize {
        self.queued().values().sum()
    }

    pub(super) fn queue_depths(&self) -> Vec<(String, usize)> {
        let mut d: Vec<(String, usize)> = self
            .queued()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.clone(), *n))
            .collect();
        d.sort();
        d
    }

    pub(super) async fn heartbeat(&self, b: HostBeat) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO hosts (host_id, incarnation, version, config_hash, started_at,
                                    last_seen, running)
                 VALUES ($1, $2, $3, $4, now(), now(), $5)
                 ON CONFLICT (host_id) DO UPDATE SET
                     started_at = CASE WHEN hosts.incarnation = EXCLUDED.incarnation
                                       THEN hosts.started_at ELSE now() END,
                     incarnation = EXCLUDED.incarnation, version = EXCLUDED.version,
                     config_hash = EXCLUDED.config_hash, last_seen = now(),
                     running = EXCLUDED.running",
                &[
                    &b.host_id,
                    &b.incarnation,
                    &b.version,
                    &b.config_hash,
                    &i64::from(b.running),
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn hosts(&self, within: Duration) -> Result<Vec<HostBeat>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT host_id, incarnation, version, config_hash, running,
                        (extract(epoch FROM last_seen) * 1000)::BIGINT,
                        (extract(epoch FROM now() - last_seen) * 1000)::BIGINT
                 FROM hosts WHERE last_seen > now() - make_interval(secs => $1)
                 ORDER BY host_id",
                &[&secs(within)],
            )
            .await?
            .iter()
            .map(|r| HostBeat {
                host_id: r.get(0),
                incarnation: r.get(1),
                version: r.get(2),
                config_hash: r.get(3),
                running: u32_at(r, 4),
                last_seen: r.get(5),
                age_ms: r.get(6),
            })
            .collect())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    pub(super) async fn insert_outbound(
        &self,
        outbound: Outbound,
        peers: Vec<String>,
        hold: Option<Hold>,
        fence: Option<Lease>,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if let Some(f) = &fence {
            // Held until the commit: a takeover's requeue of this turn waits for this reply, and
            // then sees it (see `requeue`).
            let current: Option<bool> = tx
                .query_opt(
                    "SELECT ($2::BIGINT = 0 OR attempts = $2::BIGINT) AND state NOT IN ('queued', 'interrupted')
                     FROM turns WHERE message_id = $1 FOR SHARE",
                    &[&f.message_id, &i64::from(f.generation)],
                )
                .await?
                .map(|r| r.get(0));
            if current != Some(true) {
                return Ok(false);
            }
        }
        let attempt = fence.as_ref().map(|f| i64::from(f.generation));
        insert_outbound(&tx, &outbound, &peers, hold.as_ref(), attempt).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn decide(&self, d: Decide) -> Result<Decided, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1 FOR UPDATE"),
                &[&d.id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Decided::NotFound);
        };
        let mut approval = approval_row(&row)?;
        if approval.decision.is_some() {
            return Ok(Decided::Already(approval));
        }
        let mut original_payload = None;
        let mut queued = false;
        match (approval.kind, d.verdict) {
            (ApprovalKind::Inbound, Verdict::Approved) => {
                queued = tx
                    .execute(
                        "UPDATE turns SET state = 'queued'
                         WHERE message_id = $1 AND state = 'awaiting_approval'",
                        &[&d.id],
                    )
                    .await?
                    > 0;
            }
            (ApprovalKind::Inbound, Verdict::Rejected) => {
                let error = TurnError::new("rejected", d.reason.clone().unwrap_or_default());
                tx.execute(
                    "UPDATE turns SET state = 'rejected', ended_at = $2, error = $3
                     WHERE message_id = $1 AND state = 'awaiting_approval'",
                    &[&d.id, &d.at, &error.to_string()],
                )
                .await?;
            }
            (ApprovalKind::Outbound, Verdict::Approved) => {
                if let Some(edited) = &d.edited {
                    original_payload = tx
                        .query_opt("SELECT payload FROM replies WHERE id = $1", &[&d.id])
                        .await?
                        .map(|r| r.get::<_, String>(0));
                    tx.execute(
                        "UPDATE replies SET payload = $2 WHERE id = $1",
                        &[&d.id, edited],
                    )
                    .await?;
                }
                tx.execute(
                    "UPDATE deliveries SET state = 'pending', next_attempt_at = $2
                     WHERE reply_id = $1 AND state = 'held'",
                    &[&d.id, &d.at],
                )
                .await?;
            }
            (ApprovalKind::Outbound, Verdict::Rejected) => {
                let why = format!(
                    "rejected by {}: {}",
                    d.by,
                    d.reason.as_deref().unwrap_or_default()
                );
                tx.execute(
                    "UPDATE deliveries SET state = 'withheld', last_error = $2
                     WHERE reply_id = $1 AND state = 'held'",
                    &[&d.id, &why],
                )
                .await?;
            }
        }
        tx.execute(
            "UPDATE approvals SET verdict = $2, decided_by = $3, via = $4, decided_at = $5,
                                  decision_reason = $6, original_payload = $7
             WHERE id = $1",
            &[
                &d.id,
                &d.verdict.as_str(),
                &d.by,
                &d.via,
                &d.at,
                &d.reason,
                &original_payload,
            ],
        )
        .await?;
        tx.commit().await?;
        if queued {
            self.count_queued(approval.route.clone(), true);
        }
        approval.decision = Some(Decision {
            verdict: d.verdict,
            by: d.by,
            via: d.via,
            at: d.at,
            reason: d.reason,
            original_payload,
        });
        Ok(Decided::Now(approval))
    }

    pub(super) async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        self.client()
            .await?
            .query_opt(
                &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"),
                &[&id],
            )
            .await?
            .map(|r| approval_row(&r))
            .transpose()
    }

    pub(super) async fn approvals(
        &self,
        waiting_only: bool,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        let sql = if waiting_only {
            format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE verdict IS NULL
                 ORDER BY expires_at, created_at LIMIT $1"
            )
        } else {
            format!("SELECT {APPROVAL_COLUMNS} FROM approvals ORDER BY created_at DESC LIMIT $1")
        };
        self.client()
            .await?
            .query(&sql, &[&(limit as i64)])
            .await?
            .iter()
            .map(approval_row)
            .collect()
    }

    pub(super) async fn approvals_for(
        &self,
        message_id: &str,
    ) -> Result<Vec<Approval>, StoreError> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE message_id = $1
                     ORDER BY created_at"
                ),
                &[&message_id],
            )
            .await?
            .iter()
            .map(approval_row)
            .collect()
    }

    pub(super) async fn expired_approvals(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT id FROM approvals WHERE verdict IS NULL AND expires_at <= $1
                 ORDER BY expires_at LIMIT $2",
                &[&now, &(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub(super) async fn claim_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // One host attempts a due delivery at a time: its lease, taken here, skips the rows
        // another host is taking, and outlives a host that dies mid-attempt only until it ends.
        let rows = tx
            .query(
                "UPDATE deliveries d SET leased_by = $3,
                                         lease_until = now() + make_interval(secs => $4)
                 FROM (SELECT reply_id, peer FROM deliveries
                       WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1
                         AND (lease_until IS NULL OR lease_until < now())
                       ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
                 WHERE d.reply_id = due.reply_id AND d.peer = due.peer
                 RETURNING d.reply_id, d.peer, d.attempts",
                &[&now, &(limit as i64), &&*self.owner, &secs(self.lease)],
            )
            .await?;
        let mut due = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.get(0);
            let o = tx
                .query_one(
                    &format!("SELECT {OUTBOUND_COLUMNS} FROM replies r WHERE r.id = $1"),
                    &[&id],
                )
                .await?;
            let outbound = outbound_row(&o);
            let peer: String = r.get(1);
            let thread_alias = aliases::alias_of(&tx, &outbound.thread_id, &peer)
                .await?
                .unwrap_or_else(|| outbound.thread_id.clone());
            due.push(DueDelivery {
                outbound,
                peer,
                attempts: u32_at(r, 2),
                thread_alias,
            });
        }
        tx.commit().await?;
        // Soonest first, as the claim ordered them.
        Ok(due)
    }

    pub(super) async fn record_attempt(
        &self,
        outbound_id: &str,
        peer: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let row = outcome.row(now);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n: i64 = tx
            .query_one(
                "UPDATE deliveries SET state = $3, attempts = attempts + 1, next_attempt_at = $4,
                                       last_status = $5, last_error = $6, delivered_at = $7,
                                       leased_by = NULL, lease_until = NULL
                 WHERE reply_id = $1 AND peer = $2 RETURNING attempts",
                &[
                    &outbound_id,
                    &peer,
                    &row.state.as_str(),
                    &row.next_at,
                    &row.status,
                    &row.error,
                    &row.delivered_at,
                ],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO attempts (reply_id, peer, n, at, status, error)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&outbound_id, &peer, &n, &now, &row.status, &row.error],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn release_delivery(
        &self,
        outbound_id: &str,
        peer: &str,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE deliveries SET leased_by = NULL, lease_until = NULL
                 WHERE reply_id = $1 AND peer = $2 AND leased_by = $3",
                &[&outbound_id, &peer, &&*self.owner],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn next_due(&self, after: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_one(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE next_attempt_at > $1",
                &[&after],
            )
            .await?
            .get(0))
    }

    pub(super) async fn retry_dead(&self, outbound_id: &str) -> Result<usize, StoreError> {
        Ok(self
            .client()
            .await?
            .execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2
                 WHERE reply_id = $1 AND state = 'dead'",
                &[&outbound_id, &now_ms()],
            )
            .await? as usize)
    }

    pub(super) async fn prune(&self, before: i64, dedup_before: i64) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // One host prunes at a time; the others find the lock taken and skip this round.
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(0);
        }
        tx.execute("DELETE FROM dedup WHERE created_at < $1", &[&dedup_before])
            .await?;
        tx.execute("DELETE FROM refusals WHERE at < $1", &[&before])
            .await?;
        let ids: Vec<String> = tx
            .query(
                "SELECT m.id FROM messages m LEFT JOIN turns t ON t.message_id = m.id
                 WHERE m.received_at < $1
                   AND (t.state IS NULL OR t.state IN ('done', 'failed', 'timed_out', 'interrupted', 'canceled', 'rejected'))
                   AND NOT EXISTS (SELECT 1 FROM replies r JOIN deliveries d ON d.reply_id = r.id
                                   WHERE r.in_reply_to = m.id AND d.state IN ('pending', 'retrying', 'held'))
                   AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.message_id = m.id AND a.verdict IS NULL)
                 ORDER BY m.seq LIMIT $2",
                &[&before, &PRUNE_BATCH],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for sql in [
            "DELETE FROM attempts WHERE reply_id IN (SELECT id FROM replies WHERE in_reply_to = ANY($1))",
            "DELETE FROM deliveries WHERE reply_id IN (SELECT id FROM replies WHERE in_reply_to = ANY($1))",
            "DELETE FROM replies WHERE in_reply_to = ANY($1)",
            "DELETE FROM approvals WHERE message_id = ANY($1)",
            "DELETE FROM tokens WHERE message_id = ANY($1)",
            "DELETE FROM reply_counts WHERE message_id = ANY($1)",
            "DELETE FROM task_inputs WHERE message_id = ANY($1)",
            "DELETE FROM turns WHERE message_id = ANY($1)",
            "DELETE FROM messages WHERE id = ANY($1)",
        ] {
            tx.execute(sql, &[&ids]).await?;
        }
        let orphans: Vec<String> = tx
            .query(
                "SELECT r.id FROM replies r WHERE r.created_at < $1
                   AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.in_reply_to)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.reply_id = r.id
                                   AND d.state IN ('pending', 'retrying', 'held'))
                 ORDER BY r.seq LIMIT $2",
                &[&before, &PRUNE_BATCH],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for sql in [
            "DELETE FROM attempts WHERE reply_id = ANY($1)",
            "DELETE FROM deliveries WHERE reply_id = ANY($1)",
            "DELETE FROM approvals WHERE id = ANY($1)",
            "DELETE FROM replies WHERE id = ANY($1)",
        ] {
            tx.execute(sql, &[&orphans]).await?;
        }
        let tasks: Vec<String> = tx
            .query(
                "SELECT t.id FROM tasks t WHERE t.created_at < $1
                   AND NOT EXISTS (SELECT 1 FROM task_inputs i WHERE i.task_id = t.id
                                   AND i.message_id IS NOT NULL)
                 ORDER BY t.seq LIMIT $2",
                &[&before, &PRUNE_BATCH],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for sql in [
            "DELETE FROM push_configs WHERE task_id = ANY($1)",
            "DELETE FROM task_inputs WHERE task_id = ANY($1)",
            "DELETE FROM tasks WHERE id = ANY($1)",
        ] {
            tx.execute(sql, &[&tasks]).await?;
        }
        tx.commit().await?;
        Ok(ids.len() + orphans.len() + tasks.len())
    }

    pub(super) async fn token(&self, hash: TokenHash) -> Result<Option<Grant>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT t.message_id, t.route, m.thread_id, m.hops, t.expires_at,
                        tu.state IN ('running', 'queued'), t.attempt, t.terms,
                        coalesce((t.attempt = 0 OR t.attempt = tu.attempts)
                                 AND tu.state NOT IN ('queued', 'interrupted'), false)
                 FROM tokens t JOIN messages m ON m.id = t.message_id
                 LEFT JOIN turns tu ON tu.message_id = t.message_id
                 WHERE t.hash = $1",
                &[&&hash.0[..]],
            )
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let running: Option<bool> = r.get(5);
        let terms: Option<String> = r.get(7);
        Ok(Some(Grant {
            message_id: r.get(0),
            attempt: u32_at(&r, 6),
            route: r.get(1),
            thread_id: r.get(2),
            hops: u32_at(&r, 3),
            expires_at: if running == Some(true) {
                None
            } else {
                Some(r.get(4))
            },
            current: r.get(8),
            terms: terms
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("a token's terms: {e}")))?,
        }))
    }

    pub(super) async fn thread_of(
        &self,
        peer: &str,
        alias: &str,
    ) -> Result<Option<String>, StoreError> {
        aliases::thread_of(&self.client().await?, peer, alias).await
    }

    pub(super) async fn alias_of(
        &self,
        thread: &str,
        peer: &str,
    ) -> Result<Option<String>, StoreError> {
        aliases::alias_of(&self.client().await?, thread, peer).await
    }

    pub(super) async fn revoke_session(&self, id: &str, until: i64) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO revoked_sessions (id, until) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&id, &until],
        )
        .await?;
        // Sent at commit: every host's cache learns of it at once.
        tx.execute(
            "SELECT pg_notify('inbox_work', 'signed-out:' || $1::TEXT)",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn revoked_sessions(
        &self,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, until FROM revoked_sessions WHERE until > $1",
                &[&now],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(super) async fn count_reply(
        &self,
        message_id: &str,
        attempt: u32,
        limits: ReplyLimits,
        now: i64,
    ) -> Result<Result<(), i64>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let attempt = i64::from(attempt);
        // The row is made first, so the lock below holds it whoever counts the first reply.
        tx.execute(
            "INSERT INTO reply_counts (message_id, attempt, total, window_start, in_window)
             VALUES ($1, $2, 0, 0, 0) ON CONFLICT DO NOTHING",
            &[&message_id, &attempt],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT total, window_start, in_window FROM reply_counts
                 WHERE message_id = $1 AND attempt = $2 FOR UPDATE",
                &[&message_id, &attempt],
            )
            .await?;
        let count = ReplyCount {
            total: u32_at(&row, 0),
            window_start: row.get(1),
            in_window: u32_at(&row, 2),
        };
        let next = match count.next(limits, now) {
            Ok(next) => next,
            Err(wait) => return Ok(Err(wait)),
        };
        tx.execute(
            "UPDATE reply_counts SET total = $3, window_start = $4, in_window = $5
             WHERE message_id = $1 AND attempt = $2",
            &[
                &message_id,
                &attempt,
                &i64::from(next.total),
                &next.window_start,
                &i64::from(next.in_window),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    pub(super) async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"),
                &[&id],
            )
            .await?
            .map(|r| message_row(&r)))
    }

    pub(super) async fn turn(&self, message_id: &str) -> Result<Option<Turn>, StoreError> {
        let c = self.client().await?;
        turn(&c, message_id).await
    }

    pub(super) async fn outbound_for(
        &self,
        message_id: &str,
    ) -> Result<Vec<(Outbound, Vec<Delivery>)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {OUTBOUND_COLUMNS} FROM replies r WHERE r.in_reply_to = $1 ORDER BY r.seq"
                ),
                &[&message_id],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let o = outbound_row(r);
            let d = deliveries_of(&c, &o.id).await?;
            out.push((o, d));
        }
        Ok(out)
    }

    pub(super) async fn outbound(
        &self,
        id: &str,
    ) -> Result<Option<(Outbound, Vec<Delivery>)>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {OUTBOUND_COLUMNS} FROM replies r WHERE r.id = $1"),
                &[&id],
            )
            .await?;
        match row {
            Some(r) => {
                let o = outbound_row(&r);
                let d = deliveries_of(&c, &o.id).await?;
                Ok(Some((o, d)))
            }
            None => Ok(None),
        }
    }

    pub(super) async fn list_messages(
        &self,
        f: MessageFilter,
    ) -> Result<Vec<(Message, Option<TurnState>)>, StoreError> {
        let mut clauses = Vec::new();
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for (column, value) in [
            ("m.route", &f.route),
            ("m.thread_id", &f.thread),
            ("m.sender", &f.sender),
        ] {
            if let Some(v) = value {
                values.push(v);
                clauses.push(format!("{column} = ${}", values.len()));
            }
        }
        let limit = f.limit as i64;
        values.push(&limit);
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, t.state FROM messages m
             LEFT JOIN turns t ON t.message_id = m.id
             {filter}
             ORDER BY m.seq DESC LIMIT ${}",
            values.len()
        );
        self.client()
            .await?
            .query(&sql, &values)
            .await?
            .iter()
            .map(|r| {
                let state = match r.get::<_, Option<String>>(11) {
                    Some(s) => Some(
                        s.parse::<TurnState>()
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    ),
                    None => None,
                };
                Ok((message_row(r), state))
            })
            .collect()
    }

    pub(super) async fn outbound_to_peer(
        &self,
        peer: &str,
        thread: Option<String>,
        limit: u32,
    ) -> Result<Vec<Outbound>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {OUTBOUND_COLUMNS} FROM replies r JOIN deliveries d ON d.reply_id = r.id
                     WHERE d.peer = $1 AND ($2::TEXT IS NULL OR r.thread_id = $2)
                       AND d.state NOT IN ('held', 'withheld')
                     ORDER BY r.seq DESC LIMIT $3"
                ),
                &[&peer, &thread, &(limit as i64)],
            )
            .await?
            .iter()
            .map(outbound_row)
            .collect())
    }

    pub(super) async fn unanswering(
        &self,
        thread: Option<String>,
        limit: u32,
    ) -> Result<Vec<Outbound>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {OUTBOUND_COLUMNS} FROM replies r
                     WHERE r.in_reply_to IS NULL AND r.route IS NULL
                       AND ($1::TEXT IS NULL OR r.thread_id = $1)
                     ORDER BY r.seq DESC LIMIT $2"
                ),
                &[&thread, &(limit as i64)],
            )
            .await?
            .iter()
            .map(outbound_row)
            .collect())
    }

    pub(super) async fn outbox(
        &self,
        dead_only: bool,
        limit: u32,
    ) -> Result<Vec<(Outbound, Delivery)>, StoreError> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {OUTBOUND_COLUMNS}, {DELIVERY_COLUMNS}
                     FROM deliveries d JOIN replies r ON r.id = d.reply_id
                     WHERE (NOT $1 OR d.state = 'dead')
                     ORDER BY r.seq DESC LIMIT $2"
                ),
                &[&dead_only, &(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| Ok((outbound_row(r), delivery_at(r, 9)?)))
            .collect()
    }

    pub(super) async fn attempts(
        &self,
        outbound_id: &str,
        peer: &str,
    ) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT n, at, status, error FROM attempts WHERE reply_id = $1 AND peer = $2
                 ORDER BY seq",
                &[&outbound_id, &peer],
            )
            .await?
            .iter()
            .map(|r| Attempt {
                n: u32_at(r, 0),
                at: r.get(1),
                status: r.get::<_, Option<i64>>(2).map(|s| s as u16),
                error: r.get(3),
            })
            .collect())
    }
}

/// The advisory lock retention pruning takes, so one host prunes at a time.
const PRUNE_LOCK: i64 = 0x0069_6e62_6f79;
/// Rows deleted per prune step.
const PRUNE_BATCH: i64 = 500;

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
                    stderr_tail, queued_at, started_at, ended_at FROM turns WHERE message_id = $1",
            &[&message_id],
        )
        .await?;
    row.map(|r| {
        Ok(Turn {
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
