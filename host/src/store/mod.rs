//! Durable state behind one interface: messages, the turn queue with its leases, reply tokens
//! (hashed), outbound messages and their deliveries, idempotency keys.
//!
//! [`Store`] is what the rest of the host uses; each backend is a module of its own (SQLite, in
//! `sqlite/`, is the embedded default). The store owns the queues: a turn is enqueued with the
//! message that causes it, claimed by whoever runs it under a [`Lease`], and finished fenced by
//! that lease; due deliveries are claimed the same way, so a backend shared by several hosts
//! hands each piece of work to one of them. Nothing outside this module names a database crate.

pub mod copy;
mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

pub use postgres::{PgSettings, PgTls, Signal, describe as describe_postgres};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{
    Approval, Attempt, AttemptOutcome, Decide, Delivery, HostBeat, Message, Outbound, PushConfig,
    Refusal, RemoteKind, RemoteTask, Synchronous, Task, TaskInput, TaskRecord, Turn, TurnEnd,
    TurnError, TurnState,
};
use crate::token::{Grant, TokenHash};

/// What can go wrong with the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or prepared.
    #[error("cannot open the database {path}: {reason}")]
    Open {
        /// Where it is.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The database was written by a newer version of agent-inbox.
    #[error(
        "the database {path} has schema version {found}, newer than the {supported} this binary knows; run the newer agent-inbox, or restore a backup"
    )]
    SchemaTooNew {
        /// Where it is.
        path: PathBuf,
        /// The version it has.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// SQLite said no. Shared, so one failed batch can report to every request in it.
    #[error("database: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// PostgreSQL refused a statement.
    #[error("database: {0}")]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    /// The database cannot be reached now (down, cut off, no free connection in time): nothing
    /// was written; try again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Another process has the SQLite data directory (an inbox runs on it).
    #[error(
        "{holder} runs on the data directory {path}: one inbox per data directory (stop that one first, or give this one another data_dir)"
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// Who holds it, as it wrote itself into the lock file.
        holder: String,
    },
    /// The writer is gone (shutdown or a crash).
    #[error("the store is closed")]
    Closed,
    /// A stored row did not have the expected shape.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        // A disk that is full, failing or mounted read-only: the transaction rolled back, nothing
        // was written, and the same write succeeds once the disk is back. Unavailable, not a bug.
        let why = match e.sqlite_error_code() {
            Some(C::DiskFull) => "the disk is full",
            Some(C::ReadOnly) => "the database is read-only",
            Some(C::SystemIoFailure) => "the disk failed a read or a write",
            Some(C::CannotOpen) => "the database file cannot be opened",
            _ => return StoreError::Sqlite(Arc::new(e)),
        };
        StoreError::Unavailable(format!("{why} ({e})"))
    }
}

/// Which backend and how to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settings {
    /// SQLite in a directory of its own.
    Sqlite {
        /// Where the database lives.
        data_dir: PathBuf,
        /// How durable a commit is.
        synchronous: Synchronous,
        /// How long to wait for another process on the directory (a previous inbox draining)
        /// to let go of it before refusing to open.
        lock_wait: Duration,
    },
    /// PostgreSQL, shared by several hosts.
    Postgres(PgSettings),
}

/// Idempotency for one message: the sender's key and how far back a repeat counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// The `Idempotency-Key` header, or the body's `id`.
    pub key: String,
    /// Keys recorded before this time (ms) no longer count.
    pub since: i64,
}

/// A turn to enqueue with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTurn {
    /// Refuse the message if its route already has this many turns waiting.
    pub max_queued: usize,
    /// Hold the turn for a person to approve before it joins the queue.
    pub hold: Option<Hold>,
}

/// Something held for a person: why, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Why it waits (the route's setting, or a plugin's reason).
    pub reason: String,
    /// When it is rejected on its own (ms).
    pub expires_at: i64,
}

/// What recording a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Nothing with that id waits or waited.
    NotFound,
    /// It was decided before (or its task was cancelled); nothing changed. As it stands.
    Already(Approval),
    /// Recorded now: the turn joined the queue or ended `rejected`; the reply's deliveries are
    /// due or withheld.
    Now(Approval),
}

