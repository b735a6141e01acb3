//! Agent turn runner: runs a route's command for one message as a subprocess,
//! bounded in time and output.
//!
//! The command is an argv template (never a shell line); the child gets its own
//! process group so a timeout or the end of the turn takes its descendants too.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Largest size in bytes, including the trailing NUL, that Linux accepts for one argument.
///
/// This is the kernel's `MAX_ARG_STRLEN` (32 pages); a longer argument makes `execve`
/// fail with `E2BIG`, so a rendered argument of this many bytes or more is refused.
pub const MAX_ARG_BYTES: usize = 131_072;

/// How long pipes may stay open after the leader exits before the group is killed:
/// a forked grandchild that inherited stdout must not keep the turn alive.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

const READ_CHUNK: usize = 16 * 1024;

const PROMPT_FILE_PLACEHOLDER: &str = "{prompt_file}";

/// Values substituted into the command's arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// Replaces `{message_id}`.
    pub message_id: String,
    /// Replaces `{thread_id}`.
    pub thread_id: String,
    /// Replaces `{route}`.
    pub route: String,
    /// Replaces `{type}`.
    pub msg_type: String,
}

/// One agent turn to run.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Argv template; `command[0]` is the program, looked up in `PATH` (not a shell).
    pub command: Vec<String>,
    /// The message text handed to the agent through `{prompt}`, `{prompt_file}` or stdin.
    pub prompt: String,
    /// Values for the other placeholders.
    pub vars: Vars,
    /// Also pipe the prompt to the agent's stdin and then close it; otherwise stdin is `/dev/null`.
    pub stdin: bool,
    /// Extra environment variables on top of the host's own environment.
    pub env: Vec<(String, String)>,
    /// Variables of the host's environment the agent must not see (e.g. the peers' secrets).
    pub env_remove: Vec<String>,
    /// Wall-clock limit for the turn, from spawn.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL once the timeout has passed.
    pub kill_grace: Duration,
    /// Bytes kept from the end of stdout, and separately from the end of stderr.
    pub output_cap: usize,
    /// The child's working directory, if set; otherwise the host's.
    pub work_dir: Option<PathBuf>,
    /// Directory for the prompt file; defaults to [`std::env::temp_dir`].
    pub temp_dir: Option<PathBuf>,
    /// Notified to stop the turn early (its task was cancelled): the process group gets SIGTERM,
    /// then SIGKILL after `kill_grace`, as on a timeout.
    pub cancel: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Handed each chunk of output as it is read, for a live view; it must not block (the
    /// reader waits for it).
    pub live: Option<LiveTap>,
}

/// Which pipe a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What an [`Invocation`] hands its output to as it is read.
#[derive(Clone)]
pub struct LiveTap(pub std::sync::Arc<OnOutput>);

/// A non-blocking callback for a chunk of output.
pub type OnOutput = dyn Fn(Stream, &[u8]) + Send + Sync;

impl std::fmt::Debug for LiveTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveTap")
    }
}

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The agent exited with status 0.
    Done,
    /// The agent could not start, exited non-zero or died of a signal.
    Failed,
    /// The agent ran past its timeout and was killed.
    TimedOut,
    /// The turn was cancelled and the agent killed.
    Canceled,
}

/// The result of one turn.
#[derive(Debug)]
pub struct Outcome {
    /// How the turn ended.
    pub ending: Ending,
    /// The leader's exit code, if it exited normally.
    pub exit_code: Option<i32>,
    /// The signal number, if the leader died of a signal.
    pub signal: Option<i32>,
    /// Time from spawn to the end of the turn (zero if nothing was spawned).
    pub duration: Duration,
    /// Lossy UTF-8 of the last `output_cap` bytes of stdout (never longer than the cap).
    pub stdout_tail: String,
    /// Lossy UTF-8 of the last `output_cap` bytes of stderr (never longer than the cap).
    pub stderr_tail: String,
    /// Why the turn failed or was cut short, when that is more than an exit code or signal.
    pub error: Option<RunError>,
}

