//! routes.toml: the file's schema, loading, and validation into a [`Config`].
//!
//! Parsing (serde, `deny_unknown_fields`) is kept apart from validation: [`Config::parse`] first turns
//! TOML into the raw `schema` structs, then `validate` checks every rule and reports every problem at
//! once, each with where it is. The result is immutable; a reload builds a new one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::Synchronous;

mod admin_view;
mod defaults;
pub mod edit;
mod hash;
mod schema;
pub mod secret_file;
mod validate;

pub use self::admin_view::{AdminView, admin_view};
pub use self::defaults::*;
pub use self::hash::{hash_contents, hash_digests};
pub use self::validate::valid_name as is_valid_name;

/// In `types`, the sender's fallback: every type no other route of that sender names.
pub const WILDCARD: &str = "*";

/// A shared secret or token: compared in constant time, never printed.
#[derive(Clone)]
pub struct Secret {
    value: String,
    digest: [u8; 32],
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        let digest = Sha256::digest(value.as_bytes()).into();
        Self { value, digest }
    }

    /// The clear value, for sending it to its peer; never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether `candidate` is this secret, in time independent of where they differ.
    ///
    /// Comparing digests keeps the time independent of the lengths too.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.matches_digest(&Sha256::digest(candidate).into())
    }

    /// Like [`Secret::matches`], for a candidate already hashed with sha256.
    pub fn matches_digest(&self, candidate: &[u8; 32]) -> bool {
        self.digest.ct_eq(candidate).into()
    }

    /// Whether two secrets are the same (checked at load, so each secret names one sender).
    pub fn same_as(&self, other: &Secret) -> bool {
        self.digest == other.digest
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a route does when its agent turn fails or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Relay a `TURN_FAILED` message to the route's `reply_to` peers.
    Notify,
    /// Only record the failure.
    Ignore,
    /// As `Notify`, and the notice also carries the last line of the agent's stderr
    /// (`detail`): the route's operator vouches that its agent's errors may be seen by peers.
    NotifyWithStderr,
}

impl OnFailure {
    /// Whether a failed turn relays `TURN_FAILED`.
    pub fn notifies(self) -> bool {
        self != OnFailure::Ignore
    }
}

/// What happens to a turn that was running when the host stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Run it again, once.
    Rerun,
    /// Leave it `interrupted` and notify like any failure.
    Fail,
}

/// How a route's agent is run: `[agent]` defaults merged with the route's `agent = { ... }`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// argv template; see the README for the placeholders.
    pub command: Vec<String>,
    /// Also pipe the prompt to the agent's stdin.
    pub stdin: bool,
    /// The agent has the inbox's MCP tools (`agent-inbox mcp`): the built-in prompt tells it to
    /// answer with the `reply` tool, and leaves the curl out.
    pub mcp_tools: bool,
    /// How long a turn may run before its process group is killed.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL on timeout.
    pub kill_grace: Duration,
    /// Turns of this route running at once.
    pub max_concurrent: usize,
    /// Turns of this route waiting; more are refused with 503.
    pub max_queued: usize,
    /// Bytes kept from the end of stdout and of stderr.
    pub output_cap: usize,
    /// Replies one turn may send (`max_replies_per_turn`), counted in the store per attempt.
    pub max_replies_per_turn: u32,
    /// Replies one turn may send per minute (`max_replies_per_minute`).
    pub max_replies_per_minute: u32,
    /// What a failed turn does.
    pub on_failure: OnFailure,
    /// What a turn interrupted by a host stop does.
    pub on_interrupt: OnInterrupt,
    /// How the agent is reached: a command per turn (the default), or the OpenClaw gateway.
    pub driver: Driver,
}

/// How a turn's agent is run.
#[derive(Debug, Clone)]
pub enum Driver {
    /// `command`, a subprocess per turn.
    Command,
    /// A POST to an OpenClaw gateway's `/hooks/agent`, waiting for the run to complete.
    OpenClawGateway(Box<Gateway>),
    /// A task at a remote A2A agent, followed to its end; its artifacts are the turn's replies.
    A2a(Box<A2aAgent>),
}

/// `agent = { driver = "a2a", url, token_env, skill, reply_type, question_type,
/// max_calls_per_minute }`.
#[derive(Debug, Clone)]
pub struct A2aAgent {
    /// Where the agent is and how to call it.
    pub remote: A2aRemote,
    /// Sent as the message's `metadata.skill`, for agents that offer several.
    pub skill: Option<String>,
    /// The type of an artifact that carries no `{type, payload}` data part.
    pub reply_type: String,
    /// The type of the reply an `INPUT_REQUIRED` question becomes.
    pub question_type: String,
}

/// A remote A2A agent as the config names it (a route's agent, or a peer).
#[derive(Debug, Clone)]
pub struct A2aRemote {
    /// Its JSON-RPC endpoint, or (when `card`) its agent card, read for the endpoint.
    pub url: http::Uri,
    /// `url` is a card (its path ends in `.json`).
    pub card: bool,
    /// The bearer the inbox sends it (the first of a rotation), if it wants one.
    pub bearer: Option<Secret>,
    /// Calls a minute (sends and polls together); every route and peer naming the same URL share
    /// the smallest budget any of them gives.
    pub max_calls_per_minute: u32,
}

/// `agent = { driver = "openclaw-gateway", url, token_env, agent_id, session_prefix }`.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The gateway's hook endpoint, e.g. `http://127.0.0.1:18789/hooks/agent`.
    pub url: http::Uri,
    /// Its hook token (`hooks.token` in the gateway's config).
    pub token: Secret,
    /// The OpenClaw agent that runs the turns.
    pub agent_id: String,
    /// Prefix of the session key (`<prefix><thread id>`), which the gateway's
    /// `hooks.allowedSessionKeyPrefixes` must admit.
    pub session_prefix: String,
}

/// What a route does with a message it accepts.
#[derive(Debug, Clone)]
pub enum RouteKind {
    /// Store it for reading; no agent runs.
    Mailbox,
    /// Run an agent turn for it.
    Agent(AgentSettings),
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name (its key under `[routes]`).
    pub name: String,
    /// Peers that may send to it.
    pub from: Vec<String>,
    /// Message types it accepts.
    pub types: Vec<String>,
    /// Types its agent may reply with.
    pub reply_types: Vec<String>,
    /// Peers its agent's replies are relayed to.
    pub reply_to: Vec<String>,
    /// Mailbox or agent.
    pub kind: RouteKind,
    /// The route's plugin, if it has one.
    pub plugin: Option<PluginSpec>,
    /// Reached only through another route's plugin (route-to), never by sender and type.
    pub internal: bool,
    /// The route as an A2A skill, if A2A clients may send to it.
    pub a2a: Option<RouteA2a>,
    /// The local agent (`[agents.NAME]`) that runs this route's turns: its replies and its own
    /// messages share that identity, and its turns get its token.
    pub agent_id: Option<String>,
    /// What waits for a person on this route (`approve = ...`).
    pub approve: Approve,
    /// How long a held item waits before it is rejected on its own.
    pub approval_timeout: Duration,
}

