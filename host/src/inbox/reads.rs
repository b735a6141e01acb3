//! The reads, with who may see what: messages and their threads (each peer sees its own names
//! for threads), one message with its turn and replies, what waits for a person, the outbox.

use super::*;

/// The deliveries a reader may see: all for the admin, a peer's own for a peer (not where else
/// a reply went, nor how those deliveries fare).
/// A turn as its sender sees it: the outcome (state, attempts, exit code, the error's code,
/// times), never the agent's output or the error's detail, which may name host paths. Those are
/// the operator's.
fn for_peer(t: crate::model::Turn) -> crate::model::Turn {
    crate::model::Turn {
        stdout_tail: None,
        stderr_tail: None,
        // Who cancelled it is the operator's; the sender sees that it was.
        canceled: None,
        error: t
            .error
            .map(|e| crate::model::TurnError::new(e.code, String::new())),
        ..t
    }
}

fn own_deliveries(
    who: &Reader,
    deliveries: &[crate::model::Delivery],
) -> Vec<crate::model::Delivery> {
    deliveries
        .iter()
        .filter(|d| match who {
            Reader::Admin | Reader::Agent(_) => true,
            Reader::Peer(p) => d.peer == *p,
        })
        .cloned()
        .collect()
}

/// Who a request's credentials make it: the admin bearer, or a peer's secret.
pub fn reader(
    config: &config::Config,
    bearer: Option<&[u8]>,
    secret: Option<&[u8]>,
) -> Option<Reader> {
    if let Some(token) = bearer
        && config.is_admin(token)
    {
        return Some(Reader::Admin);
    }
    secret
        .and_then(|s| config.peer_by_secret(s))
        .map(|p| Reader::Peer(p.name.clone()))
}

impl Inbox {
    /// Messages, newest first; a peer sees only its own, and the outbound messages addressed to it.
    pub async fn list(
        &self,
        who: &Reader,
        mut filter: MessageFilter,
    ) -> Result<MessageList, InboxError> {
        let mut replies = None;
        if let Reader::Agent(agent) = who {
            // A thread it may read, named, or the messages of a route whose turns it runs:
            // there is no listing of everything for an agent.
            let theirs = match (&filter.thread, &filter.route) {
                (Some(t), _) => self.agent_reads(agent, t).await?,
                (None, Some(r)) => self
                    .snapshot()
                    .config
                    .routes
                    .get(r)
                    .is_some_and(|r| r.run_by(agent)),
                (None, None) => false,
            };
            if !theirs {
                return Err(InboxError::NotFound);
            }
        }
        if let Reader::Peer(peer) = who {
            filter.sender = Some(peer.clone());
            // A peer names threads by its own names for them; one it has no name for is no
            // thread of its, whoever else uses that id: the same empty answer.
            if let Some(alias) = filter.thread.take() {
                match self.store.thread_of(peer, &alias).await? {
                    Some(thread) => filter.thread = Some(thread),
                    None => {
                        return Ok(MessageList {
                            messages: Vec::new(),
                            replies: Some(Vec::new()),
                            refused: Vec::new(),
                            next_cursor: None,
                        });
                    }
                }
            }
            let to_peer = self
                .store
                .outbound_to_peer(peer, filter.thread.clone(), filter.limit)
                .await?;
            replies = Some(to_peer.iter().map(|o| OutboundView::new(o, None)).collect());
        }
        // Only on an unfiltered first page: those answer no message, and have no route, sender,
        // state or title.
        let unfiltered = filter.route.is_none()
            && filter.sender.is_none()
            && filter.msg_type.is_none()
            && filter.state.is_none()
            && filter.text.is_none()
            && filter.before.is_none();
        if matches!(who, Reader::Admin) && unfiltered {
            // What the operator or a local agent sent answers no message, so no message's
            // detail lists it. (It has no route and no sender: a filter by either leaves it out.)
            let sent = self
                .store
                .unanswering(filter.thread.clone(), filter.limit)
                .await?;
            replies = Some(sent.iter().map(|o| OutboundView::new(o, None)).collect());
        }
        let refused = match (&filter.thread, who) {
            (Some(t), Reader::Admin | Reader::Agent(_)) => self.store.refusals(t).await?,
            _ => Vec::new(),
        };
        let limit = filter.limit as usize;
        let messages = self.store.list_messages(filter).await?;
        let next_cursor = (messages.len() == limit && limit > 0)
            .then(|| messages.last().map(|(m, _)| m.id.clone()))
            .flatten();
        let mut list = MessageList {
            next_cursor,
            messages: messages
                .iter()
                .map(|(m, s)| MessageView::new(m, *s))
                .collect(),
            replies,
            refused,
        };
        if let Reader::Peer(peer) = who {
            let threads = list
                .messages
                .iter_mut()
                .map(|m| &mut m.thread_id)
                .chain(list.replies.iter_mut().flatten().map(|o| &mut o.thread_id));
            self.name_threads_for(peer, threads).await?;
        }
        Ok(list)
    }

