//! Zero-filled space ahead of the WAL's end under sustained writes, so that a commit overwrites
//! blocks the file already has instead of appending.
//!
//! A commit's fdatasync of an append must also make the file's new size and block allocation
//! durable (a filesystem journal commit); an overwrite only flushes data: on the project's VM,
//! 130–172 µs against 78–94 µs per fdatasync (BENCHMARKS.md). SQLite appends to the WAL until a
//! RESTART checkpoint rewinds it, and while the store is open shrinks it only to
//! `journal_size_limit` (160 MiB, more than this fills), so once written the space serves every
//! later pass. PostgreSQL zero-fills its WAL segments for the same reason
//! (`wal_init_zero`).
//!
//! Only the writer thread extends the file, inside a write transaction (SQLite's WAL write lock,
//! which a writer in another process would also need), and only past the file's current end:
//! bytes SQLite wrote are never touched, and a crash leaves zeros after the last frame, which
//! recovery reads as the end of the log (a frame is valid only with the header's salts and a
//! running checksum).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;

/// The WAL's header, before its first frame.
const WAL_HEADER: u64 = 32;
/// Each frame's header, before its page.
const FRAME_HEADER: u64 = 24;

/// When the WAL gets zero-filled space ahead of its end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// WAL bytes in use before any space is added: an inbox whose WAL stays short (its passive
    /// checkpoints catch up, so SQLite rewinds it by itself) never gets a larger file.
    pub(super) from: u64,
    /// Bytes added at a time, once less than half of it is left ahead of the WAL's end. Each
    /// addition reaches the disk with the next commit's fdatasync.
    pub(super) chunk: u64,
    /// Largest file it makes (the length at which the WAL is rewound, and a little more).
    pub(super) up_to: u64,
}

impl Policy {
    /// Up to the length at which a WAL of `restart_at_frames` pages of 4 KiB is rewound.
    pub(super) fn for_restart_at(restart_at_frames: i64) -> Self {
        let chunk = 512 << 10;
        Self {
            from: 4 << 20,
            chunk,
            up_to: WAL_HEADER + restart_at_frames.max(0) as u64 * (4096 + FRAME_HEADER) + chunk,
        }
    }
}

/// The writer thread's side: where the WAL ends (from SQLite's WAL hook) and how far it is
/// zero-filled.
pub(super) struct Prealloc {
    policy: Policy,
    wal: PathBuf,
    frame_bytes: u64,
    /// Frames in the WAL after the last commit.
    frames: Arc<AtomicU64>,
    zeroed_to: u64,
}

impl Prealloc {
    /// Installs the WAL hook on the writer's connection (after `wal_autocheckpoint`, which would
    /// replace it).
    pub(super) fn install(conn: &mut Connection, policy: Policy) -> rusqlite::Result<Self> {
        let page: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        // SQLite names the WAL after the database's full path (symlinks resolved), as `path`
        // returns it. A database with no such path (in memory, or not UTF-8) gets no fill.
        let wal = conn.path().filter(|p| !p.is_empty()).map(|p| {
            let mut wal = std::ffi::OsString::from(p);
            wal.push("-wal");
            PathBuf::from(wal)
        });
        let frames = Arc::new(AtomicU64::new(0));
        let seen = frames.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            seen.store(pages.max(0) as u64, Ordering::Relaxed);
            Ok(())
        }))?;
        Ok(Self {
            zeroed_to: if wal.is_some() { 0 } else { u64::MAX },
            policy,
            wal: wal.unwrap_or_default(),
            frame_bytes: u64::from(page) + FRAME_HEADER,
            frames,
        })
    }

    /// After a batch: adds a chunk of zeros past the file's end if the WAL's end is near it.
    pub(super) fn after_commit(&mut self, conn: &Connection) {
        let end = WAL_HEADER + self.frames.load(Ordering::Relaxed) * self.frame_bytes;
        let p = self.policy;
        if end < p.from || end + p.chunk / 2 < self.zeroed_to || self.zeroed_to >= p.up_to {
            return;
        }
        if let Err(e) = self.extend(conn) {
            // Only a cost: commits append as they would without it.
            tracing::warn!(error = %e, wal = %self.wal.display(), "cannot zero-fill the WAL ahead; stopped trying");
            self.zeroed_to = u64::MAX;
        }
    }

    fn extend(&mut self, conn: &Connection) -> Result<(), Box<dyn std::error::Error>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let zeroed = (|| -> std::io::Result<u64> {
            let file = OpenOptions::new().write(true).open(&self.wal)?;
            // At the file's end, which covers every byte SQLite wrote (the lock keeps writers
            // out); even if the file was cut shorter than what was filled, so it gets no hole.
            let start = file.metadata()?.len();
            file.write_all_at(&vec![0; self.policy.chunk as usize], start)?;
            Ok(start + self.policy.chunk)
        })();
        // Nothing was written through SQLite: COMMIT only releases the lock. It must not stay
        // held: the next batch's BEGIN would fail.
        let released = conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        if released.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        released?;
        self.zeroed_to = zeroed?;
        Ok(())
    }
}