/// A route's `approve`: which of its messages' turns and its agent's replies wait for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Approve {
    /// Each message's turn waits before its agent runs (`"inbound"`, `"both"`).
    pub inbound: bool,
    /// Each reply the agent sends waits before it is delivered (`"outbound"`, `"both"`).
    pub outbound: bool,
}

/// `[store]`: where the inbox keeps its state.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// SQLite in `server.data_dir` with `server.synchronous` (the default).
    Sqlite,
    /// PostgreSQL, which several hosts may share.
    Postgres(Postgres),
}

impl StoreConfig {
    /// Whether two `[store]` tables name the same store with the same settings.
    pub fn same_as(&self, other: &StoreConfig) -> bool {
        match (self, other) {
            (StoreConfig::Sqlite, StoreConfig::Sqlite) => true,
            (StoreConfig::Postgres(a), StoreConfig::Postgres(b)) => {
                a.url.same_as(&b.url)
                    && a.pool_size == b.pool_size
                    && a.sslmode == b.sslmode
                    && a.ca_file == b.ca_file
                    && a.schema == b.schema
                    && a.lease == b.lease
                    && a.renew == b.renew
            }
            _ => false,
        }
    }
}

/// `[store] kind = "postgres"`.
#[derive(Debug, Clone)]
pub struct Postgres {
    /// The connection URL (a secret: it may hold the password).
    pub url: Secret,
    /// Connections in the pool.
    pub pool_size: usize,
    /// TLS to the database.
    pub sslmode: SslMode,
    /// CA file for `verify-full` (else the public roots).
    pub ca_file: Option<PathBuf>,
    /// The schema to use instead of the database's default (`search_path`).
    pub schema: Option<String>,
    /// How long a claimed turn or delivery stays this host's without renewal.
    pub lease: Duration,
    /// How often a running turn renews its lease.
    pub renew: Duration,
}

/// `[store] sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS, the certificate not checked.
    Require,
    /// TLS, the certificate and host name checked.
    VerifyFull,
}

/// `[approval]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// argv run when an item starts waiting, with `{id}` `{kind}` `{route}` `{sender}` `{type}`
    /// `{thread_id}` `{reason}` `{url}` replaced; none if not set.
    pub notify_command: Option<Vec<String>>,
    /// How long one notify command may run before it is killed.
    pub notify_timeout: Duration,
}

/// `[agents.NAME]`: a local agent that may start conversations with `POST /send` and its own
/// token.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    /// Its name (its key under `[agents]`).
    pub name: String,
    /// Its tokens, the current one first (any of them works).
    pub tokens: Vec<Secret>,
    /// Which peers it may message, with which types.
    pub may_send: Vec<MaySend>,
    /// Messages it may start per minute.
    pub max_per_minute: u32,
    /// Whether the messages it starts wait for a person before they are delivered: its
    /// `approve = "outbound"`, or by default whether a route it runs (`agent_id`) holds its
    /// agent's replies, so its token is no way around that route's approval.
    pub approve: bool,
    /// How long one of its held messages waits before it is rejected on its own.
    pub approval_timeout: Duration,
}

/// One `may_send` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaySend {
    /// These peers.
    pub to: Vec<String>,
    /// With these types.
    pub types: Vec<String>,
}

impl LocalAgent {
    /// Whether it may send `msg_type` to `peer`.
    pub fn may_send(&self, peer: &str, msg_type: &str) -> bool {
        self.may_send
            .iter()
            .any(|r| r.to.iter().any(|p| p == peer) && r.types.iter().any(|t| t == msg_type))
    }

    /// What it may send, for a refusal: `mel: TASK, STATUS; tony: NOTE`.
    pub fn allowed(&self) -> Vec<String> {
        self.may_send
            .iter()
            .flat_map(|r| {
                r.to.iter()
                    .map(move |p| format!("{p}: {}", r.types.join(", ")))
            })
            .collect()
    }
}

/// A route's `a2a = { ... }`: how it shows on the agent card and what its messages become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteA2a {
    /// The skill's id on the card (the route's name unless given).
    pub skill: String,
    /// The skill's name.
    pub name: String,
    /// What the skill does.
    pub description: String,
    /// The skill's tags.
    pub tags: Vec<String>,
    /// Example requests.
    pub examples: Vec<String>,
    /// The inbox type an A2A message on this route gets.
    pub msg_type: String,
    /// Whether a message naming no skill goes here (for the peers in `from`).
    pub default: bool,
    /// Reply types that ask the client a question: the task waits in `TASK_STATE_INPUT_REQUIRED`.
    pub input_required_types: Vec<String>,
}

/// `[a2a]`: the A2A front door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct A2a {
    /// The agent card's name.
    pub name: String,
    /// The agent card's description.
    pub description: String,
    /// Longest a blocking `SendMessage` waits for the task to end before answering with it as it
    /// stands.
    pub max_wait: Duration,
    /// Whether push URLs may point at loopback, link-local or private addresses.
    pub allow_private_push_urls: bool,
}

/// A route's plugin: which component, its `plugin_config`, its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// The `.wasm` component, resolved against routes.toml's directory.
    pub path: PathBuf,
    /// `plugin_config` as JSON text (`{}` when absent).
    pub config_json: String,
    /// Memory cap per instance, in bytes.
    pub memory_bytes: u64,
    /// How long one hook call may run.
    pub deadline: Duration,
    /// Calls one instance serves before a fresh one (0: a fresh instance per call).
    pub warm_calls: u32,
}

/// `[plugins]`: engine-wide plugin settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugins {
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    /// Instances the engine's pool holds at once.
    pub max_instances: u32,
    /// The largest memory cap of any plugin, so the pool can be sized for it.
    pub max_memory_bytes: u64,
}

impl Route {
    /// Whether local agent `agent` runs this route's turns (its `agent_id`).
    pub fn run_by(&self, agent: &str) -> bool {
        self.agent_id.as_deref() == Some(agent)
    }

    /// The agent settings, unless this is a mailbox.
    pub fn agent(&self) -> Option<&AgentSettings> {
        match &self.kind {
            RouteKind::Agent(a) => Some(a),
            RouteKind::Mailbox => None,
        }
    }

    /// The limits on one turn's replies (a mailbox runs no turns: the defaults).
    pub fn reply_limits(&self) -> crate::model::ReplyLimits {
        crate::model::ReplyLimits {
            per_turn: self
                .agent()
                .map_or(defaults::DEFAULT_MAX_REPLIES_PER_TURN, |a| {
                    a.max_replies_per_turn
                }),
            per_minute: self
                .agent()
                .map_or(defaults::DEFAULT_MAX_REPLIES_PER_MINUTE, |a| {
                    a.max_replies_per_minute
                }),
        }
    }
}

