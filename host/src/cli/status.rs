//! `agent-inbox status`: the running inbox's config hash, reloads and turns.

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::AdminClient;
use crate::wire::Status;

#[derive(clap::Args)]
pub(super) struct Args {
    /// The routes file (for the server's address and admin secret).
    #[arg(long, short, default_value = "routes.toml")]
    config: PathBuf,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = AdminClient::for_file(&args.config)?;
    let status: Status = client.expect(http::Method::GET, "/status", None).await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(ExitCode::SUCCESS)
}
