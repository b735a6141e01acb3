//! Prometheus metrics: one registry per process, filled where things happen and read at
//! `GET /metrics` in the text exposition format.
//!
//! Labels stay bounded: routes, peers, hooks, states, error codes and configured types only. No
//! message, thread or task id is ever a label; a type no route names is counted as `other`, and
//! every A2A push target as the one peer `a2a-push`. Updating a metric is an atomic add (a label
//! lookup under a read lock the first time), cheap enough for the ack path.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one route and one type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteType {
    pub route: String,
    /// The type (a configured one, or `other`).
    pub msg_type: String,
}

/// A refusal's error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    /// The stable error code.
    pub code: String,
}

/// One route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: String,
}

/// A route and how a turn ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteState {
    pub route: String,
    /// The turn's final state.
    pub state: String,
}

/// A peer and an attempt's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerOutcome {
    /// The peer (`a2a-push` for every push).
    pub peer: String,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
}

/// A call to a remote A2A agent: whose (the route or peer that named it), which method, and how
/// it went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteCall {
    /// `route:NAME` or `peer:NAME`.
    pub remote: String,
    /// The JSON-RPC method (`SendMessage`, `GetTask`, ...), or `card`.
    pub method: String,
    /// `ok`, `rate_limited`, `task_not_found`, `rpc_error`, `http_error`, `unreachable`,
    /// `timed_out` or `bad_answer`.
    pub outcome: String,
}

/// One peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Peer {
    pub peer: String,
}

/// A route's plugin hook.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Hook {
    pub route: String,
    /// `check-message`, `check-reply` or `render-turn`.
    pub hook: String,
}

/// A held item's route and kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Held {
    pub route: String,
    /// `inbound` or `outbound`.
    pub kind: String,
}

/// A decision on a held item.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Decided {
    pub route: String,
    /// `inbound` or `outbound`.
    pub kind: String,
    /// `approved` or `rejected`.
    pub verdict: String,
    /// `console`, `api` or `timeout`.
    pub via: String,
}

/// A reload's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `applied` or `failed`.
    pub outcome: String,
}

/// The config in force.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigHash {
    pub hash: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the inbox keeps.
pub struct Metrics {
    registry: Registry,
    /// Messages committed, by route and type.
    pub accepted: Family<RouteType, Counter>,
    /// Messages refused, by error code.
    pub refused: Family<Code, Counter>,
    /// Time from a request's arrival to its ack (`POST /message`).
    pub ack_seconds: Histogram,
    /// Turns queued, by route (set at scrape time).
    pub queued: Family<Route, Gauge>,
    /// Turns running on this host, by route (set at scrape time).
    pub running: Family<Route, Gauge>,
    /// Turns ended, by route and state.
    pub turns: Family<RouteState, Counter>,
    /// How long an agent ran, by route.
    pub turn_seconds: Histograms<Route>,
    /// Delivery attempts, by peer and outcome.
    pub attempts: Family<PeerOutcome, Counter>,
    /// How long an attempt took, by peer.
    pub attempt_seconds: Histograms<Peer>,
    /// Calls to remote A2A agents, by remote, method and outcome.
    pub a2a_calls: Family<RemoteCall, Counter>,
    /// Plugin calls, by route and hook.
    pub plugin_seconds: Histograms<Hook>,
    /// Plugin calls that failed (trap, deadline, memory, a bad answer), by route and hook.
    pub plugin_failures: Family<Hook, Counter>,
    /// Config reloads, applied or failed.
    pub reloads: Family<Outcome, Counter>,
    /// 1 for the hash of the config in force.
    pub config: Family<ConfigHash, Gauge>,
    /// Items that started waiting for a person, by route and kind.
    pub approvals_held: Family<Held, Counter>,
    /// Decisions on held items, by route, kind, verdict and where they were made.
    pub approval_decisions: Family<Decided, Counter>,
    /// `[approval] notify_command` runs that failed, timed out or were dropped (queue full).
    pub approval_notify_failures: Counter,
    /// Writes committed together, per store commit.
    pub commit_batch: Histogram,
    /// How long a store commit took (the fsync included).
    pub commit_seconds: Histogram,
    /// How long the SQLite writer spent rewinding the WAL (a RESTART checkpoint), acks waiting.
    pub wal_restart_seconds: Histogram,
}

