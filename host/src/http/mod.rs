//! The HTTP front door: the path table (written once), the one error-to-answer mapping, request
//! extractors, and thin handlers that call the `inbox` use cases.
//!
//! Nothing here runs an agent or touches the database directly: handlers read a request, call a
//! use case, and write its typed answer (`wire`).

mod a2a;
mod body;
mod console_pages;
mod error;
mod event_stream;
mod extract;
mod handlers;
mod mcp;
mod pairing;
pub use agent_inbox_core::query;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

pub use self::body::Body;
pub use self::error::ApiError;
use crate::inbox::{Inbox, InboxError};
use crate::limiter::{self, AuthLimiter, Credential};
use crate::reload::Reloader;
use crate::store::StoreError;

/// The front door's own state beside the use cases: the auth-failure limiter and the reload
/// trigger, which the wiring hands it; the use cases know neither.
pub struct Door {
    inbox: Arc<Inbox>,
    limiter: AuthLimiter,
    reloader: Option<Arc<Reloader>>,
    /// Pairing's file changes, when the config came from a file.
    pairing: Option<crate::pairing::Pairing>,
    /// The agent card's validators: its ETag and when this host first served those bytes.
    card_seen: a2a::CardSeen,
}

impl Door {
    /// The door to `inbox`; `reloader` when the config came from a file.
    pub fn new(inbox: Arc<Inbox>, reloader: Option<Arc<Reloader>>) -> Self {
        Door {
            inbox,
            limiter: AuthLimiter::default(),
            pairing: reloader.clone().map(crate::pairing::Pairing::new),
            reloader,
            card_seen: a2a::CardSeen::default(),
        }
    }

    /// The use cases behind the door.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }
}

/// Every endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Message,
    MessageFrom,
    Send,
    AgentMe,
    AgentReply,
    Mcp,
    PeerInvite,
    PeerJoin,
    Peers,
    PeerRemove,
    PairJoin,
    PairConfirm,
    PairCancel,
    Messages,
    MessageById,
    AdminSend,
    AdminOutbox,
    CancelTurn,
    OutboxRetry,
    AdminReload,
    Approvals,
    ApprovalById,
    Approve,
    Reject,
    Status,
    Health,
    OpenApi,
    AgentCard,
    A2a,
    Metrics,
    Ready,
    Events,
    Console,
    ConsoleJs,
    ConsoleCss,
    ConsoleLogin,
    ConsoleLogout,
}

