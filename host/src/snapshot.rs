//! The active configuration: config, router and loaded plugins, built together and swapped whole.
//!
//! A request loads one `Arc<Snapshot>` when it starts and uses it to the end, so a reload never
//! changes the rules under a request in flight. Plugin files are read here, once per build: what
//! is hashed is exactly what is loaded.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::config::{Config, PluginSpec};
use crate::plugins::{self, Engine, Limits, Plugin, PluginError, Reuse};
use crate::router::Router;

/// A route's loaded plugin with the settings it was loaded with.
#[derive(Debug, Clone)]
pub struct RoutePlugin {
    /// The compiled, pre-instantiated component.
    pub plugin: Plugin,
    /// What routes.toml says about it (path, `plugin_config`, limits).
    pub spec: PluginSpec,
}

impl RoutePlugin {
    /// The plugin's name in logs and errors: its file name without `.wasm`.
    pub fn name(&self) -> &str {
        self.plugin.name()
    }
}

/// One problem building a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A plugin file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's certificate or key, or a peer's CA file, cannot be used.
    #[error("{at}: {}: {source}", path.display())]
    Tls {
        /// The key in routes.toml.
        at: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::tls::TlsError,
    },
    /// A route's plugin did not load.
    #[error("routes.{route}.plugin: {source}")]
    Plugin {
        route: String,
        /// Why.
        #[source]
        source: PluginError,
    },
}

/// Every problem found building a snapshot.
#[derive(Debug)]
pub struct BuildErrors(pub Vec<BuildError>);

impl fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BuildErrors {}

/// The plugin files a config names, read once, and the config hash they make with routes.toml.
#[derive(Debug)]
pub struct Files {
    bytes: HashMap<PathBuf, Vec<u8>>,
    /// The config hash: routes.toml's text and these exact bytes.
    pub hash: String,
    /// What hosts of a cluster compare: routes.toml without its per-host keys, and the plugins'
    /// bytes by file name.
    pub cluster_hash: String,
}

