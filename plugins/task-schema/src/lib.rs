//! agent-inbox plugin that checks a message's payload against a small schema from `plugin_config`
//! and can send it to another route by one of its fields.
//!
//! Config: `{"required": {"title": "string"}, "max_len": {"title": 200}, "defaults": {"priority": 3},
//! "route_by": "label", "routes": {"frontend": "frontend-tasks"}, "hold_when": {"priority": 1},
//! "hold_words": ["delete", "credentials"]}`; every key is optional. Fields missing from the payload
//! are filled in from `defaults` (a rewrite) before it is checked. A message that passes and has a
//! `hold_when` field at its value, or a `hold_words` word anywhere in its payload (any case), is
//! held for a person to approve before its agent runs (`hold`, WIT 0.2.0).

wit_bindgen::generate!({
    path: "../../wit",
    world: "plugin",
});

use agent_inbox::plugin::types::{
    Message, MessageVerdict, Rejection, Reply, ReplyContext, ReplyVerdict, Reroute, Rewrite,
};
use exports::agent_inbox::plugin::hooks::Guest;
use serde_json::{Map, Value};

/// Status for every refusal: the payload is well-formed JSON but not what the route takes.
const UNPROCESSABLE: u16 = 422;

struct TaskSchema;

impl Guest for TaskSchema {
    fn check_message(message: Message, config: String) -> MessageVerdict {
        let config = parse_config(&config);
        let mut payload = match serde_json::from_str::<Value>(&message.payload) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return reject("payload must be a JSON object".into()),
            Err(e) => return reject(format!("payload is not valid JSON: {e}")),
        };
        let mut filled = false;
        if let Some(defaults) = config_object(&config, "defaults") {
            for (field, value) in defaults {
                if !payload.contains_key(field) {
                    payload.insert(field.clone(), value.clone());
                    filled = true;
                }
            }
        }
        let problems = check_payload(&payload, &config);
        if !problems.is_empty() {
            return reject(problems.join("; "));
        }
        if let Some(why) = hold_reason(&payload, &config) {
            // A hold keeps the route; the defaults it would have filled in are left out.
            return MessageVerdict::Hold(why);
        }
        let route = route_for(&payload, &config);
        let rewrite = filled.then(|| Rewrite {
            msg_type: message.msg_type.clone(),
            payload: Value::Object(payload).to_string(),
        });
        match (route, rewrite) {
            (Some(route), rewrite) => MessageVerdict::RouteTo(Reroute { route, rewrite }),
            (None, Some(rewrite)) => MessageVerdict::Rewrite(rewrite),
            (None, None) => MessageVerdict::Accept,
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
        match serde_json::from_str::<Value>(&reply.payload) {
            Ok(Value::Object(_)) => ReplyVerdict::Accept,
            Ok(_) | Err(_) => ReplyVerdict::Reject(Rejection {
                status: UNPROCESSABLE,
                reason: format!("{} reply payload must be a JSON object", reply.msg_type),
            }),
        }
    }
}

export!(TaskSchema);

fn reject(reason: String) -> MessageVerdict {
    MessageVerdict::Reject(Rejection {
        status: UNPROCESSABLE,
        reason,
    })
}

/// Parses `plugin_config`. A broken config is the operator's mistake, not the sender's, so it
/// panics: the host then reports the plugin as failed, with this message, instead of blaming
/// every sender with a 422.
fn parse_config(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(config)) => config,
        Ok(_) => panic!("task-schema: plugin_config must be a JSON object"),
        Err(e) => panic!("task-schema: plugin_config is not valid JSON: {e}"),
    }
}

/// Reads an optional object-valued key of the config.
fn config_object<'a>(config: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    match config.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => panic!("task-schema: plugin_config.{key} must be an object"),
    }
}

/// Every way the payload breaks the schema, each naming its field.
fn check_payload(payload: &Map<String, Value>, config: &Map<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(required) = config_object(config, "required") {
        for (field, kind) in required {
            let kind = match kind {
                Value::String(kind) if TYPES.contains(&kind.as_str()) => kind.as_str(),
                other => panic!(
                    "task-schema: plugin_config.required.{field}: unknown type {other}, \
                     expected one of {TYPES:?}"
                ),
            };
            match payload.get(field) {
                None => problems.push(format!("missing required field `{field}` ({kind})")),
                Some(value) if !has_type(value, kind) => problems.push(format!(
                    "field `{field}` must be {}, got {}",
                    with_article(kind),
                    with_article(type_name(value))
                )),
                Some(_) => {}
            }
        }
    }
    if let Some(max_len) = config_object(config, "max_len") {
        for (field, limit) in max_len {
            let Some(limit) = limit.as_u64() else {
                panic!("task-schema: plugin_config.max_len.{field} must be a whole number");
            };
            let len = match payload.get(field) {
                Some(Value::String(s)) => s.chars().count(),
                Some(Value::Array(items)) => items.len(),
                _ => continue,
            };
            if len as u64 > limit {
                problems.push(format!(
                    "field `{field}` is too long: {len} characters, at most {limit} allowed"
                ));
            }
        }
    }
    problems
}

/// Why a person should look at this payload first, if the config says so: a `hold_when` field at
/// its value, or a `hold_words` word in the payload's text.
fn hold_reason(payload: &Map<String, Value>, config: &Map<String, Value>) -> Option<String> {
    if let Some(when) = config_object(config, "hold_when") {
        for (field, value) in when {
            if payload.get(field) == Some(value) {
                return Some(format!("field `{field}` is {value}"));
            }
        }
    }
    let words = match config.get("hold_words") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(words)) => words,
        Some(_) => panic!("task-schema: plugin_config.hold_words must be a list of words"),
    };
    let text = Value::Object(payload.clone()).to_string().to_lowercase();
    words.iter().find_map(|w| {
        let Value::String(w) = w else {
            panic!("task-schema: plugin_config.hold_words must be a list of words");
        };
        text.contains(&w.to_lowercase())
            .then(|| format!("the payload mentions {w:?}"))
    })
}

