//! Where the process's log lines go: into one bounded buffer that a thread writes to stderr a few
//! times a second, so logging a line from a request never makes a system call or wakes a thread.
//!
//! Lines are complete when they arrive (the fmt layer hands each event over in one `write`), so
//! the buffer only ever holds whole lines, and one event is one line: a control character inside
//! it (a CR or LF a peer put in a value, a NUL, a terminal escape) is written out as an escape
//! here, the last guard whatever a field's formatting did. A line that would take the buffer past its bound is
//! dropped and counted, never waited for: the log must not push back on acks.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of lines waiting to be written before new lines are dropped (some 20,000 lines).
pub const CAPACITY: usize = 4 << 20;
/// How long the writer lets lines gather after the first one arrives: one write per burst instead
/// of a write and a wake-up per line (with a per-line queue, the log cost about 8% of the ack
/// path's CPU; BENCHMARKS.md).
const GATHER: Duration = Duration::from_millis(20);

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    /// The writer thread waits for a first line (and wants a notify).
    idle: bool,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
    /// The fmt layer colours its lines (a terminal): its SGR sequences are kept.
    ansi: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A byte buffer: a panic while it was held cannot leave it unusable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle a subscriber writes through (a `tracing_subscriber` `MakeWriter`).
#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

/// Owns the writer thread: dropping it writes out what is buffered and stops the thread.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread on `out`.
pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(LogWriter, Guard)> {
    start_with(out, || {})
}

/// Starts the writer thread on stderr. When stderr is a regular file, the kernel is told after
/// each burst to write the burst back to disk now (and drop it from the page cache): left to the
/// flusher, a busy log's pages all go out together once they are 30 s old, and the store's
/// fsyncs queue behind that writeback (acks stalled 53–119 ms in the wrk runs; BENCHMARKS.md).
pub fn start_stderr() -> std::io::Result<(LogWriter, Guard)> {
    start_with(std::io::stderr(), writeback(std::io::stderr()))
}

/// What to call after each burst written to `out`: starts the writeback of a regular file's dirty
/// pages, or does nothing (a pipe, a terminal, a journal socket).
fn writeback(out: impl std::os::fd::AsFd) -> impl FnMut() + Send + 'static {
    let file = out
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.file_type().is_file()));
    move || {
        if let Some(f) = &file {
            // Linux starts writing back the dirty pages of the range, without waiting for it,
            // then drops the clean ones. Best effort: on failure the flusher does it later.
            let _ = nix::fcntl::posix_fadvise(
                f,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
    }
}

/// Starts the writer thread on `out`, calling `written` after each burst it writes.
fn start_with(
    out: impl Write + Send + 'static,
    written: impl FnMut() + Send + 'static,
) -> std::io::Result<(LogWriter, Guard)> {
    let shared = Arc::new(Shared::default());
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_out(&for_thread, out, written))?;
    Ok((
        LogWriter(shared.clone()),
        Guard {
            shared,
            thread: Some(thread),
        },
    ))
}

