//! HTTP handlers: `/message`, `/send`, reading endpoints, admin send, health.
//!
//! Handlers return `Result<Response, ApiError>`; [`handle`] maps every error to one JSON shape
//! (`{"error": {"code", "message"}}`) in one place, logging internal detail instead of sending it.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::Inbox;
use crate::config::RouteKind;
use crate::router::NoRoute;
use crate::snapshot::{RoutePlugin, Snapshot};
use crate::store::{
    Dedup, Delivery, Inserted, Message, MessageFilter, Reply, StoreError, Turn, TurnState, now_ms,
};
use crate::turns::{QueueFull, hash_token};

/// The response body type.
pub type Body = Full<Bytes>;

/// Longest id, thread id or reference accepted from a client.
const MAX_ID_LEN: usize = 200;

/// Everything a request can fail with; each maps to a status and a public code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    BadJson(String),
    /// The body is JSON but not an object.
    #[error("the body must be a JSON object")]
    NotObject,
    /// No `type`.
    #[error("the body has no \"type\" (a string such as \"TASK\")")]
    MissingType,
    /// A field has the wrong shape.
    #[error("{0}")]
    BadField(String),
    /// No route takes this type from this sender.
    #[error(transparent)]
    UnknownType(#[from] NoRoute),
    /// A reply type the route does not allow.
    #[error("reply type {got:?} is not allowed here; valid types: {}", allowed.join(", "))]
    UnknownReplyType {
        /// What was sent.
        got: String,
        /// What is allowed.
        allowed: Vec<String>,
    },
    /// The thread has been relayed too often.
    #[error(
        "this thread has been relayed {hops} times (max_hops is {max}); refusing to continue a loop"
    )]
    LoopDetected {
        /// Hops the message carried.
        hops: u32,
        /// The limit.
        max: u32,
    },
    /// The body is over `max_body_bytes`.
    #[error("the body is over the {0}-byte limit")]
    BodyTooLarge(usize),
    /// Not JSON content.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// Wrong or missing credentials (never says which part).
    #[error("unauthorized")]
    Unauthorized,
    /// No such resource.
    #[error("not found")]
    NotFound,
    /// Known path, wrong method; carries the methods it allows.
    #[error("method not allowed; this path takes {0}")]
    MethodNotAllowed(&'static str),
    /// The request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// A route's plugin refused the message or reply.
    #[error("{reason}")]
    PluginRejected {
        /// The plugin's name.
        plugin: String,
        /// The 4xx status it chose.
        status: u16,
        /// Its reason, for the sender.
        reason: String,
    },
    /// A route's plugin failed (trap, deadline, memory cap, invalid answer).
    #[error("plugin {plugin} failed: {detail}")]
    PluginFailed {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        detail: String,
    },
    /// A reload was asked for and failed; the old config stays.
    #[error("reload failed; the previous config stays in force: {0}")]
    ReloadFailed(String),
    /// The server is shutting down.
    #[error("the inbox is shutting down; try again shortly")]
    ShuttingDown,
    /// The route's turn queue is full.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// Something failed on our side; details go to the log only.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.into())
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_)
            | ApiError::NotObject
            | ApiError::MissingType
            | ApiError::BadField(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownType(_)
            | ApiError::UnknownReplyType { .. }
            | ApiError::LoopDetected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PluginRejected { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
            }
            ApiError::PluginFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ReloadFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::QueueFull(_) | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) => "bad_json",
            ApiError::NotObject => "not_object",
            ApiError::MissingType => "missing_type",
            ApiError::BadField(_) => "bad_field",
            ApiError::UnknownType(_) | ApiError::UnknownReplyType { .. } => "unknown_type",
            ApiError::LoopDetected { .. } => "loop_detected",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PluginRejected { .. } => "plugin_rejected",
            ApiError::PluginFailed { .. } => "plugin_failed",
            ApiError::ReloadFailed(_) => "reload_failed",
            ApiError::QueueFull(_) => "queue_full",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
        }
    }

    fn into_response(self) -> Response<Body> {
        match &self {
            ApiError::Internal(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            ApiError::PluginFailed { plugin, detail } => {
                tracing::error!(plugin = %plugin, error = %detail, "plugin failed")
            }
            _ => {}
        }
        let mut extra = serde_json::Map::new();
        match &self {
            ApiError::UnknownType(e) => {
                extra.insert("allowed".into(), json!(e.allowed));
            }
            ApiError::UnknownReplyType { allowed, .. } => {
                extra.insert("allowed".into(), json!(allowed));
            }
            ApiError::PluginRejected { plugin, .. } | ApiError::PluginFailed { plugin, .. } => {
                extra.insert("plugin".into(), json!(plugin));
            }
            _ => {}
        }
        let mut err = json!({"code": self.code(), "message": self.to_string()});
        if let Some(obj) = err.as_object_mut() {
            obj.extend(extra);
        }
        let mut resp = json_response(self.status(), &json!({ "error": err }));
        match self {
            ApiError::QueueFull(_) | ApiError::ShuttingDown => {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            ApiError::MethodNotAllowed(allow) => {
                resp.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The one entry point hyper calls; never fails.
pub async fn handle(
    inbox: Arc<Inbox>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let snap = inbox.active.load_full();
    let mut resp = route(&inbox, &snap, req)
        .await
        .unwrap_or_else(ApiError::into_response);
    resp.headers_mut()
        .insert("x-config-hash", snap.hash_header.clone());
    Ok(resp)
}

async fn route(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (segments.as_slice(), method) {
        (["message"], Method::POST) => message(inbox, snap, req).await,
        (["send"], Method::POST) => send(inbox, snap, req).await,
        (["messages"], Method::GET) => list(inbox, snap, &req).await,
        (["messages", id], Method::GET) => show(inbox, snap, &req, id).await,
        (["admin", "send"], Method::POST) => admin_send(inbox, snap, req).await,
        (["admin", "outbox"], Method::GET) => outbox(inbox, snap, &req).await,
        (["admin", "outbox", id, "retry"], Method::POST) => {
            outbox_retry(inbox, snap, &req, id).await
        }
        (["admin", "reload"], Method::POST) => admin_reload(inbox, snap, &req).await,
        (["status"], Method::GET) => status(inbox, snap, &req).await,
        (["healthz"], Method::GET) => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        (
            ["message"]
            | ["send"]
            | ["admin", "send"]
            | ["admin", "outbox", _, "retry"]
            | ["admin", "reload"],
            _,
        ) => Err(ApiError::MethodNotAllowed("POST")),
        (["messages"] | ["messages", _] | ["admin", "outbox"] | ["status"] | ["healthz"], _) => {
            Err(ApiError::MethodNotAllowed("GET"))
        }
        _ => Err(ApiError::NotFound),
    }
}

/// Reads a body: checks the media type and the size (before and while reading).
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    // A declared length over the limit is refused before reading a byte.
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    // Chunked bodies are cut off as soon as they pass the limit.
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge(limit)),
        Err(e) => Err(ApiError::BadJson(format!("cannot read the body: {e}"))),
    }
}

/// Reads a JSON object body.
async fn read_json(
    req: Request<Incoming>,
    limit: usize,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = read_body(req, limit).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::NotObject),
        Err(e) => Err(ApiError::BadJson(e.to_string())),
    }
}

