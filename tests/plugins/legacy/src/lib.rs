//! agent-inbox test-only plugin built against `wit/v0.1/plugin.wit` (0.1.0, before `hold`), as a
//! plugin written before 0.2.0 was: the host must still load and call it.
//!
//! `check-message` rejects a payload that contains `refuse` (status 422, "refused by a 0.1.0
//! plugin"), accepts anything else; `render-turn` writes `written by a 0.1.0 plugin` and the reply
//! curl's URL; `check-reply` accepts.

wit_bindgen::generate!({
    path: "../../../wit/v0.1",
    world: "plugin",
});

use agent_inbox::plugin::types::{
    Message, MessageVerdict, Rejection, Reply, ReplyContext, ReplyVerdict,
};
use exports::agent_inbox::plugin::hooks::Guest;

struct Legacy;

impl Guest for Legacy {
    fn check_message(message: Message, _config: String) -> MessageVerdict {
        if message.payload.contains("refuse") {
            return MessageVerdict::Reject(Rejection {
                status: 422,
                reason: "refused by a 0.1.0 plugin".into(),
            });
        }
        MessageVerdict::Accept
    }

    fn render_turn(message: Message, reply: ReplyContext, _config: String) -> Option<String> {
        Some(format!(
            "written by a 0.1.0 plugin\n{}\nreply with: curl -X POST {} -H '{}'\n",
            message.payload, reply.url, reply.auth_header
        ))
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

export!(Legacy);
