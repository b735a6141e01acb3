//! The WebAssembly plugin engine: it owns the process's one wasmtime engine and its epoch ticker,
//! compiles plugin components (`wit/plugin.wit`) once and caches them on disk, and runs each hook
//! call sandboxed (memory cap, deadline, no filesystem, network, environment or arguments).
//!
//! Hooks take the model's records ([`crate::model::Message`], …) and answer with the plain verdicts
//! here ([`MessageVerdict`], …) or a [`PluginError`]; the generated bindings stay private to this
//! module, and the one conversion between the two is at its end. What a verdict may do (which
//! routes, reply types and peers) is the `hooks` module's to enforce.

mod cache;
mod sandbox;
mod v0_1;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Trap, UpdateDeadline};

use sandbox::{DeadlineExceeded, MemoryCapExceeded, State};

use crate::model::{Draft, Message, ReplyContext};

/// Generated bindings for the `plugin` world; private so that wasmtime types never leak out.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::agent_inbox::plugin::types as wit;

/// How long the ticker waits between epoch increments unless [`EngineConfig`] says otherwise.
///
/// Every tick that lands while a plugin runs makes it yield to tokio once and re-checks its
/// deadline, so 1 ms bounds both how long a plugin can hold a runtime worker and how late a
/// deadline fires. The ticker runs only while a call does.
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(1);

/// Idle warm instances one plugin keeps (with `warm_calls` > 0): calls running at once each
/// get one, and go back to the pool when they succeed.
pub const WARM_POOL: usize = 4;

/// Default for [`EngineConfig::max_instances`] (and routes.toml's `[plugins] max_instances`).
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// Sizes of the shared engine: its instance pool and epoch ticker.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Component instances alive at once across all plugins: calls in flight plus idle warm
    /// instances. A call past this fails with [`PluginError::Overloaded`].
    pub max_instances: u32,
    /// The most linear memory one instance may use, in bytes; no plugin's
    /// [`Limits::memory_bytes`] may exceed it.
    pub max_memory_bytes: usize,
    /// Core module instances in one component (a Python or JS component has dozens).
    pub max_core_instances_per_component: u32,
    /// Linear memories in one component.
    pub max_memories_per_component: u32,
    /// Tables in one component.
    pub max_tables_per_component: u32,
    /// Elements in one table (an interpreter's function table can be large).
    pub max_table_elements: usize,
    /// How often the ticker thread advances the epoch; see [`DEFAULT_EPOCH_TICK`].
    pub epoch_tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: DEFAULT_MAX_INSTANCES,
            max_memory_bytes: 256 << 20,
            max_core_instances_per_component: 100,
            max_memories_per_component: 4,
            max_tables_per_component: 32,
            max_table_elements: 100_000,
            epoch_tick: DEFAULT_EPOCH_TICK,
        }
    }
}

/// Per-plugin limits, enforced on every call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory the instance may use in all, in bytes (default 16 MiB).
    pub memory_bytes: usize,
    /// Wall-clock time a call may take (default 50 ms). Instantiating a fresh instance gets the
    /// same budget again, separately, so slow start-up code cannot eat into the call's.
    pub deadline: Duration,
    /// Core module instances per store (default 100: components made from JS or Python have
    /// dozens). The engine's per-component ceilings in [`EngineConfig`] apply as well.
    pub max_core_instances: usize,
    /// Tables per store (default 32).
    pub max_tables: usize,
    /// Linear memories per store (default 4).
    pub max_memories: usize,
    /// Bytes of stdout and of stderr kept per call; the rest is dropped (default 16 KiB).
    pub max_output_bytes: usize,
    /// Host log lines kept per call; the rest are dropped (default 100).
    pub max_log_lines: u32,
    /// Whether each call gets a fresh instance or reuses a warm one.
    pub reuse: Reuse,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 << 20,
            deadline: Duration::from_millis(50),
            max_core_instances: 100,
            max_tables: 32,
            max_memories: 4,
            max_output_bytes: 16 << 10,
            max_log_lines: 100,
            reuse: Reuse::Fresh,
        }
    }
}

