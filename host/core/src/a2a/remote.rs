//! The inbox as an A2A client, pure: the `SendMessage` it sends a remote agent, how it reads the
//! remote's answers (a task, a direct message, a stream event, an error), and what an artifact
//! becomes in the inbox (a typed payload). Lenient in what it reads: a remote may answer in
//! ProtoJSON (v1.0's `TASK_STATE_COMPLETED`, `{"task": ...}`) or in the 0.3 spellings
//! (`completed`, a bare task with `"kind": "task"`), and unknown fields are ignored.

use serde_json::{Map, Value, json};

use super::json::TaskState;
use crate::model::valid_type_name;

/// JSON-RPC's `TaskNotFoundError`.
pub const TASK_NOT_FOUND: i64 = -32001;
/// `TaskNotCancelableError`.
pub const TASK_NOT_CANCELABLE: i64 = -32002;
/// `UnsupportedOperationError` (OpenClaw answers it for streaming, push and cancel).
pub const UNSUPPORTED_OPERATION: i64 = -32004;

/// Where a remote task stands, as the remote said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteState {
    /// One of the states the inbox itself knows.
    Known(TaskState),
    /// `TASK_STATE_AUTH_REQUIRED`: the remote wants credentials the inbox cannot give.
    AuthRequired,
    /// Anything else (`TASK_STATE_UNSPECIFIED`, a future state): treated as still going.
    Other(String),
}

impl RemoteState {
    /// Reads a state in either spelling (`TASK_STATE_INPUT_REQUIRED`, `input-required`).
    pub fn parse(s: &str) -> RemoteState {
        let norm = s
            .trim()
            .trim_start_matches("TASK_STATE_")
            .to_ascii_lowercase()
            .replace('-', "_");
        let known = match norm.as_str() {
            "submitted" => TaskState::Submitted,
            "working" => TaskState::Working,
            "completed" => TaskState::Completed,
            "failed" => TaskState::Failed,
            "canceled" | "cancelled" => TaskState::Canceled,
            "input_required" => TaskState::InputRequired,
            "rejected" => TaskState::Rejected,
            "auth_required" => return RemoteState::AuthRequired,
            _ => return RemoteState::Other(s.chars().take(64).collect()),
        };
        RemoteState::Known(known)
    }

    /// The proto name, as stored and shown.
    pub fn as_str(&self) -> &str {
        match self {
            RemoteState::Known(t) => t.as_str(),
            RemoteState::AuthRequired => "TASK_STATE_AUTH_REQUIRED",
            RemoteState::Other(s) => s,
        }
    }

    /// Nothing more will happen to it.
    pub fn is_terminal(&self) -> bool {
        matches!(self, RemoteState::Known(t) if t.is_terminal())
    }

    /// The remote waits for the inbox (a question, or credentials): the exchange rests here.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            RemoteState::Known(TaskState::InputRequired) | RemoteState::AuthRequired
        )
    }
}

/// An artifact as the remote sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteArtifact {
    pub artifact_id: String,
    pub name: Option<String>,
    /// Its parts, as JSON.
    pub parts: Vec<Value>,
}

/// A remote task as one answer showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteTask {
    pub id: String,
    pub context_id: String,
    pub state: RemoteState,
    /// The status message's parts (the question, the failure's words), if any.
    pub status_parts: Vec<Value>,
    /// The status message's `messageId`: a server may send the same reply as an artifact and as
    /// the status message (an inbox's own door does), with one id for both.
    pub status_message_id: Option<String>,
    /// The artifacts it lists (whole, as a `Task` holds them).
    pub artifacts: Vec<RemoteArtifact>,
}

impl RemoteTask {
    /// The status message's text, trimmed to `max` characters ("" when it has none).
    pub fn status_text(&self, max: usize) -> String {
        text_of(&self.status_parts).chars().take(max).collect()
    }
}

/// One event of a stream (`SendStreamingMessage`, `SubscribeToTask`).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The task as it stands.
    Task(RemoteTask),
    /// Its status changed.
    Status {
        state: RemoteState,
        status_parts: Vec<Value>,
    },
    /// (A chunk of) an artifact.
    Artifact {
        artifact: RemoteArtifact,
        /// Adds to the parts sent so far under its id, rather than replacing them.
        append: bool,
        /// The artifact is whole after this chunk.
        last_chunk: bool,
    },
}

