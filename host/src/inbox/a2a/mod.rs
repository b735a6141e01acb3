//! The A2A methods as use cases of the inbox: JSON-RPC methods on tasks, mapped onto the inbox's
//! own records.
//!
//! A task is the store's [`crate::model::Task`]: a message to an A2A skill (a route with
//! `a2a = { ... }`) goes through [`Inbox::accept`] like any other, with the task committed in the
//! same transaction, so it gets the same dedup, plugins, durable ack and crash recovery. What A2A
//! shows of a task is computed from its turns and replies ([`crate::a2a::state`]), on every read,
//! so it cannot drift from them. Live views (streams and blocking calls) re-read the task when the
//! events feed says something of it changed, and every second besides (another host may run its
//! turn).

mod push;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::a2a::json as a2a_json;
use crate::a2a::json::{
    ListParams, ListTasksResponse, SendParams, StatusUpdate, StreamResponse, Task, TaskParams,
    TaskState,
};
use crate::a2a::{A2aError, Caller, state};
use crate::events::Event;
use crate::hooks::HookError;
use crate::inbox::{Inbox, InboxError, Incoming};
use crate::model::{TaskInput, TaskRecord, new_id, now_ms};
use crate::snapshot::Snapshot;
use crate::store::{StoreError, TaskFilter, TaskLink};
use crate::wire::{AckStatus, DEDUP_ID_RULE, Envelope, THREAD_REF_RULE};

/// How often a live view re-reads its task when no event says it changed.
const POLL: Duration = Duration::from_secs(1);
/// Stream responses buffered for a slow client; a full buffer pauses the view, not the inbox.
const STREAM_BUFFER: usize = 16;
/// Most tasks `ListTasks` looks through: the newest this many of the caller's.
const LIST_WINDOW: u32 = 1000;
/// `ListTasks`' page size when none is given, and the largest.
const PAGE_DEFAULT: i64 = 50;
const PAGE_MAX: i64 = 100;

impl From<StoreError> for A2aError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Unavailable(why) = &e {
            tracing::warn!(error = %why, "a2a: the store is unavailable");
            return A2aError::StoreUnavailable;
        }
        tracing::error!(error = %e, "a2a: store failed");
        A2aError::Internal("the inbox could not read or write its store".into())
    }
}

/// A method's answer: one result, or a stream of them.
pub enum Answer {
    /// The `result`.
    Result(Value),
    /// `StreamResponse`s, ending when the task does (or the client goes, or the inbox drains).
    Stream(mpsc::Receiver<StreamResponse>),
}