/// Instance reuse policy of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// A fresh instance per call: no state survives a call (the default, and what the WIT promises).
    #[default]
    Fresh,
    /// One instance serves up to `max_calls` calls in turn, for plugins whose instantiation is slow
    /// (JS, Python). An instance that fails is dropped, never reused.
    Warm {
        /// Calls one instance serves before it is replaced.
        max_calls: u32,
    },
}

/// A new type and payload for a message or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The type to use instead.
    pub msg_type: String,
    /// The payload to use instead, as JSON text (checked to parse).
    pub payload: String,
}

/// A refusal that reaches the sender as `plugin_rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status, always 400 to 499 (the engine turns anything else into 422).
    pub status: u16,
    /// Why, in the plugin's words.
    pub reason: String,
}

/// What `check-message` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageVerdict {
    /// Take the message as it is, on its route.
    Accept,
    /// Take it with a new type and payload, on its route.
    Rewrite(Rewrite),
    /// Take it on another route, perhaps rewritten.
    RouteTo {
        /// The route to run instead (not empty).
        route: String,
        /// A new type and payload, if any.
        rewrite: Option<Rewrite>,
    },
    /// Refuse it.
    Reject(Rejection),
    /// Take it on its route, but hold its turn for a person to approve.
    Hold {
        /// Why, for the person who decides.
        reason: String,
    },
}

/// What `check-reply` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyVerdict {
    /// Relay it as it is to every peer in the route's `reply_to`.
    Accept,
    /// Relay it, perhaps rewritten, to some peers.
    Relay {
        /// A new type and payload, if any (the router checks the type against the reply types).
        rewrite: Option<Rewrite>,
        /// Which peers get it, each one of the `reply_to` passed in; `None` means all of them.
        to: Option<Vec<String>>,
    },
    /// Refuse it.
    Reject(Rejection),
}

/// Why a plugin could not be loaded or a hook call failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read or compiled, is not a component, or does not fit the `plugin`
    /// world (missing exports, imports the host does not offer).
    #[error("plugin `{plugin}`: cannot load {path}: {reason}")]
    Load {
        /// The plugin's name.
        plugin: String,
        /// The file it was loaded from.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Every instance slot of the engine is in use.
    #[error("plugin `{plugin}`: no free instance slot (too many plugin calls at once)")]
    Overloaded {
        /// The plugin's name.
        plugin: String,
    },
    /// An instance could not be created for a reason other than the ones below.
    #[error("plugin `{plugin}`: cannot instantiate: {reason}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        reason: String,
    },
    /// The plugin trapped: a Rust panic, `unreachable`, an out-of-bounds access, a host-side error.
    #[error("plugin `{plugin}` trapped: {message}{}", stderr_suffix(.stderr))]
    Trap {
        /// The trap, e.g. "wasm `unreachable` instruction executed".
        message: String,
        /// The end of what the plugin wrote to stderr during the call (a Rust panic message is
        /// there), empty if nothing.
        stderr: String,
        /// The plugin's name.
        plugin: String,
    },
    /// The call ran past its deadline and was stopped.
    #[error("plugin `{plugin}` exceeded its deadline of {} ms", .deadline.as_millis())]
    Deadline {
        /// The plugin's name.
        plugin: String,
        /// The deadline it had.
        deadline: Duration,
    },
    /// The plugin tried to grow its memory past its cap and was stopped.
    #[error("plugin `{plugin}` hit its memory cap of {limit_bytes} bytes (wanted {wanted_bytes})")]
    Memory {
        /// The plugin's name.
        plugin: String,
        /// The cap.
        limit_bytes: usize,
        /// The total it asked for.
        wanted_bytes: usize,
    },
    /// The hook returned something the host cannot use, e.g. a rewrite whose payload is not JSON.
    #[error("plugin `{plugin}` returned an invalid result from {hook}: {reason}")]
    InvalidResult {
        /// The plugin's name.
        plugin: String,
        /// The hook, e.g. "check-message".
        hook: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl PluginError {
    /// A short stable name of the variant, for logs and metrics ("load", "trap", "deadline", …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Load { .. } => "load",
            Self::Overloaded { .. } => "overloaded",
            Self::Instantiate { .. } => "instantiate",
            Self::Trap { .. } => "trap",
            Self::Deadline { .. } => "deadline",
            Self::Memory { .. } => "memory",
            Self::InvalidResult { .. } => "invalid_result",
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {stderr})")
    }
}

