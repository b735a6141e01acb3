//! What travels over HTTP: the JSON bodies the inbox reads (`/message`, `/send`, `/admin/send`),
//! the body one inbox relays to another, and the typed answers of every endpoint.
//!
//! The HTTP handlers, the relay and the CLI client all use these types, so an answer is written
//! and read back by the same definition.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::{
    Approval, ApprovalKind, Delivery, MAX_TYPE_LEN, Message, Outbound, Turn, TurnState,
    nests_deeper_than, valid_dedup_id, valid_thread_ref, valid_type_name,
};

/// Why a request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    BadJson(String),
    /// The body is JSON but not an object.
    #[error("the body must be a JSON object")]
    NotObject,
    /// No `type`.
    #[error("the body has no \"type\" (a string such as \"TASK\")")]
    MissingType,
    /// A field has the wrong shape.
    #[error("{0}")]
    BadField(String),
}

/// Every field any of the inbox's request bodies has; the payload is kept as the sender wrote it
/// (no tree is built for it). Unknown fields are ignored: inbox-to-inbox messages carry more.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", default)]
    msg_type: Option<Value>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    thread_id: Option<Value>,
    #[serde(default)]
    in_reply_to: Option<Value>,
    #[serde(default)]
    hops: Option<Value>,
    #[serde(default)]
    to: Option<Value>,
}

fn fields(bytes: &[u8], max_depth: usize) -> Result<Fields<'_>, BodyError> {
    // Before parsing: the payload is kept raw, and serde_json checks no depth when it skips over
    // a raw value, so a payload nested deeper than any reader can parse would be stored.
    if nests_deeper_than(bytes, max_depth) {
        return Err(BodyError::BadJson(format!(
            "the JSON nests deeper than {max_depth} levels"
        )));
    }
    // serde would read a struct from a JSON array too; only an object is a body.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(BodyError::NotObject),
            Err(e) => Err(BodyError::BadJson(e.to_string())),
        };
    }
    serde_json::from_slice::<Fields<'_>>(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => BodyError::BadField(e.to_string()),
        _ => BodyError::BadJson(e.to_string()),
    })
}

/// `type`: present, and a type name ([`crate::model::valid_type_name`]).
fn type_value(v: Option<&Value>) -> Result<String, BodyError> {
    match v {
        None | Some(Value::Null) => Err(BodyError::MissingType),
        Some(Value::String(s)) if s.trim().is_empty() => Err(BodyError::MissingType),
        Some(Value::String(s)) if valid_type_name(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(BodyError::BadField(format!(
            "\"type\" must be 1 to {MAX_TYPE_LEN} ASCII letters, digits, '_', '-', '.' or ':'"
        ))),
        Some(_) => Err(BodyError::BadField("\"type\" must be a string".into())),
    }
}

/// What a field's rule refuses, in words a client can act on.
pub const THREAD_REF_RULE: &str = "1 to 128 ASCII letters, digits, '.', '_', ':' or '-'";
/// What a deduplicating id's rule refuses.
pub const DEDUP_ID_RULE: &str = "1 to 200 printable ASCII characters";

/// An optional thread reference (`thread_id`, `in_reply_to`): [`valid_thread_ref`].
fn thread_ref(v: Option<&Value>, key: &str) -> Result<Option<String>, BodyError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if valid_thread_ref(s) => Ok(Some(s.clone())),
        Some(_) => Err(BodyError::BadField(format!(
            "\"{key}\" must be {THREAD_REF_RULE}"
        ))),
    }
}

/// An optional id that only deduplicates (a body's `id`): [`valid_dedup_id`].
fn dedup_id(v: Option<&Value>, key: &str) -> Result<Option<String>, BodyError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if valid_dedup_id(s) => Ok(Some(s.clone())),
        Some(_) => Err(BodyError::BadField(format!(
            "\"{key}\" must be {DEDUP_ID_RULE}"
        ))),
    }
}

/// The `Idempotency-Key` header's value (its surrounding quotes removed, as the IETF draft sends
/// it as a structured string) or a `webhook-id`, checked by [`valid_dedup_id`]; `field` names the
/// header in the refusal.
pub fn idempotency_key(raw: &[u8], field: &str) -> Result<String, BodyError> {
    let unquoted = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .unwrap_or(raw);
    std::str::from_utf8(unquoted)
        .ok()
        .filter(|k| valid_dedup_id(k))
        .map(str::to_owned)
        .ok_or_else(|| BodyError::BadField(format!("{field} must be {DEDUP_ID_RULE}")))
}

