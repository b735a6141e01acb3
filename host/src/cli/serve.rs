//! `agent-inbox serve`: run the inbox until SIGINT or SIGTERM. The one command that names the
//! wiring to serve.

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::load;

#[derive(clap::Args)]
pub(super) struct Args {
    /// The routes file.
    #[arg(long, short, default_value = "routes.toml")]
    config: PathBuf,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = load(&args.config)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    crate::wiring::serve(cfg, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
