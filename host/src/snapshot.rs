//! The active configuration: config, router and loaded plugins, built together and swapped whole.
//!
//! A request loads one `Arc<Snapshot>` when it starts and uses it to the end, so a reload never
//! changes the rules under a request in flight.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::config::{Config, PluginSpec};
use crate::plugins::{self, Engine, Limits, Plugin, Reuse};
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

/// One consistent view of routes.toml and everything derived from it.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// Routing table derived from it.
    pub router: Router,
    /// `X-Config-Hash`, ready to attach to every response.
    pub hash_header: http::HeaderValue,
    /// Loaded plugins, by route name.
    pub plugins: HashMap<String, RoutePlugin>,
}

impl Snapshot {
    /// Derives everything but plugins from a validated config (enough for a config without plugins).
    pub fn new(config: Config) -> Self {
        let router = Router::new(&config);
        // The hash is hex, so it is always a valid header value.
        let hash_header = http::HeaderValue::from_str(&config.hash)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        Self {
            config,
            router,
            hash_header,
            plugins: HashMap::new(),
        }
    }

    /// Builds a snapshot and loads every route's plugin. Blocking: compiles components (or reads them
    /// from the on-disk cache); call it from a blocking thread. Reports every plugin that fails.
    pub fn build(config: Config, engine: &Engine) -> Result<Self, String> {
        let mut snapshot = Snapshot::new(config);
        let mut errors = Vec::new();
        let cache_dir = snapshot.config.plugins.cache_dir.clone();
        // Each plugin file is read once, and what is loaded is what is hashed: a file replaced
        // halfway through a reload cannot give a snapshot whose hash names other bytes.
        let mut files: HashMap<std::path::PathBuf, Vec<u8>> = HashMap::new();
        for path in snapshot.config.plugin_paths() {
            match std::fs::read(path) {
                Ok(bytes) => {
                    files.insert(path.to_path_buf(), bytes);
                }
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
        for route in snapshot.config.routes.values() {
            let Some(spec) = &route.plugin else { continue };
            let Some(bytes) = files.get(&spec.path) else {
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
                    snapshot.plugins.insert(
                        route.name.clone(),
                        RoutePlugin {
                            plugin,
                            spec: spec.clone(),
                        },
                    );
                }
                Err(e) => errors.push(format!("routes.{}.plugin: {e}", route.name)),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let mut digests: Vec<(&std::path::Path, [u8; 32])> = files
            .iter()
            .map(|(p, b)| (p.as_path(), Sha256::digest(b).into()))
            .collect();
        digests.sort_by(|a, b| a.0.cmp(b.0));
        snapshot.config.hash = crate::config::hash_digests(&snapshot.config.text_digest, &digests);
        snapshot.hash_header = http::HeaderValue::from_str(&snapshot.config.hash)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        Ok(snapshot)
    }
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