/// The body of `POST /message`, parsed without building a tree for the payload: it is kept as the
/// sender wrote it and stored as is. Unknown fields are ignored (inbox-to-inbox messages carry more).
#[derive(serde::Deserialize)]
struct Inbound<'a> {
    #[serde(rename = "type", default)]
    msg_type: Option<Value>,
    #[serde(default, borrow)]
    payload: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    thread_id: Option<Value>,
    #[serde(default)]
    in_reply_to: Option<Value>,
    #[serde(default)]
    hops: Option<Value>,
}

fn parse_inbound(bytes: &[u8]) -> Result<Inbound<'_>, ApiError> {
    // serde would read a struct from a JSON array too; only an object is a message.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::NotObject),
            Err(e) => Err(ApiError::BadJson(e.to_string())),
        };
    }
    serde_json::from_slice::<Inbound<'_>>(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::BadField(e.to_string()),
        _ => ApiError::BadJson(e.to_string()),
    })
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a [u8]> {
    req.headers().get(name).map(HeaderValue::as_bytes)
}

fn bearer(req: &Request<Incoming>) -> Option<&[u8]> {
    let v = header(req, "authorization")?;
    let rest = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    Some(rest.trim_ascii())
}

/// The `type` field: present, a non-empty string.
fn type_field(body: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    type_value(body.get("type"))
}

