//! `[peers]`: each peer's URL and secret, and that every secret names one sender.

use std::collections::BTreeMap;

use std::time::Duration;

use super::routes::a2a_remote;
use super::{Checker, schema, valid_name, valid_type_name};
use crate::config::defaults::{DEFAULT_A2A_FOLLOW, DEFAULT_A2A_PEER_REPLY_TYPE};
use crate::config::{A2aPeer, Peer, PeerAuth, Secret};
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
            p.secret_file.as_ref(),
            p.secret.as_ref(),
        );
        let a2a_tokens = c.secrets(
            &format!("{at}.a2a_token"),
            p.a2a_token_env.as_ref(),
            p.a2a_token_file.as_ref(),
            p.a2a_token.as_ref(),
        );
        let send = c.secrets(
            &format!("{at}.send_secret"),
            p.send_secret_env.as_ref(),
            p.send_secret_file.as_ref(),
            p.send_secret.as_ref(),
        );
        let has_send =
            p.send_secret_env.is_some() || p.send_secret_file.is_some() || p.send_secret.is_some();
        if has_send && p.url.is_none() {
            c.invalid(
                format!("{at}.send_secret"),
                "only for a peer with a url: it is what we send it with",
            );
        }
        let send_secrets = if has_send { send } else { secrets.clone() };
        let has_secret = p.secret_env.is_some() || p.secret_file.is_some() || p.secret.is_some();
        let has_token =
            p.a2a_token_env.is_some() || p.a2a_token_file.is_some() || p.a2a_token.is_some();
        let a2a_out = a2a_peer(c, &at, p);
        let is_agent = p.a2a_url.is_some() || p.a2a_card_url.is_some();
        if is_agent && p.url.is_some() {
            c.invalid(
                format!("{at}.a2a_url"),
                "url and a2a_url (or a2a_card_url) exclude each other: a peer is reached one way",
            );
        } else if is_agent && has_secret {
            c.invalid(
                format!("{at}.secret"),
                "an A2A peer is called with a2a_bearer_env; secret_env is for a peer with a url",
            );
        } else if is_agent {
        } else if !has_secret && !has_token {
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
                let mut keys = |key: &str, secrets: &[Secret]| {
                    let mut keys = Vec::new();
                    for (i, s) in secrets.iter().enumerate() {
                        match SigningKey::parse(s.expose()) {
                            Ok(k) => keys.push(k),
                            Err(e) => c.invalid(format!("{at}.{key}[{i}]"), e.to_string()),
                        }
                    }
                    keys
                };
                let verify = keys("secret", &secrets);
                let sign = if has_send {
                    keys("send_secret", &send_secrets)
                } else {
                    verify.clone()
                };
                PeerAuth::StandardWebhooks { verify, sign }
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
        if !secrets.is_empty() || !a2a_tokens.is_empty() || a2a_out.is_some() {
            peers.insert(
                name.clone(),
                Peer {
                    name: name.clone(),
                    url,
                    a2a_tokens,
                    auth,
                    send_secrets,
                    secrets,
                    ca_file,
                    a2a_out,
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

/// `a2a_url` or `a2a_card_url`, with `a2a_bearer_env` and the rest: the peer as an A2A agent.
fn a2a_peer(c: &mut Checker<'_>, at: &str, p: &schema::Peer) -> Option<A2aPeer> {
    let url = match (&p.a2a_url, &p.a2a_card_url) {
        (None, None) => {
            for (key, set) in [
                ("a2a_bearer_env", p.a2a_bearer_env.is_some()),
                ("a2a_bearer_file", p.a2a_bearer_file.is_some()),
                ("a2a_reply_type", p.a2a_reply_type.is_some()),
                ("a2a_skill", p.a2a_skill.is_some()),
                ("a2a_follow_secs", p.a2a_follow_secs.is_some()),
                (
                    "a2a_max_calls_per_minute",
                    p.a2a_max_calls_per_minute.is_some(),
                ),
            ] {
                if set {
                    c.invalid(
                        format!("{at}.{key}"),
                        "only for a peer with a2a_url or a2a_card_url",
                    );
                }
            }
            return None;
        }
        (Some(_), Some(_)) => {
            c.invalid(
                format!("{at}.a2a_card_url"),
                "a2a_url and a2a_card_url exclude each other",
            );
            return None;
        }
        (Some(u), None) => (u, "a2a_url"),
        (None, Some(u)) => (u, "a2a_card_url"),
    };
    let (url, key) = url;
    let mut remote = a2a_remote(
        c,
        at,
        [key, "a2a_bearer"],
        Some(url),
        [p.a2a_bearer_env.as_ref(), p.a2a_bearer_file.as_ref()],
        p.a2a_max_calls_per_minute,
    )?;
    // The key says what the URL is, whatever its path ends in.
    remote.card = key == "a2a_card_url";
    let reply_type = p
        .a2a_reply_type
        .clone()
        .unwrap_or_else(|| DEFAULT_A2A_PEER_REPLY_TYPE.to_owned());
    if !valid_type_name(&reply_type) {
        c.invalid(
            format!("{at}.a2a_reply_type"),
            format!("{reply_type:?} is not a type name"),
        );
    }
    let follow = Duration::from_secs(c.positive(
        &format!("{at}.a2a_follow_secs"),
        p.a2a_follow_secs,
        DEFAULT_A2A_FOLLOW.as_secs(),
    ));
    Some(A2aPeer {
        remote,
        reply_type,
        skill: p.a2a_skill.clone(),
        follow,
    })
}
