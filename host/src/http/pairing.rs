//! Pairing's doors. The inviting inbox: `POST /admin/peers/invite` makes a one-time code;
//! `POST /pair/join` (the code) answers with its key and URL; `POST /pair/confirm` (signed with
//! that key) writes its half and makes it live; `POST /pair/cancel` undoes it. The joining inbox:
//! `POST /admin/peers/join` does its side of all that, writing its half before it confirms and
//! taking it back if the confirm does not come. `GET /admin/peers` and
//! `POST /admin/peers/{name}/remove` complete the set.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::extract::{Req, body, header};
use super::{ApiError, Body, Door, json};
use crate::config::{PeerAuth, is_valid_name};
use crate::inbox::{Inbox, new_key};
use crate::model::now_ms;
use crate::pairing::{Keys, Pairing, PairingError};
use crate::signature::{self, SigningKey};
use crate::snapshot::Snapshot;
use crate::store::{InviteState, Joined as StoredJoin};
use crate::wire::{
    BodyError, InviteBody, InviteLine, Invited, JoinBody, Joined, PairCode, PairJoin, PairJoined,
    Paired, PeerList, PeerRemoved, PeerView,
};

/// An invite's default and longest life.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

fn bad(why: impl Into<String>) -> ApiError {
    ApiError::Body(BodyError::BadField(why.into()))
}

impl From<PairingError> for ApiError {
    fn from(e: PairingError) -> Self {
        match e {
            PairingError::Edit(crate::config::edit::EditError::Exists(p)) => {
                ApiError::Conflict(format!("peer {p:?} is already in routes.toml"))
            }
            PairingError::Edit(crate::config::edit::EditError::Unknown(_)) => ApiError::NOT_FOUND,
            other => ApiError::Conflict(other.to_string()),
        }
    }
}

async fn parse<T: DeserializeOwned>(snap: &Snapshot, req: &mut Req) -> Result<T, ApiError> {
    let bytes = body(req, snap.config.server.max_body_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Body(BodyError::BadJson(e.to_string())))
}

fn pairing(door: &Door) -> Result<&Pairing, ApiError> {
    door.pairing
        .as_ref()
        .ok_or_else(|| ApiError::Conflict("this inbox was not started from a config file".into()))
}

/// The types this inbox's local agents' routes take: what a paired peer's agents may send it.
fn takes(snap: &Snapshot) -> Vec<String> {
    let mut t: Vec<String> = snap
        .config
        .routes
        .values()
        .filter(|r| r.agent_id.is_some())
        .flat_map(|r| r.types.iter().cloned())
        .collect();
    t.sort();
    t.dedup();
    t
}

/// This machine's name, as a peer name: what an invite suggests the other side call us.
fn host_name() -> String {
    let raw = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let name: String = raw
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if is_valid_name(&name) {
        name
    } else {
        "inbox".into()
    }
}

fn checked_name(name: &str, snap: &Snapshot) -> Result<(), ApiError> {
    if !is_valid_name(name) {
        return Err(bad(format!(
            "{name:?}: a peer name is letters, digits, '_', '-' or '.'"
        )));
    }
    if snap.config.peers.contains_key(name) {
        return Err(ApiError::Conflict(format!(
            "peer {name:?} is already in routes.toml"
        )));
    }
    Ok(())
}

