//! `agent-inbox tail`: the events feed, printed as it happens.

use std::process::ExitCode;

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

/// One event as a line of text: the time, what happened, and its fields.
fn line(e: &Value) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let time = now.get(11..19).unwrap_or(&now);
    let kind = e["event"].as_str().unwrap_or("event");
    let fields: Vec<String> = e
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "event")
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!("{time} {kind} {}", fields.join(" "))
}

/// `agent-inbox tail`: until the server ends the stream (or the user stops it).
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
        let e = e?;
        if json {
            println!("{e}");
        } else {
            println!("{}", line(&e));
        }
    }
    Ok(ExitCode::SUCCESS)
}