/// What inserting a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// It is new and committed, with its turn queued if one was asked for.
    New,
    /// The sender sent this key before; nothing was written. The original message's id.
    Duplicate(String),
    /// The route's queue was full; nothing was written.
    QueueFull {
        /// The limit it hit.
        max_queued: usize,
    },
}

/// Who holds a claimed turn, and the fence its writes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The turn's message.
    pub message_id: String,
    /// The claim this lease belongs to: the turn's attempt number. A write with an older
    /// generation than the turn's current one is refused.
    pub generation: u32,
}

/// What a claim of the next queued turn needs: the token its agent gets and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnClaim {
    /// The route whose queue to take from.
    pub route: String,
    /// The hash of the new reply token.
    pub token_hash: TokenHash,
    /// When the token expires if the turn runs to its timeout.
    pub token_expires_at: i64,
    /// What the turn's prompt promises, kept with the token.
    pub terms: crate::model::TurnTerms,
}

/// A turn claimed for running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The message it is for.
    pub message: Message,
    /// The lease to renew and to finish with.
    pub lease: Lease,
}

/// A turn a previous run of the host left running, now marked interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    /// The message it is for.
    pub message_id: String,
    pub route: String,
    /// How many times it has started.
    pub attempts: u32,
    /// Whether that attempt committed a reply (it is then not run again).
    pub replied: bool,
}

/// What settling an interrupted attempt that may run again did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// It is queued again; its token no longer works.
    Queued,
    /// Its attempt committed a reply meanwhile: it stays interrupted and is not run again.
    Replied,
    /// It was not (or no longer) interrupted: nothing changed.
    NotInterrupted,
}

/// A pairing invite: a one-time code, kept as its hash, that lets one inbox join this one as
/// `peer` until `expires_at` (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub code_hash: String,
    pub peer: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: InviteState,
    /// What the joining inbox said, from its join until the pairing is settled.
    pub joined: Option<Joined>,
}

/// What a joining inbox brought, and the key made for it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Where messages to it go (its `/message/{our name}`).
    pub url: String,
    /// The key we sign what we send it with (it made it).
    pub send_key: String,
    /// The key that checks what it sends us (made here).
    pub receive_key: String,
    /// The types its agents' routes take.
    pub takes: Vec<String>,
}

/// Where an invite is: its code not used yet, used by a join, the pairing made, or undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    Open,
    Joined,
    Paired,
    Cancelled,
}

impl InviteState {
    pub fn as_str(self) -> &'static str {
        match self {
            InviteState::Open => "open",
            InviteState::Joined => "joined",
            InviteState::Paired => "paired",
            InviteState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "open" => InviteState::Open,
            "joined" => InviteState::Joined,
            "paired" => InviteState::Paired,
            "cancelled" => InviteState::Cancelled,
            other => return Err(StoreError::Corrupt(format!("an invite's state {other:?}"))),
        })
    }
}

/// An invite from its row's columns: code_hash, peer, created_at, expires_at, state, url,
/// send_key, receive_key, takes (JSON).
#[expect(clippy::too_many_arguments, reason = "one per column of the row")]
pub(crate) fn invite_row(
    code_hash: String,
    peer: String,
    created_at: i64,
    expires_at: i64,
    state: &str,
    url: Option<String>,
    send_key: Option<String>,
    receive_key: Option<String>,
    takes: Option<String>,
) -> Result<Invite, StoreError> {
    let joined = match (url, send_key, receive_key) {
        (Some(url), Some(send_key), Some(receive_key)) => Some(Joined {
            url,
            send_key,
            receive_key,
            takes: serde_json::from_str(takes.as_deref().unwrap_or("[]"))
                .map_err(|e| StoreError::Corrupt(format!("an invite's takes: {e}")))?,
        }),
        _ => None,
    };
    Ok(Invite {
        code_hash,
        peer,
        created_at,
        expires_at,
        state: InviteState::parse(state)?,
        joined,
    })
}

