//! routes.toml: the file's schema, loading, and validation into a [`Config`].
//!
//! Parsing (serde, `deny_unknown_fields`) is kept apart from validation: [`Config::parse`] first turns
//! TOML into the raw `schema` structs, then `validate` checks every rule and reports every problem at
//! once, each with where it is. The result is immutable; a reload builds a new one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The raw shape of routes.toml, exactly as serde reads it.
mod schema {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct File {
        #[serde(default)]
        pub(super) server: Server,
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
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Server {
        pub(super) listen: Option<String>,
        pub(super) public_url: Option<String>,
        pub(super) max_body_bytes: Option<u64>,
        pub(super) admin_secret_env: Option<String>,
        pub(super) admin_secret: Option<String>,
        pub(super) max_hops: Option<u32>,
        pub(super) data_dir: Option<String>,
        pub(super) reply_grace_secs: Option<u64>,
        pub(super) max_connections: Option<usize>,
        pub(super) synchronous: Option<String>,
        pub(super) drain_secs: Option<u64>,
        pub(super) dedup_window_secs: Option<u64>,
        pub(super) retention_days: Option<u64>,
    }

    /// `[agent]` and a route's `agent = { ... }` share this shape; the route's keys win.
    #[derive(Debug, Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Agent {
        pub(super) command: Option<Vec<String>>,
        pub(super) stdin: Option<bool>,
        pub(super) timeout_secs: Option<u64>,
        pub(super) kill_grace_secs: Option<u64>,
        pub(super) max_concurrent: Option<usize>,
        pub(super) max_queued: Option<usize>,
        pub(super) output_cap_bytes: Option<usize>,
        pub(super) on_failure: Option<String>,
        pub(super) on_interrupt: Option<String>,
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
        pub(super) url: String,
        pub(super) secret_env: Option<String>,
        pub(super) secret: Option<String>,
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
}

/// In `types`, the sender's fallback: every type no other route of that sender names.
pub const WILDCARD: &str = "*";

/// Default `[server] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
/// Default `[relay] retry_schedule`: about a day of attempts.
pub const DEFAULT_RETRY_SCHEDULE: [&str; 8] = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"];

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
    /// What a failed turn does.
    pub on_failure: OnFailure,
    /// What a turn interrupted by a host stop does.
    pub on_interrupt: OnInterrupt,
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
    /// The agent settings, unless this is a mailbox.
    pub fn agent(&self) -> Option<&AgentSettings> {
        match &self.kind {
            RouteKind::Agent(a) => Some(a),
            RouteKind::Mailbox => None,
        }
    }
}

/// A validated peer: another inbox that may send to us and receives our replies.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's name (its key under `[peers]`).
    pub name: String,
    /// Where messages to the peer are POSTed.
    pub url: http::Uri,
    /// The secret shared with the peer, both ways.
    pub secret: Secret,
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
    /// Secret for the admin endpoints, if set.
    pub admin_secret: Option<Secret>,
    /// Relays within a thread after which a message is refused as a loop.
    pub max_hops: u32,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// How long a reply token stays valid after its turn ends.
    pub reply_grace: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How durable a commit is.
    pub synchronous: crate::store::Synchronous,
    /// How long running turns get to finish on shutdown.
    pub drain: Duration,
    /// How long a sender's idempotency key dedups.
    pub dedup_window: Duration,
    /// Finished records older than this are pruned.
    pub retention: Duration,
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
    /// Short hash of the file's text and its plugins' bytes, for `X-Config-Hash` and reload checks.
    pub hash: String,
    /// The file it was loaded from, if any (a reload reads it again).
    pub source: Option<PathBuf>,
    /// sha256 of the file's text (with the plugins' digests it makes `hash`).
    pub text_digest: [u8; 32],
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
    /// Environment variables holding secrets; agents never inherit them.
    pub secret_vars: Vec<String>,
    /// Things that work but deserve a look (e.g. literal secrets).
    pub warnings: Vec<String>,
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

    /// Parses and validates config text; `env` looks up `secret_env` variables.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let raw: schema::File = toml::from_str(text)
            .map_err(|e| ConfigErrors(vec![ConfigError::Syntax(e.to_string().trim().into())]))?;
        let mut config = validate(raw, base_dir, &env)?;
        config.text_digest = Sha256::digest(text.as_bytes()).into();
        config.hash = content_hash(&config);
        Ok(config)
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

    /// The peer whose secret this is, if any (every peer is compared, so timing says nothing).
    pub fn peer_by_secret(&self, candidate: &[u8]) -> Option<&Peer> {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        let mut found = None;
        for peer in self.peers.values() {
            if peer.secret.matches_digest(&digest) {
                found = Some(peer);
            }
        }
        found
    }

    /// Whether `candidate` is the admin secret.
    pub fn is_admin(&self, candidate: &[u8]) -> bool {
        self.server
            .admin_secret
            .as_ref()
            .is_some_and(|s| s.matches(candidate))
    }
}

