//! The group-commit writer: one thread owns the write connection and commits the pending writes of
//! many requests in one transaction, so an fsync is shared by every request in the batch; and the
//! checkpoint thread that keeps the WAL short beside it.
//!
//! Each write is a type implementing [`Write`] with its own answer type. The writer also keeps the
//! in-memory side of the queues (queued turns per route, deliveries claimed for an attempt); a
//! write changes that side only through [`Effect`]s, applied after its transaction commits, so a
//! rolled-back write leaves no trace there either.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::prealloc::Prealloc;
use crate::store::StoreError;

/// Writes waiting for the writer thread; a full channel pushes back on requests.
pub(super) const WRITE_QUEUE: usize = 4096;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// One kind of write, applied by the writer thread inside a batch's transaction.
pub(super) trait Write: Send + 'static {
    /// What the caller gets back once the batch has committed.
    type Output: Send + 'static;
    /// Runs the write's SQL. It may run twice (a batch is redone write by write when one fails),
    /// so it changes nothing outside the transaction except through [`Tx::effect`].
    fn apply(&self, tx: &mut Tx<'_>) -> Result<Self::Output, StoreError>;
}

/// A change to the writer's in-memory state, made once the write's transaction has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// Turns queued on a route went up or down by one.
    Queued { route: String, up: bool },
    /// A delivery (outbound id, peer) was claimed for an attempt.
    Claim((String, String)),
    /// A delivery's claim ended.
    Release((String, String)),
}

/// The queues' in-memory side: exact in one process, since every change goes through the writer.
#[derive(Debug, Default)]
pub(super) struct Queues {
    /// Turns queued per route; read by other threads for depth and fast empty claims.
    pub(super) queued: Mutex<HashMap<String, usize>>,
}

impl Queues {
    pub(super) fn queued(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Plain counters: a panic mid-update cannot leave them unusable.
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a write sees: the connection inside the batch's transaction, and the queues as they will
/// be once the batch commits.
pub(super) struct Tx<'a> {
    pub(super) conn: &'a Connection,
    queues: &'a Queues,
    claimed: &'a HashSet<(String, String)>,
    pending: &'a mut Vec<Effect>,
}

impl Tx<'_> {
    /// Turns queued on `route`, counting this batch's writes so far.
    pub(super) fn queued(&self, route: &str) -> usize {
        let committed = self.queues.queued().get(route).copied().unwrap_or(0);
        self.pending.iter().fold(committed, |n, e| match e {
            Effect::Queued { route: r, up } if r == route => {
                if *up {
                    n + 1
                } else {
                    n.saturating_sub(1)
                }
            }
            _ => n,
        })
    }

    /// Whether a delivery is claimed, counting this batch's writes so far.
    pub(super) fn is_claimed(&self, key: &(String, String)) -> bool {
        let mut claimed = self.claimed.contains(key);
        for e in self.pending.iter() {
            match e {
                Effect::Claim(k) if k == key => claimed = true,
                Effect::Release(k) if k == key => claimed = false,
                _ => {}
            }
        }
        claimed
    }

    /// Deliveries claimed now, counting this batch's writes so far (an upper bound).
    pub(super) fn claimed_count(&self) -> usize {
        self.claimed.len()
            + self
                .pending
                .iter()
                .filter(|e| matches!(e, Effect::Claim(_)))
                .count()
    }

    /// Records an in-memory change to make if this write commits.
    pub(super) fn effect(&mut self, effect: Effect) {
        self.pending.push(effect);
    }
}

/// A write with the channel its answer goes back on, type-erased so one batch holds any kinds.
trait Job: Send {
    fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError>;
    fn answer(self: Box<Self>, result: Result<(), StoreError>);
}

struct Typed<W: Write> {
    write: W,
    output: Option<W::Output>,
    done: oneshot::Sender<Result<W::Output, StoreError>>,
}

impl<W: Write> Job for Typed<W> {
    fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        self.output = Some(self.write.apply(tx)?);
        Ok(())
    }

    fn answer(self: Box<Self>, result: Result<(), StoreError>) {
        let Typed { output, done, .. } = *self;
        let answer = result.and_then(|()| output.ok_or(StoreError::Closed));
        // The requester may have gone away (client hung up); the write stands regardless.
        let _ = done.send(answer);
    }
}

/// The sending side of the writer's queue.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Queues a write and waits until its batch has committed.
    pub(super) async fn write<W: Write>(&self, write: W) -> Result<W::Output, StoreError> {
        let (done, rx) = oneshot::channel();
        let job = Box::new(Typed {
            write,
            output: None,
            done,
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// When the checkpoint thread copies the WAL back into the database file, and when it also rewinds
/// the WAL.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkpoints {
    pub(super) every: Duration,
    /// WAL frames (pages) past which a checkpoint also rewinds the WAL.
    pub(super) restart_at_frames: i64,
}

/// Every 50 ms; rewind past 128 MiB of WAL (at 4 KiB pages). Frequent passive checkpoints leave
/// little for the RESTART to copy while the writer waits: under wrk on a 2M+ message database the
/// median p99 went from 8.1 ms (every 500 ms) to 3.4 ms, bare hyper's own. Each RESTART still
/// holds the acks behind it for 1–7 ms; past 32 MiB that was three times a second under load,
/// enough for the p99 to catch them, past 128 MiB it is four times rarer (BENCHMARKS.md). The
/// WAL only grows that long under sustained writes: when the writes pause, the passive
/// checkpoints catch up and the writer rewinds it by itself.
pub(super) const CHECKPOINTS: Checkpoints = Checkpoints {
    every: Duration::from_millis(50),
    restart_at_frames: 32768,
};

/// Starts the writer thread on `conn` and the checkpoint thread on `checkpointer`.
pub(super) fn start(
    conn: Connection,
    checkpointer: Connection,
    queues: Arc<Queues>,
    policy: Checkpoints,
    prealloc: Prealloc,
) -> std::io::Result<Writer> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let open = Arc::new(AtomicBool::new(true));
    let restart = Arc::new(AtomicBool::new(false));
    let (writer_open, restart_wanted) = (open.clone(), restart.clone());
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            writer_loop(conn, rx, &queues, &restart, prealloc);
            writer_open.store(false, Ordering::Relaxed);
        })?;
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || checkpoint_loop(checkpointer, &open, policy, &restart_wanted))?;
    Ok(Writer { jobs: tx })
}

