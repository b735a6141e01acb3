//! `agent-inbox check`: every problem in a config file, and whether its store answers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Config;

#[derive(clap::Args)]
pub(super) struct Args {
    /// The routes file.
    #[arg(long, short, default_value = "routes.toml")]
    config: PathBuf,
}

/// `agent-inbox check`: every problem in the config and the files it names, each plugin compiled
/// as `serve` would (through the compile cache), and the store reached; exit 1 on any problem.
pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.config.as_path();
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let engine = crate::snapshot::engine(&cfg).context("cannot start the plugin engine")?;
    let (cfg, built) = tokio::task::spawn_blocking(move || {
        let built = crate::snapshot::Files::read(&cfg)
            .and_then(|files| crate::snapshot::Snapshot::build(cfg.clone(), files, &engine));
        (cfg, built.map(drop))
    })
    .await
    .context("the plugin loader failed")?;
    if let Err(e) = built {
        let n = e.0.len();
        eprintln!(
            "{}: {n} problem{} with the files it names:",
            path.display(),
            if n == 1 { "" } else { "s" }
        );
        for e in &e.0 {
            eprintln!("  - {e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    for w in &cfg.warnings {
        outln!("warning: {w}");
    }
    if !cfg.has_server_table {
        outln!(
            "warning: the file has no [server] table; a running inbox refuses to reload a file without one (is it empty, or cut short?)"
        );
    }
    if cfg.peers.is_empty() && cfg.routes.is_empty() {
        outln!("warning: the config has no peers and no routes: every message would be refused");
    }
    match crate::store::Store::check(&crate::wiring::store_settings(&cfg)).await {
        Ok(found) => outln!("store: {found}"),
        Err(e) => {
            eprintln!("{}: the store: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    }
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    outln!(
        "{}: ok ({}, {})",
        path.display(),
        plural(cfg.peers.len(), "peer"),
        plural(cfg.routes.len(), "route")
    );
    Ok(ExitCode::SUCCESS)
}
