//! `agent-inbox outbox list` and `outbox retry`: the relay's outbox, and replaying a dead letter
//! (or trying a waiting delivery now).

use std::process::ExitCode;

use super::print;
use super::target::Target;
use crate::wire::{Outbox, Requeued};

#[derive(clap::Subcommand)]
pub(super) enum Command {
    /// List outbound messages and their delivery state, newest first.
    List {
        /// Only dead letters.
        #[arg(long)]
        dead: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Deliver a dead letter again, with a fresh retry schedule, or try a delivery that waits
    /// for its next try now.
    Retry {
        /// The reply's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub(super) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List {
            dead,
            limit,
            json,
            target,
        } => {
            let client = target.admin()?;
            let path = format!(
                "/admin/outbox?limit={limit}{}",
                if dead { "&dead=1" } else { "" }
            );
            let outbox: Outbox = client.expect(http::Method::GET, &path, None).await?;
            print::list(&outbox, json, print::outbox_table)?;
        }
        Command::Retry { id, target } => {
            let client = target.admin()?;
            let r: Requeued = client
                .expect(
                    http::Method::POST,
                    &format!("/admin/outbox/{id}/retry"),
                    None,
                )
                .await?;
            let n = r.deliveries;
            outln!(
                "{id}: {n} {} to be tried now",
                if n == 1 { "delivery" } else { "deliveries" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