/// The process's plugin engine: one wasmtime engine with its instance pool, the WASI and host
/// imports, and the epoch ticker thread. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    wasmtime: wasmtime::Engine,
    linker: Linker<State>,
    config: EngineConfig,
    /// Hex digest of the engine's compile settings, part of every cache file name.
    compat_hash: String,
    ticker: Ticker,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .field("compat_hash", &self.inner.compat_hash)
            .finish_non_exhaustive()
    }
}

/// Bytes of each freed memory and table slot kept mapped and zeroed by hand (see [`Engine::new`]).
const KEEP_RESIDENT: usize = 1 << 20;

impl Engine {
    /// Creates the engine and starts its epoch ticker thread, which stops once the engine and
    /// every plugin loaded from it are dropped.
    pub fn new(config: EngineConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(config.max_instances > 0, "max_instances must be at least 1");
        anyhow::ensure!(!config.epoch_tick.is_zero(), "epoch_tick must not be zero");
        let instances = config.max_instances;
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(config.max_core_instances_per_component))
            .total_memories(instances.saturating_mul(config.max_memories_per_component))
            .total_tables(instances.saturating_mul(config.max_tables_per_component))
            // Async calls run on fiber stacks; a warm instance keeps its stack while idle.
            .total_stacks(instances)
            .max_core_instances_per_component(config.max_core_instances_per_component)
            .max_memories_per_component(config.max_memories_per_component)
            .max_tables_per_component(config.max_tables_per_component)
            // Core modules made by toolchains use one table, rarely two; each allowed table makes
            // every instance's context bigger.
            .max_tables_per_module(2)
            .max_memory_size(config.max_memory_bytes)
            .table_elements(config.max_table_elements)
            // A freed slot stays mapped and is zeroed with memset instead of madvise, which would
            // fault every page back in and interrupt the other cores (BENCHMARKS.md measures it);
            // pagemap_scan (Linux 6.7+) finds the touched pages, else this much of a slot is zeroed.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .strategy(wasmtime::Strategy::Cranelift)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            // Fixed rather than read from WASMTIME_BACKTRACE_DETAILS, so the compile settings (and
            // so the cache key) do not depend on the environment.
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let wasmtime = wasmtime::Engine::new(&wasm)?;

