//! One thin handler per endpoint: read the request, call a use case, answer with its wire type.

use std::sync::Arc;

use http::{Response, StatusCode};

use super::extract::{Req, bearer, body, header, query, segment};
use super::{ApiError, Body, Door, Endpoint, json};
use crate::approval::{self, DecideError};
use crate::config::PeerAuth;
use crate::inbox::{Inbox, Incoming as Arrived, Reader, Refused, reader};
use crate::model::Verdict;
use crate::signature;
use crate::snapshot::Snapshot;
use crate::store::MessageFilter;
use crate::wire::{
    self, AdminSendBody, ApprovalView, BodyError, DecideBody, Envelope, Health, Reloaded, Reloads,
    Requeued, SendBody,
};

pub(super) async fn call(
    endpoint: Endpoint,
    params: &[&str],
    door: &Door,
    snap: &Arc<Snapshot>,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    let inbox = door.inbox();
    let param = || params.first().map(|p| segment(p)).unwrap_or_default();
    match endpoint {
        Endpoint::Message => message(inbox, snap, req, None).await,
        Endpoint::MessageFrom => message(inbox, snap, req, Some(&param())).await,
        Endpoint::Send => send(inbox, snap, req).await,
        Endpoint::AgentMe => {
            let agent = agent_of(snap, req)?;
            let me = inbox.agent_me(snap, agent).await;
            Ok(json(StatusCode::OK, &me))
        }
        Endpoint::AgentReply => {
            let agent = agent_of(snap, req)?;
            let bytes = body(req, snap.config.server.max_body_bytes).await?;
            let reply = SendBody::parse(&bytes, snap.config.server.max_json_depth)?;
            let ack = inbox.agent_reply(snap, agent, &param(), reply).await?;
            Ok(json(StatusCode::ACCEPTED, &ack))
        }
        Endpoint::Mcp => super::mcp::serve(inbox, snap, req).await,
        Endpoint::PeerInvite => {
            require_admin(inbox, snap, req)?;
            super::pairing::invite(inbox, snap, req).await
        }
        Endpoint::PeerJoin => {
            require_admin(inbox, snap, req)?;
            super::pairing::join(door, snap, req).await
        }
        Endpoint::Peers => {
            require_admin(inbox, snap, req)?;
            Ok(super::pairing::list(snap))
        }
        Endpoint::PeerRemove => {
            require_admin(inbox, snap, req)?;
            super::pairing::remove(door, &param()).await
        }
        Endpoint::PairJoin => super::pairing::pair_join(inbox, snap, req).await,
        Endpoint::PairConfirm => super::pairing::pair_confirm(door, snap, req).await,
        Endpoint::PairCancel => super::pairing::pair_cancel(door, snap, req).await,
        Endpoint::Messages => list(inbox, snap, req).await,
        Endpoint::MessageById => show(inbox, snap, req, &param()).await,
        Endpoint::AdminSend => admin_send(inbox, snap, req).await,
        Endpoint::AdminOutbox => outbox(inbox, snap, req).await,
        Endpoint::OutboxRetry => outbox_retry(inbox, snap, req, &param()).await,
        Endpoint::AdminReload => admin_reload(door, snap, req).await,
        Endpoint::Approvals => approvals(inbox, snap, req).await,
        Endpoint::ApprovalById => {
            require_admin(inbox, snap, req)?;
            Ok(json(StatusCode::OK, &inbox.approval(&param()).await?))
        }
        Endpoint::CancelTurn => cancel_turn(inbox, snap, req, &param()).await,
        Endpoint::Approve => decide(inbox, snap, req, &param(), Verdict::Approved).await,
        Endpoint::Reject => decide(inbox, snap, req, &param(), Verdict::Rejected).await,
        Endpoint::Status => status(door, snap, req).await,
        Endpoint::Health => Ok(json(
            StatusCode::OK,
            &Health {
                status: "ok".into(),
            },
        )),
        Endpoint::AgentCard => super::a2a::card(door, snap, req),
        Endpoint::Metrics => metrics(inbox, snap, req),
        Endpoint::Ready => ready(inbox).await,
        Endpoint::Console => Ok(super::console_pages::page(snap, inbox, req)),
        Endpoint::ConsoleJs => Ok(super::console_pages::asset(
            crate::console::APP_JS,
            "text/javascript; charset=utf-8",
        )),
        Endpoint::ConsoleCss => Ok(super::console_pages::asset(
            crate::console::STYLE_CSS,
            "text/css; charset=utf-8",
        )),
        Endpoint::ConsoleLogin => super::console_pages::login(snap, req).await,
        Endpoint::ConsoleLogout => super::console_pages::logout(snap, inbox, req).await,
        Endpoint::Events => {
            // The admin follows everything; a local agent, one thread it started.
            let admin = if let Reader::Agent(agent) = who(inbox, snap, req)? {
                let thread = query(req, "thread").ok_or(ApiError::NOT_FOUND)?;
                if !inbox.agent_reads(&agent, &thread).await? {
                    return Err(ApiError::NOT_FOUND);
                }
                false
            } else {
                require_admin(inbox, snap, req)?;
                true
            };
            let lasts = super::query::timeout_secs(req.parts.uri.query())
                .map_err(bad_field)?
                .map(|secs| std::time::Duration::from_secs(secs.into()));
            Ok(super::event_stream::events(
                inbox,
                admin,
                query(req, "route"),
                query(req, "thread"),
                lasts,
            ))
        }
        Endpoint::A2a => super::a2a::rpc(inbox, snap, req).await,
        Endpoint::OpenApi => {
            let mut resp = Response::new(Body::from(super::OPENAPI_JSON));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
    }
}

/// A yes/no query parameter (see [`super::query::flag`]).
fn flag(req: &Req, name: &str) -> Result<bool, ApiError> {
    super::query::flag(req.parts.uri.query(), name).map_err(bad_field)
}

/// The `limit` query parameter (see [`super::query::limit`]).
fn limit(req: &Req, default: u32, max: u32) -> Result<u32, ApiError> {
    super::query::limit(req.parts.uri.query(), default, max).map_err(bad_field)
}

fn bad_field(why: String) -> ApiError {
    ApiError::Body(BodyError::BadField(why))
}

/// Who a request is: a bearer or peer secret, or else a console session (the admin; a POST must
/// also carry the session's CSRF token).
fn who(inbox: &Inbox, snap: &Snapshot, req: &Req) -> Result<Reader, ApiError> {
    if let Some(r) = reader(&snap.config, bearer(req), header(req, "x-shared-secret")) {
        return Ok(r);
    }
    if super::console_pages::admin_session(snap, inbox, req) {
        return Ok(Reader::Admin);
    }
    if let Some(agent) = bearer(req).and_then(|t| snap.config.agent_by_token(t)) {
        return Ok(Reader::Agent(agent.name.clone()));
    }
    Err(ApiError::Unauthorized)
}

/// The local agent whose token the request bears.
fn agent_of<'a>(snap: &'a Snapshot, req: &Req) -> Result<&'a crate::config::LocalAgent, ApiError> {
    bearer(req)
        .and_then(|t| snap.config.agent_by_token(t))
        .ok_or(ApiError::Unauthorized)
}

