//! The reads: records and lists as the API and the scheduler ask for them, each one statement
//! (or one snapshot) on a pooled connection.

use super::*;

impl PgStore {
    pub(in crate::store) async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
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

    pub(in crate::store) async fn agent_started(
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

    pub(in crate::store) async fn task_of_message(
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

    pub(in crate::store) async fn tasks(
        &self,
        f: TaskFilter,
    ) -> Result<Vec<TaskRecord>, StoreError> {
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

    pub(in crate::store) async fn remote_task(
        &self,
        key: &str,
    ) -> Result<Option<RemoteTask>, StoreError> {
        self.client()
            .await?
            .query_opt(
                &format!("SELECT {REMOTE_COLUMNS} FROM remote_tasks WHERE key = $1"),
                &[&key],
            )
            .await?
            .map(|r| remote_row(&r))
            .transpose()
    }

    pub(in crate::store) async fn latest_remote_task(
        &self,
        thread_id: &str,
        kind: RemoteKind,
        target: &str,
    ) -> Result<Option<RemoteTask>, StoreError> {
        self.client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {REMOTE_COLUMNS} FROM remote_tasks
                     WHERE thread_id = $1 AND kind = $2 AND target = $3 AND remote_id IS NOT NULL
                     ORDER BY updated_at DESC, created_at DESC LIMIT 1"
                ),
                &[&thread_id, &kind.as_str(), &target],
            )
            .await?
            .map(|r| remote_row(&r))
            .transpose()
    }

    pub(in crate::store) async fn remote_tasks_of(
        &self,
        origin: &str,
    ) -> Result<Vec<RemoteTask>, StoreError> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {REMOTE_COLUMNS} FROM remote_tasks WHERE origin = $1 ORDER BY created_at, key"
                ),
                &[&origin],
            )
            .await?
            .iter()
            .map(remote_row)
            .collect()
    }

    pub(in crate::store) async fn push_config(
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

    pub(in crate::store) async fn push_configs(
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

    pub(in crate::store) async fn push_pending(
        &self,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
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

    pub(in crate::store) async fn refusals(
        &self,
        thread: &str,
    ) -> Result<Vec<Refusal>, StoreError> {
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

    pub(in crate::store) async fn queued_routes(&self) -> Result<Vec<String>, StoreError> {
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

    pub(in crate::store) fn queue_depth(&self) -> usize {
        self.queued().values().sum()
    }

    pub(in crate::store) fn queue_depths(&self) -> Vec<(String, usize)> {
        let mut d: Vec<(String, usize)> = self
            .queued()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.clone(), *n))
            .collect();
        d.sort();
        d
    }

    pub(in crate::store) async fn hosts(
        &self,
        within: Duration,
    ) -> Result<Vec<HostBeat>, StoreError> {
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

    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    pub(in crate::store) async fn approval(
        &self,
        id: &str,
    ) -> Result<Option<Approval>, StoreError> {
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

    pub(in crate::store) async fn approvals(
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

    pub(in crate::store) async fn approvals_for(
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

    pub(in crate::store) async fn expired_approvals(
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

    pub(in crate::store) async fn next_due(&self, after: i64) -> Result<Option<i64>, StoreError> {
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

    pub(in crate::store) async fn token(
        &self,
        hash: TokenHash,
    ) -> Result<Option<Grant>, StoreError> {
        self.grant("t.hash = $1", &&hash.0[..]).await
    }

    pub(in crate::store) async fn latest_grant(
        &self,
        message_id: &str,
    ) -> Result<Option<Grant>, StoreError> {
        self.grant(
            "t.message_id = $1 ORDER BY t.attempt DESC LIMIT 1",
            &message_id,
        )
        .await
    }

    /// The grant of the one token `filter` selects by its one parameter.
    async fn grant(
        &self,
        filter: &str,
        param: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Option<Grant>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT t.message_id, t.route, m.thread_id, m.hops, t.expires_at,
                        tu.state IN ('running', 'queued'), t.attempt, t.terms,
                        coalesce((t.attempt = 0 OR t.attempt = tu.attempts)
                                 AND tu.state NOT IN ('queued', 'interrupted'), false)
                 FROM tokens t JOIN messages m ON m.id = t.message_id
                 LEFT JOIN turns tu ON tu.message_id = t.message_id
                 WHERE {filter}"
                ),
                &[param],
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

    pub(in crate::store) async fn thread_of(
        &self,
        peer: &str,
        alias: &str,
    ) -> Result<Option<String>, StoreError> {
        aliases::thread_of(&self.client().await?, peer, alias).await
    }

    pub(in crate::store) async fn alias_of(
        &self,
        thread: &str,
        peer: &str,
    ) -> Result<Option<String>, StoreError> {
        aliases::alias_of(&self.client().await?, thread, peer).await
    }

    pub(in crate::store) async fn revoked_sessions(
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

    pub(in crate::store) async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
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

    pub(in crate::store) async fn turn(
        &self,
        message_id: &str,
    ) -> Result<Option<Turn>, StoreError> {
        let c = self.client().await?;
        turn(&c, message_id).await
    }

    pub(in crate::store) async fn outbound_for(
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

    pub(in crate::store) async fn outbound(
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

    pub(in crate::store) async fn list_messages(
        &self,
        f: MessageFilter,
    ) -> Result<Vec<(Message, Option<TurnState>)>, StoreError> {
        let mut clauses = Vec::new();
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let text = f.text.as_ref().map(|t| t.to_lowercase());
        for (clause, value) in [
            ("m.route = $N", &f.route),
            ("m.thread_id = $N", &f.thread),
            ("m.sender = $N", &f.sender),
            ("m.type = $N", &f.msg_type),
            (
                "(strpos(lower(m.type), $N) > 0 OR strpos(lower(m.title), $N) > 0)",
                &text,
            ),
            // A cursor that names no message ends the listing (the page before was the last).
            (
                "m.seq < coalesce((SELECT seq FROM messages WHERE id = $N), 0)",
                &f.before,
            ),
        ] {
            if let Some(v) = value {
                values.push(v);
                clauses.push(clause.replace("$N", &format!("${}", values.len())));
            }
        }
        if let Some(state) = f.state {
            clauses.push(state.condition());
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

    pub(in crate::store) async fn outbound_to_peer(
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

    pub(in crate::store) async fn unanswering(
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

    pub(in crate::store) async fn outbox(
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

    pub(in crate::store) async fn last_attempts(
        &self,
        peers: Vec<String>,
    ) -> Result<Vec<(String, Attempt)>, StoreError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for peer in peers {
            let row = c
                .query_opt(
                    "SELECT n, at, status, error FROM attempts WHERE peer = $1
                     ORDER BY at DESC LIMIT 1",
                    &[&peer],
                )
                .await?;
            if let Some(r) = row {
                let a = Attempt {
                    n: u32_at(&r, 0),
                    at: r.get(1),
                    status: r.get::<_, Option<i64>>(2).map(|s| s as u16),
                    error: r.get(3),
                };
                out.push((peer, a));
            }
        }
        Ok(out)
    }

    pub(in crate::store) async fn attempts(
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