        let mut linker = Linker::<State>::new(&wasmtime);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state)?;
        // Components built against 0.1.0 import its `host`; one linker serves both worlds.
        v0_1::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state)?;

        let compat_hash = cache::engine_hash(&wasmtime);
        let ticker = spawn_epoch_ticker(wasmtime.weak(), config.epoch_tick)?;
        Ok(Self {
            inner: Arc::new(EngineInner {
                wasmtime,
                linker,
                config,
                compat_hash,
                ticker,
            }),
        })
    }

    /// The configuration the engine was created with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Loads the component at `wasm_path` as plugin `name`: compiles it, or reads the compiled
    /// artifact from `cache_dir` when an earlier load (of the same bytes, by a compatible engine)
    /// left one there, then checks it against the `plugin` world and pre-instantiates it.
    ///
    /// This blocks for as long as compilation takes (up to seconds for a big component): call it
    /// from `spawn_blocking`, or use [`Engine::load_async`]. A cache directory that cannot be
    /// written only costs the next load a compilation.
    pub fn load(
        &self,
        name: &str,
        wasm_path: &Path,
        cache_dir: &Path,
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(wasm_path).map_err(|e| PluginError::Load {
            plugin: name.to_owned(),
            path: wasm_path.to_owned(),
            reason: format!("read failed: {e}"),
        })?;
        self.load_bytes(name, wasm_path, &bytes, cache_dir, limits)
    }

    /// Like [`Engine::load`], for bytes already read from `wasm_path` (named in errors only), so a
    /// caller that hashed the file loads exactly what it hashed.
    pub fn load_bytes(
        &self,
        name: &str,
        wasm_path: &Path,
        bytes: &[u8],
        cache_dir: &Path,
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        let started = Instant::now();
        let load_error = |reason: String| PluginError::Load {
            plugin: name.to_owned(),
            path: wasm_path.to_owned(),
            reason,
        };
        self.check_limits(&limits).map_err(load_error)?;
        let bytes = bytes.to_vec();
        cache::check_is_component(&bytes).map_err(load_error)?;
        let sha256 = cache::sha256_hex(&bytes);
        let (component, from_cache) = cache::compile_or_read(
            &self.inner.wasmtime,
            &bytes,
            &sha256,
            &self.inner.compat_hash,
            cache_dir,
            name,
        )
        .map_err(|e| load_error(format!("{e:#}")))?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_error(format!("{e:#}")))?;
        // The current world first; else a component built against 0.1.0.
        let pre = match bindings::PluginPre::new(pre.clone()) {
            Ok(p) => Pre::Current(p),
            Err(current) => match v0_1::PluginPre::new(pre) {
                Ok(p) => Pre::V0_1(p),
                Err(_) => {
                    return Err(load_error(format!(
                        "does not export the agent-inbox:plugin hooks interface (0.2.0, or 0.1.0): {current:#}"
                    )));
                }
            },
        };
        let load_time = started.elapsed();
        tracing::info!(
            plugin = name,
            sha256 = %sha256,
            from_cache,
            ms = load_time.as_secs_f64() * 1e3,
            "plugin loaded"
        );
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                name: Arc::from(name),
                sha256,
                from_cache,
                load_time,
                limits,
                pre,
                warm: Mutex::new(Vec::new()),
                ticker: self.inner.ticker.clone(),
            }),
        })
    }

    /// [`Engine::load`] on tokio's blocking pool.
    pub async fn load_async(
        &self,
        name: &str,
        wasm_path: &Path,
        cache_dir: &Path,
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        let (engine, owned_name) = (self.clone(), name.to_owned());
        let (path, cache) = (wasm_path.to_owned(), cache_dir.to_owned());
        tokio::task::spawn_blocking(move || engine.load(&owned_name, &path, &cache, limits))
            .await
            .unwrap_or_else(|e| {
                Err(PluginError::Load {
                    plugin: name.to_owned(),
                    path: wasm_path.to_owned(),
                    reason: format!("loader task failed: {e}"),
                })
            })
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), String> {
        let max = self.inner.config.max_memory_bytes;
        if limits.memory_bytes > max {
            return Err(format!(
                "memory limit {} exceeds the engine's maximum of {max} bytes",
                limits.memory_bytes
            ));
        }
        if limits.deadline.is_zero() {
            return Err("deadline must not be zero".into());
        }
        if limits.reuse == (Reuse::Warm { max_calls: 0 }) {
            return Err("warm reuse needs max_calls of at least 1".into());
        }
        Ok(())
    }
}