/// `POST /admin/peers/invite`.
pub(super) async fn invite(
    inbox: &Arc<Inbox>,
    snap: &Snapshot,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    let b: InviteBody = parse(snap, req).await?;
    checked_name(&b.peer, snap)?;
    let as_name = b.as_name.unwrap_or_else(host_name);
    if !is_valid_name(&as_name) {
        return Err(bad(format!("as {as_name:?} is not a peer name")));
    }
    let ttl = b.ttl_secs.map_or(DEFAULT_TTL, Duration::from_secs);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(bad(format!("ttl_secs: 1 to {} seconds", MAX_TTL.as_secs())));
    }
    let (code, expires_at) = inbox.create_invite(&b.peer, ttl).await?;
    let url = inbox.base_url(snap);
    let insecure = !url.starts_with("https://");
    let line = InviteLine {
        url: url.clone(),
        code,
        as_name: as_name.clone(),
    }
    .encode();
    let command = format!(
        "agent-inbox peer join '{line}' --as {as_name}{}",
        if insecure { " --insecure" } else { "" }
    );
    Ok(json(
        StatusCode::CREATED,
        &Invited {
            invite: line,
            command,
            expires_at,
            url,
            insecure,
        },
    ))
}

/// `POST /pair/join`: a joining inbox uses a code. A used, expired or unknown code is the same
/// 404 (and counts against the address, like a wrong secret).
pub(super) async fn pair_join(
    inbox: &Arc<Inbox>,
    snap: &Snapshot,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    let b: PairJoin = parse(snap, req).await?;
    SigningKey::parse(&b.key).map_err(|e| bad(format!("key: {e}")))?;
    match b.url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
        _ => return Err(bad("url: not an http(s) URL")),
    }
    if let Some(t) = b.takes.iter().find(|t| !crate::model::valid_type_name(t)) {
        return Err(bad(format!("takes: {t:?} is not a type name")));
    }
    let ours = new_key();
    let joined = StoredJoin {
        url: b.url,
        send_key: b.key,
        receive_key: ours.clone(),
        takes: b.takes,
    };
    let invite = inbox
        .use_invite(&b.code, joined)
        .await?
        .ok_or(ApiError::NoSuchInvite)?;
    let base = inbox.base_url(snap);
    Ok(json(
        StatusCode::OK,
        &PairJoined {
            url: format!("{base}/message/{}", invite.peer),
            key: ours,
            takes: takes(snap),
        },
    ))
}

/// The raw body, and the request's Standard Webhooks signature checked against `key`.
fn signed_by(req: &Req, bytes: &[u8], key: &SigningKey, snap: &Snapshot) -> Result<(), ApiError> {
    let headers = signature::Signed {
        id: header(req, "webhook-id"),
        timestamp: header(req, "webhook-timestamp"),
        signature: header(req, "webhook-signature"),
    };
    let tolerance = snap.config.server.signature_tolerance.as_secs();
    signature::verify(
        std::slice::from_ref(key),
        headers,
        bytes,
        now_ms() / 1000,
        tolerance,
    )?;
    Ok(())
}

/// A confirm's or cancel's body (raw, for its signature, and read) and the invite its code names.
async fn coded(
    inbox: &Inbox,
    snap: &Snapshot,
    req: &mut Req,
) -> Result<(bytes::Bytes, PairCode, crate::store::Invite), ApiError> {
    let bytes = body(req, snap.config.server.max_body_bytes).await?;
    let b: PairCode = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Body(BodyError::BadJson(e.to_string())))?;
    let invite = inbox
        .invite_of(&b.code)
        .await?
        .ok_or(ApiError::NoSuchInvite)?;
    Ok((bytes, b, invite))
}

/// `POST /pair/confirm`: the joining inbox holds the key `/pair/join` gave it (it signs with
/// it) and has written its half; this side writes its own and makes it live. Idempotent.
pub(super) async fn pair_confirm(
    door: &Door,
    snap: &Snapshot,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    let inbox = door.inbox();
    let (bytes, b, invite) = coded(inbox, snap, req).await?;
    if invite.state == InviteState::Paired {
        let key = peer_key(snap, &invite.peer)?;
        signed_by(req, &bytes, &key, snap)?;
        return Ok(json(
            StatusCode::OK,
            &Paired {
                status: "paired".into(),
            },
        ));
    }
    let (InviteState::Joined, Some(joined)) = (invite.state, invite.joined) else {
        return Err(ApiError::NoSuchInvite);
    };
    let key = SigningKey::parse(&joined.receive_key).map_err(|_| ApiError::NoSuchInvite)?;
    signed_by(req, &bytes, &key, snap)?;
    let keys = Keys {
        receive: joined.receive_key.clone(),
        send: joined.send_key.clone(),
    };
    pairing(door)?
        .add(&invite.peer, &joined.url, &keys, &joined.takes)
        .await?;
    inbox
        .settle_invite(&b.code, InviteState::Joined, InviteState::Paired)
        .await?;
    tracing::info!(peer = %invite.peer, "paired");
    Ok(json(
        StatusCode::OK,
        &Paired {
            status: "paired".into(),
        },
    ))
}

