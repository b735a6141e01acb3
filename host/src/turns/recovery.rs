//! Turns a previous run of the host left running: each is re-queued once (`on_interrupt =
//! "rerun"`), or left `interrupted` and notified like any failure.

use crate::config::{OnFailure, OnInterrupt};
use crate::model::{TurnEnd, TurnError, TurnState};
use crate::store::StoreError;

use super::Turns;

impl Turns {
    /// Settles interrupted turns; returns how many were re-queued and how many failed. Call
    /// before [`Turns::start`].
    pub async fn recover_interrupted(&self) -> Result<(usize, usize), StoreError> {
        let snap = self.active.load_full();
        let (mut rerun, mut failed) = (0, 0);
        for t in self.store.recover_interrupted().await? {
            let route = snap.config.routes.get(&t.route);
            let settings = route.and_then(|r| r.agent());
            let why = match settings.map(|a| a.on_interrupt) {
                Some(OnInterrupt::Rerun) if t.attempts < 2 => None,
                Some(OnInterrupt::Rerun) => {
                    Some("the host stopped while the agent ran, again after a re-run")
                }
                Some(OnInterrupt::Fail) => {
                    Some("the host stopped while the agent ran (on_interrupt = \"fail\")")
                }
                None => Some("the host stopped while the agent ran, and the route is gone"),
            };
            let Some(why) = why else {
                tracing::warn!(message_id = %t.message_id, route = %t.route, "turn interrupted by a restart; running it again");
                self.store.requeue(&t.message_id).await?;
                rerun += 1;
                continue;
            };
            let error = TurnError::new("interrupted", why);
            tracing::warn!(message_id = %t.message_id, route = %t.route, error = %error, "turn interrupted");
            self.store
                .fail_interrupted(&t.message_id, error.clone())
                .await?;
            failed += 1;
            let Some(message) = self.store.message(&t.message_id).await? else {
                continue;
            };
            let end = TurnEnd::failed(TurnState::Interrupted, error);
            let to = match (route, settings) {
                (Some(r), Some(a)) if a.on_failure == OnFailure::Notify => r.reply_to.clone(),
                (Some(_), _) => Vec::new(),
                (None, _) => Turns::sender_if_peer(&snap, &message),
            };
            self.notify_failure(&message, &t.route, &end, to).await?;
        }
        Ok((rerun, failed))
    }
}