/// The epoch ticker's side that calls see: ticks run only while a call (or instantiation) does.
/// An idle ticker woke a thousand times a second for nothing, on every inbox, plugins or not
/// (about 1% of a mailbox ack's CPU on two cores; BENCHMARKS.md).
#[derive(Clone)]
struct Ticker {
    running: Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

/// Marks a call running for as long as it lives.
struct Ticking(Arc<AtomicUsize>);

impl Ticker {
    fn start(&self) -> Ticking {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            // Parked, or about to park: an unpark before the park makes the park return at once.
            self.thread.unpark();
        }
        Ticking(self.running.clone())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Advances the engine's epoch every `tick` while a call runs, until the engine is gone.
fn spawn_epoch_ticker(engine: wasmtime::EngineWeak, tick: Duration) -> anyhow::Result<Ticker> {
    let running = Arc::new(AtomicUsize::new(0));
    let calls = running.clone();
    let thread = std::thread::Builder::new()
        .name("wasm-epoch-ticker".into())
        .spawn(move || {
            // No strong reference is held while asleep, so the engine can go away.
            while engine.upgrade().is_some() {
                if calls.load(Ordering::Acquire) == 0 {
                    // Woken by the next call; at the latest in a second, to see the engine gone.
                    std::thread::park_timeout(Duration::from_secs(1));
                    continue;
                }
                std::thread::sleep(tick);
                if let Some(engine) = engine.upgrade() {
                    engine.increment_epoch();
                }
            }
        })?;
    Ok(Ticker {
        running,
        thread: thread.thread().clone(),
    })
}

/// A loaded plugin, ready to call. Cheap to clone and share between tasks.
///
/// Its hook methods must run inside a tokio runtime with timers enabled: the deadline backstop is
/// a tokio timer and a running plugin yields to tokio at every epoch tick.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    name: Arc<str>,
    sha256: String,
    from_cache: bool,
    load_time: Duration,
    limits: Limits,
    pre: Pre,
    /// Idle warm instances, if [`Reuse::Warm`], at most [`WARM_POOL`]. They belong to this
    /// `Plugin`, so a reloaded (new) version of the plugin never inherits one.
    warm: Mutex<Vec<Instance>>,
    ticker: Ticker,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("sha256", &self.inner.sha256)
            .field("from_cache", &self.inner.from_cache)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// A component ready to instantiate, by the world it was built against.
enum Pre {
    /// `agent-inbox:plugin@0.2.0`.
    Current(bindings::PluginPre<State>),
    /// `agent-inbox:plugin@0.1.0`, without `hold`.
    V0_1(v0_1::PluginPre<State>),
}

impl Pre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Pre::Current(p) => p.engine(),
            Pre::V0_1(p) => p.engine(),
        }
    }

    async fn instantiate(&self, store: &mut wasmtime::Store<State>) -> wasmtime::Result<Hooks> {
        Ok(match self {
            Pre::Current(p) => Hooks::Current(p.instantiate_async(store).await?),
            Pre::V0_1(p) => Hooks::V0_1(p.instantiate_async(store).await?),
        })
    }
}

/// An instance's exports, by world.
enum Hooks {
    Current(bindings::Plugin),
    V0_1(v0_1::Plugin),
}

/// A live instance with its store.
struct Instance {
    store: wasmtime::Store<State>,
    hooks: Hooks,
    calls: u32,
}

/// One hook of the `plugin` world: its arguments in bindgen types, and how to call it.
trait Hook: Send + Sync {
    /// What the hook returns, in bindgen types.
    type Out: Send;
    /// Its name in the WIT, for logs and errors.
    const NAME: &'static str;
    /// Calls it on an instance (of either world: a 0.1.0 one gets its arguments and answers
    /// converted).
    fn call<'a>(
        &'a self,
        hooks: &'a Hooks,
        store: &'a mut wasmtime::Store<State>,
    ) -> impl Future<Output = wasmtime::Result<Self::Out>> + Send + 'a;
}

struct CheckMessage {
    message: wit::Message,
    config: String,
}

impl Hook for CheckMessage {
    type Out = wit::MessageVerdict;
    const NAME: &'static str = "check-message";
    async fn call(
        &self,
        hooks: &Hooks,
        store: &mut wasmtime::Store<State>,
    ) -> wasmtime::Result<Self::Out> {
        match hooks {
            Hooks::Current(h) => {
                let g = h.agent_inbox_plugin_hooks();
                g.call_check_message(store, &self.message, &self.config)
                    .await
            }
            Hooks::V0_1(h) => {
                let g = h.agent_inbox_plugin_hooks();
                let m = v0_1::message(&self.message);
                let v = g.call_check_message(store, &m, &self.config).await?;
                Ok(v0_1::message_verdict(v))
            }
        }
    }
}

struct RenderTurn {
    message: wit::Message,
    context: wit::ReplyContext,
    config: String,
}