    /// One message with its turn and replies, or one outbound message with its deliveries.
    /// The remote A2A tasks a message or an outbound message became, for the operator and the
    /// local agents (a peer is not told where else its messages went).
    async fn remote_tasks_for(
        &self,
        who: &Reader,
        origin: &str,
    ) -> Result<Vec<crate::wire::RemoteTaskView>, InboxError> {
        if matches!(who, Reader::Peer(_)) {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .remote_tasks_of(origin)
            .await?
            .iter()
            .map(crate::wire::RemoteTaskView::new)
            .collect())
    }

    pub async fn show(&self, who: &Reader, id: &str) -> Result<Detail, InboxError> {
        // A peer sees a reply once it is on its way: not while a person holds it, nor after
        // they rejected it.
        let may_see = |deliveries: &[crate::model::Delivery]| match who {
            Reader::Admin | Reader::Agent(_) => true,
            Reader::Peer(p) => deliveries.iter().any(|d| {
                d.peer == *p && !matches!(d.state, DeliveryState::Held | DeliveryState::Withheld)
            }),
        };
        let approvals = match who {
            Reader::Admin => self.store.approvals_for(id).await?,
            _ => Vec::new(),
        };
        let approval_of = |id: &str| {
            approvals
                .iter()
                .find(|a| a.id == id)
                .map(crate::wire::ApprovalView::new)
        };
        if let Some(m) = self.store.message(id).await? {
            if let Reader::Peer(p) = who
                && *p != m.sender
            {
                return Err(InboxError::NotFound);
            }
            if let Reader::Agent(a) = who
                && !self.agent_reads(a, &m.thread_id).await?
            {
                return Err(InboxError::NotFound);
            }
            let turn = self.store.turn(id).await?.map(|t| match who {
                Reader::Peer(_) => for_peer(t),
                Reader::Admin | Reader::Agent(_) => t,
            });
            let replies = self.store.outbound_for(id).await?;
            let mut detail = MessageDetail {
                message: MessageView::new(&m, turn.as_ref().map(|t| t.state)),
                turn,
                replies: replies
                    .iter()
                    .filter(|(_, d)| may_see(d))
                    .map(|(o, d)| OutboundView {
                        approval: approval_of(&o.id),
                        ..OutboundView::new(o, Some(&own_deliveries(who, d)))
                    })
                    .collect(),
                approval: approval_of(id),
                remote_tasks: Vec::new(),
            };
            let origins: Vec<String> = std::iter::once(id.to_owned())
                .chain(detail.replies.iter().map(|o| o.id.clone()))
                .collect();
            for origin in &origins {
                let tasks = self.remote_tasks_for(who, origin).await?;
                detail.remote_tasks.extend(tasks);
            }
            if let Reader::Peer(peer) = who {
                let threads = std::iter::once(&mut detail.message.thread_id)
                    .chain(detail.replies.iter_mut().map(|o| &mut o.thread_id));
                self.name_threads_for(peer, threads).await?;
            }
            return Ok(Detail::Message(Box::new(detail)));
        }
        if let Some((o, d)) = self.store.outbound(id).await?
            && may_see(&d)
        {
            if let Reader::Agent(a) = who
                && !self.agent_reads(a, &o.thread_id).await?
            {
                return Err(InboxError::NotFound);
            }
            let approval = match who {
                Reader::Admin => self.store.approval(id).await?,
                _ => None,
            };
            let mut reply = OutboundView {
                approval: approval.as_ref().map(crate::wire::ApprovalView::new),
                ..OutboundView::new(&o, Some(&own_deliveries(who, &d)))
            };
            if let Reader::Peer(peer) = who {
                self.name_threads_for(peer, std::iter::once(&mut reply.thread_id))
                    .await?;
            }
            let remote_tasks = self.remote_tasks_for(who, id).await?;
            return Ok(Detail::Outbound(Box::new(OutboundDetail {
                reply,
                remote_tasks,
            })));
        }
        Err(InboxError::NotFound)
    }

