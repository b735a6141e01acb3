//! Reading a request: credentials from headers, the body within its limit, query parameters, and
//! draining what a refused request still sends, so that its client reads the answer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HeaderValue};
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ApiError;

/// Most bytes of a refused body read and thrown away before answering; a client sending more
/// than this may see the connection close before it reads the answer.
const DRAIN_BYTES: u64 = 16 << 20;
/// Longest time spent throwing a refused body away.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request whose body is read at most once, and drained if a handler refuses it unread.
pub(super) struct Req {
    /// Method, URI, headers.
    pub(super) parts: Parts,
    body: Option<Incoming>,
}

impl Req {
    pub(super) fn new(req: http::Request<Incoming>) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            parts,
            body: Some(body),
        }
    }

    /// Reads and throws away what is left of the body, within bounds, so that a client still
    /// sending it reads the answer instead of a reset connection (nginx's `lingering_close`).
    /// A client that sent `Expect: 100-continue` was never asked for its body, so it has none to
    /// drain.
    pub(super) async fn drain(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if expects_continue(&self.parts) {
            return;
        }
        let read = async {
            let mut n: u64 = 0;
            while let Some(Ok(frame)) = body.frame().await {
                n += frame.data_ref().map_or(0, |d| d.len() as u64);
                if n > DRAIN_BYTES {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, read).await;
    }
}

fn expects_continue(parts: &Parts) -> bool {
    parts
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// A header's raw value.
pub(super) fn header<'a>(req: &'a Req, name: &str) -> Option<&'a [u8]> {
    req.parts.headers.get(name).map(HeaderValue::as_bytes)
}

/// The token of `Authorization: Bearer <token>`.
pub(super) fn bearer(req: &Req) -> Option<&[u8]> {
    let v = header(req, "authorization")?;
    let rest = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    Some(rest.trim_ascii())
}

/// Reads the body: checks the media type and the size (before and while reading). A body over
/// the limit is drained before the refusal, so the client reads it.
pub(super) async fn body(req: &mut Req, limit: usize) -> Result<Bytes, ApiError> {
    body_of(req, limit, |essence| {
        essence == "application/json" || essence.ends_with("+json")
    })
    .await
}

/// Like [`body`], for a body whose media type `accept` takes (a missing Content-Type is taken).
pub(super) async fn body_of(
    req: &mut Req,
    limit: usize,
    accept: fn(&str) -> bool,
) -> Result<Bytes, ApiError> {
    if let Some(ct) = req.parts.headers.get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !accept(essence) {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    // A declared length over the limit is refused before reading a byte.
    let declared = req
        .parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let Some(mut incoming) = req.body.take() else {
        return Ok(Bytes::new());
    };
    let mut buf = BytesMut::with_capacity(declared.map_or(1024, |n| n as usize));
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::Body(crate::wire::BodyError::BadJson(format!(
                "cannot read the body: {e}"
            )))
        })?;
        if let Some(data) = frame.data_ref() {
            // Chunked bodies are cut off as soon as they pass the limit.
            if buf.len() + data.len() > limit {
                req.body = Some(incoming);
                return Err(ApiError::BodyTooLarge(limit));
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

/// A query parameter (see [`super::query::param`]).
pub(super) fn query(req: &Req, key: &str) -> Option<String> {
    super::query::param(req.parts.uri.query(), key)
}

/// A path segment, decoded (`%XX`).
pub(super) fn segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