/// The payload as JSON text; absent or `null` is `{}`. A payload that could not be read back as
/// what was sent is refused: a number outside f64's range, or a string with an unpaired
/// surrogate escape (kept raw, such a payload would read back as a string of its text).
fn payload_value(v: Option<&RawValue>) -> Result<String, BodyError> {
    match v.map(RawValue::get) {
        None | Some("null") => Ok("{}".to_owned()),
        Some(raw) => {
            readable_json(raw)?;
            Ok(raw.to_owned())
        }
    }
}

/// Checks that JSON text reads back as a value (every number a finite f64 or an integer, every
/// string valid Unicode) without building it: a visitor that keeps nothing.
pub fn readable_json(text: &str) -> Result<(), BodyError> {
    serde_json::from_str::<Readable>(text)
        .map(|_| ())
        .map_err(|e| BodyError::BadJson(e.to_string()))
}

/// A JSON value read only to check it (see [`readable_json`]).
struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ReadableVisitor)
    }
}

struct ReadableVisitor;

impl<'de> serde::de::Visitor<'de> for ReadableVisitor {
    type Value = Readable;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Readable, E> {
        if v.is_finite() {
            Ok(Readable)
        } else {
            Err(E::custom("a number outside the range of a 64-bit float"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_unit<E>(self) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Readable, A::Error> {
        while map.next_entry::<Readable, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

/// The body of `POST /message`: what a peer (or another inbox) sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub msg_type: String,
    /// Its payload, as JSON text.
    pub payload: String,
    /// The sender's id for it.
    pub id: Option<String>,
    /// The thread it continues.
    pub thread_id: Option<String>,
    /// The message it answers.
    pub in_reply_to: Option<String>,
    /// Relays so far in its thread.
    pub hops: u32,
}

impl Envelope {
    /// Parses and checks a `/message` body nested at most `max_depth` levels.
    pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Self, BodyError> {
        let f = fields(bytes, max_depth)?;
        let msg_type = type_value(f.msg_type.as_ref())?;
        let hops = match &f.hops {
            None | Some(Value::Null) => 0,
            // `154.0` is an integer to JSON Schema (and so to the API contract), so it is one here.
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
                        .map(|f| f as u64)
                })
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    BodyError::BadField("\"hops\" must be a non-negative integer".into())
                })?,
        };
        Ok(Self {
            msg_type,
            id: dedup_id(f.id.as_ref(), "id")?,
            thread_id: thread_ref(f.thread_id.as_ref(), "thread_id")?,
            in_reply_to: thread_ref(f.in_reply_to.as_ref(), "in_reply_to")?,
            payload: payload_value(f.payload)?,
            hops,
        })
    }
}

/// The body one inbox POSTs to a peer's `/message` for an outbound message, in `thread` (what
/// that peer calls the outbound message's thread).
pub fn relayed(o: &Outbound, thread: &str) -> Bytes {
    #[derive(Serialize)]
    struct Relayed<'a> {
        #[serde(rename = "type")]
        msg_type: &'a str,
        payload: &'a RawValue,
        id: &'a str,
        in_reply_to: Option<&'a str>,
        thread_id: &'a str,
        hops: u32,
    }
    // Stored payloads are JSON; one that is not (it cannot be) goes as null rather than as
    // broken JSON.
    let payload: Box<RawValue> = RawValue::from_string(o.payload.clone()).unwrap_or_default();
    let body = Relayed {
        msg_type: &o.msg_type,
        payload: &payload,
        id: &o.id,
        in_reply_to: o.in_reply_to.as_deref(),
        thread_id: thread,
        hops: o.hops,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The body of `POST /send` with a reply token: an agent's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBody {
    pub msg_type: String,
    /// Its payload, as JSON text.
    pub payload: String,
    /// It names a peer (`to`) or a thread: a new message, which a reply token cannot send.
    pub starts_thread: bool,
}

impl SendBody {
    /// Parses and checks a `/send` body nested at most `max_depth` levels.
    pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Self, BodyError> {
        let f = fields(bytes, max_depth)?;
        let starts_thread = [&f.to, &f.thread_id]
            .iter()
            .any(|v| v.as_ref().is_some_and(|v| !v.is_null()));
        Ok(Self {
            msg_type: type_value(f.msg_type.as_ref())?,
            payload: payload_value(f.payload)?,
            starts_thread,
        })
    }
}

/// The body of `POST /admin/send`, and of `POST /send` with a local agent's token: a message an
/// operator or an agent starts or continues a thread with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSendBody {
    /// The peer it goes to.
    pub to: String,
    pub msg_type: String,
    /// Its payload, as JSON text.
    pub payload: String,
    /// The thread it continues, if any.
    pub thread_id: Option<String>,
    /// The message it answers, if any.
    pub in_reply_to: Option<String>,
}

