//! Following the tasks the relay handed to A2A peers, until each ends: what the peer answers comes
//! back into the same thread as messages from that peer, routed by (peer, type) like any message,
//! so the route that takes them runs its turn. The follow-ups live in the store
//! (`remote_tasks`, kind `delivery`) and are claimed under a lease, so exactly one host follows
//! each task, and a restart or a kill -9 resumes them (the remote task is read again, never sent
//! again). Each answer is accepted with an idempotency key of its own and recorded as taken, so
//! none comes back twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Inbox, InboxError, Incoming, Refused};
use crate::a2a::json::TaskState;
use crate::a2a::remote::{self, RemoteState};
use crate::a2a_client::{CallError, Remote};
use crate::config::Peer;
use crate::model::{RemoteTask, now_ms};
use crate::snapshot::Snapshot;
use crate::wire::Envelope;

/// How often the store is asked for due follow-ups.
const TICK: Duration = Duration::from_secs(1);
/// Follow-ups looked at together (each one `GetTask`), joined before the next claim.
const BATCH: usize = 8;
/// How long one look at a remote task may take.
const CALL_DEADLINE: Duration = Duration::from_secs(15);
/// The longest wait between two looks at a task still running.
const MAX_POLL: Duration = Duration::from_secs(60);
/// Characters of the remote's words kept.
const MAX_WORDS: usize = 500;

