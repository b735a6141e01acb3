//! The SQL of each write, one type per write with its own answer.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params};

use super::key::{id, key, opt_key};
use super::reads::{MESSAGE_COLUMNS, message_row};
use super::writer::{Effect, Tx, Write};
use crate::model::{
    ApprovalKind, AttemptOutcome, Cancel, Decide, DeliveryState, Message, Outbound, PushConfig,
    RemoteTask, ReplyCount, ReplyLimits, Task, TaskInput, TurnEnd, TurnError, TurnState, Verdict,
    now_ms,
};
use crate::store::{
    Canceled, Claimed, Decided, Dedup, DueDelivery, Hold, Inserted, Interrupted, Lease, NewTurn,
    Requeued, StoreError, TaskLink, TurnClaim,
};

pub(super) struct InsertMessage {
    pub(super) message: Message,
    /// What it is about ([`crate::model::title`]), for the text filter.
    pub(super) title: Option<String>,
    /// What the sender calls the thread, if it named one: resolved here, in the transaction, so
    /// two first messages naming one new alias make one thread.
    pub(super) alias: Option<String>,
    pub(super) turn: Option<NewTurn>,
    pub(super) dedup: Option<Dedup>,
    pub(super) task: Option<TaskLink>,
}

impl Write for InsertMessage {
    type Output = Inserted;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Inserted, StoreError> {
        let (c, m) = (tx.conn, &self.message);
        // Parsed once: the id goes into up to three tables.
        let stored_id = key(&m.id);
        if let Some(d) = &self.dedup {
            let original: Option<String> = c
                .prepare_cached(
                    "SELECT message_id FROM dedup WHERE sender = ?1 AND key = ?2 AND created_at >= ?3",
                )?
                .query_row(params![m.sender, d.key, d.since], |r| id(r, 0))
                .optional()?;
            if let Some(id) = original {
                return Ok(Inserted::Duplicate(id));
            }
        }
        if let Some(turn) = &self.turn
            && tx.queued(&m.route) >= turn.max_queued
        {
            return Ok(Inserted::QueueFull {
                max_queued: turn.max_queued,
            });
        }
        let thread = match &self.alias {
            None => m.thread_id.clone(),
            Some(alias) => match super::aliases::thread_of(c, &m.sender, alias)? {
                Some(thread) => thread,
                None => {
                    super::aliases::insert(c, &m.sender, alias, &m.thread_id)?;
                    m.thread_id.clone()
                }
            },
        };
        if let Some(d) = &self.dedup {
            c.prepare_cached(
                "INSERT OR REPLACE INTO dedup (sender, key, message_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![m.sender, d.key, stored_id, m.received_at])?;
        }
        c.prepare_cached(
            "INSERT INTO messages (id, sender, route, type, payload, thread_id, in_reply_to, hops,
                                   sender_ref, received_at, mailbox, title)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            stored_id,
            m.sender,
            m.route,
            m.msg_type,
            m.payload,
            // A thread's first message stores '' (schema v6): its thread is its own id.
            key(if thread == m.id { "" } else { thread.as_str() }),
            opt_key(m.in_reply_to.as_deref()),
            m.hops,
            m.sender_ref,
            m.received_at,
            m.mailbox,
            self.title
        ])?;
        match self.turn.as_ref().map(|t| &t.hold) {
            None => {}
            Some(None) => {
                c.prepare_cached(
                    "INSERT INTO turns (message_id, route, state, queued_at) VALUES (?1, ?2, 'queued', ?3)",
                )?
                .execute(params![stored_id, m.route, m.received_at])?;
                tx.effect(Effect::Queued {
                    route: m.route.clone(),
                    up: true,
                });
            }
            Some(Some(hold)) => {
                c.prepare_cached(
                    "INSERT INTO turns (message_id, route, state, queued_at)
                     VALUES (?1, ?2, 'awaiting_approval', ?3)",
                )?
                .execute(params![stored_id, m.route, m.received_at])?;
                insert_approval(
                    c,
                    &m.id,
                    ApprovalKind::Inbound,
                    &m.route,
                    Some(&m.id),
                    &thread,
                    hold,
                    m.received_at,
                )?;
            }
        }
        if let Some(link) = &self.task {
            if let Some(task) = &link.new {
                insert_task(c, task)?;
            }
            insert_input(c, &link.input)?;
        }
        Ok(Inserted::New)
    }
}

/// Records that `id` waits for a person.
#[expect(
    clippy::too_many_arguments,
    reason = "one per column; both callers have them as separate fields"
)]
fn insert_approval(
    c: &rusqlite::Connection,
    id: &str,
    kind: ApprovalKind,
    route: &str,
    message_id: Option<&str>,
    thread_id: &str,
    hold: &Hold,
    at: i64,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO approvals (id, kind, route, message_id, thread_id, reason, created_at,
                                expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        key(id),
        kind.as_str(),
        route,
        opt_key(message_id),
        key(thread_id),
        hold.reason,
        at,
        hold.expires_at
    ])?;
    Ok(())
}