/// The key that checks what a paired peer sends (its first receiving key).
fn peer_key(snap: &Snapshot, peer: &str) -> Result<SigningKey, ApiError> {
    match snap.config.peers.get(peer).map(|p| &p.auth) {
        Some(PeerAuth::StandardWebhooks { verify, .. }) => {
            verify.first().cloned().ok_or(ApiError::NoSuchInvite)
        }
        _ => Err(ApiError::NoSuchInvite),
    }
}

/// `POST /pair/cancel`: the joining inbox did not get the confirm's answer and took its half
/// back; this side takes its own back too, if it wrote it.
pub(super) async fn pair_cancel(
    door: &Door,
    snap: &Snapshot,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    let inbox = door.inbox();
    let (bytes, b, invite) = coded(inbox, snap, req).await?;
    match (invite.state, &invite.joined) {
        (InviteState::Joined, Some(joined)) => {
            let key = SigningKey::parse(&joined.receive_key).map_err(|_| ApiError::NoSuchInvite)?;
            signed_by(req, &bytes, &key, snap)?;
            inbox
                .settle_invite(&b.code, InviteState::Joined, InviteState::Cancelled)
                .await?;
        }
        (InviteState::Paired, _) => {
            let key = peer_key(snap, &invite.peer)?;
            signed_by(req, &bytes, &key, snap)?;
            pairing(door)?.remove(&invite.peer).await?;
            inbox
                .settle_invite(&b.code, InviteState::Paired, InviteState::Cancelled)
                .await?;
            tracing::info!(peer = %invite.peer, "pairing cancelled by the other side");
        }
        _ => return Err(ApiError::NoSuchInvite),
    }
    Ok(json(
        StatusCode::OK,
        &Paired {
            status: "cancelled".into(),
        },
    ))
}

