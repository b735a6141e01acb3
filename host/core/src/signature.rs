//! Standard Webhooks signatures (standard-webhooks/standard-webhooks, `spec/standard-webhooks.md`):
//! HMAC-SHA256 over `id.timestamp.body`, keys written `whsec_<base64>`, sent as
//! `webhook-signature: v1,<base64> [v1,<base64> ...]`.
//!
//! Pure: the caller gives the time. Several keys are allowed at once, for rotation without
//! downtime: a signature made with any of them verifies, and signing sends one per key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The prefix of a symmetric signing key.
const KEY_PREFIX: &str = "whsec_";
/// The spec's bounds on a key: 24 to 64 bytes.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A symmetric signing key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// It does not start with `whsec_`.
    #[error("a Standard Webhooks secret starts with \"whsec_\"")]
    Prefix,
    /// The rest is not base64.
    #[error("the part after \"whsec_\" is not base64")]
    Base64,
    /// It is too short or too long.
    #[error("the key is {0} bytes; the spec wants 24 to 64")]
    Length(usize),
}

impl SigningKey {
    /// Reads a `whsec_<base64>` secret.
    pub fn parse(secret: &str) -> Result<Self, KeyError> {
        let b64 = secret.strip_prefix(KEY_PREFIX).ok_or(KeyError::Prefix)?;
        let bytes = STANDARD.decode(b64).map_err(|_| KeyError::Base64)?;
        if !KEY_BYTES.contains(&bytes.len()) {
            return Err(KeyError::Length(bytes.len()));
        }
        Ok(Self(bytes))
    }

    fn mac(&self, id: &[u8], timestamp: &[u8], body: &[u8]) -> [u8; 32] {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(id);
        mac.update(b".");
        mac.update(timestamp);
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// The `webhook-signature` value for a message: one `v1,<base64>` per key, space-separated.
pub fn sign(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    keys.iter()
        .map(|k| {
            format!(
                "v1,{}",
                STANDARD.encode(k.mac(id.as_bytes(), ts.as_bytes(), body))
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A `webhook-*` header is missing.
    #[error("webhook-id, webhook-timestamp and webhook-signature are required")]
    Missing,
    /// The timestamp is not a number, or too far from now.
    #[error("webhook-timestamp is outside the tolerance")]
    Stale,
    /// No signature matches any key.
    #[error("no signature matches")]
    Bad,
}

/// The three headers of a signed request, as received.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// `webhook-id`.
    pub id: Option<&'a [u8]>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a [u8]>,
    /// `webhook-signature`.
    pub signature: Option<&'a [u8]>,
}

/// Checks what can be checked before the body is read: all three headers are there and the
/// timestamp is within `tolerance_secs` of `now_secs`, either way.
pub fn precheck(
    headers: Signed<'_>,
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let (Some(_), Some(ts), Some(_)) = (headers.id, headers.timestamp, headers.signature) else {
        return Err(SignatureError::Missing);
    };
    let when = std::str::from_utf8(ts)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .ok_or(SignatureError::Stale)?;
    if now_secs.abs_diff(when) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// Verifies a request's signature over its raw body against any of `keys` (after
/// [`precheck`]). Compares in constant time.
pub fn verify(
    keys: &[SigningKey],
    headers: Signed<'_>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    precheck(headers, now_secs, tolerance_secs)?;
    let (Some(id), Some(ts), Some(sigs)) = (headers.id, headers.timestamp, headers.signature)
    else {
        return Err(SignatureError::Missing);
    };
    let mut matched = subtle::Choice::from(0);
    // Every candidate is checked against every key, so the time says nothing about which matched.
    for candidate in sigs.split(|b| *b == b' ').filter(|s| !s.is_empty()) {
        let Some(b64) = candidate.strip_prefix(b"v1,") else {
            continue;
        };
        let Ok(given) = STANDARD.decode(b64) else {
            continue;
        };
        for key in keys {
            matched |= key.mac(id, ts, body).ct_eq(given.as_slice());
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector the Standard Webhooks libraries share.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> Signed<'a> {
        Signed {
            id: Some(id.as_bytes()),
            timestamp: Some(ts.as_bytes()),
            signature: Some(sig.as_bytes()),
        }
    }

    #[test]
    fn the_published_vector_signs_and_verifies() {
        let key = SigningKey::parse(SECRET).expect("key");
        assert_eq!(sign(std::slice::from_ref(&key), ID, TS, BODY), SIGNATURE);
        let ts = TS.to_string();
        assert_eq!(
            verify(&[key], headers(ID, &ts, SIGNATURE), BODY, TS, 300),
            Ok(())
        );
    }

    #[test]
    fn exactly_the_right_signatures_are_accepted() {
        let key = SigningKey::parse(SECRET).expect("key");
        let other =
            SigningKey::parse("whsec_dGhpcyBpcyBhbm90aGVyIGtleSBvZiAyNCBieXRlcw==").expect("key");
        let ts = TS.to_string();
        let keys = [key.clone()];
        let check = |h: Signed<'_>, body: &[u8], now: i64| verify(&keys, h, body, now, 300);
        assert_eq!(
            check(headers(ID, &ts, SIGNATURE), b"{}", TS),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            check(headers("msg_other", &ts, SIGNATURE), BODY, TS),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            check(
                headers(ID, &ts, "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                BODY,
                TS
            ),
            Err(SignatureError::Bad),
            "another scheme's tag"
        );
        assert_eq!(
            check(headers(ID, &ts, SIGNATURE), BODY, TS + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(headers(ID, &ts, SIGNATURE), BODY, TS - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(check(headers(ID, &ts, SIGNATURE), BODY, TS + 300), Ok(()));
        assert_eq!(
            check(headers(ID, "soon", SIGNATURE), BODY, TS),
            Err(SignatureError::Stale)
        );
        let missing = Signed {
            signature: None,
            ..headers(ID, &ts, SIGNATURE)
        };
        assert_eq!(check(missing, BODY, TS), Err(SignatureError::Missing));
        // Rotation: a list with a wrong signature and the right one passes; either key verifies.
        let both = format!("v1,AAAA {SIGNATURE}");
        assert_eq!(check(headers(ID, &ts, &both), BODY, TS), Ok(()));
        let rotated = [other.clone(), key.clone()];
        assert_eq!(
            verify(&rotated, headers(ID, &ts, SIGNATURE), BODY, TS, 300),
            Ok(())
        );
        let signed_by_both = sign(&[other.clone(), key], ID, TS, BODY);
        assert_eq!(
            verify(&[other], headers(ID, &ts, &signed_by_both), BODY, TS, 300),
            Ok(())
        );
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(SigningKey::parse("MfKQ9r8G"), Err(KeyError::Prefix));
        assert_eq!(SigningKey::parse("whsec_!!!"), Err(KeyError::Base64));
        assert_eq!(
            SigningKey::parse("whsec_c2hvcnQ="),
            Err(KeyError::Length(5))
        );
        assert!(!format!("{:?}", SigningKey::parse(SECRET)).contains("MfKQ"));
    }
}