impl Hook for RenderTurn {
    type Out = Option<String>;
    const NAME: &'static str = "render-turn";
    async fn call(
        &self,
        hooks: &Hooks,
        store: &mut wasmtime::Store<State>,
    ) -> wasmtime::Result<Self::Out> {
        match hooks {
            Hooks::Current(h) => {
                let g = h.agent_inbox_plugin_hooks();
                g.call_render_turn(store, &self.message, &self.context, &self.config)
                    .await
            }
            Hooks::V0_1(h) => {
                let g = h.agent_inbox_plugin_hooks();
                let (m, c) = (v0_1::message(&self.message), v0_1::context(&self.context));
                g.call_render_turn(store, &m, &c, &self.config).await
            }
        }
    }
}

struct CheckReply {
    message: wit::Message,
    reply: wit::Reply,
    reply_to: Vec<String>,
    config: String,
}

impl Hook for CheckReply {
    type Out = wit::ReplyVerdict;
    const NAME: &'static str = "check-reply";
    async fn call(
        &self,
        hooks: &Hooks,
        store: &mut wasmtime::Store<State>,
    ) -> wasmtime::Result<Self::Out> {
        match hooks {
            Hooks::Current(h) => {
                let g = h.agent_inbox_plugin_hooks();
                g.call_check_reply(
                    store,
                    &self.message,
                    &self.reply,
                    &self.reply_to,
                    &self.config,
                )
                .await
            }
            Hooks::V0_1(h) => {
                let g = h.agent_inbox_plugin_hooks();
                let (m, r) = (v0_1::message(&self.message), v0_1::reply(&self.reply));
                let v = g
                    .call_check_reply(store, &m, &r, &self.reply_to, &self.config)
                    .await?;
                Ok(v0_1::reply_verdict(v))
            }
        }
    }
}