fn insert_task(c: &rusqlite::Connection, t: &Task) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO tasks (id, owner, context_id, route, created_at, rejected, canceled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        key(&t.id),
        t.owner,
        key(&t.context_id),
        t.route,
        t.created_at,
        t.rejected,
        t.canceled_at
    ])?;
    Ok(())
}

fn insert_input(c: &rusqlite::Connection, i: &TaskInput) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO task_inputs (task_id, message_id, client_message_id, body, at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        key(&i.task_id),
        opt_key(i.message_id.as_deref()),
        i.client_message_id,
        i.body,
        i.at
    ])?;
    Ok(())
}

/// A task with no message: its first message was refused by a plugin.
pub(super) struct InsertTask {
    pub(super) task: Task,
    pub(super) input: TaskInput,
}

impl Write for InsertTask {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        insert_task(tx.conn, &self.task)?;
        insert_input(tx.conn, &self.input)
    }
}

/// Cancels a task: records when, and cancels its latest turn if it has not ended.
pub(super) struct CancelTask {
    pub(super) task_id: String,
    pub(super) at: i64,
}

impl Write for CancelTask {
    type Output = Option<Canceled>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Option<Canceled>, StoreError> {
        let c = tx.conn;
        let changed = c
            .prepare_cached(
                "UPDATE tasks SET canceled_at = ?2 WHERE id = ?1 AND canceled_at IS NULL",
            )?
            .execute(params![key(&self.task_id), self.at])?;
        if changed == 0 {
            return Ok(None);
        }
        let latest: Option<(String, String, TurnState)> = c
            .prepare_cached(
                "SELECT t.message_id, t.route, t.state FROM task_inputs i
                 JOIN turns t ON t.message_id = i.message_id
                 WHERE i.task_id = ?1 ORDER BY i.seq DESC LIMIT 1",
            )?
            .query_row(params![key(&self.task_id)], |r| {
                Ok((id(r, 0)?, r.get(1)?, super::reads::named(r, 2)?))
            })
            .optional()?;
        let Some((message_id, route, state)) = latest else {
            return Ok(Some(Canceled { turn: None }));
        };
        if state.is_final() {
            return Ok(Some(Canceled { turn: None }));
        }
        let cancel = Cancel {
            by: "client".into(),
            via: "a2a".into(),
            at: self.at,
        };
        cancel_turn(
            tx,
            &message_id,
            &route,
            state,
            &cancel,
            "the client cancelled the task",
        )?;
        Ok(Some(Canceled {
            turn: Some((message_id, route, state)),
        }))
    }
}

/// Ends a queued, held or running turn as `canceled`, recording who did it: a running turn's
/// end is then refused by end_turn's fence (state = 'running'), its reply token stops working
/// now, and a turn that waited for a person no longer does (the cancel decided for it).
fn cancel_turn(
    tx: &mut Tx<'_>,
    message_id: &str,
    route: &str,
    state: TurnState,
    cancel: &Cancel,
    why: &str,
) -> Result<(), StoreError> {
    let c = tx.conn;
    c.prepare_cached(
        "UPDATE turns SET state = 'canceled', ended_at = ?2, error = 'canceled: ' || ?3,
                          canceled_by = ?4, canceled_via = ?5, canceled_at = ?2
         WHERE message_id = ?1",
    )?
    .execute(params![
        key(message_id),
        cancel.at,
        why,
        cancel.by,
        cancel.via
    ])?;
    c.prepare_cached("UPDATE tokens SET expires_at = ?2 WHERE message_id = ?1")?
        .execute(params![key(message_id), cancel.at])?;
    if state == TurnState::Queued {
        tx.effect(Effect::Queued {
            route: route.to_owned(),
            up: false,
        });
    }
    c.prepare_cached(
        "UPDATE approvals SET verdict = 'rejected', decided_by = ?3, via = ?4,
                              decided_at = ?2, decision_reason = ?5
         WHERE id = ?1 AND verdict IS NULL",
    )?
    .execute(params![
        key(message_id),
        cancel.at,
        cancel.by,
        cancel.via,
        why
    ])?;
    Ok(())
}

/// A person cancels a message's turn (queued, held or running).
pub(super) struct CancelTurn {
    pub(super) message_id: String,
    pub(super) cancel: Cancel,
}

