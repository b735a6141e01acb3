//! A person in the loop: what waits for approval, the decisions on it (approve, edit, reject,
//! with who and when), the timeout that rejects what nobody decided, and the command that tells
//! someone an item waits.
//!
//! What waits is durable state behind `Store` (a message's turn in `awaiting_approval`, a reply's
//! deliveries `held`, an `approvals` row each), so it survives a restart, and a decision is one
//! store write that also releases or ends what it decides on: on a shared store, whichever host
//! then claims the turn or the delivery runs it. This module only acts on what that write did.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::events::{Event, Events};
use crate::model::{
    Approval, ApprovalKind, Decide, Message, TurnEnd, TurnError, TurnState, Verdict, now_ms,
};
use crate::relay::Relay;
use crate::snapshot::Active;
use crate::store::{Decided, Store, StoreError};
use crate::turns::Turns;

/// Items waiting to be announced by `notify_command`; past this, announcements are dropped (and
/// counted), never waited for.
const NOTIFY_QUEUE: usize = 256;
/// How often the timeout sweep looks for items past their deadline.
pub const SWEEP: Duration = Duration::from_secs(1);
/// Items the sweep rejects per pass.
const SWEEP_BATCH: u32 = 100;
/// Who (and where) a timeout decides as.
pub const TIMEOUT: &str = "timeout";

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// Nothing with that id waits or waited.
    #[error("no held item has this id")]
    NotFound,
    /// Someone decided first.
    #[error("already {}: by {} at {}", .0.decision.as_ref().map_or("decided", |d| d.verdict.as_str()), .0.decision.as_ref().map_or("", |d| d.by.as_str()), .0.decision.as_ref().map_or(0, |d| d.at))]
    Already(Box<Approval>),
    /// The request does not make sense for this item.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A decision as a person asked for it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The held item.
    pub id: String,
    /// Approve or reject.
    pub verdict: Verdict,
    /// Who: the name the person gave.
    pub by: String,
    /// Where: `console` or `api`.
    pub via: &'static str,
    /// Why (required to reject).
    pub reason: Option<String>,
    /// A new payload for a held reply, to send instead of the agent's (approve only).
    pub payload: Option<serde_json::Value>,
}

/// An item that started waiting, for the notify command.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// The held message or reply.
    pub id: String,
    /// Which.
    pub kind: ApprovalKind,
    /// Its route (empty for a message a local agent started).
    pub route: String,
    /// Who sent the message (inbound), the agent's route (a reply), or the local agent that
    /// started it.
    pub sender: String,
    pub msg_type: String,
    pub thread_id: String,
    /// Why it waits.
    pub reason: String,
}

/// The approvals service; one per process.
pub struct Approvals {
    store: Store,
    active: Active,
    relay: Arc<Relay>,
    turns: Arc<Turns>,
    events: Events,
    notify: mpsc::Sender<Waiting>,
}

impl Approvals {
    /// The service, and the receiving end of its notify queue for [`Approvals::run_notifier`].
    pub fn new(
        store: Store,
        active: Active,
        relay: Arc<Relay>,
        turns: Arc<Turns>,
        events: Events,
    ) -> (Arc<Self>, mpsc::Receiver<Waiting>) {
        let (notify, rx) = mpsc::channel(NOTIFY_QUEUE);
        let me = Arc::new(Self {
            store,
            active,
            relay,
            turns,
            events,
            notify,
        });
        (me, rx)
    }

    /// Announces an item that has just been committed as waiting: the event, the metric, and the
    /// notify command (queued; never waited for).
    pub fn waiting(&self, w: Waiting) {
        tracing::info!(
            id = %w.id, kind = %w.kind, route = %w.route, thread = %w.thread_id,
            reason = %w.reason, "waiting for approval"
        );
        crate::metrics::get()
            .approvals_held
            .get_or_create(&crate::metrics::Held {
                route: w.route.clone(),
                kind: w.kind.as_str().to_owned(),
            })
            .inc();
        self.events.publish(Event::ApprovalWaiting {
            id: w.id.clone(),
            kind: w.kind,
            route: w.route.clone(),
            thread_id: w.thread_id.clone(),
            reason: w.reason.clone(),
        });
        if self.active.load().config.approval.notify_command.is_some()
            && self.notify.try_send(w).is_err()
        {
            crate::metrics::get().approval_notify_failures.inc();
            tracing::warn!("approval notify queue full; an announcement was dropped");
        }
    }