    /// Renames the threads a peer reads about to that peer's names for them (what it sent them
    /// as, or what they were sent to it as): a peer never learns the inbox's own thread ids.
    async fn name_threads_for(
        &self,
        peer: &str,
        threads: impl Iterator<Item = &mut String>,
    ) -> Result<(), InboxError> {
        let mut names: std::collections::HashMap<String, String> = Default::default();
        for thread in threads {
            let name = match names.get(thread.as_str()) {
                Some(n) => n.clone(),
                None => {
                    let n = self
                        .store
                        .alias_of(thread, peer)
                        .await?
                        .unwrap_or_else(|| thread.clone());
                    names.insert(thread.clone(), n.clone());
                    n
                }
            };
            *thread = name;
        }
        Ok(())
    }

    /// Held items with what they hold: those waiting (oldest deadline first), or all (newest
    /// first).
    pub async fn approvals(
        &self,
        waiting_only: bool,
        limit: u32,
    ) -> Result<ApprovalList, InboxError> {
        let mut items = Vec::new();
        for a in self.store.approvals(waiting_only, limit).await? {
            items.push(self.approval_item(a).await?);
        }
        Ok(ApprovalList { approvals: items })
    }

    /// One held item with what it holds.
    pub async fn approval(&self, id: &str) -> Result<ApprovalItem, InboxError> {
        let a = self.store.approval(id).await?.ok_or(InboxError::NotFound)?;
        self.approval_item(a).await
    }

    async fn approval_item(&self, a: crate::model::Approval) -> Result<ApprovalItem, InboxError> {
        let message = match &a.message_id {
            Some(m) => self.store.message(m).await?,
            None => None,
        };
        let turn_state = match (&message, a.kind) {
            (Some(m), ApprovalKind::Inbound) => self.store.turn(&m.id).await?.map(|t| t.state),
            _ => None,
        };
        let reply = match a.kind {
            ApprovalKind::Outbound => self
                .store
                .outbound(&a.id)
                .await?
                .map(|(o, d)| OutboundView::new(&o, Some(&d))),
            ApprovalKind::Inbound => None,
        };
        Ok(ApprovalItem {
            approval: crate::wire::ApprovalView::new(&a),
            message: message.as_ref().map(|m| MessageView::new(m, turn_state)),
            reply,
        })
    }

    /// Deliveries with their outbound messages, newest first; only dead letters if `dead_only`.
    pub async fn outbox(&self, dead_only: bool, limit: u32) -> Result<Outbox, InboxError> {
        let rows = self.store.outbox(dead_only, limit).await?;
        Ok(Outbox {
            outbox: rows
                .into_iter()
                .map(|(o, delivery)| OutboxItem {
                    reply: OutboundView::new(&o, None),
                    delivery,
                })
                .collect(),
        })
    }
}