/// Checkpoints the WAL beside the writer until the store closes.
///
/// A PASSIVE checkpoint never blocks the writer, but under steady writes it never catches up, and
/// SQLite rewinds the WAL only once everything in it is copied: so past a length the thread asks
/// the writer for a RESTART checkpoint between batches (BENCHMARKS.md has the measurements).
fn checkpoint_loop(conn: Connection, open: &AtomicBool, policy: Checkpoints, restart: &AtomicBool) {
    while open.load(Ordering::Relaxed) {
        std::thread::sleep(policy.every);
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames >= policy.restart_at_frames => {
                restart.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will try again"),
        }
    }
}

/// The RESTART checkpoint, run by the writer itself: from another connection it would poll for the
/// write lock and a busy writer would starve it.
fn restart_checkpoint(conn: &Connection) {
    let started = std::time::Instant::now();
    let result = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
    crate::metrics::get()
        .wal_restart_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(0) => {}
        Ok(_) => tracing::debug!("WAL restart checkpoint busy (a long read); will try again"),
        Err(e) => tracing::warn!(error = %e, "WAL restart checkpoint failed; will try again"),
    }
}

/// Drains the write channel in batches: one transaction, one fsync, many requests.
fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    queues: &Queues,
    restart: &AtomicBool,
    mut prealloc: Prealloc,
) {
    let mut claimed: HashSet<(String, String)> = HashSet::new();
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut effects = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = commit_batch(&conn, &mut batch, queues, &claimed, &mut effects);
        apply_effects(effects.drain(..), queues, &mut claimed);
        for (job, result) in batch.drain(..).zip(results) {
            job.answer(result);
        }
        // After the answers, so the acks just committed do not wait for them.
        if restart.swap(false, Ordering::Relaxed) {
            restart_checkpoint(&conn);
        }
        prealloc.after_commit(&conn);
    }
}

fn apply_effects(
    effects: impl Iterator<Item = Effect>,
    queues: &Queues,
    claimed: &mut HashSet<(String, String)>,
) {
    let mut queued = None;
    for e in effects {
        match e {
            Effect::Queued { route, up } => {
                let map = queued.get_or_insert_with(|| queues.queued());
                let n = map.entry(route).or_insert(0);
                *n = if up { *n + 1 } else { n.saturating_sub(1) };
            }
            Effect::Claim(key) => {
                claimed.insert(key);
            }
            Effect::Release(key) => {
                claimed.remove(&key);
            }
        }
    }
}

/// Commits a batch; returns each write's result. `effects` gets the effects of the writes that
/// committed.
fn commit_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    queues: &Queues,
    claimed: &HashSet<(String, String)>,
    effects: &mut Vec<Effect>,
) -> Vec<Result<(), StoreError>> {
    // Almost every batch applies cleanly, so try it without per-write savepoints (they cost as much
    // as a small insert); if any write fails, roll back and redo the batch isolating each write.
    effects.clear();
    let started = std::time::Instant::now();
    let m = crate::metrics::get();
    m.commit_batch.observe(batch.len() as f64);
    let first = apply_batch(conn, batch, queues, claimed, effects, false);
    let result = match first {
        Ok(results) => Ok(results),
        Err(_) => {
            effects.clear();
            apply_batch(conn, batch, queues, claimed, effects, true)
        }
    };
    m.commit_seconds.observe(started.elapsed().as_secs_f64());
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "store commit failed");
        effects.clear();
        batch.iter().map(|_| Err(e.clone())).collect()
    })
}

/// Applies a batch in one transaction. Without `isolate`, the first failing write aborts the whole
/// batch; with it, each write runs in a savepoint and fails alone.
///
/// Transaction control goes through cached statements: `Connection::transaction` would parse
/// `BEGIN`/`COMMIT` again for every batch.
fn apply_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    queues: &Queues,
    claimed: &HashSet<(String, String)>,
    effects: &mut Vec<Effect>,
    isolate: bool,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
        conn.prepare_cached(sql)?.execute([]).map(drop)
    }
    exec(conn, "BEGIN")?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        let mark = effects.len();
        let mut tx = Tx {
            conn,
            queues,
            claimed,
            pending: effects,
        };
        if isolate {
            exec(conn, "SAVEPOINT w")?;
            match job.apply(&mut tx) {
                Ok(()) => {
                    exec(conn, "RELEASE w")?;
                    results.push(Ok(()));
                }
                Err(e) => {
                    exec(conn, "ROLLBACK TO w")?;
                    exec(conn, "RELEASE w")?;
                    effects.truncate(mark);
                    results.push(Err(e));
                }
            }
        } else if let Err(e) = job.apply(&mut tx) {
            let _ = exec(conn, "ROLLBACK");
            return Err(e);
        } else {
            results.push(Ok(()));
        }
    }
    if let Err(e) = exec(conn, "COMMIT") {
        let _ = exec(conn, "ROLLBACK");
        return Err(e.into());
    }
    Ok(results)
}
