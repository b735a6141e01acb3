//! The records the inbox works with, shared by every other module: messages, outbound messages,
//! turns, deliveries, their states, ids and times.
//!
//! Nothing here does I/O. The store persists these types, the plugin engine converts them to its
//! WIT types once, and `wire` turns them into HTTP answers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A new time-ordered unique id (UUIDv7), for messages and outbound messages.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An id made from `seed`, the same every time (a UUID, version 8, of the seed's SHA-256): for
/// a record that a retry or a restart may try to make again, so the second try finds the first.
pub fn derived_id(seed: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes).to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Longest message type name.
pub const MAX_TYPE_LEN: usize = 64;

/// Whether `t` is a type name: 1 to [`MAX_TYPE_LEN`] ASCII letters, digits, `_`, `-`, `.` or `:`;
/// nothing a shell, a URL or a JSON template would mangle.
pub fn valid_type_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TYPE_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Longest thread reference (`thread_id`, `in_reply_to`, an A2A `contextId`).
pub const MAX_THREAD_REF_LEN: usize = 128;

/// Longest id that only deduplicates (`Idempotency-Key`, `webhook-id`, a body's `id`, an A2A
/// `messageId`).
pub const MAX_DEDUP_ID_LEN: usize = 200;

/// Whether `s` may name a thread or a message to answer: 1 to [`MAX_THREAD_REF_LEN`] ASCII
/// letters, digits, `.`, `_`, `:` or `-` (the rule OpenClaw's A2A channel keeps for context ids).
/// Such ids become a thread, an agent's session key and a line of its prompt, so nothing in them
/// can start a new line, quote, or pass for an instruction.
pub fn valid_thread_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_THREAD_REF_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Whether `s` may be an id that only deduplicates: 1 to [`MAX_DEDUP_ID_LEN`] printable ASCII
/// characters (space to `~`): no control character, so none reaches a log line.
pub fn valid_dedup_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_DEDUP_ID_LEN && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// `text` with every control character written out as an escape (`\n`, `\r`, `\t`, `\\`, and
/// `\u{..}` for the rest: C0, DEL, C1, and the Unicode line and paragraph separators), so that
/// text from outside (a peer's error body, an agent's output) stays on the one line it is put
/// on, and cannot move a terminal's cursor or recolour what follows. Borrowed when there is
/// nothing to escape.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if needs(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether JSON text nests arrays and objects more than `max` levels deep (the outermost value
/// is level 1; brackets inside strings do not count). Cheap enough to run on every body before
/// it is parsed.
pub fn nests_deeper_than(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A stored name was not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} is not known")]
pub struct UnknownName {
    /// Which enum, e.g. "turn state".
    pub kind: &'static str,
    /// The name found.
    pub value: String,
}

/// Declares a state enum with its stored/shown names, in one place.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The name stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok(Self::$variant),)*
                    other => Err(UnknownName { kind: $kind, value: other.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// A turn's state.
    TurnState, "turn state" {
        /// Waiting for a free agent slot.
        Queued = "queued",
        /// The agent is running.
        Running = "running",
        /// The agent exited 0.
        Done = "done",
        /// The agent failed (non-zero exit, could not start, ...).
        Failed = "failed",
        /// The agent ran past its timeout and was killed.
        TimedOut = "timed_out",
        /// The host stopped while the agent ran.
        Interrupted = "interrupted",
        /// Cancelled before it ended (an A2A `CancelTask`): dropped from the queue, or its agent
        /// killed.
        Canceled = "canceled",
        /// Held for a person to approve before it joins the queue (`approve = "inbound"`, or a
        /// plugin's `hold`).
        AwaitingApproval = "awaiting_approval",
        /// A person rejected it, or its approval timed out: its agent never ran.
        Rejected = "rejected",
    }
}

impl TurnState {
    /// Whether the turn is over (nothing more will run for it).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            TurnState::Queued | TurnState::Running | TurnState::AwaitingApproval
        )
    }
}

