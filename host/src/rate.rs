//! How many messages each local agent has started in the current minute, so a runaway agent is
//! capped (`[agents.NAME] max_per_minute`). One fixed window per agent, in this process; the keys
//! are the configured agents' names, so memory is bounded by the config.

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

#[cfg(test)]
mod tests {
    use super::*;

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
