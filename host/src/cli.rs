//! The `agent-inbox` command line: serve an inbox, check a config, or talk to a running inbox.
//!
//! Lives in the library so the integration tests can build the same command as a thin binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::client::{self, AdminClient};
use crate::config::Config;
use crate::wire::{
    Ack, AdminSendBody, ApprovalList, ApprovalView, DecideBody, Detail, MessageList, Outbox,
    Reloaded, Requeued, Status,
};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// `--payload`: JSON as given, `@FILE` read from a file, or `-` read from stdin; checked to be
/// JSON before anything is sent.
fn read_payload(arg: &str) -> anyhow::Result<String> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin()).context("read the payload from stdin")?
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("read the payload from {path}"))?
    } else {
        arg.to_owned()
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .context("the payload is not valid JSON")?;
    Ok(text)
}

#[derive(Parser)]
#[command(
    name = "agent-inbox",
    version,
    about = "A message router that lets AI agents talk to each other over HTTP"
)]
struct Cli {
    /// How log lines look on stderr: `text` for people, `json` (one object per line) for a log
    /// shipper or journald.
    #[arg(
        long,
        global = true,
        env = "INBOX_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum OutboxCommand {
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
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Deliver a dead letter again, with a fresh retry schedule.
    Retry {
        /// The reply's id.
        id: String,
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
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

#[derive(Subcommand)]
enum Command {
    /// Run the inbox.
    Serve {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Report every problem in a config file; exit non-zero if there is one.
    Check {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Start a conversation: send a message to a peer through the running inbox's relay.
    Send {
        /// The peer to send to.
        #[arg(long)]
        to: String,
        /// The message type, e.g. TASK.
        #[arg(long = "type")]
        msg_type: String,
        /// The payload: JSON, `@FILE` to read it from a file, or `-` to read it from stdin.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Continue this thread instead of starting one.
        #[arg(long)]
        thread: Option<String>,
        /// A local agent's token (`[agents.NAME]`): send as that agent to `--url`, within its
        /// `may_send`, instead of as the admin. Inside an agent's turn it is in the environment.
        #[arg(long, env = "INBOX_AGENT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The inbox's URL, for sending as an agent (no config file needed then).
        #[arg(long, env = "INBOX_URL")]
        url: Option<String>,
        /// With an agent's token: the CA file that verifies the inbox's certificate.
        #[arg(long, env = "INBOX_CA_FILE")]
        cacert: Option<PathBuf>,
        /// Wait for the answer in the thread: progress on stderr as it happens, then the answer's
        /// payload on stdout. Exit 0 answered, 2 no answer in time, 3 the answer is TURN_FAILED,
        /// 4 no answer will come: the message could not be delivered (a dead letter), a person
        /// rejected it, or the answer was refused here. As the admin or as an agent.
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// The routes file (for the server's address and admin secret, when sending as the admin).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Follow what happens as it happens: messages, turns, replies, deliveries, reloads.
    Tail {
        /// Only this route's messages and turns.
        #[arg(long)]
        route: Option<String>,
        /// Only this thread's messages and replies.
        #[arg(long)]
        thread: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Make the running inbox re-read its config now (it also does on file change and SIGHUP).
    Reload {
        /// Apply a config that removes every peer or every route (refused otherwise, so that a
        /// bad edit cannot empty a running inbox).
        #[arg(long)]
        allow_empty: bool,
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Show the running inbox's config hash, reload counters and turn counts.
    Status {
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Move the inbox's data between stores.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Inspect and replay the relay's outbox.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// List what waits for a person's approval: messages whose turns wait to run, and replies
    /// that wait to be sent.
    Pending {
        /// Decided items too, newest first.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Approve a held item: the message's turn runs, or the reply is sent (edited, with
    /// --payload).
    Approve {
        /// The held message's or reply's id (`agent-inbox pending` lists them).
        id: String,
        /// For a held reply: the payload to send instead of the agent's. JSON, `@FILE` or `-`.
        #[arg(long)]
        payload: Option<String>,
        /// Who decides, recorded with the decision.
        #[arg(long, env = "USER")]
        by: String,
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Reject a held item: the message's turn never runs (the route's reply_to get TURN_FAILED
    /// with the reason), or the reply is never sent.
    Reject {
        /// The held message's or reply's id.
        id: String,
        /// Why; kept with the decision and sent with the TURN_FAILED notice.
        #[arg(long)]
        reason: String,
        /// Who decides, recorded with the decision.
        #[arg(long, env = "USER")]
        by: String,
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// List messages, or show one with its turn and replies.
    Messages {
        /// A message or reply id.
        id: Option<String>,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only this thread.
        #[arg(long)]
        thread: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// The routes file (for the server's address and admin secret).
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
}

/// Parses the command line, runs the command, and returns the process's exit code.
pub fn main() -> ExitCode {
    // Before any thread starts: it removes the LISTEN_* variables from the environment.
    crate::listener::take_passed();
    // Log lines go into a bounded buffer that a thread writes out, so no request waits on stderr
    // (a synchronous write per accepted message cost about a fifth of the ack throughput). When the
    // buffer is full a line is dropped, never waited for; drops are counted and reported.
    let (writer, guard) = match crate::log::start_stderr() {
        Ok(started) => started,
        Err(e) => {
            eprintln!("error: cannot start the log writer thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dropped = writer.clone();
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal; a file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match cli.log_format {
        LogFormat::Text => {
            writer.set_ansi(ansi);
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_ansi(ansi)
                .init()
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let report = tokio::spawn(report_dropped_lines(dropped.clone()));
        let code = run(cli.command).await;
        report.abort();
        code
    });
    // Flushes what is queued before the process exits.
    drop(guard);
    let lost = dropped.dropped();
    if lost > 0 {
        eprintln!("warning: {lost} log lines were dropped in all (the log writer fell behind)");
    }
    match code {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Says, at most every 10 s, how many log lines were dropped since it last said so.
async fn report_dropped_lines(counter: crate::log::LogWriter) {
    let mut reported = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        let now = counter.dropped();
        if now > reported {
            tracing::warn!(
                dropped = now - reported,
                "log lines dropped: the log writer could not keep up"
            );
            reported = now;
        }
    }
}

/// `agent-inbox check`: every problem in the config and the files it names, each plugin compiled
/// as `serve` would (through the compile cache), and the store reached; exit 1 on any problem.
async fn check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
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
        println!("warning: {w}");
    }
    if !cfg.has_server_table {
        println!(
            "warning: the file has no [server] table; a running inbox refuses to reload a file without one (is it empty, or cut short?)"
        );
    }
    if cfg.peers.is_empty() && cfg.routes.is_empty() {
        println!("warning: the config has no peers and no routes: every message would be refused");
    }
    match crate::store::Store::check(&crate::store_settings(&cfg)).await {
        Ok(found) => println!("store: {found}"),
        Err(e) => {
            eprintln!("{}: the store: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    }
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    println!(
        "{}: ok ({}, {})",
        path.display(),
        plural(cfg.peers.len(), "peer"),
        plural(cfg.routes.len(), "route")
    );
    Ok(ExitCode::SUCCESS)
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => {
            let cfg = load(&config)?;
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            crate::serve(cfg, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => check(&config).await,
        Command::Send {
            to,
            msg_type,
            payload,
            thread,
            token,
            url,
            cacert,
            wait,
            timeout,
            config,
        } => {
            let payload = read_payload(&payload)?;
            let body = AdminSendBody {
                to,
                msg_type,
                payload,
                thread_id: thread,
                in_reply_to: None,
            };
            match token {
                Some(token) if wait => {
                    let url = url
                        .context("sending as an agent needs the inbox's URL: --url or INBOX_URL")?;
                    let client = AdminClient::with_token(&url, &token, cacert.as_deref())?;
                    return crate::live::send_and_wait(
                        &client,
                        crate::live::As::Agent,
                        body,
                        Duration::from_secs(timeout),
                    )
                    .await;
                }
                // As an agent: its token, to its inbox; the answer as JSON, for a tool to read.
                Some(token) => {
                    let url = url
                        .context("sending as an agent needs the inbox's URL: --url or INBOX_URL")?;
                    let client = AdminClient::with_token(&url, &token, cacert.as_deref())?;
                    let ack: Ack = client
                        .expect(http::Method::POST, "/send", Some(body.to_json()))
                        .await?;
                    println!("{}", serde_json::to_string(&ack)?);
                }
                None if wait => {
                    let client = AdminClient::from_config(&load(&config)?)?;
                    return crate::live::send_and_wait(
                        &client,
                        crate::live::As::Admin,
                        body,
                        Duration::from_secs(timeout),
                    )
                    .await;
                }
                None => {
                    let client = AdminClient::from_config(&load(&config)?)?;
                    let ack: Ack = client
                        .expect(http::Method::POST, "/admin/send", Some(body.to_json()))
                        .await?;
                    println!("{}", ack.id);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            route,
            thread,
            json,
            config,
        } => {
            let client = AdminClient::from_config(&load(&config)?)?;
            crate::live::tail(&client, route, thread, json).await
        }
        Command::Reload {
            allow_empty,
            config,
        } => {
            let client = AdminClient::from_config(&load(&config)?)?;
            let path = if allow_empty {
                "/admin/reload?allow_empty=true"
            } else {
                "/admin/reload"
            };
            let r: Reloaded = client.expect(http::Method::POST, path, None).await?;
            println!("{} (config {})", r.status, r.config_hash);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => {
            let client = AdminClient::from_config(&load(&config)?)?;
            let status: Status = client.expect(http::Method::GET, "/status", None).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox {
            command:
                OutboxCommand::List {
                    dead,
                    limit,
                    json,
                    config,
                },
        } => {
            let client = AdminClient::from_config(&load(&config)?)?;
            let path = format!(
                "/admin/outbox?limit={limit}{}",
                if dead { "&dead=1" } else { "" }
            );
            let outbox: Outbox = client.expect(http::Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&outbox)?);
            } else {
                print!("{}", client::outbox_table(&outbox));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox {
            command: OutboxCommand::Retry { id, config },
        } => {
            let client = AdminClient::from_config(&load(&config)?)?;
            let r: Requeued = client
                .expect(
                    http::Method::POST,
                    &format!("/admin/outbox/{id}/retry"),
                    None,
                )
                .await?;
            println!("{id}: {} deliveries queued again", r.deliveries);
            Ok(ExitCode::SUCCESS)
        }
        Command::Store {
            command: StoreCommand::Migrate { from, config },
        } => {
            let cfg = load(&config)?;
            let crate::store::Settings::Postgres(to) = crate::store_settings(&cfg) else {
                anyhow::bail!(
                    "{}: [store] kind is not \"postgres\": there is nothing to copy into",
                    config.display()
                );
            };
            let copied = crate::store::copy::sqlite_to_postgres(&from, &to).await?;
            for (table, n) in &copied {
                println!("{table:>14}  {n}");
            }
            println!(
                "copied {} into {}",
                from.display(),
                crate::store::describe_postgres(&to.url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Pending {
            all,
            limit,
            json,
            config,
        } => {
            let client = AdminClient::from_config(&load(&config)?)?;
            let path = format!(
                "/admin/approvals?limit={limit}{}",
                if all { "&all=true" } else { "" }
            );
            let list: ApprovalList = client.expect(http::Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", client::approvals_table(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            id,
            payload,
            by,
            config,
        } => {
            let payload = payload
                .map(|p| read_payload(&p).and_then(|t| Ok(serde_json::from_str(&t)?)))
                .transpose()?;
            let body = DecideBody {
                by,
                reason: None,
                payload,
            };
            decide(&config, &id, "approve", body).await
        }
        Command::Reject {
            id,
            reason,
            by,
            config,
        } => {
            let body = DecideBody {
                by,
                reason: Some(reason),
                payload: None,
            };
            decide(&config, &id, "reject", body).await
        }
        Command::Messages {
            id,
            route,
            thread,
            limit,
            json,
            config,
        } => {
            let client = AdminClient::from_config(&load(&config)?)?;
            let path = match &id {
                Some(id) => format!("/messages/{id}"),
                None => {
                    let mut q = form_urlencoded::Serializer::new(String::new());
                    q.append_pair("limit", &limit.to_string());
                    if let Some(r) = &route {
                        q.append_pair("route", r);
                    }
                    if let Some(t) = &thread {
                        q.append_pair("thread", t);
                    }
                    format!("/messages?{}", q.finish())
                }
            };
            if id.is_some() {
                let detail: Detail = client.expect(http::Method::GET, &path, None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&detail)?);
                } else {
                    print!("{}", client::message_detail(&detail));
                }
            } else {
                let list: MessageList = client.expect(http::Method::GET, &path, None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    print!("{}", client::messages_table(&list));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Sends a decision on a held item and prints what was recorded.
async fn decide(
    config: &std::path::Path,
    id: &str,
    verb: &str,
    body: DecideBody,
) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_config(&load(config)?)?;
    let id_path: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let v: ApprovalView = client
        .expect(
            http::Method::POST,
            &format!("/admin/approvals/{id_path}/{verb}"),
            Some(serde_json::to_value(&body)?),
        )
        .await?;
    println!(
        "{} {}: {} by {}{}",
        v.kind.as_str(),
        v.id,
        v.state,
        v.decided_by.as_deref().unwrap_or("?"),
        if v.original_payload.is_some() {
            " (edited; the original is kept)"
        } else {
            ""
        }
    );
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
