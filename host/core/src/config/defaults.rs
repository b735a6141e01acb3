//! Default values of routes.toml's keys, each named once.

use std::time::Duration;

/// Default `[server] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
/// Default `[relay] retry_schedule`: about a day of attempts.
pub const DEFAULT_RETRY_SCHEDULE: [&str; 8] = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"];
/// Default `[server] max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 262_144;
/// Default `[server] max_json_depth`.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Largest `[server] max_json_depth`: deeper than this, serde_json cannot read a payload back.
pub const MAX_JSON_DEPTH: usize = 128;
/// Default `[server] signature_tolerance_secs`: how far a signed request's timestamp may be from
/// now, either way (the Standard Webhooks libraries' default).
pub const DEFAULT_SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);
/// Default `[server] auth_failure_limit`: failed credentials from one address per window.
pub const DEFAULT_AUTH_FAILURE_LIMIT: u32 = 20;
/// Default `[server] auth_failure_window_secs`.
pub const DEFAULT_AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Default route `approval_timeout_secs` (and `[approval] timeout_secs`): a day.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Default `[approval] notify_timeout_secs`.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `[store] lease_secs`: how long a claimed turn or delivery stays a host's unrenewed.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default `[store] renew_secs`.
pub const DEFAULT_LEASE_RENEWAL: Duration = Duration::from_secs(10);
/// Default `[store] pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default `[server] max_hops`.
pub const DEFAULT_MAX_HOPS: u32 = 8;
/// Default `[server] data_dir`, relative to routes.toml.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default `[server] reply_grace_secs`.
pub const DEFAULT_REPLY_GRACE: Duration = Duration::from_secs(600);
/// Default `[server] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `[server] max_connections_per_ip`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default `[server] drain_secs`.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// Default `[server] dedup_window_secs`.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(86_400);
/// Default `[server] retention_days`.
pub const DEFAULT_RETENTION_DAYS: u64 = 14;
/// Default `[relay] attempt_timeout_secs`.
pub const DEFAULT_ATTEMPT_TIMEOUT_SECS: u64 = 10;
/// Default `[relay] max_in_flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;
/// Default agent `timeout_secs`.
pub const DEFAULT_AGENT_TIMEOUT_SECS: u64 = 300;
/// Default agent `kill_grace_secs`.
pub const DEFAULT_KILL_GRACE_SECS: u64 = 5;
/// Default agent `max_concurrent`.
pub const DEFAULT_MAX_CONCURRENT: usize = 4;
/// Default agent `max_queued`.
pub const DEFAULT_MAX_QUEUED: usize = 1000;
/// Default agent `max_replies_per_turn`: replies (held, refused by check-reply, or sent) one
/// turn's token may send.
pub const DEFAULT_MAX_REPLIES_PER_TURN: u32 = 20;
/// Default agent `max_replies_per_minute`: how fast one turn's token may send them.
pub const DEFAULT_MAX_REPLIES_PER_MINUTE: u32 = 30;
/// Default agent `output_cap_bytes`.
pub const DEFAULT_OUTPUT_CAP_BYTES: usize = 65_536;
/// Default plugin `memory_mib`.
pub const DEFAULT_PLUGIN_MEMORY_MIB: u64 = 16;
/// Default plugin `deadline_ms`.
pub const DEFAULT_PLUGIN_DEADLINE_MS: u64 = 50;
/// Default `[plugins] max_instances`: the plugin engine's own default (`snapshot`'s tests keep
/// the two equal; the config names no engine).
pub const DEFAULT_PLUGIN_MAX_INSTANCES: u32 = 256;
/// Default `[plugins] cache_dir`, inside the data directory.
pub const DEFAULT_PLUGIN_CACHE_DIR: &str = "plugin-cache";
/// `[a2a] name`.
pub const DEFAULT_A2A_NAME: &str = "agent-inbox";
/// `[a2a] max_wait_secs`: a blocking `SendMessage` answers with the task as it stands after this.
/// The official Python client gives up on a blocking call after 5 s, and streams instead.
pub const DEFAULT_A2A_MAX_WAIT: Duration = Duration::from_secs(60);
/// `[agents.NAME] max_per_minute`: messages a local agent may start per minute.
pub const DEFAULT_AGENT_MAX_PER_MINUTE: u32 = 30;
/// Default `[peers.NAME] a2a_reply_type`: the type of an A2A peer's answer that names none.
pub const DEFAULT_A2A_PEER_REPLY_TYPE: &str = "REPLY";
/// Default `[peers.NAME] a2a_follow_secs`: how long a task given to an A2A peer is followed
/// (OpenClaw keeps finished tasks for 24 h).
pub const DEFAULT_A2A_FOLLOW: std::time::Duration = std::time::Duration::from_secs(86_400);
/// Default `max_calls_per_minute` to one remote A2A agent (sends and polls together): below
/// OpenClaw's 30 a minute per peer, which counts polls too.
pub const DEFAULT_A2A_CALLS_PER_MINUTE: u32 = 20;
