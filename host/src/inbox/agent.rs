//! What a local agent (`[agents.NAME]`) does by its own token besides starting threads: learn
//! who it is and what it may do (`GET /agent/me`), and answer the messages of the turns it runs
//! (`POST /agent/messages/{id}/reply`), which a tool host that outlives a turn (an MCP server)
//! needs, since a turn's reply token never reaches it.

use crate::config::{Config, LocalAgent};
use crate::model::now_ms;
use crate::snapshot::Snapshot;
use crate::store::MessageFilter;
use crate::wire::{Ack, AgentMe, AgentRouteView, ContactView, MaySendView, SendBody};

use super::{Inbox, InboxError};

/// Who `agent` is and what it may do under `config` (whose hash is `hash`).
fn agent_me(config: &Config, agent: &LocalAgent, hash: &str) -> AgentMe {
    let mut contacts: Vec<ContactView> = Vec::new();
    for rule in &agent.may_send {
        for peer in &rule.to {
            let i = match contacts.iter().position(|c| c.name == *peer) {
                Some(i) => i,
                None => {
                    let kind = match config.peers.get(peer) {
                        Some(p) if p.a2a_out.is_some() => "a2a",
                        _ => "inbox",
                    };
                    let mut answers: Vec<String> = config
                        .routes
                        .values()
                        .filter(|r| r.from.iter().any(|f| f == peer))
                        .flat_map(|r| r.types.iter().cloned())
                        .collect();
                    answers.sort();
                    answers.dedup();
                    contacts.push(ContactView {
                        name: peer.clone(),
                        kind: kind.to_owned(),
                        types: Vec::new(),
                        answers,
                        card: None,
                    });
                    contacts.len() - 1
                }
            };
            for t in &rule.types {
                if !contacts[i].types.contains(t) {
                    contacts[i].types.push(t.clone());
                }
            }
        }
    }
    contacts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut routes: Vec<AgentRouteView> = config
        .routes
        .values()
        .filter(|r| r.run_by(&agent.name))
        .map(|r| AgentRouteView {
            name: r.name.clone(),
            from: r.from.clone(),
            types: r.types.clone(),
            reply_types: r.reply_types.clone(),
        })
        .collect();
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    AgentMe {
        name: agent.name.clone(),
        may_send: agent
            .may_send
            .iter()
            .map(|r| MaySendView {
                to: r.to.clone(),
                types: r.types.clone(),
            })
            .collect(),
        contacts,
        routes,
        config_hash: hash.to_owned(),
    }
}

/// How long `GET /agent/me` waits for an A2A peer's card.
const CARD_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Inbox {
    /// [`agent_me`], with what each A2A peer's card says of it (read as a call would; a card
    /// that cannot be read in time is left out, not waited for).
    pub async fn agent_me(&self, snap: &Snapshot, agent: &LocalAgent) -> AgentMe {
        let mut me = agent_me(&snap.config, agent, &snap.hash);
        for contact in &mut me.contacts {
            let Some(a2a) = snap
                .config
                .peers
                .get(&contact.name)
                .and_then(|p| p.a2a_out.as_ref())
            else {
                continue;
            };
            let label = format!("peer:{}", contact.name);
            let remote = crate::a2a_client::Remote {
                config: &a2a.remote,
                label: &label,
            };
            let deadline = tokio::time::Instant::now() + CARD_WAIT;
            match self.a2a.about(&remote, deadline).await {
                Ok(about) => contact.card = about,
                Err(e) => {
                    tracing::debug!(peer = %contact.name, error = %e, "its card was not read for /agent/me");
                }
            }
        }
        me
    }

    /// Whether local agent `agent` may read `thread`: one it started or sent into, or one with a
    /// message for a route whose turns it runs.
    pub async fn agent_reads(&self, agent: &str, thread: &str) -> Result<bool, InboxError> {
        if self.store.agent_started(agent, thread).await? {
            return Ok(true);
        }
        let snap = self.snapshot();
        let runs = snap.config.routes.values().filter(|r| r.run_by(agent));
        for route in runs {
            let found = self
                .store
                .list_messages(MessageFilter {
                    route: Some(route.name.clone()),
                    thread: Some(thread.to_owned()),
                    limit: 1,
                    ..MessageFilter::default()
                })
                .await?;
            if !found.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Answers message `message_id` as the local agent that runs its route: the same reply as
    /// one by the turn's token (its type among the turn's reply types, check-reply, approvals,
    /// the reply caps), allowed while that token would be. A message of a route the agent does
    /// not run is not found, so a token cannot probe another agent's turns.
    pub async fn agent_reply(
        &self,
        snap: &Snapshot,
        agent: &LocalAgent,
        message_id: &str,
        body: SendBody,
    ) -> Result<Ack, InboxError> {
        let grant = self
            .store
            .latest_grant(message_id)
            .await?
            .ok_or(InboxError::NotFound)?;
        let runs_it = snap
            .config
            .routes
            .get(&grant.route)
            .is_some_and(|r| r.run_by(&agent.name));
        if !runs_it {
            return Err(InboxError::NotFound);
        }
        if !grant.is_valid_at(now_ms()) {
            return Err(InboxError::NotAllowed {
                reason: format!(
                    "the turn of message {message_id} is over: a reply now would answer nothing"
                ),
                allowed: vec![],
            });
        }
        self.reply(snap, grant, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_sees_its_contacts_rules_and_routes() {
        let toml = r#"
[peers.mel]
url = "http://127.0.0.1:9/message"
secret = "mel-secret-0123456789"
[peers.gw]
a2a_url = "http://127.0.0.1:9/a2a/v1"
a2a_bearer_env = "GW_BEARER"
[agents.planner]
token = "planner-token-0123456789"
may_send = [{ to = ["mel", "gw"], types = ["TASK"] }, { to = ["mel"], types = ["NOTE"] }]
[routes.tasks]
from = ["mel"]
types = ["DONE", "TASK"]
reply_types = ["ACK"]
reply_to = ["mel"]
agent = { command = ["true"] }
agent_id = "planner"
[routes.other]
from = ["gw"]
types = ["ANSWER"]
agent = { command = ["true"] }
"#;
        let env = |k: &str| (k == "GW_BEARER").then(|| "gw-bearer-0123456789".to_owned());
        let config =
            Config::parse(toml, std::path::Path::new("/tmp"), env).expect("a valid config");
        let me = agent_me(&config, &config.agents["planner"], "h1");
        assert_eq!(me.name, "planner");
        assert_eq!(me.config_hash, "h1");
        let names: Vec<&str> = me.contacts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["gw", "mel"]);
        assert_eq!(me.contacts[0].kind, "a2a");
        assert_eq!(me.contacts[0].types, ["TASK"]);
        assert_eq!(me.contacts[0].answers, ["ANSWER"]);
        assert_eq!(me.contacts[1].kind, "inbox");
        assert_eq!(me.contacts[1].types, ["TASK", "NOTE"]);
        assert_eq!(me.contacts[1].answers, ["DONE", "TASK"]);
        assert_eq!(me.routes.len(), 1);
        assert_eq!(me.routes[0].name, "tasks");
        assert_eq!(me.routes[0].reply_types, ["ACK"]);
    }
}