/// Why a turn could not run to its natural end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A rendered argument is too long for `execve`.
    #[error(
        "argument {index} is {bytes} bytes, over the {limit}-byte limit for one argument; use {{prompt_file}} instead of {{prompt}} in the command"
    )]
    PromptTooLarge {
        /// Position of the argument in the rendered argv.
        index: usize,
        /// Its length in bytes, without the NUL.
        bytes: usize,
        /// [`MAX_ARG_BYTES`].
        limit: usize,
    },
    /// The command template has no program.
    #[error("empty command")]
    EmptyCommand,
    /// The program could not be started (not found, not executable, bad work dir...).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program as given in the command.
        program: String,
        /// The spawn error.
        #[source]
        source: io::Error,
    },
    /// The prompt file could not be created or written.
    #[error("cannot write the prompt file: {0}")]
    PromptFile(#[source] io::Error),
    /// Waiting for the agent to exit failed.
    #[error("cannot wait for the agent: {0}")]
    Wait(#[source] io::Error),
    /// The agent ran past its timeout and its process group was killed.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The turn was cancelled while the agent ran.
    #[error("cancelled while the agent ran")]
    Canceled,
    /// The OpenClaw gateway refused the run, failed it, or could not be reached.
    #[error("{0}")]
    Gateway(String),
    /// A remote A2A agent failed, rejected or lost the task, or refused the inbox's calls.
    #[error("{detail}")]
    Remote {
        /// `remote_failed`, `remote_rejected`, `remote_task_lost`, ...
        code: &'static str,
        /// The remote's words, or what the inbox saw.
        detail: String,
    },
}

impl RunError {
    /// Returns a stable snake_case code for this error, suitable for storage and APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PromptTooLarge { .. } => "prompt_too_large",
            Self::EmptyCommand => "empty_command",
            Self::Spawn { .. } => "spawn_failed",
            Self::PromptFile(_) => "prompt_file_failed",
            Self::Wait(_) => "wait_failed",
            Self::TimedOut(_) => "timed_out",
            Self::Canceled => "canceled",
            Self::Gateway(_) => "gateway_failed",
            Self::Remote { code, .. } => code,
        }
    }
}

impl Outcome {
    fn not_started(error: RunError, duration: Duration) -> Self {
        Self {
            ending: Ending::Failed,
            exit_code: None,
            signal: None,
            duration,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            error: Some(error),
        }
    }
}

/// Substitutes `{prompt}` `{prompt_file}` `{message_id}` `{thread_id}` `{route}` `{type}` inside each argument.
///
/// Placeholders may appear anywhere in an argument, several times. Substituted text is
/// not scanned again, so a prompt containing `{route}` stays literal. Unknown `{...}`
/// text, and `{prompt_file}` when `prompt_file` is `None`, are left as they are.
pub fn render_args(
    template: &[String],
    vars: &Vars,
    prompt: &str,
    prompt_file: Option<&Path>,
) -> Vec<String> {
    let prompt_file = prompt_file.map(Path::to_string_lossy);
    let lookup = |name: &str| -> Option<&str> {
        match name {
            "prompt" => Some(prompt),
            "prompt_file" => prompt_file.as_deref(),
            "message_id" => Some(&vars.message_id),
            "thread_id" => Some(&vars.thread_id),
            "route" => Some(&vars.route),
            "type" => Some(&vars.msg_type),
            _ => None,
        }
    };
    template
        .iter()
        .map(|arg| render_one(arg, &lookup))
        .collect()
}

