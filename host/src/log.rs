//! Where the process's log lines go: into one bounded buffer that a thread writes to stderr a few
//! times a second, so logging a line from a request never makes a system call or wakes a thread.
//!
//! Lines are complete when they arrive (the fmt layer hands each event over in one `write`), so
//! the buffer only ever holds whole lines. A line that would take the buffer past its bound is
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

/// Starts the writer thread on `out` (stderr in the binary).
pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(LogWriter, Guard)> {
    let shared = Arc::new(Shared::default());
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_out(&for_thread, out))?;
    Ok((
        LogWriter(shared.clone()),
        Guard {
            shared,
            thread: Some(thread),
        },
    ))
}

impl LogWriter {
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
        state.lines.extend_from_slice(line);
        if std::mem::take(&mut state.idle) {
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
fn write_out(shared: &Shared, mut out: impl Write) {
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
}
