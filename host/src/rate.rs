//! Rates in this process: how many messages each local agent has started in the current minute,
//! so a runaway agent is capped (`[agents.NAME] max_per_minute`; the keys are the configured
//! agents' names, so memory is bounded by the config), and at most one of something per key
//! and interval ([`Every`], for log lines and records a peer's traffic sets off; bounded).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the limit counts in.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Messages started per agent in its current window.
#[derive(Debug, Default)]
pub struct SendRate(Mutex<HashMap<String, (Instant, u32)>>);

impl SendRate {
    /// Counts one message of `agent` at `now` if it is under `max` in its window; otherwise how
    /// long until the window ends.
    pub fn take(&self, agent: &str, max: u32, now: Instant) -> Result<(), Duration> {
        // Plain counters: a panic mid-update cannot leave them unusable.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(agent.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= max {
            return Err(WINDOW.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Keys an [`Every`] remembers at most; past it the oldest half is forgotten (those keys may
/// then pass once more early).
const EVERY_KEYS: usize = 4096;

/// At most one event per key and interval.
#[derive(Debug, Default)]
pub struct Every(Mutex<HashMap<Vec<String>, Instant>>);

impl Every {
    /// Whether an event of `key` may happen at `now` (none did within `every`); records it if so.
    pub fn allow(&self, key: &[&str], every: Duration, now: Instant) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key: Vec<String> = key.iter().map(|k| (*k).to_owned()).collect();
        if map
            .get(&key)
            .is_some_and(|last| now.duration_since(*last) < every)
        {
            return false;
        }
        if map.len() >= EVERY_KEYS {
            let mut times: Vec<Instant> = map.values().copied().collect();
            times.sort();
            let cut = times[times.len() / 2];
            map.retain(|_, t| *t > cut);
        }
        map.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lets_one_event_per_key_and_interval_through() {
        let every = Every::default();
        let (t0, gap) = (Instant::now(), Duration::from_secs(10));
        assert!(every.allow(&["tony", "unknown_type"], gap, t0));
        assert!(!every.allow(&["tony", "unknown_type"], gap, t0 + Duration::from_secs(9)));
        assert!(
            every.allow(&["tony", "loop_detected"], gap, t0),
            "another code"
        );
        assert!(
            every.allow(&["mel", "unknown_type"], gap, t0),
            "another peer"
        );
        assert!(every.allow(&["tony", "unknown_type"], gap, t0 + gap));
        for n in 0..(EVERY_KEYS * 2) {
            every.allow(&[&n.to_string()], gap, t0);
        }
        assert!(every.0.lock().unwrap().len() <= EVERY_KEYS, "bounded");
    }

    #[test]
    fn a_window_caps_and_then_resets() {
        let rate = SendRate::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rate.take("a", 3, t0), Ok(()));
        }
        let wait = rate.take("a", 3, t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert_eq!(rate.take("b", 3, t0), Ok(()), "each agent has its own");
        assert_eq!(rate.take("a", 3, t0 + WINDOW), Ok(()), "a new window");
    }
}