/// One path segment of a pattern: literal, or a parameter.
#[derive(Debug, Clone, Copy)]
enum Seg {
    Lit(&'static str),
    Param,
}

use Seg::{Lit, Param};

/// The path table: pattern, method, endpoint. A path that matches with another method gets 405
/// with the methods it does take.
const PATHS: &[(&[Seg], Method, Endpoint)] = &[
    (&[Lit("message")], Method::POST, Endpoint::Message),
    (
        &[Lit("message"), Param],
        Method::POST,
        Endpoint::MessageFrom,
    ),
    (&[Lit("send")], Method::POST, Endpoint::Send),
    (&[Lit("agent"), Lit("me")], Method::GET, Endpoint::AgentMe),
    (
        &[Lit("agent"), Lit("messages"), Param, Lit("reply")],
        Method::POST,
        Endpoint::AgentReply,
    ),
    (&[Lit("mcp")], Method::POST, Endpoint::Mcp),
    (
        &[Lit("admin"), Lit("peers"), Lit("invite")],
        Method::POST,
        Endpoint::PeerInvite,
    ),
    (
        &[Lit("admin"), Lit("peers"), Lit("join")],
        Method::POST,
        Endpoint::PeerJoin,
    ),
    (&[Lit("admin"), Lit("peers")], Method::GET, Endpoint::Peers),
    (
        &[Lit("admin"), Lit("peers"), Param, Lit("remove")],
        Method::POST,
        Endpoint::PeerRemove,
    ),
    (
        &[Lit("pair"), Lit("join")],
        Method::POST,
        Endpoint::PairJoin,
    ),
    (
        &[Lit("pair"), Lit("confirm")],
        Method::POST,
        Endpoint::PairConfirm,
    ),
    (
        &[Lit("pair"), Lit("cancel")],
        Method::POST,
        Endpoint::PairCancel,
    ),
    (&[Lit("messages")], Method::GET, Endpoint::Messages),
    (
        &[Lit("messages"), Param],
        Method::GET,
        Endpoint::MessageById,
    ),
    (
        &[Lit("admin"), Lit("send")],
        Method::POST,
        Endpoint::AdminSend,
    ),
    (
        &[Lit("admin"), Lit("outbox")],
        Method::GET,
        Endpoint::AdminOutbox,
    ),
    (
        &[Lit("admin"), Lit("outbox"), Param, Lit("retry")],
        Method::POST,
        Endpoint::OutboxRetry,
    ),
    (
        &[Lit("admin"), Lit("reload")],
        Method::POST,
        Endpoint::AdminReload,
    ),
    (
        &[Lit("admin"), Lit("messages"), Param, Lit("cancel")],
        Method::POST,
        Endpoint::CancelTurn,
    ),
    (
        &[Lit("admin"), Lit("approvals")],
        Method::GET,
        Endpoint::Approvals,
    ),
    (
        &[Lit("admin"), Lit("approvals"), Param],
        Method::GET,
        Endpoint::ApprovalById,
    ),
    (
        &[Lit("admin"), Lit("approvals"), Param, Lit("approve")],
        Method::POST,
        Endpoint::Approve,
    ),
    (
        &[Lit("admin"), Lit("approvals"), Param, Lit("reject")],
        Method::POST,
        Endpoint::Reject,
    ),
    (&[Lit("status")], Method::GET, Endpoint::Status),
    (&[Lit("healthz")], Method::GET, Endpoint::Health),
    (&[Lit("openapi.json")], Method::GET, Endpoint::OpenApi),
    (
        &[Lit(".well-known"), Lit("agent-card.json")],
        Method::GET,
        Endpoint::AgentCard,
    ),
    (&[Lit("a2a")], Method::POST, Endpoint::A2a),
    (&[Lit("metrics")], Method::GET, Endpoint::Metrics),
    (&[Lit("readyz")], Method::GET, Endpoint::Ready),
    (&[Lit("events")], Method::GET, Endpoint::Events),
    (&[Lit("console")], Method::GET, Endpoint::Console),
    (
        &[Lit("console"), Lit("app.js")],
        Method::GET,
        Endpoint::ConsoleJs,
    ),
    (
        &[Lit("console"), Lit("style.css")],
        Method::GET,
        Endpoint::ConsoleCss,
    ),
    (
        &[Lit("console"), Lit("login")],
        Method::POST,
        Endpoint::ConsoleLogin,
    ),
    (
        &[Lit("console"), Lit("logout")],
        Method::POST,
        Endpoint::ConsoleLogout,
    ),
];

/// The API contract (`openapi.yaml`), as JSON: converted by `build.rs`.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// Every path and method the server answers, in OpenAPI's form (`/message/{}` with the
/// parameter unnamed): the contract test compares this with `openapi.yaml`.
pub fn routes() -> Vec<(String, &'static str)> {
    PATHS
        .iter()
        .map(|(pattern, method, _)| {
            let path: String = pattern
                .iter()
                .map(|s| match s {
                    Lit(l) => format!("/{l}"),
                    Param => "/{}".to_owned(),
                })
                .collect();
            (
                path,
                if *method == Method::POST {
                    "post"
                } else {
                    "get"
                },
            )
        })
        .collect()
}

/// The endpoint of a path and method, with the path's parameters.
fn resolve<'p>(path: &'p str, method: &Method) -> Result<(Endpoint, Vec<&'p str>), ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut other_method = None;
    for (pattern, m, endpoint) in PATHS {
        if pattern.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let matches = pattern.iter().zip(&segments).all(|(p, s)| match p {
            Lit(l) => l == s,
            Param => {
                params.push(*s);
                true
            }
        });
        if !matches {
            continue;
        }
        if m == method {
            return Ok((*endpoint, params));
        }
        other_method = Some(if *m == Method::POST { "POST" } else { "GET" });
    }
    Err(other_method.map_or(ApiError::NOT_FOUND, ApiError::MethodNotAllowed))
}

/// The ack time of a `/message` request, or its refusal's code.
fn count_message(answer: &Result<Response<Body>, ApiError>, started: Instant) {
    let m = crate::metrics::get();
    match answer {
        Ok(_) => m.ack_seconds.observe(started.elapsed().as_secs_f64()),
        Err(e) => {
            m.refused
                .get_or_create(&crate::metrics::Code {
                    code: e.code().to_owned(),
                })
                .inc();
        }
    }
}