fn latency() -> Histogram {
    // 50 us to about 3.3 min.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 22))
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            registry: Registry::with_prefix("inbox"),
            accepted: Family::default(),
            refused: Family::default(),
            ack_seconds: latency(),
            queued: Family::default(),
            running: Family::default(),
            turns: Family::default(),
            turn_seconds: Family::new_with_constructor(latency),
            attempts: Family::default(),
            attempt_seconds: Family::new_with_constructor(latency),
            a2a_calls: Family::default(),
            plugin_seconds: Family::new_with_constructor(latency),
            plugin_failures: Family::default(),
            reloads: Family::default(),
            config: Family::default(),
            approvals_held: Family::default(),
            approval_decisions: Family::default(),
            approval_notify_failures: Counter::default(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            commit_seconds: latency(),
            wal_restart_seconds: latency(),
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "messages_accepted",
            "Messages committed, by route and type",
            m.accepted.clone(),
        );
        r.register(
            "messages_refused",
            "Messages refused, by error code",
            m.refused.clone(),
        );
        r.register(
            "ack_seconds",
            "Time to ack a POST /message",
            m.ack_seconds.clone(),
        );
        r.register("turns_queued", "Turns waiting, by route", m.queued.clone());
        r.register(
            "turns_running",
            "Turns running on this host, by route",
            m.running.clone(),
        );
        r.register(
            "turns_ended",
            "Turns ended, by route and state",
            m.turns.clone(),
        );
        r.register(
            "turn_seconds",
            "How long agents ran, by route",
            m.turn_seconds.clone(),
        );
        r.register(
            "delivery_attempts",
            "Delivery attempts, by peer and outcome",
            m.attempts.clone(),
        );
        r.register(
            "delivery_attempt_seconds",
            "Delivery attempt time, by peer",
            m.attempt_seconds.clone(),
        );
        r.register(
            "a2a_client_calls",
            "Calls to remote A2A agents, by remote, method and outcome",
            m.a2a_calls.clone(),
        );
        r.register(
            "plugin_call_seconds",
            "Plugin call time, by route and hook",
            m.plugin_seconds.clone(),
        );
        r.register(
            "plugin_failures",
            "Plugin calls that failed, by route and hook",
            m.plugin_failures.clone(),
        );
        r.register(
            "reloads",
            "Config reloads, applied or failed",
            m.reloads.clone(),
        );
        r.register(
            "config_info",
            "1 for the hash of the config in force",
            m.config.clone(),
        );
        r.register(
            "approvals_held",
            "Items that started waiting for a person, by route and kind",
            m.approvals_held.clone(),
        );
        r.register(
            "approval_decisions",
            "Decisions on held items, by route, kind, verdict and where made",
            m.approval_decisions.clone(),
        );
        r.register(
            "approval_notify_failures",
            "approval notify_command runs that failed, timed out or were dropped",
            m.approval_notify_failures.clone(),
        );
        r.register(
            "store_commit_batch_size",
            "Writes per store commit",
            m.commit_batch.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Store commit time, fsync included",
            m.commit_seconds.clone(),
        );
        r.register(
            "store_wal_restart_seconds",
            "Time the SQLite writer spent rewinding the WAL, writes waiting",
            m.wal_restart_seconds.clone(),
        );
        m
    }

    /// The registry as Prometheus text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Marks `hash` as the config in force.
    pub fn set_config(&self, hash: &str) {
        self.config.clear();
        self.config
            .get_or_create(&ConfigHash {
                hash: hash.to_owned(),
            })
            .set(1);
    }
}

/// What the config names that labels series: the label values a scrape should show at zero
/// before anything happens, and whose series a reload that drops them should remove.
#[derive(Debug, Default)]
pub struct Known {
    pub routes: Vec<KnownRoute>,
    pub peers: Vec<KnownPeer>,
}

/// A configured route, as its metrics see it.
#[derive(Debug)]
pub struct KnownRoute {
    pub name: String,
    /// Its types (a message of another type counts as `other`).
    pub types: Vec<String>,
    /// It runs turns (an agent route, not a mailbox).
    pub agent: bool,
    /// It hands its turns to a remote A2A agent.
    pub a2a_driver: bool,
    /// It has a plugin.
    pub plugin: bool,
    /// Held kinds: `inbound`, `outbound`.
    pub held: Vec<&'static str>,
}

/// A configured peer, as its metrics see it.
#[derive(Debug)]
pub struct KnownPeer {
    pub name: String,
    /// The relay delivers to it (it has a url or an A2A endpoint).
    pub delivers: bool,
    /// Deliveries to it are A2A calls.
    pub a2a_out: bool,
}

/// The plugin hooks, as labelled.
pub const HOOKS: &[&str] = &["check-message", "check-reply", "render-turn"];
/// A delivery attempt's outcomes.
pub const ATTEMPT_OUTCOMES: &[&str] = &["delivered", "retry", "dead"];
/// The A2A client's methods and outcomes, as labelled.
pub const A2A_METHODS: &[&str] = &[
    "SendMessage",
    "GetTask",
    "CancelTask",
    "SubscribeToTask",
    "card",
];
pub const A2A_OUTCOMES: &[&str] = &[
    "ok",
    "rate_limited",
    "task_not_found",
    "rpc_error",
    "http_error",
    "unreachable",
    "timed_out",
    "bad_answer",
];
/// How a turn ends, as `inbox_turns_ended_total` labels it.
pub const TURN_ENDS: &[&str] = &[
    "done",
    "failed",
    "timed_out",
    "interrupted",
    "canceled",
    "rejected",
];
const VERDICTS: &[&str] = &["approved", "rejected"];
const VIAS: &[&str] = &["console", "api", "timeout"];