fn type_value(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Err(ApiError::MissingType),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::MissingType),
        Some(_) => Err(ApiError::BadField("\"type\" must be a string".into())),
    }
}

fn string_field(
    body: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    string_value(body.get(key), key)
}

fn string_value(v: Option<&Value>, key: &str) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_ID_LEN && !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::BadField(format!(
            "\"{key}\" must be a non-empty string of at most {MAX_ID_LEN} bytes"
        ))),
    }
}

fn payload_field(body: &serde_json::Map<String, Value>) -> String {
    match body.get("payload") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v) => v.to_string(),
    }
}

async fn message(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let config = &snap.config;
    if inbox.turns.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let sender = header(&req, "x-shared-secret")
        .and_then(|s| config.peer_by_secret(s))
        .ok_or(ApiError::Unauthorized)?
        .name
        .clone();
    let idem_key = match header(&req, "idempotency-key") {
        None => None,
        Some(k) if !k.is_empty() && k.len() <= MAX_ID_LEN => {
            Some(String::from_utf8_lossy(k).into_owned())
        }
        Some(_) => {
            return Err(ApiError::BadField(format!(
                "Idempotency-Key must be 1 to {MAX_ID_LEN} bytes"
            )));
        }
    };
    let bytes = read_body(req, config.server.max_body_bytes).await?;
    let body = parse_inbound(&bytes)?;
    let msg_type = type_value(body.msg_type.as_ref())?;
    let hops = match &body.hops {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ApiError::BadField("\"hops\" must be a non-negative integer".into()))?,
    };
    let sender_ref = string_value(body.id.as_ref(), "id")?;
    let thread_id = string_value(body.thread_id.as_ref(), "thread_id")?;
    let in_reply_to = string_value(body.in_reply_to.as_ref(), "in_reply_to")?;
    let payload = match body.payload.map(|p| p.get()) {
        None | Some("null") => "{}".to_owned(),
        Some(raw) => raw.to_owned(),
    };
    if hops >= config.server.max_hops {
        tracing::warn!(sender = %sender, msg_type = %msg_type, hops, "loop detected");
        return Err(ApiError::LoopDetected {
            hops,
            max: config.server.max_hops,
        });
    }
    let routed = snap.router.route(&sender, &msg_type)?;
    let id = crate::new_id();
    let thread_id = thread_id.unwrap_or_else(|| id.clone());
    // The inbound hook: a route's plugin may accept, rewrite, move or refuse the message.
    let (route_name, msg_type, payload) = match snap.plugins.get(routed) {
        None => (routed, msg_type, payload),
        Some(p) => {
            let m = crate::plugins::Message {
                id: id.clone(),
                route: routed.to_owned(),
                sender: sender.clone(),
                msg_type,
                payload,
                thread_id: thread_id.clone(),
                in_reply_to: in_reply_to.clone(),
                hops,
            };
            check_message(snap, p, &m).await?
        }
    };
    let route = &config.routes[route_name];
    let message = Message {
        thread_id,
        id,
        sender,
        route: route_name.to_owned(),
        msg_type,
        payload,
        in_reply_to,
        hops,
        sender_ref,
        received_at: now_ms(),
        mailbox: matches!(route.kind, RouteKind::Mailbox),
    };
    let (id, thread_id) = (message.id.clone(), message.thread_id.clone());
    tracing::info!(
        message_id = %id, sender = %message.sender, route = %route_name, msg_type = %message.msg_type,
        thread = %thread_id, hops, "message received"
    );
    let dedup = idem_key.or(message.sender_ref.clone()).map(|key| Dedup {
        key,
        since: message.received_at - config.server.dedup_window.as_millis() as i64,
    });
    let inserted = match route.agent() {
        None => inbox.store.insert_message(message, false, dedup).await?,
        Some(agent) => {
            let slot = inbox.turns.reserve(route_name, agent.max_queued)?;
            let store = inbox.store.clone();
            // Detached, so a client that hangs up cannot leave a committed message out of the queue.
            tokio::spawn(async move {
                let id = message.id.clone();
                let inserted = store.insert_message(message, true, dedup).await?;
                if inserted == Inserted::New {
                    slot.fill(id);
                }
                Ok::<_, StoreError>(inserted)
            })
            .await
            .map_err(|e| anyhow::anyhow!("write task failed: {e}"))??
        }
    };
    if let Inserted::Duplicate(original) = inserted {
        tracing::info!(message_id = %id, original = %original, "duplicate message; no new turn");
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "duplicate", "id": original}),
        ));
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"status": "received", "id": id, "thread_id": thread_id}),
    ))
}