impl LogWriter {
    /// Tells the writer that lines carry the fmt layer's colours, whose escape sequences
    /// (`ESC [ … m`) it then keeps; every other control character is still escaped.
    pub fn set_ansi(&self, on: bool) {
        self.0.ansi.store(on, Ordering::Relaxed);
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.0.state();
        if state.closed {
            // After shutdown began (a line from a thread still running): stderr directly.
            drop(state);
            return std::io::stderr().write(line);
        }
        if state.lines.len() + line.len() > CAPACITY {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        push_line(&mut state.lines, line, self.0.ansi.load(Ordering::Relaxed));
        if std::mem::take(&mut state.idle) {
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One event's line as the writer writes it (for tests of what reaches the log).
pub fn escaped_line(line: &str) -> String {
    let mut buf = Vec::new();
    push_line(&mut buf, line.as_bytes(), false);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Appends one event's line to `buf`, with every control character before its final newline
/// written as `\n`, `\r`, `\t` or `\u{..}` (and, unless `ansi`, every ESC too).
fn push_line(buf: &mut Vec<u8>, line: &[u8], ansi: bool) {
    let (body, end) = match line.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (line, &b""[..]),
    };
    // Fast path, almost every line: no byte that can start a control character (C0, DEL, the
    // C1 range's UTF-8 lead 0xC2, and 0xE2, which leads U+2028 and U+2029).
    if !body
        .iter()
        .any(|&b| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2)
    {
        buf.extend_from_slice(line);
        return;
    }
    let text = String::from_utf8_lossy(body);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            '\t' => buf.extend_from_slice(b"\\t"),
            // The fmt layer's own colours: ESC '[' digits and ';' then 'm'.
            '\u{1b}' if ansi && chars.peek() == Some(&'[') => {
                let mut seq = String::from("\u{1b}");
                seq.push(chars.next().unwrap_or('['));
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_digit() || d == ';' {
                        seq.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if chars.peek() == Some(&'m') {
                    chars.next();
                    seq.push('m');
                    buf.extend_from_slice(seq.as_bytes());
                } else {
                    buf.extend_from_slice(b"\\u{1b}");
                    buf.extend_from_slice(&seq.as_bytes()[1..]);
                }
            }
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                buf.extend_from_slice(format!("\\u{{{:x}}}", u32::from(c)).as_bytes());
            }
            c => {
                let mut utf8 = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    buf.extend_from_slice(end);
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: waits for a first line, lets a burst gather, writes it in one go.
fn write_out(shared: &Shared, mut out: impl Write, mut written: impl FnMut()) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.state();
        while state.lines.is_empty() && !state.closed {
            state.idle = true;
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.idle = false;
        let closed = state.closed;
        drop(state);
        if !closed {
            std::thread::sleep(GATHER);
        }
        let mut lines = std::mem::replace(&mut shared.state().lines, std::mem::take(&mut spare));
        // A failed write (stderr closed) loses these lines; there is nowhere to say so.
        let _ = out.write_all(&lines).and_then(|()| out.flush());
        written();
        lines.clear();
        // Keep a buffer for the next burst, but not a burst's worth of memory for ever.
        lines.shrink_to(64 << 10);
        spare = lines;
        if closed && shared.state().lines.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// After each burst reaches the file, the writeback hint runs (and leaves the file whole);
    /// on a pipe it does nothing.
    #[test]
    fn each_burst_written_to_a_file_is_handed_to_writeback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.log");
        let file = std::fs::File::create(&path).unwrap();
        let mut hint = writeback(&file);
        let hints = Arc::new(AtomicU64::new(0));
        let counted = hints.clone();
        let (mut writer, guard) = start_with(file, move || {
            hint();
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        writer.write_all(b"first burst\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while hints.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no hint after a burst"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.write_all(b"second burst\n").unwrap();
        drop(guard);
        assert!(hints.load(Ordering::Relaxed) >= 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "first burst\nsecond burst\n"
        );
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut on_pipe = writeback(&read);
        on_pipe();
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_all_are_written_at_close() {
        let sink = Sink::default();
        let (writer, guard) = start(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        w.write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let mine: Vec<_> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let want: Vec<_> = (0..1000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, want, "thread {t}'s lines, in order and whole");
        }
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_lines_instead_of_waiting() {
        /// Blocks every write until released: the writer thread is stuck, as on a stalled stderr.
        #[derive(Clone)]
        struct Stuck(Arc<(Mutex<bool>, Condvar)>);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let (m, c) = &*self.0;
                let mut go = m.lock().unwrap();
                while !*go {
                    go = c.wait(go).unwrap();
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (mut writer, guard) = start(Stuck(gate.clone())).unwrap();
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<_>>();
        // Three times the capacity: the thread takes at most one buffer's worth into its stuck
        // write. The gate opens only after the loop, so the loop ending shows no write waited.
        for _ in 0..(3 * CAPACITY / line.len()) {
            writer.write_all(&line).unwrap();
        }
        assert!(writer.dropped() > 0, "lines past the bound are dropped");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
    }

    #[test]
    fn one_event_is_one_line_whatever_its_values_hold() {
        let line = |text: &str, ansi: bool| {
            let mut buf = Vec::new();
            push_line(&mut buf, text.as_bytes(), ansi);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(line("plain\n", false), "plain\n");
        let forged = "INFO relay: x\r\n2026-12-04T00:00:00Z INFO delivered\u{1b}[2J\0\u{85}\n";
        let out = line(forged, false);
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(out.ends_with('\n'));
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert_eq!(
            out,
            "INFO relay: x\\r\\n2026-12-04T00:00:00Z INFO delivered\\u{1b}[2J\\u{0}\\u{85}\n"
        );
        // On a terminal the fmt layer's colours stay; any other escape does not.
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32mINFO\u{1b}[0m x\u{1b}[2J\n";
        assert_eq!(
            line(coloured, true),
            "\u{1b}[2m2026\u{1b}[0m \u{1b}[32mINFO\u{1b}[0m x\\u{1b}[2J\n"
        );
    }
}