impl AdminSendBody {
    /// Parses and checks an `/admin/send` body nested at most `max_depth` levels.
    pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Self, BodyError> {
        let f = fields(bytes, max_depth)?;
        let msg_type = type_value(f.msg_type.as_ref())?;
        let to = dedup_id(f.to.as_ref(), "to")?
            .ok_or_else(|| BodyError::BadField("\"to\" (a peer name) is required".into()))?;
        Ok(Self {
            to,
            msg_type,
            payload: payload_value(f.payload)?,
            thread_id: thread_ref(f.thread_id.as_ref(), "thread_id")?,
            in_reply_to: thread_ref(f.in_reply_to.as_ref(), "in_reply_to")?,
        })
    }

    /// The body the CLI sends.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "to": self.to,
            "type": self.msg_type,
            "payload": serde_json::from_str::<Value>(&self.payload).unwrap_or(Value::Null),
            "thread_id": self.thread_id,
            "in_reply_to": self.in_reply_to,
        })
    }
}

/// `GET /agent/me`: who a local agent's token names, and what that agent may do. Tools (the MCP
/// server) build their schemas from it, and notice a reload by `config_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMe {
    /// Its name (`[agents.NAME]`).
    pub name: String,
    /// Which peers it may message, with which types (its `may_send`).
    pub may_send: Vec<MaySendView>,
    /// The peers it may message, each once, with what they are.
    pub contacts: Vec<ContactView>,
    /// The routes whose turns it runs (`agent_id`): it answers their messages by its own token.
    pub routes: Vec<AgentRouteView>,
    /// The config's hash: it changes with every reload that changes the config.
    pub config_hash: String,
}

/// One `may_send` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaySendView {
    pub to: Vec<String>,
    pub types: Vec<String>,
}

/// A peer a local agent may message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactView {
    /// The peer's name here.
    pub name: String,
    /// `inbox` (another inbox, over `/message`) or `a2a` (an A2A agent, handed tasks).
    pub kind: String,
    /// The types the agent may send it.
    pub types: Vec<String>,
    /// The types its answers may have here (those a route takes from it).
    pub answers: Vec<String>,
    /// What an A2A peer's card says of it (when the config names its card and the card was
    /// read): the remote's own words, data to read, capped in length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<crate::model::CardAbout>,
}

/// A route whose turns a local agent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRouteView {
    pub name: String,
    /// Who may send to it, with which types.
    pub from: Vec<String>,
    pub types: Vec<String>,
    /// The types its turns may answer with.
    pub reply_types: Vec<String>,
}

/// What an ack says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// A new message, committed.
    Received,
    /// A repeat of an earlier message; nothing new was done.
    Duplicate,
    /// An outbound message, committed for delivery.
    Queued,
}

/// The answer to `/message`, `/send` and `/admin/send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// What happened.
    pub status: AckStatus,
    /// The new message's id (the original's, for a duplicate).
    pub id: String,
    /// The thread, where the sender may not know it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// A message as the read endpoints show it: the record, with its turn's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageView {
    #[serde(flatten)]
    pub message: Message,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_state: Option<TurnState>,
    /// What it is about, in one short line ([`crate::model::title`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl MessageView {
    /// The view of a stored message with its turn's state.
    pub fn new(m: &Message, turn_state: Option<TurnState>) -> Self {
        Self {
            title: crate::model::title(&m.payload),
            message: m.clone(),
            turn_state,
        }
    }
}

impl std::ops::Deref for MessageView {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

impl std::ops::DerefMut for MessageView {
    fn deref_mut(&mut self) -> &mut Message {
        &mut self.message
    }
}

/// An outbound message as the read endpoints show it: the record, with (for the admin) its
/// approval, and its deliveries where the answer has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundView {
    #[serde(flatten)]
    pub outbound: Outbound,
    /// Whether it waited for a person, and what they decided (the admin's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<Delivery>>,
}

