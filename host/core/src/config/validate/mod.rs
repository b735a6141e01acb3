//! Validation: the raw schema in, a [`Config`] out, or every problem found, each with where it is.
//!
//! One function per section; they share a [`Checker`] that collects errors and warnings and reads
//! secrets: `*_env` from the environment it is given, `*_file` from disk (`secret_file`, the only
//! files validation reads).

mod agents;
mod peers;
mod routes;
mod server;

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Config, ConfigError, ConfigErrors, Secret};
use super::{schema, secret_file};

/// Parses a duration such as `"0s"`, `"5m"` or `"2h"`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

pub(super) use crate::model::valid_type_name;

/// Whether `n` may name a peer, a route or an agent: a type name without `:`.
pub fn valid_name(n: &str) -> bool {
    valid_type_name(n) && !n.contains(':')
}

pub(super) struct Checker<'a> {
    pub(super) base_dir: &'a Path,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<String>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Every secret resolved, in order: a reload that changes only a secret file is a change.
    secret_digest: Sha256,
    /// Where secrets are written in the file itself, and whether each is marked demo-only.
    literal_secrets: Vec<(String, bool)>,
}

/// A literal secret whose value starts with this is marked as a demo's: `check` and the start
/// name it as such (one line for all of them) instead of warning about each.
pub(super) const DEMO_SECRET_PREFIX: &str = "demo-";

