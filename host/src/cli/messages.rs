//! `agent-inbox messages`: list messages, or show one with its turn and replies.

use std::process::ExitCode;

use super::print;
use super::target::Target;
use crate::wire::{Detail, MessageList};

#[derive(clap::Args)]
pub(super) struct Args {
    /// A message or reply id.
    id: Option<String>,
    /// Only this route.
    #[arg(long)]
    route: Option<String>,
    /// Only this thread.
    #[arg(long)]
    thread: Option<String>,
    /// Only messages this peer sent.
    #[arg(long)]
    peer: Option<String>,
    /// Only this type.
    #[arg(long = "type")]
    msg_type: Option<String>,
    /// Only in this state: a turn's (queued, running, done, failed, timed_out, interrupted,
    /// canceled, awaiting_approval, rejected), mailbox, or dead (a reply not delivered).
    #[arg(long)]
    state: Option<String>,
    /// Only those whose type or title holds this text, in any case.
    #[arg(long)]
    text: Option<String>,
    /// Only those older than this message (the next page: the id `more:` names).
    #[arg(long)]
    before: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.target.admin()?;
    if let Some(id) = &args.id {
        let path = format!("/messages/{id}");
        let detail: Detail = client.expect(http::Method::GET, &path, None).await?;
        print::list(&detail, args.json, print::message_detail)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("limit", &args.limit.to_string());
    if let Some(r) = &args.route {
        q.append_pair("route", r);
    }
    for (key, value) in [
        ("thread", &args.thread),
        ("peer", &args.peer),
        ("type", &args.msg_type),
        ("state", &args.state),
        ("q", &args.text),
        ("before", &args.before),
    ] {
        if let Some(v) = value {
            q.append_pair(key, v);
        }
    }
    let path = format!("/messages?{}", q.finish());
    let list: MessageList = client.expect(http::Method::GET, &path, None).await?;
    print::list(&list, args.json, print::messages_table)?;
    if let (false, Some(next)) = (args.json, &list.next_cursor) {
        eprintln!("more: --before {next}");
    }
    Ok(ExitCode::SUCCESS)
}
