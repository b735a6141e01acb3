//! `[agents]`: local agents that start conversations, their tokens and what they may send; and
//! that a route's `agent_id` names one of them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::routes::approval_timeout;
use super::{Checker, schema, valid_name, valid_type_name};
use crate::config::defaults::DEFAULT_AGENT_MAX_PER_MINUTE;
use crate::config::{LocalAgent, MaySend, Peer, Route};

pub(super) fn agents(
    c: &mut Checker<'_>,
    raw: &schema::File,
    peers: &BTreeMap<String, Peer>,
    routes: &BTreeMap<String, Route>,
) -> BTreeMap<String, LocalAgent> {
    let mut agents = BTreeMap::new();
    for (name, a) in &raw.agents {
        let at = format!("agents.{name}");
        if !valid_name(name) {
            c.invalid(&at, "an agent name is letters, digits, '_', '-' or '.'");
        }
        if a.token_env.is_none() && a.token_file.is_none() && a.token.is_none() {
            c.invalid(
                &at,
                "needs token_env or token_file (or, for local demos, token)",
            );
        }
        let tokens = c.secrets(
            &format!("{at}.token"),
            a.token_env.as_ref(),
            a.token_file.as_ref(),
            a.token.as_ref(),
        );
        let mut may_send = Vec::new();
        for (i, rule) in a.may_send.iter().enumerate() {
            let rat = format!("{at}.may_send[{i}]");
            if rule.to.is_empty() || rule.types.is_empty() {
                c.invalid(&rat, "names at least one peer (to) and one type (types)");
            }
            for peer in &rule.to {
                match peers.get(peer) {
                    None => c.invalid(
                        format!("{rat}.to"),
                        format!(
                            "unknown peer {peer:?} (known: {})",
                            peers.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ),
                    Some(p) if !p.reachable() => c.invalid(
                        format!("{rat}.to"),
                        format!("peer {peer:?} has no url to deliver to"),
                    ),
                    Some(_) => {}
                }
            }
            for t in &rule.types {
                if !valid_type_name(t) {
                    c.invalid(format!("{rat}.types"), format!("{t:?} is not a type name"));
                }
            }
            may_send.push(MaySend {
                to: rule.to.clone(),
                types: rule.types.clone(),
            });
        }
        let max_per_minute = c.positive(
            &format!("{at}.max_per_minute"),
            a.max_per_minute,
            DEFAULT_AGENT_MAX_PER_MINUTE,
        );
        let (approve, approval_timeout) = approve(c, &at, name, a, &raw.approval, routes);
        agents.insert(
            name.clone(),
            LocalAgent {
                name: name.clone(),
                tokens,
                may_send,
                max_per_minute,
                approve,
                approval_timeout,
            },
        );
    }
    for (name, r) in routes {
        if let Some(id) = &r.agent_id {
            if !agents.contains_key(id) {
                c.invalid(
                    format!("routes.{name}.agent_id"),
                    format!("no [agents.{id}]"),
                );
            }
            if r.agent().is_none() {
                c.invalid(
                    format!("routes.{name}.agent_id"),
                    "a mailbox has no agent to name",
                );
            }
        }
    }
    agents
}

/// An agent's `approve = "outbound" | "none"` and `approval_timeout_secs`. Unset, it follows the
/// routes it runs: if one holds its agent's replies, the agent's own messages wait too (for the
/// shortest of those routes' timeouts), since the same agent could otherwise say with its token
/// what the route would hold; so `"none"` is refused then.
fn approve(
    c: &mut Checker<'_>,
    at: &str,
    name: &str,
    a: &schema::LocalAgent,
    approval: &schema::Approval,
    routes: &BTreeMap<String, Route>,
) -> (bool, Duration) {
    let runs: Vec<&Route> = routes
        .values()
        .filter(|r| r.agent_id.as_deref() == Some(name) && r.approve.outbound)
        .collect();
    let approve = match a.approve.as_deref() {
        None => !runs.is_empty(),
        Some("outbound") => true,
        Some("none") => {
            if let Some(r) = runs.first() {
                c.invalid(
                    format!("{at}.approve"),
                    format!(
                        "\"none\", but route {} (agent_id = {name:?}) holds its agent's replies: \
                         its token would skip that; remove approve (it follows the route)",
                        r.name
                    ),
                );
            }
            false
        }
        Some(other) => {
            let why = if matches!(other, "inbound" | "both") {
                format!("{other:?}: an agent's own messages are outbound; \"outbound\" or \"none\"")
            } else {
                format!("{other:?} is not one of \"none\", \"outbound\"")
            };
            c.invalid(format!("{at}.approve"), why);
            false
        }
    };
    let default = runs
        .iter()
        .map(|r| r.approval_timeout)
        .min()
        .unwrap_or_else(|| approval_timeout(approval));
    let secs = c.positive(
        &format!("{at}.approval_timeout_secs"),
        a.approval_timeout_secs,
        default.as_secs(),
    );
    (approve, Duration::from_secs(secs))
}
