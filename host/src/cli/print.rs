//! How the CLI prints what it reads: a list as JSON (`--json`) or as aligned columns, and one
//! message with its turn and replies as text.

use crate::model::Delivery;
use crate::wire::{ApprovalList, Detail, MessageList, Outbox, Status};

/// Prints `value` as pretty JSON with `--json`, else as the text `as_text` makes of it.
pub(super) fn list<T: serde::Serialize>(
    value: &T,
    json: bool,
    as_text: fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(value)?);
    } else {
        out!("{}", as_text(value));
    }
    Ok(())
}

/// Lays rows out in aligned columns.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_with_notes(header, rows, &[])
}

/// Lays rows out in aligned columns, each followed by its note (lines of text), if it has one.
fn table_with_notes(header: &[&str], rows: &[Vec<String>], notes: &[Option<String>]) -> String {
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
    for (i, r) in rows.iter().enumerate() {
        out.push_str(&line(r.clone()));
        if let Some(Some(note)) = notes.get(i) {
            out.push_str(note);
        }
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

/// A time for a person: local, and how long ago (or how soon): `19:05:12 (3 min ago)`, with
/// the date when it is not today. `--json` keeps the epoch milliseconds instead.
pub(super) fn time(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".into(),
        |ms| when(ms, chrono::Utc::now().timestamp_millis()),
    )
}

fn when(ms: i64, now_ms: i64) -> String {
    use chrono::TimeZone as _;
    let Some(at) = chrono::Local.timestamp_millis_opt(ms).single() else {
        return ms.to_string();
    };
    let today = chrono::Local
        .timestamp_millis_opt(now_ms)
        .single()
        .map(|n| n.date_naive());
    let shown = if Some(at.date_naive()) == today {
        at.format("%H:%M:%S")
    } else {
        at.format("%Y-%m-%d %H:%M")
    };
    format!("{shown} ({})", relative(now_ms - ms))
}

/// `3 min ago`, `in 5 s`, `just now`.
fn relative(ms_ago: i64) -> String {
    let secs = ms_ago.abs() / 1000;
    if secs < 2 {
        return "just now".into();
    }
    let span = match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 48 * 3600 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    };
    if ms_ago >= 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// `text` cut into lines of at most `width` characters (at spaces where it can), each indented.
fn wrapped(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        while word.chars().count() > width {
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            if !line.is_empty() {
                out.push_str(&format!("{indent}{line}\n"));
                line.clear();
            }
            out.push_str(&format!("{indent}{head}\n"));
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&format!("{indent}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{indent}{line}\n"));
    }
    out
}

