//! The web console's server side: its embedded assets, and the admin session a browser holds
//! instead of the admin bearer.
//!
//! A session is a cookie `inbox_console=<expiry ms>.<mac>`, the MAC an HMAC-SHA256 keyed from the
//! admin secret: any host of a cluster that shares the admin secret accepts it, and rotating the
//! secret ends every session. It is `HttpOnly`, `SameSite=Strict` and scoped to `/`. A request it
//! authenticates that changes something (a POST) must also carry `X-CSRF-Token`, a second MAC
//! of the same expiry that only a page of the console has (it is in the page, not in a cookie).
//! Pure: the caller gives the time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "inbox_console";
/// How long a session lasts.
pub const SESSION_MS: i64 = 12 * 60 * 60 * 1000;

/// The console page (HTML), its script and its styles, compiled in.
pub const INDEX_HTML: &str = include_str!("index.html");
/// The login page.
pub const LOGIN_HTML: &str = include_str!("login.html");
/// The console's script.
pub const APP_JS: &str = include_str!("app.js");
/// The console's styles.
pub const STYLE_CSS: &str = include_str!("style.css");

fn mac(secret: &Secret, purpose: &str, expires: i64) -> String {
    // The key is derived, so the MAC never is a function of the raw secret alone.
    let key = Sha256::digest(format!("agent-inbox console\0{}", secret.expose()).as_bytes());
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&key) else {
        return String::new();
    };
    m.update(format!("{purpose}\0{expires}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A new session cookie's value, from `now` (ms), signed with the first admin secret.
pub fn new_session(secret: &Secret, now: i64) -> String {
    let expires = now + SESSION_MS;
    format!("{expires}.{}", mac(secret, "session", expires))
}

/// The session's expiry, if `value` is a session one of `secrets` signed and it has not expired.
pub fn check_session(secrets: &[Secret], value: &str, now: i64) -> Option<i64> {
    let (expires, given) = value.split_once('.')?;
    let expires: i64 = expires.parse().ok()?;
    if expires <= now {
        return None;
    }
    let mut ok = false;
    for s in secrets {
        ok |= bool::from(
            mac(s, "session", expires)
                .as_bytes()
                .ct_eq(given.as_bytes()),
        );
    }
    ok.then_some(expires)
}

/// The CSRF token of the session that expires at `expires`.
pub fn csrf_token(secret: &Secret, expires: i64) -> String {
    mac(secret, "csrf", expires)
}

/// Whether `given` is the CSRF token of the session expiring at `expires`, for any secret.
pub fn check_csrf(secrets: &[Secret], expires: i64, given: &str) -> bool {
    let mut ok = false;
    for s in secrets {
        ok |= bool::from(csrf_token(s, expires).as_bytes().ct_eq(given.as_bytes()));
    }
    ok
}

/// The session cookie's value in a `Cookie` header, if there is one.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a session (`secure` when the inbox serves HTTPS itself).
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that ends the session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The console page for a session, with its CSRF token in a `<meta>` tag.
pub fn index(csrf: &str) -> String {
    // The token is hex: nothing in it can break out of the attribute.
    INDEX_HTML.replace("{{csrf}}", csrf)
}

/// The login page, with an error line if the last try failed.
pub fn login(error: Option<&str>) -> String {
    let line = match error {
        Some(e) => format!("<p class=\"error\">{}</p>", escape(e)),
        None => String::new(),
    };
    LOGIN_HTML.replace("{{error}}", &line)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_expire_and_survive_a_rotation() {
        let (old, new) = (Secret::new("old-admin"), Secret::new("new-admin"));
        let now = 1_000_000;
        let s = new_session(&old, now);
        let expires = check_session(std::slice::from_ref(&old), &s, now).expect("valid");
        assert_eq!(expires, now + SESSION_MS);
        assert!(
            check_session(&[new.clone(), old.clone()], &s, now).is_some(),
            "mid-rotation"
        );
        assert!(
            check_session(std::slice::from_ref(&new), &s, now).is_none(),
            "rotated out"
        );
        assert!(
            check_session(std::slice::from_ref(&old), &s, expires).is_none(),
            "expired"
        );
        let forged = format!("{}.{}", expires + 1, s.split_once('.').unwrap().1);
        assert!(
            check_session(std::slice::from_ref(&old), &forged, now).is_none(),
            "a longer expiry"
        );
        let csrf = csrf_token(&old, expires);
        assert!(check_csrf(std::slice::from_ref(&old), expires, &csrf));
        assert!(
            !check_csrf(
                std::slice::from_ref(&old),
                expires,
                s.split_once('.').unwrap().1
            ),
            "the session MAC is no CSRF token"
        );
        assert_eq!(cookie_value("a=1; inbox_console=x.y; b=2"), Some("x.y"));
        assert!(login(Some("<script>")).contains("&lt;script&gt;"));
    }
}