named_enum! {
    /// A delivery's state.
    DeliveryState, "delivery state" {
        /// Not tried yet.
        Pending = "pending",
        /// Tried, failed in a retryable way, another attempt is scheduled.
        Retrying = "retrying",
        /// The peer answered 2xx.
        Delivered = "delivered",
        /// A dead letter: a non-retryable answer or the schedule ran out; `outbox retry` replays it.
        Dead = "dead",
        /// Held until a person approves the reply (`approve = "outbound"`): not tried, not shown
        /// to the peer.
        Held = "held",
        /// A person rejected the reply (or its approval timed out): never sent.
        Withheld = "withheld",
    }
}

named_enum! {
    /// What waits for a person: an inbound message's turn, or an agent's outbound reply or a
    /// message a local agent started.
    ApprovalKind, "approval kind" {
        /// A message's turn, before its agent runs.
        Inbound = "inbound",
        /// An agent's reply, before it is delivered.
        Outbound = "outbound",
    }
}

named_enum! {
    /// A person's decision on a held item.
    Verdict, "verdict" {
        /// Go ahead: the turn joins the queue, or the reply is delivered (perhaps edited).
        Approved = "approved",
        /// Stop: the turn ends `rejected`, or the reply is never sent.
        Rejected = "rejected",
    }
}

/// Something held for a person to look at, with the decision once there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The held item's id: the message's (inbound) or the outbound message's.
    pub id: String,
    /// Which kind it is.
    pub kind: ApprovalKind,
    /// The route it belongs to (empty for a message a local agent started).
    pub route: String,
    /// The inbound message: the held one, or the one the held reply answers (none for a
    /// message a local agent started).
    pub message_id: Option<String>,
    /// Its conversation.
    pub thread_id: String,
    /// Why it waits: the route's `approve`, or a plugin's reason.
    pub reason: String,
    /// When it started waiting (ms).
    pub created_at: i64,
    /// When it is rejected on its own if nobody decides (ms).
    pub expires_at: i64,
    /// The decision, once made.
    pub decision: Option<Decision>,
}

/// A decision on a held item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Approved or rejected.
    pub verdict: Verdict,
    /// Who decided: the name the person gave, or `timeout`.
    pub by: String,
    /// Where: `console`, `api` (the admin API and the CLI) or `timeout`.
    pub via: String,
    /// When (ms).
    pub at: i64,
    /// The person's reason (required to reject).
    pub reason: Option<String>,
    /// For an approved reply whose payload the person edited: the agent's original payload (the
    /// outbound message now carries the edited one, which is what was sent).
    pub original_payload: Option<String>,
}

/// A held item's decision to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decide {
    /// The held item.
    pub id: String,
    /// The decision (its `original_payload` is filled in by the store when `edited` is set).
    pub verdict: Verdict,
    /// Who.
    pub by: String,
    /// Where.
    pub via: String,
    /// When (ms).
    pub at: i64,
    /// Why (to reject).
    pub reason: Option<String>,
    /// A new payload for a held reply (JSON text), to send instead of the agent's.
    pub edited: Option<String>,
}

named_enum! {
    /// How durable a commit is (SQLite's `synchronous`).
    Synchronous, "synchronous mode" {
        /// fsync on every commit: an ack survives power loss. The default.
        Full = "full",
        /// fsync at checkpoints only: an ack survives a process crash, not power loss.
        Normal = "normal",
        /// No fsync: for benchmarks only.
        Off = "off",
    }
}

/// A payload kept as JSON text, shown as the JSON it holds ([`payload_json`]).
mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub(super) fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        super::payload_json(text).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Value::deserialize(d)?.to_string())
    }
}

/// The keys whose text names what a payload is about, most telling first.
const TITLE_KEYS: &[&str] = &[
    "title",
    "subject",
    "summary",
    "name",
    "text",
    "task",
    "message",
    "goal",
    "description",
];

