//! agent-inbox plugin that writes the text an agent receives: a preamble from `plugin_config`, the
//! message, the curl command to reply with and one example body per reply type; it can also relay
//! each reply type to only some peers.
//!
//! Config: `{"preamble": "...", "examples": {"STATUS": {"state": "working"}},
//! "to_by_type": {"STATUS": ["tony"]}}`; every key is optional.

wit_bindgen::generate!({
    path: "../../wit",
    world: "plugin",
});

use agent_inbox::plugin::types::{
    Message, MessageVerdict, Relay, Reply, ReplyContext, ReplyVerdict,
};
use exports::agent_inbox::plugin::hooks::Guest;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

struct ReplyInstructions;

impl Guest for ReplyInstructions {
    fn check_message(_message: Message, _config: String) -> MessageVerdict {
        MessageVerdict::Accept
    }

    fn render_turn(message: Message, reply: ReplyContext, config: String) -> Option<String> {
        Some(render(&message, &reply, &parse_config(&config)))
    }

    fn check_reply(
        _message: Message,
        reply: Reply,
        reply_to: Vec<String>,
        config: String,
    ) -> ReplyVerdict {
        let config = parse_config(&config);
        let Some(Value::Object(to_by_type)) = config.get("to_by_type") else {
            return ReplyVerdict::Accept;
        };
        let Some(Value::Array(peers)) = to_by_type.get(&reply.msg_type) else {
            return ReplyVerdict::Accept;
        };
        // Only peers the route allows: naming another would make the host refuse the whole reply.
        let to = peers
            .iter()
            .filter_map(Value::as_str)
            .filter(|peer| reply_to.iter().any(|allowed| allowed == peer))
            .map(str::to_owned)
            .collect();
        ReplyVerdict::Relay(Relay {
            rewrite: None,
            to: Some(to),
        })
    }
}

export!(ReplyInstructions);

/// Parses `plugin_config`; a broken one panics so the host reports the operator's mistake.
fn parse_config(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(config)) => config,
        Ok(_) => panic!("reply-instructions: plugin_config must be a JSON object"),
        Err(e) => panic!("reply-instructions: plugin_config is not valid JSON: {e}"),
    }
}

/// The whole turn text.
fn render(message: &Message, reply: &ReplyContext, config: &Map<String, Value>) -> String {
    let mut text = String::new();
    if let Some(preamble) = config.get("preamble").and_then(Value::as_str) {
        text.push_str(preamble.trim_end());
        text.push_str("\n\n");
    }
    let payload = serde_json::from_str::<Value>(&message.payload)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| message.payload.clone());
    let _ = write!(
        text,
        "Type: {}\nFrom: {}\nMessage id: {}\nThread: {}\n",
        message.msg_type, message.sender, message.id, message.thread_id
    );
    if let Some(in_reply_to) = &message.in_reply_to {
        let _ = writeln!(text, "In reply to: {in_reply_to}");
    }
    let _ = writeln!(text, "Payload:\n{payload}");
    if reply.reply_types.is_empty() {
        text.push_str("\nNo reply is expected for this message.\n");
        return text;
    }
    let examples = match config.get("examples") {
        Some(Value::Object(examples)) => Some(examples),
        _ => None,
    };
    let _ = write!(
        text,
        "\nReply by POSTing JSON to {url}, for example:\n\n  \
         curl -s -X POST {url} \\\n    -H {auth} \\\n    -H 'Content-Type: application/json' \\\n    \
         --data-binary @body.json\n\nwhere body.json is one of these, one per reply type:\n",
        url = shell_quote(&reply.url),
        auth = shell_quote(&reply.auth_header),
    );
    for msg_type in &reply.reply_types {
        let payload = examples
            .and_then(|e| e.get(msg_type))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let body = json!({"type": msg_type, "payload": payload});
        let _ = write!(text, "\n{msg_type}:\n{}\n", pretty(&body));
    }
    let _ = write!(
        text,
        "\nValid types: {}. You may reply more than once; replies are accepted until {}.\n",
        reply.reply_types.join(", "),
        reply.deadline
    );
    text
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Quotes `s` for a POSIX shell so a URL or header with spaces survives copy and paste.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