/// What a JSON-RPC answer held.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `result`.
    Result(Value),
    /// `error`: its code and message.
    Error { code: i64, message: String },
}

/// Reads a JSON-RPC response object.
pub fn parse_answer(v: &Value) -> Result<Answer, String> {
    let Some(obj) = v.as_object() else {
        return Err("the answer is not a JSON object".into());
    };
    if let Some(e) = obj.get("error").filter(|e| !e.is_null()) {
        let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(500)
            .collect();
        return Ok(Answer::Error { code, message });
    }
    match obj.get("result") {
        Some(r) => Ok(Answer::Result(r.clone())),
        None => Err("the answer has neither result nor error".into()),
    }
}

/// Whether an error asks the caller to slow down. OpenClaw answers `-32000 "Peer is rate
/// limited"` under HTTP 200; other servers say "rate limit" or "too many requests".
pub fn is_rate_limited(code: i64, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (-32099..=-32000).contains(&code)
        && (m.contains("rate limit") || m.contains("rate-limit") || m.contains("too many"))
}

/// The `SendMessage` params for one message to a remote agent: a text part (what a person or a
/// text-only agent reads) and a data part `{type, payload}` (what an inbox or a program reads),
/// continuing `task_id`/`context_id` where given; `skill` goes in the message's metadata.
pub fn send_params(m: &Outgoing<'_>) -> Value {
    let mut message = Map::new();
    message.insert("messageId".into(), m.message_id.into());
    message.insert("role".into(), "ROLE_USER".into());
    message.insert(
        "parts".into(),
        json!([
            {"text": m.text, "mediaType": "text/plain"},
            {"data": {"type": m.msg_type, "payload": m.payload}, "mediaType": "application/json"},
        ]),
    );
    if let Some(c) = m.context_id {
        message.insert("contextId".into(), c.into());
    }
    if let Some(t) = m.task_id {
        message.insert("taskId".into(), t.into());
    }
    if let Some(s) = m.skill {
        message.insert("metadata".into(), json!({ "skill": s }));
    }
    json!({
        "message": message,
        "configuration": { "returnImmediately": m.return_immediately },
    })
}

/// One message to a remote agent.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Stable across retries of one send, so a remote that saw it answers with its task.
    pub message_id: &'a str,
    pub text: &'a str,
    pub msg_type: &'a str,
    pub payload: &'a Value,
    pub task_id: Option<&'a str>,
    pub context_id: Option<&'a str>,
    pub skill: Option<&'a str>,
    /// Answer once the task exists (the inbox follows it), instead of when it ends.
    pub return_immediately: bool,
}

/// The text a message's payload gives a reader of text: a string payload, or a payload's `text`
/// field, else the payload as JSON.
pub fn text_for(payload: &Value) -> String {
    match payload {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.get("text").is_some_and(Value::is_string) => {
            m["text"].as_str().unwrap_or_default().to_owned()
        }
        other => other.to_string(),
    }
}

/// A `SendMessage` result: a task (`{"task": ...}`, or a bare task), or a message the agent
/// answered with directly, read as a completed task with that message as its one artifact.
pub fn parse_send_result(result: &Value) -> Result<RemoteTask, String> {
    if let Some(t) = result.get("task") {
        return parse_task(t);
    }
    if let Some(m) = result.get("message") {
        return Ok(direct(m));
    }
    if result.get("kind").and_then(Value::as_str) == Some("message") {
        return Ok(direct(result));
    }
    parse_task(result)
}

/// A message the remote answered with, instead of a task.
fn direct(m: &Value) -> RemoteTask {
    let id = str_field(m, &["messageId", "message_id"]).unwrap_or_default();
    RemoteTask {
        id: str_field(m, &["taskId", "task_id"]).unwrap_or_default(),
        context_id: str_field(m, &["contextId", "context_id"]).unwrap_or_default(),
        state: RemoteState::Known(TaskState::Completed),
        status_parts: Vec::new(),
        status_message_id: None,
        artifacts: vec![RemoteArtifact {
            artifact_id: if id.is_empty() { "message".into() } else { id },
            name: None,
            parts: parts(m),
        }],
    }
}