/// What a message is about, for a person scanning a list: the payload's `title` (or `subject`,
/// `summary`, `text`, ...), else its first top-level text, else the payload itself when it is
/// text; its first line, whitespace collapsed, at most 120 characters. `None` when it has no
/// text.
pub fn title(payload: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let text = match &v {
        serde_json::Value::String(s) => Some(s.as_str()),
        serde_json::Value::Object(o) => TITLE_KEYS
            .iter()
            .filter_map(|k| o.get(*k).and_then(|v| v.as_str()))
            .chain(o.values().filter_map(|v| v.as_str()))
            .find(|s| !s.trim().is_empty()),
        _ => None,
    }?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let joined = words.join(" ");
    let mut out: String = joined.chars().take(120).collect();
    if joined.chars().count() > 120 {
        out.push('…');
    }
    Some(escape_controls(&out).into_owned())
}

/// A payload's JSON text as the JSON it holds. Text no reader can parse as JSON (stored before
/// the depth limit existed) is a JSON string holding that text, never `null`.
pub fn payload_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// An accepted inbound message. Its serde form is the one the read endpoints show (`wire`'s
/// views flatten it), with the payload as JSON rather than text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Our id for it.
    pub id: String,
    /// The peer that sent it.
    pub sender: String,
    /// The route that took it.
    pub route: String,
    #[serde(rename = "type")]
    pub msg_type: String,
    /// As JSON text.
    #[serde(with = "json_text")]
    pub payload: String,
    /// The conversation it belongs to.
    pub thread_id: String,
    /// The message it answers, if any.
    pub in_reply_to: Option<String>,
    /// Relays so far in its thread.
    pub hops: u32,
    /// The id the sender gave it, if any.
    pub sender_ref: Option<String>,
    /// When it was acked (ms since the epoch).
    pub received_at: i64,
    /// Whether it went to a mailbox (no turn).
    pub mailbox: bool,
}

/// An outbound message: an agent's reply, a `TURN_FAILED` notice, or one an operator sent. The
/// relay delivers it to each of its peers. Its serde form is the one the read endpoints show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// Its id, sent as `id` and `Idempotency-Key` on every attempt.
    pub id: String,
    /// The message it answers, if any.
    pub in_reply_to: Option<String>,
    /// The route whose agent sent it, if any.
    pub route: Option<String>,
    #[serde(rename = "type")]
    pub msg_type: String,
    /// As JSON text.
    #[serde(with = "json_text")]
    pub payload: String,
    /// The conversation it belongs to.
    pub thread_id: String,
    /// Relays so far in its thread, this one included.
    pub hops: u32,
    /// When it was queued.
    pub created_at: i64,
    /// The local agent (`[agents.NAME]`) that sent it: by its own token, or as the `agent_id` of
    /// the route whose turn replied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// Why a turn failed: a stable code for machines and a detail for people.
///
/// Stored and shown as `code: detail`, the form the store has always used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnError {
    /// A stable snake_case code, e.g. `timed_out`, `plugin_failed`.
    pub code: String,
    /// What happened.
    pub detail: String,
}

impl TurnError {
    /// A turn error with this code and detail.
    pub fn new(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            detail: detail.into(),
        }
    }

    /// Reads the stored `code: detail` form; text without a `": "` is all code.
    pub fn parse(text: &str) -> Self {
        match text.split_once(": ") {
            Some((code, detail)) => Self::new(code, detail),
            None => Self::new(text, ""),
        }
    }
}

impl fmt::Display for TurnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}: {}", self.code, self.detail)
        }
    }
}

impl Serialize for TurnError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TurnError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| TurnError::parse(&s))
    }
}

/// A turn's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub state: TurnState,
    /// How many times it started.
    pub attempts: u32,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// The signal that killed the agent.
    pub signal: Option<i32>,
    /// Why it failed.
    pub error: Option<TurnError>,
    /// How long the agent ran.
    pub duration_ms: Option<i64>,
    /// Last bytes of stdout.
    pub stdout_tail: Option<String>,
    /// Last bytes of stderr.
    pub stderr_tail: Option<String>,
    /// When it was queued.
    pub queued_at: i64,
    /// When it last started.
    pub started_at: Option<i64>,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// Who cancelled it, how and when, if a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled: Option<Cancel>,
}

