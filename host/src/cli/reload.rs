//! `agent-inbox reload`: the running inbox re-reads its config now.

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::AdminClient;
use crate::wire::Reloaded;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Apply a config that removes every peer or every route (refused otherwise, so that a
    /// bad edit cannot empty a running inbox).
    #[arg(long)]
    allow_empty: bool,
    /// The routes file (for the server's address and admin secret).
    #[arg(long, short, default_value = "routes.toml")]
    config: PathBuf,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = AdminClient::for_file(&args.config)?;
    let path = if args.allow_empty {
        "/admin/reload?allow_empty=true"
    } else {
        "/admin/reload"
    };
    let r: Reloaded = client.expect(http::Method::POST, path, None).await?;
    println!("{} (config {})", r.status, r.config_hash);
    Ok(ExitCode::SUCCESS)
}
