//! The `agent-inbox` command line: this file parses and dispatches; each command (or group of
//! commands) has its own file, and talks to a running inbox through the one typed client
//! (`client`), printing lists with one helper (`print`).
//!
//! It lives in the library so the integration tests can build the same command as a thin binary;
//! no server module names it (the architecture test checks), and only its `serve`, `check` and
//! `store migrate` name the wiring.

/// `print!` to stdout, except that a reader gone away (`agent-inbox messages | head`) ends the
/// command quietly with exit 0, as a Unix filter does, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` to stdout, as [`out!`].
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod approvals;
mod cancel;
mod check;
mod client;
mod init;
mod mcp;
mod messages;
mod outbox;
mod payload;
mod peer;
mod person;
mod print;
mod reload;
mod send;
mod serve;
mod status;
mod store;
mod tail;
mod target;
mod wait;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "agent-inbox",
    version,
    about = "A message router that lets AI agents talk to each other over HTTP"
)]
struct Cli {
    /// How log lines look on stderr: `text` for people, `json` (one object per line) for a log
    /// shipper or journald.
    // Not `global`: it would be listed in every command's help, and only `serve` logs much.
    #[arg(long, env = "INBOX_LOG_FORMAT", value_enum, default_value = "text")]
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
enum Command {
    /// Write a new inbox's routes.toml for one local agent, with its secrets in files beside it.
    Init(init::Args),
    /// Run the inbox.
    Serve(serve::Args),
    /// Report every problem in a config file; exit non-zero if there is one.
    Check(check::Args),
    /// Start a conversation: send a message to a peer through the running inbox's relay.
    Send(send::Args),
    /// Follow what happens as it happens: messages, turns, replies, deliveries, reloads.
    Tail(tail::Args),
    /// Make the running inbox re-read its config now (it also does on file change and SIGHUP).
    Reload(reload::Args),
    /// Show the running inbox's config hash, reload counters and turn counts.
    Status(status::Args),
    /// Move the inbox's data between stores.
    Store {
        #[command(subcommand)]
        command: store::Command,
    },
    /// Pair with another inbox in one line (invite, join), list and remove peers.
    Peer {
        #[command(subcommand)]
        command: peer::Command,
    },
    /// Inspect and replay the relay's outbox.
    Outbox {
        #[command(subcommand)]
        command: outbox::Command,
    },
    /// List what waits for a person's approval: messages whose turns wait to run, and replies
    /// that wait to be sent.
    Pending(approvals::Pending),
    /// Approve a held item: the message's turn runs, or the reply is sent (edited, with
    /// --payload).
    Approve(approvals::Approve),
    /// Cancel a message's turn that is queued, waits for approval, or runs (its agent is ended);
    /// the route's reply_to get TURN_FAILED.
    Cancel(cancel::Args),
    /// Reject a held item: the message's turn never runs (the route's reply_to get TURN_FAILED
    /// with the reason), or the reply is never sent.
    Reject(approvals::Reject),
    /// List messages, or show one with its turn and replies.
    Messages(messages::Args),
    /// Serve the inbox's tools to an agent over MCP on stdio (send_message, ask, reply,
    /// list_threads, read_thread, contacts), as the agent whose token is in INBOX_AGENT_TOKEN.
    Mcp(mcp::Args),
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init(a) => init::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Check(a) => check::run(a).await,
        Command::Send(a) => send::run(a).await,
        Command::Tail(a) => tail::run(a).await,
        Command::Reload(a) => reload::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Store { command } => store::run(command).await,
        Command::Outbox { command } => outbox::run(command).await,
        Command::Peer { command } => peer::run(command).await,
        Command::Pending(a) => approvals::pending(a).await,
        Command::Approve(a) => approvals::approve(a).await,
        Command::Reject(a) => approvals::reject(a).await,
        Command::Cancel(a) => cancel::run(a).await,
        Command::Messages(a) => messages::run(a).await,
        Command::Mcp(a) => mcp::run(a).await,
    }
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
        let code = dispatch(cli.command).await;
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

/// Writes to stdout; a closed pipe exits 0 at once (nothing is left to say to nobody), any
/// other write error exits 1 with a line on stderr.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
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