/// A person's cancel of a queued, held or running turn, recorded like every decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// Who: the person's name.
    pub by: String,
    /// Where: `console`, `api` (and the CLI), or `a2a` (the client cancelled its task).
    pub via: String,
    /// When (ms since the epoch).
    pub at: i64,
}

/// How a turn ended, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnEnd {
    /// `Done`, `Failed`, `TimedOut` or `Interrupted`.
    pub state: TurnState,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Why it failed.
    pub error: Option<TurnError>,
    /// How long it ran.
    pub duration_ms: i64,
    /// Last bytes of stdout.
    pub stdout_tail: String,
    /// Last bytes of stderr.
    pub stderr_tail: String,
}

impl TurnEnd {
    /// A turn that failed before or without running its agent.
    pub fn failed(state: TurnState, error: TurnError) -> Self {
        Self {
            state,
            exit_code: None,
            signal: None,
            error: Some(error),
            duration_ms: 0,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }
    }
}

/// An outbound message's delivery to one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub peer: String,
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due, if one is.
    pub next_attempt_at: Option<i64>,
    /// The peer's last HTTP status.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<i64>,
}

/// One recorded delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Its number, from 1 (restarts at 1 after `outbox retry`).
    pub n: u32,
    /// When it was made.
    pub at: i64,
    /// The peer's status, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// The outcome of one delivery attempt, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx.
    Delivered {
        /// The peer's status.
        status: u16,
    },
    /// Try again at `next_at`.
    Retry {
        /// The peer's status, if it answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_at: i64,
    },
    /// Give up: the delivery becomes a dead letter.
    Dead {
        /// The peer's status, if it answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

/// What an attempt's outcome writes into its delivery's row and its attempt record; the same for
/// every store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRow<'a> {
    /// The delivery's state after the attempt.
    pub state: DeliveryState,
    /// The peer's status, if it answered.
    pub status: Option<i64>,
    /// What went wrong, if anything.
    pub error: Option<&'a str>,
    /// When to try again, if it will be.
    pub next_at: Option<i64>,
    /// When it was delivered, if it was.
    pub delivered_at: Option<i64>,
}

impl AttemptOutcome {
    /// The row this outcome leaves, recorded at `now`.
    pub fn row(&self, now: i64) -> AttemptRow<'_> {
        let (state, status, error, next_at, delivered_at) = match self {
            AttemptOutcome::Delivered { status } => (
                DeliveryState::Delivered,
                Some(*status),
                None,
                None,
                Some(now),
            ),
            AttemptOutcome::Retry {
                status,
                error,
                next_at,
            } => (
                DeliveryState::Retrying,
                *status,
                Some(error.as_str()),
                Some(*next_at),
                None,
            ),
            AttemptOutcome::Dead { status, error } => (
                DeliveryState::Dead,
                *status,
                Some(error.as_str()),
                None,
                None,
            ),
        };
        AttemptRow {
            state,
            status: status.map(i64::from),
            error,
            next_at,
            delivered_at,
        }
    }
}

/// An A2A task: the unit of work an A2A client hands over. It starts with one inbox message and
/// its turn; an answer to a question adds another message and turn to it. Its state is not
/// stored: it follows from its turns and their replies (`a2a::state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Its id (a UUIDv7, like a message's).
    pub id: String,
    /// The peer that created it: the only one that sees it, besides the admin.
    pub owner: String,
    /// Its A2A `contextId`, which is the inbox thread.
    pub context_id: String,
    /// The route (skill) it was sent to.
    pub route: String,
    /// When it was created (ms).
    pub created_at: i64,
    /// Why a plugin refused its first message; such a task has no message and no turn.
    pub rejected: Option<String>,
    /// When the client cancelled it.
    pub canceled_at: Option<i64>,
}

