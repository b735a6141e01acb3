//! `agent-inbox reload`: the running inbox re-reads its config now.

use std::process::ExitCode;

use super::target::Target;
use crate::wire::Reloaded;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Apply a config that removes every peer or every route (refused otherwise, so that a
    /// bad edit cannot empty a running inbox).
    #[arg(long)]
    allow_empty: bool,
    #[command(flatten)]
    target: Target,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.target.admin()?;
    let path = if args.allow_empty {
        "/admin/reload?allow_empty=true"
    } else {
        "/admin/reload"
    };
    let r: Reloaded = client.expect(http::Method::POST, path, None).await?;
    outln!("{} (config {})", r.status, r.config_hash);
    Ok(ExitCode::SUCCESS)
}
