//! `agent-inbox cancel ID`: cancel a message's turn that is queued, waits for approval, or runs,
//! recorded as the person's (who, when, via `api`).

use std::process::ExitCode;

use super::target::Target;
use crate::model::Turn;

#[derive(clap::Args)]
pub(super) struct Args {
    /// The message whose turn to cancel.
    id: String,
    /// Who cancels, recorded with the cancel [default: your login name].
    #[arg(long)]
    by: Option<String>,
    /// Print the turn as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let by = super::person::by(args.by)?;
    let client = args.target.admin()?;
    let id_path: String = form_urlencoded::byte_serialize(args.id.as_bytes()).collect();
    let turn: Turn = client
        .expect(
            http::Method::POST,
            &format!("/admin/messages/{id_path}/cancel"),
            Some(serde_json::json!({ "by": by })),
        )
        .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&turn)?);
    } else {
        let who = turn
            .canceled
            .as_ref()
            .map_or_else(String::new, |c| format!(" by {} ({})", c.by, c.via));
        outln!("{}: turn {}{who}", args.id, turn.state);
    }
    Ok(ExitCode::SUCCESS)
}