/// One message an A2A client sent into a task, as it sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInput {
    pub task_id: String,
    /// The inbox message it became (none for a rejected task's message).
    pub message_id: Option<String>,
    /// The client's `messageId`.
    pub client_message_id: String,
    /// The A2A `Message` as JSON text, for the task's history.
    pub body: String,
    /// When it arrived (ms).
    pub at: i64,
}

/// Where an A2A client wants a task's updates pushed (`TaskPushNotificationConfig`). The token and
/// credentials are the client's secrets: never logged, never shown in full.
#[derive(Clone, PartialEq, Eq)]
pub struct PushConfig {
    pub task_id: String,
    /// Its id within the task (the client's, or one we made).
    pub id: String,
    /// Where to POST.
    pub url: String,
    /// Sent as `X-A2A-Notification-Token`.
    pub token: Option<String>,
    /// `Authorization: <scheme> <credentials>`.
    pub auth_scheme: Option<String>,
    /// See `auth_scheme`.
    pub credentials: Option<String>,
    /// When it was made.
    pub created_at: i64,
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("task_id", &self.task_id)
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A task at a remote A2A agent that the inbox follows to its end: one per turn of a route whose
/// agent is `driver = "a2a"` (its key `turn:<message id>`), or per delivery to an A2A peer. What
/// it has taken from the remote (`seen`: artifact ids) is kept, so that a restart resumes it
/// without repeating an answer, and the thread's next message can continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteTask {
    pub key: String,
    pub kind: RemoteKind,
    /// The route (`turn`) or peer (`delivery`) whose remote it is.
    pub target: String,
    pub thread_id: String,
    /// The message (`turn`) or outbound message (`delivery`) it was sent for.
    pub origin: String,
    /// The `messageId` sent, the same on every retry of the send.
    pub message_ref: String,
    /// The remote's task id; `None` until the remote has answered the send.
    pub remote_id: Option<String>,
    pub context_id: Option<String>,
    /// The remote state as last seen (`TASK_STATE_...`; `sending` before the first answer).
    pub state: String,
    /// Artifact ids already taken (each is one reply or message, once).
    pub seen: Vec<String>,
    /// Followed until this time (ms); then given up.
    pub follow_until: i64,
    /// Nothing more to follow.
    pub done: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RemoteTask {
    /// In `seen`: the task's question (`INPUT_REQUIRED`) was taken under this record.
    pub const QUESTION_TAKEN: &'static str = "input-required";
    /// In `seen`: the task's failure was brought back under this record.
    pub const FAILURE_TAKEN: &'static str = "failure";

    /// Whether this record took the task's question.
    pub fn asked(&self) -> bool {
        self.seen.iter().any(|s| s == Self::QUESTION_TAKEN)
    }

    /// The artifact ids taken (and status message ids), the markers left out: what a message
    /// that continues the same task must not take again.
    pub fn artifacts_taken(&self) -> impl Iterator<Item = &String> {
        self.seen
            .iter()
            .filter(|s| *s != Self::QUESTION_TAKEN && *s != Self::FAILURE_TAKEN)
    }
}

/// Whose a remote task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteKind {
    /// A turn of a route whose agent is an A2A agent.
    Turn,
    /// A message delivered to an A2A peer.
    Delivery,
}

impl RemoteKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteKind::Turn => "turn",
            RemoteKind::Delivery => "delivery",
        }
    }

    /// From storage.
    pub fn parse(s: &str) -> Option<RemoteKind> {
        match s {
            "turn" => Some(RemoteKind::Turn),
            "delivery" => Some(RemoteKind::Delivery),
            _ => None,
        }
    }
}

/// The delivery target of a push: `a2a-push:<task id>/<config id>` (a peer name has no `:`).
pub fn push_target(task_id: &str, config_id: &str) -> String {
    format!("{PUSH_PREFIX}{task_id}/{config_id}")
}

