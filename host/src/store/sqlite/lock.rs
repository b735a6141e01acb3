//! The data directory's lock: one process at a time on a SQLite data directory.
//!
//! An inbox holds `inbox.lock` exclusively from before it binds until it exits, and writes into it
//! who it is (pid, listen address), so a second `serve`, or `store migrate`, can say which process
//! is in the way. A second inbox on the same directory would take the first's running turns for
//! interrupted ones and run their agents again. A restart that overlaps the old process's drain
//! waits for it to let go.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name inside the data directory.
const LOCK_FILE: &str = "inbox.lock";

/// How often a waiting start tries the lock again.
const POLL: Duration = Duration::from_millis(100);

/// The data directory's lock, held exclusively while this value lives.
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another process holds it.
    #[error("another process holds {}: {holder}", path.display())]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Who, as it wrote itself into the file.
        holder: String,
    },
    /// The file could not be opened or locked.
    #[error("cannot lock {}: {reason}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl DirLock {
    /// Takes the lock, trying again for up to `wait` while another process holds it (an inbox
    /// still draining before it exits). Blocks the calling thread.
    pub(crate) fn acquire(data_dir: &Path, wait: Duration) -> Result<DirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |e: std::io::Error| LockError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    if !said {
                        tracing::info!(
                            holder = %holder(&path), wait_secs = wait.as_secs(),
                            "another process holds the data directory; waiting for it to stop"
                        );
                        said = true;
                    }
                    std::thread::sleep(POLL);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(LockError::Held {
                        holder: holder(&path),
                        path,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let lock = DirLock { file };
        lock.note(&format!("pid {}", std::process::id()));
        Ok(lock)
    }

    /// Writes who holds the lock (shown to a process refused it); best effort.
    pub(crate) fn note(&self, holder: &str) {
        let mut f = &self.file;
        let written = f
            .set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(format!("{holder}\n").as_bytes()));
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot write the data directory's lock holder");
        }
    }
}

/// Who holds the lock, as the holder wrote it.
fn holder(path: &Path) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => {
            let one_line = text.trim().replace('\n', "; ");
            format!("an agent-inbox process ({one_line})")
        }
        _ => "an agent-inbox process (it did not say which)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), Duration::ZERO).expect("first");
        first.note("pid 7, listening on 127.0.0.1:9");
        let err = DirLock::acquire(dir.path(), Duration::from_millis(250)).unwrap_err();
        assert!(
            err.to_string().contains("pid 7, listening on 127.0.0.1:9"),
            "{err}"
        );
        drop(first);
        DirLock::acquire(dir.path(), Duration::ZERO).expect("free once the first lets go");
    }

    #[test]
    fn a_waiting_start_gets_the_lock_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), Duration::ZERO).expect("first");
        let path = dir.path().to_owned();
        let waiter = std::thread::spawn(move || DirLock::acquire(&path, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        waiter
            .join()
            .unwrap()
            .expect("taken after the first let go");
    }
}
