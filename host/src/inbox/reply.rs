//! What goes out: an agent's reply by its turn's token (`grant`, `reply`), a message the operator
//! or a local agent sends (`send`, `agent_send`), each held for a person where the route says so,
//! and replaying dead letters.

use super::*;

/// Why and for how long an outbound message waits for a person, and whose it is (for the
/// approval's record and its announcement).
struct HeldBy {
    /// The route that holds its agent's replies; empty for a message a local agent started.
    route: String,
    /// The agent (or, without one, the route) that sent it.
    sender: String,
    reason: String,
    timeout: std::time::Duration,
}

impl HeldBy {
    /// What waits for a person (announced) and the hold recorded with `outbound`.
    fn waiting(self, outbound: &Outbound) -> (Waiting, Hold) {
        let waiting = Waiting {
            id: outbound.id.clone(),
            kind: ApprovalKind::Outbound,
            route: self.route,
            sender: self.sender,
            msg_type: outbound.msg_type.clone(),
            thread_id: outbound.thread_id.clone(),
            reason: self.reason.clone(),
        };
        let hold = Hold {
            reason: self.reason,
            expires_at: outbound.created_at + self.timeout.as_millis() as i64,
        };
        (waiting, hold)
    }
}

impl Inbox {
    /// What a reply token grants, if it is known and still valid.
    pub async fn grant(&self, token: &str) -> Result<token::Grant, InboxError> {
        let grant = self
            .store
            .token(token::hash(token))
            .await?
            .ok_or(InboxError::BadToken)?;
        if !grant.is_valid_at(now_ms()) {
            return Err(InboxError::BadToken);
        }
        Ok(grant)
    }

    /// Records an agent's reply under its token's grant: checks its type, runs its check-reply,
    /// commits it with a delivery per peer, and wakes the relay. All of it by the terms the turn
    /// started with (its prompt promised them), whatever a reload changed since; a token from
    /// before terms were kept falls back to the route in force.
    pub async fn reply(
        &self,
        snap: &Snapshot,
        grant: token::Grant,
        body: SendBody,
    ) -> Result<Ack, InboxError> {
        self.reply_as(snap, grant, body, new_id()).await
    }

    /// [`Inbox::reply`] with the reply's id given (derived, for a reply the inbox makes itself).
    async fn reply_as(
        &self,
        snap: &Snapshot,
        grant: token::Grant,
        body: SendBody,
        id: String,
    ) -> Result<Ack, InboxError> {
        if body.starts_thread {
            return Err(InboxError::NotAllowed {
                reason: "a reply token answers its own turn: it cannot name a peer or a thread"
                    .into(),
                allowed: vec!["the route's reply types, with no \"to\" or \"thread_id\"".into()],
            });
        }
        if !grant.current {
            return Err(InboxError::Superseded);
        }
        let Some(terms) = grant
            .terms
            .clone()
            .or_else(|| snap.turn_terms(&grant.route))
        else {
            return Err(InboxError::UnknownReplyType {
                got: body.msg_type,
                allowed: vec![],
            });
        };
        if !terms.reply_types.contains(&body.msg_type) {
            return Err(InboxError::UnknownReplyType {
                got: body.msg_type,
                allowed: terms.reply_types.clone(),
            });
        }
        // Counted before check-reply and any hold: a refused or held reply spends the budget too,
        // so one token cannot flood the plugins, the approvers or the peers.
        let limits = terms.limits;
        if let Err(wait_ms) = self
            .store
            .count_reply(&grant.message_id, grant.attempt, limits, now_ms())
            .await?
        {
            tracing::info!(
                message_id = %grant.message_id, route = %grant.route, attempt = grant.attempt,
                "reply refused: the turn is over its reply limit"
            );
            return Err(InboxError::TooManyReplies {
                per_turn: limits.per_turn,
                per_minute: limits.per_minute,
                retry_after: std::time::Duration::from_millis(wait_ms.max(1) as u64),
            });
        }
        let draft = Draft {
            msg_type: body.msg_type,
            payload: body.payload,
        };
        // The plugin the turn started with: the one in force, or one a reload replaced. After a
        // restart that also changed it, only the one in force is left.
        let plugin = terms.plugin.as_deref().and_then(|sha| {
            snap.plugin_for(&grant.route, sha).or_else(|| {
                let now = snap.plugins.get(&grant.route);
                tracing::warn!(
                    message_id = %grant.message_id, route = %grant.route,
                    "the plugin this turn started with is no longer loaded; its reply is checked by the one in force"
                );
                now
            })
        });
        // Only a plugin needs the message being answered; without one, no read.
        let (draft, to) = match plugin {
            Some(p) => {
                let answered = self
                    .store
                    .message(&grant.message_id)
                    .await?
                    .ok_or(InboxError::BadToken)?;
                let rules = hooks::ReplyRules {
                    route: &grant.route,
                    reply_types: &terms.reply_types,
                    reply_to: &terms.reply_to,
                    plugin: Some(p),
                };
                let cleared = hooks::check_reply(snap, &rules, &answered, draft).await?;
                (cleared.reply, cleared.to)
            }
            None => (draft, terms.reply_to.clone()),
        };
        let outbound = Outbound {
            id,
            in_reply_to: Some(grant.message_id.clone()),
            route: Some(grant.route.clone()),
            msg_type: draft.msg_type,
            payload: draft.payload,
            thread_id: grant.thread_id.clone(),
            hops: grant.hops + 1,
            created_at: now_ms(),
            agent: terms.agent.clone(),
        };
        let id = outbound.id.clone();
        let held = terms.approve_outbound.map(|ms| HeldBy {
            route: grant.route.clone(),
            sender: terms.agent.clone().unwrap_or_else(|| grant.route.clone()),
            reason: format!("route {} approves outbound replies", grant.route),
            timeout: std::time::Duration::from_millis(ms.max(0) as u64),
        });
        let attempt = Lease {
            message_id: grant.message_id.clone(),
            generation: grant.attempt,
        };
        if !self
            .dispatch_reply(outbound.clone(), to.clone(), held, attempt)
            .await?
        {
            return Err(InboxError::Superseded);
        }
        tracing::info!(
            reply = %id, message_id = %grant.message_id, route = %grant.route,
            agent = terms.agent.as_deref().unwrap_or(""), msg_type = %outbound.msg_type,
            peers = ?to, held = terms.approve_outbound.is_some(), "reply queued"
        );
        Ok(Ack {
            status: AckStatus::Queued,
            id,
            thread_id: None,
        })
    }

