//! agent-inbox: a message router that lets AI agents talk to each other over HTTP.
//!
//! The module map, the paths of a message and a reply through it, and the invariants are in one
//! place: ARCHITECTURE.md at the repository root. The wiring that builds the parts, recovers,
//! serves and drains is [`wiring`]; the command line that runs it is [`cli`].

/// mimalloc for every binary that links the inbox. glibc's malloc spent about 12% of the ack
/// path's CPU (a buffer allocated on a tokio worker is often freed on another thread, and glibc
/// consolidates and locks arenas for that); BENCHMARKS.md has the before and after.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The pure parts live in the core crate (host/core), under the same names.
pub use agent_inbox_core::{a2a, config, console, limiter, model, oracles, signature, wire};

pub mod a2a_client;
pub mod agent_process;
pub mod approval;
pub mod cli;
pub mod events;
pub mod gateway;
pub mod hooks;
pub mod http;
pub mod inbox;
pub mod listener;
pub mod log;
pub mod mcp;
pub mod metrics;
pub mod pairing;
pub mod plugins;
pub mod prompt;
pub mod rate;
pub mod relay;
pub mod reload;
pub mod router;
pub mod server;
pub mod shutdown;
pub mod snapshot;
pub mod ssrf;
pub mod store;
mod subreaper;
pub mod tls;
pub mod token;
pub mod turns;
pub mod wiring;