impl OutboundView {
    /// The view of a stored outbound message, with its deliveries if given.
    pub fn new(o: &Outbound, deliveries: Option<&[Delivery]>) -> Self {
        Self {
            outbound: o.clone(),
            approval: None,
            deliveries: deliveries.map(<[Delivery]>::to_vec),
        }
    }
}

impl std::ops::Deref for OutboundView {
    type Target = Outbound;
    fn deref(&self) -> &Outbound {
        &self.outbound
    }
}

impl std::ops::DerefMut for OutboundView {
    fn deref_mut(&mut self) -> &mut Outbound {
        &mut self.outbound
    }
}

/// `GET /messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageList {
    /// Messages, newest first.
    pub messages: Vec<MessageView>,
    /// For a peer: outbound messages addressed to it, newest first. For the admin (unless it
    /// filters by route or sender): the outbound messages that answer no message (sent by the
    /// operator or a local agent), of the thread if one is named, newest first; the rest are in
    /// the details of the messages they answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replies: Option<Vec<OutboundView>>,
    /// For the admin or a local agent reading one thread: the messages peers sent in it that
    /// this inbox refused, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<crate::model::Refusal>,
    /// When the page is full: pass it as `before` for the next, older page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /messages/{id}` for a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDetail {
    pub message: MessageView,
    /// Its turn, if it has one.
    pub turn: Option<Turn>,
    /// Outbound messages answering it, with their deliveries.
    pub replies: Vec<OutboundView>,
    /// Whether its turn waited for a person, and what they decided (the admin's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalView>,
    /// The tasks at remote A2A agents that its turn (`driver = "a2a"`) and its replies (to A2A
    /// peers) became, each naming its `origin` (not shown to peers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_tasks: Vec<RemoteTaskView>,
}

/// `GET /messages/{id}` for an outbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundDetail {
    /// The outbound message, with its deliveries.
    pub reply: OutboundView,
    /// The tasks it became at A2A peers (not shown to peers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_tasks: Vec<RemoteTaskView>,
}

/// A task at a remote A2A agent, as the views show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteTaskView {
    /// `turn` (a route's A2A agent) or `delivery` (an A2A peer).
    pub kind: String,
    /// The message (`turn`) or outbound message (`delivery`) it is.
    pub origin: String,
    /// The route or the peer.
    pub target: String,
    /// The remote's task id (none until it answered the send).
    pub remote_task_id: Option<String>,
    pub context_id: Option<String>,
    /// As the remote last said (`TASK_STATE_...`), or `sending`.
    pub state: String,
    /// The ids of the artifacts (and status messages) taken from it so far, in order: each
    /// became one reply, or one message from the peer.
    pub artifacts: Vec<String>,
    /// Nothing more is followed.
    pub done: bool,
}

impl RemoteTaskView {
    /// The view of a record.
    pub fn new(t: &crate::model::RemoteTask) -> Self {
        RemoteTaskView {
            kind: t.kind.as_str().to_owned(),
            origin: t.origin.clone(),
            target: t.target.clone(),
            remote_task_id: t.remote_id.clone(),
            context_id: t.context_id.clone(),
            state: t.state.clone(),
            artifacts: t.artifacts_taken().cloned().collect(),
            done: t.done,
        }
    }
}

/// Either answer of `GET /messages/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Detail {
    /// The id is a message's.
    Message(Box<MessageDetail>),
    /// The id is an outbound message's.
    Outbound(Box<OutboundDetail>),
}

/// One row of `GET /admin/outbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// The outbound message.
    pub reply: OutboundView,
    /// One of its deliveries.
    pub delivery: Delivery,
}

/// `GET /admin/outbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    /// Deliveries, newest first.
    pub outbox: Vec<OutboxItem>,
}

/// `POST /admin/outbox/{id}/retry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requeued {
    /// Always "requeued".
    pub status: String,
    /// The outbound message.
    pub id: String,
    /// How many dead deliveries are due again.
    pub deliveries: usize,
}

/// `POST /admin/reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// "reloaded", or "unchanged" when the files hash as the config in force.
    pub status: String,
    /// The hash in force now.
    pub config_hash: String,
}

