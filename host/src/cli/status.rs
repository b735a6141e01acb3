//! `agent-inbox status`: the running inbox's config, reloads, work, routes, peers and agents.

use std::process::ExitCode;

use super::target::Target;
use crate::wire::Status;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Print the raw JSON (times as epoch milliseconds).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.target.admin()?;
    let status: Status = client.expect(http::Method::GET, "/status", None).await?;
    super::print::list(&status, args.json, super::print::status_text)?;
    Ok(ExitCode::SUCCESS)
}
