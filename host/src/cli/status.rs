//! `agent-inbox status`: the running inbox's config hash, reloads and turns.

use std::process::ExitCode;

use super::target::Target;
use crate::wire::Status;

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    target: Target,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.target.admin()?;
    let status: Status = client.expect(http::Method::GET, "/status", None).await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(ExitCode::SUCCESS)
}