/// Type names the config may use.
const TYPES: [&str; 8] = [
    "string", "number", "integer", "boolean", "object", "array", "null", "any",
];

/// Whether `value` is of the JSON type named in the config (one of [`TYPES`]).
fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    }
}

/// The JSON type of `value`, in the words the config uses.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn with_article(kind: &str) -> String {
    match kind {
        "null" => "null".into(),
        "any" => "anything".into(),
        k if k.starts_with(['a', 'e', 'i', 'o', 'u']) => format!("an {k}"),
        k => format!("a {k}"),
    }
}

/// The route named by the payload's `route_by` field, if the config maps its value to one.
fn route_for(payload: &Map<String, Value>, config: &Map<String, Value>) -> Option<String> {
    let field = match config.get("route_by") {
        None | Some(Value::Null) => return None,
        Some(Value::String(field)) => field,
        Some(_) => panic!("task-schema: plugin_config.route_by must be a field name"),
    };
    let key = match payload.get(field)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    match config_object(config, "routes")?.get(&key)? {
        Value::String(route) => Some(route.clone()),
        _ => panic!("task-schema: plugin_config.routes.{key} must be a route name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &str) -> Message {
        Message {
            id: "m-1".into(),
            route: "tasks".into(),
            sender: "tony".into(),
            msg_type: "TASK".into(),
            payload: payload.into(),
            thread_id: "t-1".into(),
            in_reply_to: None,
            hops: 0,
        }
    }

    const CONFIG: &str = r#"{"required": {"title": "string", "n": "integer"},
        "max_len": {"title": 5}, "defaults": {"n": 3},
        "route_by": "label", "routes": {"frontend": "frontend-tasks"}}"#;

    fn rejected(reason: &str) -> MessageVerdict {
        MessageVerdict::Reject(Rejection {
            status: UNPROCESSABLE,
            reason: reason.into(),
        })
    }

    #[test]
    fn check_message() {
        let filled = |payload: &str| {
            Some(Rewrite {
                msg_type: "TASK".into(),
                payload: payload.into(),
            })
        };
        let cases = [
            (r#"{"title": "fix", "n": 1}"#, MessageVerdict::Accept),
            (
                r#"{"title": "fix"}"#,
                MessageVerdict::Rewrite(filled(r#"{"n":3,"title":"fix"}"#).unwrap()),
            ),
            (
                r#"{"title": "css", "n": 1, "label": "frontend"}"#,
                MessageVerdict::RouteTo(Reroute {
                    route: "frontend-tasks".into(),
                    rewrite: None,
                }),
            ),
            (
                r#"{"title": "css", "label": "frontend"}"#,
                MessageVerdict::RouteTo(Reroute {
                    route: "frontend-tasks".into(),
                    rewrite: filled(r#"{"label":"frontend","n":3,"title":"css"}"#),
                }),
            ),
            (
                r#"{"title": "css", "n": 1, "label": "backend"}"#,
                MessageVerdict::Accept,
            ),
            (
                r#"{"n": 1}"#,
                rejected("missing required field `title` (string)"),
            ),
            (
                r#"{"title": 5, "n": 1.5}"#,
                rejected(
                    "field `n` must be an integer, got a number; field `title` must be a string, got a number",
                ),
            ),
            (
                r#"{"title": "too long", "n": 1}"#,
                rejected("field `title` is too long: 8 characters, at most 5 allowed"),
            ),
            ("[1]", rejected("payload must be a JSON object")),
            (
                "{",
                rejected(
                    "payload is not valid JSON: EOF while parsing an object at line 1 column 1",
                ),
            ),
        ];
        for (payload, want) in cases {
            let got = TaskSchema::check_message(message(payload), CONFIG.into());
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{payload}");
        }
    }

    #[test]
    fn an_empty_config_accepts_any_object() {
        let got = TaskSchema::check_message(message(r#"{"x": [1]}"#), "{}".into());
        assert!(matches!(got, MessageVerdict::Accept), "{got:?}");
    }

    #[test]
    fn a_broken_config_panics_instead_of_blaming_the_sender() {
        for config in [
            "not json",
            "[]",
            r#"{"required": {"title": "text"}}"#,
            r#"{"max_len": {"title": -1}}"#,
        ] {
            let result = std::panic::catch_unwind(|| {
                TaskSchema::check_message(message(r#"{"title": "x"}"#), config.into())
            });
            assert!(result.is_err(), "{config}");
        }
    }

    #[test]
    fn check_reply_wants_an_object() {
        let reply = |payload: &str| Reply {
            msg_type: "STATUS".into(),
            payload: payload.into(),
        };
        let ok = TaskSchema::check_reply(message("{}"), reply("{}"), vec![], "{}".into());
        assert!(matches!(ok, ReplyVerdict::Accept), "{ok:?}");
        let bad = TaskSchema::check_reply(message("{}"), reply("[]"), vec![], "{}".into());
        assert!(
            matches!(&bad, ReplyVerdict::Reject(r) if r.reason == "STATUS reply payload must be a JSON object"),
            "{bad:?}"
        );
    }

    #[test]
    fn type_names_take_an_article() {
        for (kind, want) in [
            ("string", "a string"),
            ("integer", "an integer"),
            ("object", "an object"),
            ("null", "null"),
            ("any", "anything"),
        ] {
            assert_eq!(with_article(kind), want);
        }
    }
}
