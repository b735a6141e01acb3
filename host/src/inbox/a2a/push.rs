//! Push notifications: the configs a client sets on its tasks, and the loop that turns each change
//! of a task into one push through each of them.
//!
//! A push is an outbound message of the relay's outbox (delivered, retried on the schedule, dead
//! letters, `outbox retry`) addressed to the config. Which state a config last carried is stored
//! with it, and recorded in the same transaction that queues the push, so a change is pushed once
//! even with several hosts, and a change that a crash interrupted is pushed by the next sweep.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::{Answer, load, parse, view};
use crate::a2a::{A2aError, Caller};
use crate::events::Event;
use crate::inbox::Inbox;
use crate::model::{Outbound, PushConfig, new_id, now_ms};
use crate::snapshot::Snapshot;
use crate::store::Push;

/// How often every task with a push pending is looked at, events or not (another host may have
/// changed it, or a crash cut a push short).
const SWEEP: Duration = Duration::from_secs(2);
/// Tasks looked at per sweep.
const SWEEP_BATCH: u32 = 200;
/// Push configs one task may have.
const MAX_CONFIGS: usize = 10;
/// How a stored secret is shown.
const MASK: &str = "********";

/// `TaskPushNotificationConfig` as a client sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConfigParams {
    #[serde(alias = "task_id", default)]
    pub(super) task_id: String,
    pub(super) id: Option<String>,
    pub(super) url: String,
    pub(super) token: Option<String>,
    pub(super) authentication: Option<Authentication>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Authentication {
    scheme: String,
    credentials: Option<String>,
}

/// `GetTaskPushNotificationConfigRequest`, `DeleteTaskPushNotificationConfigRequest`,
/// `ListTaskPushNotificationConfigsRequest`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigRef {
    #[serde(alias = "task_id")]
    task_id: String,
    #[serde(default)]
    id: String,
}

/// A config as it is shown: its secrets masked.
fn shown(c: &PushConfig) -> Value {
    let mut v = json!({"id": c.id, "taskId": c.task_id, "url": c.url});
    if c.token.is_some() {
        v["token"] = json!(MASK);
    }
    if let Some(scheme) = &c.auth_scheme {
        v["authentication"] = json!({"scheme": scheme, "credentials": MASK});
    }
    v
}

/// Checks a config a client gave for `task_id` and makes it ready to store.
pub(super) async fn checked(
    snap: &Snapshot,
    task_id: &str,
    p: ConfigParams,
) -> Result<PushConfig, A2aError> {
    let allow_private = snap
        .config
        .a2a
        .as_ref()
        .is_some_and(|a| a.allow_private_push_urls);
    crate::ssrf::check_url(&p.url, allow_private)
        .await
        .map_err(|e| A2aError::InvalidParams(format!("push url: {e}")))?;
    let id = match p.id.filter(|i| !i.is_empty()) {
        Some(id) if !crate::model::valid_dedup_id(&id) || id.contains('/') => {
            return Err(A2aError::InvalidParams(format!(
                "a push config id is {}, without '/'",
                crate::wire::DEDUP_ID_RULE
            )));
        }
        Some(id) => id,
        None => new_id(),
    };
    let header_safe = |s: &str| s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let (auth_scheme, credentials) = match p.authentication {
        Some(a) => (Some(a.scheme), a.credentials),
        None => (None, None),
    };
    for value in [&p.token, &auth_scheme, &credentials].into_iter().flatten() {
        if !header_safe(value) || value.len() > 4096 {
            return Err(A2aError::InvalidParams(
                "push token and credentials must be printable ASCII, at most 4096 bytes".into(),
            ));
        }
    }
    Ok(PushConfig {
        task_id: task_id.to_owned(),
        id,
        url: p.url,
        token: p.token,
        auth_scheme,
        credentials,
        created_at: now_ms(),
    })
}

/// The four push config methods.
pub(super) async fn call(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    method: &str,
    params: Value,
) -> Result<Answer, A2aError> {
    match method {
        "CreateTaskPushNotificationConfig" => {
            let p: ConfigParams = parse(params)?;
            let task = load(inbox, caller, &p.task_id).await?.task;
            let config = checked(snap, &task.id, p).await?;
            let existing = inbox.store.push_configs(&task.id, false).await?;
            if existing.len() >= MAX_CONFIGS && !existing.iter().any(|c| c.id == config.id) {
                return Err(A2aError::InvalidParams(format!(
                    "a task has at most {MAX_CONFIGS} push configs"
                )));
            }
            inbox.store.put_push_config(config.clone()).await?;
            tracing::info!(task = %task.id, config = %config.id, "push config set");
            push_task(inbox, &task.id).await;
            Ok(Answer::Result(shown(&config)))
        }
        "GetTaskPushNotificationConfig" => {
            let r: ConfigRef = parse(params)?;
            load(inbox, caller, &r.task_id).await?;
            let config = inbox
                .store
                .push_config(&r.task_id, &r.id)
                .await?
                .ok_or_else(|| A2aError::TaskNotFound(format!("push config {:?}", r.id)))?;
            Ok(Answer::Result(shown(&config)))
        }
        "ListTaskPushNotificationConfigs" => {
            let r: ConfigRef = parse(params)?;
            load(inbox, caller, &r.task_id).await?;
            let configs = inbox.store.push_configs(&r.task_id, false).await?;
            Ok(Answer::Result(json!({
                "configs": configs.iter().map(shown).collect::<Vec<_>>(),
                "nextPageToken": "",
            })))
        }
        "DeleteTaskPushNotificationConfig" => {
            let r: ConfigRef = parse(params)?;
            load(inbox, caller, &r.task_id).await?;
            // Idempotent: deleting one that is gone is done too.
            inbox.store.delete_push_config(&r.task_id, &r.id).await?;
            Ok(Answer::Result(json!({})))
        }
        other => Err(A2aError::MethodNotFound(other.to_owned())),
    }
}