    /// Records a decision and acts on it: an approved turn is queued and woken, a rejected one
    /// ends `rejected` with a `TURN_FAILED` notice to the route's `reply_to` (as `on_failure`
    /// says); an approved reply is delivered (edited, if a payload is given), a rejected one is
    /// never sent.
    pub async fn decide(&self, req: Request) -> Result<Approval, DecideError> {
        let edited = match (&req.payload, req.verdict) {
            (None, _) => None,
            (Some(_), Verdict::Rejected) => {
                return Err(DecideError::Invalid(
                    "a payload goes with approve (an edited reply), not reject".into(),
                ));
            }
            (Some(p), Verdict::Approved) => Some(p.to_string()),
        };
        let reason = req
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if req.verdict == Verdict::Rejected && reason.is_none() {
            return Err(DecideError::Invalid(
                "a rejection needs a reason (it is sent with the TURN_FAILED notice, and kept)"
                    .into(),
            ));
        }
        if req.by.trim().is_empty() {
            return Err(DecideError::Invalid("say who decides (`by`)".into()));
        }
        if edited.is_some()
            && let Some(a) = self.store.approval(&req.id).await?
            && a.kind == ApprovalKind::Inbound
        {
            return Err(DecideError::Invalid(
                "only a held reply can be edited; an inbound message is approved as it came".into(),
            ));
        }
        let decide = Decide {
            id: req.id,
            verdict: req.verdict,
            by: req.by.trim().to_owned(),
            via: req.via.to_owned(),
            at: now_ms(),
            reason,
            edited,
        };
        self.record(decide).await
    }

    async fn record(&self, decide: Decide) -> Result<Approval, DecideError> {
        let approval = match self.store.decide(decide).await? {
            Decided::NotFound => return Err(DecideError::NotFound),
            Decided::Already(a) => return Err(DecideError::Already(Box::new(a))),
            Decided::Now(a) => a,
        };
        let Some(d) = &approval.decision else {
            return Ok(approval);
        };
        tracing::info!(
            id = %approval.id, kind = %approval.kind, route = %approval.route,
            verdict = %d.verdict, by = %d.by, via = %d.via,
            edited = d.original_payload.is_some(), "approval decided"
        );
        crate::metrics::get()
            .approval_decisions
            .get_or_create(&crate::metrics::Decided {
                route: approval.route.clone(),
                kind: approval.kind.as_str().to_owned(),
                verdict: d.verdict.as_str().to_owned(),
                via: d.via.clone(),
            })
            .inc();
        // The decision first, then what it lets happen: a follower reads them in that order.
        self.events.publish(Event::ApprovalDecided {
            id: approval.id.clone(),
            kind: approval.kind,
            route: approval.route.clone(),
            thread_id: approval.thread_id.clone(),
            message_id: approval.message_id.clone(),
            verdict: d.verdict,
            by: d.by.clone(),
        });
        match (approval.kind, d.verdict) {
            (ApprovalKind::Inbound, Verdict::Approved) => self.turns.wake(&approval.route),
            (ApprovalKind::Inbound, Verdict::Rejected) => {
                self.events.publish(Event::TurnEnded {
                    message_id: approval.id.clone(),
                    route: approval.route.clone(),
                    thread_id: Some(approval.thread_id.clone()),
                    state: TurnState::Rejected,
                    exit_code: None,
                    error: Some("rejected".into()),
                });
                if let Some(m) = self.store.message(&approval.id).await? {
                    self.notify_rejected(&m, d.reason.clone().unwrap_or_default())
                        .await?;
                }
            }
            (ApprovalKind::Outbound, Verdict::Approved) => {
                if let Some((o, deliveries)) = self.store.outbound(&approval.id).await? {
                    self.relay
                        .released(&o, deliveries.into_iter().map(|d| d.peer).collect());
                }
            }
            (ApprovalKind::Outbound, Verdict::Rejected) => {}
        }
        Ok(approval)
    }

    /// Tells the route's `reply_to` that the turn will not run, with the person's reason.
    async fn notify_rejected(&self, m: &Message, reason: String) -> Result<(), StoreError> {
        let snap = self.active.load_full();
        let to = match snap.config.routes.get(&m.route) {
            Some(r) if r.agent().is_some_and(|a| a.on_failure.notifies()) => r.reply_to.clone(),
            _ => Vec::new(),
        };
        let end = TurnEnd::failed(TurnState::Rejected, TurnError::new("rejected", reason));
        self.turns.notify_failure(m, &m.route, &end, to).await
    }

