//! A task as A2A shows it, computed from what the store holds: its state follows from its latest
//! turn and that turn's replies, its artifacts are the agent's replies, its history the client's
//! messages and the agent's replies. Pure: no I/O, no clock.
//!
//! The rule, in order:
//! 1. a task whose first message a plugin refused is `REJECTED`, with the plugin's reason;
//! 2. a cancelled task is `CANCELED`;
//! 3. otherwise its latest message's turn decides: queued → `SUBMITTED`, running → `WORKING`,
//!    done → `COMPLETED`, unless that turn's last reply has one of the route's
//!    `input_required_types` (→ `INPUT_REQUIRED`, the reply as the status message); failed, timed
//!    out or interrupted for good → `FAILED`, the error as the status message; cancelled →
//!    `CANCELED`.

use serde_json::Value;

use super::json::{AgentMessage, Artifact, Part, Task, TaskState, TaskStatus};
use crate::config::Route;
use crate::model::{Outbound, TaskRecord, TurnState};

/// The task in full (every artifact, the whole history), and when its status last changed (ms).
pub fn view(record: &TaskRecord, route: Option<&Route>) -> (Task, i64) {
    let t = &record.task;
    let asks = |o: &Outbound| {
        route
            .and_then(|r| r.a2a.as_ref())
            .is_some_and(|a| a.input_required_types.contains(&o.msg_type))
    };
    let agent_text = |text: String| AgentMessage {
        message_id: format!("{}-status", t.id),
        context_id: t.context_id.clone(),
        task_id: t.id.clone(),
        role: "ROLE_AGENT",
        parts: vec![to_value(Part::text(text))],
    };
    let latest = record
        .inputs
        .iter()
        .rev()
        .find_map(|i| i.message_id.as_deref());
    let turn = latest.and_then(|id| record.turns.iter().find(|(m, _)| m == id).map(|(_, t)| t));
    let (state, message, at) = if let Some(reason) = &t.rejected {
        (
            TaskState::Rejected,
            Some(agent_text(reason.clone())),
            t.created_at,
        )
    } else if let Some(at) = t.canceled_at {
        (TaskState::Canceled, None, at)
    } else if let Some(turn) = turn {
        let ended = turn.ended_at.unwrap_or(turn.queued_at);
        match turn.state {
            // Waiting for a person is waiting to start, as far as the client can tell.
            TurnState::Queued | TurnState::AwaitingApproval => {
                (TaskState::Submitted, None, turn.queued_at)
            }
            TurnState::Rejected => (
                TaskState::Rejected,
                Some(agent_text(turn.error.as_ref().map_or_else(
                    || "rejected by the operator".to_owned(),
                    |e| e.detail.clone(),
                ))),
                ended,
            ),
            TurnState::Running => (
                TaskState::Working,
                None,
                turn.started_at.unwrap_or(turn.queued_at),
            ),
            // The agent answered, but a person has yet to let the answer out.
            TurnState::Done if record.held => (TaskState::Working, None, ended),
            TurnState::Done => {
                let last = record
                    .replies
                    .iter()
                    .rev()
                    .find(|o| o.in_reply_to.as_deref() == latest && !is_notice(o));
                match last {
                    Some(q) if asks(q) => {
                        (TaskState::InputRequired, Some(agent_message(t, q)), ended)
                    }
                    // The last reply is the answer, so the status carries it too.
                    last => (
                        TaskState::Completed,
                        last.map(|o| agent_message(t, o)),
                        ended,
                    ),
                }
            }
            TurnState::Canceled => (TaskState::Canceled, None, ended),
            TurnState::Failed | TurnState::TimedOut | TurnState::Interrupted => {
                let why = turn
                    .error
                    .as_ref()
                    .map_or_else(|| turn.state.to_string(), ToString::to_string);
                (
                    TaskState::Failed,
                    Some(agent_text(format!(
                        "the agent's turn ended {}: {why}",
                        turn.state
                    ))),
                    ended,
                )
            }
        }
    } else {
        // An input whose message is gone (pruned) or not yet visible: say it is submitted.
        (TaskState::Submitted, None, t.created_at)
    };
    let replies: Vec<&Outbound> = record.replies.iter().filter(|o| !is_notice(o)).collect();
    let artifacts = replies
        .iter()
        .map(|o| Artifact {
            artifact_id: o.id.clone(),
            name: o.msg_type.clone(),
            parts: parts_of(o),
        })
        .collect();
    let mut history: Vec<(i64, Value)> = record
        .inputs
        .iter()
        .map(|i| {
            let mut m: Value = serde_json::from_str(&i.body).unwrap_or(Value::Null);
            if let Some(obj) = m.as_object_mut() {
                obj.insert("taskId".into(), Value::String(t.id.clone()));
                obj.insert("contextId".into(), Value::String(t.context_id.clone()));
                obj.insert("role".into(), Value::String("ROLE_USER".into()));
            }
            (i.at, m)
        })
        .collect();
    history.extend(replies.iter().map(|o| {
        let m = serde_json::to_value(agent_message(t, o)).unwrap_or(Value::Null);
        (o.created_at, m)
    }));
    // Stable: an input and a reply in the same millisecond keep input-first order.
    history.sort_by_key(|(at, _)| *at);
    let task = Task {
        id: t.id.clone(),
        context_id: t.context_id.clone(),
        status: TaskStatus {
            state,
            message,
            timestamp: timestamp(at),
        },
        artifacts: Some(artifacts),
        history: Some(history.into_iter().map(|(_, m)| m).collect()),
        metadata: Some(serde_json::json!({ "skill": route
            .and_then(|r| r.a2a.as_ref())
            .map_or(t.route.as_str(), |a| a.skill.as_str()) })),
    };
    (task, at)
}

