//! The A2A endpoints: the agent card, and JSON-RPC on `POST /a2a` (answers in JSON, or as
//! Server-Sent Events for the streaming methods). A JSON-RPC error travels in a 200 answer, as
//! the binding asks; only a failed authentication is a 401, and an oversized body a 413.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use tokio::sync::mpsc;

use super::extract::{Req, bearer, body, header};
use super::{ApiError, Body, json};
use crate::a2a::{self, A2aError, Caller, Version};
use crate::inbox::{A2aAnswer as Answer, Inbox};
use crate::snapshot::Snapshot;

/// How often an idle stream sends an SSE comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /.well-known/agent-card.json`: the card of the config in force; 404 while `[a2a]` is off.
/// It carries an `ETag` (a hash of its bytes) and `Last-Modified` (when this host first served
/// those bytes), and answers `304` to a client that already holds it (`If-None-Match`, else
/// `If-Modified-Since`), so a client can re-read it cheaply and notice a reload.
pub(super) fn card(
    door: &super::Door,
    snap: &Arc<Snapshot>,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    if snap.config.a2a.is_none() {
        return Err(ApiError::NOT_FOUND);
    }
    let base = door.inbox().base_url(snap);
    let card = a2a::card::card(&snap.config, &base);
    let Ok(bytes) = serde_json::to_vec(&card) else {
        return Ok(super::error::bare(StatusCode::INTERNAL_SERVER_ERROR));
    };
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&bytes)[..16]));
    let modified = door.card_seen.modified(&etag);
    let text = |name| header(req, name).and_then(|v| std::str::from_utf8(v).ok());
    let fresh = match text("if-none-match") {
        Some(tags) => etag_matches(tags, &etag),
        None => text("if-modified-since")
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .is_some_and(|since| modified <= since),
    };
    let mut resp = if fresh {
        let mut r = Response::new(Body::full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::full(Bytes::from(bytes)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = resp.headers_mut();
    // The card changes with a reload; a client may keep it a minute.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(http::header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        h.insert(http::header::LAST_MODIFIED, v);
    }
    Ok(resp)
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, as RFC 9110 asks for GET).
fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// The card's bytes as this host last served them: their ETag, and since when.
#[derive(Default)]
pub(super) struct CardSeen(std::sync::Mutex<Option<(String, SystemTime)>>);

impl CardSeen {
    /// When the card with `etag` was first served here; now (to the second) if it changed.
    fn modified(&self, etag: &str) -> SystemTime {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*seen {
            Some((tag, at)) if tag == etag => *at,
            _ => {
                // HTTP dates have whole seconds; a stored fraction would make every
                // If-Modified-Since look older than the card.
                let secs = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                *seen = Some((etag.to_owned(), at));
                at
            }
        }
    }
}

/// The 429 of an address over its auth-failure limit, with a JSON-RPC error object (`"id": null`:
/// the request was not read) so that A2A clients can read why, and `Retry-After`.
pub(super) fn auth_limited(wait: Duration) -> Response<Body> {
    let e = A2aError::TooManyAuthFailures;
    let mut resp = json(
        StatusCode::TOO_MANY_REQUESTS,
        &a2a::error_response(&serde_json::Value::Null, &e),
    );
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, super::error::retry_after(wait));
    resp
}

/// `POST /a2a`: one JSON-RPC request.
pub(super) async fn rpc(
    inbox: &Arc<Inbox>,
    snap: &Arc<Snapshot>,
    req: &mut Req,
) -> Result<Response<Body>, ApiError> {
    if snap.config.a2a.is_none() {
        return Err(ApiError::NOT_FOUND);
    }
    let config = &snap.config;
    // The caller is known before the body is read, so an unknown one costs no parsing.
    let caller = match bearer(req) {
        Some(t) if config.is_admin(t) => Caller::Admin,
        Some(t) => match config.peer_by_a2a_token(t) {
            Some(p) => Caller::Peer(p.name.clone()),
            None => return Err(ApiError::Unauthorized),
        },
        None => return Err(ApiError::Unauthorized),
    };
    let bytes = match body(req, config.server.max_body_bytes).await {
        // Not JSON at all: the binding's own error, in a 200, like every other JSON-RPC error.
        Err(ApiError::UnsupportedMediaType) => {
            let e =
                A2aError::ContentType("the request's Content-Type must be application/json".into());
            return Ok(rpc_json(&a2a::error_response(&serde_json::Value::Null, &e)));
        }
        other => other?,
    };
    let request = match a2a::parse_request(&bytes, config.server.max_json_depth) {
        Ok(r) => r,
        Err((id, e)) => return Ok(rpc_json(&a2a::error_response(&id, &e))),
    };
    let asked = header(req, "a2a-version").map(|v| String::from_utf8_lossy(v).into_owned());
    if let Version::Unsupported(v) = a2a::version(asked.as_deref(), &request.method) {
        let e = A2aError::VersionNotSupported(v);
        return Ok(rpc_json(&a2a::error_response(&request.id, &e)));
    }
    let id = request.id;
    match inbox
        .a2a(snap, &caller, &request.method, request.params)
        .await
    {
        Ok(Answer::Result(v)) => Ok(rpc_json(&a2a::result_response(&id, v))),
        Ok(Answer::Stream(rx)) => Ok(sse(id, rx)),
        // Nothing was recorded: a 503 with Retry-After, as on /message, so clients retry.
        Err(e @ A2aError::StoreUnavailable) => {
            let mut resp = json(
                StatusCode::SERVICE_UNAVAILABLE,
                &a2a::error_response(&id, &e),
            );
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
            Ok(resp)
        }
        Err(e) => {
            if let A2aError::Internal(detail) = &e {
                tracing::warn!(method = %request.method, error = %detail, "a2a: internal error");
            }
            Ok(rpc_json(&a2a::error_response(&id, &e)))
        }
    }
}

fn rpc_json(v: &serde_json::Value) -> Response<Body> {
    json(StatusCode::OK, v)
}

/// An SSE answer: each stream response as one `data:` event wrapped in a JSON-RPC response.
fn sse(id: serde_json::Value, mut rx: mpsc::Receiver<a2a::json::StreamResponse>) -> Response<Body> {
    let (tx, body_rx) = mpsc::channel::<Bytes>(4);
    // Bounded by connections: it ends with its stream, or when the client goes.
    tokio::spawn(async move {
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        loop {
            let frame = tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => {
                        let v = a2a::result_response(&id, serde_json::to_value(&item).unwrap_or_default());
                        Bytes::from(format!("data: {v}\n\n"))
                    }
                    None => return,
                },
                _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    super::body::event_stream(body_rx)
}

/// The 401 of `/a2a` names the scheme, as the card does.
pub(super) fn challenge(resp: &mut Response<Body>) {
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
}
