//! Turns a stop interrupted: those a previous run of the host left running, those whose host
//! stopped renewing their lease, and those a graceful stop could not wait for. Each is settled
//! once: run again (`on_interrupt = "rerun"`, once), or left `interrupted` and notified like any
//! failure. An attempt that has committed a reply is never run again: a turn is answered once.

use crate::config::{Driver, OnInterrupt};
use crate::model::{TurnEnd, TurnError, TurnState};
use crate::snapshot::Snapshot;
use crate::store::{Interrupted, Requeued, StoreError};

use super::Turns;

/// Times a turn following a remote A2A task may be interrupted and resumed.
const MAX_RESUMES: u32 = 10;

/// How an interrupted turn was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// Queued to run again.
    Rerun,
    /// Left `interrupted`, with its `TURN_FAILED` notice queued where the route says.
    Failed,
    /// Someone else settled it first (another host of a shared store).
    Already,
}

impl Turns {
    /// Settles interrupted turns; returns how many were re-queued and how many failed. Call
    /// before [`Turns::start`].
    pub async fn recover_interrupted(&self) -> Result<(usize, usize), StoreError> {
        let snap = self.active.load_full();
        let (mut rerun, mut failed) = (0, 0);
        for t in self.store.recover_interrupted().await? {
            match self.settle(&snap, t, "the host stopped").await? {
                Settled::Rerun => rerun += 1,
                Settled::Failed => failed += 1,
                Settled::Already => {}
            }
        }
        Ok((rerun, failed))
    }

    /// Whether an interrupted turn resumes a task at a remote A2A agent: its route still drives
    /// one and reruns what a stop interrupts, and the task is recorded and not over. It then runs
    /// again even after it replied (it repeats no answer), up to [`MAX_RESUMES`] times.
    async fn resumes(
        &self,
        settings: Option<&crate::config::AgentSettings>,
        t: &Interrupted,
    ) -> Result<bool, StoreError> {
        let Some(a) = settings else { return Ok(false) };
        if !matches!(a.driver, Driver::A2a(_))
            || a.on_interrupt != OnInterrupt::Rerun
            || t.attempts >= MAX_RESUMES
        {
            return Ok(false);
        }
        let key = format!("turn:{}", t.message_id);
        Ok(self.store.remote_task(&key).await?.is_some_and(|r| !r.done))
    }

    /// Settles one interrupted attempt (`how` says what stopped it, for the log and the notice).
    pub(super) async fn settle(
        &self,
        snap: &Snapshot,
        t: Interrupted,
        how: &str,
    ) -> Result<Settled, StoreError> {
        let route = snap.config.routes.get(&t.route);
        let settings = route.and_then(|r| r.agent());
        if self.resumes(settings, &t).await? {
            match self.store.resume(&t.message_id).await? {
                Requeued::NotInterrupted => return Ok(Settled::Already),
                _ => {
                    tracing::warn!(message_id = %t.message_id, route = %t.route, attempt = t.attempts, "turn interrupted ({how}); it resumes its remote task");
                    return Ok(Settled::Rerun);
                }
            }
        }
        let mut why = match settings.map(|a| a.on_interrupt) {
            _ if t.replied => Some(format!(
                "{how} while the agent ran, after it had replied; not run again, so the turn is answered once"
            )),
            Some(OnInterrupt::Rerun) if t.attempts < 2 => None,
            Some(OnInterrupt::Rerun) => {
                Some(format!("{how} while the agent ran, again after a re-run"))
            }
            Some(OnInterrupt::Fail) => Some(format!(
                "{how} while the agent ran (on_interrupt = \"fail\")"
            )),
            None => Some(format!("{how} while the agent ran, and the route is gone")),
        };
        if why.is_none() {
            match self.store.requeue(&t.message_id).await? {
                Requeued::Queued => {
                    tracing::warn!(message_id = %t.message_id, route = %t.route, attempt = t.attempts, "turn interrupted ({how}); it runs again");
                    return Ok(Settled::Rerun);
                }
                Requeued::Replied => {
                    why = Some(format!(
                        "{how} while the agent ran, and it replied meanwhile; not run again, so the turn is answered once"
                    ));
                }
                Requeued::NotInterrupted => return Ok(Settled::Already),
            }
        }
        let why = why.unwrap_or_default();
        let error = TurnError::new("interrupted", why);
        tracing::warn!(message_id = %t.message_id, route = %t.route, error = %error, "turn interrupted");
        self.store
            .fail_interrupted(&t.message_id, error.clone())
            .await?;
        let Some(message) = self.store.message(&t.message_id).await? else {
            return Ok(Settled::Failed);
        };
        let end = TurnEnd::failed(TurnState::Interrupted, error);
        let to = match (route, settings) {
            (Some(r), Some(a)) if a.on_failure.notifies() => r.reply_to.clone(),
            (Some(_), _) => Vec::new(),
            (None, _) => Turns::sender_if_peer(snap, &message),
        };
        self.notify_failure(&message, &t.route, &end, to).await?;
        Ok(Settled::Failed)
    }
}