/// Parses a duration such as `"0s"`, `"5m"` or `"2h"`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

/// Which type names are allowed: short, no spaces, nothing a shell or JSON template would mangle.
fn valid_type_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn valid_name(n: &str) -> bool {
    valid_type_name(n) && !n.contains(':')
}

struct Checker<'a> {
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Checker<'_> {
    fn invalid(&mut self, at: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            at: at.into(),
            reason: reason.into(),
        });
    }

    /// Resolves `secret_env` / `secret`; exactly one must be given.
    fn secret(&mut self, at: &str, env_key: Option<&str>, literal: Option<&str>) -> Option<Secret> {
        match (env_key, literal) {
            (Some(_), Some(_)) => {
                self.invalid(at, "set either secret_env or a literal secret, not both");
                None
            }
            (Some(var), None) => match (self.env)(var) {
                Some(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    self.errors.push(ConfigError::UnsetSecret {
                        at: at.into(),
                        var: var.into(),
                    });
                    None
                }
            },
            (None, Some("")) => {
                self.invalid(at, "the secret is empty");
                None
            }
            (None, Some(v)) => {
                self.warnings.push(format!(
                    "{at}: a literal secret is in the file; use an environment variable outside local demos"
                ));
                Some(Secret::new(v))
            }
            (None, None) => None,
        }
    }

    fn positive<T: PartialOrd + Default + Copy>(
        &mut self,
        at: &str,
        v: Option<T>,
        default: T,
    ) -> T {
        match v {
            Some(v) if v <= T::default() => {
                self.invalid(at, "must be greater than 0");
                default
            }
            Some(v) => v,
            None => default,
        }
    }
}

/// Hash of everything the config is made of: the file's text and each plugin's bytes, so a plugin
/// swapped under the same name changes the hash too. A plugin that cannot be read hashes as empty
/// (loading it fails later, with the error).
fn content_hash(config: &Config) -> String {
    let plugins: Vec<(&Path, [u8; 32])> = config
        .plugin_paths()
        .into_iter()
        .map(|p| {
            (
                p,
                Sha256::digest(std::fs::read(p).unwrap_or_default()).into(),
            )
        })
        .collect();
    hash_digests(&config.text_digest, &plugins)
}

/// The config hash of routes.toml `text` with these plugin files (absolute path and bytes, sorted by
/// path), as `X-Config-Hash` shows it. Public so a client can tell which config answered it.
pub fn hash_contents(text: &str, plugins: &[(&Path, &[u8])]) -> String {
    let digests: Vec<(&Path, [u8; 32])> = plugins
        .iter()
        .map(|(p, b)| (*p, Sha256::digest(b).into()))
        .collect();
    hash_digests(&Sha256::digest(text.as_bytes()).into(), &digests)
}

/// The config hash from the digest of routes.toml and each plugin's (path, sha256), sorted by path.
pub fn hash_digests(text_digest: &[u8; 32], plugins: &[(&Path, [u8; 32])]) -> String {
    let mut h = Sha256::new();
    h.update(text_digest);
    for (path, digest) in plugins {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update(digest);
    }
    hex::encode(&h.finalize()[..8])
}

