//! The inviting side of pairing, as far as the store goes: an invite is a one-time code, kept
//! only as its hash, that a join uses once before it expires; then it is settled (paired, or
//! cancelled). The files and the reload are `pairing`'s.

use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use super::{Inbox, InboxError};
use crate::model::now_ms;
use crate::store::{Invite, InviteState, Joined};

/// A new Standard Webhooks key (`whsec_` and 32 random bytes in base64).
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// How a code is kept: its SHA-256, in hex.
fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

impl Inbox {
    /// Makes an invite for `peer` that works for `ttl`: its code (shown once) and its expiry.
    pub async fn create_invite(
        &self,
        peer: &str,
        ttl: Duration,
    ) -> Result<(String, i64), InboxError> {
        let code = crate::token::random_secret();
        let now = now_ms();
        let expires_at = now + ttl.as_millis() as i64;
        self.store
            .insert_invite(Invite {
                code_hash: code_hash(&code),
                peer: peer.to_owned(),
                created_at: now,
                expires_at,
                state: InviteState::Open,
                joined: None,
            })
            .await?;
        Ok((code, expires_at))
    }

    /// Uses `code` for a join, if it is open and not expired: once.
    pub async fn use_invite(
        &self,
        code: &str,
        joined: Joined,
    ) -> Result<Option<Invite>, InboxError> {
        Ok(self
            .store
            .join_invite(&code_hash(code), now_ms(), joined)
            .await?)
    }

    /// The invite of `code`, while it has not expired.
    pub async fn invite_of(&self, code: &str) -> Result<Option<Invite>, InboxError> {
        let now = now_ms();
        Ok(self
            .store
            .invite(&code_hash(code))
            .await?
            .filter(|i| i.expires_at > now || i.state == InviteState::Paired))
    }

    /// Moves the invite of `code` from `from` to `to`; whether it was in `from`.
    pub async fn settle_invite(
        &self,
        code: &str,
        from: InviteState,
        to: InviteState,
    ) -> Result<bool, InboxError> {
        Ok(self.store.settle_invite(&code_hash(code), from, to).await?)
    }
}