impl Inbox {
    /// Runs one A2A JSON-RPC method for `caller`.
    pub async fn a2a(
        self: &Arc<Self>,
        snap: &Arc<Snapshot>,
        caller: &Caller,
        method: &str,
        params: Value,
    ) -> Result<Answer, A2aError> {
        let inbox = self;
        match method {
            "SendMessage" => send(inbox, snap, caller, params, false).await,
            "SendStreamingMessage" => send(inbox, snap, caller, params, true).await,
            "GetTask" => {
                let p: TaskParams = parse(params)?;
                let history = history_length(p.history_length)?;
                let mut task = view(snap, &load(inbox, caller, &p.id).await?).0;
                state::limit_history(&mut task, history);
                Ok(Answer::Result(to_value(&task)))
            }
            "ListTasks" => list(inbox, snap, caller, parse(params)?).await,
            "CancelTask" => cancel(inbox, snap, caller, parse(params)?).await,
            "SubscribeToTask" => {
                let p: TaskParams = parse(params)?;
                let record = load(inbox, caller, &p.id).await?;
                let state = view(snap, &record).0.status.state;
                if state.is_terminal() {
                    return Err(A2aError::Unsupported(format!(
                        "task {} is {}: a finished task has nothing to stream",
                        p.id,
                        state.as_str()
                    )));
                }
                Ok(Answer::Stream(stream(inbox, p.id, false)))
            }
            "CreateTaskPushNotificationConfig"
            | "GetTaskPushNotificationConfig"
            | "ListTaskPushNotificationConfigs"
            | "DeleteTaskPushNotificationConfig" => {
                push::call(inbox, snap, caller, method, params).await
            }
            "GetExtendedAgentCard" => Err(A2aError::ExtendedCardNotConfigured),
            other => Err(A2aError::MethodNotFound(other.chars().take(100).collect())),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, A2aError> {
    serde_json::from_value(params).map_err(|e| A2aError::InvalidParams(e.to_string()))
}

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn history_length(n: Option<i64>) -> Result<Option<u32>, A2aError> {
    match n {
        None => Ok(None),
        Some(n) if n < 0 => Err(A2aError::InvalidParams(
            "historyLength must not be negative".into(),
        )),
        Some(n) => Ok(Some(n.min(u32::MAX as i64) as u32)),
    }
}

/// The task as A2A shows it, with the config in force.
fn view(snap: &Snapshot, record: &TaskRecord) -> (Task, i64) {
    state::view(record, snap.config.routes.get(&record.task.route))
}

/// A task the caller may see: its own, or any for the admin. Another peer's is "not found".
async fn load(inbox: &Inbox, caller: &Caller, id: &str) -> Result<TaskRecord, A2aError> {
    // A malformed id names no task; it is not echoed, so no client text reaches the answer or a log.
    let not_found = || {
        A2aError::TaskNotFound(if crate::model::valid_thread_ref(id) {
            id.to_owned()
        } else {
            "(a malformed task id)".to_owned()
        })
    };
    if !crate::model::valid_thread_ref(id) {
        return Err(not_found());
    }
    let record = inbox.store.task(id).await?.ok_or_else(not_found)?;
    match caller {
        Caller::Admin => Ok(record),
        Caller::Peer(p) if *p == record.task.owner => Ok(record),
        Caller::Peer(_) => Err(not_found()),
    }
}

/// `SendMessage` and `SendStreamingMessage`: the message becomes an inbox message (through
/// [`Inbox::accept`]) of a new task or of the task it names, and the answer is the task (now, at
/// its end, or as a stream).
async fn send(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    params: Value,
    streaming: bool,
) -> Result<Answer, A2aError> {
    let peer = sender(caller)?;
    let body = params.get("message").cloned().unwrap_or(Value::Null);
    let p: SendParams = parse(params)?;
    check_message(&p.message)?;
    let inline_push = inline_push_config(snap, &p).await?;
    let history = history_length(p.configuration.history_length)?;
    let payload = payload_of(&p.message)?;
    let now = now_ms();
    let target = target_task(inbox, snap, caller, peer, &p, now).await?;
    let input = TaskInput {
        task_id: target.task_id.clone(),
        message_id: None,
        client_message_id: p.message.message_id.clone(),
        body: body.to_string(),
        at: now,
    };
    let incoming = incoming(snap, peer, &p.message, &target, &input, payload)?;
    let (task_id, committed) = commit(inbox, snap, caller, incoming, target, input).await?;
    if let Some(c) = inline_push {
        let config = push::checked(snap, &task_id, c).await?;
        inbox.store.put_push_config(config).await?;
        push::push_task(inbox, &task_id).await;
    }
    if streaming {
        return Ok(Answer::Stream(stream(inbox, task_id, true)));
    }
    let mut task = if p.configuration.return_immediately {
        match committed {
            Some(record) => view(snap, &record).0,
            None => view(snap, &load(inbox, caller, &task_id).await?).0,
        }
    } else {
        let max = snap
            .config
            .a2a
            .as_ref()
            .map_or(crate::config::DEFAULT_A2A_MAX_WAIT, |a| a.max_wait);
        watch(inbox, &task_id, true, None, Some(max)).await?
    };
    state::limit_history(&mut task, history);
    Ok(Answer::Result(json!({ "task": task })))
}

/// The peer a message comes from; the admin sends none.
fn sender(caller: &Caller) -> Result<&String, A2aError> {
    match caller {
        Caller::Peer(peer) => Ok(peer),
        Caller::Admin => Err(A2aError::Unsupported(
            "the admin has no peer identity to send as; use a peer's A2A token".into(),
        )),
    }
}

/// The message's ids and role are ones the inbox takes.
fn check_message(m: &a2a_json::InMessage) -> Result<(), A2aError> {
    if !crate::model::valid_dedup_id(&m.message_id) {
        return Err(A2aError::InvalidParams(format!(
            "message.messageId must be {DEDUP_ID_RULE}"
        )));
    }
    if m.context_id
        .as_deref()
        .is_some_and(|c| !crate::model::valid_thread_ref(c))
    {
        return Err(A2aError::InvalidParams(format!(
            "message.contextId must be {THREAD_REF_RULE}"
        )));
    }
    match m.role.as_deref() {
        None | Some("ROLE_USER") => Ok(()),
        Some(other) => Err(A2aError::InvalidParams(format!(
            "message.role is {other:?}; a client's message is ROLE_USER"
        ))),
    }
}

/// An inline push config, checked before anything is accepted (it is stored once the task is).
async fn inline_push_config(
    snap: &Snapshot,
    p: &SendParams,
) -> Result<Option<push::ConfigParams>, A2aError> {
    let Some(v) = p.configuration.task_push_notification_config.clone() else {
        return Ok(None);
    };
    let c = parse::<push::ConfigParams>(v)?;
    push::checked(snap, "", c.clone()).await?;
    Ok(Some(c))
}

/// Where a message goes: the task it continues, or a new one.
struct Target {
    route: String,
    context_id: String,
    task_id: String,
    /// The task this message starts, if it starts one.
    new: Option<crate::model::Task>,
}

/// The task the message continues (the caller's, in its context, not finished), or a new task
/// at the route of the skill it names.
async fn target_task(
    inbox: &Inbox,
    snap: &Snapshot,
    caller: &Caller,
    peer: &str,
    p: &SendParams,
    now: i64,
) -> Result<Target, A2aError> {
    let m = &p.message;
    if let Some(task_id) = &m.task_id {
        let record = load(inbox, caller, task_id).await?;
        if m.context_id
            .as_ref()
            .is_some_and(|c| *c != record.task.context_id)
        {
            return Err(A2aError::InvalidParams(format!(
                "contextId {:?} is not task {task_id}'s context",
                m.context_id.as_deref().unwrap_or("")
            )));
        }
        let state = view(snap, &record).0.status.state;
        if state.is_terminal() {
            return Err(A2aError::Unsupported(format!(
                "task {task_id} is {}: a finished task takes no more messages",
                state.as_str()
            )));
        }
        return Ok(Target {
            route: record.task.route,
            context_id: record.task.context_id,
            task_id: task_id.clone(),
            new: None,
        });
    }
    let skill = [m.metadata.as_ref(), p.metadata.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|md| md.get("skill").or_else(|| md.get("skillId")))
        .map(|v| v.as_str().unwrap_or_default().to_owned());
    let route = pick_route(snap, peer, skill.as_deref())?;
    let context_id = m.context_id.clone().unwrap_or_else(new_id);
    let task = crate::model::Task {
        id: new_id(),
        owner: peer.to_owned(),
        context_id: context_id.clone(),
        route: route.clone(),
        created_at: now,
        rejected: None,
        canceled_at: None,
    };
    Ok(Target {
        route,
        context_id,
        task_id: task.id.clone(),
        new: Some(task),
    })
}

/// The inbox message an A2A message becomes: the skill's type, the task's context as its
/// thread, and its `messageId` (in a namespace of its own) as its idempotency key.
fn incoming(
    snap: &Snapshot,
    peer: &str,
    m: &a2a_json::InMessage,
    target: &Target,
    input: &TaskInput,
    payload: Value,
) -> Result<Incoming, A2aError> {
    let route = &target.route;
    let Some(settings) = snap.config.routes.get(route).and_then(|r| r.a2a.as_ref()) else {
        return Err(A2aError::Unsupported(format!(
            "the task's skill (route {route}) is no longer offered"
        )));
    };
    Ok(Incoming {
        sender: peer.to_owned(),
        envelope: Envelope {
            msg_type: settings.msg_type.clone(),
            payload: payload.to_string(),
            id: Some(m.message_id.clone()),
            thread_id: Some(target.context_id.clone()),
            in_reply_to: None,
            hops: 0,
        },
        // Its own namespace, so an A2A messageId never matches a /message id.
        idempotency_key: Some(format!("a2a:{}", m.message_id)),
        route: Some(route.clone()),
        task: Some(TaskLink {
            new: target.new.clone(),
            input: input.clone(),
        }),
    })
}

/// Accepts the message, and says which task it belongs to: a repeat answers with its original
/// task, a message the route's plugin rejects still records a new task (as rejected). With the
/// id, a new task's record as committed, when nothing else touched it (answered without a read).
async fn commit(
    inbox: &Inbox,
    snap: &Snapshot,
    caller: &Caller,
    incoming: Incoming,
    target: Target,
    input: TaskInput,
) -> Result<(String, Option<TaskRecord>), A2aError> {
    let client_message_id = input.client_message_id.clone();
    match inbox.accept(snap, incoming).await {
        Ok(ack) if ack.status == AckStatus::Duplicate => {
            let Some(original) = inbox.store.task_of_message(&ack.id).await? else {
                return Err(A2aError::InvalidParams(format!(
                    "messageId {client_message_id:?} was already used"
                )));
            };
            tracing::info!(task = %original, message_id = %client_message_id, "repeated A2A message; answering with its task");
            // The original task, as its owner may read it.
            Ok((load(inbox, caller, &original).await?.task.id, None))
        }
        Ok(ack) => {
            let committed = target
                .new
                .as_ref()
                .map(|task| just_committed(task, input, ack.id));
            Ok((target.task_id, committed))
        }
        Err(InboxError::Hook(HookError::Rejected { reason, plugin, .. })) => match target.new {
            Some(mut task) => {
                tracing::info!(task = %task.id, plugin = %plugin, "A2A task rejected by the route's plugin");
                task.rejected = Some(reason);
                inbox.store.insert_task(task, input).await?;
                Ok((target.task_id, None))
            }
            None => Err(A2aError::InvalidParams(reason)),
        },
        Err(e @ (InboxError::QueueFull { .. } | InboxError::ShuttingDown)) => {
            Err(A2aError::Internal(format!("{e}; try again later")))
        }
        Err(InboxError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "a2a: message refused");
            Err(A2aError::Internal(e.to_string()))
        }
    }
}

/// A new task as its commit left it: one input, its turn queued, no reply.
fn just_committed(
    task: &crate::model::Task,
    mut input: TaskInput,
    message_id: String,
) -> TaskRecord {
    input.message_id = Some(message_id.clone());
    let turn = crate::model::Turn {
        state: crate::model::TurnState::Queued,
        attempts: 0,
        exit_code: None,
        signal: None,
        error: None,
        duration_ms: None,
        stdout_tail: None,
        stderr_tail: None,
        queued_at: input.at,
        started_at: None,
        ended_at: None,
        canceled: None,
    };
    TaskRecord {
        task: task.clone(),
        inputs: vec![input],
        turns: vec![(message_id, turn)],
        replies: Vec::new(),
        held: false,
    }
}

/// The route a new task goes to: the skill the message names, else the peer's default skill,
/// else its only one.
fn pick_route(snap: &Snapshot, peer: &str, skill: Option<&str>) -> Result<String, A2aError> {
    let mine: Vec<(&String, &crate::config::RouteA2a)> = snap
        .config
        .routes
        .iter()
        .filter(|(_, r)| r.from.iter().any(|f| f == peer))
        .filter_map(|(n, r)| r.a2a.as_ref().map(|a| (n, a)))
        .collect();
    let names = || {
        let s: Vec<&str> = mine.iter().map(|(_, a)| a.skill.as_str()).collect();
        if s.is_empty() {
            "none".to_owned()
        } else {
            s.join(", ")
        }
    };
    if let Some(skill) = skill {
        return mine
            .iter()
            .find(|(_, a)| a.skill == skill)
            .map(|(n, _)| (*n).clone())
            .ok_or_else(|| {
                A2aError::InvalidParams(format!(
                    "unknown skill {skill:?}; skills you may use: {}",
                    names()
                ))
            });
    }
    if let Some((n, _)) = mine.iter().find(|(_, a)| a.default) {
        return Ok((*n).clone());
    }
    match mine.as_slice() {
        [(n, _)] => Ok((*n).clone()),
        [] => Err(A2aError::InvalidParams(format!(
            "no skill here takes messages from peer {peer}"
        ))),
        _ => Err(A2aError::InvalidParams(format!(
            "name a skill in message.metadata.skill; skills you may use: {}",
            names()
        ))),
    }
}

/// Most bytes of one `raw` part kept inline in the payload (decoded); a larger one is refused.
const MAX_RAW_BYTES: usize = 64 * 1024;

/// The payload an A2A message becomes: its text parts joined (`text`), its data parts (`data`,
/// a list), its inline files (`files`: `raw` parts as `{mediaType, filename, raw}` with the bytes
/// still base64, up to [`MAX_RAW_BYTES`] each; `text/*` ones are read as text and
/// `application/json` ones as data), and its metadata. A `url` part is refused: the inbox fetches
/// nothing on a client's behalf.
fn payload_of(m: &a2a_json::InMessage) -> Result<Value, A2aError> {
    if m.parts.is_empty() {
        return Err(A2aError::InvalidParams(
            "message.parts must not be empty".into(),
        ));
    }
    let (mut texts, mut data, mut files) = (Vec::new(), Vec::new(), Vec::new());
    for (i, p) in m.parts.iter().enumerate() {
        let set = [
            p.text.is_some(),
            p.raw.is_some(),
            p.url.is_some(),
            p.data.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(A2aError::InvalidParams(format!(
                "message.parts[{i}] must have exactly one of text, raw, url and data"
            )));
        }
        let media = p.media_type.as_deref().unwrap_or("");
        if let Some(t) = &p.text {
            texts.push(t.clone());
        } else if let Some(d) = &p.data {
            data.push(d.clone());
        } else if let Some(raw) = &p.raw {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|e| {
                    A2aError::InvalidParams(format!("message.parts[{i}].raw is not base64: {e}"))
                })?;
            if bytes.len() > MAX_RAW_BYTES {
                return Err(A2aError::ContentType(format!(
                    "message.parts[{i}]: {} bytes of raw content, over the {MAX_RAW_BYTES}-byte limit for an inline file",
                    bytes.len()
                )));
            }
            let essence = media.split(';').next().unwrap_or("").trim();
            let as_text = essence
                .starts_with("text/")
                .then(|| String::from_utf8(bytes.clone()).ok())
                .flatten();
            let as_json = (essence == "application/json")
                .then(|| serde_json::from_slice::<Value>(&bytes).ok())
                .flatten();
            if let Some(t) = as_text {
                texts.push(t);
            } else if let Some(v) = as_json {
                data.push(v);
            } else {
                let mut f = serde_json::Map::new();
                f.insert("raw".into(), Value::String(raw.clone()));
                if !media.is_empty() {
                    f.insert("mediaType".into(), Value::String(media.to_owned()));
                }
                if let Some(name) = &p.filename {
                    f.insert("filename".into(), Value::String(name.clone()));
                }
                files.push(Value::Object(f));
            }
        } else {
            return Err(A2aError::ContentType(format!(
                "message.parts[{i}]: url parts are not fetched; send the content inline (text, data, or raw up to {MAX_RAW_BYTES} bytes)"
            )));
        }
    }
    let mut payload = serde_json::Map::new();
    if !texts.is_empty() {
        payload.insert("text".into(), Value::String(texts.join("\n\n")));
    }
    if !data.is_empty() {
        payload.insert("data".into(), Value::Array(data));
    }
    if !files.is_empty() {
        payload.insert("files".into(), Value::Array(files));
    }
    if let Some(md) = &m.metadata {
        payload.insert("metadata".into(), Value::Object(md.clone()));
    }
    Ok(Value::Object(payload))
}

async fn list(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    p: ListParams,
) -> Result<Answer, A2aError> {
    let page_size = match p.page_size {
        None | Some(0) => PAGE_DEFAULT,
        Some(n) if !(1..=PAGE_MAX).contains(&n) => {
            return Err(A2aError::InvalidParams(format!(
                "pageSize must be 1 to {PAGE_MAX}"
            )));
        }
        Some(n) => n,
    } as usize;
    let history = history_length(p.history_length)?;
    let status = match p.status.as_deref() {
        None | Some("" | "TASK_STATE_UNSPECIFIED") => None,
        Some(s) => Some(
            TaskState::ALL
                .into_iter()
                .find(|t| t.as_str() == s)
                .ok_or_else(|| {
                    A2aError::InvalidParams(format!("status {s:?} is not a task state"))
                })?,
        ),
    };
    let after = match p.status_timestamp_after.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            humantime::parse_rfc3339_weak(t)
                .map_err(|e| A2aError::InvalidParams(format!("statusTimestampAfter {t:?}: {e}")))?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        ),
    };
    // The cursor is the last task's (status time, id): tasks are ordered by status time, newest
    // first, then id.
    let cursor = match p.page_token.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            t.split_once('.')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| {
                    A2aError::InvalidParams("pageToken is not one this server gave".into())
                })?,
        ),
    };
    let records = inbox
        .store
        .tasks(TaskFilter {
            owner: match caller {
                Caller::Peer(p) => Some(p.clone()),
                Caller::Admin => None,
            },
            context_id: p.context_id.clone().filter(|c| !c.is_empty()),
            limit: LIST_WINDOW,
        })
        .await?;
    let mut tasks: Vec<(Task, i64)> = records
        .iter()
        .map(|r| view(snap, r))
        .filter(|(t, at)| {
            status.is_none_or(|s| t.status.state == s) && after.is_none_or(|a| *at > a)
        })
        .collect();
    tasks.sort_by(|(a, at_a), (b, at_b)| at_b.cmp(at_a).then_with(|| b.id.cmp(&a.id)));
    let total = tasks.len();
    let start = match &cursor {
        None => 0,
        Some((at, id)) => tasks
            .iter()
            .position(|(t, t_at)| (*t_at, t.id.as_str()) < (*at, id.as_str()))
            .unwrap_or(total),
    };
    let page: Vec<(Task, i64)> = tasks.into_iter().skip(start).take(page_size).collect();
    let next = if start + page.len() < total {
        page.last()
            .map(|(t, at)| format!("{at}.{}", t.id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let include_artifacts = p.include_artifacts.unwrap_or(false);
    let tasks = page
        .into_iter()
        .map(|(mut t, _)| {
            if !include_artifacts {
                t.artifacts = None;
            }
            state::limit_history(&mut t, history);
            t
        })
        .collect();
    Ok(Answer::Result(to_value(&ListTasksResponse {
        tasks,
        next_page_token: next,
        page_size: page_size as u32,
        total_size: total as u32,
    })))
}

async fn cancel(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    p: TaskParams,
) -> Result<Answer, A2aError> {
    let record = load(inbox, caller, &p.id).await?;
    let state = view(snap, &record).0.status.state;
    if state.is_terminal() {
        return Err(A2aError::TaskNotCancelable(state.as_str()));
    }
    if let Some(canceled) = inbox.store.cancel_task(&p.id, now_ms()).await?
        && let Some((message_id, route, was)) = canceled.turn
    {
        let stopped = inbox.turns.cancel(&message_id);
        tracing::info!(task = %p.id, message_id = %message_id, was = %was, stopped, "A2A task cancelled");
        inbox.events.publish(Event::TurnEnded {
            message_id,
            route,
            thread_id: None,
            state: crate::model::TurnState::Canceled,
            exit_code: None,
            error: Some("canceled".into()),
        });
    }
    let task = view(snap, &load(inbox, caller, &p.id).await?).0;
    Ok(Answer::Result(to_value(&task)))
}

/// Streams a task: the task first, then its changes, until it ends (or, with
/// `stop_on_interrupted`, waits for input).
fn stream(
    inbox: &Arc<Inbox>,
    task_id: String,
    stop_on_interrupted: bool,
) -> mpsc::Receiver<StreamResponse> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let inbox = inbox.clone();
    // Bounded by connections: each stream is one open request.
    tokio::spawn(async move {
        if let Err(e) = watch(&inbox, &task_id, stop_on_interrupted, Some(tx), None).await {
            tracing::warn!(task = %task_id, error = %e, "a2a: stream ended early");
        }
    });
    rx
}

/// Follows a task until it ends (or waits for input, with `stop_on_interrupted`), `max_wait`
/// passes, the client goes, or the inbox drains; sends what changes to `tx` if given. Returns
/// the task as it then stands.
async fn watch(
    inbox: &Arc<Inbox>,
    task_id: &str,
    stop_on_interrupted: bool,
    tx: Option<mpsc::Sender<StreamResponse>>,
    max_wait: Option<Duration>,
) -> Result<Task, A2aError> {
    let deadline = max_wait.map(|w| tokio::time::Instant::now() + w);
    // Subscribed before the first read, so no change falls between the read and the wait.
    let mut events = inbox.events.subscribe();
    // The task's context is its owner's name for an inbox thread, which events carry.
    let thread = {
        let record = load(inbox, &Caller::Admin, task_id).await?;
        inbox
            .store
            .thread_of(&record.task.owner, &record.task.context_id)
            .await?
    };
    let mut last: Option<Task> = None;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let snap = inbox.active.load_full();
        let record = load(inbox, &Caller::Admin, task_id).await?;
        let (task, _) = view(&snap, &record);
        if let Some(tx) = &tx {
            let mut out = Vec::new();
            match &last {
                None => {
                    seen.extend(
                        task.artifacts
                            .iter()
                            .flatten()
                            .map(|a| a.artifact_id.clone()),
                    );
                    out.push(StreamResponse::Task(task.clone()));
                }
                Some(prev) => {
                    for a in task.artifacts.iter().flatten() {
                        if seen.insert(a.artifact_id.clone()) {
                            out.push(StreamResponse::ArtifactUpdate(a2a_json::ArtifactUpdate {
                                task_id: task.id.clone(),
                                context_id: task.context_id.clone(),
                                artifact: a.clone(),
                                append: false,
                                last_chunk: true,
                            }));
                        }
                    }
                    if prev.status != task.status {
                        out.push(StreamResponse::StatusUpdate(StatusUpdate {
                            task_id: task.id.clone(),
                            context_id: task.context_id.clone(),
                            status: task.status.clone(),
                        }));
                    }
                }
            }
            for item in out {
                if tx.send(item).await.is_err() {
                    return Ok(task);
                }
            }
        }
        let state = task.status.state;
        let timed_out = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        if state.is_terminal()
            || (stop_on_interrupted && state.is_interrupted())
            || timed_out
            || inbox.shutdown.is_draining()
        {
            return Ok(task);
        }
        let ids: HashSet<&str> = record
            .inputs
            .iter()
            .filter_map(|i| i.message_id.as_deref())
            .collect();
        last = Some(task);
        let relevant = |e: &Event| match e {
            // A task's first message makes its thread: until it is known, any message may be it.
            Event::MessageAccepted { thread_id, .. } => {
                thread.as_ref().is_none_or(|t| t == thread_id)
            }
            Event::TurnStarted { message_id, .. } | Event::TurnEnded { message_id, .. } => {
                ids.contains(message_id.as_str())
            }
            Event::OutboundQueued { in_reply_to, .. }
            | Event::ApprovalDecided {
                message_id: in_reply_to,
                ..
            } => in_reply_to.as_deref().is_some_and(|m| ids.contains(m)),
            _ => false,
        };
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(e) if relevant(&e) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + POLL);
        tokio::select! {
            () = wait => {}
            () = tokio::time::sleep(POLL) => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}
