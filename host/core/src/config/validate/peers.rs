//! `[peers]`: each peer's URL and secret, and that every secret names one sender.

use std::collections::BTreeMap;

use super::{Checker, schema, valid_name};
use crate::config::{Peer, PeerAuth, Secret};
use crate::signature::SigningKey;

pub(super) fn peers(
    c: &mut Checker<'_>,
    raw: &BTreeMap<String, schema::Peer>,
    admin_secrets: &[Secret],
) -> BTreeMap<String, Peer> {
    let mut peers = BTreeMap::new();
    for (name, p) in raw {
        let at = format!("peers.{name}");
        if !valid_name(name) {
            c.invalid(&at, "a peer name is letters, digits, '_', '-' or '.'");
        }
        let url = match p.url.as_deref().map(str::parse::<http::Uri>) {
            None => None,
            Some(Ok(u))
                if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() =>
            {
                Some(u)
            }
            Some(_) => {
                c.invalid(
                    format!("{at}.url"),
                    format!("{:?} is not an http(s) URL", p.url.as_deref().unwrap_or("")),
                );
                None
            }
        };
        let secrets = c.secrets(
            &format!("{at}.secret"),
            p.secret_env.as_ref(),
            p.secret.as_ref(),
        );
        let a2a_tokens = c.secrets(
            &format!("{at}.a2a_token"),
            p.a2a_token_env.as_ref(),
            p.a2a_token.as_ref(),
        );
        let has_secret = p.secret_env.is_some() || p.secret.is_some();
        let has_token = p.a2a_token_env.is_some() || p.a2a_token.is_some();
        if !has_secret && !has_token {
            c.invalid(
                &at,
                "needs secret_env (or, for local demos, secret), or a2a_token_env for a peer that only speaks A2A",
            );
        } else if p.url.is_some() && !has_secret {
            c.invalid(
                &at,
                "a peer with a url needs secret_env: it authenticates what we send it",
            );
        } else if p.url.is_none() && has_secret && !has_token {
            c.invalid(
                format!("{at}.url"),
                "missing: replies are delivered to it (only a peer that speaks A2A alone has no url)",
            );
        }
        let auth = match p.auth.as_deref() {
            None | Some("secret") => PeerAuth::Secret,
            Some("standard-webhooks") => {
                let mut keys = Vec::new();
                for (i, s) in secrets.iter().enumerate() {
                    match SigningKey::parse(s.expose()) {
                        Ok(k) => keys.push(k),
                        Err(e) => c.invalid(format!("{at}.secret[{i}]"), e.to_string()),
                    }
                }
                PeerAuth::StandardWebhooks(keys)
            }
            Some(other) => {
                c.invalid(
                    format!("{at}.auth"),
                    format!("{other:?} is not \"secret\" or \"standard-webhooks\""),
                );
                PeerAuth::Secret
            }
        };
        let ca_file = p.ca_file.as_deref().map(|f| c.base_dir.join(f));
        if ca_file.is_some()
            && url
                .as_ref()
                .is_some_and(|u| u.scheme_str() != Some("https"))
        {
            c.invalid(format!("{at}.ca_file"), "a CA file is for an https:// url");
        }
        if !secrets.is_empty() || !a2a_tokens.is_empty() {
            peers.insert(
                name.clone(),
                Peer {
                    name: name.clone(),
                    url,
                    a2a_tokens,
                    auth,
                    secrets,
                    ca_file,
                },
            );
        }
    }
    // Authentication identifies the sender by its secret, so every secret (both of a peer in
    // the middle of a rotation too) names one sender.
    let secrets: Vec<(&String, &Secret)> = peers
        .iter()
        .flat_map(|(n, p)| p.secrets.iter().map(move |s| (n, s)))
        .collect();
    for (i, (a, sa)) in secrets.iter().enumerate() {
        for (b, _) in secrets.iter().skip(i + 1).filter(|(_, sb)| sb.same_as(sa)) {
            let why = if a == b {
                format!("peers.{a} lists the same secret twice")
            } else {
                format!("same secret as peers.{a}; the sender is known by its secret")
            };
            c.invalid(format!("peers.{b}.secret"), why);
        }
        if admin_secrets.iter().any(|s| s.same_as(sa)) {
            c.invalid(
                format!("peers.{a}.secret"),
                "same secret as the admin secret",
            );
        }
    }
    peers
}
