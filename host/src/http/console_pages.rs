//! The console's HTTP side: its pages and assets, sign-in and sign-out, and the session check the
//! other handlers use (`handlers::who`). The session itself is `crate::console`.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};
use http::{Method, Response, StatusCode};

use super::extract::{Req, body_of, header};
use super::{ApiError, Body};
use crate::console as session;
use crate::inbox::Inbox;
use crate::model::now_ms;
use crate::snapshot::Snapshot;

/// The headers every console page carries: no script but our own file, no framing, no sniffing.
fn harden(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An HTML answer.
pub(super) fn html(text: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(text));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    harden(&mut resp);
    resp
}

/// A compiled-in asset.
pub(super) fn asset(text: &'static str, media: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(media));
    harden(&mut resp);
    resp
}

/// The session a request carries, if valid and not signed out.
fn session(snap: &Snapshot, inbox: &Inbox, req: &Req) -> Option<session::Session> {
    let cookie = std::str::from_utf8(header(req, "cookie")?).ok()?;
    session::check_session(
        &snap.config.server.admin_secrets,
        session::cookie_value(cookie)?,
        now_ms(),
    )
    .filter(|s| !inbox.signed_out(&s.id))
}

/// Whether the request is the admin's through a console session: a valid session, and for
/// anything but a GET the session's CSRF token in `X-CSRF-Token`.
pub(super) fn admin_session(snap: &Snapshot, inbox: &Inbox, req: &Req) -> bool {
    let Some(current) = session(snap, inbox, req) else {
        return false;
    };
    if req.parts.method == Method::GET {
        return true;
    }
    header(req, "x-csrf-token")
        .and_then(|t| std::str::from_utf8(t).ok())
        .is_some_and(|t| session::check_csrf(&snap.config.server.admin_secrets, &current, t))
}

/// `GET /console`: the console for a session, the sign-in page otherwise.
pub(super) fn page(snap: &Snapshot, inbox: &Inbox, req: &Req) -> Response<Body> {
    match (
        session(snap, inbox, req),
        snap.config.server.admin_secrets.first(),
    ) {
        (Some(current), Some(secret)) => {
            html(session::index(&session::csrf_token(secret, &current)))
        }
        _ => html(session::login(None)),
    }
}

/// `POST /console/login` (a form with `secret`): a session cookie and back to the console, or the
/// sign-in page again with a 401 (counted by the auth-failure limiter like any wrong secret).
pub(super) async fn login(snap: &Snapshot, req: &mut Req) -> Result<Response<Body>, ApiError> {
    let bytes = body_of(req, 4096, |t| t == "application/x-www-form-urlencoded").await?;
    let secret = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let config = &snap.config;
    let (Some(signer), true) = (
        config.server.admin_secrets.first(),
        config.is_admin(secret.as_bytes()),
    ) else {
        return Err(ApiError::LoginFailed);
    };
    let cookie = session::set_cookie(
        &session::new_session(signer, now_ms()),
        config.server.tls.is_some(),
    );
    tracing::info!("console: the admin signed in");
    Ok(redirect(&cookie))
}

/// `POST /console/logout`: the session revoked on every host until it would have expired (in
/// the store, this host's cache, and on a shared store the other hosts' caches), the cookie
/// cleared, and back to the sign-in page. Other sessions (other browsers) stay signed in.
pub(super) async fn logout(
    snap: &Snapshot,
    inbox: &Inbox,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    if let Some(current) = session(snap, inbox, req) {
        inbox.sign_out(&current.id, current.expires).await?;
        tracing::info!("console: a session signed out");
    }
    Ok(redirect(&session::clear_cookie()))
}

fn redirect(cookie: &str) -> Response<Body> {
    let mut resp = Response::new(Body::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static("/console"));
    if let Ok(v) = HeaderValue::from_str(cookie) {
        h.insert(SET_COOKIE, v);
    }
    resp
}
