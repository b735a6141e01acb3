//! `[peers]`: each peer's URL and secret, and that every secret names one sender.

use std::collections::BTreeMap;

use super::{Checker, schema, valid_name};
use crate::config::{Peer, Secret};

pub(super) fn peers(
    c: &mut Checker<'_>,
    raw: &BTreeMap<String, schema::Peer>,
    admin_secret: Option<&Secret>,
) -> BTreeMap<String, Peer> {
    let mut peers = BTreeMap::new();
    for (name, p) in raw {
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
        for (b, _) in secrets.iter().skip(i + 1).filter(|(_, sb)| sb.same_as(sa)) {
            c.invalid(
                format!("peers.{b}.secret"),
                format!("same secret as peers.{a}; the sender is known by its secret"),
            );
        }
        if admin_secret.is_some_and(|s| s.same_as(sa)) {
            c.invalid(
                format!("peers.{a}.secret"),
                "same secret as the admin secret",
            );
        }
    }
    peers
}