fn require_admin(inbox: &Inbox, snap: &Snapshot, req: &Req) -> Result<(), ApiError> {
    match who(inbox, snap, req)? {
        Reader::Admin => Ok(()),
        Reader::Peer(_) | Reader::Agent(_) => Err(ApiError::Unauthorized),
    }
}

/// `POST /message` (the sender known by its `X-Shared-Secret`) and `POST /message/{peer}` (the
/// sender named by the path, proving it with its secret or its Standard Webhooks signature).
async fn message(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &mut Req,
    named: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    // Checked first, as the cheapest refusal while draining; `accept` checks it again.
    if inbox.is_draining() {
        return Err(ApiError::Inbox(crate::inbox::InboxError::ShuttingDown));
    }
    let config = &snap.config;
    let limit = config.server.max_body_bytes;
    let secret = header(req, "x-shared-secret");
    let (sender, bytes, signed_id) = match named.map(|n| config.peers.get(n)) {
        None => {
            let peer = secret
                .and_then(|s| config.peer_by_secret(s))
                .ok_or(ApiError::Unauthorized)?;
            (peer.name.clone(), body(req, limit).await?, None)
        }
        Some(Some(peer)) if matches!(peer.auth, PeerAuth::Secret) => {
            if secret
                .and_then(|s| config.peer_by_secret(s))
                .is_none_or(|p| p.name != peer.name)
            {
                return Err(ApiError::Unauthorized);
            }
            (peer.name.clone(), body(req, limit).await?, None)
        }
        // A Standard Webhooks peer, or a name that is no peer's: both are checked as a signed
        // request, so a wrong name fails as a wrong signature does.
        Some(peer) => {
            let (now, tolerance) = (
                crate::model::now_ms() / 1000,
                config.server.signature_tolerance.as_secs(),
            );
            signature::precheck(signed(req), now, tolerance)?;
            let bytes = body(req, limit).await?;
            let keys = match peer.map(|p| &p.auth) {
                Some(PeerAuth::StandardWebhooks { verify, .. }) => verify.as_slice(),
                _ => &[],
            };
            signature::verify(keys, signed(req), &bytes, now, tolerance)?;
            let peer = peer.ok_or(signature::SignatureError::Bad)?;
            let id = header(req, "webhook-id").map(<[u8]>::to_vec);
            (peer.name.clone(), bytes, id)
        }
    };
    // A signed request's webhook-id is its idempotency key: a replay is answered as a duplicate.
    let idempotency_key = match (signed_id, header(req, "idempotency-key")) {
        (Some(id), _) => Some(wire::idempotency_key(&id, "webhook-id")?),
        (None, Some(k)) => Some(wire::idempotency_key(k, "Idempotency-Key")?),
        (None, None) => None,
    };
    let envelope = match Envelope::parse(&bytes, config.server.max_json_depth) {
        Ok(e) => e,
        Err(e) => {
            let e = ApiError::from(e);
            inbox.refused(refusal(&sender, None, &e)).await;
            return Err(e);
        }
    };
    let named = (
        envelope.msg_type.clone(),
        envelope.thread_id.clone(),
        envelope.in_reply_to.clone(),
    );
    let accepted = inbox
        .accept(
            snap,
            Arrived {
                sender: sender.clone(),
                envelope,
                idempotency_key,
                route: None,
                task: None,
            },
        )
        .await;
    let ack = match accepted {
        Ok(ack) => ack,
        Err(e) => {
            let e = ApiError::from(e);
            // Refused for good (a 4xx other than a rate limit): visible on this side too.
            if e.status().is_client_error() && e.status() != StatusCode::TOO_MANY_REQUESTS {
                let (t, thread, answered) = &named;
                let mut r = refusal(&sender, Some(t), &e);
                r.thread = thread.as_deref();
                r.in_reply_to = answered.as_deref();
                inbox.refused(r).await;
            }
            return Err(e);
        }
    };
    let status = match ack.status {
        wire::AckStatus::Duplicate => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok(json(status, &ack))
}

/// What a refusal of `sender`'s message of `msg_type` leaves for [`Inbox::refused`].
fn refusal<'a>(sender: &'a str, msg_type: Option<&'a str>, e: &'a ApiError) -> Refused<'a> {
    Refused {
        peer: sender,
        msg_type,
        thread: None,
        in_reply_to: None,
        code: e.code(),
        detail: e.to_string(),
    }
}

