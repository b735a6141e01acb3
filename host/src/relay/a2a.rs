//! Delivering to a peer that is an A2A agent (`a2a_url`): the outbound message becomes a task there
//! (`SendMessage` with `returnImmediately`), sent with the outbound message's id as its
//! `messageId` on every attempt, the thread as its `contextId` (the context the peer gave the
//! thread before, else what the peer calls the thread), and the task the peer waits on continued
//! when it asked a question. The delivery is done once the peer has the task; the task is recorded
//! for the follower (`inbox::follow`) in the same step, and what the peer answers comes back
//! into the thread from there.

use serde_json::Value;

use super::{Attempted, Verdict};
use crate::a2a::remote::{self, Outgoing, RemoteState};
use crate::a2a_client::{A2aClient, CallError, Remote};
use crate::config::{A2aPeer, Peer};
use crate::model::{Outbound, RemoteKind, RemoteTask, now_ms};
use crate::store::Store;

/// The key of the remote task a delivery makes.
pub fn task_key(outbound_id: &str, peer: &str) -> String {
    format!("delivery:{outbound_id}:{peer}")
}

/// One attempt to hand `outbound` to the A2A peer.
pub(super) async fn attempt(
    client: &A2aClient,
    store: &Store,
    peer: &Peer,
    a2a: &A2aPeer,
    outbound: &Outbound,
    thread_alias: &str,
    timeout: std::time::Duration,
) -> Attempted {
    let label = format!("peer:{}", peer.name);
    let r = Remote {
        config: &a2a.remote,
        label: &label,
    };
    let before = match store
        .latest_remote_task(&outbound.thread_id, RemoteKind::Delivery, &peer.name)
        .await
    {
        Ok(b) => b,
        Err(e) => return retry(None, format!("cannot read the thread's remote task: {e}")),
    };
    let mut seen = Vec::new();
    let (task_id, context_id) = match &before {
        Some(p) if RemoteState::parse(&p.state).is_interrupted() => {
            // Its earlier answers are not answers to this message.
            seen.extend(p.artifacts_taken().cloned());
            (p.remote_id.clone(), p.context_id.clone())
        }
        Some(p) => (None, p.context_id.clone()),
        None => (None, None),
    };
    let context_id = context_id.unwrap_or_else(|| thread_alias.to_owned());
    let payload: Value = serde_json::from_str(&outbound.payload).unwrap_or(Value::Null);
    let params = remote::send_params(&Outgoing {
        message_id: &outbound.id,
        text: &remote::text_for(&payload),
        msg_type: &outbound.msg_type,
        payload: &payload,
        task_id: task_id.as_deref(),
        context_id: Some(&context_id),
        skill: a2a.skill.as_deref(),
        return_immediately: true,
    });
    let deadline = tokio::time::Instant::now() + timeout;
    let task = match client.send_message(&r, params, deadline).await {
        Ok(t) => t,
        Err(e @ CallError::RateLimited(_)) => return retry(Some(429), e.to_string()),
        Err(e) if e.is_transient() => {
            let status = match &e {
                CallError::Http { status, .. } => Some(*status),
                _ => None,
            };
            return retry(status, e.to_string());
        }
        Err(e) => {
            let status = match &e {
                CallError::Http { status, .. } => Some(*status),
                _ => Some(200),
            };
            return Attempted {
                status,
                verdict: Verdict::GiveUp,
                error: Some(e.to_string()),
            };
        }
    };
    if task.id.is_empty() {
        // A message instead of a task: there is nothing to follow, and its words are logged
        // where the operator reads (never relayed: the peer answered out of band).
        tracing::warn!(outbound = %outbound.id, peer = %peer.name, "the A2A peer answered with a message, not a task; nothing to follow");
        return delivered();
    }
    let now = now_ms();
    let record = RemoteTask {
        key: task_key(&outbound.id, &peer.name),
        kind: RemoteKind::Delivery,
        target: peer.name.clone(),
        thread_id: outbound.thread_id.clone(),
        origin: outbound.id.clone(),
        message_ref: outbound.id.clone(),
        remote_id: Some(task.id.clone()),
        context_id: Some(if task.context_id.is_empty() {
            context_id
        } else {
            task.context_id.clone()
        }),
        state: task.state.as_str().to_owned(),
        seen,
        follow_until: now + a2a.follow.as_millis() as i64,
        done: false,
        created_at: now,
        updated_at: now,
    };
    // Recorded before the delivery is: a crash between the two sends it again with the same
    // messageId (the peer's task store may know it), never leaves a delivered task unfollowed.
    if let Err(e) = store.put_remote_task(record).await {
        return retry(Some(200), format!("cannot record the remote task: {e}"));
    }
    tracing::info!(outbound = %outbound.id, peer = %peer.name, remote_task = %task.id, state = task.state.as_str(), "handed to the A2A peer");
    delivered()
}

fn delivered() -> Attempted {
    Attempted {
        status: Some(200),
        verdict: Verdict::Delivered,
        error: None,
    }
}

fn retry(status: Option<u16>, error: String) -> Attempted {
    Attempted {
        status,
        verdict: Verdict::Retry { retry_after: None },
        error: Some(error),
    }
}