impl Inbox {
    /// Claims due follow-ups every [`TICK`] and looks at each once.
    pub async fn follow_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
            // While draining no message is accepted; the follow-ups wait for the next start.
            if self.shutdown.is_draining() {
                continue;
            }
            let due = match self.store.claim_follow_ups(now_ms(), BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim the A2A follow-ups");
                    continue;
                }
            };
            // Bounded: at most BATCH at once, all joined before the next claim.
            let mut set = tokio::task::JoinSet::new();
            for t in due {
                let inbox = self.clone();
                set.spawn(async move { inbox.follow_once(t).await });
            }
            while set.join_next().await.is_some() {}
        }
    }

    /// Looks at one remote task, brings back what it answered, and records where it stands.
    async fn follow_once(&self, mut t: RemoteTask) {
        let snap = self.active.load_full();
        let next = match self.follow_step(&snap, &mut t).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(remote_task = ?t.remote_id, peer = %t.target, error = %e, "cannot bring an A2A peer's answer back yet; trying again");
                now_ms() + 5_000
            }
        };
        t.updated_at = now_ms();
        let key = t.key.clone();
        match self.store.settle_follow_up(t, next).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(key = %key, "another host took this follow-up over; its progress here is not recorded")
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "cannot record an A2A follow-up"),
        }
    }

    /// One look: when to look again (ms), with `t` updated (its state, what was taken, done).
    async fn follow_step(&self, snap: &Snapshot, t: &mut RemoteTask) -> Result<i64, InboxError> {
        let now = now_ms();
        let peer = snap.config.peers.get(&t.target);
        let (Some(peer), Some(a2a)) = (peer, peer.and_then(|p| p.a2a_out.as_ref())) else {
            tracing::warn!(peer = %t.target, "a followed A2A peer is no longer in the config; its task is no longer followed");
            t.done = true;
            return Ok(now);
        };
        let Some(remote_id) = t.remote_id.clone() else {
            t.done = true;
            return Ok(now);
        };
        let failed = |code: &'static str, words: String| (code, words);
        if now > t.follow_until {
            let words = format!(
                "the remote task {remote_id} did not end within a2a_follow_secs ({} s)",
                a2a.follow.as_secs()
            );
            self.bring_failure(snap, t, peer, failed("follow_deadline", words))
                .await?;
            t.done = true;
            return Ok(now);
        }
        let label = format!("peer:{}", peer.name);
        let r = Remote {
            config: &a2a.remote,
            label: &label,
        };
        let task = match self
            .a2a
            .get_task(&r, &remote_id, Instant::now() + CALL_DEADLINE)
            .await
        {
            Ok(task) => task,
            Err(CallError::TaskNotFound(_)) => {
                let words = format!(
                    "the peer no longer knows task {remote_id} (it may have restarted and lost its tasks)"
                );
                self.bring_failure(snap, t, peer, failed("remote_task_lost", words))
                    .await?;
                t.done = true;
                return Ok(now);
            }
            Err(e) => {
                // Away, slow, or refusing for now: looked at again until the deadline.
                tracing::info!(peer = %peer.name, remote_task = %remote_id, error = %e, "cannot read the A2A peer's task now");
                return Ok(now + poll_after(t, now).as_millis() as i64);
            }
        };
        if !task.context_id.is_empty() {
            t.context_id = Some(task.context_id.clone());
        }
        let asked = t.asked();
        let stale = task.state.is_interrupted()
            && !asked
            && task
                .status_message_id
                .as_ref()
                .is_some_and(|id| t.seen.contains(id));
        if stale || !(task.state.is_terminal() || task.state.is_interrupted()) {
            t.state = if stale {
                t.state.clone()
            } else {
                task.state.as_str().to_owned()
            };
            return Ok(now + poll_after(t, now).as_millis() as i64);
        }
        t.state = task.state.as_str().to_owned();
        // The task rests or ended: every artifact is whole now.
        for a in &task.artifacts {
            if t.seen.contains(&a.artifact_id) {
                continue;
            }
            let (msg_type, payload) = remote::typed(&a.parts, &a2a.reply_type);
            self.bring(snap, t, peer, msg_type, payload, &a.artifact_id)
                .await?;
            t.seen.push(a.artifact_id.clone());
        }
        let words = || {
            let w = task.status_text(MAX_WORDS);
            if w.is_empty() {
                "no reason given".to_owned()
            } else {
                w
            }
        };
        match &task.state {
            RemoteState::Known(TaskState::Completed) => {}
            RemoteState::Known(TaskState::InputRequired) => {
                let also_artifact = task
                    .status_message_id
                    .as_ref()
                    .is_some_and(|id| t.seen.contains(id));
                if !also_artifact && !asked {
                    let payload = serde_json::json!({
                        "text": task.status_text(100_000),
                        "parts": task.status_parts,
                    })
                    .to_string();
                    self.bring(
                        snap,
                        t,
                        peer,
                        a2a.reply_type.clone(),
                        payload,
                        RemoteTask::QUESTION_TAKEN,
                    )
                    .await?;
                }
                t.seen.push(RemoteTask::QUESTION_TAKEN.to_owned());
                if let Some(id) = &task.status_message_id
                    && !t.seen.contains(id)
                {
                    t.seen.push(id.clone());
                }
            }
            RemoteState::Known(TaskState::Rejected) => {
                self.bring_failure(snap, t, peer, failed("remote_rejected", words()))
                    .await?
            }
            RemoteState::Known(TaskState::Canceled) => {
                self.bring_failure(snap, t, peer, failed("remote_canceled", words()))
                    .await?
            }
            RemoteState::AuthRequired => {
                self.bring_failure(snap, t, peer, failed("remote_auth_required", words()))
                    .await?
            }
            _ => {
                self.bring_failure(snap, t, peer, failed("remote_failed", words()))
                    .await?
            }
        }
        t.done = true;
        Ok(now)
    }

    /// A failed, rejected or lost remote task comes back as `TURN_FAILED` from the peer, with
    /// the remote's words.
    async fn bring_failure(
        &self,
        snap: &Snapshot,
        t: &mut RemoteTask,
        peer: &Peer,
        (code, words): (&'static str, String),
    ) -> Result<(), InboxError> {
        if t.seen.iter().any(|s| s == RemoteTask::FAILURE_TAKEN) {
            return Ok(());
        }
        tracing::info!(peer = %peer.name, remote_task = ?t.remote_id, code, "the A2A peer's task did not complete");
        let payload = serde_json::json!({
            "state": "failed",
            "error": code,
            "reason": words,
            "remote_task": t.remote_id,
        })
        .to_string();
        let what = RemoteTask::FAILURE_TAKEN;
        self.bring(snap, t, peer, "TURN_FAILED".into(), payload, what)
            .await?;
        t.seen.push(what.into());
        Ok(())
    }

    /// Accepts one answer as a message from the peer in the task's thread, answering the message
    /// that was handed over. A refusal (no route takes that type, a plugin says no) is final and
    /// recorded like any refused message; the store being away or a full queue is tried again.
    async fn bring(
        &self,
        snap: &Snapshot,
        t: &RemoteTask,
        peer: &Peer,
        msg_type: String,
        payload: String,
        what: &str,
    ) -> Result<(), InboxError> {
        let alias = self
            .store
            .alias_of(&t.thread_id, &peer.name)
            .await?
            .unwrap_or_else(|| t.thread_id.clone());
        let hops = match self.store.outbound(&t.origin).await? {
            Some((o, _)) => o.hops + 1,
            None => 1,
        };
        let incoming = Incoming {
            sender: peer.name.clone(),
            envelope: Envelope {
                msg_type: msg_type.clone(),
                payload,
                id: None,
                thread_id: Some(alias.clone()),
                in_reply_to: Some(t.origin.clone()),
                hops,
            },
            // Its own namespace: one answer of one task is accepted once, whatever repeats.
            idempotency_key: Some(format!("a2a-follow:{}:{what}", t.key)),
            route: None,
            task: None,
        };
        match self.accept(snap, incoming).await {
            Ok(ack) => {
                tracing::info!(peer = %peer.name, message_id = %ack.id, msg_type = %msg_type, remote_task = ?t.remote_id, "an A2A peer's answer came back");
                Ok(())
            }
            Err(
                e
                @ (InboxError::Store(_) | InboxError::ShuttingDown | InboxError::QueueFull { .. }),
            ) => Err(e),
            Err(e) => {
                let code = match &e {
                    InboxError::UnknownType(_) => "unknown_type",
                    InboxError::LoopDetected { .. } => "loop_detected",
                    InboxError::Hook(_) => "plugin_refused",
                    _ => "refused",
                };
                self.refused(Refused {
                    peer: &peer.name,
                    msg_type: Some(&msg_type),
                    thread: Some(&alias),
                    in_reply_to: Some(&t.origin),
                    code,
                    detail: e.to_string(),
                })
                .await;
                Ok(())
            }
        }
    }
}

/// How long to wait before looking at a running task again: a second at first, doubling with
/// the task's age up to [`MAX_POLL`], so a long task costs few calls of the peer's budget.
fn poll_after(t: &RemoteTask, now: i64) -> Duration {
    let age = Duration::from_millis((now - t.created_at).max(0) as u64);
    (age / 4).clamp(Duration::from_secs(1), MAX_POLL)
}
