//! agent-inbox test plugin that misbehaves on purpose so the engine's tests can check that a bad
//! plugin is stopped and contained.
//!
//! `plugin_config.mode` picks what `check-message` does: `loop` (spin forever), `oom` (allocate
//! until memory runs out), `sleep` (block in a WASI sleep for 10 s), `trap` (execute
//! `unreachable`), `panic`, `bad-json` (rewrite to a payload that is not JSON), `log` (write to the
//! host log, stdout and stderr, then accept), `flood` (print far more than the host keeps, on stdout
//! and stderr, then accept), `probe` (reject with what it could see: a file, a directory, the environment,
//! its arguments), `count` (reject with how many calls this instance has served) or anything else
//! (accept at once). `plugin_config.render` likewise makes `render-turn` `panic` or `loop`; the
//! reply hook behaves.

wit_bindgen::generate!({
    path: "../../wit",
    world: "plugin",
});

use agent_inbox::plugin::host::{Level, log};
use agent_inbox::plugin::types::{
    Message, MessageVerdict, Rejection, Reply, ReplyContext, ReplyVerdict, Rewrite,
};
use exports::agent_inbox::plugin::hooks::Guest;
use std::sync::atomic::{AtomicU32, Ordering};

/// Calls served by this instance, to tell a reused (warm) instance from a fresh one.
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Hostile;

impl Guest for Hostile {
    fn check_message(message: Message, config: String) -> MessageVerdict {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        match config.get("mode").and_then(|m| m.as_str()).unwrap_or("") {
            "loop" => {
                let mut n = 0u64;
                loop {
                    // black_box keeps the loop from being folded away.
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used, 1 MiB at a time.
                    hoard.push(vec![0xA5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "sleep" => {
                // Parks in a host call (a WASI poll), where no epoch check ever runs.
                std::thread::sleep(std::time::Duration::from_secs(10));
                MessageVerdict::Accept
            }
            "trap" => trap(),
            "panic" => panic!("hostile plugin panicked on purpose: {}", message.id),
            "bad-json" => MessageVerdict::Rewrite(Rewrite {
                msg_type: message.msg_type,
                payload: "{not json".into(),
            }),
            "log" => {
                log(
                    Level::Warn,
                    "hostile says hello",
                    &[("message".into(), message.id.clone())],
                );
                println!("hostile stdout line");
                eprintln!("hostile stderr line");
                MessageVerdict::Accept
            }
            "flood" => {
                for i in 0..100_000 {
                    println!("flood line {i} ........................................");
                    eprintln!("flood err line {i} ....................................");
                }
                MessageVerdict::Accept
            }
            // What the sandbox lets it see: rejected with a summary the test reads.
            "probe" => {
                let file = match std::fs::read("/etc/hostname") {
                    Ok(_) => "read",
                    Err(_) => "denied",
                };
                let dir = match std::fs::read_dir("/") {
                    Ok(_) => "listed",
                    Err(_) => "denied",
                };
                MessageVerdict::Reject(Rejection {
                    status: 400,
                    reason: format!(
                        "file={file} dir={dir} env={} args={}",
                        std::env::vars().count(),
                        std::env::args().count()
                    ),
                })
            }
            "count" => MessageVerdict::Reject(Rejection {
                status: 400,
                reason: format!("call {calls}"),
            }),
            _ => MessageVerdict::Accept,
        }
    }

    /// `plugin_config.render` picks what `render-turn` does: `panic`, `loop`, or the default text.
    fn render_turn(message: Message, _reply: ReplyContext, config: String) -> Option<String> {
        let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        match config.get("render").and_then(|m| m.as_str()).unwrap_or("") {
            "panic" => panic!("hostile render-turn panicked on purpose: {}", message.id),
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            _ => None,
        }
    }

    fn check_reply(
        _message: Message,
        _reply: Reply,
        _reply_to: Vec<String>,
        _config: String,
    ) -> ReplyVerdict {
        ReplyVerdict::Accept
    }
}

export!(Hostile);

/// Executes wasm `unreachable`: a trap with no panic message in front of it.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    // Native builds (the crate as a member of the host's workspace) only need to compile.
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// The modes that return (or panic) can run natively; `loop`, `oom`, `sleep` and `trap` are the
/// engine's to stop, and `log` needs the host's import: the integration tests cover those.
#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: &str) -> MessageVerdict {
        let message = Message {
            id: "m-1".into(),
            route: "tasks".into(),
            sender: "tony".into(),
            msg_type: "TASK".into(),
            payload: "{}".into(),
            thread_id: "t-1".into(),
            in_reply_to: None,
            hops: 0,
        };
        Hostile::check_message(message, format!(r#"{{"mode": "{mode}"}}"#))
    }

    #[test]
    fn modes_that_return() {
        assert!(matches!(check(""), MessageVerdict::Accept));
        assert!(matches!(check("unknown"), MessageVerdict::Accept));
        assert!(
            matches!(check("bad-json"), MessageVerdict::Rewrite(r) if r.payload == "{not json")
        );
        // `count` reports how many calls this instance served (tests running beside this one
        // call too), so it goes up with every call.
        let count = |v: MessageVerdict| match v {
            MessageVerdict::Reject(r) => r.reason["call ".len()..].parse::<u32>().unwrap(),
            other => panic!("{other:?}"),
        };
        let first = count(check("count"));
        assert!(count(check("count")) > first);
    }

    #[test]
    fn panic_panics() {
        let result = std::panic::catch_unwind(|| check("panic"));
        assert!(result.is_err());
    }
}
