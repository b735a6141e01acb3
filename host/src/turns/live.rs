//! A running turn's output, live: what its agent writes to stdout and stderr, published as
//! `turn_output` events for the admin's views. Bounded in rate (one event per stream every half
//! second at most) and in size (the newest 2,000 bytes of each, cut further until the event's
//! JSON is under 6,000 bytes), so a flooding agent costs the feed little and an event crosses
//! PostgreSQL's NOTIFY (8,000 bytes) between hosts. The agent's reader only appends to a
//! bounded buffer here: it never waits on the feed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent_process::{LiveTap, Stream};
use crate::events::{Event, Events};

/// How often a turn's output goes out, at most.
const EVERY: Duration = Duration::from_millis(500);
/// Bytes of each stream kept between two events (the newest).
const KEEP: usize = 2_000;
/// The largest JSON text of an event's `text`.
const MAX_JSON: usize = 6_000;

#[derive(Default)]
struct Pending {
    /// Per stream: the newest bytes, and how many older ones were dropped.
    buf: [(Vec<u8>, u64); 2],
}

/// The output of one running turn, until it is dropped (then what is left goes out).
pub(super) struct Live {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Live {
    /// Starts publishing `message_id`'s output (one task per running turn, bounded as turns
    /// are); the tap goes into the agent's invocation.
    pub(super) fn start(
        events: Events,
        message_id: String,
        route: String,
        thread_id: String,
    ) -> (Live, LiveTap) {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let into = pending.clone();
        let tap = LiveTap(Arc::new(move |stream: Stream, chunk: &[u8]| {
            let mut p = into.lock().unwrap_or_else(|e| e.into_inner());
            let [out, err] = &mut p.buf;
            let (buf, skipped) = match stream {
                Stream::Stdout => out,
                Stream::Stderr => err,
            };
            buf.extend_from_slice(chunk);
            if buf.len() > KEEP {
                let excess = buf.len() - KEEP;
                buf.drain(..excess);
                *skipped += excess as u64;
            }
        }));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let from = pending.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stopped => true,
                };
                let taken = std::mem::take(&mut *from.lock().unwrap_or_else(|e| e.into_inner()));
                for (stream, (bytes, skipped)) in
                    [Stream::Stdout, Stream::Stderr].into_iter().zip(taken.buf)
                {
                    if bytes.is_empty() {
                        continue;
                    }
                    let (text, cut) = bounded_text(&bytes);
                    events.publish(Event::TurnOutput {
                        message_id: message_id.clone(),
                        route: route.clone(),
                        thread_id: Some(thread_id.clone()),
                        stream: stream.as_str().to_owned(),
                        text,
                        skipped: skipped + cut,
                    });
                }
                if last {
                    return;
                }
            }
        });
        (Live { stop: Some(stop) }, tap)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // The task sends what is left, then ends.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The newest bytes as text whose JSON fits [`MAX_JSON`], and how many bytes were cut for it.
fn bounded_text(bytes: &[u8]) -> (String, u64) {
    let mut start = 0;
    loop {
        let rest = bytes.get(start..).unwrap_or_default();
        // Lines stay lines; every other control character is escaped.
        let text = String::from_utf8_lossy(rest)
            .split('\n')
            .map(|l| crate::model::escape_controls(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        let json_len = serde_json::to_string(&text).map_or(usize::MAX, |j| j.len());
        if json_len <= MAX_JSON || start >= bytes.len() {
            return (text, start as u64);
        }
        start += (bytes.len() - start).div_ceil(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_text_fits_a_notify_whatever_the_agent_wrote() {
        for bytes in [
            vec![b'a'; KEEP],
            vec![0x1b; KEEP],
            "é\u{2028}\"\\".repeat(400).into_bytes(),
            vec![0xff; KEEP],
            b"line one\nline two\r\n".repeat(100),
        ] {
            let (text, cut) = bounded_text(&bytes);
            let json = serde_json::to_string(&text).unwrap();
            assert!(json.len() <= MAX_JSON, "{} bytes of JSON", json.len());
            assert!(cut < bytes.len() as u64);
            assert!(!text.contains('\u{1b}'), "controls are escaped");
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{text:?}"
            );
        }
    }
}
