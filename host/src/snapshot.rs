//! The active configuration: config and router (plugins later), built together and swapped whole.
//!
//! A request loads one `Arc<Snapshot>` when it starts and uses it to the end, so a reload never
//! changes the rules under a request in flight.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::router::Router;

/// One consistent view of routes.toml and everything derived from it.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// Routing table derived from it.
    pub router: Router,
    /// `X-Config-Hash`, ready to attach to every response.
    pub hash_header: http::HeaderValue,
}

impl Snapshot {
    /// Derives everything a request needs from a validated config.
    pub fn new(config: Config) -> Self {
        let router = Router::new(&config);
        // The hash is hex, so it is always a valid header value.
        let hash_header = http::HeaderValue::from_str(&config.hash)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        Self {
            config,
            router,
            hash_header,
        }
    }
}

/// The snapshot in force, swappable without locks on the read side.
pub type Active = Arc<ArcSwap<Snapshot>>;

/// Wraps a first snapshot.
pub fn active(snapshot: Snapshot) -> Active {
    Arc::new(ArcSwap::from_pointee(snapshot))
}