/// A JSON answer.
fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    let Ok(bytes) = serde_json::to_vec(body) else {
        return error::bare(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let mut resp = Response::new(Body::full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Which kind of credential a request presents, for the auth-failure limiter; `None` where no
/// credential is checked. Decided from the request's shape before any credential is looked at, so
/// each kind is counted (and locked out) apart from the others.
fn credential(endpoint: Endpoint, req: &extract::Req) -> Option<Credential> {
    let bearer = extract::bearer(req);
    Some(match endpoint {
        Endpoint::Health
        | Endpoint::OpenApi
        | Endpoint::AgentCard
        | Endpoint::Ready
        | Endpoint::Console
        | Endpoint::ConsoleJs
        | Endpoint::ConsoleCss
        | Endpoint::ConsoleLogout => return None,
        Endpoint::Message | Endpoint::MessageFrom => Credential::Peer,
        Endpoint::AgentMe | Endpoint::AgentReply | Endpoint::Mcp => Credential::Agent,
        Endpoint::ConsoleLogin => Credential::Console,
        Endpoint::A2a => Credential::A2a,
        Endpoint::PairJoin | Endpoint::PairConfirm | Endpoint::PairCancel => Credential::Pairing,
        // Reply tokens have their own prefix; any other bearer on /send is a local agent's.
        Endpoint::Send => match bearer {
            Some(t) if !t.starts_with(b"rt_") => Credential::Agent,
            _ => Credential::Token,
        },
        _ if extract::header(req, "x-shared-secret").is_some() => Credential::Peer,
        _ if bearer.is_some() => Credential::Admin,
        _ if extract::header(req, "cookie").is_some() => Credential::Console,
        _ => Credential::Peer,
    })
}

/// The one entry point hyper calls; never fails.
pub async fn handle(
    door: Arc<Door>,
    remote: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let inbox = &door.inbox;
    let snap = inbox.snapshot();
    let mut req = extract::Req::new(req);
    let path = req.parts.uri.path().to_owned();
    let answer = match resolve(&path, &req.parts.method) {
        Ok((endpoint, params)) => {
            let server = &snap.config.server;
            let policy = limiter::Policy {
                max: server.auth_failure_limit,
                window: server.auth_failure_window,
            };
            let client = limiter::client_ip(
                remote,
                extract::header(&req, "x-forwarded-for"),
                &server.trusted_proxies,
            );
            let kind = credential(endpoint, &req);
            match kind.map(|k| door.limiter.check(policy, client, k, Instant::now())) {
                // Limited: the credentials are not even looked at.
                Some(Err(wait)) => Err(ApiError::AuthLimited(wait)),
                _ => {
                    let started = Instant::now();
                    let answer = handlers::call(endpoint, &params, &door, &snap, &mut req).await;
                    if matches!(endpoint, Endpoint::Message | Endpoint::MessageFrom) {
                        count_message(&answer, started);
                    }
                    if let (Some(k), Err(e)) = (kind, &answer)
                        && e.is_auth_failure()
                        && door.limiter.failed(policy, client, k, Instant::now())
                    {
                        tracing::warn!(
                            client = %client,
                            credential = k.name(),
                            failures = policy.max,
                            window_secs = policy.window.as_secs(),
                            "auth: too many failed credentials from this address; refused until the window ends"
                        );
                    }
                    answer
                }
            }
        }
        Err(e) => Err(e),
    };
    if let Err(ApiError::Inbox(InboxError::Store(StoreError::Unavailable(why)))) = &answer {
        inbox.writes_failed(why);
    }
    // A refusal may come before the body was read (a wrong secret, a declared length over the
    // limit) or halfway through it: read the rest, so the client gets to read the refusal.
    req.drain().await;
    let is_a2a = path.trim_matches('/') == "a2a";
    // Bearer doors whose clients (A2A, MCP) read the challenge to learn how to authenticate.
    let challenges = is_a2a || path.trim_matches('/') == "mcp";
    let mut resp = match answer {
        // A2A clients read errors as JSON-RPC objects, this one too.
        Err(ApiError::AuthLimited(wait)) if is_a2a => a2a::auth_limited(wait),
        answer => answer.unwrap_or_else(ApiError::into_response),
    };
    if resp.status() == StatusCode::UNAUTHORIZED && challenges {
        a2a::challenge(&mut resp);
    }
    resp.headers_mut()
        .insert("x-config-hash", snap.hash_header.clone());
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_once() {
        let ok = |p: &str, m: Method| resolve(p, &m).map(|(e, params)| (e, params.len()));
        assert_eq!(
            ok("/message", Method::POST).ok(),
            Some((Endpoint::Message, 0))
        );
        assert_eq!(
            ok("/admin/outbox/r1/retry", Method::POST).ok(),
            Some((Endpoint::OutboxRetry, 1))
        );
        assert_eq!(
            ok("/messages/x/", Method::GET).ok(),
            Some((Endpoint::MessageById, 1))
        );
        let code = |p: &str, m: Method| resolve(p, &m).err().map(|e| (e.code(), e.to_string()));
        assert_eq!(
            code("/message", Method::GET),
            Some((
                "method_not_allowed",
                "method not allowed; this path takes POST".into()
            ))
        );
        assert_eq!(
            code("/status", Method::DELETE).map(|c| c.0),
            Some("method_not_allowed")
        );
        assert_eq!(code("/nope", Method::GET).map(|c| c.0), Some("not_found"));
        assert_eq!(
            code("/messages/a/b", Method::GET).map(|c| c.0),
            Some("not_found")
        );
    }
}
