//! agent-inbox's pure parts, in a crate that builds without wasmtime, tokio or hyper: the records
//! (`model`), the JSON on the wire (`wire`), routes.toml's schema and rules (`config`), Standard
//! Webhooks signatures, the A2A protocol (`a2a`), the console's session cookie and assets, the
//! auth-failure limiter, the query-string reader, the SSRF rules, and what each fuzz target checks
//! (`oracles`). The server (`agent-inbox`) re-exports each under the same name; ARCHITECTURE.md
//! has the map.

pub mod a2a;
pub mod config;
pub mod console;
pub mod limiter;
pub mod model;
pub mod oracles;
pub mod query;
pub mod signature;
pub mod ssrf;
pub mod wire;