async fn send(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let token = bearer(&req).ok_or(ApiError::Unauthorized)?;
    let token = std::str::from_utf8(token).map_err(|_| ApiError::Unauthorized)?;
    let grant = inbox
        .store
        .token(hash_token(token))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if grant.expires_at.is_some_and(|t| t < now_ms()) {
        return Err(ApiError::Unauthorized);
    }
    let body = read_json(req, snap.config.server.max_body_bytes).await?;
    let msg_type = type_field(&body)?;
    let Some(route) = snap.config.routes.get(&grant.route) else {
        return Err(ApiError::UnknownReplyType {
            got: msg_type,
            allowed: vec![],
        });
    };
    if !route.reply_types.contains(&msg_type) {
        return Err(ApiError::UnknownReplyType {
            got: msg_type,
            allowed: route.reply_types.clone(),
        });
    }
    let mut payload = payload_field(&body);
    let mut msg_type = msg_type;
    let mut to = route.reply_to.clone();
    // The reply hook: a route's plugin may accept, rewrite, narrow the peers of, or refuse a reply.
    if let Some(p) = snap.plugins.get(&grant.route) {
        let answered = inbox
            .store
            .message(grant.message_id.clone())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the message of a valid token is gone"))?;
        let reply = crate::plugins::Reply { msg_type, payload };
        (msg_type, payload, to) = check_reply(p, route, &plugin_message(&answered), reply).await?;
    }
    let reply = Reply {
        id: crate::new_id(),
        in_reply_to: Some(grant.message_id.clone()),
        route: Some(grant.route.clone()),
        msg_type,
        payload,
        thread_id: grant.thread_id,
        hops: grant.hops + 1,
        created_at: now_ms(),
    };
    let id = reply.id.clone();
    tracing::info!(
        reply = %id, message_id = %grant.message_id, route = %grant.route, msg_type = %reply.msg_type,
        peers = ?to, "reply queued"
    );
    inbox.store.insert_reply(reply, to).await?;
    inbox.relay.wake();
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"status": "queued", "id": id}),
    ))
}

/// The plugin's view of a stored message.
pub(crate) fn plugin_message(m: &Message) -> crate::plugins::Message {
    crate::plugins::Message {
        id: m.id.clone(),
        route: m.route.clone(),
        sender: m.sender.clone(),
        msg_type: m.msg_type.clone(),
        payload: m.payload.clone(),
        thread_id: m.thread_id.clone(),
        in_reply_to: m.in_reply_to.clone(),
        hops: m.hops,
    }
}

fn plugin_failed(p: &RoutePlugin, detail: impl std::fmt::Display) -> ApiError {
    ApiError::PluginFailed {
        plugin: p.name().to_owned(),
        detail: detail.to_string(),
    }
}

/// Whether `route` takes `msg_type` from `sender` (named, or by its `"*"`).
fn route_accepts(route: &crate::config::Route, sender: &str, msg_type: &str) -> bool {
    route.from.iter().any(|f| f == sender)
        && route
            .types
            .iter()
            .any(|t| t == msg_type || t == crate::config::WILDCARD)
}