impl Plugin {
    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Hex SHA-256 of the wasm file it was loaded from, which identifies the version.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Whether the compiled code came from the disk cache rather than a compilation.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// How long [`Engine::load`] took for it.
    pub fn load_time(&self) -> Duration {
        self.inner.load_time
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Runs `check-message` on an inbound message; `config_json` is the route's `plugin_config`.
    pub async fn check_message(
        &self,
        m: &Message,
        config_json: &str,
    ) -> Result<MessageVerdict, PluginError> {
        let hook = CheckMessage {
            message: wit_message(m),
            config: config_json.to_owned(),
        };
        let verdict = self.call(hook).await?;
        self.message_verdict(verdict)
    }

    /// Runs `render-turn`: the text the agent receives, or `None` for the built-in text.
    pub async fn render_turn(
        &self,
        m: &Message,
        ctx: &ReplyContext,
        config_json: &str,
    ) -> Result<Option<String>, PluginError> {
        let hook = RenderTurn {
            message: wit_message(m),
            context: wit_context(ctx),
            config: config_json.to_owned(),
        };
        self.call(hook).await
    }

    /// Runs `check-reply` on a reply to `m`; `reply_to` are the peers the route allows.
    pub async fn check_reply(
        &self,
        m: &Message,
        reply: &Draft,
        reply_to: &[String],
        config_json: &str,
    ) -> Result<ReplyVerdict, PluginError> {
        let hook = CheckReply {
            message: wit_message(m),
            reply: wit::Reply {
                msg_type: reply.msg_type.clone(),
                payload: reply.payload.clone(),
            },
            reply_to: reply_to.to_vec(),
            config: config_json.to_owned(),
        };
        let verdict = self.call(hook).await?;
        self.reply_verdict(verdict)
    }

    /// Runs one call on a fresh or warm instance, with the plugin's limits, and turns whatever
    /// went wrong into a [`PluginError`].
    async fn call<H: Hook>(&self, hook: H) -> Result<H::Out, PluginError> {
        let _ticking = self.inner.ticker.start();
        let mut instance = match self.take_warm() {
            Some(instance) => instance,
            None => self.instantiate().await?,
        };
        let result = self.run(&mut instance, &hook).await;
        let stderr = instance.store.data_mut().flush_output(H::NAME);
        match result {
            Ok(returned) => {
                instance.calls += 1;
                self.put_back(instance);
                Ok(returned)
            }
            // The instance is dropped here: after a trap or an interrupted call it is unusable.
            Err(error) => Err(self.classify(error, instance.store.data(), stderr)),
        }
    }

    async fn instantiate(&self) -> Result<Instance, PluginError> {
        let limits = &self.inner.limits;
        let mut store = wasmtime::Store::new(
            self.inner.pre.engine(),
            State::new(self.inner.name.clone(), limits),
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline_at {
                return Err(wasmtime::Error::new(DeadlineExceeded));
            }
            // Let other tasks on this runtime worker run, then check again next tick.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        // Start-up code (a JS or Python runtime's init) runs under the same deadline as a call.
        store.data_mut().deadline_at = Instant::now() + limits.deadline;
        store.set_epoch_deadline(1);
        let instantiated = tokio::time::timeout(
            limits.deadline + BACKSTOP_GRACE,
            self.inner.pre.instantiate(&mut store),
        )
        .await;
        let stderr = store.data_mut().flush_output("instantiate");
        match instantiated {
            Ok(Ok(hooks)) => Ok(Instance {
                store,
                hooks,
                calls: 0,
            }),
            Ok(Err(error)) => Err(match self.classify(error, store.data(), stderr) {
                PluginError::Trap {
                    message, plugin, ..
                } => PluginError::Instantiate {
                    plugin,
                    reason: message,
                },
                other => other,
            }),
            Err(_elapsed) => Err(self.deadline_error()),
        }
    }

    async fn run<H: Hook>(&self, instance: &mut Instance, hook: &H) -> Result<H::Out, CallFailure> {
        let deadline = self.inner.limits.deadline;
        let Instance { store, hooks, .. } = instance;
        store.data_mut().begin_call(deadline);
        store.set_epoch_deadline(1);
        // The epoch callback stops wasm that computes; this backstop stops a plugin parked in a
        // host call (e.g. a WASI sleep), which never reaches an epoch check.
        match tokio::time::timeout(deadline + BACKSTOP_GRACE, hook.call(hooks, store)).await {
            Ok(Ok(returned)) => Ok(returned),
            Ok(Err(error)) => Err(CallFailure::Wasm(error)),
            Err(_elapsed) => Err(CallFailure::Backstop),
        }
    }

    fn take_warm(&self) -> Option<Instance> {
        match self.inner.limits.reuse {
            Reuse::Fresh => None,
            Reuse::Warm { .. } => lock(&self.inner.warm).pop(),
        }
    }

    fn put_back(&self, instance: Instance) {
        if let Reuse::Warm { max_calls } = self.inner.limits.reuse
            && instance.calls < max_calls
        {
            let mut idle = lock(&self.inner.warm);
            // One warm instance per call that runs at once, up to the pool's bound; past it the
            // instance is dropped (it holds a slot of the engine's instance pool while idle).
            if idle.len() < WARM_POOL {
                idle.push(instance);
            }
        }
    }

    fn deadline_error(&self) -> PluginError {
        PluginError::Deadline {
            plugin: self.inner.name.to_string(),
            deadline: self.inner.limits.deadline,
        }
    }

    fn classify(
        &self,
        failure: impl Into<CallFailure>,
        state: &State,
        stderr: String,
    ) -> PluginError {
        let plugin = self.inner.name.to_string();
        let error = match failure.into() {
            CallFailure::Backstop => return self.deadline_error(),
            CallFailure::Wasm(error) => error,
        };
        if error.downcast_ref::<DeadlineExceeded>().is_some()
            || matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt))
        {
            return self.deadline_error();
        }
        if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
            return PluginError::Memory {
                plugin,
                limit_bytes: cap.limit,
                wanted_bytes: cap.wanted,
            };
        }
        if let Some(wanted) = state.limiter.denied_bytes() {
            // The limiter said no and the plugin turned that into some other failure.
            return PluginError::Memory {
                plugin,
                limit_bytes: self.inner.limits.memory_bytes,
                wanted_bytes: wanted,
            };
        }
        if error
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return PluginError::Overloaded { plugin };
        }
        let message = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        PluginError::Trap {
            message,
            stderr,
            plugin,
        }
    }

    fn invalid(&self, hook: &'static str, reason: String) -> PluginError {
        PluginError::InvalidResult {
            plugin: self.inner.name.to_string(),
            hook,
            reason,
        }
    }

    fn rewrite(&self, hook: &'static str, r: wit::Rewrite) -> Result<Rewrite, PluginError> {
        if r.msg_type.trim().is_empty() {
            return Err(self.invalid(hook, "rewrite has an empty type".into()));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&r.payload) {
            return Err(self.invalid(hook, format!("rewrite payload is not JSON: {e}")));
        }
        Ok(Rewrite {
            msg_type: r.msg_type,
            payload: r.payload,
        })
    }

    fn message_verdict(&self, v: wit::MessageVerdict) -> Result<MessageVerdict, PluginError> {
        const HOOK: &str = "check-message";
        Ok(match v {
            wit::MessageVerdict::Accept => MessageVerdict::Accept,
            wit::MessageVerdict::Rewrite(r) => MessageVerdict::Rewrite(self.rewrite(HOOK, r)?),
            wit::MessageVerdict::RouteTo(r) => {
                if r.route.trim().is_empty() {
                    return Err(self.invalid(HOOK, "route-to names no route".into()));
                }
                MessageVerdict::RouteTo {
                    route: r.route,
                    rewrite: r.rewrite.map(|w| self.rewrite(HOOK, w)).transpose()?,
                }
            }
            wit::MessageVerdict::Reject(r) => MessageVerdict::Reject(r.into()),
            wit::MessageVerdict::Hold(reason) => MessageVerdict::Hold { reason },
        })
    }

    fn reply_verdict(&self, v: wit::ReplyVerdict) -> Result<ReplyVerdict, PluginError> {
        const HOOK: &str = "check-reply";
        Ok(match v {
            wit::ReplyVerdict::Accept => ReplyVerdict::Accept,
            wit::ReplyVerdict::Relay(r) => ReplyVerdict::Relay {
                rewrite: r.rewrite.map(|w| self.rewrite(HOOK, w)).transpose()?,
                to: r.to,
            },
            wit::ReplyVerdict::Reject(r) => ReplyVerdict::Reject(r.into()),
        })
    }
}

