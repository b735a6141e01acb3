//! The one caller of the plugin engine: runs a route's hooks on the model's records and enforces,
//! once, what the host lets a verdict do.
//!
//! A check-message verdict may move a message only to a route that takes its sender and its
//! (possibly rewritten) type; a check-reply verdict may use only the route's reply types and send
//! only to peers in its `reply_to`. A route without a plugin gets the built-in behaviour.

use crate::config::Route;
use crate::model::{Draft, Message, ReplyContext};
use crate::plugins::{MessageVerdict, ReplyVerdict};
use crate::snapshot::{RoutePlugin, Snapshot};

/// A plugin refused, or failed, or asked for something the host does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The plugin refused the message or reply.
    #[error("{reason}")]
    Rejected {
        /// The plugin's name.
        plugin: String,
        /// The 4xx status it chose.
        status: u16,
        /// Its reason, for the sender.
        reason: String,
    },
    /// The plugin failed (trap, deadline, memory cap, invalid answer) or its verdict broke a rule.
    #[error("plugin {plugin} failed: {detail}")]
    Failed {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        detail: String,
    },
}

fn failed(p: &RoutePlugin, detail: impl std::fmt::Display) -> HookError {
    HookError::Failed {
        plugin: p.name().to_owned(),
        detail: detail.to_string(),
    }
}

/// Where a checked message goes, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<'s> {
    /// The route that takes it (a name in the snapshot).
    pub route: &'s str,
    /// Its type, perhaps rewritten.
    pub msg_type: String,
    /// Its payload, perhaps rewritten.
    pub payload: String,
    /// Why the plugin asked a person to approve its turn first (`hold`), if it did.
    pub hold: Option<String>,
}

/// Refuses a rewritten payload nested deeper than the inbox accepts from a client.
fn check_depth(snap: &Snapshot, p: &RoutePlugin, payload: &str) -> Result<(), HookError> {
    let max = snap.config.server.max_json_depth;
    if crate::model::nests_deeper_than(payload.as_bytes(), max) {
        return Err(failed(
            p,
            format!("it rewrote the payload nesting deeper than {max} levels"),
        ));
    }
    Ok(())
}

/// Whether `route` takes `msg_type` from `sender` (named, or by its `"*"`).
fn takes(route: &Route, sender: &str, msg_type: &str) -> bool {
    route.from.iter().any(|f| f == sender)
        && route
            .types
            .iter()
            .any(|t| t == msg_type || t == crate::config::WILDCARD)
}

/// Runs a hook call, counting its time and, if it fails, the failure.
async fn timed<T, E>(
    route: &str,
    hook: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    let out = call.await;
    let m = crate::metrics::get();
    let labels = crate::metrics::Hook {
        route: route.to_owned(),
        hook: hook.to_owned(),
    };
    m.plugin_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if out.is_err() {
        m.plugin_failures.get_or_create(&labels).inc();
    }
    out
}

/// Runs check-message of the route `m.route` names, if it has a plugin.
pub async fn check_message<'s>(snap: &'s Snapshot, m: &Message) -> Result<Checked<'s>, HookError> {
    let route_name = |name: &str| -> Option<&'s str> {
        snap.config
            .routes
            .get_key_value(name)
            .map(|(k, _)| k.as_str())
    };
    let unchanged = || Checked {
        route: route_name(&m.route).unwrap_or_default(),
        msg_type: m.msg_type.clone(),
        payload: m.payload.clone(),
        hold: None,
    };
    let Some(p) = snap.plugins.get(&m.route) else {
        return Ok(unchanged());
    };
    let verdict = timed(
        &m.route,
        "check-message",
        p.plugin.check_message(m, &p.spec.config_json),
    )
    .await
    .map_err(|e| failed(p, e))?;
    let (route, rewrite) = match verdict {
        MessageVerdict::Accept => return Ok(unchanged()),
        MessageVerdict::Hold { reason } => {
            tracing::info!(plugin = %p.name(), message_id = %m.id, reason = %reason, "plugin asked for approval");
            return Ok(Checked {
                hold: Some(reason),
                ..unchanged()
            });
        }
        MessageVerdict::Reject(r) => {
            tracing::info!(plugin = %p.name(), message_id = %m.id, status = r.status, reason = %r.reason, "plugin rejected a message");
            return Err(HookError::Rejected {
                plugin: p.name().to_owned(),
                status: r.status,
                reason: r.reason,
            });
        }
        MessageVerdict::Rewrite(rw) => (m.route.clone(), Some(rw)),
        MessageVerdict::RouteTo { route, rewrite } => (route, rewrite),
    };
    let (msg_type, payload) = match rewrite {
        Some(rw) => {
            check_depth(snap, p, &rw.payload)?;
            (rw.msg_type, rw.payload)
        }
        None => (m.msg_type.clone(), m.payload.clone()),
    };
    // The target must take this sender and the resulting type, like any message it gets.
    let Some((name, target)) = snap.config.routes.get_key_value(&route) else {
        return Err(failed(
            p,
            format!("it routed to {route:?}, which is not a route"),
        ));
    };
    if !takes(target, &m.sender, &msg_type) {
        return Err(failed(
            p,
            format!(
                "route {route} does not take type {msg_type:?} from {}",
                m.sender
            ),
        ));
    }
    if route != m.route {
        tracing::info!(plugin = %p.name(), message_id = %m.id, from = %m.route, to = %route, "plugin routed a message");
    }
    Ok(Checked {
        route: name,
        msg_type,
        payload,
        hold: None,
    })
}

