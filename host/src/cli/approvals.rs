//! `agent-inbox pending`, `approve` and `reject`: what waits for a person, and the decisions.

use std::process::ExitCode;

use super::payload::read_payload;
use super::print;
use super::target::Target;
use crate::wire::{ApprovalList, ApprovalView, DecideBody};

#[derive(clap::Args)]
pub(super) struct Pending {
    /// Decided items too, newest first.
    #[arg(long)]
    all: bool,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub(super) struct Approve {
    /// The held message's or reply's id (`agent-inbox pending` lists them).
    id: String,
    /// For a held reply: the payload to send instead of the agent's. JSON, `@FILE` or `-`.
    #[arg(long)]
    payload: Option<String>,
    /// Who decides, recorded with the decision [default: your login name].
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub(super) struct Reject {
    /// The held message's or reply's id.
    id: String,
    /// Why; kept with the decision and sent with the TURN_FAILED notice.
    #[arg(long)]
    reason: String,
    /// Who decides, recorded with the decision [default: your login name].
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    target: Target,
}

pub(super) async fn pending(args: Pending) -> anyhow::Result<ExitCode> {
    let client = args.target.admin()?;
    let path = format!(
        "/admin/approvals?limit={}{}",
        args.limit,
        if args.all { "&all=true" } else { "" }
    );
    let list: ApprovalList = client.expect(http::Method::GET, &path, None).await?;
    print::list(&list, args.json, print::approvals_table)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn approve(args: Approve) -> anyhow::Result<ExitCode> {
    let payload = args
        .payload
        .map(|p| read_payload(&p).and_then(|t| Ok(serde_json::from_str(&t)?)))
        .transpose()?;
    let body = DecideBody {
        by: super::person::by(args.by)?,
        reason: None,
        payload,
    };
    decide(&args.target, &args.id, "approve", body).await
}

pub(super) async fn reject(args: Reject) -> anyhow::Result<ExitCode> {
    let body = DecideBody {
        by: super::person::by(args.by)?,
        reason: Some(args.reason),
        payload: None,
    };
    decide(&args.target, &args.id, "reject", body).await
}

/// Sends a decision on a held item and prints what was recorded.
async fn decide(
    target: &Target,
    id: &str,
    verb: &str,
    body: DecideBody,
) -> anyhow::Result<ExitCode> {
    let client = target.admin()?;
    let id_path: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let v: ApprovalView = client
        .expect(
            http::Method::POST,
            &format!("/admin/approvals/{id_path}/{verb}"),
            Some(serde_json::to_value(&body)?),
        )
        .await?;
    outln!(
        "{} {}: {} by {}{}",
        v.kind.as_str(),
        v.id,
        v.state,
        v.decided_by.as_deref().unwrap_or("?"),
        if v.original_payload.is_some() {
            " (edited; the original is kept)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
