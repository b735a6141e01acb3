//! How the CLI prints what it reads: a list as JSON (`--json`) or as aligned columns, and one
//! message with its turn and replies as text.

use std::time::Duration;

use crate::model::Delivery;
use crate::wire::{ApprovalList, Detail, MessageList, Outbox};

/// Prints `value` as pretty JSON with `--json`, else as the text `as_text` makes of it.
pub(super) fn list<T: serde::Serialize>(
    value: &T,
    json: bool,
    as_text: fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", as_text(value));
    }
    Ok(())
}

/// Lays rows out in aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{c:<w$}  "));
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// A payload as compact JSON (as the view showed it).
fn payload(text: &str) -> String {
    crate::model::payload_json(text).to_string()
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn time(ms: Option<i64>) -> String {
    ms.map(|ms| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
            .to_string()
    })
    .unwrap_or_else(|| "-".into())
}

/// `GET /messages` as a table.
pub(super) fn messages_table(list: &MessageList) -> String {
    let rows: Vec<Vec<String>> = list
        .messages
        .iter()
        .map(|m| {
            let short: String = payload(&m.payload).chars().take(60).collect();
            vec![
                m.id.clone(),
                time(Some(m.received_at)),
                m.sender.clone(),
                m.route.clone(),
                m.msg_type.clone(),
                if m.mailbox {
                    "mailbox".into()
                } else {
                    opt(&m.turn_state)
                },
                short,
            ]
        })
        .collect();
    table(
        &["ID", "RECEIVED", "FROM", "ROUTE", "TYPE", "TURN", "PAYLOAD"],
        &rows,
    )
}

/// `GET /messages/{id}` as text: the message, its turn, its replies and their deliveries.
pub(super) fn message_detail(detail: &Detail) -> String {
    let mut out = String::new();
    let d = match detail {
        Detail::Outbound(o) => {
            let r = &o.reply;
            out.push_str(&format!(
                "reply {}  type {}  thread {}  in reply to {}\npayload: {}\n\n",
                r.id,
                r.msg_type,
                r.thread_id,
                opt(&r.in_reply_to),
                payload(&r.payload)
            ));
            out.push_str(&deliveries_table(
                r.deliveries.as_deref().unwrap_or_default(),
            ));
            return out;
        }
        Detail::Message(d) => d.as_ref(),
    };
    let m = &d.message;
    out.push_str(&format!(
        "message {}\n  from {}  route {}  type {}  thread {}  hops {}\n  received {}\n  payload: {}\n",
        m.id, m.sender, m.route, m.msg_type, m.thread_id, m.hops, time(Some(m.received_at)), payload(&m.payload)
    ));
    if let Some(t) = &d.turn {
        out.push_str(&format!(
            "\nturn: {}  attempts {}  exit {}  signal {}  duration {} ms\n",
            t.state,
            t.attempts,
            opt(&t.exit_code),
            opt(&t.signal),
            opt(&t.duration_ms)
        ));
        if let Some(e) = &t.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        for (name, text) in [("stdout", &t.stdout_tail), ("stderr", &t.stderr_tail)] {
            let text = text.as_deref().unwrap_or("").trim_end();
            if !text.is_empty() {
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                out.push_str(&format!("  {name} (last lines):\n"));
                for l in tail.into_iter().rev() {
                    out.push_str(&format!("    {l}\n"));
                }
            }
        }
    }
    for r in &d.replies {
        out.push_str(&format!(
            "\nreply {}  type {}\n  payload: {}\n",
            r.id,
            r.msg_type,
            payload(&r.payload)
        ));
        out.push_str(&deliveries_table(
            r.deliveries.as_deref().unwrap_or_default(),
        ));
    }
    out
}

fn deliveries_table(deliveries: &[Delivery]) -> String {
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            vec![
                d.peer.clone(),
                d.state.to_string(),
                d.attempts.to_string(),
                opt(&d.last_status),
                time(d.next_attempt_at),
                opt(&d.last_error),
            ]
        })
        .collect();
    table(
        &["  PEER", "STATE", "ATTEMPTS", "STATUS", "NEXT", "ERROR"],
        &rows,
    )
}

/// `GET /admin/outbox` as a table.
pub(super) fn outbox_table(outbox: &Outbox) -> String {
    let rows: Vec<Vec<String>> = outbox
        .outbox
        .iter()
        .map(|item| {
            let (r, d) = (&item.reply, &item.delivery);
            vec![
                r.id.clone(),
                time(Some(r.created_at)),
                r.msg_type.clone(),
                d.peer.clone(),
                d.state.to_string(),
                d.attempts.to_string(),
                opt(&d.last_status),
                opt(&d.last_error).chars().take(60).collect(),
            ]
        })
        .collect();
    table(
        &[
            "REPLY", "CREATED", "TYPE", "PEER", "STATE", "ATTEMPTS", "STATUS", "ERROR",
        ],
        &rows,
    )
}

/// `GET /admin/approvals` as a table: what waits, what it is, and (for decided ones) who said.
pub(super) fn approvals_table(list: &ApprovalList) -> String {
    let rows: Vec<Vec<String>> = list
        .approvals
        .iter()
        .map(|item| {
            let a = &item.approval;
            let (what, shown) = match (&item.reply, &item.message) {
                (Some(r), _) if r.route.is_none() => (
                    format!(
                        "{} from agent {}",
                        r.msg_type,
                        r.agent.as_deref().unwrap_or("?")
                    ),
                    payload(&r.payload),
                ),
                (Some(r), _) => (format!("reply {}", r.msg_type), payload(&r.payload)),
                (None, Some(m)) => (
                    format!("{} from {}", m.msg_type, m.sender),
                    payload(&m.payload),
                ),
                (None, None) => ("(gone)".to_owned(), String::new()),
            };
            let decided = match (&a.decided_by, &a.decision_reason) {
                (Some(by), Some(why)) => format!("{} by {by}: {why}", a.state),
                (Some(by), None) => format!("{} by {by}", a.state),
                _ => format!("until {}", time(Some(a.expires_at))),
            };
            vec![
                a.id.clone(),
                a.kind.to_string(),
                if a.route.is_empty() { "-" } else { &a.route }.to_owned(),
                what,
                shown.chars().take(50).collect(),
                decided.chars().take(60).collect(),
            ]
        })
        .collect();
    table(&["ID", "KIND", "ROUTE", "WHAT", "PAYLOAD", "STATE"], &rows)
}