impl Files {
    /// Reads every file `config` names (plugins, TLS certificates and keys).
    pub fn read(config: &Config) -> Result<Self, BuildErrors> {
        let mut bytes = HashMap::new();
        let mut errors = Vec::new();
        for path in config.files() {
            match std::fs::read(path) {
                Ok(b) => {
                    bytes.insert(path.to_path_buf(), b);
                }
                Err(source) => errors.push(BuildError::Read {
                    path: path.to_path_buf(),
                    source,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(BuildErrors(errors));
        }
        let mut digests: Vec<(&Path, [u8; 32])> = bytes
            .iter()
            .map(|(p, b)| (p.as_path(), Sha256::digest(b).into()))
            .collect();
        digests.sort_by(|a, b| a.0.cmp(b.0));
        let hash = crate::config::hash_digests(&config.text_digest, &digests);
        let by_name: Vec<(&Path, [u8; 32])> = digests
            .iter()
            .map(|(p, d)| (p.file_name().map_or(*p, Path::new), *d))
            .collect();
        let cluster_hash = crate::config::hash_digests(&config.shared_digest, &by_name);
        Ok(Self {
            bytes,
            hash,
            cluster_hash,
        })
    }
}

/// One consistent view of routes.toml and everything derived from it.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// The config hash (routes.toml and its plugins' bytes).
    pub hash: String,
    /// The hash hosts of a cluster compare (see [`Files::cluster_hash`]).
    pub cluster_hash: String,
    /// Routing table derived from it.
    pub router: Router,
    /// `X-Config-Hash`, ready to attach to every response.
    pub hash_header: http::HeaderValue,
    /// Loaded plugins, by route name.
    pub plugins: HashMap<String, RoutePlugin>,
    /// Plugins of the snapshots this one replaced, by route, newest first (at most
    /// [`EARLIER_PLUGINS`]): a turn that started under one checks its replies with it.
    pub earlier: Vec<(String, RoutePlugin)>,
    /// The server's TLS, when it serves HTTPS itself: new connections use the snapshot's, so a
    /// renewed certificate is served from the reload that reads it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Clients for the peers that name a `ca_file`; the others use the relay's.
    pub peer_clients: HashMap<String, crate::tls::HttpsClient>,
}

impl Snapshot {
    /// Builds a snapshot from a config and its files, loading every route's plugin. Blocking:
    /// compiles components (or reads them from the on-disk cache); call it from a blocking thread.
    /// Reports every plugin that fails.
    pub fn build(config: Config, files: Files, engine: &Engine) -> Result<Self, BuildErrors> {
        let mut errors = Vec::new();
        let mut plugins = HashMap::new();
        let cache_dir = config.plugins.cache_dir.clone();
        for route in config.routes.values() {
            let Some(spec) = &route.plugin else { continue };
            let Some(bytes) = files.bytes.get(&spec.path) else {
                continue;
            };
            let name = spec
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| route.name.clone());
            match engine.load_bytes(&name, &spec.path, bytes, &cache_dir, limits(spec)) {
                Ok(plugin) => {
                    tracing::info!(
                        route = %route.name, plugin = %name, from_cache = plugin.from_cache(),
                        load_ms = plugin.load_time().as_millis() as u64, "plugin loaded"
                    );
                    plugins.insert(
                        route.name.clone(),
                        RoutePlugin {
                            plugin,
                            spec: spec.clone(),
                        },
                    );
                }
                Err(source) => errors.push(BuildError::Plugin {
                    route: route.name.clone(),
                    source,
                }),
            }
        }
        let (tls, peer_clients) = match tls_parts(&config, &files) {
            Ok(parts) => (parts.server, parts.peer_clients),
            Err(e) => {
                errors.extend(e.0);
                (None, HashMap::new())
            }
        };
        if !errors.is_empty() {
            return Err(BuildErrors(errors));
        }
        // The hash is hex, so it is always a valid header value.
        let hash_header = http::HeaderValue::from_str(&files.hash)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        Ok(Self {
            router: Router::new(&config),
            config,
            hash: files.hash,
            cluster_hash: files.cluster_hash,
            hash_header,
            plugins,
            earlier: Vec::new(),
            tls,
            peer_clients,
        })
    }

    /// Keeps `older`'s plugins (and those it kept) that this snapshot replaced, for the turns that
    /// started under them.
    pub fn inherit(&mut self, older: &Snapshot) {
        let mut earlier: Vec<(String, RoutePlugin)> = Vec::new();
        let candidates = older
            .plugins
            .iter()
            .map(|(r, p)| (r.clone(), p.clone()))
            .chain(older.earlier.iter().cloned());
        for (route, p) in candidates {
            let sha = p.plugin.sha256();
            let in_force = self
                .plugins
                .get(&route)
                .is_some_and(|q| q.plugin.sha256() == sha);
            let kept = earlier
                .iter()
                .any(|(r, q)| *r == route && q.plugin.sha256() == sha);
            if !in_force && !kept && earlier.len() < EARLIER_PLUGINS {
                earlier.push((route, p));
            }
        }
        self.earlier = earlier;
    }

    /// What a turn of `route` claimed now promises its agent: the route's reply rules in force
    /// (`None` if it is no longer an agent route).
    pub fn turn_terms(&self, route: &str) -> Option<crate::model::TurnTerms> {
        let r = self.config.routes.get(route)?;
        Some(crate::model::TurnTerms {
            reply_types: r.reply_types.clone(),
            reply_to: r.reply_to.clone(),
            plugin: self
                .plugins
                .get(route)
                .map(|p| p.plugin.sha256().to_owned()),
            limits: r.reply_limits(),
            approve_outbound: r
                .approve
                .outbound
                .then_some(r.approval_timeout.as_millis() as i64),
            agent: r.agent_id.clone(),
        })
    }

    /// The plugin route `route` ran with sha256 `sha`, if this process still has it: the one in
    /// force, or one a reload replaced.
    pub fn plugin_for(&self, route: &str, sha: &str) -> Option<&RoutePlugin> {
        self.plugins
            .get(route)
            .filter(|p| p.plugin.sha256() == sha)
            .or_else(|| {
                self.earlier
                    .iter()
                    .find(|(r, p)| r == route && p.plugin.sha256() == sha)
                    .map(|(_, p)| p)
            })
    }
}

/// How many replaced plugins a snapshot keeps for the turns that started under them.
pub const EARLIER_PLUGINS: usize = 16;

/// The server's TLS config and the peers' own-CA clients, from the files the config names.
/// `agent-inbox check` calls it too, so a bad certificate is found before a start or a reload.
pub fn tls_parts(config: &Config, files: &Files) -> Result<TlsParts, BuildErrors> {
    let mut errors = Vec::new();
    let tls = config.server.tls.as_ref().and_then(|t| {
        let (cert, key) = (files.bytes.get(&t.cert)?, files.bytes.get(&t.key)?);
        crate::tls::server_config(cert, key)
            .map_err(|source| {
                errors.push(BuildError::Tls {
                    at: "server.tls_cert".into(),
                    path: t.cert.clone(),
                    source,
                })
            })
            .ok()
    });
    if let Some(ca) = config.server.tls.as_ref().and_then(|t| t.ca.as_ref())
        && let Some(Err(source)) = files.bytes.get(ca).map(|b| crate::tls::certificates(b))
    {
        errors.push(BuildError::Tls {
            at: "server.tls_ca".into(),
            path: ca.clone(),
            source,
        });
    }
    let mut peer_clients = HashMap::new();
    for peer in config.peers.values() {
        let Some(ca) = &peer.ca_file else { continue };
        let Some(pem) = files.bytes.get(ca) else {
            continue;
        };
        match crate::tls::client_trusting(pem) {
            Ok(client) => {
                peer_clients.insert(peer.name.clone(), client);
            }
            Err(source) => errors.push(BuildError::Tls {
                at: format!("peers.{}.ca_file", peer.name),
                path: ca.clone(),
                source,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(BuildErrors(errors));
    }
    Ok(TlsParts {
        server: tls,
        peer_clients,
    })
}

/// What [`tls_parts`] builds.
pub struct TlsParts {
    /// The server's TLS config, if it serves HTTPS.
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// Clients for the peers with a `ca_file`.
    pub peer_clients: HashMap<String, crate::tls::HttpsClient>,
}

/// The engine's limits for a plugin, from its routes.toml settings.
fn limits(spec: &PluginSpec) -> Limits {
    Limits {
        memory_bytes: spec.memory_bytes as usize,
        deadline: spec.deadline,
        reuse: match spec.warm_calls {
            0 => Reuse::Fresh,
            n => Reuse::Warm { max_calls: n },
        },
        ..Limits::default()
    }
}

/// The process's plugin engine, sized from the config it starts with.
pub fn engine(config: &Config) -> anyhow::Result<Engine> {
    // Every instance slot in the pool is sized for the largest plugin; at least 64 MiB, so a reload
    // can raise a plugin's cap that far without a restart.
    let max_memory = config.plugins.max_memory_bytes.max(64 << 20) as usize;
    Engine::new(plugins::EngineConfig {
        max_instances: config.plugins.max_instances,
        max_memory_bytes: max_memory,
        ..plugins::EngineConfig::default()
    })
}

/// The snapshot in force, swappable without locks on the read side.
pub type Active = Arc<ArcSwap<Snapshot>>;

/// Wraps a first snapshot.
pub fn active(snapshot: Snapshot) -> Active {
    Arc::new(ArcSwap::from_pointee(snapshot))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_configs_default_pool_is_the_engines() {
        assert_eq!(
            crate::config::DEFAULT_PLUGIN_MAX_INSTANCES,
            crate::plugins::DEFAULT_MAX_INSTANCES
        );
    }
}
