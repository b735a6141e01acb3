//! `agent-inbox tail`: the events feed, printed as it happens.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use super::target::Target;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Only this route's messages and turns.
    #[arg(long)]
    route: Option<String>,
    /// Only this thread's messages and replies.
    #[arg(long)]
    thread: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

/// One event as a line of text: the local time, what happened, to what, and how it went. Only
/// what the event says is printed (no `in_reply_to=null`).
fn line(e: &Value) -> String {
    let time = chrono::Local::now().format("%H:%M:%S");
    let s = |k: &str| e[k].as_str().unwrap_or("?");
    let mut out = match s("event") {
        "message_accepted" => format!(
            "message   {}  {} from {}  route {}{}",
            s("id"),
            s("msg_type"),
            s("sender"),
            s("route"),
            if e["turn_queued"] == true {
                "  turn queued"
            } else {
                ""
            }
        ),
        "turn_started" => format!(
            "turn      {}  running  route {}  attempt {}",
            s("message_id"),
            s("route"),
            e["attempt"]
        ),
        "turn_ended" => format!(
            "turn      {}  {}  route {}",
            s("message_id"),
            s("state"),
            s("route")
        ),
        "outbound_queued" => {
            let peers: Vec<&str> = e["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let what = if e["in_reply_to"].is_string() {
                "reply"
            } else {
                "message"
            };
            format!(
                "{what:<9} {}  {} to {}",
                s("id"),
                s("msg_type"),
                peers.join(", ")
            )
        }
        "delivery_attempted" => format!(
            "delivery  {}  to {}  {}  attempt {}",
            s("id"),
            s("peer"),
            s("state"),
            e["attempt"]
        ),
        "approval_waiting" => format!(
            "held      {}  {} on route {}: {}",
            s("id"),
            s("kind"),
            s("route"),
            s("reason")
        ),
        "approval_decided" => format!(
            "decided   {}  {} {} by {}",
            s("id"),
            s("kind"),
            s("verdict"),
            s("by")
        ),
        "message_refused" => format!(
            "refused   {} from {}: {}",
            s("msg_type"),
            s("peer"),
            s("code")
        ),
        "config_reloaded" => format!("reload    config {}", s("config_hash")),
        "turn_output" => {
            let text = s("text");
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let last: String = last.chars().take(200).collect();
            format!("output    {}  {}: {last}", s("message_id"), s("stream"))
        }
        "lagged" => format!(
            "lagged    {} events missed (this reader fell behind)",
            e["missed"]
        ),
        other => format!("{other}  {e}"),
    };
    if let Some(code) = e["exit_code"].as_i64() {
        out.push_str(&format!("  exit {code}"));
    }
    if let Some(status) = e["status"].as_u64() {
        out.push_str(&format!("  status {status}"));
    }
    if let Some(error) = e["error"].as_str() {
        out.push_str(&format!("  error: {error}"));
    }
    if let Some(in_reply_to) = e["in_reply_to"].as_str() {
        out.push_str(&format!("  answers {in_reply_to}"));
    }
    if let Some(thread) = e["thread_id"].as_str() {
        out.push_str(&format!("  thread {thread}"));
    }
    format!("{time} {out}")
}

/// `agent-inbox tail`: until the user stops it (Ctrl-C), or the server goes (exit 1, saying so).
pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        route,
        thread,
        json,
        target,
    } = args;
    let client = target.admin()?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(r) = &route {
        q.append_pair("route", r);
    }
    if let Some(t) = &thread {
        q.append_pair("thread", t);
    }
    let mut events = client.events(&format!("/events?{}", q.finish())).await?;
    // On stderr, so stdout stays one event a line: from here on no event is missed.
    eprintln!("following the inbox's events (Ctrl-C to stop)");
    while let Some(e) = events.next().await {
        let e = e.context("lost the inbox's events")?;
        if json {
            outln!("{e}");
        } else {
            outln!("{}", line(&e));
        }
    }
    // Only the server ends the stream: it stopped, or it is draining to stop.
    eprintln!("the inbox closed the stream: it stopped or is stopping");
    Ok(ExitCode::FAILURE)
}