fn validate(
    raw: schema::File,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        base_dir,
        errors: Vec::new(),
        warnings: Vec::new(),
        env,
    };

    // [server]
    let s = &raw.server;
    let listen_text = s.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        c.invalid(
            "server.listen",
            format!("{listen_text:?} is not an address such as \"127.0.0.1:8700\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 8700))
    });
    let public_url = s
        .public_url
        .as_ref()
        .map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &public_url {
        match u.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
            _ => c.invalid("server.public_url", format!("{u:?} is not an http(s) URL")),
        }
    }
    let max_body_bytes = c.positive("server.max_body_bytes", s.max_body_bytes, 262_144) as usize;
    let admin_secret = c.secret(
        "server.admin_secret",
        s.admin_secret_env.as_deref(),
        s.admin_secret.as_deref(),
    );
    let max_hops = c.positive("server.max_hops", s.max_hops, 8);
    let data_dir = base_dir.join(s.data_dir.as_deref().unwrap_or("data"));
    let reply_grace = Duration::from_secs(s.reply_grace_secs.unwrap_or(600));
    let max_connections = c.positive("server.max_connections", s.max_connections, 1024);
    let synchronous = match s.synchronous.as_deref() {
        None | Some("full") => crate::store::Synchronous::Full,
        Some("normal") => crate::store::Synchronous::Normal,
        Some("off") => {
            c.warnings.push(
                "server.synchronous = \"off\": acked messages can be lost on a crash; benchmarks only".into(),
            );
            crate::store::Synchronous::Off
        }
        Some(other) => {
            c.invalid(
                "server.synchronous",
                format!("{other:?} is not \"full\", \"normal\" or \"off\""),
            );
            crate::store::Synchronous::Full
        }
    };
    let drain = Duration::from_secs(s.drain_secs.unwrap_or(30));
    let dedup_window = Duration::from_secs(s.dedup_window_secs.unwrap_or(86_400));
    let retention =
        Duration::from_secs(24 * 3600 * c.positive("server.retention_days", s.retention_days, 14));

    // [relay]
    let schedule_text: Vec<String> = raw.relay.retry_schedule.clone().unwrap_or_else(|| {
        DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    if schedule_text.is_empty() {
        c.errors.push(ConfigError::Empty {
            at: "relay.retry_schedule".into(),
        });
    }
    let mut retry_schedule = Vec::new();
    for (i, t) in schedule_text.iter().enumerate() {
        match parse_duration(t) {
            Ok(d) => retry_schedule.push(d),
            Err(e) => c.invalid(format!("relay.retry_schedule[{i}]"), e),
        }
    }
    let relay = Relay {
        retry_schedule,
        attempt_timeout: Duration::from_secs(c.positive(
            "relay.attempt_timeout_secs",
            raw.relay.attempt_timeout_secs,
            10,
        )),
        max_in_flight: c.positive("relay.max_in_flight", raw.relay.max_in_flight, 32),
    };

    // [peers]
    let mut peers = BTreeMap::new();
    for (name, p) in &raw.peers {
        let at = format!("peers.{name}");
        if !valid_name(name) {
            c.invalid(&at, "a peer name is letters, digits, '_', '-' or '.'");
        }
        let url = match p.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                Some(u)
            }
            _ => {
                c.invalid(
                    format!("{at}.url"),
                    format!("{:?} is not an http(s) URL", p.url),
                );
                None
            }
        };
        let secret = c.secret(
            &format!("{at}.secret"),
            p.secret_env.as_deref(),
            p.secret.as_deref(),
        );
        if p.secret_env.is_none() && p.secret.is_none() {
            c.invalid(&at, "needs secret_env (or, for local demos, secret)");
        }
        if let (Some(url), Some(secret)) = (url, secret) {
            peers.insert(
                name.clone(),
                Peer {
                    name: name.clone(),
                    url,
                    secret,
                },
            );
        }
    }
    // Authentication identifies the sender by its secret, so secrets must be unique.
    let secrets: Vec<(&String, &Secret)> = peers.iter().map(|(n, p)| (n, &p.secret)).collect();
    for (i, (a, sa)) in secrets.iter().enumerate() {
        for (b, _) in secrets
            .iter()
            .skip(i + 1)
            .filter(|(_, sb)| sb.digest == sa.digest)
        {
            c.invalid(
                format!("peers.{b}.secret"),
                format!("same secret as peers.{a}; the sender is known by its secret"),
            );
        }
        if admin_secret.as_ref().is_some_and(|s| s.digest == sa.digest) {
            c.invalid(
                format!("peers.{a}.secret"),
                "same secret as the admin secret",
            );
        }
    }
    let known_peers = || {
        let names: Vec<&str> = raw.peers.keys().map(String::as_str).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };

    // [routes]
    let mut routes = BTreeMap::new();
    let mut claimed: HashMap<(String, String), String> = HashMap::new();
    for (name, r) in &raw.routes {
        let at = format!("routes.{name}");
        if !valid_name(name) {
            c.invalid(&at, "a route name is letters, digits, '_', '-' or '.'");
        }
        for (key, list) in [("from", &r.from), ("reply_to", &r.reply_to)] {
            for (i, peer) in list.iter().enumerate() {
                if !raw.peers.contains_key(peer) {
                    c.errors.push(ConfigError::UnknownPeer {
                        at: format!("{at}.{key}[{i}]"),
                        peer: peer.clone(),
                        known: known_peers(),
                    });
                }
            }
        }
        if r.from.is_empty() {
            c.errors.push(ConfigError::Empty {
                at: format!("{at}.from"),
            });
        }
        if r.types.is_empty() {
            c.errors.push(ConfigError::Empty {
                at: format!("{at}.types"),
            });
        }
        for (key, list) in [("types", &r.types), ("reply_types", &r.reply_types)] {
            let mut seen = BTreeSet::new();
            for (i, t) in list.iter().enumerate() {
                if key == "types" && t == WILDCARD {
                    if list.len() > 1 {
                        c.invalid(
                            format!("{at}.types"),
                            "\"*\" (every type no other route names) must be the only entry",
                        );
                    }
                } else if !valid_type_name(t) {
                    c.invalid(
                        format!("{at}.{key}[{i}]"),
                        format!("{t:?} is not a type name (letters, digits, '_', '-', '.', ':')"),
                    );
                } else if !seen.insert(t) {
                    c.invalid(format!("{at}.{key}[{i}]"), format!("{t:?} is listed twice"));
                }
            }
        }
        // An internal route is never matched by sender and type, so it cannot overlap.
        for peer in r.from.iter().filter(|_| !r.internal) {
            for t in &r.types {
                let key = (peer.clone(), t.clone());
                if let Some(other) = claimed.get(&key) {
                    c.errors.push(ConfigError::Overlap {
                        a: other.clone(),
                        b: name.clone(),
                        peer: peer.clone(),
                        msg_type: t.clone(),
                    });
                } else {
                    claimed.insert(key, name.clone());
                }
            }
        }

        let kind = if r.mailbox {
            for (key, present) in [
                ("agent", r.agent.is_some()),
                ("reply_types", !r.reply_types.is_empty()),
                ("reply_to", !r.reply_to.is_empty()),
            ] {
                if present {
                    c.errors.push(ConfigError::AgentKeyOnMailbox {
                        route: name.clone(),
                        key: key.into(),
                    });
                }
            }
            RouteKind::Mailbox
        } else {
            if r.reply_types.is_empty() != r.reply_to.is_empty() {
                c.invalid(
                    &at,
                    "reply_types and reply_to go together: the agent replies with these types to these peers",
                );
            }
            RouteKind::Agent(agent_settings(&mut c, &at, &raw.agent, r.agent.as_ref()))
        };
        let plugin = r.plugin.as_ref().map(|p| {
            let path = base_dir.join(p);
            if !path.is_file() {
                c.invalid(
                    format!("{at}.plugin"),
                    format!("{} is not a file", path.display()),
                );
            }
            let limits = r.plugin_limits.clone().unwrap_or_default();
            let d = &raw.plugins.limits;
            let memory_mib = c.positive(
                &format!("{at}.plugin_limits.memory_mib"),
                limits.memory_mib.or(d.memory_mib),
                16,
            );
            let deadline_ms = c.positive(
                &format!("{at}.plugin_limits.deadline_ms"),
                limits.deadline_ms.or(d.deadline_ms),
                50,
            );
            PluginSpec {
                path,
                config_json: r
                    .plugin_config
                    .as_ref()
                    .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()))
                    .unwrap_or_else(|| "{}".into()),
                memory_bytes: memory_mib * 1024 * 1024,
                deadline: Duration::from_millis(deadline_ms),
                warm_calls: limits.warm_calls.or(d.warm_calls).unwrap_or(0),
            }
        });
        if r.plugin.is_none() && (r.plugin_config.is_some() || r.plugin_limits.is_some()) {
            c.invalid(&at, "plugin_config and plugin_limits need a plugin");
        }
        routes.insert(
            name.clone(),
            Route {
                plugin,
                internal: r.internal,
                name: name.clone(),
                from: r.from.clone(),
                types: r.types.clone(),
                reply_types: r.reply_types.clone(),
                reply_to: r.reply_to.clone(),
                kind,
            },
        );
    }

    let plugins = Plugins {
        cache_dir: match raw.plugins.cache_dir.as_deref() {
            Some(dir) => base_dir.join(dir),
            None => data_dir.join("plugin-cache"),
        },
        max_instances: c.positive("plugins.max_instances", raw.plugins.max_instances, 256),
        max_memory_bytes: routes
            .values()
            .filter_map(|r: &Route| r.plugin.as_ref().map(|p| p.memory_bytes))
            .max()
            .unwrap_or(16 * 1024 * 1024),
    };

    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    Ok(Config {
        hash: String::new(),
        source: None,
        text_digest: [0; 32],
        base_dir: base_dir.to_path_buf(),
        server: Server {
            listen,
            public_url,
            max_body_bytes,
            admin_secret,
            max_hops,
            data_dir,
            reply_grace,
            max_connections,
            synchronous,
            drain,
            dedup_window,
            retention,
        },
        relay,
        peers,
        routes,
        plugins,
        secret_vars: raw
            .server
            .admin_secret_env
            .iter()
            .chain(raw.peers.values().filter_map(|p| p.secret_env.as_ref()))
            .cloned()
            .collect(),
        warnings: c.warnings,
    })
}