impl Write for CancelTurn {
    /// The route and the state it was in, if it was cancelled (not ended already, nor unknown).
    type Output = Option<(String, TurnState)>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Self::Output, StoreError> {
        let found: Option<(String, TurnState)> = tx
            .conn
            .prepare_cached("SELECT route, state FROM turns WHERE message_id = ?1")?
            .query_row(params![key(&self.message_id)], |r| {
                Ok((r.get(0)?, super::reads::named(r, 1)?))
            })
            .optional()?;
        let Some((route, state)) = found.filter(|(_, s)| !s.is_final()) else {
            return Ok(None);
        };
        let why = format!("cancelled by {} ({})", self.cancel.by, self.cancel.via);
        cancel_turn(tx, &self.message_id, &route, state, &self.cancel, &why)?;
        Ok(Some((route, state)))
    }
}

/// Records a console session as signed out.
pub(super) struct RevokeSession {
    pub(super) id: String,
    pub(super) until: i64,
}

impl Write for RevokeSession {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        tx.conn
            .prepare_cached("INSERT OR IGNORE INTO revoked_sessions (id, until) VALUES (?1, ?2)")?
            .execute(params![self.id, self.until])?;
        Ok(())
    }
}

/// Counts one reply of an attempt within its limits; `Err(ms)` past them (nothing counted).
pub(super) struct CountReply {
    pub(super) message_id: String,
    pub(super) attempt: u32,
    pub(super) limits: ReplyLimits,
    pub(super) now: i64,
}

impl Write for CountReply {
    type Output = Result<(), i64>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Result<(), i64>, StoreError> {
        let c = tx.conn;
        let stored_id = key(&self.message_id);
        let count = c
            .prepare_cached(
                "SELECT total, window_start, in_window FROM reply_counts
                 WHERE message_id = ?1 AND attempt = ?2",
            )?
            .query_row(params![stored_id, self.attempt], |r| {
                Ok(ReplyCount {
                    total: r.get(0)?,
                    window_start: r.get(1)?,
                    in_window: r.get(2)?,
                })
            })
            .optional()?
            .unwrap_or_default();
        let next = match count.next(self.limits, self.now) {
            Ok(next) => next,
            Err(wait) => return Ok(Err(wait)),
        };
        c.prepare_cached(
            "INSERT OR REPLACE INTO reply_counts (message_id, attempt, total, window_start, in_window)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            stored_id,
            self.attempt,
            next.total,
            next.window_start,
            next.in_window
        ])?;
        Ok(Ok(()))
    }
}

pub(super) struct ClaimTurn(pub(super) TurnClaim);

impl Write for ClaimTurn {
    type Output = Option<Claimed>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Option<Claimed>, StoreError> {
        let (c, claim) = (tx.conn, &self.0);
        // The turns rowid is arrival order, so this is the oldest queued turn.
        let next: Option<(String, u32)> = c
            .prepare_cached(
                "SELECT message_id, attempts FROM turns WHERE route = ?1 AND state = 'queued'
                 ORDER BY rowid LIMIT 1",
            )?
            .query_row(params![claim.route], |r| Ok((id(r, 0)?, r.get(1)?)))
            .optional()?;
        let Some((id, attempts)) = next else {
            return Ok(None);
        };
        c.prepare_cached(
            "UPDATE turns SET state = 'running', attempts = attempts + 1, started_at = ?2,
                              ended_at = NULL
             WHERE message_id = ?1",
        )?
        .execute(params![key(&id), now_ms()])?;
        let terms = serde_json::to_string(&claim.terms)
            .map_err(|e| StoreError::Corrupt(format!("a turn's terms: {e}")))?;
        c.prepare_cached(
            "INSERT INTO tokens (hash, message_id, route, expires_at, attempt, terms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &claim.token_hash.0[..],
            key(&id),
            claim.route,
            claim.token_expires_at,
            attempts + 1,
            terms
        ])?;
        let message = c
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"
            ))?
            .query_row(params![key(&id)], message_row)?;
        tx.effect(Effect::Queued {
            route: claim.route.clone(),
            up: false,
        });
        Ok(Some(Claimed {
            message,
            lease: Lease {
                message_id: id,
                generation: attempts + 1,
            },
        }))
    }
}

pub(super) struct EndTurn {
    pub(super) lease: Lease,
    pub(super) end: TurnEnd,
    pub(super) token_expires_at: i64,
}

impl Write for EndTurn {
    type Output = bool;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<bool, StoreError> {
        let (c, end) = (tx.conn, &self.end);
        let changed = c
            .prepare_cached(
                "UPDATE turns SET state = ?3, exit_code = ?4, signal = ?5, error = ?6, duration_ms = ?7,
                                  stdout_tail = ?8, stderr_tail = ?9, ended_at = ?10
                 WHERE message_id = ?1 AND attempts = ?2 AND state = 'running'",
            )?
            .execute(params![
                key(&self.lease.message_id),
                self.lease.generation,
                end.state.as_str(),
                end.exit_code,
                end.signal,
                end.error.as_ref().map(TurnError::to_string),
                end.duration_ms,
                end.stdout_tail,
                end.stderr_tail,
                now_ms()
            ])?;
        if changed == 0 {
            return Ok(false);
        }
        c.prepare_cached("UPDATE tokens SET expires_at = ?2 WHERE message_id = ?1")?
            .execute(params![key(&self.lease.message_id), self.token_expires_at])?;
        Ok(true)
    }
}