/// A reply cleared to go: what to record and who gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleared {
    /// The reply, perhaps rewritten.
    pub reply: Draft,
    /// The peers it goes to, each one of the route's `reply_to`.
    pub to: Vec<String>,
}

/// Runs render-turn of the route, if it has a plugin: the agent's text, or `None` for the
/// built-in one.
pub async fn render_turn(
    snap: &Snapshot,
    route: &str,
    m: &Message,
    ctx: &ReplyContext,
) -> Result<Option<String>, HookError> {
    let Some(p) = snap.plugins.get(route) else {
        return Ok(None);
    };
    timed(
        route,
        "render-turn",
        p.plugin.render_turn(m, ctx, &p.spec.config_json),
    )
    .await
    .map_err(|e| failed(p, e))
}

/// What a reply is checked against: its turn's terms (the route's reply types and `reply_to`
/// when the turn started, and the plugin it started with, if any).
#[derive(Debug, Clone, Copy)]
pub struct ReplyRules<'a> {
    /// The route, for logs and metrics.
    pub route: &'a str,
    /// The types the turn may reply with.
    pub reply_types: &'a [String],
    /// Where its replies may go.
    pub reply_to: &'a [String],
    /// The check-reply plugin, if the turn has one.
    pub plugin: Option<&'a RoutePlugin>,
}

/// Runs the route's check-reply (if it has a plugin) on a reply to `answered`, and checks what it
/// decided: the type against the route's reply types, the peers against its `reply_to`.
pub async fn check_reply(
    snap: &Snapshot,
    rules: &ReplyRules<'_>,
    answered: &Message,
    draft: Draft,
) -> Result<Cleared, HookError> {
    let as_sent = |reply: Draft| Cleared {
        reply,
        to: rules.reply_to.to_vec(),
    };
    let Some(p) = rules.plugin else {
        return Ok(as_sent(draft));
    };
    let reply_to = rules.reply_to.to_vec();
    let verdict = timed(
        rules.route,
        "check-reply",
        p.plugin
            .check_reply(answered, &draft, &reply_to, &p.spec.config_json),
    )
    .await
    .map_err(|e| failed(p, e))?;
    match verdict {
        ReplyVerdict::Accept => Ok(as_sent(draft)),
        ReplyVerdict::Reject(r) => {
            tracing::info!(plugin = %p.name(), message_id = %answered.id, status = r.status, reason = %r.reason, "plugin rejected a reply");
            Err(HookError::Rejected {
                plugin: p.name().to_owned(),
                status: r.status,
                reason: r.reason,
            })
        }
        ReplyVerdict::Relay { rewrite, to } => {
            let draft = match rewrite {
                Some(rw) => {
                    check_depth(snap, p, &rw.payload)?;
                    Draft {
                        msg_type: rw.msg_type,
                        payload: rw.payload,
                    }
                }
                None => draft,
            };
            if !rules.reply_types.contains(&draft.msg_type) {
                return Err(failed(
                    p,
                    format!(
                        "it rewrote the reply to type {:?}, which the route does not allow",
                        draft.msg_type
                    ),
                ));
            }
            let to = to.unwrap_or(reply_to);
            if let Some(bad) = to.iter().find(|peer| !rules.reply_to.contains(peer)) {
                return Err(failed(
                    p,
                    format!("it chose peer {bad:?}, which is not in reply_to"),
                ));
            }
            Ok(Cleared { reply: draft, to })
        }
    }
}