/// A failure notice the inbox itself queued: not one of the agent's replies.
fn is_notice(o: &Outbound) -> bool {
    o.msg_type == "TURN_FAILED"
}

/// A reply as a message from the agent.
fn agent_message(t: &crate::model::Task, o: &Outbound) -> AgentMessage {
    AgentMessage {
        message_id: o.id.clone(),
        context_id: t.context_id.clone(),
        task_id: t.id.clone(),
        role: "ROLE_AGENT",
        parts: parts_of(o),
    }
}

/// A reply's parts. A payload `{"parts": [...]}` of A2A parts (each with one of `text`, `raw`,
/// `url`, `data`) gives exactly those: an agent shapes its own artifact (a file, say). Any other
/// payload gives `{type, payload}` as data, and its text (a string payload, or a payload's `text`
/// field) as a text part first, for clients that only show text.
fn parts_of(o: &Outbound) -> Vec<Value> {
    let payload: Value = serde_json::from_str(&o.payload).unwrap_or(Value::Null);
    if let Some(parts) = own_parts(&payload) {
        return parts;
    }
    let text = match &payload {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("text").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let mut parts = Vec::with_capacity(2);
    if let Some(text) = text {
        parts.push(to_value(Part::text(text)));
    }
    parts.push(to_value(Part::data(
        serde_json::json!({ "type": o.msg_type, "payload": payload }),
    )));
    parts
}

fn to_value(p: Part) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

/// The parts of a payload `{"parts": [...]}` whose every part is an A2A part, kept to the part's
/// own fields.
fn own_parts(payload: &Value) -> Option<Vec<Value>> {
    let obj = payload.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let parts = obj.get("parts")?.as_array()?;
    if parts.is_empty() {
        return None;
    }
    const CONTENT: [&str; 4] = ["text", "raw", "url", "data"];
    const OTHER: [&str; 3] = ["mediaType", "filename", "metadata"];
    parts
        .iter()
        .map(|p| {
            let p = p.as_object()?;
            let content = CONTENT.iter().filter(|k| p.contains_key(**k)).count();
            let known = p
                .keys()
                .all(|k| CONTENT.contains(&k.as_str()) || OTHER.contains(&k.as_str()));
            let strings = ["text", "raw", "url", "mediaType", "filename"]
                .iter()
                .all(|k| p.get(*k).is_none_or(Value::is_string));
            (content == 1 && known && strings).then(|| Value::Object(p.clone()))
        })
        .collect()
}

/// Milliseconds since the epoch as ISO 8601 UTC with milliseconds (`2025-10-28T10:30:00.000Z`).
pub fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Keeps the last `n` history entries; `Some(0)` drops the field.
pub fn limit_history(task: &mut Task, n: Option<u32>) {
    match n {
        None => {}
        Some(0) => task.history = None,
        Some(n) => {
            if let Some(h) = &mut task.history {
                let skip = h.len().saturating_sub(n as usize);
                h.drain(..skip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Task as StoredTask, TaskInput, Turn, TurnError};

    fn record(turn: Option<TurnState>, replies: &[&str]) -> TaskRecord {
        let task = StoredTask {
            id: "t1".into(),
            owner: "p".into(),
            context_id: "c1".into(),
            route: "ask".into(),
            created_at: 1_000,
            rejected: None,
            canceled_at: None,
        };
        TaskRecord {
            held: false,
            task,
            inputs: vec![TaskInput {
                task_id: "t1".into(),
                message_id: Some("m1".into()),
                client_message_id: "cm1".into(),
                body: r#"{"messageId":"cm1","parts":[{"text":"hi"}]}"#.into(),
                at: 1_000,
            }],
            turns: turn
                .map(|state| {
                    (
                        "m1".to_owned(),
                        Turn {
                            state,
                            attempts: 1,
                            exit_code: None,
                            signal: None,
                            error: (state == TurnState::Failed)
                                .then(|| TurnError::new("exit", "exit code 3")),
                            duration_ms: None,
                            stdout_tail: None,
                            stderr_tail: None,
                            queued_at: 1_000,
                            started_at: Some(2_000),
                            ended_at: state.is_final().then_some(3_000),
                            canceled: None,
                        },
                    )
                })
                .into_iter()
                .collect(),
            replies: replies
                .iter()
                .enumerate()
                .map(|(i, ty)| Outbound {
                    id: format!("r{i}"),
                    in_reply_to: Some("m1".into()),
                    route: Some("ask".into()),
                    msg_type: (*ty).into(),
                    payload: r#"{"text":"why?"}"#.into(),
                    thread_id: "c1".into(),
                    hops: 1,
                    created_at: 2_500 + i as i64,
                    agent: None,
                })
                .collect(),
        }
    }

    fn route() -> Route {
        let config = crate::config::Config::parse(
            r#"
            [peers.p]
            a2a_token = "tok-p"
            [routes.ask]
            from = ["p"]
            reply_types = ["ANSWER", "QUESTION"]
            agent = { command = ["true"] }
            a2a = { type = "ASK", input_required_types = ["QUESTION"] }
            "#,
            std::path::Path::new("."),
            |_| None,
        )
        .expect("config");
        config.routes["ask"].clone()
    }

    #[test]
    fn the_state_follows_the_latest_turn() {
        let r = route();
        let state = |rec: &TaskRecord| view(rec, Some(&r)).0.status.state;
        assert_eq!(
            state(&record(Some(TurnState::Queued), &[])),
            TaskState::Submitted
        );
        assert_eq!(
            state(&record(Some(TurnState::Running), &[])),
            TaskState::Working
        );
        assert_eq!(
            state(&record(Some(TurnState::Done), &["ANSWER"])),
            TaskState::Completed
        );
        assert_eq!(
            state(&record(Some(TurnState::Done), &["ANSWER", "QUESTION"])),
            TaskState::InputRequired
        );
        assert_eq!(
            state(&record(Some(TurnState::Done), &["QUESTION", "ANSWER"])),
            TaskState::Completed,
            "only the turn's last reply asks"
        );
        assert_eq!(
            state(&record(Some(TurnState::Failed), &[])),
            TaskState::Failed
        );
        assert_eq!(
            state(&record(Some(TurnState::TimedOut), &[])),
            TaskState::Failed
        );
        assert_eq!(
            state(&record(Some(TurnState::Canceled), &[])),
            TaskState::Canceled
        );
        let mut rejected = record(None, &[]);
        rejected.task.rejected = Some("no".into());
        assert_eq!(state(&rejected), TaskState::Rejected);
        let mut canceled = record(Some(TurnState::Done), &["QUESTION"]);
        canceled.task.canceled_at = Some(4_000);
        assert_eq!(state(&canceled), TaskState::Canceled);
    }

    #[test]
    fn replies_become_artifacts_and_history() {
        let r = route();
        let (task, at) = view(&record(Some(TurnState::Done), &["ANSWER"]), Some(&r));
        assert_eq!(at, 3_000);
        assert_eq!(task.status.timestamp, "1970-01-01T00:00:03.000Z");
        let artifacts = task.artifacts.expect("artifacts");
        assert_eq!(artifacts.len(), 1);
        assert_eq!(artifacts[0].parts[0]["text"], "why?");
        assert_eq!(
            artifacts[0].parts[1]["data"],
            serde_json::json!({"type": "ANSWER", "payload": {"text": "why?"}})
        );
        assert_eq!(
            task.status.message.map(|m| m.message_id),
            Some("r0".to_owned()),
            "a completed task's status carries the answer"
        );
        let history = task.history.expect("history");
        assert_eq!(history.len(), 2);
        assert_eq!(history[0]["role"], "ROLE_USER");
        assert_eq!(history[0]["taskId"], "t1");
        assert_eq!(history[1]["role"], "ROLE_AGENT");
    }

    #[test]
    fn an_agent_may_give_its_own_parts() {
        let own = serde_json::json!({"parts": [
            {"raw": "dGNr", "filename": "output.txt", "mediaType": "text/plain"},
            {"text": "done"}
        ]});
        assert_eq!(own_parts(&own).map(|p| p.len()), Some(2));
        for not_parts in [
            serde_json::json!({"parts": [{"text": "a", "data": {}}]}),
            serde_json::json!({"parts": [{"text": 7}]}),
            serde_json::json!({"parts": [{"text": "a", "kind": "text"}]}),
            serde_json::json!({"parts": [], }),
            serde_json::json!({"parts": [{"text": "a"}], "other": 1}),
        ] {
            assert_eq!(own_parts(&not_parts), None, "{not_parts}");
        }
    }

    #[test]
    fn a_failure_says_why() {
        let r = route();
        let failed = view(&record(Some(TurnState::Failed), &[]), Some(&r)).0;
        let why = failed.status.message.expect("a failure says why");
        assert!(
            why.parts[0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("exit code 3")),
            "{why:?}"
        );
    }
}