pub(super) struct RecoverInterrupted;

impl Write for RecoverInterrupted {
    type Output = Vec<Interrupted>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Vec<Interrupted>, StoreError> {
        let error = TurnError::new("interrupted", "the host stopped while the agent ran");
        let rows = tx
            .conn
            .prepare_cached(
                "UPDATE turns SET state = 'interrupted', ended_at = ?1, error = ?2
                 WHERE state = 'running' RETURNING message_id, route, attempts",
            )?
            .query_map(params![now_ms(), error.to_string()], |r| {
                Ok(Interrupted {
                    message_id: id(r, 0)?,
                    route: r.get(1)?,
                    attempts: r.get(2)?,
                    replied: false,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|mut t| {
                t.replied = replied(tx.conn, &t.message_id, t.attempts)?;
                Ok(t)
            })
            .collect()
    }
}

/// Whether attempt `attempt` of the turn of `message_id` committed a reply.
fn replied(c: &rusqlite::Connection, message_id: &str, attempt: u32) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM replies WHERE in_reply_to = ?1 AND attempt = ?2)",
    )?
    .query_row(params![key(message_id), attempt], |r| r.get(0))?)
}

/// Whether `attempt` is the turn's latest attempt and has not been given up: what a reply token
/// needs to stay good, checked again in the reply's own transaction.
pub(super) fn attempt_is_current(
    c: &rusqlite::Connection,
    message_id: &str,
    attempt: u32,
) -> Result<bool, StoreError> {
    let turn: Option<(u32, String)> = c
        .prepare_cached("SELECT attempts, state FROM turns WHERE message_id = ?1")?
        .query_row(params![key(message_id)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(turn.is_some_and(|(attempts, state)| {
        // A token from before attempts were recorded (0) counts as its turn's latest.
        (attempt == 0 || attempt == attempts) && state != "queued" && state != "interrupted"
    }))
}

/// Records a refused message in its thread.
pub(super) struct InsertRefusal(pub(super) crate::model::Refusal);

impl Write for InsertRefusal {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let r = &self.0;
        tx.conn
            .prepare_cached(
                "INSERT INTO refusals (thread_id, peer, type, code, detail, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                r.thread_id,
                r.peer,
                r.msg_type,
                r.code,
                r.detail,
                r.at
            ])?;
        Ok(())
    }
}

/// A write that changes nothing anyone reads: whether the store can write now.
pub(super) struct Probe;

impl Write for Probe {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        tx.conn
            .prepare_cached("INSERT OR REPLACE INTO probes (holder, at) VALUES ('self', ?1)")?
            .execute(params![now_ms()])?;
        Ok(())
    }
}

/// Marks a turn this process runs interrupted, fenced by its lease.
pub(super) struct Interrupt(pub(super) Lease);

impl Write for Interrupt {
    type Output = Option<Interrupted>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Option<Interrupted>, StoreError> {
        let error = TurnError::new("interrupted", "the inbox stopped while the agent ran");
        let route: Option<String> = tx
            .conn
            .prepare_cached(
                "UPDATE turns SET state = 'interrupted', ended_at = ?3, error = ?4
                 WHERE message_id = ?1 AND attempts = ?2 AND state = 'running' RETURNING route",
            )?
            .query_row(
                params![
                    key(&self.0.message_id),
                    self.0.generation,
                    now_ms(),
                    error.to_string()
                ],
                |r| r.get(0),
            )
            .optional()?;
        let Some(route) = route else {
            return Ok(None);
        };
        Ok(Some(Interrupted {
            replied: replied(tx.conn, &self.0.message_id, self.0.generation)?,
            message_id: self.0.message_id.clone(),
            route,
            attempts: self.0.generation,
        }))
    }
}

/// Queues an interrupted turn again; unless `even_if_replied`, only if its attempt has not
/// replied (a turn that resumes a remote task repeats no answer, so it may run again after one).
pub(super) struct Requeue {
    pub(super) message_id: String,
    pub(super) even_if_replied: bool,
}

impl Write for Requeue {
    type Output = Requeued;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Requeued, StoreError> {
        let attempts: Option<u32> = tx
            .conn
            .prepare_cached(
                "SELECT attempts FROM turns WHERE message_id = ?1 AND state = 'interrupted'",
            )?
            .query_row(params![key(&self.message_id)], |r| r.get(0))
            .optional()?;
        let Some(attempts) = attempts else {
            return Ok(Requeued::NotInterrupted);
        };
        if !self.even_if_replied && replied(tx.conn, &self.message_id, attempts)? {
            return Ok(Requeued::Replied);
        }
        let route: String = tx
            .conn
            .prepare_cached(
                "UPDATE turns SET state = 'queued' WHERE message_id = ?1 RETURNING route",
            )?
            .query_row(params![key(&self.message_id)], |r| r.get(0))?;
        tx.effect(Effect::Queued { route, up: true });
        Ok(Requeued::Queued)
    }
}