/// Runs a route's check-message hook; returns the route, type and payload to use.
async fn check_message<'s>(
    snap: &'s Snapshot,
    p: &RoutePlugin,
    m: &crate::plugins::Message,
) -> Result<(&'s str, String, String), ApiError> {
    use crate::plugins::MessageVerdict as V;
    let verdict = p
        .plugin
        .check_message(m, &p.spec.config_json)
        .await
        .map_err(|e| plugin_failed(p, e))?;
    let (route, rewrite) = match verdict {
        V::Accept => {
            return Ok((
                route_name(snap, &m.route),
                m.msg_type.clone(),
                m.payload.clone(),
            ));
        }
        V::Reject(r) => {
            tracing::info!(plugin = %p.name(), message_id = %m.id, status = r.status, reason = %r.reason, "plugin rejected a message");
            return Err(ApiError::PluginRejected {
                plugin: p.name().to_owned(),
                status: r.status,
                reason: r.reason,
            });
        }
        V::Rewrite(rw) => (m.route.clone(), Some(rw)),
        V::RouteTo { route, rewrite } => (route, rewrite),
    };
    let (msg_type, payload) = match rewrite {
        Some(rw) => (rw.msg_type, rw.payload),
        None => (m.msg_type.clone(), m.payload.clone()),
    };
    // The target must take this sender and the resulting type, like any message it gets.
    let Some((name, target)) = snap.config.routes.get_key_value(&route) else {
        return Err(plugin_failed(
            p,
            format!("it routed to {route:?}, which is not a route"),
        ));
    };
    if !route_accepts(target, &m.sender, &msg_type) {
        return Err(plugin_failed(
            p,
            format!(
                "route {route} does not take type {msg_type:?} from {}",
                m.sender
            ),
        ));
    }
    if route != m.route {
        tracing::info!(plugin = %p.name(), message_id = %m.id, from = %m.route, to = %route, "plugin routed a message");
    }
    Ok((name.as_str(), msg_type, payload))
}

fn route_name<'s>(snap: &'s Snapshot, name: &str) -> &'s str {
    snap.config
        .routes
        .get_key_value(name)
        .map(|(k, _)| k.as_str())
        .unwrap_or_default()
}

/// Runs a route's check-reply hook; returns the type, payload and peers to relay to.
async fn check_reply(
    p: &RoutePlugin,
    route: &crate::config::Route,
    answered: &crate::plugins::Message,
    reply: crate::plugins::Reply,
) -> Result<(String, String, Vec<String>), ApiError> {
    use crate::plugins::ReplyVerdict as V;
    let verdict = p
        .plugin
        .check_reply(answered, &reply, &route.reply_to, &p.spec.config_json)
        .await
        .map_err(|e| plugin_failed(p, e))?;
    match verdict {
        V::Accept => Ok((reply.msg_type, reply.payload, route.reply_to.clone())),
        V::Reject(r) => {
            tracing::info!(plugin = %p.name(), message_id = %answered.id, status = r.status, reason = %r.reason, "plugin rejected a reply");
            Err(ApiError::PluginRejected {
                plugin: p.name().to_owned(),
                status: r.status,
                reason: r.reason,
            })
        }
        V::Relay { rewrite, to } => {
            let (msg_type, payload) = match rewrite {
                Some(rw) => (rw.msg_type, rw.payload),
                None => (reply.msg_type, reply.payload),
            };
            if !route.reply_types.contains(&msg_type) {
                return Err(plugin_failed(
                    p,
                    format!(
                        "it rewrote the reply to type {msg_type:?}, which the route does not allow"
                    ),
                ));
            }
            let to = to.unwrap_or_else(|| route.reply_to.clone());
            if let Some(bad) = to.iter().find(|peer| !route.reply_to.contains(peer)) {
                return Err(plugin_failed(
                    p,
                    format!("it chose peer {bad:?}, which is not in reply_to"),
                ));
            }
            Ok((msg_type, payload, to))
        }
    }
}