/// Extra time the tokio backstop timer gives a call past its deadline, so that a computing plugin
/// is normally stopped by the epoch callback (which leaves a clean trap) rather than the timer.
const BACKSTOP_GRACE: Duration = Duration::from_millis(20);

/// How a call failed before its result could be checked.
enum CallFailure {
    /// Wasmtime reported an error or trap.
    Wasm(wasmtime::Error),
    /// The backstop timer fired.
    Backstop,
}

impl From<wasmtime::Error> for CallFailure {
    fn from(error: wasmtime::Error) -> Self {
        Self::Wasm(error)
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (it only holds an
/// `Option<Instance>` that is swapped whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn wit_message(m: &Message) -> wit::Message {
    wit::Message {
        id: m.id.clone(),
        route: m.route.clone(),
        sender: m.sender.clone(),
        msg_type: m.msg_type.clone(),
        payload: m.payload.clone(),
        thread_id: m.thread_id.clone(),
        in_reply_to: m.in_reply_to.clone(),
        hops: m.hops,
    }
}

fn wit_context(c: &ReplyContext) -> wit::ReplyContext {
    wit::ReplyContext {
        url: c.url.clone(),
        auth_header: c.auth_header.clone(),
        reply_types: c.reply_types.clone(),
        deadline: c.deadline.clone(),
    }
}

impl From<wit::Rejection> for Rejection {
    fn from(r: wit::Rejection) -> Self {
        Self {
            // The WIT contract: anything outside 400-499 counts as 422.
            status: if (400..=499).contains(&r.status) {
                r.status
            } else {
                422
            },
            reason: r.reason,
        }
    }
}