/// Whether a delivery target is an A2A push (not a peer).
pub fn is_push_target(target: &str) -> bool {
    target.starts_with(PUSH_PREFIX)
}

/// A delivery target's push config key (task id, config id), if it is a push.
pub fn parse_push_target(target: &str) -> Option<(&str, &str)> {
    target.strip_prefix(PUSH_PREFIX)?.split_once('/')
}

const PUSH_PREFIX: &str = "a2a-push:";

/// Everything a task's state and its answer are made from, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub task: Task,
    /// The client's messages, oldest first.
    pub inputs: Vec<TaskInput>,
    /// Each input message's turn, by message id.
    pub turns: Vec<(String, Turn)>,
    /// The agent's replies on the task's turns, oldest first (none that wait for a person, or
    /// that a person rejected).
    pub replies: Vec<Outbound>,
    /// Whether a reply on the task waits for a person.
    pub held: bool,
}

/// One host of a shared store, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBeat {
    pub host_id: String,
    /// Its current process (`host_id/start id`).
    pub incarnation: String,
    /// Its binary's version.
    pub version: String,
    /// The hash of the config it runs.
    pub config_hash: String,
    /// Turns it runs now.
    pub running: u32,
    /// When it last said so, by the database's clock (ms).
    pub last_seen: i64,
    /// How long ago that was (ms).
    pub age_ms: i64,
}

/// What the agent needs to reply: the built-in prompt and a render-turn plugin build their
/// instructions from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    /// Full URL of `POST /send`.
    pub url: String,
    /// What curl's `-H` takes to authenticate the reply: `@<path>` of a 0600 file holding the
    /// `Authorization` header line, so that no token is ever on a command line; or, where the
    /// agent cannot read the inbox's files (the gateway driver), the header line itself, which
    /// then travels only in an HTTP body. A secret either way: never log text that contains it.
    pub auth_header: String,
    /// How many replies the turn may send.
    pub max_replies: u32,
    /// Types the agent may reply with; empty means no reply is expected.
    pub reply_types: Vec<String>,
    /// When the token stops working if the turn runs to its timeout (RFC 3339).
    pub deadline: String,
    /// The CA file that verifies the inbox's certificate, when no public root does: the reply
    /// curl needs `--cacert` with it.
    pub ca_file: Option<String>,
    /// The agent answers with the inbox's MCP `reply` tool instead of curl.
    pub mcp_tools: bool,
}

/// How many replies one attempt of a turn has sent, in the store: in all, and in the current
/// one-minute window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyCount {
    /// Replies counted in all.
    pub total: u32,
    /// When the current window began (ms).
    pub window_start: i64,
    /// Replies counted in it.
    pub in_window: u32,
}

/// A message a peer sent in a thread this inbox knows, refused: kept in the thread so the side
/// waiting for an answer learns at once that it will not come, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The thread (this inbox's id for it).
    pub thread_id: String,
    /// The peer that sent it.
    pub peer: String,
    /// The type it had.
    #[serde(rename = "type")]
    pub msg_type: String,
    /// The error code it was answered with.
    pub code: String,
    /// The refusal's words (control characters escaped).
    pub detail: String,
    /// When (ms since the epoch).
    pub at: i64,
}

/// What a turn's prompt promised its agent, kept with the attempt's reply token: how that turn's
/// replies are checked and where they go, whatever a reload or a restart changes meanwhile (and
/// even if the route is removed). Later turns take the config then in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnTerms {
    /// The reply types the prompt listed.
    pub reply_types: Vec<String>,
    /// The peers its replies go to (unless its check-reply plugin picks among them).
    pub reply_to: Vec<String>,
    /// The sha256 of the route's plugin when the turn started: its check-reply checks the replies.
    pub plugin: Option<String>,
    /// The turn's reply budget.
    pub limits: ReplyLimits,
    /// Whether its replies wait for a person, and for how long (ms) before they are withheld.
    pub approve_outbound: Option<i64>,
    /// The local agent its replies are sent as (`agent_id`).
    pub agent: Option<String>,
}