/// A due delivery, claimed for one attempt, with what the attempt needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// The outbound message to send.
    pub outbound: Outbound,
    /// Where to.
    pub peer: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// What this peer calls the outbound message's thread: the `thread_id` it is sent with.
    pub thread_alias: String,
}

/// Which messages to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only this thread.
    pub thread: Option<String>,
    /// Only from this sender.
    pub sender: Option<String>,
    /// Only this type.
    pub msg_type: Option<String>,
    /// Only in this state.
    pub state: Option<StateFilter>,
    /// Only those whose type or title holds this text, in any case.
    pub text: Option<String>,
    /// Only those older than this message (the last of the page before).
    pub before: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// What state a listed message is in: its turn's, kept in a mailbox, or with a reply whose
/// delivery is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    Turn(TurnState),
    Mailbox,
    Dead,
}

impl std::str::FromStr for StateFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mailbox" => Ok(Self::Mailbox),
            "dead" => Ok(Self::Dead),
            other => other.parse().map(Self::Turn).map_err(|_| {
                let mut known: Vec<&str> = TurnState::ALL.iter().map(|s| s.as_str()).collect();
                known.extend(["mailbox", "dead"]);
                format!("state {other:?} is not one of {}", known.join(", "))
            }),
        }
    }
}

impl StateFilter {
    /// The SQL condition on `m` (a message) and `t` (its turn): the state a literal from a fixed
    /// set, so the planner can use the partial index on turns that are not queued, running or
    /// done.
    pub(crate) fn condition(self) -> String {
        match self {
            Self::Turn(s) => format!("t.state = '{}'", s.as_str()),
            Self::Mailbox => "m.mailbox".into(),
            Self::Dead => "m.id IN (SELECT r.in_reply_to FROM replies r JOIN deliveries d \
                           ON d.reply_id = r.id WHERE d.state = 'dead' AND r.in_reply_to IS NOT NULL)"
                .into(),
        }
    }
}

/// The A2A task a message belongs to, written in the message's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLink {
    /// The task, when this message creates it; `None` for a follow-up to an existing task.
    pub new: Option<Task>,
    /// The client's message as it sent it (its `message_id` is the inbox message's).
    pub input: TaskInput,
}

/// What cancelling a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canceled {
    /// The turn it cancelled, if one had not ended: (message id, route, state it was in).
    pub turn: Option<(String, String, TurnState)>,
}

/// One push of a task's state through one push config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The body (a `StreamResponse`), as an outbound message delivered to the config's target.
    pub outbound: Outbound,
    pub task_id: String,
    pub config_id: String,
    /// What was pushed (state and time): the same key again pushes nothing.
    pub state_key: String,
    /// Whether this is the task's final state (nothing more to push through this config).
    pub last: bool,
}

/// Which tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this peer's.
    pub owner: Option<String>,
    /// Only this context's.
    pub context_id: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// The store; cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// The embedded SQLite backend.
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL, shared by several hosts.
    Postgres(postgres::PgStore),
}