    /// Commits an agent's reply like [`Inbox::dispatch`], fenced by its attempt; `false` if that
    /// attempt has been superseded (nothing written).
    async fn dispatch_reply(
        &self,
        outbound: Outbound,
        to: Vec<String>,
        held: Option<HeldBy>,
        attempt: Lease,
    ) -> Result<bool, InboxError> {
        let Some(h) = held else {
            return Ok(self
                .relay
                .enqueue_reply(outbound, to, None, attempt)
                .await?);
        };
        let (waiting, hold) = h.waiting(&outbound);
        if !self
            .relay
            .enqueue_reply(outbound, to, Some(hold), attempt)
            .await?
        {
            return Ok(false);
        }
        self.approvals.waiting(waiting);
        Ok(true)
    }

    /// Commits an outbound message for delivery to `to`, or, if `held`, for a person to approve
    /// first (and announces that it waits).
    async fn dispatch(
        &self,
        outbound: Outbound,
        to: Vec<String>,
        held: Option<HeldBy>,
    ) -> Result<(), InboxError> {
        let Some(h) = held else {
            self.relay.enqueue(outbound, to).await?;
            return Ok(());
        };
        let (waiting, hold) = h.waiting(&outbound);
        self.relay.hold(outbound, to, hold).await?;
        self.approvals.waiting(waiting);
        Ok(())
    }

    /// Sends a message as the operator: starts a thread with a peer, or continues one.
    pub async fn send(&self, snap: &Snapshot, body: AdminSendBody) -> Result<Ack, InboxError> {
        if !snap.config.peers.contains_key(&body.to) {
            return Err(InboxError::UnknownPeer {
                peer: body.to,
                known: snap.config.peers.keys().cloned().collect(),
            });
        }
        self.start_thread(body, 0, None).await
    }