/// The limits on one turn's replies (`max_replies_per_turn`, `max_replies_per_minute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyLimits {
    /// Replies in all.
    pub per_turn: u32,
    /// Replies per minute.
    pub per_minute: u32,
}

/// The length of a reply-rate window.
pub const REPLY_WINDOW_MS: i64 = 60_000;

impl ReplyCount {
    /// The count after one more reply at `now`, or, past either limit, how long (ms) until one
    /// may be sent again: the window's end, or (the turn's budget spent) a full window, since
    /// only a new attempt brings a new budget. Both stores keep this one rule.
    pub fn next(self, limits: ReplyLimits, now: i64) -> Result<ReplyCount, i64> {
        if self.total >= limits.per_turn {
            return Err(REPLY_WINDOW_MS);
        }
        let (window_start, in_window) = if now - self.window_start >= REPLY_WINDOW_MS {
            (now, 0)
        } else {
            (self.window_start, self.in_window)
        };
        if in_window >= limits.per_minute {
            return Err((window_start + REPLY_WINDOW_MS - now).max(1));
        }
        Ok(ReplyCount {
            total: self.total + 1,
            window_start,
            in_window: in_window + 1,
        })
    }
}

/// A reply as the agent sent it on `POST /send`, before any plugin has seen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub msg_type: String,
    /// Its payload as JSON text.
    pub payload: String,
}

/// What an A2A agent's card says of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CardAbout {
    pub name: String,
    pub description: String,
    pub skills: Vec<SkillAbout>,
}