/// The Standard Webhooks headers of a request.
fn signed(req: &Req) -> signature::Signed<'_> {
    signature::Signed {
        id: header(req, "webhook-id"),
        timestamp: header(req, "webhook-timestamp"),
        signature: header(req, "webhook-signature"),
    }
}

/// `POST /send`: with a turn's reply token, the agent's reply; with a local agent's token
/// (`[agents.NAME]`), a message the agent starts or continues a thread with.
async fn send(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    let token = bearer(req).ok_or(ApiError::Unauthorized)?;
    let limit = snap.config.server.max_body_bytes;
    let depth = snap.config.server.max_json_depth;
    if let Some(agent) = snap.config.agent_by_token(token) {
        let bytes = body(req, limit).await?;
        let ack = inbox
            .agent_send(snap, agent, AdminSendBody::parse(&bytes, depth)?)
            .await?;
        return Ok(json(StatusCode::ACCEPTED, &ack));
    }
    let token = std::str::from_utf8(token).map_err(|_| ApiError::Unauthorized)?;
    // The token is checked before the body is read, so an unknown caller costs no parsing.
    let grant = inbox.grant(token).await?;
    let bytes = body(req, limit).await?;
    let reply = SendBody::parse(&bytes, depth)?;
    let ack = inbox.reply(snap, grant, reply).await?;
    Ok(json(StatusCode::ACCEPTED, &ack))
}