/// How a peer proves who it is, and how we sign what we send it.
#[derive(Debug, Clone)]
pub enum PeerAuth {
    /// The shared secret in `X-Shared-Secret`, both ways.
    Secret,
    /// Standard Webhooks signatures, both ways: `verify` checks what the peer sends (any key),
    /// `sign` signs what we send it (every key, the first first). The same keys unless the peer
    /// has a `send_secret` (pairing gives each direction its own key).
    StandardWebhooks {
        verify: Vec<crate::signature::SigningKey>,
        sign: Vec<crate::signature::SigningKey>,
    },
}

/// A validated peer: another inbox that may send to us and receives our replies, or an A2A client.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's name (its key under `[peers]`).
    pub name: String,
    /// Where messages to the peer are POSTed; `None` for a peer that only calls us over A2A.
    pub url: Option<http::Uri>,
    /// Its A2A bearer tokens, the current one first (any of them works).
    pub a2a_tokens: Vec<Secret>,
    /// How it authenticates.
    pub auth: PeerAuth,
    /// Its secrets, the current one first: what it sends is accepted with any of them.
    pub secrets: Vec<Secret>,
    /// What we send it with, the current one first (`send_secret`; else `secrets`): the first is
    /// the `X-Shared-Secret` sent, and for Standard Webhooks each signs.
    pub send_secrets: Vec<Secret>,
    /// The CA certificates (PEM) its `https` URL is verified with, instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// The peer is an A2A agent (`a2a_url` or `a2a_card_url`): messages to it are tasks there.
    pub a2a_out: Option<A2aPeer>,
}

/// A URL as views show it: without what may hold a credential (user info, query).
pub fn shown_url(u: &http::Uri) -> String {
    let host = u.authority().map_or("", |a| a.as_str());
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{}://{host}{}", u.scheme_str().unwrap_or("http"), u.path())
}

/// A peer reached over A2A.
#[derive(Debug, Clone)]
pub struct A2aPeer {
    /// Where it is and how to call it.
    pub remote: A2aRemote,
    /// The type of an answer that carries no `{type, payload}` data part, and of a question.
    pub reply_type: String,
    /// Sent as each message's `metadata.skill`.
    pub skill: Option<String>,
    /// How long a task given to it is followed for answers.
    pub follow: std::time::Duration,
}

impl Peer {
    /// Messages can be delivered to it: it has a `url`, or it is an A2A agent.
    pub fn reachable(&self) -> bool {
        self.url.is_some() || self.a2a_out.is_some()
    }

    /// The secret sent to the peer, if it has one (a peer with a `url` always does).
    pub fn current_secret(&self) -> Option<&Secret> {
        self.send_secrets.first()
    }
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct Server {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Base URL agents use to reach `/send`; `None` means `http://<bound address>`.
    pub public_url: Option<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects accepted in a JSON body (the body itself is 1).
    pub max_json_depth: usize,
    /// Secrets for the admin endpoints (any of them works; the CLI uses the first).
    pub admin_secrets: Vec<Secret>,
    /// How far a signed request's timestamp may be from now, either way.
    pub signature_tolerance: Duration,
    /// Failed credentials from one address within `auth_failure_window` before it gets 429
    /// (0: never).
    pub auth_failure_limit: u32,
    /// The window failed credentials are counted in.
    pub auth_failure_window: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Relays within a thread after which a message is refused as a loop.
    pub max_hops: u32,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// How long a reply token stays valid after its turn ends.
    pub reply_grace: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one client address may hold (0: no cap; trusted proxies have none).
    pub max_connections_per_ip: usize,
    /// How durable a commit is.
    pub synchronous: Synchronous,
    /// How long running turns get to finish on shutdown.
    pub drain: Duration,
    /// How long a sender's idempotency key dedups.
    pub dedup_window: Duration,
    /// Finished records older than this are pruned.
    pub retention: Duration,
    /// The inbox's own TLS, if it serves HTTPS itself.
    pub tls: Option<Tls>,
    /// This host's name among the hosts sharing a store (`host_id`, else `hostname:port`).
    pub host_id: String,
}

/// `[server] tls_cert`, `tls_key`, `tls_ca`: the files the server's TLS is built from (read, and
/// hashed into the config hash, by the snapshot; a renewal is a reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA (PEM) that verifies `cert` when no public root does (a private CA, or `cert`
    /// itself when self-signed): agents' curl gets `--cacert` with it.
    pub ca: Option<PathBuf>,
}

/// `[relay]`, validated.
#[derive(Debug, Clone)]
pub struct Relay {
    /// Delay before each delivery attempt, the first usually 0.
    pub retry_schedule: Vec<Duration>,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
    /// Deliveries in flight at once.
    pub max_in_flight: usize,
}

/// A loaded, validated routes.toml.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from, if any (a reload reads it again).
    pub source: Option<PathBuf>,
    /// sha256 of the file's text (with the plugins' digests it makes the snapshot's hash).
    pub text_digest: [u8; 32],
    /// sha256 of what all hosts of a cluster should share: the file without its per-host keys
    /// (`[server] listen`, `host_id`, `public_url`).
    pub shared_digest: [u8; 32],
    /// The directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// `[server]`.
    pub server: Server,
    /// `[relay]`.
    pub relay: Relay,
    /// `[peers]`, by name.
    pub peers: BTreeMap<String, Peer>,
    /// `[routes]`, by name.
    pub routes: BTreeMap<String, Route>,
    /// `[plugins]`.
    pub plugins: Plugins,
    /// `[a2a]`, when the A2A front door is enabled.
    pub a2a: Option<A2a>,
    /// `[agents]`, by name.
    pub agents: BTreeMap<String, LocalAgent>,
    /// `[approval]`.
    pub approval: Approval,
    /// `[store]` (read at start; a reload keeps the store it has).
    pub store: StoreConfig,
    /// Whether the file has a `[server]` table: a reload refuses a file without one (an empty
    /// or cut-short file is not what anyone means to run).
    pub has_server_table: bool,
    /// A digest of every secret the config resolved (from variables, files or the text): a
    /// reload after only a secret file changed is a change. Never shown: the config hash a
    /// client sees is of the text and the plugins only.
    pub secret_digest: [u8; 32],
    /// Environment variables holding secrets; agents never inherit them.
    pub secret_vars: Vec<String>,
    /// Things that work but deserve a look (e.g. literal secrets).
    pub warnings: Vec<String>,
}

