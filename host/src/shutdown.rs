//! Shutdown: the drain flag every front door checks, and the stop signal background loops wait on.
//!
//! Two phases: `begin_drain` (new messages get 503 while running turns finish and `/send` stays
//! open), then `stop` (the relay, pruning and reload loops end).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The process's shutdown state; share it in an `Arc`.
#[derive(Debug)]
pub struct Shutdown {
    draining: AtomicBool,
    stop: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// Running, not draining.
    pub fn new() -> Self {
        Self {
            draining: AtomicBool::new(false),
            stop: watch::Sender::new(false),
        }
    }

    /// Stops taking new messages and starting turns.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Tells every background loop to end.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A receiver that turns true when [`Shutdown::stop`] is called.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}