fn render_one<'a>(arg: &str, lookup: &impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let (before, from_brace) = rest.split_at(open);
        out.push_str(before);
        // `{` is one byte, so slicing right after it is on a char boundary.
        let inner = &from_brace[1..];
        let known = inner
            .find('}')
            .and_then(|close| lookup(&inner[..close]).map(|value| (value, close + 1)));
        match known {
            Some((value, consumed)) => {
                out.push_str(value);
                rest = &inner[consumed..];
            }
            None => {
                out.push('{');
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Runs one turn to its end; never panics, every failure is in the [`Outcome`].
///
/// The prompt file, if any, is removed before this returns. Nothing the turn started is
/// left running: after the leader exits (or is killed on timeout) the rest of its
/// process group is killed too.
pub async fn run(inv: Invocation) -> Outcome {
    let Invocation {
        command,
        prompt,
        vars,
        stdin,
        env,
        env_remove,
        timeout,
        kill_grace,
        output_cap,
        work_dir,
        temp_dir,
        cancel,
        live,
    } = inv;

    if command.is_empty() {
        return Outcome::not_started(RunError::EmptyCommand, Duration::ZERO);
    }

    // The file only exists when asked for, so a secret-bearing prompt does not touch the
    // disk needlessly; TempPath deletes it on drop, including if this future is dropped.
    let prompt_file = if command.iter().any(|a| a.contains(PROMPT_FILE_PLACEHOLDER)) {
        match write_prompt_file(&prompt, temp_dir.as_deref()) {
            Ok(path) => Some(path),
            Err(e) => return Outcome::not_started(RunError::PromptFile(e), Duration::ZERO),
        }
    } else {
        None
    };

    let args = render_args(&command, &vars, &prompt, prompt_file.as_deref());
    if let Some((index, arg)) = args
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() >= MAX_ARG_BYTES)
    {
        let error = RunError::PromptTooLarge {
            index,
            bytes: arg.len(),
            limit: MAX_ARG_BYTES,
        };
        return Outcome::not_started(error, Duration::ZERO);
    }

    let stdin_data = stdin.then_some(prompt);
    let outcome = supervise(
        args,
        stdin_data,
        env,
        &env_remove,
        work_dir,
        Limits {
            timeout,
            kill_grace,
            output_cap,
        },
        Watchers { cancel, live },
    )
    .await;
    drop(prompt_file);
    outcome
}

fn write_prompt_file(prompt: &str, dir: Option<&Path>) -> io::Result<tempfile::TempPath> {
    use std::io::Write as _;
    let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    // NamedTempFile creates the file with mode 0600 and O_EXCL.
    let mut file = tempfile::Builder::new()
        .prefix("inbox-prompt-")
        .suffix(".txt")
        .tempfile_in(dir)?;
    file.write_all(prompt.as_bytes())?;
    file.flush()?;
    // Close our descriptor now; the path lives on until the TempPath is dropped.
    Ok(file.into_temp_path())
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Duration,
    kill_grace: Duration,
    output_cap: usize,
}

/// Who may stop a running agent early, and who sees its output as it comes.
struct Watchers {
    cancel: Option<std::sync::Arc<tokio::sync::Notify>>,
    live: Option<LiveTap>,
}

async fn supervise(
    args: Vec<String>,
    stdin_data: Option<String>,
    env: Vec<(String, String)>,
    env_remove: &[String],
    work_dir: Option<PathBuf>,
    limits: Limits,
    Watchers { cancel, live }: Watchers,
) -> Outcome {
    let Some((program, rest)) = args.split_first() else {
        return Outcome::not_started(RunError::EmptyCommand, Duration::ZERO);
    };

    let mut cmd = Command::new(program);
    for var in env_remove {
        cmd.env_remove(var);
    }
    cmd.args(rest)
        .envs(env)
        .stdin(if stdin_data.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own lets us signal everything the agent forks at once.
        .process_group(0);
    // Between the inbox and the agent, a supervisor that ends the agent's whole session with
    // it, even what left the group with setsid (see `subreaper`).
    #[cfg(target_os = "linux")]
    crate::subreaper::supervised(&mut cmd, limits.kill_grace);
    // No kill_on_drop: the host may deliberately leave agents running across a restart.
    if let Some(dir) = work_dir {
        cmd.current_dir(dir);
    }

    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(source) => {
            let error = RunError::Spawn {
                program: program.clone(),
                source,
            };
            return Outcome::not_started(error, started.elapsed());
        }
    };
    let pid = child.id();
    // With process_group(0) the group id is the leader's pid.
    let pgid = pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
    debug!(pid, program = %program, "agent started");

    let writer = match (stdin_data, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => Some(tokio::spawn(async move {
            // An agent that never reads stdin gets EPIPE here; that is not a failure.
            match pipe.write_all(data.as_bytes()).await {
                Ok(()) => {
                    let _ = pipe.shutdown().await;
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => debug!(error = %e, "cannot write the prompt to the agent's stdin"),
            }
        })),
        _ => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let tap = |stream| live.clone().map(|f| (stream, f));
    let mut stdout = Reader::start(
        child.stdout.take(),
        limits.output_cap,
        &stop_rx,
        tap(Stream::Stdout),
    );
    let mut stderr = Reader::start(
        child.stderr.take(),
        limits.output_cap,
        &stop_rx,
        tap(Stream::Stderr),
    );
    drop(stop_rx);

    let canceled = async {
        match &cancel {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    let (waited, stopped) = tokio::select! {
        waited = tokio::time::timeout(limits.timeout, child.wait()) => match waited {
            Ok(waited) => (waited, None),
            Err(_) => {
                warn!(pid, timeout = ?limits.timeout, "agent timed out; terminating its process group");
                (terminate(&mut child, pgid, limits.kill_grace).await, Some(Ending::TimedOut))
            }
        },
        () = canceled => {
            warn!(pid, "turn cancelled; terminating the agent's process group");
            (terminate(&mut child, pgid, limits.kill_grace).await, Some(Ending::Canceled))
        }
    };

    // Give the pipes a moment to deliver the last output, but a descendant holding them
    // open must not stretch the turn.
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        stdout.join().await;
        stderr.join().await;
    })
    .await;
    // Whatever is left of the group dies with the turn, so nothing outlives it.
    signal_group(&mut child, pgid, Signal::SIGKILL);
    let _ = stop_tx.send(true);
    stdout.join().await;
    stderr.join().await;
    if let Some(writer) = writer {
        // The stdin pipe may still be held by a descendant outside the group.
        writer.abort();
    }
    let duration = started.elapsed();

    let (exit_code, signal) = match &waited {
        Ok(status) => (status.code(), status.signal()),
        Err(_) => (None, None),
    };
    let (ending, error) = match waited {
        _ if stopped == Some(Ending::TimedOut) => {
            (Ending::TimedOut, Some(RunError::TimedOut(limits.timeout)))
        }
        _ if stopped == Some(Ending::Canceled) => (Ending::Canceled, Some(RunError::Canceled)),
        Ok(status) if status.success() => (Ending::Done, None),
        Ok(_) => (Ending::Failed, None),
        Err(e) => (Ending::Failed, Some(RunError::Wait(e))),
    };
    debug!(pid, ?ending, exit_code, signal, ?duration, "agent finished");

    Outcome {
        ending,
        exit_code,
        signal,
        duration,
        stdout_tail: stdout.into_string(),
        stderr_tail: stderr.into_string(),
        error,
    }
}

/// How long past the kill grace the inbox waits for an agent's supervisor to end the session.
const SUPERVISOR_SLACK: Duration = Duration::from_secs(2);

/// SIGTERM to the group, then SIGKILL after `grace` if the leader is still alive; reaps the leader.
async fn terminate(
    child: &mut Child,
    pgid: Option<Pid>,
    grace: Duration,
) -> io::Result<ExitStatus> {
    signal_group(child, pgid, Signal::SIGTERM);
    // The supervisor kills what ignores SIGTERM itself at the grace's end, then sweeps the
    // session: a moment more before it is killed in turn.
    if let Ok(waited) = tokio::time::timeout(grace + SUPERVISOR_SLACK, child.wait()).await {
        return waited;
    }
    warn!(pid = ?pgid, ?grace, "agent ignored SIGTERM; killing its process group");
    signal_group(child, pgid, Signal::SIGKILL);
    child.wait().await
}

fn signal_group(child: &mut Child, pgid: Option<Pid>, signal: Signal) {
    match pgid {
        Some(pgid) => match killpg(pgid, signal) {
            // ESRCH: the group is already empty, which is the goal.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                warn!(pid = %pgid, %signal, error = %e, "cannot signal the agent's process group")
            }
        },
        // No pid means the leader was never observable as a group; kill what we can.
        None if signal == Signal::SIGKILL => {
            let _ = child.start_kill();
        }
        None => {}
    }
}

/// One output pipe being read into a bounded tail by its own task.
struct Reader {
    handle: Option<JoinHandle<Tail>>,
    tail: Option<Tail>,
    cap: usize,
}

impl Reader {
    fn start<R>(
        pipe: Option<R>,
        cap: usize,
        stop: &watch::Receiver<bool>,
        live: Option<(Stream, LiveTap)>,
    ) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        Self {
            handle: pipe.map(|p| tokio::spawn(read_tail(p, cap, stop.clone(), live))),
            tail: None,
            cap,
        }
    }

    /// Waits for the reader task; cancel-safe, so it can run under a timeout and again later.
    async fn join(&mut self) {
        if let Some(handle) = self.handle.as_mut() {
            let joined = handle.await;
            self.handle = None;
            // A panicked reader loses its output but not the turn.
            self.tail = joined.ok();
        }
    }

    fn into_string(self) -> String {
        self.tail
            .unwrap_or_else(|| Tail::new(self.cap))
            .into_string()
    }
}

async fn read_tail<R>(
    mut pipe: R,
    cap: usize,
    mut stop: watch::Receiver<bool>,
    live: Option<(Stream, LiveTap)>,
) -> Tail
where
    R: AsyncRead + Unpin,
{
    let mut tail = Tail::new(cap);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            // Stop first: a flooding pipe is always readable and would otherwise starve it.
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            read = pipe.read(&mut buf) => match read {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = buf.get(..n).unwrap_or_default();
                    tail.push(chunk);
                    if let Some((stream, tap)) = &live {
                        (tap.0)(*stream, chunk);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            },
        }
    }
    tail
}