impl Checker<'_> {
    pub(super) fn invalid(&mut self, at: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            at: at.into(),
            reason: reason.into(),
        });
    }

    /// Resolves a secret given as `KEY_env` (variables), `KEY_file` (files) or a literal `KEY`,
    /// each one value or a list (during a rotation, the current secret first); at most one of
    /// the three. `at` is `SECTION.KEY`. Returns nothing if none is given or any fails.
    pub(super) fn secrets(
        &mut self,
        at: &str,
        env_keys: Option<&schema::OneOrMany>,
        files: Option<&schema::OneOrMany>,
        literals: Option<&schema::OneOrMany>,
    ) -> Vec<Secret> {
        let given = [env_keys.is_some(), files.is_some(), literals.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            let key = at.rsplit('.').next().unwrap_or(at);
            self.invalid(
                at,
                format!("set one of {key}_env, {key}_file or a literal {key}, not more"),
            );
            return Vec::new();
        }
        let before = self.errors.len();
        let values = if let Some(vars) = env_keys {
            let mut values = Vec::new();
            for var in vars.to_vec() {
                match (self.env)(&var) {
                    Some(v) if !v.is_empty() => values.push(v),
                    _ => self.errors.push(ConfigError::UnsetSecret {
                        at: format!("{at}_env"),
                        var,
                    }),
                }
            }
            values
        } else if let Some(paths) = files {
            let mut values = Vec::new();
            for path in paths.to_vec() {
                match secret_file::read(&self.base_dir.join(&path)) {
                    Ok(f) => {
                        if f.others_may_read {
                            self.warnings.push(format!(
                                "{at}_file: others may read {path}; chmod o-r unless it is a \
                                 container secret"
                            ));
                        }
                        values.push(f.value);
                    }
                    Err(why) => self.invalid(format!("{at}_file"), why),
                }
            }
            values
        } else if let Some(literals) = literals {
            let values = literals.to_vec();
            let demo = values.iter().all(|v| v.starts_with(DEMO_SECRET_PREFIX));
            self.literal_secrets.push((at.to_owned(), demo));
            values
        } else {
            return Vec::new();
        };
        if self.errors.len() > before {
            return Vec::new();
        }
        if values.is_empty() || values.iter().any(String::is_empty) {
            self.invalid(at, "the secret is empty");
            return Vec::new();
        }
        self.secret_digest.update(at.as_bytes());
        for v in &values {
            self.secret_digest.update(Sha256::digest(v.as_bytes()));
        }
        values.into_iter().map(Secret::new).collect()
    }

    pub(super) fn positive<T: PartialOrd + Default + Copy>(
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

/// Checks every section; returns the config, or every problem found.
pub(super) fn validate(
    raw: schema::File,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        base_dir,
        errors: Vec::new(),
        warnings: Vec::new(),
        env,
        secret_digest: Sha256::new(),
        literal_secrets: Vec::new(),
    };
    let no_server = schema::Server::default();
    let raw_server = raw.server.as_ref().unwrap_or(&no_server);
    let mut server = server::server(&mut c, raw_server);
    let store = server::store(&mut c, &raw.store, &mut server);
    let relay = server::relay(&mut c, &raw.relay);
    let peers = peers::peers(&mut c, &raw.peers, &server.admin_secrets);
    let routes = routes::routes(&mut c, &raw);
    let plugins = routes::plugins(&mut c, &raw.plugins, &server.data_dir, &routes);
    let a2a = a2a(&mut c, raw.a2a.as_ref(), &routes);
    let agents = agents::agents(&mut c, &raw, &peers, &routes);
    let approval = routes::approval(&mut c, &raw.approval);
    bearers_distinct(&mut c, &peers, &agents, &server.admin_secrets);
    literal_secrets_warning(&mut c);
    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    Ok(Config {
        source: None,
        text_digest: [0; 32],
        shared_digest: [0; 32],
        base_dir: base_dir.to_path_buf(),
        server,
        relay,
        peers,
        routes,
        plugins,
        a2a,
        agents,
        approval,
        store,
        has_server_table: raw.server.is_some(),
        secret_digest: c.secret_digest.finalize().into(),
        secret_vars: raw_server
            .admin_secret_env
            .iter()
            .chain(raw.peers.values().filter_map(|p| p.secret_env.as_ref()))
            .chain(raw.peers.values().filter_map(|p| p.a2a_token_env.as_ref()))
            .chain(
                raw.peers
                    .values()
                    .filter_map(|p| p.send_secret_env.as_ref()),
            )
            .chain(raw.peers.values().filter_map(|p| p.a2a_bearer_env.as_ref()))
            .chain(raw.agents.values().filter_map(|a| a.token_env.as_ref()))
            .chain(
                raw.store
                    .url_env
                    .iter()
                    .map(|v| schema::OneOrMany::One(v.clone()))
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .chain(
                std::iter::once(&raw.agent)
                    .chain(raw.routes.values().filter_map(|r| r.agent.as_ref()))
                    .filter_map(|a| a.token_env.clone())
                    .map(schema::OneOrMany::One)
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .flat_map(schema::OneOrMany::to_vec)
            .collect(),
        warnings: c.warnings,
    })
}

/// One line for every secret written in the file: a demo's (values marked `demo-`) are for this
/// machine only; any other should move to `*_env` or `*_file`.
fn literal_secrets_warning(c: &mut Checker) {
    let (demo, real): (Vec<_>, Vec<_>) = c.literal_secrets.iter().partition(|(_, demo)| *demo);
    let names = |v: &[&(String, bool)]| {
        v.iter()
            .map(|(at, _)| at.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let warning = match (demo.is_empty(), real.is_empty()) {
        (true, true) => return,
        (false, true) => format!(
            "demo secrets in the file ({}): for this machine only; use *_env or *_file before a \
             peer can reach it",
            names(&demo)
        ),
        _ => format!(
            "{}: a literal secret is in the file; use *_env or *_file outside local demos{}",
            names(&real),
            if demo.is_empty() {
                String::new()
            } else {
                format!(" (demo secrets: {})", names(&demo))
            }
        ),
    };
    c.warnings.push(warning);
}

/// Every bearer token (a peer's A2A token, a local agent's token) names one caller and is nobody
/// else's credential: not another token, not a peer's secret (a Standard Webhooks signing key never
/// travels as a bearer), not the admin secret.
fn bearers_distinct(
    c: &mut Checker<'_>,
    peers: &std::collections::BTreeMap<String, super::Peer>,
    agents: &std::collections::BTreeMap<String, super::LocalAgent>,
    admin_secrets: &[Secret],
) {
    let mut all: Vec<(String, bool, &Secret)> = Vec::new();
    for (n, p) in peers {
        all.extend(
            p.secrets
                .iter()
                .map(|s| (format!("peers.{n}.secret"), false, s)),
        );
        all.extend(
            p.a2a_tokens
                .iter()
                .map(|s| (format!("peers.{n}.a2a_token"), true, s)),
        );
    }
    for (n, a) in agents {
        all.extend(
            a.tokens
                .iter()
                .map(|s| (format!("agents.{n}.token"), true, s)),
        );
    }
    all.extend(
        admin_secrets
            .iter()
            .map(|s| ("server.admin_secret".to_owned(), false, s)),
    );
    for (i, (at, bearer, token)) in all.iter().enumerate() {
        if !bearer {
            continue;
        }
        let clash = all
            .iter()
            .enumerate()
            .find(|(j, (_, _, other))| *j != i && other.same_as(token));
        match clash {
            Some((_, (other, ..))) if other == at => c.invalid(at, "lists the same token twice"),
            Some((_, (other, ..))) => c.invalid(
                at,
                format!("same value as {other}; a bearer token must be its own"),
            ),
            None => {}
        }
    }
}

/// `[a2a]`: enabled only when present and not `enabled = false`.
fn a2a(
    c: &mut Checker<'_>,
    raw: Option<&schema::A2a>,
    routes: &std::collections::BTreeMap<String, super::Route>,
) -> Option<super::A2a> {
    let raw = raw?;
    if raw.enabled == Some(false) {
        return None;
    }
    if !routes.values().any(|r| r.a2a.is_some()) {
        c.warnings.push(
            "a2a: no route has a2a = { ... }, so the agent card lists no skill and every SendMessage is refused"
                .into(),
        );
    }
    Some(super::A2a {
        name: raw
            .name
            .clone()
            .unwrap_or_else(|| super::DEFAULT_A2A_NAME.to_owned()),
        description: raw
            .description
            .clone()
            .unwrap_or_else(|| "Agents behind an agent-inbox".to_owned()),
        max_wait: Duration::from_secs(c.positive(
            "a2a.max_wait_secs",
            raw.max_wait_secs,
            super::DEFAULT_A2A_MAX_WAIT.as_secs(),
        )),
        allow_private_push_urls: raw.allow_private_push_urls.unwrap_or(false),
    })
}

/// A duration in whole seconds, if given.
pub(super) fn secs(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_secs)
}
