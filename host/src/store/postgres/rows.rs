//! Rows to records: the columns each read selects, and the mappers that turn a row into the
//! model's record.

use tokio_postgres::Row;

use crate::model::{
    Approval, Decision, Delivery, Message, Outbound, PushConfig, RemoteKind, RemoteTask, Task,
    Verdict,
};
use crate::store::StoreError;

/// Reads a `BIGINT` column as a `u32` (attempts, hops: never negative or that large).
pub(super) fn u32_at(r: &Row, i: usize) -> u32 {
    r.get::<_, i64>(i).clamp(0, u32::MAX as i64) as u32
}

pub(super) fn opt_i32(r: &Row, i: usize) -> Option<i32> {
    r.get::<_, Option<i64>>(i).map(|v| v as i32)
}

pub(super) fn parse<T: std::str::FromStr<Err = crate::model::UnknownName>>(
    r: &Row,
    i: usize,
) -> Result<T, StoreError> {
    let text: String = r.get(i);
    text.parse()
        .map_err(|e: crate::model::UnknownName| StoreError::Corrupt(e.to_string()))
}

pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.sender, m.route, m.type, m.payload, m.thread_id, \
                               m.in_reply_to, m.hops, m.sender_ref, m.received_at, m.mailbox";

pub(super) fn message_row(r: &Row) -> Message {
    Message {
        id: r.get(0),
        sender: r.get(1),
        route: r.get(2),
        msg_type: r.get(3),
        payload: r.get(4),
        thread_id: r.get(5),
        in_reply_to: r.get(6),
        hops: u32_at(r, 7),
        sender_ref: r.get(8),
        received_at: r.get(9),
        mailbox: r.get(10),
    }
}

pub(super) const OUTBOUND_COLUMNS: &str =
    "r.id, r.in_reply_to, r.route, r.type, r.payload, r.thread_id, r.hops, r.created_at, r.agent";

pub(super) fn outbound_row(r: &Row) -> Outbound {
    Outbound {
        id: r.get(0),
        in_reply_to: r.get(1),
        route: r.get(2),
        msg_type: r.get(3),
        payload: r.get(4),
        thread_id: r.get(5),
        hops: u32_at(r, 6),
        created_at: r.get(7),
        agent: r.get(8),
    }
}

pub(super) const DELIVERY_COLUMNS: &str = "d.peer, d.state, d.attempts, d.next_attempt_at, d.last_status, \
                                d.last_error, d.delivered_at";

pub(super) fn delivery_at(r: &Row, at: usize) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        peer: r.get(at),
        state: parse(r, at + 1)?,
        attempts: u32_at(r, at + 2),
        next_attempt_at: r.get(at + 3),
        last_status: r.get::<_, Option<i64>>(at + 4).map(|s| s as u16),
        last_error: r.get(at + 5),
        delivered_at: r.get(at + 6),
    })
}

pub(super) const TASK_COLUMNS: &str =
    "id, owner, context_id, route, created_at, rejected, canceled_at";

pub(super) fn task_row(r: &Row) -> Task {
    Task {
        id: r.get(0),
        owner: r.get(1),
        context_id: r.get(2),
        route: r.get(3),
        created_at: r.get(4),
        rejected: r.get(5),
        canceled_at: r.get(6),
    }
}

pub(super) const PUSH_COLUMNS: &str =
    "task_id, id, url, token, auth_scheme, credentials, created_at";

pub(super) fn push_row(r: &Row) -> PushConfig {
    PushConfig {
        task_id: r.get(0),
        id: r.get(1),
        url: r.get(2),
        token: r.get(3),
        auth_scheme: r.get(4),
        credentials: r.get(5),
        created_at: r.get(6),
    }
}

pub(super) const APPROVAL_COLUMNS: &str = "id, kind, route, message_id, thread_id, reason, created_at, \
                                expires_at, verdict, decided_by, via, decided_at, \
                                decision_reason, original_payload";

pub(super) fn approval_row(r: &Row) -> Result<Approval, StoreError> {
    let verdict: Option<String> = r.get(8);
    Ok(Approval {
        id: r.get(0),
        kind: parse(r, 1)?,
        route: r.get(2),
        message_id: r.get(3),
        thread_id: r.get(4),
        reason: r.get(5),
        created_at: r.get(6),
        expires_at: r.get(7),
        decision: match verdict {
            None => None,
            Some(v) => Some(Decision {
                verdict: v
                    .parse::<Verdict>()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                by: r.get::<_, Option<String>>(9).unwrap_or_default(),
                via: r.get::<_, Option<String>>(10).unwrap_or_default(),
                at: r.get::<_, Option<i64>>(11).unwrap_or_default(),
                reason: r.get(12),
                original_payload: r.get(13),
            }),
        },
    })
}

pub(super) const REMOTE_COLUMNS: &str = "key, kind, target, thread_id, origin, message_ref, \
                                remote_id, context_id, state, seen, follow_until, done, \
                                created_at, updated_at";

pub(super) fn remote_row(r: &Row) -> Result<RemoteTask, StoreError> {
    let kind: String = r.get(1);
    let seen: String = r.get(9);
    Ok(RemoteTask {
        key: r.get(0),
        kind: RemoteKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("remote task kind {kind:?}")))?,
        target: r.get(2),
        thread_id: r.get(3),
        origin: r.get(4),
        message_ref: r.get(5),
        remote_id: r.get(6),
        context_id: r.get(7),
        state: r.get(8),
        seen: serde_json::from_str(&seen).unwrap_or_default(),
        follow_until: r.get(10),
        done: r.get(11),
        created_at: r.get(12),
        updated_at: r.get(13),
    })
}
