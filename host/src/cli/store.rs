//! `agent-inbox store migrate`: copy a SQLite inbox into PostgreSQL.

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::load;

#[derive(clap::Subcommand)]
pub(super) enum Command {
    /// Copy an existing SQLite inbox into the PostgreSQL the config names (its URL from the
    /// environment, `url_env`). Stop that inbox first: the copy refuses to run while it is open,
    /// and refuses a database that already holds messages.
    Migrate {
        /// The SQLite inbox's data directory (the one with inbox.sqlite3).
        #[arg(long)]
        from: PathBuf,
        /// The routes file with `[store] kind = "postgres"`.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
}

pub(super) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Migrate { from, config } = command;
    let cfg = load(&config)?;
    let crate::store::Settings::Postgres(to) = crate::wiring::store_settings(&cfg) else {
        anyhow::bail!(
            "{}: [store] kind is not \"postgres\": there is nothing to copy into",
            config.display()
        );
    };
    let copied = crate::store::copy::sqlite_to_postgres(&from, &to).await?;
    for (table, n) in &copied {
        outln!("{table:>14}  {n}");
    }
    outln!(
        "copied {} into {}",
        from.display(),
        crate::store::describe_postgres(&to.url)
    );
    Ok(ExitCode::SUCCESS)
}