/// The item one of whose `keys` is `candidate`: every key of every item is compared, in constant
/// time each, whatever matches first, so the time says nothing about which matched.
fn holder<'a, T>(
    items: impl Iterator<Item = &'a T>,
    candidate: &[u8],
    keys: impl Fn(&T) -> &[Secret],
) -> Option<&'a T> {
    let digest: [u8; 32] = Sha256::digest(candidate).into();
    let mut found = None;
    for item in items {
        let mut matched = false;
        for s in keys(item) {
            matched |= s.matches_digest(&digest);
        }
        if matched {
            found = Some(item);
        }
    }
    found
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// TOML syntax, a wrong value type or an unknown field.
    #[error("{0}")]
    Syntax(String),
    /// A value that does not parse or is out of range.
    #[error("{at}: {reason}")]
    Invalid { at: String, reason: String },
    /// A route or secret names a peer that is not under `[peers]`.
    #[error("{at}: unknown peer {peer:?} (known: {known})")]
    UnknownPeer {
        at: String,
        peer: String,
        known: String,
    },
    /// A list that must not be empty is.
    #[error("{at}: must not be empty")]
    Empty { at: String },
    /// `secret_env` names a variable that is not set.
    #[error("{at}: environment variable {var} is not set")]
    UnsetSecret { at: String, var: String },
    /// Two routes accept the same type from the same peer.
    #[error("routes.{a} and routes.{b} both accept type {msg_type:?} from peer {peer:?}")]
    Overlap {
        a: String,
        b: String,
        peer: String,
        msg_type: String,
    },
    /// A mailbox route has keys only agent routes may have.
    #[error("routes.{route}: a mailbox has no agent, so {key} is not allowed")]
    AgentKeyOnMailbox { route: String, key: String },
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the config:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates routes.toml, taking secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            }])
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        // Absolute, so relative paths in the file mean the same whatever the process's cwd.
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        let mut config = Config::parse(&text, &base, |var| std::env::var(var).ok())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates config text; `env` looks up `*_env` variables, and `*_file` secrets
    /// are read relative to `base_dir`. Plugin files are read (and hashed) when a snapshot is
    /// built from the config, not here.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let raw: schema::File = toml::from_str(text)
            .map_err(|e| ConfigErrors(vec![ConfigError::Syntax(e.to_string().trim().into())]))?;
        let mut config = validate::validate(raw, base_dir, &env)?;
        config.text_digest = Sha256::digest(text.as_bytes()).into();
        config.shared_digest = hash::shared_digest(text);
        Ok(config)
    }

    /// The longest `kill_grace_secs` of any agent route (the default without one): how long a
    /// stopping inbox may still take after its drain.
    pub fn longest_kill_grace(&self) -> std::time::Duration {
        self.routes
            .values()
            .filter_map(|r| r.agent())
            .map(|a| a.kill_grace)
            .max()
            .unwrap_or(std::time::Duration::from_secs(
                defaults::DEFAULT_KILL_GRACE_SECS,
            ))
    }

    /// Files whose change changes the config: routes.toml's plugins (routes.toml itself is the caller's).
    pub fn plugin_paths(&self) -> Vec<&Path> {
        let mut paths: Vec<&Path> = self
            .routes
            .values()
            .filter_map(|r| r.plugin.as_ref().map(|p| p.path.as_path()))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// Every file besides routes.toml whose bytes make the active config: plugins, the server's
    /// certificate, key and CA, and peers' CA files. The snapshot reads and hashes them; the
    /// reloader watches them.
    pub fn files(&self) -> Vec<&Path> {
        let mut paths = self.plugin_paths();
        if let Some(tls) = &self.server.tls {
            paths.extend([tls.cert.as_path(), tls.key.as_path()]);
            paths.extend(tls.ca.as_deref());
        }
        paths.extend(self.peers.values().filter_map(|p| p.ca_file.as_deref()));
        paths.sort();
        paths.dedup();
        paths
    }

    /// The `auth = "secret"` peer whose secret (any of its secrets) this is, if any. Every secret
    /// is compared, so timing says nothing; a Standard Webhooks peer's signing key is never
    /// accepted this way.
    pub fn peer_by_secret(&self, candidate: &[u8]) -> Option<&Peer> {
        self.peer_holding(candidate, |p| &p.secrets)
            .filter(|p| matches!(p.auth, PeerAuth::Secret))
    }

    /// The peer whose A2A token (any of its tokens) this is, if any; compared like
    /// [`Config::peer_by_secret`].
    pub fn peer_by_a2a_token(&self, candidate: &[u8]) -> Option<&Peer> {
        self.peer_holding(candidate, |p| &p.a2a_tokens)
    }

    /// The local agent whose token (any of its tokens) this is, if any; compared like
    /// [`Config::peer_by_secret`].
    pub fn agent_by_token(&self, candidate: &[u8]) -> Option<&LocalAgent> {
        holder(self.agents.values(), candidate, |a| &a.tokens)
    }

    /// The peer one of whose `keys` is `candidate`.
    fn peer_holding(&self, candidate: &[u8], keys: impl Fn(&Peer) -> &[Secret]) -> Option<&Peer> {
        holder(self.peers.values(), candidate, keys)
    }

    /// Whether `candidate` is one of the admin secrets.
    pub fn is_admin(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        let mut matched = false;
        for s in &self.server.admin_secrets {
            matched |= s.matches_digest(&digest);
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README: a literal secret in the file (an A2A token, the store's URL, ...) gets a warning
    /// from `check` and at start, naming where it is.
    #[test]
    fn a_route_whose_agent_has_the_mcp_tools_but_no_agent_id_is_warned_about() {
        let base = "[peers.mel]\nurl = \"http://127.0.0.1:9/message\"\nsecret_env = \"MEL\"\n\
                    [agents.planner]\ntoken_env = \"PLANNER\"\nmay_send = []\n\
                    [routes.tasks]\nfrom = [\"mel\"]\ntypes = [\"TASK\"]\n\
                    agent = { command = [\"x\"], mcp_tools = true }\n";
        let env = |v: &str| Some(format!("{v}-secret-0123456789"));
        let c = Config::parse(base, Path::new("/tmp"), env).expect("valid");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("routes.tasks") && w.contains("no agent_id")),
            "{:?}",
            c.warnings
        );
        let RouteKind::Agent(a) = &c.routes["tasks"].kind else {
            panic!("an agent route")
        };
        assert!(a.mcp_tools);
        let with_id = format!("{base}agent_id = \"planner\"\n");
        let c = Config::parse(&with_id, Path::new("/tmp"), env).expect("valid");
        assert!(
            !c.warnings.iter().any(|w| w.contains("agent_id")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn literal_secrets_are_warned_about_by_name() {
        let text = "[server]\nadmin_secret_env = \"ADMIN\"\n\
                    [peers.client]\na2a_token = \"client-token-1\"\n\
                    [store]\nkind = \"postgres\"\nurl = \"postgres://u:pw@127.0.0.1:9/db\"\n";
        let c = Config::parse(text, Path::new("/tmp"), |v| {
            (v == "ADMIN").then(|| "admin-1".to_owned())
        })
        .expect("valid");
        let literal: Vec<_> = c
            .warnings
            .iter()
            .filter(|w| w.contains("a literal"))
            .collect();
        assert_eq!(literal.len(), 1, "one line for all: {:?}", c.warnings);
        for at in ["peers.client.a2a_token", "store.url"] {
            assert!(literal[0].contains(at), "{at} unnamed: {literal:?}");
        }
        assert!(
            !c.warnings
                .iter()
                .any(|w| w.starts_with("server.admin_secret")),
            "{:?}",
            c.warnings
        );
    }

    /// The demo's literal secrets are marked (`demo-...`) and named as the demo's in one line.
    #[test]
    fn demo_secrets_are_named_in_one_line() {
        let text = "[server]\nadmin_secret = \"demo-admin\"\n\
                    [peers.client]\na2a_token = \"demo-client-token\"\n\
                    [peers.demo]\nurl = \"http://127.0.0.1:9/message\"\nsecret = \"demo-secret\"\n";
        let c = Config::parse(text, Path::new("/tmp"), |_| None).expect("valid");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let w = &c.warnings[0];
        assert!(w.starts_with("demo secrets in the file (server.admin_secret, peers.client.a2a_token, peers.demo.secret)"), "{w}");
        let mixed = text.replace("\"demo-secret\"", "\"hunter2-secret\"");
        let c = Config::parse(&mixed, Path::new("/tmp"), |_| None).expect("valid");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("peers.demo.secret: a literal secret"),
            "{:?}",
            c.warnings
        );
    }

    /// README: `host_id` defaults to the machine's name and the port; it may not hold a `/`.
    #[test]
    fn host_id_defaults_to_the_machine_and_port_and_refuses_a_slash() {
        let base = "[server]\nlisten = \"127.0.0.1:8765\"\nadmin_secret = \"a\"\n";
        let c = Config::parse(base, Path::new("/tmp"), |_| None).expect("valid");
        let name = nix::unistd::gethostname()
            .expect("hostname")
            .into_string()
            .expect("text");
        assert_eq!(c.server.host_id, format!("{name}:8765"));
        let slash = format!("{base}host_id = \"a/b\"\n");
        let Err(e) = Config::parse(&slash, Path::new("/tmp"), |_| None) else {
            panic!("a host_id with a '/' was taken");
        };
        assert!(e.to_string().contains("server.host_id"), "{e}");
    }

    #[test]
    fn secrets_match_only_themselves() {
        let s = Secret::new("tony-secret");
        assert!(s.matches(b"tony-secret"));
        assert!(!s.matches(b"tony-secreT") && !s.matches(b"tony-secret-and-more"));
    }

    const GOOD: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        admin_secret = "admin"

        [agent]
        command = ["echo", "{prompt}"]

        [peers.tony]
        url = "http://127.0.0.1:9/message"
        secret_env = "TONY_SECRET"

        [peers.mel]
        url = "https://mel.example/message"
        secret = "mel-secret"

        [routes.tasks]
        from = ["tony"]
        types = ["TASK"]
        reply_types = ["BREAKDOWN", "STATUS"]
        reply_to = ["tony"]
        agent = { timeout_secs = 600 }

        [routes.inbox]
        from = ["mel", "tony"]
        types = ["BREAKDOWN"]
        mailbox = true
    "#;

    fn env(var: &str) -> Option<String> {
        (var == "TONY_SECRET").then(|| "tony-secret".to_string())
    }

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("."), env) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_secret_may_come_from_a_file_checked_for_who_may_write_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |name: &str, value: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, value).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        put("admin", "admin-from-file\n", 0o600);
        put("tony", "tony-new\n", 0o640);
        put("tony.old", "tony-old\n", 0o444);
        put("planner", "planner-token\n", 0o600);
        let text = GOOD
            .replace("admin_secret = \"admin\"", "admin_secret_file = \"admin\"")
            .replace(
                "secret_env = \"TONY_SECRET\"",
                "secret_file = [\"tony\", \"tony.old\"]",
            )
            + "[agents.planner]\ntoken_file = \"planner\"\n\
               may_send = [{ to = [\"mel\"], types = [\"TASK\"] }]\n";
        let c = Config::parse(&text, dir.path(), |_| None).expect("valid");
        assert!(c.is_admin(b"admin-from-file"));
        let tony = &c.peers["tony"];
        assert!(tony.secrets[0].matches(b"tony-new") && tony.secrets[1].matches(b"tony-old"));
        assert!(c.agent_by_token(b"planner-token").is_some());
        // Readable by others: taken, and warned about (check prints it).
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("peers.tony.secret_file: others may read tony.old")),
            "{:?}",
            c.warnings
        );
        // A rotation rewrites a file: the config is not the same, though its text is.
        put("tony", "tony-newer\n", 0o600);
        let again = Config::parse(&text, dir.path(), |_| None).expect("valid");
        assert_ne!(c.secret_digest, again.secret_digest);
        assert_eq!(c.text_digest, again.text_digest);
        // Writable by others: refused. Two sources at once, or a missing file: refused.
        put("tony", "tony-new\n", 0o646);
        let errs = match Config::parse(&text, dir.path(), |_| None) {
            Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            Ok(_) => panic!("a file others may write was taken"),
        };
        assert!(
            errs.iter()
                .any(|e| e.starts_with("peers.tony.secret_file:") && e.contains("others may write")),
            "{errs:?}"
        );
        let both = text.replace(
            "admin_secret_file = \"admin\"",
            "admin_secret_file = \"admin\"\nadmin_secret_env = \"X\"",
        );
        let errs = errors(&both);
        assert!(
            errs.iter().any(|e| e.contains(
                "server.admin_secret: set one of admin_secret_env, admin_secret_file or a literal admin_secret"
            )),
            "{errs:?}"
        );
        let missing = GOOD.replace("admin_secret = \"admin\"", "admin_secret_file = \"nope\"");
        let errs = errors(&missing);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("server.admin_secret_file: ") && e.contains("nope")),
            "{errs:?}"
        );
    }

    #[test]
    fn local_agents_and_a2a_peers_are_checked() {
        let good = format!(
            "{GOOD}\n[peers.client]\na2a_token = \"client-a2a\"\n\
             [agents.planner]\ntoken = \"planner-token\"\n\
             may_send = [{{ to = [\"mel\"], types = [\"TASK\", \"STATUS\"] }}]\n"
        );
        let c = Config::parse(&good, Path::new("."), env).expect("valid");
        let planner = c.agent_by_token(b"planner-token").expect("the agent");
        assert!(planner.may_send("mel", "TASK") && !planner.may_send("tony", "TASK"));
        assert_eq!(planner.allowed(), ["mel: TASK, STATUS"]);
        assert_eq!(planner.max_per_minute, DEFAULT_AGENT_MAX_PER_MINUTE);
        assert_eq!(
            c.peer_by_a2a_token(b"client-a2a").map(|p| p.name.as_str()),
            Some("client")
        );
        assert!(c.peer_by_secret(b"client-a2a").is_none());
        assert!(c.peers["client"].url.is_none());
        for (extra, expected) in [
            (
                "[agents.a]\ntoken = \"mel-secret\"\n",
                "agents.a.token: same value as peers.mel.secret",
            ),
            (
                "[agents.a]\ntoken = \"x1\"\nmay_send = [{ to = [\"bob\"], types = [\"T\"] }]\n",
                "agents.a.may_send[0].to: unknown peer \"bob\"",
            ),
            ("[agents.a]\nmay_send = []\n", "agents.a: needs token_env"),
            (
                "[peers.c]\na2a_token = \"c1\"\n[agents.a]\ntoken = \"x1\"\nmay_send = [{ to = [\"c\"], types = [\"T\"] }]\n",
                "peer \"c\" has no url",
            ),
            (
                "[peers.c]\na2a_token = \"admin\"\n",
                "same value as server.admin_secret",
            ),
            ("[peers.c]\n", "needs secret_env"),
        ] {
            let errs = errors(&format!("{GOOD}\n{extra}"));
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "{extra}: {errs:?}"
            );
        }
        let unknown = GOOD.replace(
            "agent = { timeout_secs = 600 }",
            "agent = { timeout_secs = 600 }\nagent_id = \"ghost\"",
        );
        assert!(
            errors(&unknown)
                .iter()
                .any(|e| e.contains("routes.tasks.agent_id: no [agents.ghost]")),
            "{:?}",
            errors(&unknown)
        );
    }

    #[test]
    fn an_agent_s_own_messages_wait_when_its_route_holds_its_replies_or_it_says_so() {
        const PLANNER: &str = "[agents.planner]\ntoken = \"planner-token\"\n\
                               may_send = [{ to = [\"mel\"], types = [\"TASK\"] }]\n";
        let runs = |approve: &str, timeout: &str| {
            GOOD.replace(
                "agent = { timeout_secs = 600 }",
                &format!(
                    "agent = {{ timeout_secs = 600 }}\nagent_id = \"planner\"\n\
                     approve = \"{approve}\"\n{timeout}"
                ),
            )
        };
        let planner = |text: String| {
            let c = Config::parse(&text, Path::new("."), env).expect("valid");
            let a = &c.agents["planner"];
            (a.approve, a.approval_timeout.as_secs())
        };
        // Not running a route that holds replies: nothing waits unless it says so.
        assert_eq!(planner(format!("{GOOD}\n{PLANNER}")), (false, 86_400));
        assert_eq!(
            planner(format!(
                "{GOOD}\n[approval]\ntimeout_secs = 60\n{PLANNER}approve = \"outbound\"\n"
            )),
            (true, 60)
        );
        // Running one: its messages wait too, as long as that route's replies would.
        assert_eq!(
            planner(format!("{}\n{PLANNER}", runs("outbound", ""))),
            (true, 86_400)
        );
        assert_eq!(
            planner(format!(
                "{}\n{PLANNER}",
                runs("both", "approval_timeout_secs = 120")
            )),
            (true, 120)
        );
        assert_eq!(
            planner(format!("{}\n{PLANNER}", runs("inbound", ""))),
            (false, 86_400)
        );
        // Said outright: "outbound" (above), its own timeout, and never "none" beside a route
        // that holds its replies (its token would skip that route's person).
        assert_eq!(
            planner(format!(
                "{}\n{PLANNER}approval_timeout_secs = 30\n",
                runs("outbound", "")
            )),
            (true, 30)
        );
        let errs = errors(&format!(
            "{}\n{PLANNER}approve = \"none\"\n",
            runs("both", "")
        ));
        assert!(
            errs.iter().any(|e| e.contains(
                "agents.planner.approve: \"none\", but route tasks (agent_id = \"planner\") holds"
            )),
            "{errs:?}"
        );
        assert_eq!(
            planner(format!("{GOOD}\n{PLANNER}approve = \"none\"\n")),
            (false, 86_400)
        );
        for (value, expected) in [
            (
                "inbound",
                "agents.planner.approve: \"inbound\": an agent's own messages are outbound",
            ),
            ("maybe", "agents.planner.approve: \"maybe\" is not one of"),
        ] {
            let errs = errors(&format!("{GOOD}\n{PLANNER}approve = \"{value}\"\n"));
            assert!(errs.iter().any(|e| e.contains(expected)), "{errs:?}");
        }
        let errs = errors(&format!("{GOOD}\n{PLANNER}approval_timeout_secs = 0\n"));
        assert!(
            errs.iter()
                .any(|e| e.contains("agents.planner.approval_timeout_secs: must be greater")),
            "{errs:?}"
        );
    }

    /// README: `driver = "a2a"`: a URL (endpoint, or a card ending in `.json`), the bearer's
    /// variable, and reply and question types among the route's `reply_types`.
    #[test]
    fn an_a2a_agent_is_checked() {
        let route = |agent: &str| {
            GOOD.replace(
                "agent = { timeout_secs = 600 }",
                &format!("agent = {{ driver = \"a2a\", {agent} }}"),
            )
        };
        let c = Config::parse(
            &route("url = \"http://127.0.0.1:18789/a2a/v1\", token_env = \"TONY_SECRET\", skill = \"plan\""),
            Path::new("."),
            env,
        )
        .expect("valid");
        let Driver::A2a(a) = &c.routes["tasks"].agent().expect("agent").driver else {
            panic!("not the a2a driver");
        };
        assert!(!a.remote.card);
        assert!(
            a.remote
                .bearer
                .as_ref()
                .is_some_and(|b| b.matches(b"tony-secret"))
        );
        assert_eq!(a.remote.max_calls_per_minute, 20);
        assert_eq!(
            (a.reply_type.as_str(), a.question_type.as_str()),
            ("BREAKDOWN", "BREAKDOWN")
        );
        assert_eq!(a.skill.as_deref(), Some("plan"));
        let c = Config::parse(
            &route("url = \"https://agent.example/.well-known/agent-card.json\", reply_type = \"STATUS\", max_calls_per_minute = 5"),
            Path::new("."),
            env,
        )
        .expect("valid");
        let Driver::A2a(a) = &c.routes["tasks"].agent().expect("agent").driver else {
            panic!("not the a2a driver");
        };
        assert!(a.remote.card && a.remote.bearer.is_none());
        assert_eq!(
            (a.reply_type.as_str(), a.question_type.as_str()),
            ("STATUS", "STATUS")
        );
        assert_eq!(a.remote.max_calls_per_minute, 5);
        for (agent, expected) in [
            (
                "token_env = \"X\"",
                "routes.tasks.agent.url: the agent's JSON-RPC endpoint",
            ),
            (
                "url = \"ftp://x/a2a\"",
                "routes.tasks.agent.url: not an http(s) URL",
            ),
            (
                "url = \"http://h/a2a\", token_env = \"UNSET_VAR\"",
                "routes.tasks.agent.token_env",
            ),
            (
                "url = \"http://h/a2a\", reply_type = \"NOPE\"",
                "routes.tasks.agent.reply_type: \"NOPE\" is not one of the route's reply_types",
            ),
            (
                "url = \"http://h/a2a\", question_type = \"NOPE\"",
                "routes.tasks.agent.question_type",
            ),
            (
                "url = \"http://h/a2a\", max_calls_per_minute = 0",
                "routes.tasks.agent.max_calls_per_minute: must be greater than 0",
            ),
        ] {
            let errs = errors(&route(agent));
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "{agent}: {errs:?}"
            );
        }
        let no_replies = route("url = \"http://h/a2a\"")
            .replace("reply_types = [\"BREAKDOWN\", \"STATUS\"]\n", "")
            .replace("reply_to = [\"tony\"]\n", "");
        let errs = errors(&no_replies);
        assert!(
            errs.iter()
                .any(|e| e.contains("an A2A agent's answers are the route's replies")),
            "{errs:?}"
        );
    }

    /// README: a peer that is an A2A agent: `a2a_url` or `a2a_card_url` (not `url`), the bearer's
    /// variable, and what its answers are called.
    #[test]
    fn an_a2a_peer_is_checked() {
        let peer = |keys: &str| format!("{GOOD}\n[peers.gw]\n{keys}\n");
        let c = Config::parse(
            &peer("a2a_url = \"http://127.0.0.1:18789/a2a/v1\"\na2a_bearer_env = \"TONY_SECRET\"\na2a_token = \"gw-in\""),
            Path::new("."),
            env,
        )
        .expect("valid");
        let gw = &c.peers["gw"];
        assert!(gw.reachable() && gw.url.is_none());
        let a = gw.a2a_out.as_ref().expect("an A2A peer");
        assert!(!a.remote.card && a.remote.bearer.is_some());
        assert_eq!(
            (a.reply_type.as_str(), a.follow.as_secs()),
            ("REPLY", 86_400)
        );
        let c = Config::parse(
            &peer("a2a_card_url = \"https://gw.example/.well-known/agent-card.json\"\na2a_reply_type = \"ANSWER\"\na2a_follow_secs = 60"),
            Path::new("."),
            env,
        )
        .expect("valid");
        let a = c.peers["gw"].a2a_out.as_ref().expect("an A2A peer");
        assert!(a.remote.card);
        assert_eq!((a.reply_type.as_str(), a.follow.as_secs()), ("ANSWER", 60));
        for (keys, expected) in [
            (
                "url = \"http://h/message\"\nsecret = \"s\"\na2a_url = \"http://h/a2a\"",
                "url and a2a_url (or a2a_card_url) exclude each other",
            ),
            (
                "a2a_url = \"http://h/a2a\"\na2a_card_url = \"http://h/c.json\"",
                "a2a_url and a2a_card_url exclude each other",
            ),
            (
                "a2a_url = \"gopher://h\"",
                "peers.gw.a2a_url: not an http(s) URL",
            ),
            (
                "a2a_token = \"t\"\na2a_reply_type = \"X\"",
                "peers.gw.a2a_reply_type: only for a peer with a2a_url",
            ),
            (
                "a2a_url = \"http://h/a2a\"\na2a_reply_type = \"no spaces\"",
                "is not a type name",
            ),
            (
                "a2a_url = \"http://h/a2a\"\na2a_bearer_env = \"UNSET_VAR\"",
                "peers.gw.a2a_bearer_env",
            ),
        ] {
            let errs = errors(&peer(keys));
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "{keys}: {errs:?}"
            );
        }
        // reply_to may name it: replies are delivered to it as tasks.
        let to_gw = peer("a2a_url = \"http://h/a2a\"")
            .replace("reply_to = [\"tony\"]", "reply_to = [\"gw\"]");
        assert_eq!(errors(&to_gw), Vec::<String>::new());
    }

    #[test]
    fn good_config_loads_with_merged_agent_settings() {
        let c = Config::parse(GOOD, Path::new("/etc/inbox"), env).expect("valid");
        let tasks = &c.routes["tasks"];
        let agent = tasks.agent().expect("agent route");
        assert_eq!(agent.timeout, Duration::from_secs(600));
        assert_eq!(agent.command, ["echo", "{prompt}"]);
        assert_eq!(agent.max_concurrent, 4);
        assert!(c.routes["inbox"].agent().is_none());
        assert_eq!(c.server.data_dir, Path::new("/etc/inbox/data"));
        assert_eq!(c.relay.retry_schedule.len(), 8);
        assert_eq!(
            c.peer_by_secret(b"tony-secret").map(|p| p.name.as_str()),
            Some("tony")
        );
        assert!(c.peer_by_secret(b"tony-secre").is_none());
        assert!(c.is_admin(b"admin"));
        // `{prompt}` carries no token (the agent's curl reads a header file), so it is
        // not warned about: only the two literal secrets are, in one line.
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            !c.warnings.iter().any(|w| w.contains("{prompt}")),
            "{:?}",
            c.warnings
        );
        assert_eq!(agent.max_replies_per_turn, 20);
        assert_eq!(agent.max_replies_per_minute, 30);
        assert!(!format!("{:?}", c).contains("tony-secret"));
    }

    #[test]
    fn every_problem_is_reported_with_where_it_is() {
        let text = r#"
            [server]
            listen = "nowhere"
            [agent]
            command = ["x"]
            [peers.tony]
            url = "ftp://x"
            secret_env = "UNSET_VAR"
            [routes.a]
            from = ["tony", "ghost"]
            types = []
            [routes.b]
            from = ["tony"]
            types = ["TASK"]
            [routes.c]
            from = ["tony"]
            types = ["TASK"]
            [routes.m]
            from = ["tony"]
            types = ["NOTE"]
            mailbox = true
            reply_to = ["tony"]
            agent = { timeout_secs = 1 }
        "#;
        let errs = errors(text);
        let expect = [
            "server.listen: \"nowhere\" is not an address",
            "peers.tony.url: \"ftp://x\" is not an http(s) URL",
            "peers.tony.secret_env: environment variable UNSET_VAR is not set",
            "routes.a.from[1]: unknown peer \"ghost\" (known: tony)",
            "routes.a.types: must not be empty",
            "routes.b and routes.c both accept type \"TASK\" from peer \"tony\"",
            "routes.m: a mailbox has no agent, so agent is not allowed",
            "routes.m: a mailbox has no agent, so reply_to is not allowed",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    }

    #[test]
    fn single_problems() {
        let base = |extra: &str| {
            format!(
                "[agent]\ncommand=[\"x\"]\n[peers.p]\nurl=\"http://h/m\"\nsecret=\"s\"\n{extra}"
            )
        };
        let cases: &[(&str, &str)] = &[
            ("[server]\nport = 1", "unknown field `port`"),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"A B\"]",
                "is not a type name",
            ),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"A\",\"A\"]",
                "listed twice",
            ),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"A\"]\nreply_types=[\"B\"]",
                "reply_types and reply_to go together",
            ),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"A\"]\nagent={on_failure=\"shout\"}",
                "is not \"notify\", \"notify_with_stderr\" or \"ignore\"",
            ),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"A\"]\nagent={command=[]}",
                "no agent command",
            ),
            (
                "[relay]\nretry_schedule=[\"soon\"]",
                "relay.retry_schedule[0]",
            ),
            (
                "[peers.q]\nurl=\"http://h/m\"\nsecret=\"s\"",
                "same secret as peers.p",
            ),
            ("[peers.q]\nurl=\"http://h/m\"", "needs secret_env"),
            (
                "[server]\nmax_hops = 0",
                "server.max_hops: must be greater than 0",
            ),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"*\",\"A\"]",
                "must be the only entry",
            ),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"*\"]\n[routes.s]\nfrom=[\"p\"]\ntypes=[\"*\"]",
                "both accept type \"*\" from peer \"p\"",
            ),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"A\"]\nreply_types=[\"*\"]\nreply_to=[\"p\"]",
                "is not a type name",
            ),
            (
                "[server]\nsynchronous = \"sometimes\"",
                "server.synchronous",
            ),
            (
                "[routes.r]\nfrom=[\"p\"]\ntypes=[\"A\"]\nagent={on_interrupt=\"later\"}",
                "is not \"rerun\" or \"fail\"",
            ),
            (
                "[peers.q]\nurl=\"http://h/m\"\nsecret=\"t\"\nauth=\"magic\"",
                "peers.q.auth: \"magic\" is not \"secret\" or \"standard-webhooks\"",
            ),
            (
                "[peers.q]\nurl=\"http://h/m\"\nsecret=[\"whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=\", \"t\"]\nauth=\"standard-webhooks\"",
                "peers.q.secret[1]: a Standard Webhooks secret starts with \"whsec_\"",
            ),
            (
                "[peers.q]\nurl=\"http://h/m\"\nsecret=[\"t\", \"t\"]",
                "peers.q lists the same secret twice",
            ),
            (
                "[server]\nmax_json_depth = 129",
                "server.max_json_depth: at most 128",
            ),
        ];
        for (extra, want) in cases {
            let errs = errors(&base(extra));
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "{extra:?}: want {want:?}, got {errs:#?}"
            );
        }
        assert!(errors(&base("")).is_empty());
    }
}

