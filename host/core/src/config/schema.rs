//! The raw shape of routes.toml, exactly as serde reads it (`deny_unknown_fields` everywhere).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// `None` when the file has no `[server]` table (an empty or cut-short file, to a reload).
    pub(super) server: Option<Server>,
    #[serde(default)]
    pub(super) agent: Agent,
    #[serde(default)]
    pub(super) relay: Relay,
    #[serde(default)]
    pub(super) peers: BTreeMap<String, Peer>,
    #[serde(default)]
    pub(super) routes: BTreeMap<String, Route>,
    #[serde(default)]
    pub(super) plugins: Plugins,
    pub(super) a2a: Option<A2a>,
    #[serde(default)]
    pub(super) agents: BTreeMap<String, LocalAgent>,
    #[serde(default)]
    pub(super) approval: Approval,
    #[serde(default)]
    pub(super) store: Store,
}

/// `[store]`: where the inbox keeps its state (read at start only).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Store {
    pub(super) kind: Option<String>,
    pub(super) data_dir: Option<String>,
    pub(super) synchronous: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<String>,
    pub(super) url: Option<String>,
    pub(super) pool_size: Option<usize>,
    pub(super) sslmode: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) schema: Option<String>,
    pub(super) lease_secs: Option<u64>,
    pub(super) renew_secs: Option<u64>,
}

/// `[approval]`: defaults for held items, and who to tell.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Approval {
    pub(super) timeout_secs: Option<u64>,
    pub(super) notify_command: Option<Vec<String>>,
    pub(super) notify_timeout_secs: Option<u64>,
}

/// `[agents.NAME]`: a local agent that may start conversations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocalAgent {
    pub(super) token_env: Option<OneOrMany>,
    pub(super) token_file: Option<OneOrMany>,
    pub(super) token: Option<OneOrMany>,
    #[serde(default)]
    pub(super) may_send: Vec<MaySend>,
    pub(super) max_per_minute: Option<u32>,
    pub(super) approve: Option<String>,
    pub(super) approval_timeout_secs: Option<u64>,
}

/// One `may_send` rule: these peers, these types.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MaySend {
    pub(super) to: Vec<String>,
    pub(super) types: Vec<String>,
}

/// `[a2a]`: the A2A front door.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct A2a {
    pub(super) enabled: Option<bool>,
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) max_wait_secs: Option<u64>,
    pub(super) allow_private_push_urls: Option<bool>,
}

/// A route's `a2a = { ... }`: the route as a skill on the agent card.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteA2a {
    #[serde(rename = "type")]
    pub(super) msg_type: String,
    pub(super) skill: Option<String>,
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) examples: Vec<String>,
    #[serde(default)]
    pub(super) default: bool,
    #[serde(default)]
    pub(super) input_required_types: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Server {
    pub(super) listen: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) max_json_depth: Option<usize>,
    pub(super) admin_secret_env: Option<OneOrMany>,
    pub(super) admin_secret_file: Option<OneOrMany>,
    pub(super) admin_secret: Option<OneOrMany>,
    pub(super) signature_tolerance_secs: Option<u64>,
    pub(super) auth_failure_limit: Option<u32>,
    pub(super) auth_failure_window_secs: Option<u64>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) max_hops: Option<u32>,
    pub(super) data_dir: Option<String>,
    pub(super) reply_grace_secs: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_ip: Option<usize>,
    pub(super) synchronous: Option<String>,
    pub(super) drain_secs: Option<u64>,
    pub(super) dedup_window_secs: Option<u64>,
    pub(super) retention_days: Option<u64>,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
    pub(super) tls_ca: Option<String>,
    pub(super) host_id: Option<String>,
}

/// `[agent]` and a route's `agent = { ... }` share this shape; the route's keys win.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct Agent {
    pub(super) command: Option<Vec<String>>,
    pub(super) stdin: Option<bool>,
    pub(super) mcp_tools: Option<bool>,
    pub(super) timeout_secs: Option<u64>,
    pub(super) kill_grace_secs: Option<u64>,
    pub(super) max_concurrent: Option<usize>,
    pub(super) max_queued: Option<usize>,
    pub(super) output_cap_bytes: Option<usize>,
    pub(super) max_replies_per_turn: Option<u32>,
    pub(super) max_replies_per_minute: Option<u32>,
    pub(super) on_failure: Option<String>,
    pub(super) on_interrupt: Option<String>,
    pub(super) driver: Option<String>,
    pub(super) url: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) agent_id: Option<String>,
    pub(super) session_prefix: Option<String>,
    pub(super) skill: Option<String>,
    pub(super) reply_type: Option<String>,
    pub(super) question_type: Option<String>,
    pub(super) max_calls_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Relay {
    pub(super) retry_schedule: Option<Vec<String>>,
    pub(super) attempt_timeout_secs: Option<u64>,
    pub(super) max_in_flight: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Peer {
    pub(super) url: Option<String>,
    pub(super) auth: Option<String>,
    pub(super) secret_env: Option<OneOrMany>,
    pub(super) secret_file: Option<OneOrMany>,
    pub(super) secret: Option<OneOrMany>,
    pub(super) send_secret_env: Option<OneOrMany>,
    pub(super) send_secret_file: Option<OneOrMany>,
    pub(super) send_secret: Option<OneOrMany>,
    pub(super) ca_file: Option<String>,
    pub(super) a2a_token_env: Option<OneOrMany>,
    pub(super) a2a_token_file: Option<OneOrMany>,
    pub(super) a2a_token: Option<OneOrMany>,
    pub(super) a2a_url: Option<String>,
    pub(super) a2a_card_url: Option<String>,
    pub(super) a2a_bearer_env: Option<OneOrMany>,
    pub(super) a2a_bearer_file: Option<OneOrMany>,
    pub(super) a2a_reply_type: Option<String>,
    pub(super) a2a_skill: Option<String>,
    pub(super) a2a_follow_secs: Option<u64>,
    pub(super) a2a_max_calls_per_minute: Option<u32>,
}

/// A value given once, or as a list (secrets during a rotation: the new one first).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Route {
    #[serde(default)]
    pub(super) from: Vec<String>,
    #[serde(default)]
    pub(super) types: Vec<String>,
    #[serde(default)]
    pub(super) reply_types: Vec<String>,
    #[serde(default)]
    pub(super) reply_to: Vec<String>,
    #[serde(default)]
    pub(super) mailbox: bool,
    #[serde(default)]
    pub(super) internal: bool,
    pub(super) agent: Option<Agent>,
    pub(super) plugin: Option<String>,
    pub(super) plugin_config: Option<toml::Table>,
    pub(super) plugin_limits: Option<PluginLimits>,
    pub(super) a2a: Option<RouteA2a>,
    pub(super) agent_id: Option<String>,
    pub(super) approve: Option<String>,
    pub(super) approval_timeout_secs: Option<u64>,
}

/// `[plugins]` defaults and a route's `plugin_limits = { ... }` share this shape.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct PluginLimits {
    pub(super) memory_mib: Option<u64>,
    pub(super) deadline_ms: Option<u64>,
    pub(super) warm_calls: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Plugins {
    pub(super) cache_dir: Option<String>,
    pub(super) max_instances: Option<u32>,
    #[serde(flatten)]
    pub(super) limits: PluginLimits,
}