pub(super) struct FailInterrupted {
    pub(super) message_id: String,
    pub(super) error: TurnError,
}

impl Write for FailInterrupted {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let now = now_ms();
        tx.conn
            .prepare_cached(
                "UPDATE turns SET state = 'interrupted', error = ?2, ended_at = ?3 WHERE message_id = ?1",
            )?
            .execute(params![key(&self.message_id), self.error.to_string(), now])?;
        // Given up: an agent still alive from that attempt can no longer answer for it.
        tx.conn
            .prepare_cached(
                "UPDATE tokens SET expires_at = min(expires_at, ?2) WHERE message_id = ?1",
            )?
            .execute(params![key(&self.message_id), now])?;
        Ok(())
    }
}

pub(super) struct InsertOutbound {
    pub(super) outbound: Outbound,
    pub(super) peers: Vec<String>,
    pub(super) hold: Option<Hold>,
    /// An agent's reply: the attempt that sends it, which must still be current.
    pub(super) fence: Option<Lease>,
}

impl Write for InsertOutbound {
    type Output = bool;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<bool, StoreError> {
        let (c, o) = (tx.conn, &self.outbound);
        if let Some(f) = &self.fence
            && !attempt_is_current(c, &f.message_id, f.generation)?
        {
            return Ok(false);
        }
        c.prepare_cached(
            "INSERT INTO replies (id, in_reply_to, route, type, payload, thread_id, hops, created_at,
                                  agent, attempt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            key(&o.id),
            opt_key(o.in_reply_to.as_deref()),
            o.route,
            o.msg_type,
            o.payload,
            key(&o.thread_id),
            o.hops,
            o.created_at,
            o.agent,
            self.fence.as_ref().map(|f| f.generation)
        ])?;
        // A held delivery has no due time, so no claim finds it until it is approved.
        let (state, due) = match &self.hold {
            None => (DeliveryState::Pending, Some(o.created_at)),
            Some(_) => (DeliveryState::Held, None),
        };
        let mut stmt = c.prepare_cached(
            "INSERT INTO deliveries (reply_id, peer, state, next_attempt_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for p in &self.peers {
            stmt.execute(params![key(&o.id), p, state.as_str(), due])?;
            // Each peer gets the thread under its own name for it.
            super::aliases::ensure(c, &o.thread_id, p)?;
        }
        if let Some(hold) = &self.hold {
            insert_approval(
                c,
                &o.id,
                ApprovalKind::Outbound,
                o.route.as_deref().unwrap_or_default(),
                o.in_reply_to.as_deref(),
                &o.thread_id,
                hold,
                o.created_at,
            )?;
        }
        Ok(true)
    }
}

pub(super) struct ClaimDeliveries {
    pub(super) now: i64,
    pub(super) limit: usize,
}