async fn list(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    let who = who(inbox, snap, req)?;
    let limit = limit(req, 50, 500)?;
    let state = query(req, "state")
        .map(|s| s.parse::<crate::store::StateFilter>())
        .transpose()
        .map_err(bad_field)?;
    let filter = MessageFilter {
        route: query(req, "route"),
        thread: query(req, "thread"),
        // A peer lists only its own messages whatever it asks (the inbox sees to that).
        sender: query(req, "peer"),
        msg_type: query(req, "type"),
        state,
        text: query(req, "q").filter(|q| !q.is_empty()),
        before: query(req, "before"),
        limit,
    };
    Ok(json(StatusCode::OK, &inbox.list(&who, filter).await?))
}

async fn show(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Req,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let who = who(inbox, snap, req)?;
    Ok(json(StatusCode::OK, &inbox.show(&who, id).await?))
}

async fn admin_send(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    require_admin(inbox, snap, req)?;
    let bytes = body(req, snap.config.server.max_body_bytes).await?;
    let ack = inbox
        .send(
            snap,
            AdminSendBody::parse(&bytes, snap.config.server.max_json_depth)?,
        )
        .await?;
    Ok(json(StatusCode::ACCEPTED, &ack))
}

async fn outbox(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    require_admin(inbox, snap, req)?;
    let dead_only = flag(req, "dead")?;
    let limit = limit(req, 100, 1000)?;
    Ok(json(StatusCode::OK, &inbox.outbox(dead_only, limit).await?))
}

async fn outbox_retry(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Req,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    require_admin(inbox, snap, req)?;
    let deliveries = inbox.retry_now(id).await?;
    Ok(json(
        StatusCode::OK,
        &Requeued {
            status: "requeued".into(),
            id: id.to_owned(),
            deliveries,
        },
    ))
}

/// `GET /admin/approvals`: what waits (`?all=true`: decided ones too, newest first).
async fn approvals(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    require_admin(inbox, snap, req)?;
    let waiting_only = !flag(req, "all")?;
    let limit = limit(req, 100, 1000)?;
    Ok(json(
        StatusCode::OK,
        &inbox.approvals(waiting_only, limit).await?,
    ))
}

/// `POST /admin/approvals/{id}/approve` and `.../reject`: a person's decision. From the console
/// (a session) it is recorded `via = console`, with the admin bearer `via = api`.
async fn decide(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &mut Req,
    id: &str,
    verdict: Verdict,
) -> Result<Response<Body>, ApiError> {
    let via = person_via(inbox, snap, req)?;
    let bytes = body(req, snap.config.server.max_body_bytes).await?;
    let b = DecideBody::parse(&bytes, snap.config.server.max_json_depth)?;
    let decided = inbox
        .decide(approval::Request {
            id: id.to_owned(),
            verdict,
            by: b.by,
            via,
            reason: b.reason,
            payload: b.payload,
        })
        .await
        .map_err(|e| match e {
            DecideError::NotFound => ApiError::NOT_FOUND,
            DecideError::Already(_) => ApiError::Conflict(e.to_string()),
            DecideError::Invalid(why) => ApiError::Body(BodyError::BadField(why)),
            DecideError::Store(e) => e.into(),
        })?;
    Ok(json(StatusCode::OK, &ApprovalView::new(&decided)))
}