/// The reload counters in `GET /status`, when the config came from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloads {
    /// When the config in force was loaded (ms since the epoch).
    pub loaded_at: i64,
    /// Why the last reload failed, if it did (cleared by a good one).
    pub last_reload_error: Option<String>,
    /// Reloads that swapped in a new config.
    pub reloads_ok: u64,
    /// Reloads that kept the old config.
    pub reloads_failed: u64,
    /// Times the files were read again, whether or not they had changed.
    pub checks: u64,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Hash of the config in force.
    pub config_hash: String,
    /// Reload counters, when the config came from a file.
    #[serde(flatten)]
    pub reloads: Option<Reloads>,
    /// This binary's version.
    pub version: String,
    /// Turns running now.
    pub turns_running: usize,
    /// Turns waiting.
    pub turns_queued: usize,
    /// Whether shutdown has begun.
    pub draining: bool,
    /// The routes in force, with their plugins, limits and queues.
    pub routes: Vec<RouteStatus>,
    /// The peers: where each is reached and how it is authenticated (never a secret).
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// The local agents that may start conversations, and what they may send.
    #[serde(default)]
    pub agents: Vec<AgentStatus>,
    /// On a shared store: this host's id and every live host of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// `GET /status`'s view of the hosts sharing the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This host's `host_id`.
    pub host_id: String,
    /// Hosts that sent a heartbeat recently, this one included.
    pub hosts: Vec<HostStatus>,
}

/// One live host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host_id: String,
    /// Its binary's version.
    pub version: String,
    /// The hash of the config it runs, without the keys each host sets for itself (`listen`,
    /// `host_id`, `public_url`) and with its plugins by file name.
    pub config_hash: String,
    /// Whether that differs from this host's (all hosts should run the same routes.toml).
    pub config_differs: bool,
    /// Turns it runs now.
    pub turns_running: u32,
    /// How long ago it was last seen (ms).
    pub last_seen_ms_ago: i64,
}

/// One peer as `GET /status` shows it: no secret, and no URL's user info or query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    /// Where its messages are delivered (`/message`), if it takes deliveries there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its A2A endpoint or card, when deliveries to it are A2A calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a_url: Option<String>,
    /// How the two sides prove who they are: `shared_secret`, `standard_webhooks`, `a2a_bearer`
    /// (we call its A2A endpoint) or `a2a_token` (an A2A client that calls us).
    pub auth: String,
    /// It may call our A2A endpoint with a bearer token.
    pub a2a_client: bool,
    /// The last delivery attempt to it, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<LastDelivery>,
}

/// The last delivery attempt to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDelivery {
    /// When (ms since the epoch).
    pub at: i64,
    /// `delivered` or `failed`.
    pub outcome: String,
    /// The peer's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A local agent as `GET /status` shows it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub name: String,
    /// Which peers it may message, with which types.
    pub may_send: Vec<MaySendStatus>,
    /// Messages it may start per minute.
    pub max_per_minute: u32,
    /// Whether the messages it starts wait for a person.
    pub approve: bool,
}

/// One `may_send` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaySendStatus {
    pub to: Vec<String>,
    pub types: Vec<String>,
}