impl Write for ClaimDeliveries {
    type Output = Vec<DueDelivery>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Vec<DueDelivery>, StoreError> {
        // Read past the claimed ones: they are still due in the table until their attempt is
        // recorded.
        let read = self.limit + tx.claimed_count();
        let rows = tx
            .conn
            .prepare_cached(&format!(
                "SELECT {}, d.peer, d.attempts,
                        coalesce((SELECT a.alias FROM thread_aliases a
                                  WHERE a.thread_id = r.thread_id AND a.peer = d.peer), r.thread_id)
                 FROM deliveries d
                 JOIN replies r ON r.id = d.reply_id
                 WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= ?1
                 ORDER BY d.next_attempt_at LIMIT ?2",
                super::reads::OUTBOUND_COLUMNS_R
            ))?
            .query_map(params![self.now, read as i64], |r| {
                Ok(DueDelivery {
                    outbound: super::reads::outbound_row(r)?,
                    peer: r.get(9)?,
                    attempts: r.get(10)?,
                    thread_alias: id(r, 11)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut due = Vec::new();
        for d in rows {
            if due.len() == self.limit {
                break;
            }
            let key = (d.outbound.id.clone(), d.peer.clone());
            if tx.is_claimed(&key) {
                continue;
            }
            tx.effect(Effect::Claim(key));
            due.push(d);
        }
        Ok(due)
    }
}

pub(super) struct RecordAttempt {
    pub(super) outbound_id: String,
    pub(super) peer: String,
    pub(super) outcome: AttemptOutcome,
}

impl Write for RecordAttempt {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let now = now_ms();
        let row = self.outcome.row(now);
        let c = tx.conn;
        let n: u32 = c
            .prepare_cached(
                "UPDATE deliveries SET state = ?3, attempts = attempts + 1, next_attempt_at = ?4,
                                       last_status = ?5, last_error = ?6, delivered_at = ?7
                 WHERE reply_id = ?1 AND peer = ?2 RETURNING attempts",
            )?
            .query_row(
                params![
                    key(&self.outbound_id),
                    self.peer,
                    row.state.as_str(),
                    row.next_at,
                    row.status,
                    row.error,
                    row.delivered_at
                ],
                |r| r.get(0),
            )?;
        c.prepare_cached(
            "INSERT INTO attempts (reply_id, peer, n, at, status, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            key(&self.outbound_id),
            self.peer,
            n,
            now,
            row.status,
            row.error
        ])?;
        tx.effect(Effect::Release((
            self.outbound_id.clone(),
            self.peer.clone(),
        )));
        Ok(())
    }
}

pub(super) struct ReleaseDelivery {
    pub(super) outbound_id: String,
    pub(super) peer: String,
}

impl Write for ReleaseDelivery {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        tx.effect(Effect::Release((
            self.outbound_id.clone(),
            self.peer.clone(),
        )));
        Ok(())
    }
}

pub(super) struct RetryNow(pub(super) String);

impl Write for RetryNow {
    type Output = usize;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<usize, StoreError> {
        // A dead delivery gets a fresh schedule (attempts restarts at 0; the attempts table keeps
        // the history); one waiting for its next try is tried now. One being attempted (due
        // already) or held for a person is left alone.
        Ok(tx
            .conn
            .prepare_cached(
                "UPDATE deliveries SET
                    attempts = CASE WHEN state = 'dead' THEN 0 ELSE attempts END,
                    state = CASE WHEN state = 'dead' THEN 'pending' ELSE state END,
                    next_attempt_at = ?2
                 WHERE reply_id = ?1
                   AND (state = 'dead'
                        OR (state IN ('pending', 'retrying') AND next_attempt_at > ?2))",
            )?
            .execute(params![key(&self.0), now_ms()])?)
    }
}

/// Rows deleted per prune step, so one prune never holds the writer for long.
const PRUNE_BATCH: i64 = 500;

pub(super) struct Prune {
    pub(super) before: i64,
    pub(super) dedup_before: i64,
}

impl Write for Prune {
    type Output = usize;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<usize, StoreError> {
        let c = tx.conn;
        c.prepare_cached("DELETE FROM dedup WHERE created_at < ?1")?
            .execute(params![self.dedup_before])?;
        c.prepare_cached("DELETE FROM refusals WHERE at < ?1")?
            .execute(params![self.before])?;
        // Finished messages: mailbox, or a turn in a final state, and every reply to it settled.
        // Ids as stored (blob or text), bound back as they are.
        let ids: Vec<Value> = c
            .prepare_cached(
                "SELECT m.id FROM messages m LEFT JOIN turns t ON t.message_id = m.id
                 WHERE m.received_at < ?1
                   AND (t.state IS NULL OR t.state IN ('done', 'failed', 'timed_out', 'interrupted', 'canceled', 'rejected'))
                   AND NOT EXISTS (SELECT 1 FROM replies r JOIN deliveries d ON d.reply_id = r.id
                                   WHERE r.in_reply_to = m.id AND d.state IN ('pending', 'retrying', 'held'))
                   AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.message_id = m.id AND a.verdict IS NULL)
                 ORDER BY m.seq LIMIT ?2",
            )?
            .query_map(params![self.before, PRUNE_BATCH], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in &ids {
            for sql in [
                "DELETE FROM attempts WHERE reply_id IN (SELECT id FROM replies WHERE in_reply_to = ?1)",
                "DELETE FROM deliveries WHERE reply_id IN (SELECT id FROM replies WHERE in_reply_to = ?1)",
                "DELETE FROM replies WHERE in_reply_to = ?1",
                "DELETE FROM approvals WHERE message_id = ?1",
                "DELETE FROM tokens WHERE message_id = ?1",
                "DELETE FROM reply_counts WHERE message_id = ?1",
                "DELETE FROM task_inputs WHERE message_id = ?1",
                "DELETE FROM turns WHERE message_id = ?1",
                "DELETE FROM messages WHERE id = ?1",
            ] {
                c.prepare_cached(sql)?.execute(params![id])?;
            }
        }
        // Outbound messages that answer no stored message (operator sends, or their message
        // already went).
        let orphans: Vec<Value> = c
            .prepare_cached(
                "SELECT r.id FROM replies r WHERE r.created_at < ?1
                   AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.in_reply_to)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.reply_id = r.id
                                   AND d.state IN ('pending', 'retrying', 'held'))
                 ORDER BY r.seq LIMIT ?2",
            )?
            .query_map(params![self.before, PRUNE_BATCH], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in &orphans {
            for sql in [
                "DELETE FROM attempts WHERE reply_id = ?1",
                "DELETE FROM deliveries WHERE reply_id = ?1",
                "DELETE FROM approvals WHERE id = ?1",
                "DELETE FROM replies WHERE id = ?1",
            ] {
                c.prepare_cached(sql)?.execute(params![id])?;
            }
        }
        // Tasks whose messages have all gone (or a rejected one's, which never had one).
        let tasks: Vec<Value> = c
            .prepare_cached(
                "SELECT t.id FROM tasks t WHERE t.created_at < ?1
                   AND NOT EXISTS (SELECT 1 FROM task_inputs i WHERE i.task_id = t.id
                                   AND i.message_id IS NOT NULL)
                 ORDER BY t.seq LIMIT ?2",
            )?
            .query_map(params![self.before, PRUNE_BATCH], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in &tasks {
            for sql in [
                "DELETE FROM push_configs WHERE task_id = ?1",
                "DELETE FROM task_inputs WHERE task_id = ?1",
                "DELETE FROM tasks WHERE id = ?1",
            ] {
                c.prepare_cached(sql)?.execute(params![id])?;
            }
        }
        Ok(ids.len() + orphans.len() + tasks.len())
    }
}

/// Creates or replaces a push config.
pub(super) struct PutPushConfig(pub(super) PushConfig);

impl Write for PutPushConfig {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let p = &self.0;
        tx.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO push_configs
                     (task_id, id, url, token, auth_scheme, credentials, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                key(&p.task_id),
                p.id,
                p.url,
                p.token,
                p.auth_scheme,
                p.credentials,
                p.created_at
            ])?;
        Ok(())
    }
}