/// Forwards a call to the backend.
macro_rules! backend {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens (creating and migrating if needed) the store the settings name.
    pub async fn open(settings: &Settings) -> Result<Store, StoreError> {
        match settings {
            Settings::Sqlite {
                data_dir,
                synchronous,
                lock_wait,
            } => {
                let (dir, sync, wait) = (data_dir.clone(), *synchronous, *lock_wait);
                // Waiting for the lock blocks; off the runtime's threads.
                tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&dir, sync, wait))
                    .await
                    .map_err(|e| StoreError::Open {
                        path: data_dir.clone(),
                        reason: e.to_string(),
                    })?
                    .map(Store::Sqlite)
            }
            Settings::Postgres(pg) => postgres::PgStore::open(pg).await.map(Store::Postgres),
        }
    }

    /// Records a refused message in the thread it named.
    pub async fn insert_refusal(&self, refusal: Refusal) -> Result<(), StoreError> {
        backend!(self.insert_refusal(refusal))
    }

    /// The refusals recorded in `thread`, oldest first (at most 100).
    pub async fn refusals(&self, thread: &str) -> Result<Vec<Refusal>, StoreError> {
        backend!(self.refusals(thread))
    }

    /// A small write that changes nothing anyone reads: whether the store can write now (a full
    /// disk, a read-only or unreachable database fail it with [`StoreError::Unavailable`]).
    pub async fn probe(&self) -> Result<(), StoreError> {
        backend!(self.probe())
    }

    /// Checks that the store can be reached and its schema is one this binary can use, changing
    /// nothing; says what it found.
    pub async fn check(settings: &Settings) -> Result<String, StoreError> {
        match settings {
            Settings::Sqlite { data_dir, .. } => Ok(format!(
                "SQLite in {} (opened, and migrated if needed, at start)",
                data_dir.display()
            )),
            Settings::Postgres(pg) => postgres::PgStore::check(pg).await,
        }
    }

    /// Records who holds the store (this process, listening on `listen`), for a process refused
    /// the SQLite data directory to name; a shared store has no holder.
    pub fn note_holder(&self, listen: &str) {
        if let Store::Sqlite(s) = self {
            s.note_holder(&format!(
                "pid {}, listening on {listen}",
                std::process::id()
            ));
        }
    }

    /// What a shared store hears from every host (`None` for a store of one's own): work queued,
    /// events published.
    pub fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(s) => Some(s.signals()),
        }
    }

    /// Tells the other hosts of a shared store about events (JSON each); nothing otherwise.
    pub async fn publish_events(&self, json: &[String]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.publish_events(json).await,
        }
    }

    /// Whether other hosts may share this store (their leases must be watched, their work may
    /// arrive without a local wake-up).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Records an accepted message, and its queued turn if `turn` is given, and its A2A task if
    /// `task` is given, durably; unless `dedup` says it is a repeat or the route's queue is full.
    pub async fn insert_message(
        &self,
        message: Message,
        turn: Option<NewTurn>,
        dedup: Option<Dedup>,
        task: Option<TaskLink>,
    ) -> Result<Inserted, StoreError> {
        // The title is read from the payload here, on the caller's task, not in the writer.
        let title = crate::model::title(&message.payload);
        backend!(self.insert_message(message, title, None, turn, dedup, task))
    }

    /// Like [`Store::insert_message`], for a message whose sender named its thread `alias`: the
    /// thread is the one the sender means by it, or, the first time, `message.thread_id`, which
    /// the alias then names for that sender. Resolved in the insert's transaction.
    pub async fn insert_message_in_thread(
        &self,
        message: Message,
        alias: String,
        turn: Option<NewTurn>,
        dedup: Option<Dedup>,
        task: Option<TaskLink>,
    ) -> Result<Inserted, StoreError> {
        let title = crate::model::title(&message.payload);
        backend!(self.insert_message(message, title, Some(alias), turn, dedup, task))
    }

    /// The thread `peer` means by `alias` (its `thread_id` or A2A `contextId`), if any: never
    /// another peer's thread.
    pub async fn thread_of(&self, peer: &str, alias: &str) -> Result<Option<String>, StoreError> {
        backend!(self.thread_of(peer, alias))
    }

    /// What `peer` calls `thread`, if it has a name for it.
    pub async fn alias_of(&self, thread: &str, peer: &str) -> Result<Option<String>, StoreError> {
        backend!(self.alias_of(thread, peer))
    }

    /// Records a task without a message (a plugin refused its first one), with that message.
    pub async fn insert_task(&self, task: Task, input: TaskInput) -> Result<(), StoreError> {
        backend!(self.insert_task(task, input))
    }

    /// Cancels a task: records when, and cancels its latest turn unless that has ended (a queued
    /// one leaves the queue; a running one's end is then refused, and its token stops working).
    /// `None` if the task is unknown or was already cancelled.
    pub async fn cancel_task(
        &self,
        task_id: &str,
        at: i64,
    ) -> Result<Option<Canceled>, StoreError> {
        backend!(self.cancel_task(task_id, at))
    }

    /// One task with its inputs, their turns and replies.
    pub async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        backend!(self.task(id))
    }

    /// Whether local agent `agent` sent a message in `thread` (so it may follow that thread).
    pub async fn agent_started(&self, agent: &str, thread: &str) -> Result<bool, StoreError> {
        backend!(self.agent_started(agent, thread))
    }

    /// The task a message belongs to, if any.
    pub async fn task_of_message(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        backend!(self.task_of_message(message_id))
    }

    /// Tasks, newest first, filtered.
    pub async fn tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        backend!(self.tasks(filter))
    }

    /// Records a remote task as it stands (its lease, if any, is left as it is).
    pub async fn put_remote_task(&self, task: RemoteTask) -> Result<(), StoreError> {
        backend!(self.put_remote_task(task))
    }

    /// Takes up to `limit` follow-ups of tasks handed to A2A peers that are due (`now`, ms) and
    /// that no host holds, each under a lease.
    pub async fn claim_follow_ups(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<RemoteTask>, StoreError> {
        backend!(self.claim_follow_ups(now, limit))
    }

    /// Records a claimed follow-up as it stands and lets go of it until `next_at` (ms); `false`
    /// if this host no longer held it (nothing written).
    pub async fn settle_follow_up(
        &self,
        task: RemoteTask,
        next_at: i64,
    ) -> Result<bool, StoreError> {
        backend!(self.settle_follow_up(task, next_at))
    }

    /// A remote task by its key.
    pub async fn remote_task(&self, key: &str) -> Result<Option<RemoteTask>, StoreError> {
        backend!(self.remote_task(key))
    }

    /// The thread's latest remote task of this kind and target that the remote answered: the
    /// one a new message in the thread continues (its context, and its task while it waits for
    /// input).
    pub async fn latest_remote_task(
        &self,
        thread_id: &str,
        kind: RemoteKind,
        target: &str,
    ) -> Result<Option<RemoteTask>, StoreError> {
        backend!(self.latest_remote_task(thread_id, kind, target))
    }

    /// The remote tasks sent for a message or an outbound message, oldest first.
    pub async fn remote_tasks_of(&self, origin: &str) -> Result<Vec<RemoteTask>, StoreError> {
        backend!(self.remote_tasks_of(origin))
    }

    /// Creates a push config, or replaces the one with its (task, id).
    pub async fn put_push_config(&self, config: PushConfig) -> Result<(), StoreError> {
        backend!(self.put_push_config(config))
    }

    /// Deletes a push config; `false` if there was none.
    pub async fn delete_push_config(&self, task_id: &str, id: &str) -> Result<bool, StoreError> {
        backend!(self.delete_push_config(task_id, id))
    }

    /// One push config.
    pub async fn push_config(
        &self,
        task_id: &str,
        id: &str,
    ) -> Result<Option<PushConfig>, StoreError> {
        backend!(self.push_config(task_id, id))
    }

    /// A task's push configs (only those with something left to push, if `pending_only`).
    pub async fn push_configs(
        &self,
        task_id: &str,
        pending_only: bool,
    ) -> Result<Vec<PushConfig>, StoreError> {
        backend!(self.push_configs(task_id, pending_only))
    }

    /// Tasks with a push config whose final state is not pushed yet.
    pub async fn push_pending(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        backend!(self.push_pending(limit))
    }

    /// Records a push for delivery (an outbound message with one delivery to the config's
    /// target), unless that state was pushed through that config already; `false` then.
    pub async fn enqueue_push(&self, push: Push) -> Result<bool, StoreError> {
        backend!(self.enqueue_push(push))
    }

    /// Claims the oldest queued turn of a route: marks it running, stores its token's hash, and
    /// returns it with its lease; `None` if the route has nothing queued.
    pub async fn claim_turn(&self, claim: TurnClaim) -> Result<Option<Claimed>, StoreError> {
        backend!(self.claim_turn(claim))
    }

    /// Extends a running turn's lease; `false` if the turn is no longer this lease's.
    pub async fn renew_lease(&self, lease: &Lease, length: Duration) -> Result<bool, StoreError> {
        backend!(self.renew_lease(lease, length))
    }

    /// Records how a claimed turn ended and when its token now expires; `false` (and nothing
    /// written) if the lease no longer holds the turn.
    pub async fn end_turn(
        &self,
        lease: &Lease,
        end: TurnEnd,
        token_expires_at: i64,
    ) -> Result<bool, StoreError> {
        backend!(self.end_turn(lease, end, token_expires_at))
    }

    /// Marks every turn whose holder is gone (for one process: every turn left running by the
    /// last one) interrupted, and returns them.
    pub async fn recover_interrupted(&self) -> Result<Vec<Interrupted>, StoreError> {
        backend!(self.recover_interrupted())
    }

    /// Marks a turn this process runs interrupted (a stop that cannot wait for its agent), fenced
    /// by its lease; `None` if the lease no longer holds it.
    pub async fn interrupt(&self, lease: &Lease) -> Result<Option<Interrupted>, StoreError> {
        backend!(self.interrupt(lease))
    }

    /// Puts an interrupted turn back in its route's queue, where it keeps its place by age; its
    /// attempt's token stops working at once. Refused, in the same transaction, when that
    /// attempt has committed a reply meanwhile: a turn is answered once.
    pub async fn requeue(&self, message_id: &str) -> Result<Requeued, StoreError> {
        backend!(self.requeue(message_id, false))
    }

    /// Puts an interrupted turn back in its queue even if its attempt has replied: for a turn
    /// that resumes a task at a remote A2A agent, which repeats no answer when it runs again.
    pub async fn resume(&self, message_id: &str) -> Result<Requeued, StoreError> {
        backend!(self.requeue(message_id, true))
    }

    /// Leaves an interrupted turn `interrupted` for good, with the reason; its tokens stop
    /// working.
    pub async fn fail_interrupted(
        &self,
        message_id: &str,
        error: TurnError,
    ) -> Result<(), StoreError> {
        backend!(self.fail_interrupted(message_id, error))
    }

    /// Routes that have turns queued, for the scheduler to start on.
    pub async fn queued_routes(&self) -> Result<Vec<String>, StoreError> {
        backend!(self.queued_routes())
    }

    /// Turns queued, over all routes.
    pub fn queue_depth(&self) -> usize {
        match self {
            Store::Sqlite(s) => s.queue_depth(),
            Store::Postgres(s) => s.queue_depth(),
        }
    }

    /// Turns queued, per route that has any.
    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        match self {
            Store::Sqlite(s) => s.queue_depths(),
            Store::Postgres(s) => s.queue_depths(),
        }
    }

    /// Records this host's heartbeat (shared stores; nothing on a store of one's own). The
    /// `last_seen` and `age_ms` fields are ignored: the database's clock sets them.
    pub async fn heartbeat(&self, beat: HostBeat) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.heartbeat(beat).await,
        }
    }

    /// The hosts seen within `within` (shared stores; none on a store of one's own).
    pub async fn hosts(&self, within: Duration) -> Result<Vec<HostBeat>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.hosts(within).await,
        }
    }

    /// Whether the store answers a read.
    pub async fn ping(&self) -> Result<(), StoreError> {
        backend!(self.ping())
    }

    /// Records an outbound message with one pending delivery per peer; with `hold`, the
    /// deliveries wait (`held`) until a person decides.
    pub async fn insert_outbound(
        &self,
        outbound: Outbound,
        peers: Vec<String>,
        hold: Option<Hold>,
    ) -> Result<(), StoreError> {
        backend!(self.insert_outbound(outbound, peers, hold, None)).map(|_| ())
    }

    /// Records an agent's reply like [`Store::insert_outbound`], fenced by its attempt: `false`
    /// (nothing written) unless `attempt` is still its turn's latest attempt and has not been
    /// given up (queued to run again, or settled as interrupted).
    pub async fn insert_reply(
        &self,
        outbound: Outbound,
        peers: Vec<String>,
        hold: Option<Hold>,
        attempt: Lease,
    ) -> Result<bool, StoreError> {
        backend!(self.insert_outbound(outbound, peers, hold, Some(attempt)))
    }

    /// Records a person's (or the timeout's) decision on a held item, and acts on it in the same
    /// transaction: an approved turn joins its route's queue, a rejected one ends `rejected`; an
    /// approved reply's deliveries become due (with the edited payload, the original kept), a
    /// rejected one's are withheld.
    pub async fn decide(&self, decide: Decide) -> Result<Decided, StoreError> {
        backend!(self.decide(decide))
    }

    /// One held item, decided or not.
    pub async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        backend!(self.approval(id))
    }

    /// Held items: those still waiting, oldest first (`waiting_only`), or all, newest first.
    pub async fn approvals(
        &self,
        waiting_only: bool,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        backend!(self.approvals(waiting_only, limit))
    }

    /// Held items on the messages of a thread, or answering a message (`message_id`).
    pub async fn approvals_for(&self, message_id: &str) -> Result<Vec<Approval>, StoreError> {
        backend!(self.approvals_for(message_id))
    }

    /// Waiting items whose deadline has passed by `now`, at most `limit`.
    pub async fn expired_approvals(&self, now: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        backend!(self.expired_approvals(now, limit))
    }

    /// Claims up to `limit` deliveries due by `now`, soonest first, none already claimed: each
    /// is then held for one attempt until [`Store::record_attempt`].
    pub async fn claim_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        backend!(self.claim_deliveries(now, limit))
    }

    /// Records one delivery attempt and the delivery's new state, and releases its claim.
    pub async fn record_attempt(
        &self,
        outbound_id: &str,
        peer: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        backend!(self.record_attempt(outbound_id, peer, outcome))
    }

    /// Releases a claimed delivery without recording an attempt (its attempt could not be
    /// recorded), so it is tried again.
    pub async fn release_delivery(&self, outbound_id: &str, peer: &str) -> Result<(), StoreError> {
        backend!(self.release_delivery(outbound_id, peer))
    }

    /// When the next delivery after `after` is due, if any is scheduled.
    pub async fn next_due(&self, after: i64) -> Result<Option<i64>, StoreError> {
        backend!(self.next_due(after))
    }

    /// A person cancels a message's turn: queued, held or running. Returns its route and the
    /// state it was in, or `None` when the message has no turn or it has ended already.
    pub async fn cancel_turn(
        &self,
        message_id: &str,
        cancel: crate::model::Cancel,
    ) -> Result<Option<(String, TurnState)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.cancel_turn(message_id, cancel).await,
            Store::Postgres(p) => p.cancel_message_turn(message_id, cancel).await,
        }
    }

    /// Makes an outbound message's dead deliveries due again with a fresh schedule, and those
    /// waiting for their next try due now; returns how many.
    pub async fn retry_now(&self, outbound_id: &str) -> Result<usize, StoreError> {
        backend!(self.retry_now(outbound_id))
    }

    /// Deletes finished records from before `before` and idempotency keys from before
    /// `dedup_before`, in a bounded batch; returns how many messages and outbound messages went.
    pub async fn prune(&self, before: i64, dedup_before: i64) -> Result<usize, StoreError> {
        backend!(self.prune(before, dedup_before))
    }

    /// Looks up a reply token by its hash.
    pub async fn token(&self, hash: TokenHash) -> Result<Option<Grant>, StoreError> {
        backend!(self.token(hash))
    }

    /// The grant of the newest reply token minted for `message_id`'s turn (what its agent may
    /// do by its own credential instead of the token).
    pub async fn latest_grant(&self, message_id: &str) -> Result<Option<Grant>, StoreError> {
        backend!(self.latest_grant(message_id))
    }

    /// Keeps a new pairing invite.
    pub async fn insert_invite(&self, invite: Invite) -> Result<(), StoreError> {
        backend!(self.insert_invite(invite))
    }

    /// Uses the invite whose code hashes to `code_hash`, if it is open and not expired at `now`:
    /// it is then joined, with what the joining inbox brought. A code works once.
    pub async fn join_invite(
        &self,
        code_hash: &str,
        now: i64,
        joined: Joined,
    ) -> Result<Option<Invite>, StoreError> {
        backend!(self.join_invite(code_hash, now, joined))
    }

    /// An invite by its code's hash.
    pub async fn invite(&self, code_hash: &str) -> Result<Option<Invite>, StoreError> {
        backend!(self.invite(code_hash))
    }

    /// Moves an invite from `from` to `to` (paired or cancelled forget its keys); whether it was
    /// in `from`.
    pub async fn settle_invite(
        &self,
        code_hash: &str,
        from: InviteState,
        to: InviteState,
    ) -> Result<bool, StoreError> {
        backend!(self.settle_invite(code_hash, from, to))
    }

    /// Records a console session as signed out until `until` (ms); on a shared store the other
    /// hosts hear of it ([`Signal::SignedOut`]).
    pub async fn revoke_session(&self, id: &str, until: i64) -> Result<(), StoreError> {
        backend!(self.revoke_session(id, until))
    }

    /// The console sessions signed out that would not have expired by `now`, with their expiry.
    pub async fn revoked_sessions(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        backend!(self.revoked_sessions(now))
    }

    /// Counts one reply of `message_id`'s attempt `attempt` within `limits`, in one transaction
    /// (so the count holds across a cluster); past either limit nothing is counted and the answer
    /// is `Ok(Err(ms))`, how long until one may be sent again.
    pub async fn count_reply(
        &self,
        message_id: &str,
        attempt: u32,
        limits: crate::model::ReplyLimits,
        now: i64,
    ) -> Result<Result<(), i64>, StoreError> {
        backend!(self.count_reply(message_id, attempt, limits, now))
    }

    /// One message by id.
    pub async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        backend!(self.message(id))
    }

    /// A message's turn, if it has one.
    pub async fn turn(&self, message_id: &str) -> Result<Option<Turn>, StoreError> {
        backend!(self.turn(message_id))
    }

    /// Outbound messages answering a message, each with its deliveries, oldest first.
    pub async fn outbound_for(
        &self,
        message_id: &str,
    ) -> Result<Vec<(Outbound, Vec<Delivery>)>, StoreError> {
        backend!(self.outbound_for(message_id))
    }

    /// One outbound message by id, with its deliveries.
    pub async fn outbound(
        &self,
        id: &str,
    ) -> Result<Option<(Outbound, Vec<Delivery>)>, StoreError> {
        backend!(self.outbound(id))
    }

    /// Messages, newest first, filtered, each with its turn's state (mailbox messages have none).
    pub async fn list_messages(
        &self,
        filter: MessageFilter,
    ) -> Result<Vec<(Message, Option<TurnState>)>, StoreError> {
        backend!(self.list_messages(filter))
    }

    /// Outbound messages with a delivery to `peer`, newest first.
    pub async fn outbound_to_peer(
        &self,
        peer: &str,
        thread: Option<String>,
        limit: u32,
    ) -> Result<Vec<Outbound>, StoreError> {
        backend!(self.outbound_to_peer(peer, thread, limit))
    }

    /// Outbound messages of no route that answer no message (the operator or a local agent
    /// started or continued a thread with them; not A2A pushes), of `thread` if given, newest
    /// first.
    pub async fn unanswering(
        &self,
        thread: Option<String>,
        limit: u32,
    ) -> Result<Vec<Outbound>, StoreError> {
        backend!(self.unanswering(thread, limit))
    }

    /// Deliveries with their outbound messages, newest first; only dead letters if `dead_only`.
    pub async fn outbox(
        &self,
        dead_only: bool,
        limit: u32,
    ) -> Result<Vec<(Outbound, Delivery)>, StoreError> {
        backend!(self.outbox(dead_only, limit))
    }

    /// Recorded attempts of one delivery, in order.
    pub async fn attempts(
        &self,
        outbound_id: &str,
        peer: &str,
    ) -> Result<Vec<Attempt>, StoreError> {
        backend!(self.attempts(outbound_id, peer))
    }

    /// The last delivery attempt to each of `peers` that has one (through the attempts' index
    /// by peer and time: one row each).
    pub async fn last_attempts(
        &self,
        peers: Vec<String>,
    ) -> Result<Vec<(String, Attempt)>, StoreError> {
        backend!(self.last_attempts(peers))
    }
}