impl Metrics {
    /// Sets every series the config names to zero (a series that exists keeps its count), and
    /// removes those of routes and peers `old` named and `new` does not: an alert can be written
    /// before the first event, and a dropped route does not linger.
    pub fn follow(&self, old: Option<&Known>, new: &Known) {
        for outcome in ["applied", "failed"] {
            touch(
                &self.reloads,
                Outcome {
                    outcome: outcome.into(),
                },
                true,
            );
        }
        if let Some(old) = old {
            for r in old
                .routes
                .iter()
                .filter(|r| !new.routes.iter().any(|n| n.name == r.name))
            {
                self.route_series(r, false);
            }
            for p in old
                .peers
                .iter()
                .filter(|p| !new.peers.iter().any(|n| n.name == p.name))
            {
                self.peer_series(p, false);
            }
            // A route or peer that stays but lost a type or a hook keeps its zero series: a
            // bounded leftover, cleared at the next start.
        }
        for r in &new.routes {
            self.route_series(r, true);
        }
        for p in &new.peers {
            self.peer_series(p, true);
        }
    }

    /// Sets `inbox_messages_refused_total` to zero for every code a refusal can carry.
    pub fn know_codes<'a>(&self, codes: impl IntoIterator<Item = &'a str>) {
        for code in codes {
            touch(
                &self.refused,
                Code {
                    code: code.to_owned(),
                },
                true,
            );
        }
    }

    /// Creates or removes every series a route labels.
    fn route_series(&self, r: &KnownRoute, create: bool) {
        let route = || r.name.clone();
        for t in r.types.iter().map(String::as_str).chain(["other"]) {
            let msg_type = t.to_owned();
            touch(
                &self.accepted,
                RouteType {
                    route: route(),
                    msg_type,
                },
                create,
            );
        }
        if r.agent {
            touch(&self.queued, Route { route: route() }, create);
            touch(&self.running, Route { route: route() }, create);
            touch(&self.turn_seconds, Route { route: route() }, create);
            for state in TURN_ENDS {
                let state = (*state).to_owned();
                touch(
                    &self.turns,
                    RouteState {
                        route: route(),
                        state,
                    },
                    create,
                );
            }
        }
        if r.a2a_driver {
            self.a2a_series(&format!("route:{}", r.name), create);
        }
        if r.plugin {
            for hook in HOOKS {
                let l = Hook {
                    route: route(),
                    hook: (*hook).to_owned(),
                };
                touch(&self.plugin_seconds, l.clone(), create);
                touch(&self.plugin_failures, l, create);
            }
        }
        for kind in &r.held {
            let kind = || (*kind).to_owned();
            touch(
                &self.approvals_held,
                Held {
                    route: route(),
                    kind: kind(),
                },
                create,
            );
            for verdict in VERDICTS {
                for via in VIAS {
                    let l = Decided {
                        route: route(),
                        kind: kind(),
                        verdict: (*verdict).to_owned(),
                        via: (*via).to_owned(),
                    };
                    touch(&self.approval_decisions, l, create);
                }
            }
        }
    }

    /// Creates or removes every series a peer labels.
    fn peer_series(&self, p: &KnownPeer, create: bool) {
        if p.delivers {
            for outcome in ATTEMPT_OUTCOMES {
                let l = PeerOutcome {
                    peer: p.name.clone(),
                    outcome: (*outcome).to_owned(),
                };
                touch(&self.attempts, l, create);
            }
            touch(
                &self.attempt_seconds,
                Peer {
                    peer: p.name.clone(),
                },
                create,
            );
        }
        if p.a2a_out {
            self.a2a_series(&format!("peer:{}", p.name), create);
        }
    }

    fn a2a_series(&self, remote: &str, create: bool) {
        for method in A2A_METHODS {
            for outcome in A2A_OUTCOMES {
                let l = RemoteCall {
                    remote: remote.to_owned(),
                    method: (*method).to_owned(),
                    outcome: (*outcome).to_owned(),
                };
                touch(&self.a2a_calls, l, create);
            }
        }
    }
}

/// Creates (at zero, or keeps) or removes one series of a family.
fn touch<S, M, C>(family: &Family<S, M, C>, labels: S, create: bool)
where
    S: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    if create {
        drop(family.get_or_create(&labels));
    } else {
        family.remove(&labels);
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A duration in seconds, for a histogram.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
