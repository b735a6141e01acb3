//! agent-inbox test-only plugin: does, per message or reply, what its payload asks.
//!
//! `check-message`: a payload `{"do": "count"}` is rejected with how many calls this instance has
//! served (`call N`), `{"do": "slow-count"}` does the same after 300 ms, `{"do": "trap"}` traps, `{"do": "deepen", "levels": N}` is rewritten to a
//! payload nested N deep, anything else is accepted. So a test with
//! `warm_calls` can see whether a failed instance served the next call.
//!
//! `check-reply`: a reply payload `{"to": [...]}` is relayed to those peers (which may be outside
//! `reply_to`), `{"rewrite_type": T, "rewrite_payload": P}` is relayed as type T with payload P;
//! anything else is accepted. `render-turn` keeps the built-in text.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

use std::sync::atomic::{AtomicU32, Ordering};

use agent_inbox::plugin::types::{
    Message, MessageVerdict, Rejection, Relay, Reply, ReplyContext, ReplyVerdict, Rewrite,
};
use exports::agent_inbox::plugin::hooks::Guest;
use serde_json::Value;

/// Calls served by this instance.
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Shaper;

impl Guest for Shaper {
    fn check_message(message: Message, _config: String) -> MessageVerdict {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let payload: Value = serde_json::from_str(&message.payload).unwrap_or_default();
        match payload.get("do").and_then(Value::as_str) {
            Some("count") => MessageVerdict::Reject(Rejection {
                status: 400,
                reason: format!("call {calls}"),
            }),
            Some("trap") => trap(),
            // The same as `count`, after 300 ms parked in a host call: calls overlap.
            Some("slow-count") => {
                std::thread::sleep(std::time::Duration::from_millis(300));
                MessageVerdict::Reject(Rejection {
                    status: 400,
                    reason: format!("call {calls}"),
                })
            }
            // A rewrite nested `levels` deep, past any `max_json_depth` the host allows.
            Some("deepen") => {
                let n = payload["levels"].as_u64().unwrap_or(200) as usize;
                MessageVerdict::Rewrite(Rewrite {
                    msg_type: message.msg_type.clone(),
                    payload: format!("{}{}", "[".repeat(n), "]".repeat(n)),
                })
            }
            _ => MessageVerdict::Accept,
        }
    }

    fn render_turn(_message: Message, _reply: ReplyContext, _config: String) -> Option<String> {
        None
    }

    fn check_reply(
        _message: Message,
        reply: Reply,
        _reply_to: Vec<String>,
        _config: String,
    ) -> ReplyVerdict {
        let payload: Value = serde_json::from_str(&reply.payload).unwrap_or_default();
        if let Some(to) = payload.get("to").and_then(Value::as_array) {
            let to = to
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            return ReplyVerdict::Relay(Relay {
                rewrite: None,
                to: Some(to),
            });
        }
        if let Some(t) = payload.get("rewrite_type").and_then(Value::as_str) {
            return ReplyVerdict::Relay(Relay {
                rewrite: Some(Rewrite {
                    msg_type: t.to_owned(),
                    payload: payload["rewrite_payload"].to_string(),
                }),
                to: None,
            });
        }
        ReplyVerdict::Accept
    }
}

export!(Shaper);

/// Executes wasm `unreachable`.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}