/// An admin request that records a person's act: where it came from, `api` (the admin bearer)
/// or `console` (a session, with its CSRF token).
fn person_via(inbox: &Inbox, snap: &Snapshot, req: &Req) -> Result<&'static str, ApiError> {
    require_admin(inbox, snap, req)?;
    Ok(if bearer(req).is_some_and(|t| snap.config.is_admin(t)) {
        "api"
    } else {
        "console"
    })
}

/// `POST /admin/messages/{id}/cancel`: a person cancels a message's turn.
async fn cancel_turn(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &mut Req,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let via = person_via(inbox, snap, req)?;
    let bytes = body(req, snap.config.server.max_body_bytes).await?;
    let b = crate::wire::CancelBody::parse(&bytes)?;
    match inbox.cancel_turn(id, &b.by, via).await? {
        Some(turn) => Ok(json(StatusCode::OK, &turn)),
        None => Err(ApiError::Conflict(format!(
            "{id} has no turn to cancel: it ended already, or the message went to a mailbox"
        ))),
    }
}

async fn admin_reload(
    door: &Door,
    snap: &Arc<Snapshot>,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    require_admin(door.inbox(), snap, req)?;
    let reloader = door.reloader.as_ref().ok_or_else(|| {
        ApiError::Conflict("this inbox was not started from a config file".into())
    })?;
    let allow_empty = flag(req, "allow_empty")?;
    let (status, config_hash) = match reloader.reload("admin request", allow_empty).await {
        Ok(crate::reload::Outcome::Swapped(hash)) => ("reloaded", hash),
        Ok(crate::reload::Outcome::Unchanged) => ("unchanged", snap.hash.clone()),
        Err(e) => return Err(ApiError::ReloadFailed(e.to_string())),
    };
    Ok(json(
        StatusCode::OK,
        &Reloaded {
            status: status.into(),
            config_hash,
        },
    ))
}

async fn status(door: &Door, snap: &Arc<Snapshot>, req: &Req) -> Result<Response<Body>, ApiError> {
    require_admin(door.inbox(), snap, req)?;
    let reloads = door.reloader.as_ref().map(|r| {
        let s = r.status();
        (
            s.config_hash,
            Reloads {
                loaded_at: s.loaded_at,
                last_reload_error: s.last_reload_error,
                reloads_ok: s.reloads_ok,
                reloads_failed: s.reloads_failed,
                checks: s.checks,
            },
        )
    });
    Ok(json(
        StatusCode::OK,
        &door.inbox().status(snap, reloads).await?,
    ))
}

/// `GET /metrics` (the admin bearer): Prometheus text, with the queue and running gauges read now.
fn metrics(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    require_admin(inbox, snap, req)?;
    let m = crate::metrics::get();
    // Gauges of routes that went quiet are set to 0 rather than left at their last value.
    m.queued.clear();
    m.running.clear();
    for r in snap.config.routes.values().filter(|r| r.agent().is_some()) {
        let route = crate::metrics::Route {
            route: r.name.clone(),
        };
        m.queued.get_or_create(&route).set(0);
        m.running.get_or_create(&route).set(0);
    }
    let work = inbox.work();
    for (route, n) in work.queued {
        m.queued
            .get_or_create(&crate::metrics::Route { route })
            .set(n as i64);
    }
    for (route, n) in work.running {
        m.running
            .get_or_create(&crate::metrics::Route { route })
            .set(n as i64);
    }
    let mut resp = Response::new(Body::full(m.encode()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// `GET /readyz`: 200 once the config is loaded, recovery has run and the store answers and
/// writes; 503 before, while draining, or when the store does not answer or cannot write (until
/// a probe write succeeds again).
async fn ready(inbox: &Arc<Inbox>) -> Result<Response<Body>, ApiError> {
    let (status, why) = match inbox.readiness().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    };
    Ok(json(status, &Health { status: why.into() }))
}