/// `GET /messages` as a table.
pub(super) fn messages_table(list: &MessageList) -> String {
    let rows: Vec<Vec<String>> = list
        .messages
        .iter()
        .map(|m| {
            let short: String = m
                .title
                .clone()
                .unwrap_or_else(|| payload(&m.payload))
                .chars()
                .take(60)
                .collect();
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
        &["ID", "RECEIVED", "FROM", "ROUTE", "TYPE", "TURN", "ABOUT"],
        &rows,
    )
}

/// `GET /messages/{id}` as text: the message, its turn, its replies and their deliveries.
pub(super) fn message_detail(detail: &Detail) -> String {
    let mut out = String::new();
    let d = match detail {
        Detail::Outbound(o) => {
            let r = &o.reply;
            // A message an agent (or the operator) started answers nothing: it is no reply.
            let answers = r
                .in_reply_to
                .as_ref()
                .map_or_else(String::new, |m| format!("  in reply to {m}"));
            out.push_str(&format!(
                "{} {}  type {}  thread {}{answers}\n  created {}\n  payload: {}\n\n",
                if r.in_reply_to.is_some() {
                    "reply"
                } else {
                    "message"
                },
                r.id,
                r.msg_type,
                r.thread_id,
                time(Some(r.created_at)),
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

/// A reply's deliveries, indented under it, each with the peer's last answer in full.
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
            ]
        })
        .collect();
    let notes: Vec<Option<String>> = deliveries
        .iter()
        .map(|d| {
            d.last_error
                .as_deref()
                .map(|e| wrapped(&format!("error: {e}"), 96, "  "))
        })
        .collect();
    table_with_notes(
        &["TO", "STATE", "ATTEMPTS", "STATUS", "NEXT TRY"],
        &rows,
        &notes,
    )
    .lines()
    .map(|l| format!("  {l}\n"))
    .collect()
}

/// `GET /admin/outbox` as a table: each delivery, when it is tried next, and under it the
/// peer's last answer in full (wrapped).
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
                time(d.next_attempt_at),
            ]
        })
        .collect();
    let notes = outbox
        .outbox
        .iter()
        .map(|item| {
            item.delivery
                .last_error
                .as_deref()
                .map(|e| wrapped(&format!("error: {e}"), 96, "    "))
        })
        .collect::<Vec<_>>();
    table_with_notes(
        &[
            "ID", "CREATED", "TYPE", "TO", "STATE", "ATTEMPTS", "STATUS", "NEXT TRY",
        ],
        &rows,
        &notes,
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

/// `GET /status` as text: the config in force and its reloads, the work, the routes, the peers
/// (where a failed delivery was going), the local agents and, on a shared store, the hosts.
pub(super) fn status_text(s: &Status) -> String {
    let mut out = format!("inbox {}  config {}", s.version, s.config_hash);
    if let Some(r) = &s.reloads {
        out.push_str(&format!("  loaded {}\n", time(Some(r.loaded_at))));
        out.push_str(&format!(
            "reloads: {} applied, {} failed, {} check{}; last error: {}\n",
            r.reloads_ok,
            r.reloads_failed,
            r.checks,
            if r.checks == 1 { "" } else { "s" },
            r.last_reload_error.as_deref().unwrap_or("none")
        ));
    } else {
        out.push('\n');
    }
    out.push_str(&format!(
        "turns: {} running, {} queued{}\n",
        s.turns_running,
        s.turns_queued,
        if s.draining { "; draining" } else { "" }
    ));
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(",")
        }
    };
    let rows: Vec<Vec<String>> = s
        .routes
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.kind.clone(),
                list(&r.from),
                list(&r.types),
                list(&r.reply_to),
                opt(&r.approve),
                opt(&r.plugin),
                match (r.max_concurrent, r.max_queued) {
                    (Some(c), Some(q)) => format!("{}/{q} (at once {c})", r.queued),
                    _ => r.queued.to_string(),
                },
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            "ROUTE", "KIND", "FROM", "TYPES", "REPLY TO", "APPROVE", "PLUGIN", "QUEUED",
        ],
        &rows,
    ));
    if !s.peers.is_empty() {
        let rows: Vec<Vec<String>> = s
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.url
                        .clone()
                        .or_else(|| p.a2a_url.clone())
                        .unwrap_or_else(|| "-".into()),
                    p.auth.clone(),
                    p.last_delivery.as_ref().map_or_else(
                        || "-".into(),
                        |d| {
                            let status = d.status.map_or_else(String::new, |s| format!(" {s}"));
                            format!("{}{status} {}", d.outcome, time(Some(d.at)))
                        },
                    ),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["PEER", "URL", "AUTH", "LAST DELIVERY"], &rows));
    }
    if !s.agents.is_empty() {
        let rows: Vec<Vec<String>> = s
            .agents
            .iter()
            .map(|a| {
                let may: Vec<String> = a
                    .may_send
                    .iter()
                    .map(|m| format!("{} to {}", m.types.join(","), m.to.join(",")))
                    .collect();
                vec![
                    a.name.clone(),
                    if may.is_empty() {
                        "-".into()
                    } else {
                        may.join("; ")
                    },
                    format!("{}/min", a.max_per_minute),
                    if a.approve { "yes" } else { "no" }.into(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["AGENT", "MAY SEND", "RATE", "APPROVE"], &rows));
    }
    if let Some(c) = &s.cluster {
        let rows: Vec<Vec<String>> = c
            .hosts
            .iter()
            .map(|h| {
                vec![
                    if h.host_id == c.host_id {
                        format!("{} (this)", h.host_id)
                    } else {
                        h.host_id.clone()
                    },
                    h.version.clone(),
                    if h.config_differs {
                        format!("{} (differs)", h.config_hash)
                    } else {
                        h.config_hash.clone()
                    },
                    h.turns_running.to_string(),
                    relative(h.last_seen_ms_ago),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["HOST", "VERSION", "CONFIG", "RUNNING", "SEEN"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_say_how_long_ago_or_how_soon() {
        for (ms_ago, want) in [
            (500, "just now"),
            (-500, "just now"),
            (42_000, "42 s ago"),
            (3 * 60_000 + 5_000, "3 min ago"),
            (-5 * 60_000, "in 5 min"),
            (2 * 3_600_000, "2 h ago"),
            (3 * 86_400_000, "3 days ago"),
        ] {
            assert_eq!(relative(ms_ago), want, "{ms_ago}");
        }
        let now = 1_796_405_578_165;
        let shown = when(now - 180_000, now);
        assert!(shown.ends_with(" (3 min ago)"), "{shown}");
        assert!(!shown.contains("1796405"), "no epoch: {shown}");
    }

    #[test]
    fn long_errors_wrap_without_losing_a_character() {
        let error = format!("peer answered 503: {} the end", "x".repeat(150));
        let out = wrapped(&error, 40, "    ");
        assert!(
            out.lines().all(|l| l.starts_with("    ") && l.len() <= 44),
            "{out}"
        );
        let joined: String = out
            .lines()
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(joined.replace(' ', ""), error.replace(' ', ""));
        assert!(out.ends_with("the end\n"), "{out}");
    }
}
