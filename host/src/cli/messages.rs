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
    if let Some(t) = &args.thread {
        q.append_pair("thread", t);
    }
    let path = format!("/messages?{}", q.finish());
    let list: MessageList = client.expect(http::Method::GET, &path, None).await?;
    print::list(&list, args.json, print::messages_table)?;
    Ok(ExitCode::SUCCESS)
}