    /// Rejects, as `timeout`, every item past its deadline, every [`SWEEP`] until `stop`.
    pub async fn run_timeouts(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let expired = match self.store.expired_approvals(now_ms(), SWEEP_BATCH).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for approvals past their deadline");
                    continue;
                }
            };
            for id in expired {
                let decide = Decide {
                    id: id.clone(),
                    verdict: Verdict::Rejected,
                    by: TIMEOUT.into(),
                    via: TIMEOUT.into(),
                    at: now_ms(),
                    reason: Some("nobody decided before approval_timeout_secs ran out".into()),
                    edited: None,
                };
                match self.record(decide).await {
                    // Someone decided between the sweep's read and its write.
                    Ok(_) | Err(DecideError::Already(_) | DecideError::NotFound) => {}
                    Err(e) => tracing::warn!(id = %id, error = %e, "cannot time an approval out"),
                }
            }
        }
    }

    /// Runs `[approval] notify_command` for each item that starts waiting, one at a time, each
    /// bounded by `notify_timeout_secs`; a failure is logged and counted. Ends with `stop`, without
    /// waiting for a command still running (it is killed).
    pub async fn run_notifier(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Waiting>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let w = tokio::select! {
                w = rx.recv() => match w { Some(w) => w, None => return },
                _ = stop.changed() => return,
            };
            let snap = self.active.load_full();
            let approval = &snap.config.approval;
            let Some(argv) = &approval.notify_command else {
                continue;
            };
            let url = format!("{}/console", self.turns.base_url(&snap));
            let args = render(argv, &w, &url);
            // A stop does not wait for the command: dropping it kills it (kill_on_drop).
            let ran = tokio::select! {
                r = run_command(&args, approval.notify_timeout, &snap.config.secret_vars) => r,
                _ = stop.changed() => return,
            };
            if let Err(e) = ran {
                crate::metrics::get().approval_notify_failures.inc();
                tracing::warn!(id = %w.id, program = %args[0], error = %e, "approval notify_command failed");
            }
        }
    }
}

/// The notify command's argv with `{id}` `{kind}` `{route}` `{sender}` `{type}` `{thread_id}`
/// `{reason}` `{url}` replaced inside each argument (one argv entry each: no shell sees them).
fn render(argv: &[String], w: &Waiting, url: &str) -> Vec<String> {
    let values: HashMap<&str, &str> = [
        ("{id}", w.id.as_str()),
        ("{kind}", w.kind.as_str()),
        ("{route}", w.route.as_str()),
        ("{sender}", w.sender.as_str()),
        ("{type}", w.msg_type.as_str()),
        ("{thread_id}", w.thread_id.as_str()),
        ("{reason}", w.reason.as_str()),
        ("{url}", url),
    ]
    .into_iter()
    .collect();
    argv.iter()
        .map(|arg| {
            let mut out = String::with_capacity(arg.len());
            let mut rest = arg.as_str();
            // One pass, so a value that contains `{id}` is not replaced again.
            while let Some(start) = rest.find('{') {
                out.push_str(&rest[..start]);
                let tail = &rest[start..];
                match values
                    .iter()
                    .find(|(k, _)| tail.starts_with(**k))
                    .map(|(k, v)| (k.len(), *v))
                {
                    Some((len, v)) => {
                        out.push_str(v);
                        rest = &tail[len..];
                    }
                    None => {
                        out.push('{');
                        rest = &tail[1..];
                    }
                }
            }
            out.push_str(rest);
            out
        })
        .collect()
}

async fn run_command(args: &[String], timeout: Duration, secrets: &[String]) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new(&args[0]);
    cmd.args(&args[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Like an agent, the command never sees the inbox's secrets.
    for var in secrets {
        cmd.env_remove(var);
    }
    let child = cmd.spawn()?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => anyhow::bail!("still running after {} s; killed", timeout.as_secs()),
        Ok(out) => {
            let out = out?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: String = stderr
                    .chars()
                    .rev()
                    .take(500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                anyhow::bail!("{}: {}", out.status, tail.trim());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_once_inside_arguments() {
        let w = Waiting {
            id: "m-1".into(),
            kind: ApprovalKind::Inbound,
            route: "tasks".into(),
            sender: "tony".into(),
            msg_type: "TASK".into(),
            thread_id: "t-1".into(),
            reason: "looks odd {id}".into(),
        };
        let argv: Vec<String> = [
            "notify",
            "--text={kind} {type} from {sender}: {reason}",
            "{url}#{id}",
            "{nope}",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            render(&argv, &w, "http://x/console"),
            vec![
                "notify".to_owned(),
                "--text=inbound TASK from tony: looks odd {id}".to_owned(),
                "http://x/console#m-1".to_owned(),
                "{nope}".to_owned(),
            ]
        );
    }
}