/// One route as `GET /status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub name: String,
    /// `agent` or `mailbox`.
    pub kind: String,
    /// Peers that may send to it.
    pub from: Vec<String>,
    /// Types it takes.
    pub types: Vec<String>,
    /// Peers its agent's replies (and `TURN_FAILED`) go to.
    #[serde(default)]
    pub reply_to: Vec<String>,
    /// Types its agent may reply with.
    #[serde(default)]
    pub reply_types: Vec<String>,
    /// Its plugin's file name, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Agents at once (agent routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// Turns waiting at most (agent routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<usize>,
    /// Turns waiting now.
    pub queued: usize,
    /// What waits for a person on this route (`inbound`, `outbound`, `both`), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always "ok".
    pub status: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// An error: a stable code to branch on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// e.g. `unknown_type`.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// The types or values that would have been accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// The plugin that refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_classified() {
        let ok = Envelope::parse(
            br#" {"type": "A", "payload": {"x": [1, "y"]}, "extra": 5}"#,
            64,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.payload, r#"{"x": [1, "y"]}"#, "kept as sent");
        let cases: &[(&[u8], &str)] = &[
            (b"[1]", "not_object"),
            (b"\"TASK\"", "not_object"),
            (b"[1", "bad_json"),
            (b"", "bad_json"),
            (b"{\"type\": ", "bad_json"),
            (br#"{"type": "A", "type": "B"}"#, "bad_field"),
            (br#"{"payload": {}}"#, "missing_type"),
            (br#"{"type": "  "}"#, "missing_type"),
            (br#"{"type": 5}"#, "bad_field"),
            (br#"{"type": "A", "hops": -1}"#, "bad_field"),
            (br#"{"type": "A", "id": ""}"#, "bad_field"),
            (br#"{"type": "A B"}"#, "bad_field"),
        ];
        for (body, code) in cases {
            let got = match Envelope::parse(body, 64) {
                Ok(_) => panic!("{:?} parsed", String::from_utf8_lossy(body)),
                Err(BodyError::BadJson(_)) => "bad_json",
                Err(BodyError::NotObject) => "not_object",
                Err(BodyError::MissingType) => "missing_type",
                Err(BodyError::BadField(_)) => "bad_field",
            };
            assert_eq!(got, *code, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn bodies_nested_too_deep_are_refused_before_parsing() {
        let body = br#"{"type": "A", "payload": [[[1]]]}"#;
        assert!(Envelope::parse(body, 4).is_ok());
        assert!(matches!(
            Envelope::parse(body, 3),
            Err(BodyError::BadJson(_))
        ));
        assert!(matches!(
            SendBody::parse(body, 3),
            Err(BodyError::BadJson(_))
        ));
        let deep = format!(
            r#"{{"type": "A", "payload": {}1{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            Envelope::parse(deep.as_bytes(), 128),
            Err(BodyError::BadJson(_))
        ));
    }

    #[test]
    fn a_payload_no_reader_can_parse_is_shown_as_its_text() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let m = |payload: &str| crate::model::Message {
            id: "m".into(),
            sender: "tony".into(),
            route: "r".into(),
            msg_type: "T".into(),
            payload: payload.into(),
            thread_id: "t".into(),
            in_reply_to: None,
            hops: 0,
            sender_ref: None,
            received_at: 0,
            mailbox: false,
        };
        let shown = |payload: &str| {
            serde_json::to_value(MessageView::new(&m(payload), None)).unwrap()["payload"].clone()
        };
        assert_eq!(shown(&deep), Value::String(deep.clone()));
        assert_eq!(shown("{\"a\":1}"), serde_json::json!({"a": 1}));
    }

    #[test]
    fn a_view_shows_its_record_and_reads_back() {
        let view = MessageView::new(
            &crate::model::Message {
                id: "m1".into(),
                sender: "tony".into(),
                route: "r".into(),
                msg_type: "TASK".into(),
                payload: "{\"b\": 2, \"a\": [1]}".into(),
                thread_id: "t1".into(),
                in_reply_to: Some("o1".into()),
                hops: 2,
                sender_ref: None,
                received_at: 7,
                mailbox: false,
            },
            Some(TurnState::Done),
        );
        let text = serde_json::to_string(&view).unwrap();
        assert_eq!(
            text,
            r#"{"id":"m1","sender":"tony","route":"r","type":"TASK","payload":{"a":[1],"b":2},"thread_id":"t1","in_reply_to":"o1","hops":2,"sender_ref":null,"received_at":7,"mailbox":false,"turn_state":"done"}"#
        );
        let back: MessageView = serde_json::from_str(&text).unwrap();
        assert_eq!(back.turn_state, Some(TurnState::Done));
        assert_eq!(back.message.payload, r#"{"a":[1],"b":2}"#);
        assert_eq!(back.msg_type, "TASK");
    }

    #[test]
    fn relayed_bodies_read_back_as_envelopes() {
        let o = Outbound {
            id: "r1".into(),
            in_reply_to: Some("m1".into()),
            route: Some("tasks".into()),
            msg_type: "BREAKDOWN".into(),
            payload: r#"{"steps": [1, 2]}"#.into(),
            thread_id: "t1".into(),
            hops: 2,
            created_at: 0,
            agent: None,
        };
        let e = Envelope::parse(&relayed(&o, &o.thread_id), 64).expect("parses");
        assert_eq!(
            e,
            Envelope {
                msg_type: "BREAKDOWN".into(),
                payload: r#"{"steps": [1, 2]}"#.into(),
                id: Some("r1".into()),
                thread_id: Some("t1".into()),
                in_reply_to: Some("m1".into()),
                hops: 2,
            }
        );
    }

    #[test]
    fn answers_round_trip() {
        let status = Status {
            config_hash: "abc".into(),
            reloads: None,
            version: "0.1.0".into(),
            turns_running: 1,
            turns_queued: 2,
            draining: false,
            routes: vec![],
            peers: vec![],
            agents: vec![],
            cluster: None,
        };
        let text = serde_json::to_string(&status).expect("json");
        assert!(!text.contains("reloads_ok"));
        assert_eq!(serde_json::from_str::<Status>(&text).ok(), Some(status));
        let ack = Ack {
            status: AckStatus::Duplicate,
            id: "m".into(),
            thread_id: None,
        };
        let v = serde_json::to_value(&ack).expect("json");
        assert_eq!(v, serde_json::json!({"status": "duplicate", "id": "m"}));
    }
}

/// The body of `POST /admin/approvals/{id}/approve` and `.../reject`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    /// Who decides: the person's name, recorded with the decision.
    pub by: String,
    /// Why (required to reject; kept, and sent with the `TURN_FAILED` notice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a held reply, the payload to send instead of the agent's (approve only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

impl DecideBody {
    /// Parses a decision body nested at most `max_depth` levels.
    pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Self, BodyError> {
        if crate::model::nests_deeper_than(bytes, max_depth) {
            return Err(BodyError::BadField(format!(
                "the body nests deeper than {max_depth} levels"
            )));
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| BodyError::BadJson(e.to_string()))?;
        if !v.is_object() {
            return Err(BodyError::NotObject);
        }
        serde_json::from_value(v).map_err(|e| BodyError::BadField(e.to_string()))
    }
}

/// The body of `POST /admin/messages/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Who cancels: the person's name, recorded with the cancel.
    pub by: String,
}

impl CancelBody {
    /// Parses a cancel body; `by` must name someone, in one line of at most 200 characters.
    pub fn parse(bytes: &[u8]) -> Result<Self, BodyError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| BodyError::BadJson(e.to_string()))?;
        if !v.is_object() {
            return Err(BodyError::NotObject);
        }
        let mut b: CancelBody =
            serde_json::from_value(v).map_err(|e| BodyError::BadField(e.to_string()))?;
        b.by = b.by.trim().to_owned();
        if b.by.is_empty() || b.by.chars().count() > 200 || b.by.chars().any(char::is_control) {
            return Err(BodyError::BadField(
                "`by` names who cancels: one line of at most 200 characters".into(),
            ));
        }
        Ok(b)
    }
}

/// A held item as the API shows it: what waits, why, and the decision once made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalView {
    /// The held message's or reply's id (what `approve` and `reject` take).
    pub id: String,
    /// `inbound` (a message's turn) or `outbound` (an agent's reply, or a message a local agent
    /// started).
    pub kind: ApprovalKind,
    /// `waiting`, `approved` or `rejected`.
    pub state: String,
    /// Its route (empty for a message a local agent started).
    pub route: String,
    /// The message: the held one, or the one the held reply answers (none for a message a
    /// local agent started).
    pub message_id: Option<String>,
    pub thread_id: String,
    /// Why it waits.
    pub reason: String,
    /// When it started waiting (ms).
    pub created_at: i64,
    /// When it is rejected on its own if nobody decides (ms).
    pub expires_at: i64,
    /// Who decided: the name given, or `timeout`.
    pub decided_by: Option<String>,
    /// Where: `console`, `api` or `timeout`.
    pub via: Option<String>,
    /// When (ms).
    pub decided_at: Option<i64>,
    /// The reason given with the decision.
    pub decision_reason: Option<String>,
    /// For a reply approved with an edit: the agent's own payload (the reply carries the edited
    /// one, which is what was sent).
    pub original_payload: Option<Value>,
}

impl ApprovalView {
    /// The view of a stored approval.
    pub fn new(a: &Approval) -> Self {
        let d = a.decision.as_ref();
        Self {
            id: a.id.clone(),
            kind: a.kind,
            state: d.map_or("waiting", |d| d.verdict.as_str()).to_owned(),
            route: a.route.clone(),
            message_id: a.message_id.clone(),
            thread_id: a.thread_id.clone(),
            reason: a.reason.clone(),
            created_at: a.created_at,
            expires_at: a.expires_at,
            decided_by: d.map(|d| d.by.clone()),
            via: d.map(|d| d.via.clone()),
            decided_at: d.map(|d| d.at),
            decision_reason: d.and_then(|d| d.reason.clone()),
            original_payload: d.and_then(|d| {
                d.original_payload
                    .as_deref()
                    .map(crate::model::payload_json)
            }),
        }
    }
}

/// One held item with what it holds: the message, and the reply if it is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalItem {
    /// The item and its decision.
    pub approval: ApprovalView,
    /// The inbound message (held, or answered by the held reply), if still stored.
    pub message: Option<MessageView>,
    /// The held reply, for an outbound item.
    pub reply: Option<OutboundView>,
}

/// `GET /admin/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalList {
    /// Waiting items, oldest deadline first; or all, newest first.
    pub approvals: Vec<ApprovalItem>,
}

/// `POST /admin/peers/invite`: invite another inbox to pair as `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// The name the invited inbox gets here.
    pub peer: String,
    /// The name this inbox suggests the invited one gives it (default: this host's name).
    #[serde(default, rename = "as")]
    pub as_name: Option<String>,
    /// How long the code works, in seconds (default 3600).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// What an invite carries, base64url-encoded JSON after [`INVITE_PREFIX`]: one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteLine {
    /// The inviting inbox's base URL.
    pub url: String,
    /// The one-time code.
    pub code: String,
    /// The name it suggests the joining inbox gives it.
    #[serde(rename = "as")]
    pub as_name: String,
}

/// How an invite line starts.
pub const INVITE_PREFIX: &str = "ainv1.";

impl InviteLine {
    /// The line: the prefix and the JSON in base64url.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{INVITE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    /// Reads a line (surrounding spaces and quotes are tolerated, as pasted).
    pub fn decode(line: &str) -> Result<InviteLine, String> {
        use base64::Engine as _;
        let line = line.trim().trim_matches(|c| c == '\'' || c == '"');
        let b64 = line
            .strip_prefix(INVITE_PREFIX)
            .ok_or_else(|| format!("an invite starts with {INVITE_PREFIX}"))?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| "the invite is cut or altered (not base64url)".to_owned())?;
        serde_json::from_slice(&json).map_err(|e| format!("the invite does not read: {e}"))
    }
}