pub(super) struct DeletePushConfig {
    pub(super) task_id: String,
    pub(super) id: String,
}

impl Write for DeletePushConfig {
    type Output = bool;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<bool, StoreError> {
        Ok(tx
            .conn
            .prepare_cached("DELETE FROM push_configs WHERE task_id = ?1 AND id = ?2")?
            .execute(params![key(&self.task_id), self.id])?
            > 0)
    }
}

/// Queues one push of a task's state through one config, unless that state was pushed already.
pub(super) struct EnqueuePush {
    pub(super) outbound: Outbound,
    pub(super) task_id: String,
    pub(super) config_id: String,
    pub(super) state_key: String,
    pub(super) last: bool,
}

impl Write for EnqueuePush {
    type Output = bool;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<bool, StoreError> {
        let c = tx.conn;
        let changed = c
            .prepare_cached(
                "UPDATE push_configs SET pushed = ?3, done = ?4
                 WHERE task_id = ?1 AND id = ?2 AND done = 0 AND pushed IS NOT ?3",
            )?
            .execute(params![
                key(&self.task_id),
                self.config_id,
                self.state_key,
                self.last
            ])?;
        if changed == 0 {
            return Ok(false);
        }
        InsertOutbound {
            outbound: self.outbound.clone(),
            peers: vec![crate::model::push_target(&self.task_id, &self.config_id)],
            hold: None,
            fence: None,
        }
        .apply(tx)?;
        Ok(true)
    }
}

/// Records a decision on a held item and acts on it (see `Store::decide`).
pub(super) struct DecideWrite(pub(super) Decide);