/// Who is reading: the admin sees everything, a peer sees its own messages and replies to it.
enum Reader {
    Admin,
    Peer(String),
}

fn reader(snap: &Snapshot, req: &Request<Incoming>) -> Result<Reader, ApiError> {
    if let Some(token) = bearer(req)
        && snap.config.is_admin(token)
    {
        return Ok(Reader::Admin);
    }
    if let Some(peer) = header(req, "x-shared-secret").and_then(|s| snap.config.peer_by_secret(s)) {
        return Ok(Reader::Peer(peer.name.clone()));
    }
    Err(ApiError::Unauthorized)
}

fn message_json(m: &Message, turn_state: Option<TurnState>) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "payload".into(),
            serde_json::from_str(&m.payload).unwrap_or(Value::Null),
        );
        if let Some(s) = turn_state {
            obj.insert("turn_state".into(), json!(s));
        }
    }
    v
}

fn reply_json(r: &Reply, deliveries: Option<&[Delivery]>) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "payload".into(),
            serde_json::from_str(&r.payload).unwrap_or(Value::Null),
        );
        if let Some(d) = deliveries {
            obj.insert("deliveries".into(), json!(d));
        }
    }
    v
}

fn turn_json(t: &Turn) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    let q = req.uri().query()?;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key && !v.is_empty()).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` and `+` in a query value.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn list(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let who = reader(snap, req)?;
    let limit = query_param(req, "limit")
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(50)
        .clamp(1, 500);
    let thread = query_param(req, "thread");
    let mut filter = MessageFilter {
        route: query_param(req, "route"),
        thread: thread.clone(),
        sender: None,
        limit,
    };
    let mut out = serde_json::Map::new();
    if let Reader::Peer(peer) = &who {
        filter.sender = Some(peer.clone());
        let replies = inbox
            .store
            .replies_for_peer(peer.clone(), thread, limit)
            .await?;
        out.insert(
            "replies".into(),
            Value::Array(replies.iter().map(|r| reply_json(r, None)).collect()),
        );
    }
    let messages = inbox.store.list_messages(filter).await?;
    out.insert(
        "messages".into(),
        Value::Array(messages.iter().map(|(m, s)| message_json(m, *s)).collect()),
    );
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}

async fn show(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let who = reader(snap, req)?;
    let id = percent_decode(id);
    if let Some(m) = inbox.store.message(id.clone()).await? {
        if let Reader::Peer(p) = &who
            && *p != m.sender
        {
            return Err(ApiError::NotFound);
        }
        let turn = inbox.store.turn(id.clone()).await?;
        let replies = inbox.store.replies_to(id).await?;
        let replies: Vec<Value> = replies
            .iter()
            .filter(|(_, d)| match &who {
                Reader::Admin => true,
                Reader::Peer(p) => d.iter().any(|d| d.peer == *p),
            })
            .map(|(r, d)| reply_json(r, Some(d)))
            .collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "message": message_json(&m, turn.as_ref().map(|t| t.state)),
                "turn": turn.as_ref().map(turn_json),
                "replies": replies,
            }),
        ));
    }
    if let Some((r, d)) = inbox.store.reply(id).await? {
        if let Reader::Peer(p) = &who
            && !d.iter().any(|d| d.peer == *p)
        {
            return Err(ApiError::NotFound);
        }
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "reply": reply_json(&r, Some(&d)) }),
        ));
    }
    Err(ApiError::NotFound)
}

async fn admin_send(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !matches!(reader(snap, &req)?, Reader::Admin) {
        return Err(ApiError::Unauthorized);
    }
    let body = read_json(req, snap.config.server.max_body_bytes).await?;
    let msg_type = type_field(&body)?;
    let to = string_field(&body, "to")?
        .ok_or_else(|| ApiError::BadField("\"to\" (a peer name) is required".into()))?;
    if !snap.config.peers.contains_key(&to) {
        return Err(ApiError::BadField(format!(
            "unknown peer {to:?}; known: {}",
            snap.config
                .peers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let id = crate::new_id();
    let reply = Reply {
        thread_id: string_field(&body, "thread_id")?.unwrap_or_else(|| id.clone()),
        in_reply_to: string_field(&body, "in_reply_to")?,
        id,
        route: None,
        msg_type,
        payload: payload_field(&body),
        hops: 0,
        created_at: now_ms(),
    };
    let (id, thread_id) = (reply.id.clone(), reply.thread_id.clone());
    tracing::info!(reply = %id, peer = %to, msg_type = %reply.msg_type, "operator message queued");
    inbox.store.insert_reply(reply, vec![to]).await?;
    inbox.relay.wake();
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"status": "queued", "id": id, "thread_id": thread_id}),
    ))
}

fn require_admin(snap: &Snapshot, req: &Request<Incoming>) -> Result<(), ApiError> {
    match reader(snap, req)? {
        Reader::Admin => Ok(()),
        Reader::Peer(_) => Err(ApiError::Unauthorized),
    }
}

async fn outbox(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_admin(snap, req)?;
    let dead_only = query_param(req, "dead").is_some_and(|v| v != "0" && v != "false");
    let limit = query_param(req, "limit")
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let rows = inbox.store.outbox(dead_only, limit).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|(r, d)| json!({"reply": reply_json(r, None), "delivery": d}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "outbox": items })))
}

async fn outbox_retry(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    require_admin(snap, req)?;
    let id = percent_decode(id);
    if inbox.store.reply(id.clone()).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let n = inbox.store.retry_dead(&id).await?;
    if n == 0 {
        return Err(ApiError::Conflict(format!(
            "reply {id} has no dead deliveries to retry"
        )));
    }
    tracing::info!(reply = %id, deliveries = n, "dead letters queued again");
    inbox.relay.wake();
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "requeued", "id": id, "deliveries": n}),
    ))
}

async fn admin_reload(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_admin(snap, req)?;
    let reloader = inbox.reloader.as_ref().ok_or_else(|| {
        ApiError::Conflict("this inbox was not started from a config file".into())
    })?;
    match reloader.reload("admin request").await {
        Ok(crate::reload::Outcome::Swapped(hash)) => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "reloaded", "config_hash": hash}),
        )),
        Ok(crate::reload::Outcome::Unchanged) => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "unchanged", "config_hash": snap.config.hash}),
        )),
        Err(e) => Err(ApiError::ReloadFailed(e)),
    }
}

async fn status(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_admin(snap, req)?;
    let mut v = match &inbox.reloader {
        Some(r) => serde_json::to_value(r.status()).unwrap_or(Value::Null),
        None => json!({"config_hash": snap.config.hash}),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        obj.insert("turns_running".into(), json!(inbox.turns.running()));
        obj.insert("turns_queued".into(), json!(inbox.turns.queued()));
        obj.insert("draining".into(), json!(inbox.turns.is_draining()));
    }
    Ok(json_response(StatusCode::OK, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_bodies_are_classified() {
        let ok = parse_inbound(br#" {"type": "A", "payload": {"x": [1, "y"]}, "extra": 5}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ok.payload.map(|p| p.get()),
            Some(r#"{"x": [1, "y"]}"#),
            "kept as sent"
        );
        let cases: &[(&[u8], &str)] = &[
            (b"[1]", "not_object"),
            (b"\"TASK\"", "not_object"),
            (b"[1", "bad_json"),
            (b"", "bad_json"),
            (b"{\"type\": ", "bad_json"),
            (br#"{"type": "A", "type": "B"}"#, "bad_field"),
        ];
        for (body, code) in cases {
            match parse_inbound(body) {
                Ok(_) => panic!("{:?} parsed", String::from_utf8_lossy(body)),
                Err(e) => assert_eq!(e.code(), *code, "{:?}: {e}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn percent_decoding() {
        for (input, want) in [
            ("abc", "abc"),
            ("a%20b", "a b"),
            ("a+b", "a b"),
            ("100%", "100%"),
            ("%zz", "%zz"),
        ] {
            assert_eq!(percent_decode(input), want);
        }
    }
}
