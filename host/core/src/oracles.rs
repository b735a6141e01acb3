//! What the fuzz targets check, one function per target: the targets in `fuzz/` call these, and
//! `properties::past_crashers_and_seeds_stay_fixed` replays the saved corpora through them, so
//! the fuzzer and the suite hold the code to the same rules. Each panics on a broken rule.
//! Pure functions over the parsers, so they cost a release build nothing it links.

/// The JSON depth the targets read with (the server's default `max_json_depth`).
const DEPTH: usize = 64;

/// `a2a_request`: every answer the JSON-RPC reader leads to is a JSON-RPC 2.0 object echoing a
/// valid id (null, a string or an integer); the params of every method deserialize or fail.
pub fn a2a_request(b: &[u8]) {
    use crate::a2a::json::{ListParams, SendParams, TaskParams};
    use crate::a2a::{error_response, parse_request, result_response};
    let echoes = |answer: &serde_json::Value, id: &serde_json::Value| {
        assert_eq!(answer["jsonrpc"], "2.0");
        assert_eq!(&answer["id"], id);
        assert!(
            id.is_null() || id.is_string() || id.is_i64() || id.is_u64(),
            "{id}"
        );
    };
    match parse_request(b, DEPTH) {
        Ok(req) => {
            echoes(&result_response(&req.id, serde_json::Value::Null), &req.id);
            let _ = serde_json::from_value::<SendParams>(req.params.clone());
            let _ = serde_json::from_value::<TaskParams>(req.params.clone());
            let _ = serde_json::from_value::<ListParams>(req.params);
        }
        Err((id, e)) => {
            let answer = error_response(&id, &e);
            echoes(&answer, &id);
            assert!(answer["error"]["code"].as_i64().is_some_and(|c| c < 0));
        }
    }
}

/// `query`: what the parameter reader accepts is in range.
pub fn query(q: &str) {
    use crate::query::{flag, limit, param, timeout_secs};
    for key in ["thread", "route", "limit", "dead"] {
        assert!(param(Some(q), key).is_none_or(|v| !v.is_empty()));
    }
    let _ = flag(Some(q), "dead");
    if let Ok(n) = limit(Some(q), 100, 1000) {
        assert!((1..=1000).contains(&n), "{n}");
    }
    if let Ok(Some(t)) = timeout_secs(Some(q)) {
        assert!(t > 0);
    }
}

/// `cookie`: the only session value accepted is the one the secret signed for that session.
/// Answers whether it was accepted.
pub fn cookie(header: &str) -> bool {
    use crate::console::{check_session, cookie_value, session_value};
    let secret = crate::config::Secret::new("admin-secret");
    // The cookie's value never runs past its `;`; with no cookie, the whole header goes to the
    // session check itself (so that check is fuzzed too).
    let found = cookie_value(header);
    assert!(found.is_none_or(|v| !v.contains(';')), "{found:?}");
    let value = found.unwrap_or(header);
    match check_session(std::slice::from_ref(&secret), value, 0) {
        Some(session) => {
            assert_eq!(session_value(&secret, &session), value, "a forged value");
            true
        }
        None => false,
    }
}

/// `forwarded_for`: the client address is the socket's or one the header names, and the header
/// of an untrusted socket is never read. The first byte picks the socket (even: trusted).
pub fn forwarded_for(b: &[u8]) {
    use std::net::IpAddr;
    let (first, header) = b.split_first().unwrap_or((&0, &[]));
    let socket: IpAddr = if first % 2 == 0 {
        [127, 0, 0, 1].into()
    } else {
        [203, 0, 113, 7].into()
    };
    let trusted = [
        "127.0.0.0/8".parse().expect("net"),
        "10.0.0.0/8".parse().expect("net"),
    ];
    let ip = crate::limiter::client_ip(socket, Some(header), &trusted);
    if first % 2 == 1 {
        assert_eq!(ip, socket, "an untrusted socket's header was read");
    }
    if ip != socket {
        let named = std::str::from_utf8(header).expect("a header that named an address is text");
        assert!(
            named
                .split(',')
                .any(|h| h.trim().parse::<IpAddr>() == Ok(ip))
        );
    }
}

/// `url`: only absolute http(s) URLs with a host, and a literal judged as the connector does.
pub fn url(u: &str) {
    use crate::ssrf::{Target, is_public, literal_not_public, parse_url};
    if let Ok((uri, target)) = parse_url(u) {
        assert!(matches!(uri.scheme_str(), Some("http" | "https")));
        assert!(uri.host().is_some());
        if let Target::Address(ip) = target {
            assert_eq!(literal_not_public(&uri), !is_public(ip), "{u}");
        }
    }
}
