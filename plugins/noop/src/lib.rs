//! agent-inbox plugin that does nothing: every hook accepts at once. The baseline the plugin-call
//! benchmark measures the example plugins against (what the sandbox itself costs).

wit_bindgen::generate!({
    path: "../../wit",
    world: "plugin",
});

use agent_inbox::plugin::types::{Message, MessageVerdict, Reply, ReplyContext, ReplyVerdict};
use exports::agent_inbox::plugin::hooks::Guest;

struct Noop;

impl Guest for Noop {
    fn check_message(_message: Message, _config: String) -> MessageVerdict {
        MessageVerdict::Accept
    }

    fn render_turn(_message: Message, _reply: ReplyContext, _config: String) -> Option<String> {
        None
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

export!(Noop);