    /// Queues a message that starts (or continues) a thread with a peer, at `hops`, sent by the
    /// operator or by local agent `agent`; held for a person first if that agent's messages are.
    async fn start_thread(
        &self,
        body: AdminSendBody,
        hops: u32,
        agent: Option<&config::LocalAgent>,
    ) -> Result<Ack, InboxError> {
        let id = new_id();
        let outbound = Outbound {
            thread_id: body.thread_id.unwrap_or_else(|| id.clone()),
            in_reply_to: body.in_reply_to,
            id,
            route: None,
            msg_type: body.msg_type,
            payload: body.payload,
            hops,
            created_at: now_ms(),
            agent: agent.map(|a| a.name.clone()),
        };
        let (id, thread_id) = (outbound.id.clone(), outbound.thread_id.clone());
        let held = agent.filter(|a| a.approve);
        tracing::info!(
            reply = %id, sender = agent.map_or("operator", |a| a.name.as_str()), peer = %body.to,
            msg_type = %outbound.msg_type,
            thread = %thread_id, hops, held = held.is_some(), "message queued"
        );
        let held = held.map(|agent| HeldBy {
            route: String::new(),
            sender: agent.name.clone(),
            reason: format!("agent {}'s messages wait for approval", agent.name),
            timeout: agent.approval_timeout,
        });
        self.dispatch(outbound, vec![body.to], held).await?;
        Ok(Ack {
            status: AckStatus::Queued,
            id,
            thread_id: Some(thread_id),
        })
    }

    /// Sends a message as a local agent (`[agents.NAME]`, by its token): starts a thread with a
    /// peer or continues one, within the agent's `may_send` and `max_per_minute`. A new thread
    /// starts at hop 0; a thread it names continues that thread's hops, under `max_hops`.
    pub async fn agent_send(
        &self,
        snap: &Snapshot,
        agent: &config::LocalAgent,
        body: AdminSendBody,
    ) -> Result<Ack, InboxError> {
        if !agent.may_send(&body.to, &body.msg_type) {
            return Err(InboxError::NotAllowed {
                reason: format!(
                    "agent {} may not send {} to {}",
                    agent.name, body.msg_type, body.to
                ),
                allowed: agent.allowed(),
            });
        }
        if let Err(retry_after) =
            self.send_rate
                .take(&agent.name, agent.max_per_minute, std::time::Instant::now())
        {
            tracing::warn!(agent = %agent.name, "agent over its send rate");
            return Err(InboxError::RateLimited {
                agent: agent.name.clone(),
                max: agent.max_per_minute,
                retry_after,
            });
        }
        let hops = match &body.thread_id {
            None => 0,
            Some(thread) => self.thread_hops(thread).await? + 1,
        };
        let max = snap.config.server.max_hops;
        if hops >= max {
            return Err(InboxError::LoopDetected { hops, max });
        }
        self.start_thread(body, hops, Some(agent)).await
    }

    /// The most hops any message of a thread carried (0 for a thread this inbox has not seen).
    async fn thread_hops(&self, thread: &str) -> Result<u32, InboxError> {
        let messages = self
            .store
            .list_messages(MessageFilter {
                thread: Some(thread.to_owned()),
                limit: 50,
                ..Default::default()
            })
            .await?;
        Ok(messages.iter().map(|(m, _)| m.hops).max().unwrap_or(0))
    }

    /// Makes an outbound message's dead deliveries due again, and those waiting for their next
    /// try due now (after the operator fixed the cause); returns how many.
    pub async fn retry_now(&self, id: &str) -> Result<usize, InboxError> {
        if self.store.outbound(id).await?.is_none() {
            return Err(InboxError::NotFound);
        }
        let n = self.store.retry_now(id).await?;
        if n == 0 {
            return Err(InboxError::NothingToRetry(id.to_owned()));
        }
        tracing::info!(reply = %id, deliveries = n, "deliveries queued to be tried now");
        self.relay.wake();
        Ok(n)
    }
}

/// A remote A2A agent's answers, as replies of the turn that follows its task: the same checks
/// and commit as `/send` with the turn's token.
impl crate::turns::Replies for Inbox {
    fn reply<'a>(
        &'a self,
        token: &'a str,
        reply: crate::turns::DriverReply,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ReplyRefused>> + Send + 'a>> {
        Box::pin(async move {
            let snap = self.active.load_full();
            let refused = |e: InboxError| match e {
                InboxError::Superseded => ReplyRefused::Superseded,
                InboxError::Store(e) => ReplyRefused::Store(e),
                other => ReplyRefused::Refused(other.to_string()),
            };
            let grant = self.grant(token).await.map_err(refused)?;
            let body = SendBody {
                msg_type: reply.msg_type,
                payload: reply.payload,
                starts_thread: false,
            };
            self.reply_as(&snap, grant, body, reply.id)
                .await
                .map(drop)
                .map_err(refused)
        })
    }
}

use crate::turns::ReplyRefused;