/// One skill a card lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillAbout {
    pub id: String,
    pub name: String,
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_outcome_gives_its_row() {
        let delivered = AttemptOutcome::Delivered { status: 202 };
        let retry = AttemptOutcome::Retry {
            status: None,
            error: "connection refused".into(),
            next_at: 9_000,
        };
        let dead = AttemptOutcome::Dead {
            status: Some(500),
            error: "gave up".into(),
        };
        let row = |state, status, error, next_at, delivered_at| AttemptRow {
            state,
            status,
            error,
            next_at,
            delivered_at,
        };
        assert_eq!(
            delivered.row(7),
            row(DeliveryState::Delivered, Some(202), None, None, Some(7))
        );
        assert_eq!(
            retry.row(7),
            row(
                DeliveryState::Retrying,
                None,
                Some("connection refused"),
                Some(9_000),
                None
            )
        );
        assert_eq!(
            dead.row(7),
            row(DeliveryState::Dead, Some(500), Some("gave up"), None, None)
        );
    }

    #[test]
    fn state_names_round_trip() {
        for s in [
            TurnState::Queued,
            TurnState::Running,
            TurnState::Done,
            TurnState::Failed,
            TurnState::TimedOut,
            TurnState::Interrupted,
            TurnState::Canceled,
            TurnState::AwaitingApproval,
            TurnState::Rejected,
        ] {
            assert_eq!(s.as_str().parse::<TurnState>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        assert!("paused".parse::<TurnState>().is_err());
        assert_eq!("dead".parse::<DeliveryState>(), Ok(DeliveryState::Dead));
    }

    #[test]
    fn nesting_is_counted_outside_strings() {
        let cases: &[(&str, usize, bool)] = &[
            ("{}", 1, false),
            ("{}", 0, true),
            (r#"{"a": [[1]]}"#, 3, false),
            (r#"{"a": [[1]]}"#, 2, true),
            (r#"{"a": "[[[[[[", "b": "\\"}"#, 1, false),
            (r#"{"a": "\"[[["}"#, 1, false),
            ("[[],[],[]]", 2, false),
        ];
        for (json, max, deeper) in cases {
            assert_eq!(
                nests_deeper_than(json.as_bytes(), *max),
                *deeper,
                "{json} {max}"
            );
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(nests_deeper_than(deep.as_bytes(), 128));
    }

    #[test]
    fn type_names() {
        for ok in ["TASK", "a.b:c-d_e", &"X".repeat(64)] {
            assert!(valid_type_name(ok), "{ok}");
        }
        for bad in ["", "A B", "<script>", "é", &"X".repeat(65), "a/b"] {
            assert!(!valid_type_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_turns_replies_are_bounded_in_all_and_per_minute() {
        let limits = ReplyLimits {
            per_turn: 5,
            per_minute: 3,
        };
        let mut c = ReplyCount::default();
        let t0 = 1_000_000;
        for _ in 0..3 {
            c = c.next(limits, t0).unwrap();
        }
        assert_eq!(
            c.next(limits, t0 + 10_000),
            Err(50_000),
            "the minute's three are spent"
        );
        c = c.next(limits, t0 + 60_000).unwrap();
        c = c.next(limits, t0 + 60_001).unwrap();
        assert_eq!(c.total, 5);
        assert_eq!(
            c.next(limits, t0 + 600_000),
            Err(REPLY_WINDOW_MS),
            "the turn's five are spent, whatever the time"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(
            escape_controls("plain text"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\r\n2026 INFO forged\u{1b}[31m\0\u{7f}\u{85}\u{2028}\\n"),
            "a\\r\\n2026 INFO forged\\u{1b}[31m\\u{0}\\u{7f}\\u{85}\\u{2028}\\\\n"
        );
        assert_eq!(escape_controls("é ✓"), "é ✓");
    }

    #[test]
    fn id_rules() {
        for ok in [
            "t1",
            "a.b:c-d_e",
            "0195f0a2-7c1e-7000-8000-000000000000",
            &"x".repeat(128),
        ] {
            assert!(valid_thread_ref(ok), "{ok}");
            assert!(valid_dedup_id(ok), "{ok}");
        }
        for bad in [
            "",
            "t1\n",
            "a b",
            "a/b",
            "é",
            "t\0",
            &"x".repeat(129),
            "\"x\"",
        ] {
            assert!(!valid_thread_ref(bad), "{bad:?}");
        }
        for ok in ["a b", "\"quoted\"", "k/1?x=y", &"~".repeat(200)] {
            assert!(valid_dedup_id(ok), "{ok:?}");
        }
        for bad in [
            "",
            "a\nb",
            "a\rb",
            "a\u{1b}[31m",
            "\0",
            "é",
            &"x".repeat(201),
        ] {
            assert!(!valid_dedup_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn turn_errors_read_the_stored_form() {
        let e = TurnError::parse("timed_out: timed out after 1s: really");
        assert_eq!(e.code, "timed_out");
        assert_eq!(e.detail, "timed out after 1s: really");
        assert_eq!(e.to_string(), "timed_out: timed out after 1s: really");
        assert_eq!(TurnError::parse("odd").to_string(), "odd");
    }

    #[test]
    fn a_title_is_the_payloads_telling_text_in_one_short_line() {
        for (payload, want) in [
            (
                r#"{"title": "Fix the build", "text": "details"}"#,
                Some("Fix the build"),
            ),
            (
                r#"{"steps": [1], "text": "  first line\nsecond"}"#,
                Some("first line"),
            ),
            (
                r#"{"n": 1, "note": "only text here"}"#,
                Some("only text here"),
            ),
            (r#""a bare string""#, Some("a bare string")),
            (r#"{"n": 1}"#, None),
            (r#"[1, 2]"#, None),
            ("not json", None),
            (
                r#"{"title": "a\u001b[31m  spaced   out"}"#,
                Some("a\\u{1b}[31m spaced out"),
            ),
        ] {
            assert_eq!(title(payload).as_deref(), want, "{payload}");
        }
        let long = format!(r#"{{"title": "{}"}}"#, "x".repeat(300));
        assert_eq!(title(&long).unwrap().chars().count(), 121);
    }
}