/// `POST /admin/peers/join`: this inbox joins the one the invite names.
pub(super) async fn join(
    door: &Door,
    snap: &Snapshot,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    let b: JoinBody = parse(snap, req).await?;
    let line = InviteLine::decode(&b.invite).map_err(|e| bad(format!("invite: {e}")))?;
    let name = b.as_name.unwrap_or_else(|| line.as_name.clone());
    checked_name(&name, snap)?;
    let them = line.url.trim_end_matches('/');
    if !them.starts_with("https://") && !b.insecure {
        return Err(bad(format!(
            "the invite names {them}, plain http: the keys would cross in the clear. Use an \
             https URL (public_url), or join with --insecure on a network you trust"
        )));
    }
    let pairing = pairing(door)?;
    let inbox = door.inbox();
    let ours = new_key();
    let join = json!(PairJoin {
        code: line.code.clone(),
        url: format!("{}/message/{name}", inbox.base_url(snap)),
        key: ours.clone(),
        takes: takes(snap),
    });
    let (status, answer) = pairing
        .post(&format!("{them}/pair/join"), &join, None)
        .await
        .map_err(ApiError::PairingFailed)?;
    if status == StatusCode::NOT_FOUND {
        return Err(ApiError::PairingFailed(format!(
            "{them} says the invite is used, expired or unknown: ask for a new one"
        )));
    }
    if !status.is_success() {
        return Err(ApiError::PairingFailed(format!(
            "{them} answered the join with {status}: {}",
            String::from_utf8_lossy(&answer)
                .chars()
                .take(300)
                .collect::<String>()
        )));
    }
    let theirs: PairJoined = serde_json::from_slice(&answer)
        .map_err(|e| ApiError::PairingFailed(format!("{them}'s answer does not read: {e}")))?;
    let their_key = SigningKey::parse(&theirs.key)
        .map_err(|e| ApiError::PairingFailed(format!("{them}'s key: {e}")))?;
    let code = json!(PairCode { code: line.code });
    let cancel_url = format!("{them}/pair/cancel");
    let cancel = || pairing.post(&cancel_url, &code, Some(&their_key));
    // Our half first: live before the other side sends anything.
    let keys = Keys {
        receive: ours,
        send: theirs.key.clone(),
    };
    let config_hash = match pairing.add(&name, &theirs.url, &keys, &theirs.takes).await {
        Ok(hash) => hash,
        Err(e) => {
            let _ = cancel().await;
            return Err(e.into());
        }
    };
    // Then the confirm; if its answer does not come, each side takes its half back.
    let mut last = String::new();
    for wait in [0u64, 1, 3] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        match pairing
            .post(&format!("{them}/pair/confirm"), &code, Some(&their_key))
            .await
        {
            Ok((s, _)) if s.is_success() => {
                tracing::info!(peer = %name, "paired");
                return Ok(json(
                    StatusCode::OK,
                    &Joined {
                        peer: name,
                        url: theirs.url,
                        status: "paired".into(),
                        config_hash,
                    },
                ));
            }
            // A definite no: no point asking again.
            Ok((s, body)) if s.is_client_error() => {
                last = format!("{s}: {}", String::from_utf8_lossy(&body));
                break;
            }
            Ok((s, body)) => last = format!("{s}: {}", String::from_utf8_lossy(&body)),
            Err(e) => last = e,
        }
    }
    let cancelled = cancel().await;
    pairing.remove(&name).await?;
    let other = match cancelled {
        Ok((s, _)) if s.is_success() => "it took its half back too".to_owned(),
        _ => "it may hold a half pairing: there, `agent-inbox peer remove` the name it gave \
               this inbox"
            .to_owned(),
    };
    Err(ApiError::PairingFailed(format!(
        "{them} did not confirm ({last}); this inbox took its half back, and {other}"
    )))
}

/// `GET /admin/peers`.
pub(super) fn list(snap: &Snapshot) -> Response<Body> {
    let peers = snap
        .config
        .peers
        .values()
        .map(|p| PeerView {
            name: p.name.clone(),
            // Never a credential a URL may carry.
            url: p.url.as_ref().map(crate::config::shown_url),
            auth: match p.auth {
                PeerAuth::Secret => "secret".into(),
                PeerAuth::StandardWebhooks { .. } => "standard-webhooks".into(),
            },
            own_keys: p
                .send_secrets
                .iter()
                .zip(&p.secrets)
                .any(|(s, r)| !s.same_as(r))
                || p.send_secrets.len() != p.secrets.len(),
            a2a: p.a2a_out.is_some(),
            routes: snap
                .config
                .routes
                .iter()
                .filter(|(_, r)| r.from.contains(&p.name))
                .map(|(n, _)| n.clone())
                .collect(),
        })
        .collect();
    json(StatusCode::OK, &PeerList { peers })
}

/// `POST /admin/peers/{name}/remove`.
pub(super) async fn remove(door: &Door, name: &str) -> Result<Response<Body>, ApiError> {
    let config_hash = pairing(door)?.remove(name).await?;
    tracing::info!(peer = %name, "peer removed");
    Ok(json(
        StatusCode::OK,
        &PeerRemoved {
            peer: name.to_owned(),
            status: "removed".into(),
            config_hash,
        },
    ))
}