/// Merges `[agent]` with a route's `agent = { ... }` and checks the result.
fn agent_settings(
    c: &mut Checker<'_>,
    at: &str,
    defaults: &schema::Agent,
    over: Option<&schema::Agent>,
) -> AgentSettings {
    let o = over.cloned().unwrap_or_default();
    let d = defaults;
    let at = format!("{at}.agent");
    let mut command = o.command.or_else(|| d.command.clone()).unwrap_or_default();
    // A program given as a relative path ("agents/run.sh") is relative to routes.toml's directory;
    // a bare name ("openclaw") is looked up in PATH.
    if let Some(program) = command.first_mut()
        && program.contains('/')
        && Path::new(program.as_str()).is_relative()
    {
        *program = c.base_dir.join(program.as_str()).display().to_string();
    }
    if command.is_empty() || command[0].is_empty() {
        c.invalid(
            format!("{at}.command"),
            "no agent command: set [agent] command or the route's agent.command",
        );
    }
    let on_failure = match o.on_failure.or_else(|| d.on_failure.clone()).as_deref() {
        None | Some("notify") => OnFailure::Notify,
        Some("ignore") => OnFailure::Ignore,
        Some(other) => {
            c.invalid(
                format!("{at}.on_failure"),
                format!("{other:?} is not \"notify\" or \"ignore\""),
            );
            OnFailure::Notify
        }
    };
    let on_interrupt = match o.on_interrupt.or_else(|| d.on_interrupt.clone()).as_deref() {
        None | Some("rerun") => OnInterrupt::Rerun,
        Some("fail") => OnInterrupt::Fail,
        Some(other) => {
            c.invalid(
                format!("{at}.on_interrupt"),
                format!("{other:?} is not \"rerun\" or \"fail\""),
            );
            OnInterrupt::Rerun
        }
    };
    AgentSettings {
        command,
        stdin: o.stdin.or(d.stdin).unwrap_or(false),
        timeout: Duration::from_secs(c.positive(
            &format!("{at}.timeout_secs"),
            o.timeout_secs.or(d.timeout_secs),
            300,
        )),
        kill_grace: Duration::from_secs(o.kill_grace_secs.or(d.kill_grace_secs).unwrap_or(5)),
        max_concurrent: c.positive(
            &format!("{at}.max_concurrent"),
            o.max_concurrent.or(d.max_concurrent),
            4,
        ),
        max_queued: c.positive(
            &format!("{at}.max_queued"),
            o.max_queued.or(d.max_queued),
            1000,
        ),
        output_cap: c.positive(
            &format!("{at}.output_cap_bytes"),
            o.output_cap_bytes.or(d.output_cap_bytes),
            65_536,
        ),
        on_failure,
        on_interrupt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
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
            "peers.tony.secret: environment variable UNSET_VAR is not set",
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
                "is not \"notify\" or \"ignore\"",
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