/// A `Task` object.
pub fn parse_task(t: &Value) -> Result<RemoteTask, String> {
    let Some(id) = str_field(t, &["id"]).filter(|s| !s.is_empty()) else {
        return Err("the task has no id".into());
    };
    let status = t.get("status").unwrap_or(&Value::Null);
    let Some(state) = str_field(status, &["state"]) else {
        return Err(format!("task {id} has no status.state"));
    };
    let artifacts = t
        .get("artifacts")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(artifact).collect())
        .unwrap_or_default();
    Ok(RemoteTask {
        context_id: str_field(t, &["contextId", "context_id"]).unwrap_or_default(),
        id,
        state: RemoteState::parse(&state),
        status_parts: status.get("message").map(parts).unwrap_or_default(),
        status_message_id: status
            .get("message")
            .and_then(|m| str_field(m, &["messageId", "message_id"])),
        artifacts,
    })
}

/// One stream event (`StreamResponse`: `task`, `statusUpdate`, `artifactUpdate` or `message`;
/// 0.3's `kind` spellings too).
pub fn parse_stream_event(v: &Value) -> Result<StreamEvent, String> {
    let kind = v.get("kind").and_then(Value::as_str);
    if let Some(t) = v.get("task") {
        return parse_task(t).map(StreamEvent::Task);
    }
    if let Some(m) = v.get("message") {
        return Ok(StreamEvent::Task(direct(m)));
    }
    let status = v
        .get("statusUpdate")
        .or_else(|| v.get("status_update"))
        .or_else(|| (kind == Some("status-update")).then_some(v));
    if let Some(s) = status {
        let st = s.get("status").unwrap_or(&Value::Null);
        let Some(state) = str_field(st, &["state"]) else {
            return Err("a status update without status.state".into());
        };
        return Ok(StreamEvent::Status {
            state: RemoteState::parse(&state),
            status_parts: st.get("message").map(parts).unwrap_or_default(),
        });
    }
    let update = v
        .get("artifactUpdate")
        .or_else(|| v.get("artifact_update"))
        .or_else(|| (kind == Some("artifact-update")).then_some(v));
    if let Some(a) = update {
        let Some(artifact) = a.get("artifact").and_then(artifact) else {
            return Err("an artifact update without an artifact id".into());
        };
        let flag = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| a.get(*n).and_then(Value::as_bool))
                .unwrap_or(false)
        };
        return Ok(StreamEvent::Artifact {
            artifact,
            append: flag(&["append"]),
            last_chunk: flag(&["lastChunk", "last_chunk"]),
        });
    }
    if kind == Some("task") || v.get("status").is_some() {
        return parse_task(v).map(StreamEvent::Task);
    }
    Err("a stream event of no kind the inbox knows".into())
}

fn artifact(a: &Value) -> Option<RemoteArtifact> {
    let id = str_field(a, &["artifactId", "artifact_id"]).filter(|s| !s.is_empty())?;
    Some(RemoteArtifact {
        artifact_id: id,
        name: str_field(a, &["name"]),
        parts: parts(a),
    })
}

