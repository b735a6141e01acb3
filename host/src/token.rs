//! Reply tokens: minted for each turn, handed to its agent, stored only as a hash, checked on
//! `POST /send`; and the other random secrets the inbox makes.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The sha256 of a token: what the store keeps and looks tokens up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

/// A new random reply token and its hash.
pub fn mint() -> (String, TokenHash) {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("rt_{}", hex::encode(bytes));
    let hash = hash(&token);
    (token, hash)
}

/// A new random secret (32 bytes, base64url): an admin secret or an agent's token (`init`), a
/// pairing code.
pub fn random_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The hash under which a token is stored; tokens themselves are never stored.
pub fn hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// What a stored reply token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The message whose turn got the token.
    pub message_id: String,
    /// The attempt of that turn the token was minted for (1 for the first; 0 for a token stored
    /// before attempts were recorded with it).
    pub attempt: u32,
    /// The route of that turn.
    pub route: String,
    /// The thread to reply in.
    pub thread_id: String,
    /// Hops of the message answered.
    pub hops: u32,
    /// When the token expires; `None` while the turn is still running.
    pub expires_at: Option<i64>,
    /// Whether its attempt is the turn's latest and has not been given up: `false` once the turn
    /// was queued to run again (a newer attempt's token replaces it) or settled as interrupted.
    pub current: bool,
    /// What the turn's prompt promised (`None` for a token stored before terms were kept: the
    /// route's config in force then applies).
    pub terms: Option<crate::model::TurnTerms>,
}

impl Grant {
    /// Whether the token still works at `now` (ms): while its turn runs, and until its grace ends.
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|t| t >= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, ha) = mint();
        let (b, hb) = mint();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(hash(&a), ha);
        assert!(a.starts_with("rt_") && a.len() == 51);
    }

    #[test]
    fn grants_expire_only_after_their_turn() {
        let mut g = Grant {
            message_id: "m".into(),
            attempt: 1,
            route: "r".into(),
            thread_id: "t".into(),
            hops: 0,
            expires_at: None,
            current: true,
            terms: None,
        };
        assert!(g.is_valid_at(i64::MAX));
        g.expires_at = Some(100);
        assert!(g.is_valid_at(100));
        assert!(!g.is_valid_at(101));
    }
}