/// The last `cap` bytes of a stream, in O(cap) memory.
#[derive(Debug)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    seen: u64,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            seen: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.seen = self.seen.saturating_add(data.len() as u64);
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf
                .extend_from_slice(data.get(data.len() - self.cap..).unwrap_or_default());
            return;
        }
        self.buf.extend_from_slice(data);
        // Trimming only once the buffer doubles keeps the copying amortised O(1) per byte.
        if self.buf.len() > self.cap.saturating_mul(2) {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
        }
    }

    fn into_string(mut self) -> String {
        if self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
        }
        let truncated = self.seen > self.buf.len() as u64;
        // A cut through a multi-byte character would show up as a replacement character.
        let skip = if truncated {
            self.buf
                .iter()
                .take(3)
                .take_while(|b| **b & 0xC0 == 0x80)
                .count()
        } else {
            0
        };
        let text = String::from_utf8_lossy(self.buf.get(skip..).unwrap_or_default());
        if text.len() <= self.cap {
            return text.into_owned();
        }
        // Invalid bytes grow into 3-byte replacement characters; keep the promise of the cap.
        let mut cut = text.len() - self.cap;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text.get(cut..).unwrap_or_default().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use nix::sys::signal::kill;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| (*a).to_owned()).collect()
    }

    fn vars() -> Vars {
        Vars {
            message_id: "m-1".to_owned(),
            thread_id: "t-2".to_owned(),
            route: "review".to_owned(),
            msg_type: "request".to_owned(),
        }
    }

    fn inv(command: &[&str]) -> Invocation {
        Invocation {
            command: s(command),
            prompt: "hello agent".to_owned(),
            vars: vars(),
            stdin: false,
            env: Vec::new(),
            timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(1),
            output_cap: 64 * 1024,
            env_remove: Vec::new(),
            work_dir: None,
            temp_dir: None,
            cancel: None,
            live: None,
        }
    }

    /// Dead means gone, or a zombie nobody has reaped yet (PID 1 in a container may not reap).
    fn is_dead(pid: i32) -> bool {
        if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            return true;
        }
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    }

    /// Whether `pid` is gone within a generous 30 s (a loaded machine can be slow to reap).
    async fn dies_soon(pid: i32) -> bool {
        for _ in 0..300 {
            if is_dead(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits (up to 30 s) for a pid file written whole (`echo $! > f.tmp && mv f.tmp f`).
    async fn read_pid(path: &Path) -> i32 {
        for _ in 0..300 {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no pid in {} after 30 s", path.display());
    }

    #[test]
    fn render_args_substitutes_placeholders_anywhere() {
        let file = Path::new("/tmp/p.txt");
        let cases: &[(&str, &str)] = &[
            ("{prompt}", "hello"),
            ("--session-id={thread_id}", "--session-id=t-2"),
            ("{route}/{type}:{message_id}", "review/request:m-1"),
            ("{message_id}{message_id}", "m-1m-1"),
            ("--file={prompt_file}", "--file=/tmp/p.txt"),
            ("{unknown} {route}", "{unknown} review"),
            ("{", "{"),
            ("}{", "}{"),
            ("{{route}}", "{review}"),
            ("{route", "{route"),
            ("{ route }", "{ route }"),
            ("json: {\"a\": 1}", "json: {\"a\": 1}"),
            ("plain", "plain"),
            ("", ""),
            ("é{route}ü", "éreviewü"),
        ];
        let template: Vec<String> = cases.iter().map(|(t, _)| (*t).to_owned()).collect();
        let rendered = render_args(&template, &vars(), "hello", Some(file));
        for ((template, want), got) in cases.iter().zip(&rendered) {
            assert_eq!(got, want, "template {template:?}");
        }
    }

    #[test]
    fn render_args_does_not_rescan_substituted_text() {
        let out = render_args(
            &s(&["{prompt}", "{prompt_file}"]),
            &vars(),
            "say {route} {prompt}",
            None,
        );
        assert_eq!(out, s(&["say {route} {prompt}", "{prompt_file}"]));
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail::new(10);
        for chunk in [&b"0123456789"[..], b"abc", b"defghijklmnop", b"q"] {
            tail.push(chunk);
            assert!(tail.buf.len() <= 20);
        }
        assert_eq!(tail.into_string(), "hijklmnopq");

        let mut tail = Tail::new(0);
        tail.push(b"anything");
        assert_eq!(tail.into_string(), "");

        // A cut through "é" drops its orphaned continuation byte.
        let mut tail = Tail::new(3);
        tail.push("xéab".as_bytes());
        assert_eq!(tail.into_string(), "ab");
    }

    #[test]
    fn error_codes_and_messages() {
        let e = RunError::PromptTooLarge {
            index: 2,
            bytes: 200_000,
            limit: MAX_ARG_BYTES,
        };
        assert_eq!(e.code(), "prompt_too_large");
        assert_eq!(
            e.to_string(),
            "argument 2 is 200000 bytes, over the 131072-byte limit for one argument; use {prompt_file} instead of {prompt} in the command"
        );
        assert_eq!(RunError::EmptyCommand.code(), "empty_command");
        assert_eq!(
            RunError::PromptFile(io::Error::other("x")).code(),
            "prompt_file_failed"
        );
    }

    #[tokio::test]
    async fn script_sees_substituted_args_and_env() {
        let mut inv = inv(&[
            "sh",
            "-c",
            r#"echo "$1|$2|$INBOX_MESSAGE_ID|$EXTRA""#,
            "sh",
            "--session-id={thread_id}",
            "{route}/{type}:{message_id}",
        ]);
        inv.env = vec![
            ("INBOX_MESSAGE_ID".to_owned(), "m-1".to_owned()),
            ("EXTRA".to_owned(), "x y".to_owned()),
        ];
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert_eq!(out.exit_code, Some(0));
        assert!(out.error.is_none());
        assert_eq!(
            out.stdout_tail,
            "--session-id=t-2|review/request:m-1|m-1|x y\n"
        );
    }

    #[tokio::test]
    async fn work_dir_is_the_cwd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inv = inv(&["pwd"]);
        inv.work_dir = Some(dir.path().to_path_buf());
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        let want = dir.path().canonicalize().expect("canonical");
        assert_eq!(out.stdout_tail.trim_end(), want.to_string_lossy());
    }

    #[tokio::test]
    async fn prompt_file_is_private_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inv = inv(&[
            "sh",
            "-c",
            r#"cat "$1"; echo; stat -c %a "$1"; echo "$1""#,
            "sh",
            "{prompt_file}",
        ]);
        inv.prompt = "line one\nsecret {route}".to_owned();
        inv.temp_dir = Some(dir.path().to_path_buf());
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        let lines: Vec<&str> = out.stdout_tail.lines().collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "line one");
        assert_eq!(lines[1], "secret {route}");
        assert_eq!(lines[2], "600");
        let path = Path::new(lines[3]);
        assert!(path.starts_with(dir.path()), "{path:?}");
        assert!(!path.exists(), "prompt file left behind");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    #[tokio::test]
    async fn prompt_file_is_removed_on_failure_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inv = inv(&["sh", "-c", r#"echo "$1"; exit 7"#, "sh", "{prompt_file}"]);
        inv.temp_dir = Some(dir.path().to_path_buf());
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Failed);
        assert_eq!(out.exit_code, Some(7));
        assert!(!Path::new(out.stdout_tail.trim_end()).exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    #[tokio::test]
    async fn no_prompt_file_unless_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inv = inv(&[
            "sh",
            "-c",
            "ls \"$1\"",
            "sh",
            dir.path().to_str().expect("utf8"),
        ]);
        inv.temp_dir = Some(dir.path().to_path_buf());
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert_eq!(out.stdout_tail, "");
    }

    #[tokio::test]
    async fn large_prompt_needs_the_prompt_file() {
        let prompt = "x".repeat(200 * 1024);
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("spawned");

        let mut too_large = inv(&["sh", "-c", "touch \"$0\"", "{prompt}"]);
        too_large.command[2] = format!("touch '{}'", marker.display());
        too_large.prompt = prompt.clone();
        let out = run(too_large).await;
        assert_eq!(out.ending, Ending::Failed);
        assert_eq!(out.exit_code, None);
        match &out.error {
            Some(
                e @ RunError::PromptTooLarge {
                    index,
                    bytes,
                    limit,
                },
            ) => {
                assert_eq!((*index, *bytes, *limit), (3, 200 * 1024, MAX_ARG_BYTES));
                assert_eq!(e.code(), "prompt_too_large");
                assert!(e.to_string().contains("{prompt_file}"));
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(!marker.exists(), "the agent was spawned");

        let mut via_file = inv(&["sh", "-c", r#"wc -c < "$1""#, "sh", "{prompt_file}"]);
        via_file.prompt = prompt;
        let out = run(via_file).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert_eq!(out.stdout_tail.trim(), "204800");
    }

    #[tokio::test]
    async fn argument_just_under_the_limit_runs() {
        let mut inv = inv(&["sh", "-c", r#"printf %s "$1" | wc -c"#, "sh", "{prompt}"]);
        inv.prompt = "y".repeat(MAX_ARG_BYTES - 1);
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert_eq!(out.stdout_tail.trim(), (MAX_ARG_BYTES - 1).to_string());
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let mut inv = inv(&[
            "sh",
            "-c",
            r#"sleep 300 & echo $! > "$1.tmp" && mv "$1.tmp" "$1"; sleep 300"#,
            "sh",
            pidfile.to_str().expect("utf8"),
        ]);
        inv.timeout = Duration::from_secs(5);
        let turn = tokio::spawn(run(inv));
        // The grandchild exists before the timeout fires; otherwise the test would prove nothing.
        let grandchild = read_pid(&pidfile).await;
        assert!(
            !turn.is_finished(),
            "the turn ended before its child started"
        );
        let out = turn.await.expect("run");
        assert_eq!(out.ending, Ending::TimedOut, "{out:?}");
        assert_eq!(out.signal, Some(Signal::SIGTERM as i32));
        assert_eq!(out.error.as_ref().map(RunError::code), Some("timed_out"));
        assert!(out.duration >= Duration::from_secs(5));
        assert!(
            dies_soon(grandchild).await,
            "grandchild {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn sigterm_ignored_still_killed_after_grace() {
        let started = Instant::now();
        let mut inv = inv(&["sh", "-c", r#"trap "" TERM; sleep 300"#]);
        inv.timeout = Duration::from_secs(1);
        inv.kill_grace = Duration::from_secs(1);
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::TimedOut, "{out:?}");
        assert_eq!(out.signal, Some(Signal::SIGKILL as i32));
        assert!(out.duration >= Duration::from_secs(2));
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn output_is_capped_to_its_tail() {
        let mut inv = inv(&["sh", "-c", "yes | head -c 5000000; echo END"]);
        inv.output_cap = 65536;
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert!(out.stdout_tail.len() <= 65536);
        assert!(out.stdout_tail.len() > 60000);
        assert!(out.stdout_tail.ends_with("y\nEND\n"));
    }

    #[tokio::test]
    async fn stderr_is_kept_separately() {
        let mut inv = inv(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
        inv.output_cap = 4;
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Failed);
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.signal, None);
        assert!(out.error.is_none());
        assert_eq!(out.stdout_tail, "out\n");
        assert_eq!(out.stderr_tail, "err\n");
    }

    #[tokio::test]
    async fn stdin_receives_the_prompt() {
        let mut inv = inv(&["cat"]);
        inv.stdin = true;
        inv.prompt = "first line\nsecond line\n".to_owned();
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert_eq!(out.stdout_tail, "first line\nsecond line\n");
    }

    #[tokio::test]
    async fn stdin_is_null_unless_asked() {
        let out = run(inv(&["cat"])).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert_eq!(out.stdout_tail, "");
    }

    #[tokio::test]
    async fn agent_ignoring_stdin_does_not_hang() {
        let mut inv = inv(&["true"]);
        inv.stdin = true;
        inv.prompt = "z".repeat(1024 * 1024);
        let out = run(inv).await;
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert!(out.error.is_none());
    }

    #[tokio::test]
    async fn non_zero_exit_fails() {
        let out = run(inv(&["sh", "-c", "exit 42"])).await;
        assert_eq!(out.ending, Ending::Failed);
        assert_eq!(out.exit_code, Some(42));
        assert!(out.error.is_none());
    }

    #[tokio::test]
    async fn death_by_signal_fails() {
        let out = run(inv(&["sh", "-c", "kill -KILL $$"])).await;
        assert_eq!(out.ending, Ending::Failed);
        assert_eq!(out.exit_code, None);
        assert_eq!(out.signal, Some(Signal::SIGKILL as i32));
    }

    #[tokio::test]
    async fn missing_program_fails_to_spawn() {
        let out = run(inv(&["agent-inbox-no-such-program", "{prompt}"])).await;
        assert_eq!(out.ending, Ending::Failed);
        assert_eq!(out.exit_code, None);
        match &out.error {
            Some(e @ RunError::Spawn { program, .. }) => {
                assert_eq!(program, "agent-inbox-no-such-program");
                assert_eq!(e.code(), "spawn_failed");
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[tokio::test]
    async fn empty_command_fails() {
        let out = run(inv(&[])).await;
        assert_eq!(out.ending, Ending::Failed);
        assert_eq!(
            out.error.as_ref().map(RunError::code),
            Some("empty_command")
        );
    }

    #[tokio::test]
    async fn leader_exit_does_not_wait_for_background_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let started = Instant::now();
        let out = run(inv(&[
            "sh",
            "-c",
            r#"sleep 300 & echo $! > "$1.tmp" && mv "$1.tmp" "$1"; echo hi"#,
            "sh",
            pidfile.to_str().expect("utf8"),
        ]))
        .await;
        // Waiting for the child would take its 300 s; a generous bound tells the two apart.
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(out.ending, Ending::Done, "{out:?}");
        assert_eq!(out.stdout_tail, "hi\n");
        let child = read_pid(&pidfile).await;
        assert!(dies_soon(child).await, "background child {child} survived");
    }
}