fn parts(v: &Value) -> Vec<Value> {
    v.get("parts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn str_field(v: &Value, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| v.get(*n).and_then(Value::as_str))
        .map(str::to_owned)
}

/// The text parts, joined by blank lines.
pub fn text_of(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// What parts become in the inbox: the `{type, payload}` of a data part that has that shape (what
/// an inbox's own A2A door emits), else `default_type` with `{"text", "parts"}` as the payload.
/// The payload is JSON text, as the inbox stores it.
pub fn typed(parts: &[Value], default_type: &str) -> (String, String) {
    for p in parts {
        let Some(d) = p.get("data").and_then(Value::as_object) else {
            continue;
        };
        if let (Some(t), Some(payload)) = (d.get("type").and_then(Value::as_str), d.get("payload"))
            && valid_type_name(t)
        {
            return (t.to_owned(), payload.to_string());
        }
    }
    let payload = json!({ "text": text_of(parts), "parts": parts });
    (default_type.to_owned(), payload.to_string())
}

/// Collects artifact chunks by id until each is whole.
#[derive(Debug, Default)]
pub struct Chunks(Vec<RemoteArtifact>);

impl Chunks {
    /// Adds a chunk; the artifact, whole, when this was its last chunk.
    pub fn add(
        &mut self,
        chunk: RemoteArtifact,
        append: bool,
        last_chunk: bool,
    ) -> Option<RemoteArtifact> {
        let at = self
            .0
            .iter()
            .position(|a| a.artifact_id == chunk.artifact_id);
        match (at, append) {
            (Some(i), true) => {
                self.0[i].parts.extend(chunk.parts);
                if chunk.name.is_some() {
                    self.0[i].name = chunk.name;
                }
            }
            (Some(i), false) => self.0[i] = chunk,
            (None, _) => self.0.push(chunk),
        }
        if !last_chunk {
            return None;
        }
        let i = at.unwrap_or(self.0.len() - 1);
        Some(self.0.remove(i))
    }

    /// The artifacts still waiting for their last chunk, in the order they began.
    pub fn rest(&mut self) -> Vec<RemoteArtifact> {
        std::mem::take(&mut self.0)
    }
}

/// What a card says of its agent, each text capped (a card is the remote's words: data for a
/// person or an agent to read, kept short).
pub fn card_about(card: &Value) -> crate::model::CardAbout {
    let text = |v: &Value, max: usize| -> String {
        let s = v.as_str().unwrap_or_default();
        let s: String = s.chars().take(max).collect();
        crate::model::escape_controls(&s).into_owned()
    };
    crate::model::CardAbout {
        name: text(&card["name"], 100),
        description: text(&card["description"], 500),
        skills: card["skills"]
            .as_array()
            .into_iter()
            .flatten()
            .take(20)
            .map(|k| crate::model::SkillAbout {
                id: text(&k["id"], 100),
                name: text(&k["name"], 100),
                description: text(&k["description"], 300),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_in_both_spellings() {
        assert_eq!(
            RemoteState::parse("TASK_STATE_INPUT_REQUIRED"),
            RemoteState::Known(TaskState::InputRequired)
        );
        assert_eq!(
            RemoteState::parse("input-required"),
            RemoteState::Known(TaskState::InputRequired)
        );
        assert_eq!(
            RemoteState::parse("completed"),
            RemoteState::Known(TaskState::Completed)
        );
        assert!(RemoteState::parse("TASK_STATE_REJECTED").is_terminal());
        assert!(RemoteState::parse("auth-required").is_interrupted());
        assert_eq!(
            RemoteState::parse("TASK_STATE_UNSPECIFIED"),
            RemoteState::Other("TASK_STATE_UNSPECIFIED".into())
        );
        assert!(!RemoteState::parse("whatever").is_terminal());
    }

    #[test]
    fn a_send_carries_text_and_a_typed_data_part() {
        let payload = json!({"text": "hi", "n": 1});
        let p = send_params(&Outgoing {
            message_id: "m-1.1",
            text: &text_for(&payload),
            msg_type: "ASK",
            payload: &payload,
            task_id: Some("t-9"),
            context_id: Some("c-1"),
            skill: Some("echo"),
            return_immediately: true,
        });
        let m = &p["message"];
        assert_eq!(m["messageId"], "m-1.1");
        assert_eq!(m["role"], "ROLE_USER");
        assert_eq!(m["parts"][0]["text"], "hi");
        assert_eq!(
            m["parts"][1]["data"],
            json!({"type": "ASK", "payload": payload})
        );
        assert_eq!(m["taskId"], "t-9");
        assert_eq!(m["contextId"], "c-1");
        assert_eq!(m["metadata"]["skill"], "echo");
        assert_eq!(p["configuration"]["returnImmediately"], true);
        let bare = send_params(&Outgoing {
            task_id: None,
            context_id: None,
            skill: None,
            ..Outgoing {
                message_id: "m",
                text: "t",
                msg_type: "T",
                payload: &Value::Null,
                task_id: None,
                context_id: None,
                skill: None,
                return_immediately: false,
            }
        });
        assert!(bare["message"].get("taskId").is_none());
        assert!(bare["message"].get("metadata").is_none());
    }

    #[test]
    fn tasks_messages_and_errors_read_in_both_versions() {
        let v1 = json!({"task": {"id": "t", "contextId": "c",
            "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"artifactId": "a1", "parts": [{"text": "hello"}]}, {"parts": []}]}});
        let t = parse_send_result(&v1).unwrap();
        assert_eq!((t.id.as_str(), t.context_id.as_str()), ("t", "c"));
        assert!(t.state.is_terminal());
        assert_eq!(t.artifacts.len(), 1, "an artifact without an id is dropped");
        let v03 = json!({"kind": "task", "id": "t", "context_id": "c",
            "status": {"state": "input-required", "message": {"parts": [{"kind": "text", "text": "Which?"}]}}});
        let t = parse_send_result(&v03).unwrap();
        assert!(t.state.is_interrupted());
        assert_eq!(t.status_text(100), "Which?");
        let m = json!({"message": {"messageId": "m9", "contextId": "c", "parts": [{"text": "direct"}]}});
        let t = parse_send_result(&m).unwrap();
        assert_eq!(t.state, RemoteState::Known(TaskState::Completed));
        assert_eq!(t.artifacts[0].artifact_id, "m9");
        assert!(parse_send_result(&json!({"task": {"status": {}}})).is_err());
        assert!(parse_task(&json!({"id": "t", "status": {}})).is_err());
        assert_eq!(
            parse_answer(&json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "Peer is rate limited"}})).unwrap(),
            Answer::Error { code: -32000, message: "Peer is rate limited".into() }
        );
        assert!(is_rate_limited(-32000, "Peer is rate limited"));
        assert!(!is_rate_limited(-32001, "Task not found"));
        assert!(!is_rate_limited(-32000, "internal"));
        assert!(parse_answer(&json!([1])).is_err());
        assert!(parse_answer(&json!({"id": 1})).is_err());
    }

    #[test]
    fn stream_events_of_every_kind() {
        let s = parse_stream_event(
            &json!({"statusUpdate": {"taskId": "t", "status": {"state": "TASK_STATE_WORKING"}}}),
        )
        .unwrap();
        assert_eq!(
            s,
            StreamEvent::Status {
                state: RemoteState::Known(TaskState::Working),
                status_parts: vec![]
            }
        );
        let a = parse_stream_event(&json!({"artifactUpdate": {"artifact": {"artifactId": "a", "parts": [{"text": "x"}]}, "append": true, "lastChunk": true}})).unwrap();
        assert!(matches!(
            a,
            StreamEvent::Artifact {
                append: true,
                last_chunk: true,
                ..
            }
        ));
        let old = parse_stream_event(&json!({"kind": "artifact-update", "artifact": {"artifactId": "a", "parts": []}, "last_chunk": true})).unwrap();
        assert!(matches!(
            old,
            StreamEvent::Artifact {
                last_chunk: true,
                ..
            }
        ));
        assert!(matches!(
            parse_stream_event(&json!({"task": {"id": "t", "status": {"state": "submitted"}}}))
                .unwrap(),
            StreamEvent::Task(_)
        ));
        assert!(parse_stream_event(&json!({"other": 1})).is_err());
    }

    #[test]
    fn an_artifact_is_typed_by_its_data_part_else_by_default() {
        let ours = vec![
            json!({"text": "4"}),
            json!({"data": {"type": "ANSWER", "payload": {"text": "4"}}}),
        ];
        assert_eq!(
            typed(&ours, "REPLY"),
            ("ANSWER".into(), r#"{"text":"4"}"#.into())
        );
        let plain = vec![json!({"text": "a"}), json!({"text": "b"})];
        let (t, p) = typed(&plain, "REPLY");
        assert_eq!(t, "REPLY");
        let p: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(p["text"], "a\n\nb");
        assert_eq!(p["parts"], json!(plain));
        // A data part whose type is no type name is content, not a type.
        let odd = vec![json!({"data": {"type": "no spaces allowed", "payload": 1}})];
        assert_eq!(typed(&odd, "REPLY").0, "REPLY");
    }

    #[test]
    fn chunks_make_whole_artifacts() {
        let chunk = |id: &str, t: &str| RemoteArtifact {
            artifact_id: id.into(),
            name: None,
            parts: vec![json!({"text": t})],
        };
        let mut c = Chunks::default();
        assert_eq!(c.add(chunk("a", "1"), false, false), None);
        assert_eq!(c.add(chunk("b", "x"), false, false), None);
        let a = c.add(chunk("a", "2"), true, true).unwrap();
        assert_eq!(a.parts, vec![json!({"text": "1"}), json!({"text": "2"})]);
        // A chunk that replaces what came before.
        assert_eq!(c.add(chunk("b", "y"), false, false), None);
        assert_eq!(c.rest(), vec![chunk("b", "y")]);
        assert_eq!(
            c.add(chunk("c", "whole"), false, true),
            Some(chunk("c", "whole"))
        );
    }
}