/// `POST /admin/peers/invite`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invited {
    /// The invite line.
    pub invite: String,
    /// The command to run on the other machine.
    pub command: String,
    /// When the code stops working (ms since the epoch).
    pub expires_at: i64,
    /// This inbox's URL the invite names.
    pub url: String,
    /// The URL is plain http: the keys would cross in the clear (`join` wants `--insecure`).
    pub insecure: bool,
}

/// `POST /admin/peers/join`: join the inbox an invite names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    pub invite: String,
    /// The name the inviting inbox gets here (default: the one the invite suggests).
    #[serde(default, rename = "as")]
    pub as_name: Option<String>,
    /// Join over plain http, the keys crossing in the clear.
    #[serde(default)]
    pub insecure: bool,
}

/// `POST /admin/peers/join`'s answer: the new peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub peer: String,
    pub url: String,
    pub status: String,
    pub config_hash: String,
}

/// `POST /pair/join`: the joining inbox, to the inviting one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairJoin {
    pub code: String,
    /// Where the inviting inbox delivers to it (its `/message/{name}`).
    pub url: String,
    /// The key the inviting inbox signs with (the joining one checks it).
    pub key: String,
    /// The types its agents' routes take.
    #[serde(default)]
    pub takes: Vec<String>,
}

/// `POST /pair/join`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairJoined {
    /// Where the joining inbox delivers to it.
    pub url: String,
    /// The key the joining inbox signs with.
    pub key: String,
    pub takes: Vec<String>,
}

/// `POST /pair/confirm` and `POST /pair/cancel`, signed with the key `/pair/join` answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairCode {
    pub code: String,
}

/// `GET /admin/peers`: one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub name: String,
    /// Where messages to it go; none for a peer that only calls this inbox over A2A.
    pub url: Option<String>,
    /// "secret" or "standard-webhooks".
    pub auth: String,
    /// Each direction has its own key (as pairing writes it).
    pub own_keys: bool,
    /// An A2A agent (messages to it are tasks there).
    pub a2a: bool,
    /// The routes it may send to.
    pub routes: Vec<String>,
}

/// `GET /admin/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    pub peers: Vec<PeerView>,
}

/// `POST /admin/peers/{name}/remove`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRemoved {
    pub peer: String,
    pub status: String,
    pub config_hash: String,
}

/// `POST /pair/confirm` and `/pair/cancel`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paired {
    /// "paired" or "cancelled".
    pub status: String,
}