/// The defaults README.md's config tables state are the ones an empty config gets.
#[cfg(test)]
mod readme_defaults {
    use super::*;

    /// `key` → the default column of README.md's config tables (the first key of a row; the
    /// first table naming a key, as `[server]` comes before `[store]` and `[agent]` before
    /// `[approval]`).
    fn readme_defaults() -> std::collections::BTreeMap<String, String> {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("README.md");
        let mut found = std::collections::BTreeMap::new();
        for l in readme.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = l.split(" | ").collect();
            let key = cells
                .first()
                .and_then(|c| c.trim_start_matches("| ").split('`').nth(1));
            if let (Some(key), Some(default)) = (key, cells.get(1)) {
                found
                    .entry(key.to_owned())
                    .or_insert_with(|| default.trim().to_owned());
            }
        }
        found
    }

    #[test]
    fn every_default_the_readme_states_is_the_configs() {
        let text = "[agent]\ncommand = [\"true\"]\n[peers.p]\nurl = \"http://h/m\"\nsecret = \"s-secret-1\"\n\
                    [routes.r]\nfrom = [\"p\"]\ntypes = [\"A\"]\n";
        let c = Config::parse(text, Path::new("/srv/inbox"), |_| None).expect("a valid config");
        let a = c.routes["r"].agent().expect("an agent route");
        let s = &c.server;
        let secs = |d: Duration| format!("`{}`", d.as_secs());
        let ours: Vec<(&str, String)> = vec![
            ("listen", format!("`\"{}\"`", s.listen)),
            ("max_body_bytes", format!("`{}`", s.max_body_bytes)),
            ("max_json_depth", format!("`{}`", s.max_json_depth)),
            ("max_hops", format!("`{}`", s.max_hops)),
            (
                "data_dir",
                format!(
                    "`\"{}\"`",
                    s.data_dir.strip_prefix("/srv/inbox").unwrap().display()
                ),
            ),
            ("reply_grace_secs", secs(s.reply_grace)),
            ("max_connections", format!("`{}`", s.max_connections)),
            (
                "max_connections_per_ip",
                format!("`{}`", s.max_connections_per_ip),
            ),
            ("drain_secs", secs(s.drain)),
            ("dedup_window_secs", secs(s.dedup_window)),
            (
                "retention_days",
                format!("`{}`", s.retention.as_secs() / 86_400),
            ),
            ("signature_tolerance_secs", secs(s.signature_tolerance)),
            ("auth_failure_limit", format!("`{}`", s.auth_failure_limit)),
            ("auth_failure_window_secs", secs(s.auth_failure_window)),
            ("timeout_secs", secs(a.timeout)),
            ("kill_grace_secs", secs(a.kill_grace)),
            ("max_concurrent", format!("`{}`", a.max_concurrent)),
            ("max_queued", format!("`{}`", a.max_queued)),
            ("output_cap_bytes", format!("`{}`", a.output_cap)),
            (
                "max_replies_per_turn",
                format!("`{}`", a.max_replies_per_turn),
            ),
            (
                "max_replies_per_minute",
                format!("`{}`", a.max_replies_per_minute),
            ),
            ("attempt_timeout_secs", secs(c.relay.attempt_timeout)),
            ("max_in_flight", format!("`{}`", c.relay.max_in_flight)),
            ("max_instances", format!("`{}`", c.plugins.max_instances)),
        ];
        let readme = readme_defaults();
        let mut wrong = Vec::new();
        for (key, value) in &ours {
            match readme.get(*key) {
                Some(r) if r == value => {}
                other => wrong.push(format!("{key}: README {other:?}, config {value}")),
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
