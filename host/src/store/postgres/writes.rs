//! The writes: each one transaction, fenced where a lease or an attempt says whose it is, and the
//! claims that hand work out with `FOR UPDATE SKIP LOCKED`.

use super::*;
use crate::model::Cancel;

impl PgStore {
    pub(in crate::store) async fn insert_message(
        &self,
        mut m: Message,
        title: Option<String>,
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
            return self.insert_plain(m, title, turn).await;
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
                return abandon(tx, Inserted::Duplicate(original)).await;
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
                return abandon(
                    tx,
                    Inserted::QueueFull {
                        max_queued: t.max_queued,
                    },
                )
                .await;
            }
        }
        if let Some(alias) = &alias {
            m.thread_id = aliases::resolve(&tx, &m.sender, alias, &m.thread_id).await?;
        }
        tx.execute(
            "INSERT INTO messages (id, sender, route, type, payload, thread_id, in_reply_to, hops,
                                   sender_ref, received_at, mailbox, title)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
                &title,
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
    pub(super) async fn insert_plain(
        &self,
        m: Message,
        title: Option<String>,
        turn: Option<NewTurn>,
    ) -> Result<Inserted, StoreError> {
        let c = self.client().await?;
        let hops = m.hops as i64;
        let values: [&(dyn ToSql + Sync); 12] = [
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
            &title,
        ];
        let Some(t) = turn else {
            c.execute(
                "INSERT INTO messages (id, sender, route, type, payload, thread_id, in_reply_to,
                                       hops, sender_ref, received_at, mailbox, title)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
                                           in_reply_to, hops, sender_ref, received_at, mailbox,
                                           title)
                     SELECT $1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::TEXT, $6::TEXT, $7::TEXT,
                            $8::BIGINT, $9::TEXT, $10::BIGINT, $11::BOOLEAN, $12::TEXT
                     WHERE (SELECT count(*) FROM turns WHERE route = $3::TEXT AND state = 'queued')
                           < $13::BIGINT
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

    pub(in crate::store) async fn insert_task(
        &self,
        task: Task,
        input: TaskInput,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        insert_task(&tx, &task).await?;
        insert_input(&tx, &input).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn cancel_task(
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
            return abandon(tx, None).await;
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
        let cancel = Cancel {
            by: "client".into(),
            via: "a2a".into(),
            at,
        };
        cancel_turn(&tx, &message_id, &cancel, "the client cancelled the task").await?;
        tx.commit().await?;
        Ok(Some(Canceled {
            turn: Some((message_id, route, state)),
        }))
    }

    /// A person cancels a message's turn (queued, held or running): the route and the state it
    /// was in, if it was cancelled.
    pub(in crate::store) async fn cancel_message_turn(
        &self,
        message_id: &str,
        cancel: Cancel,
    ) -> Result<Option<(String, TurnState)>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT route, state FROM turns WHERE message_id = $1 FOR UPDATE",
                &[&message_id],
            )
            .await?;
        let Some(row) = row else {
            return abandon(tx, None).await;
        };
        let route: String = row.get(0);
        let state: TurnState = parse(&row, 1)?;
        if state.is_final() {
            return abandon(tx, None).await;
        }
        let why = format!("cancelled by {} ({})", cancel.by, cancel.via);
        cancel_turn(&tx, message_id, &cancel, &why).await?;
        tx.commit().await?;
        Ok(Some((route, state)))
    }

    pub(in crate::store) async fn claim_follow_ups(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<RemoteTask>, StoreError> {
        // One host follows a task at a time: its lease, on the database's clock, skips the rows
        // another host is taking, and outlives a host that dies only until it runs out.
        self.client()
            .await?
            .query(
                &format!(
                    "UPDATE remote_tasks t SET lease_holder = $3,
                                               lease_until = now() + make_interval(secs => $4)
                     FROM (SELECT key FROM remote_tasks
                           WHERE kind = 'delivery' AND NOT done AND next_at <= $1
                             AND (lease_until IS NULL OR lease_until < now())
                           ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
                     WHERE t.key = due.key
                     RETURNING {}",
                    REMOTE_COLUMNS
                        .split(", ")
                        .map(|c| format!("t.{}", c.trim()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&now, &(limit as i64), &&*self.owner, &secs(self.lease)],
            )
            .await?
            .iter()
            .map(remote_row)
            .collect()
    }

    pub(in crate::store) async fn settle_follow_up(
        &self,
        t: RemoteTask,
        next_at: i64,
    ) -> Result<bool, StoreError> {
        let seen = serde_json::to_string(&t.seen).unwrap_or_else(|_| "[]".into());
        // Fenced by the lease: a host that lost it (paused past it) records nothing.
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE remote_tasks SET state = $2, seen = $3, done = $4, context_id = $5,
                     updated_at = $6, next_at = $7, lease_holder = NULL, lease_until = NULL
                 WHERE key = $1 AND lease_holder = $8",
                &[
                    &t.key,
                    &t.state,
                    &seen,
                    &t.done,
                    &t.context_id,
                    &t.updated_at,
                    &next_at,
                    &&*self.owner,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    pub(in crate::store) async fn put_remote_task(&self, t: RemoteTask) -> Result<(), StoreError> {
        let seen = serde_json::to_string(&t.seen).unwrap_or_else(|_| "[]".into());
        self.client()
            .await?
            .execute(
                "INSERT INTO remote_tasks (key, kind, target, thread_id, origin, message_ref,
                     remote_id, context_id, state, seen, follow_until, done, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (key) DO UPDATE SET
                     remote_id = EXCLUDED.remote_id, context_id = EXCLUDED.context_id,
                     state = EXCLUDED.state, seen = EXCLUDED.seen,
                     follow_until = EXCLUDED.follow_until, done = EXCLUDED.done,
                     updated_at = EXCLUDED.updated_at",
                &[
                    &t.key,
                    &t.kind.as_str(),
                    &t.target,
                    &t.thread_id,
                    &t.origin,
                    &t.message_ref,
                    &t.remote_id,
                    &t.context_id,
                    &t.state,
                    &seen,
                    &t.follow_until,
                    &t.done,
                    &t.created_at,
                    &t.updated_at,
                ],
            )
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn put_push_config(&self, p: PushConfig) -> Result<(), StoreError> {
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

    pub(in crate::store) async fn delete_push_config(
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

    pub(in crate::store) async fn enqueue_push(&self, push: Push) -> Result<bool, StoreError> {
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
            return abandon(tx, false).await;
        }
        let target = crate::model::push_target(&push.task_id, &push.config_id);
        insert_outbound(&tx, &push.outbound, &[target], None, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(in crate::store) async fn claim_turn(
        &self,
        claim: TurnClaim,
    ) -> Result<Option<Claimed>, StoreError> {
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
            return abandon(tx, None).await;
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

    pub(in crate::store) async fn renew_lease(
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

    pub(in crate::store) async fn end_turn(
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
            return abandon(tx, false).await;
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
    pub(in crate::store) async fn recover_interrupted(
        &self,
    ) -> Result<Vec<Interrupted>, StoreError> {
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

    pub(in crate::store) async fn insert_refusal(&self, r: Refusal) -> Result<(), StoreError> {
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

    pub(in crate::store) async fn probe(&self) -> Result<(), StoreError> {
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

    pub(in crate::store) async fn interrupt(
        &self,
        lease: &Lease,
    ) -> Result<Option<Interrupted>, StoreError> {
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

    pub(in crate::store) async fn requeue(
        &self,
        message_id: &str,
        even_if_replied: bool,
    ) -> Result<Requeued, StoreError> {
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
            return abandon(tx, Requeued::NotInterrupted).await;
        };
        let attempts = u32_at(&row, 0);
        let replied: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM replies WHERE in_reply_to = $1 AND attempt = $2)",
                &[&message_id, &i64::from(attempts)],
            )
            .await?
            .get(0);
        if replied && !even_if_replied {
            return abandon(tx, Requeued::Replied).await;
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

    pub(in crate::store) async fn fail_interrupted(
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

    pub(in crate::store) async fn heartbeat(&self, b: HostBeat) -> Result<(), StoreError> {
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

    pub(in crate::store) async fn insert_outbound(
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
                return abandon(tx, false).await;
            }
        }
        let attempt = fence.as_ref().map(|f| i64::from(f.generation));
        insert_outbound(&tx, &outbound, &peers, hold.as_ref(), attempt).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(in crate::store) async fn decide(&self, d: Decide) -> Result<Decided, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1 FOR UPDATE"),
                &[&d.id],
            )
            .await?;
        let Some(row) = row else {
            return abandon(tx, Decided::NotFound).await;
        };
        let mut approval = approval_row(&row)?;
        if approval.decision.is_some() {
            return abandon(tx, Decided::Already(approval)).await;
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

    pub(in crate::store) async fn claim_deliveries(
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

    pub(in crate::store) async fn record_attempt(
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

    pub(in crate::store) async fn release_delivery(
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

    pub(in crate::store) async fn retry_now(&self, outbound_id: &str) -> Result<usize, StoreError> {
        Ok(self
            .client()
            .await?
            .execute(
                "UPDATE deliveries SET
                    attempts = CASE WHEN state = 'dead' THEN 0 ELSE attempts END,
                    state = CASE WHEN state = 'dead' THEN 'pending' ELSE state END,
                    next_attempt_at = $2
                 WHERE reply_id = $1
                   AND (state = 'dead'
                        OR (state IN ('pending', 'retrying') AND next_attempt_at > $2))",
                &[&outbound_id, &now_ms()],
            )
            .await? as usize)
    }

    pub(in crate::store) async fn prune(
        &self,
        before: i64,
        dedup_before: i64,
    ) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // One host prunes at a time; the others find the lock taken and skip this round.
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await?
            .get(0);
        if !locked {
            return abandon(tx, 0).await;
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

    pub(in crate::store) async fn revoke_session(
        &self,
        id: &str,
        until: i64,
    ) -> Result<(), StoreError> {
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

    pub(in crate::store) async fn count_reply(
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
            Err(wait) => return abandon(tx, Err(wait)).await,
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
}

/// Ends a queued, held or running turn as `canceled`, recording who did it. The host that runs
/// it sees `canceled` when it next renews its lease, and its end is refused by the fence; its
/// reply token stops working now, and a turn that waited for a person no longer does.
async fn cancel_turn(
    tx: &tokio_postgres::Transaction<'_>,
    message_id: &str,
    cancel: &Cancel,
    why: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE turns SET state = 'canceled', ended_at = $2, error = 'canceled: ' || $3,
                          canceled_by = $4, canceled_via = $5, canceled_at = $2
         WHERE message_id = $1",
        &[&message_id, &cancel.at, &why, &cancel.by, &cancel.via],
    )
    .await?;
    tx.execute(
        "UPDATE tokens SET expires_at = $2 WHERE message_id = $1",
        &[&message_id, &cancel.at],
    )
    .await?;
    tx.execute(
        "UPDATE approvals SET verdict = 'rejected', decided_by = $3, via = $4,
                              decided_at = $2, decision_reason = $5
         WHERE id = $1 AND verdict IS NULL",
        &[&message_id, &cancel.at, &cancel.by, &cancel.via, &why],
    )
    .await?;
    Ok(())
}
