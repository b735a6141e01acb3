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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_keeps_the_built_in_behaviour() {
        let message = || Message {
            id: "m-1".into(),
            route: "tasks".into(),
            sender: "tony".into(),
            msg_type: "TASK".into(),
            payload: "{}".into(),
            thread_id: "t-1".into(),
            in_reply_to: None,
            hops: 0,
        };
        let verdict = Noop::check_message(message(), "{}".into());
        assert!(matches!(verdict, MessageVerdict::Accept));
        let context = ReplyContext {
            url: "http://127.0.0.1:8700/send".into(),
            auth_header: "Authorization: Bearer rt_0123".into(),
            reply_types: vec!["STATUS".into()],
            deadline: "2026-11-24T12:00:00Z".into(),
        };
        assert!(Noop::render_turn(message(), context, "{}".into()).is_none());
        let reply = Reply {
            msg_type: "STATUS".into(),
            payload: "{}".into(),
        };
        let verdict = Noop::check_reply(message(), reply, vec![], "{}".into());
        assert!(matches!(verdict, ReplyVerdict::Accept));
    }
}
