//! Reading a request: credentials from headers, the body within its limit, query parameters.

use bytes::Bytes;
use http::Request;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::ApiError;

/// A header's raw value.
pub(super) fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a [u8]> {
    req.headers().get(name).map(HeaderValue::as_bytes)
}

/// The token of `Authorization: Bearer <token>`.
pub(super) fn bearer(req: &Request<Incoming>) -> Option<&[u8]> {
    let v = header(req, "authorization")?;
    let rest = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    Some(rest.trim_ascii())
}

/// Reads a body: checks the media type and the size (before and while reading).
pub(super) async fn body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
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
        Err(e) => Err(ApiError::Body(crate::wire::BodyError::BadJson(format!(
            "cannot read the body: {e}"
        )))),
    }
}

/// A query parameter, decoded (`%XX` and `+`); an empty value counts as absent.
pub(super) fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// A path segment, decoded (`%XX`).
pub(super) fn segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
