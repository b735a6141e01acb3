//! A person cancels a message's turn: one that waits in the queue, waits for approval, or runs
//! (its agent is ended here, or by the host that runs it when it next renews its lease). The
//! cancel is recorded like every decision (who, how, when), and the route's `reply_to` peers
//! hear of it as they would of any failure.

use super::*;
use crate::model::{Cancel, Turn, TurnEnd, TurnError, TurnState, now_ms};

impl Inbox {
    /// Cancels `message_id`'s turn as `by`, through `via` (`console` or `api`). The turn as it
    /// now is, or `None` when it has ended already (or the message went to a mailbox).
    pub async fn cancel_turn(
        &self,
        message_id: &str,
        by: &str,
        via: &str,
    ) -> Result<Option<Turn>, InboxError> {
        let Some(message) = self.store.message(message_id).await? else {
            return Err(InboxError::NotFound);
        };
        let cancel = Cancel {
            by: by.to_owned(),
            via: via.to_owned(),
            at: now_ms(),
        };
        let why = format!("cancelled by {by} ({via})");
        let Some((route, was)) = self.store.cancel_turn(message_id, cancel).await? else {
            return Ok(None);
        };
        // The agent, if it runs here; elsewhere its host finds the turn cancelled at its next
        // lease renewal.
        let stopped = was == TurnState::Running && self.turns.cancel(message_id);
        tracing::info!(
            message_id, route = %route, was = was.as_str(), by, via, stopped, "turn cancelled"
        );
        self.events.publish(Event::TurnEnded {
            message_id: message_id.to_owned(),
            route: route.clone(),
            thread_id: Some(message.thread_id.clone()),
            state: TurnState::Canceled,
            exit_code: None,
            error: Some("canceled".into()),
        });
        crate::metrics::get()
            .turns
            .get_or_create(&crate::metrics::RouteState {
                route: route.clone(),
                state: TurnState::Canceled.as_str().to_owned(),
            })
            .inc();
        let snap = self.snapshot();
        let to = match snap.config.routes.get(&route) {
            Some(r) if r.agent().is_some_and(|a| a.on_failure.notifies()) => r.reply_to.clone(),
            _ => Vec::new(),
        };
        let end = TurnEnd::failed(TurnState::Canceled, TurnError::new("canceled", why));
        self.turns
            .notify_failure(&message, &route, &end, to)
            .await?;
        Ok(self.store.turn(message_id).await?)
    }
}