impl Write for DecideWrite {
    type Output = Decided;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Decided, StoreError> {
        let (c, d) = (tx.conn, &self.0);
        let Some(mut approval) = super::reads::approval(c, &d.id)? else {
            return Ok(Decided::NotFound);
        };
        if approval.decision.is_some() {
            return Ok(Decided::Already(approval));
        }
        let mut original_payload = None;
        match (approval.kind, d.verdict) {
            (ApprovalKind::Inbound, Verdict::Approved) => {
                let moved = c
                    .prepare_cached(
                        "UPDATE turns SET state = 'queued'
                         WHERE message_id = ?1 AND state = 'awaiting_approval'",
                    )?
                    .execute(params![key(&d.id)])?;
                if moved > 0 {
                    tx.effect(Effect::Queued {
                        route: approval.route.clone(),
                        up: true,
                    });
                }
            }
            (ApprovalKind::Inbound, Verdict::Rejected) => {
                let error = TurnError::new("rejected", d.reason.clone().unwrap_or_default());
                c.prepare_cached(
                    "UPDATE turns SET state = 'rejected', ended_at = ?2, error = ?3
                     WHERE message_id = ?1 AND state = 'awaiting_approval'",
                )?
                .execute(params![key(&d.id), d.at, error.to_string()])?;
            }
            (ApprovalKind::Outbound, Verdict::Approved) => {
                if let Some(edited) = &d.edited {
                    original_payload = c
                        .prepare_cached("SELECT payload FROM replies WHERE id = ?1")?
                        .query_row(params![key(&d.id)], |r| r.get::<_, String>(0))
                        .optional()?;
                    c.prepare_cached("UPDATE replies SET payload = ?2 WHERE id = ?1")?
                        .execute(params![key(&d.id), edited])?;
                }
                c.prepare_cached(
                    "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2
                     WHERE reply_id = ?1 AND state = 'held'",
                )?
                .execute(params![key(&d.id), d.at])?;
            }
            (ApprovalKind::Outbound, Verdict::Rejected) => {
                c.prepare_cached(
                    "UPDATE deliveries SET state = 'withheld', last_error = ?2
                     WHERE reply_id = ?1 AND state = 'held'",
                )?
                .execute(params![
                    key(&d.id),
                    format!(
                        "rejected by {}: {}",
                        d.by,
                        d.reason.as_deref().unwrap_or_default()
                    )
                ])?;
            }
        }
        c.prepare_cached(
            "UPDATE approvals SET verdict = ?2, decided_by = ?3, via = ?4, decided_at = ?5,
                                  decision_reason = ?6, original_payload = ?7
             WHERE id = ?1",
        )?
        .execute(params![
            key(&d.id),
            d.verdict.as_str(),
            d.by,
            d.via,
            d.at,
            d.reason,
            original_payload
        ])?;
        approval.decision = Some(crate::model::Decision {
            verdict: d.verdict,
            by: d.by.clone(),
            via: d.via.clone(),
            at: d.at,
            reason: d.reason.clone(),
            original_payload,
        });
        Ok(Decided::Now(approval))
    }
}

/// Records a remote task as it stands now (created, or updated: its lease is left as it is).
pub(super) struct PutRemoteTask(pub(super) RemoteTask);

impl Write for PutRemoteTask {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let t = &self.0;
        let seen = serde_json::to_string(&t.seen).unwrap_or_else(|_| "[]".into());
        tx.conn
            .prepare_cached(
                "INSERT INTO remote_tasks (key, kind, target, thread_id, origin, message_ref,
                     remote_id, context_id, state, seen, follow_until, done, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (key) DO UPDATE SET
                     remote_id = excluded.remote_id, context_id = excluded.context_id,
                     state = excluded.state, seen = excluded.seen,
                     follow_until = excluded.follow_until, done = excluded.done,
                     updated_at = excluded.updated_at",
            )?
            .execute(params![
                t.key,
                t.kind.as_str(),
                t.target,
                t.thread_id,
                t.origin,
                t.message_ref,
                t.remote_id,
                t.context_id,
                t.state,
                seen,
                t.follow_until,
                t.done,
                t.created_at,
                t.updated_at
            ])?;
        Ok(())
    }
}

/// Takes up to `limit` delivery follow-ups that are due and not leased, leasing each for
/// `lease_ms` (a follower that dies lets go when the lease runs out).
pub(super) struct ClaimFollowUps {
    pub(super) now: i64,
    pub(super) limit: usize,
    pub(super) lease_ms: i64,
}

impl Write for ClaimFollowUps {
    type Output = Vec<RemoteTask>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Vec<RemoteTask>, StoreError> {
        let due: Vec<RemoteTask> = tx
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM remote_tasks
                 WHERE kind = 'delivery' AND done = 0 AND next_at <= ?1
                   AND (lease_until IS NULL OR lease_until < ?1)
                 ORDER BY next_at LIMIT ?2",
                super::reads::REMOTE_COLUMNS
            ))?
            .query_map(
                params![self.now, self.limit as i64],
                super::reads::remote_row,
            )?
            .collect::<Result<_, _>>()?;
        let mut lease = tx.conn.prepare_cached(
            "UPDATE remote_tasks SET lease_holder = 'local', lease_until = ?2 WHERE key = ?1",
        )?;
        for t in &due {
            lease.execute(params![t.key, self.now + self.lease_ms])?;
        }
        Ok(due)
    }
}

/// Records a follow-up's progress and lets go of its lease, to be looked at again at `next_at`.
pub(super) struct SettleFollowUp {
    pub(super) task: RemoteTask,
    pub(super) next_at: i64,
}

impl Write for SettleFollowUp {
    type Output = bool;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<bool, StoreError> {
        let t = &self.task;
        let seen = serde_json::to_string(&t.seen).unwrap_or_else(|_| "[]".into());
        let n = tx
            .conn
            .prepare_cached(
                "UPDATE remote_tasks SET state = ?2, seen = ?3, done = ?4, context_id = ?5,
                     updated_at = ?6, next_at = ?7, lease_holder = NULL, lease_until = NULL
                 WHERE key = ?1",
            )?
            .execute(params![
                t.key,
                t.state,
                seen,
                t.done,
                t.context_id,
                t.updated_at,
                self.next_at
            ])?;
        Ok(n == 1)
    }
}
