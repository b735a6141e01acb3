//! The config hash: routes.toml's text and the exact bytes of every plugin it loads, so a plugin
//! swapped under the same name changes the hash too. `X-Config-Hash` and reload checks use it.

use std::path::Path;

use sha2::{Digest, Sha256};

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

/// The digest of routes.toml `text` without the keys each host of a cluster sets for itself
/// (`[server] listen`, `host_id` and `public_url`), in a canonical form (keys sorted), so hosts
/// that share the rest get the same digest whatever their own addresses and formatting.
pub(super) fn shared_digest(text: &str) -> [u8; 32] {
    let mut table: toml::Table = toml::from_str(text).unwrap_or_default();
    if let Some(toml::Value::Table(server)) = table.get_mut("server") {
        for key in ["listen", "host_id", "public_url"] {
            server.remove(key);
        }
    }
    Sha256::digest(toml::to_string(&table).unwrap_or_default().as_bytes()).into()
}
