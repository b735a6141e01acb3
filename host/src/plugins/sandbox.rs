//! What one plugin instance's store holds: its WASI context (nothing inherited, output captured),
//! its resource limiter, its deadline and the host side of the `log` import.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::Limits;
use super::bindings::agent_inbox::plugin::{host, types};

/// Longest host log message kept; the rest is cut.
const MAX_LOG_MESSAGE_CHARS: usize = 4096;
/// Most of the stderr tail that goes into a trap error.
const STDERR_IN_ERROR_BYTES: usize = 2048;
/// Where plugin logs and output go in `tracing`.
const LOG_TARGET: &str = "agent_inbox::plugin";

/// Raised by the epoch callback when a call passes its deadline.
#[derive(Debug, thiserror::Error)]
#[error("plugin deadline exceeded")]
pub(super) struct DeadlineExceeded;

/// Raised by the limiter when an instance asks for more memory than its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {limit} bytes exceeded (wanted {wanted})")]
pub(super) struct MemoryCapExceeded {
    pub(super) limit: usize,
    pub(super) wanted: usize,
}

/// A store's data.
pub(super) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    /// When the running call (or instantiation) must stop; read by the epoch callback.
    pub(super) deadline_at: Instant,
    plugin: Arc<str>,
    stdout: Capture,
    stderr: Capture,
    log_lines: u32,
    max_log_lines: u32,
    dropped_log_lines: u32,
}

impl State {
    pub(super) fn new(plugin: Arc<str>, limits: &Limits) -> Self {
        let stdout = Capture::new(limits.max_output_bytes);
        let stderr = Capture::new(limits.max_output_bytes);
        // Nothing is inherited: no env, args, preopened dirs or stdin. Sockets are off outright,
        // not merely denied every address.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits),
            deadline_at: Instant::now() + limits.deadline,
            plugin,
            stdout,
            stderr,
            log_lines: 0,
            max_log_lines: limits.max_log_lines,
            dropped_log_lines: 0,
        }
    }

    /// Resets the per-call budgets before a call.
    pub(super) fn begin_call(&mut self, deadline: Duration) {
        self.deadline_at = Instant::now() + deadline;
        self.log_lines = 0;
        self.dropped_log_lines = 0;
    }

    /// Sends what the plugin wrote to stdout and stderr during the call to `tracing`, under its
    /// name, and returns the end of its stderr for error messages.
    pub(super) fn flush_output(&mut self, hook: &'static str) -> String {
        let plugin = &*self.plugin;
        if self.dropped_log_lines > 0 {
            tracing::warn!(
                target: LOG_TARGET,
                plugin,
                hook,
                dropped = self.dropped_log_lines,
                "plugin log lines past the per-call limit were dropped"
            );
            self.dropped_log_lines = 0;
        }
        let (out, out_dropped) = self.stdout.take();
        let (err, err_dropped) = self.stderr.take();
        for (stream, text, dropped) in
            [("stdout", &out, out_dropped), ("stderr", &err, err_dropped)]
        {
            for line in text.lines() {
                tracing::info!(target: LOG_TARGET, plugin, hook, stream, "{line}");
            }
            if dropped > 0 {
                tracing::warn!(
                    target: LOG_TARGET,
                    plugin,
                    hook,
                    stream,
                    dropped_bytes = dropped,
                    "plugin output past the per-call limit was dropped"
                );
            }
        }
        tail(err.trim(), STDERR_IN_ERROR_BYTES)
            .trim_start()
            .to_owned()
    }
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl host::Host for State {
    async fn log(&mut self, level: host::Level, message: String, fields: Vec<(String, String)>) {
        if self.log_lines >= self.max_log_lines {
            self.dropped_log_lines += 1;
            return;
        }
        self.log_lines += 1;
        let plugin = &*self.plugin;
        let message = truncate_chars(&message, MAX_LOG_MESSAGE_CHARS);
        // tracing needs field names at compile time, so the plugin's fields travel as one string.
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        let fields = truncate_chars(&fields, MAX_LOG_MESSAGE_CHARS);
        match level {
            host::Level::Trace => tracing::trace!(target: LOG_TARGET, plugin, fields, "{message}"),
            host::Level::Debug => tracing::debug!(target: LOG_TARGET, plugin, fields, "{message}"),
            host::Level::Info => tracing::info!(target: LOG_TARGET, plugin, fields, "{message}"),
            host::Level::Warn => tracing::warn!(target: LOG_TARGET, plugin, fields, "{message}"),
            host::Level::Error => tracing::error!(target: LOG_TARGET, plugin, fields, "{message}"),
        }
    }
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Enforces [`Limits`] on a store: a cap on all its linear memories together, which traps the
/// instance as soon as it is crossed, and counts of instances, tables and memories.
pub(super) struct Limiter {
    counts: StoreLimits,
    cap: usize,
    /// Bytes of linear memory the store holds, over all memories.
    total: usize,
    /// The last growth allowed, undone if the allocation behind it fails.
    last_growth: usize,
    /// The total a refused growth asked for.
    denied: Option<usize>,
}

impl Limiter {
    fn new(limits: &Limits) -> Self {
        Self {
            counts: StoreLimitsBuilder::new()
                .instances(limits.max_core_instances)
                .tables(limits.max_tables)
                .memories(limits.max_memories)
                .build(),
            cap: limits.memory_bytes,
            total: 0,
            last_growth: 0,
            denied: None,
        }
    }

    /// The total a refused growth asked for, if the cap was hit.
    pub(super) fn denied_bytes(&self) -> Option<usize> {
        self.denied
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let wanted = self.total.saturating_add(growth);
        if wanted > self.cap {
            self.denied = Some(wanted);
            // Trapping at once, rather than letting `memory.grow` return -1, makes the failure
            // certain and tells it apart from a plugin bug: most guests abort on a failed
            // allocation anyway, some would limp on.
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                limit: self.cap,
                wanted,
            }));
        }
        let allowed = self.counts.memory_growing(current, desired, maximum)?;
        if allowed {
            self.total = wanted;
            self.last_growth = growth;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.total = self.total.saturating_sub(self.last_growth);
        self.last_growth = 0;
        self.counts.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.counts.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }

    fn tables(&self) -> usize {
        self.counts.tables()
    }

    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

/// A bounded in-memory stdout or stderr. Writes past the bound are accepted and counted but not
/// kept, so a chatty plugin loses output instead of trapping.
#[derive(Clone)]
struct Capture(Arc<Mutex<CaptureBuf>>);

struct CaptureBuf {
    kept: Vec<u8>,
    cap: usize,
    dropped: usize,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Self(Arc::new(Mutex::new(CaptureBuf {
            kept: Vec::new(),
            cap,
            dropped: 0,
        })))
    }

    /// Takes what was written since the last call, and how many bytes were dropped.
    fn take(&self) -> (String, usize) {
        let mut buf = self.lock();
        let kept = std::mem::take(&mut buf.kept);
        let dropped = std::mem::replace(&mut buf.dropped, 0);
        (String::from_utf8_lossy(&kept).into_owned(), dropped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CaptureBuf> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = self.lock();
        let room = buf.cap.saturating_sub(buf.kept.len());
        let keep = data.len().min(room);
        buf.kept.extend_from_slice(&data[..keep]);
        buf.dropped += data.len() - keep;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
