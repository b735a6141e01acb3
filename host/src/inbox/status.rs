//! What the operator asks of a running inbox: its status, whether it is ready, and the work each
//! route has queued and running.

use std::collections::HashMap;

use super::{Inbox, InboxError, LIVE_HOST};
use crate::config::PeerAuth;
use crate::snapshot::Snapshot;
use crate::wire::{
    AgentStatus, ClusterStatus, HostStatus, LastDelivery, MaySendStatus, PeerStatus, Reloads,
    RouteStatus, Status,
};

/// Queued and running turns per route, read now.
#[derive(Debug, Default)]
pub struct Work {
    pub queued: Vec<(String, usize)>,
    pub running: Vec<(String, usize)>,
}

impl Inbox {
    /// `GET /status`. The reload state belongs to the front door that reloads: it passes the hash
    /// in force and the reload counts in, or nothing when the config came from no file.
    pub async fn status(
        &self,
        snap: &Snapshot,
        reloads: Option<(String, Reloads)>,
    ) -> Result<Status, InboxError> {
        let (config_hash, reloads) = match reloads {
            Some((hash, r)) => (hash, Some(r)),
            None => (snap.hash.clone(), None),
        };
        let cluster = if self.store.is_shared() {
            let hosts = self.store.hosts(LIVE_HOST).await?;
            Some(ClusterStatus {
                host_id: snap.config.server.host_id.clone(),
                hosts: hosts
                    .into_iter()
                    .map(|h| HostStatus {
                        config_differs: h.config_hash != snap.cluster_hash,
                        host_id: h.host_id,
                        version: h.version,
                        config_hash: h.config_hash,
                        turns_running: h.running,
                        last_seen_ms_ago: h.age_ms,
                    })
                    .collect(),
            })
        } else {
            None
        };
        let depths: HashMap<String, usize> = self.store.queue_depths().into_iter().collect();
        let routes = snap
            .config
            .routes
            .values()
            .map(|r| RouteStatus {
                name: r.name.clone(),
                kind: if r.agent().is_some() {
                    "agent"
                } else {
                    "mailbox"
                }
                .into(),
                from: r.from.clone(),
                types: r.types.clone(),
                reply_to: r.reply_to.clone(),
                reply_types: r.reply_types.clone(),
                plugin: r
                    .plugin
                    .as_ref()
                    .and_then(|p| p.path.file_name().map(|n| n.to_string_lossy().into_owned())),
                max_concurrent: r.agent().map(|a| a.max_concurrent),
                max_queued: r.agent().map(|a| a.max_queued),
                queued: depths.get(&r.name).copied().unwrap_or(0),
                approve: match (r.approve.inbound, r.approve.outbound) {
                    (true, true) => Some("both".into()),
                    (true, false) => Some("inbound".into()),
                    (false, true) => Some("outbound".into()),
                    (false, false) => None,
                },
            })
            .collect();
        Ok(Status {
            config_hash,
            reloads,
            version: env!("CARGO_PKG_VERSION").into(),
            turns_running: self.turns.running(),
            turns_queued: self.store.queue_depth(),
            draining: self.shutdown.is_draining(),
            routes,
            peers: {
                let names = snap.config.peers.keys().cloned().collect();
                let last: HashMap<String, crate::model::Attempt> =
                    self.store.last_attempts(names).await?.into_iter().collect();
                peers(snap, &last)
            },
            agents: agents(snap),
            cluster,
        })
    }

    /// `GET /readyz`: ready once recovery has run, unless draining or the store cannot write or
    /// does not answer; else why not.
    pub async fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(std::sync::atomic::Ordering::SeqCst) {
            Err("starting")
        } else if self.shutdown.is_draining() {
            Err("draining")
        } else if self.store_health.is_down() {
            Err("the store cannot write")
        } else if let Err(e) = self.store.ping().await {
            tracing::warn!(error = %e, "readiness: the store does not answer");
            Err("the store does not answer")
        } else {
            Ok(())
        }
    }

    /// Queued and running turns per route, for the metrics' gauges.
    pub fn work(&self) -> Work {
        Work {
            queued: self.store.queue_depths(),
            running: self.turns.running_by_route(),
        }
    }
}

/// The peers, as an operator needs them when a delivery fails: where, and how (no secret).
fn peers(snap: &Snapshot, last: &HashMap<String, crate::model::Attempt>) -> Vec<PeerStatus> {
    snap.config
        .peers
        .values()
        .map(|p| PeerStatus {
            name: p.name.clone(),
            url: p.url.as_ref().map(crate::config::shown_url),
            a2a_url: p
                .a2a_out
                .as_ref()
                .map(|a| crate::config::shown_url(&a.remote.url)),
            auth: match (&p.url, &p.auth, &p.a2a_out) {
                (Some(_), PeerAuth::Secret, _) => "shared_secret",
                (Some(_), PeerAuth::StandardWebhooks { .. }, _) => "standard_webhooks",
                (None, _, Some(_)) => "a2a_bearer",
                (None, _, None) => "a2a_token",
            }
            .into(),
            a2a_client: !p.a2a_tokens.is_empty(),
            last_delivery: last.get(&p.name).map(|a| LastDelivery {
                at: a.at,
                outcome: if a.error.is_none() {
                    "delivered"
                } else {
                    "failed"
                }
                .into(),
                status: a.status,
                error: a.error.clone(),
            }),
        })
        .collect()
}

fn agents(snap: &Snapshot) -> Vec<AgentStatus> {
    snap.config
        .agents
        .values()
        .map(|a| AgentStatus {
            name: a.name.clone(),
            may_send: a
                .may_send
                .iter()
                .map(|m| MaySendStatus {
                    to: m.to.clone(),
                    types: m.types.clone(),
                })
                .collect(),
            max_per_minute: a.max_per_minute,
            approve: a.approve,
        })
        .collect()
}
