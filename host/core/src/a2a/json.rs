//! A2A v1.0's JSON (ProtoJSON: camelCase fields, enums by their proto names): the requests the
//! inbox reads, the objects it answers with, and JSON-RPC 2.0's envelope and errors.
//!
//! Unknown request fields are ignored, as the spec asks (§5.7); a field of the wrong type is
//! `InvalidParams`. Request fields are also read in proto's snake_case (ProtoJSON parsers accept
//! both spellings, and some clients send it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `TaskState`, by its proto name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Accepted and queued.
    Submitted,
    /// The agent is running.
    Working,
    /// The agent finished.
    Completed,
    /// The agent failed, timed out, or the host stopped under it for good.
    Failed,
    /// The client cancelled it.
    Canceled,
    /// The agent asked the client a question.
    InputRequired,
    /// A plugin refused its message.
    Rejected,
}

impl TaskState {
    /// Every state, in the proto's order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Submitted,
        TaskState::Working,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Canceled,
        TaskState::InputRequired,
        TaskState::Rejected,
    ];

    /// The proto name, the only spelling clients accept.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Submitted => "TASK_STATE_SUBMITTED",
            TaskState::Working => "TASK_STATE_WORKING",
            TaskState::Completed => "TASK_STATE_COMPLETED",
            TaskState::Failed => "TASK_STATE_FAILED",
            TaskState::Canceled => "TASK_STATE_CANCELED",
            TaskState::InputRequired => "TASK_STATE_INPUT_REQUIRED",
            TaskState::Rejected => "TASK_STATE_REJECTED",
        }
    }

    /// Nothing more will happen to the task.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Canceled | TaskState::Rejected
        )
    }

    /// The task waits for the client.
    pub fn is_interrupted(self) -> bool {
        self == TaskState::InputRequired
    }
}

impl Serialize for TaskState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A `Part` as the inbox writes it: text or data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Text content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Structured content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl Part {
    /// A text part.
    pub fn text(t: impl Into<String>) -> Self {
        Self {
            text: Some(t.into()),
            data: None,
            media_type: Some("text/plain".into()),
        }
    }

    /// A data part.
    pub fn data(v: Value) -> Self {
        Self {
            text: None,
            data: Some(v),
            media_type: Some("application/json".into()),
        }
    }
}

/// A `Message` the inbox writes (the agent's side); the client's own are echoed as they came.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentMessage {
    pub message_id: String,
    /// The task's context.
    pub context_id: String,
    pub task_id: String,
    /// Always `ROLE_AGENT`.
    pub role: &'static str,
    /// What it says (A2A parts, as JSON).
    pub parts: Vec<Value>,
}

/// `TaskStatus`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub state: TaskState,
    /// Why, when there is something to say (the question, the failure, the refusal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<AgentMessage>,
    /// When the task entered this state (ISO 8601, UTC, milliseconds).
    pub timestamp: String,
}

/// `Artifact`: one reply of the agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// The reply's id.
    pub artifact_id: String,
    /// The reply's type.
    pub name: String,
    /// A data part `{type, payload}`, and a text part when the payload has text; or the parts
    /// the agent gave.
    pub parts: Vec<Value>,
}

/// `Task`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    /// Its context (the inbox thread).
    pub context_id: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// The agent's replies; omitted where the caller did not ask for them (ListTasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Vec<Artifact>>,
    /// The messages exchanged, oldest first; omitted for `historyLength: 0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Value>>,
    /// The skill (route) that took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `TaskStatusUpdateEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    pub task_id: String,
    pub context_id: String,
    /// Its new status.
    pub status: TaskStatus,
}

/// `TaskArtifactUpdateEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactUpdate {
    pub task_id: String,
    pub context_id: String,
    /// The new artifact, whole.
    pub artifact: Artifact,
    /// Never appended to: each reply is an artifact of its own.
    pub append: bool,
    /// Each artifact comes in one piece.
    pub last_chunk: bool,
}

/// `StreamResponse`: one of its fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamResponse {
    /// The task as it stands.
    Task(Task),
    /// Its status changed.
    StatusUpdate(StatusUpdate),
    /// A reply arrived.
    ArtifactUpdate(ArtifactUpdate),
}

/// `ListTasksResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksResponse {
    /// This page.
    pub tasks: Vec<Task>,
    /// The next page's token; empty on the last page.
    pub next_page_token: String,
    /// The page size used.
    pub page_size: u32,
    /// Tasks matching the filter, over all pages.
    pub total_size: u32,
}

/// `SendMessageResponse` with a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendMessageResponse {
    pub task: Task,
}

/// A `Part` as a client sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPart {
    pub text: Option<String>,
    /// Bytes, base64.
    pub raw: Option<String>,
    /// A link to content.
    pub url: Option<String>,
    /// Any JSON.
    pub data: Option<Value>,
    #[serde(alias = "media_type")]
    pub media_type: Option<String>,
    /// A file name.
    pub filename: Option<String>,
}

/// A `Message` as a client sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InMessage {
    /// The client's id for it.
    #[serde(alias = "message_id")]
    pub message_id: String,
    /// The context it continues.
    #[serde(alias = "context_id")]
    pub context_id: Option<String>,
    /// The task it continues.
    #[serde(alias = "task_id")]
    pub task_id: Option<String>,
    /// `ROLE_USER`.
    pub role: Option<String>,
    /// What it says.
    #[serde(default)]
    pub parts: Vec<InPart>,
    /// Anything else; `skill` names the route.
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// `SendMessageConfiguration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendConfiguration {
    /// Answer as soon as the task is durably accepted.
    #[serde(default)]
    #[serde(alias = "return_immediately")]
    pub return_immediately: bool,
    /// How much history the answer carries.
    #[serde(alias = "history_length")]
    pub history_length: Option<i64>,
    /// A push config to create with the task.
    #[serde(alias = "task_push_notification_config")]
    pub task_push_notification_config: Option<Value>,
    /// Output modes the client takes.
    #[serde(alias = "accepted_output_modes")]
    pub accepted_output_modes: Option<Vec<String>>,
}

/// `SendMessageRequest`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendParams {
    pub message: InMessage,
    /// How to answer.
    #[serde(default)]
    pub configuration: SendConfiguration,
    /// Request metadata (`skill` may be given here too).
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// `GetTaskRequest`, `CancelTaskRequest`, `SubscribeToTaskRequest`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskParams {
    /// The task's id.
    pub id: String,
    /// How much history to return (`GetTask`).
    #[serde(alias = "history_length")]
    pub history_length: Option<i64>,
}

/// `ListTasksRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// Only this context's tasks.
    #[serde(alias = "context_id")]
    pub context_id: Option<String>,
    /// Only tasks in this state.
    pub status: Option<String>,
    /// Tasks per page, 1 to 100 (default 50).
    #[serde(alias = "page_size")]
    pub page_size: Option<i64>,
    /// Where the page starts.
    #[serde(alias = "page_token")]
    pub page_token: Option<String>,
    /// History per task.
    #[serde(alias = "history_length")]
    pub history_length: Option<i64>,
    /// Only tasks whose status changed after this time.
    #[serde(alias = "status_timestamp_after")]
    pub status_timestamp_after: Option<String>,
    /// Include artifacts (default false: the field is omitted).
    #[serde(alias = "include_artifacts")]
    pub include_artifacts: Option<bool>,
}

/// A JSON-RPC 2.0 error object, with the spec's `ErrorInfo` detail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i32,
    /// A message for people.
    pub message: String,
    /// `[{"@type": ".../google.rpc.ErrorInfo", "reason", "domain", "metadata"}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}