/// Queues a push of `task_id`'s current state through each of its configs that has not carried
/// that state yet.
pub(super) async fn push_task(inbox: &Arc<Inbox>, task_id: &str) {
    if let Err(e) = try_push(inbox, task_id).await {
        tracing::warn!(task = %task_id, error = %e, "a2a: cannot queue a push; the next sweep retries");
    }
}

async fn try_push(inbox: &Arc<Inbox>, task_id: &str) -> Result<(), A2aError> {
    let configs = inbox.store.push_configs(task_id, true).await?;
    if configs.is_empty() {
        return Ok(());
    }
    let Some(record) = inbox.store.task(task_id).await? else {
        return Ok(());
    };
    let snap = inbox.active.load_full();
    let (task, _) = view(&snap, &record);
    let state = task.status.state;
    let key = format!(
        "{}@{}#{}",
        state.as_str(),
        task.status.timestamp,
        task.artifacts.as_ref().map_or(0, Vec::len)
    );
    let body = json!({ "task": task }).to_string();
    // The context is the owner's name for the thread; the outbox records the inbox's own.
    let thread = inbox
        .store
        .thread_of(&record.task.owner, &record.task.context_id)
        .await?
        .unwrap_or_else(|| record.task.context_id.clone());
    let mut queued = false;
    for c in configs {
        let outbound = Outbound {
            id: new_id(),
            // Not an answer to a message: a push is no artifact of the task.
            in_reply_to: None,
            route: Some(record.task.route.clone()),
            msg_type: "A2A_PUSH".into(),
            payload: body.clone(),
            thread_id: thread.clone(),
            hops: 0,
            created_at: now_ms(),
            agent: None,
        };
        let push = Push {
            outbound,
            task_id: task_id.to_owned(),
            config_id: c.id.clone(),
            state_key: key.clone(),
            last: state.is_terminal(),
        };
        if inbox.store.enqueue_push(push).await? {
            tracing::info!(task = %task_id, config = %c.id, state = state.as_str(), "push queued");
            queued = true;
        }
    }
    if queued {
        inbox.relay.wake();
    }
    Ok(())
}

impl Inbox {
    /// Pushes task changes until `stop`: on each event about a task's message, and in a sweep of
    /// every task with a push pending.
    pub async fn push_loop(self: Arc<Self>, stop: watch::Receiver<bool>) {
        run(self, stop).await
    }
}

async fn run(inbox: Arc<Inbox>, mut stop: watch::Receiver<bool>) {
    let mut events: Option<broadcast::Receiver<Event>> = None;
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        // The feed is followed only while `[a2a]` is on. Off, no task is made and the sweep
        // pushes what older tasks still change. On, it follows the events after acceptance
        // only: a loop woken by every accepted message cost ~2% of an ack's CPU (BENCHMARKS.md),
        // and a task's state changes only when its turn or a reply to it does.
        let on = inbox.active.load().config.a2a.is_some();
        if on != events.is_some() {
            events = on.then(|| inbox.events.subscribe_later());
        }
        tokio::select! {
            e = next(&mut events) => match e {
                Ok(Event::TurnStarted { message_id, .. } | Event::TurnEnded { message_id, .. }) => {
                    on_message(&inbox, &message_id).await;
                }
                Ok(Event::OutboundQueued { in_reply_to: Some(message_id), .. }
                    | Event::ApprovalDecided { message_id: Some(message_id), .. }) => {
                    on_message(&inbox, &message_id).await;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => sweep_all(&inbox).await,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = sweep.tick() => sweep_all(&inbox).await,
            _ = stop.changed() => return,
        }
    }
}

/// The next event, or never without a subscription.
async fn next(
    events: &mut Option<broadcast::Receiver<Event>>,
) -> Result<Event, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn on_message(inbox: &Arc<Inbox>, message_id: &str) {
    match inbox.store.task_of_message(message_id).await {
        Ok(Some(task)) => push_task(inbox, &task).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "a2a: cannot find a message's task"),
    }
}

async fn sweep_all(inbox: &Arc<Inbox>) {
    match inbox.store.push_pending(SWEEP_BATCH).await {
        Ok(tasks) => {
            for t in tasks {
                push_task(inbox, &t).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "a2a: cannot read pending pushes"),
    }
}
