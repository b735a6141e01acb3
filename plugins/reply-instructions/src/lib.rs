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
         curl -s -X POST {url} \\\n    --retry 5 --retry-all-errors \\\n    -H {auth} \\\n    -H 'Content-Type: application/json' \\\n    \
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &str, in_reply_to: Option<&str>) -> Message {
        Message {
            id: "m-1".into(),
            route: "tasks".into(),
            sender: "tony".into(),
            msg_type: "TASK".into(),
            payload: payload.into(),
            thread_id: "t-1".into(),
            in_reply_to: in_reply_to.map(Into::into),
            hops: 0,
        }
    }

    fn context(types: &[&str]) -> ReplyContext {
        ReplyContext {
            url: "http://127.0.0.1:8700/send".into(),
            auth_header: "Authorization: Bearer rt_0123".into(),
            reply_types: types.iter().map(|t| t.to_string()).collect(),
            deadline: "2026-11-24T12:00:00Z".into(),
        }
    }

    #[test]
    fn render_turn_writes_the_whole_text() {
        let config = r#"{"preamble": "Be brief.\n", "examples": {"STATUS": {"state": "working"}}}"#;
        let text = ReplyInstructions::render_turn(
            message(r#"{"title":"docs"}"#, None),
            context(&["STATUS", "BREAKDOWN"]),
            config.into(),
        );
        let want = r#"Be brief.

Type: TASK
From: tony
Message id: m-1
Thread: t-1
Payload:
{
  "title": "docs"
}

Reply by POSTing JSON to 'http://127.0.0.1:8700/send', for example:

  curl -s -X POST 'http://127.0.0.1:8700/send' \
    --retry 5 --retry-all-errors \
    -H 'Authorization: Bearer rt_0123' \
    -H 'Content-Type: application/json' \
    --data-binary @body.json

where body.json is one of these, one per reply type:

STATUS:
{
  "payload": {
    "state": "working"
  },
  "type": "STATUS"
}

BREAKDOWN:
{
  "payload": {},
  "type": "BREAKDOWN"
}

Valid types: STATUS, BREAKDOWN. You may reply more than once; replies are accepted until 2026-11-24T12:00:00Z.
"#;
        assert_eq!(text.as_deref(), Some(want));
    }

    #[test]
    fn render_turn_without_reply_types_expects_no_reply() {
        let text = ReplyInstructions::render_turn(
            message("not json", Some("m-0")),
            context(&[]),
            "{}".into(),
        )
        .unwrap();
        assert!(
            text.contains("In reply to: m-0\nPayload:\nnot json\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\nNo reply is expected for this message.\n"),
            "{text}"
        );
        assert!(!text.contains("curl"), "{text}");
    }

    #[test]
    fn check_reply_picks_peers_per_type() {
        let config = r#"{"to_by_type": {"STATUS": ["tony", "not-allowed", 5]}}"#;
        let reply_to = vec!["tony".to_string(), "mel".to_string()];
        let verdict = |msg_type: &str| {
            let reply = Reply {
                msg_type: msg_type.into(),
                payload: "{}".into(),
            };
            let v = ReplyInstructions::check_reply(
                message("{}", None),
                reply,
                reply_to.clone(),
                config.into(),
            );
            format!("{v:?}")
        };
        let relay_to_tony = ReplyVerdict::Relay(Relay {
            rewrite: None,
            to: Some(vec!["tony".into()]),
        });
        assert_eq!(verdict("STATUS"), format!("{relay_to_tony:?}"));
        assert_eq!(verdict("BREAKDOWN"), format!("{:?}", ReplyVerdict::Accept));
    }

    #[test]
    fn shell_quote_survives_quotes_and_spaces() {
        for (raw, quoted) in [
            ("plain", "'plain'"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
        ] {
            assert_eq!(shell_quote(raw), quoted);
        }
    }

    #[test]
    fn a_broken_config_panics() {
        for config in ["not json", "[1]"] {
            let result = std::panic::catch_unwind(|| parse_config(config));
            assert!(result.is_err(), "{config}");
        }
    }
}
