//! The web console's server side: its embedded assets, and the admin session a browser holds
//! instead of the admin bearer.
//!
//! A session is a cookie `inbox_console=<id>.<expiry ms>.<mac>`: a random id, and a MAC, an
//! HMAC-SHA256 keyed from the admin secret, over both. Any host of a cluster that shares the admin
//! secret accepts it, and rotating the secret ends every session. Signing out revokes the one
//! session: its id is kept in the store until the session would have expired, cached on each host
//! ([`Revoked`]), and announced to the other hosts of a shared store. It is `HttpOnly`, `SameSite=Strict` and scoped to `/`. A request it
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

fn mac(secret: &Secret, purpose: &str, session: &Session) -> String {
    // The key is derived, so the MAC never is a function of the raw secret alone.
    let key = Sha256::digest(format!("agent-inbox console\0{}", secret.expose()).as_bytes());
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&key) else {
        return String::new();
    };
    m.update(format!("{purpose}\0{}\0{}", session.id, session.expires).as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A console session: its random id and when it expires (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// 32 hex digits, random.
    pub id: String,
    /// When it expires.
    pub expires: i64,
}

/// A new session cookie's value, from `now` (ms), signed with the first admin secret.
pub fn new_session(secret: &Secret, now: i64) -> String {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
    let session = Session {
        id: hex::encode(id),
        expires: now + SESSION_MS,
    };
    session_value(secret, &session)
}

/// The cookie value of `session` signed with `secret`: `id.expires.mac`, the only form
/// [`check_session`] accepts.
pub fn session_value(secret: &Secret, session: &Session) -> String {
    format!(
        "{}.{}.{}",
        session.id,
        session.expires,
        mac(secret, "session", session)
    )
}

/// The session, if `value` is one of `secrets` signed and it has not expired. (Whether it was
/// revoked is [`Revoked`]'s to say.)
pub fn check_session(secrets: &[Secret], value: &str, now: i64) -> Option<Session> {
    let mut parts = value.splitn(3, '.');
    let (id, expires, given) = (parts.next()?, parts.next()?, parts.next()?);
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Digits only: `parse` would also take `+123`, a second spelling of the same signed value
    // (found by the cookie fuzz target's seeds).
    if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let session = Session {
        id: id.to_owned(),
        expires: expires.parse().ok()?,
    };
    if session.expires <= now {
        return None;
    }
    let mut ok = false;
    for s in secrets {
        ok |= bool::from(
            mac(s, "session", &session)
                .as_bytes()
                .ct_eq(given.as_bytes()),
        );
    }
    ok.then_some(session)
}

/// The CSRF token of a session.
pub fn csrf_token(secret: &Secret, session: &Session) -> String {
    mac(secret, "csrf", session)
}

/// Whether `given` is the CSRF token of `session`, for any secret.
pub fn check_csrf(secrets: &[Secret], session: &Session, given: &str) -> bool {
    let mut ok = false;
    for s in secrets {
        ok |= bool::from(csrf_token(s, session).as_bytes().ct_eq(given.as_bytes()));
    }
    ok
}

/// Most revoked sessions kept in memory; past it, the ones expiring first go (they are in the
/// store too, and a sign-out a minute for a whole session's 12 hours is 720).
const MAX_REVOKED: usize = 100_000;

/// The sessions signed out on any host and not yet expired: this host's cache of the store's
/// list, so a request's check is a lookup, not a read.
#[derive(Debug, Default)]
pub struct Revoked(std::sync::Mutex<std::collections::HashMap<String, i64>>);

impl Revoked {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, i64>> {
        // A plain map: a panic mid-update cannot leave it unusable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that session `id` is revoked until `until` (ms).
    pub fn insert(&self, id: &str, until: i64, now: i64) {
        let mut map = self.map();
        if map.len() >= MAX_REVOKED {
            map.retain(|_, u| *u > now);
            while map.len() >= MAX_REVOKED {
                let Some(first) = map.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone())
                else {
                    break;
                };
                map.remove(&first);
            }
        }
        map.insert(id.to_owned(), until);
    }

    /// Whether session `id` was revoked.
    pub fn contains(&self, id: &str) -> bool {
        self.map().contains_key(id)
    }
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

    /// README: "A session lasts 12 hours" (the cookie's Max-Age says the same to the browser).
    #[test]
    fn a_session_lasts_twelve_hours() {
        let secret = Secret::new("admin");
        let value = new_session(&secret, 0);
        let twelve_hours = 12 * 3600 * 1000;
        assert!(check_session(std::slice::from_ref(&secret), &value, twelve_hours - 1).is_some());
        assert!(check_session(std::slice::from_ref(&secret), &value, twelve_hours).is_none());
        assert!(
            set_cookie(&value, false).contains("Max-Age=43200;")
                || set_cookie(&value, false).ends_with("Max-Age=43200")
        );
        assert!(set_cookie(&value, true).ends_with("; Secure"));
    }

    #[test]
    fn sessions_are_signed_expire_and_survive_a_rotation() {
        let (old, new) = (Secret::new("old-admin"), Secret::new("new-admin"));
        let now = 1_000_000;
        let s = new_session(&old, now);
        let session = check_session(std::slice::from_ref(&old), &s, now).expect("valid");
        let expires = session.expires;
        assert_eq!(expires, now + SESSION_MS);
        assert_ne!(
            check_session(std::slice::from_ref(&old), &new_session(&old, now), now).map(|s| s.id),
            Some(session.id.clone()),
            "each session has its own id"
        );
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
        let mac_of = |s: &str| s.rsplit_once('.').unwrap().1.to_owned();
        let forged = format!("{}.{}.{}", session.id, expires + 1, mac_of(&s));
        assert!(
            check_session(std::slice::from_ref(&old), &forged, now).is_none(),
            "a longer expiry"
        );
        let other_id = format!("{}.{}.{}", "0".repeat(32), expires, mac_of(&s));
        assert!(
            check_session(std::slice::from_ref(&old), &other_id, now).is_none(),
            "another id"
        );
        let csrf = csrf_token(&old, &session);
        assert!(check_csrf(std::slice::from_ref(&old), &session, &csrf));
        assert!(
            !check_csrf(std::slice::from_ref(&old), &session, &mac_of(&s)),
            "the session MAC is no CSRF token"
        );
        let revoked = Revoked::default();
        assert!(!revoked.contains(&session.id));
        revoked.insert(&session.id, expires, now);
        assert!(revoked.contains(&session.id));
        assert_eq!(cookie_value("a=1; inbox_console=x.y; b=2"), Some("x.y"));
        assert!(login(Some("<script>")).contains("&lt;script&gt;"));
    }
}
