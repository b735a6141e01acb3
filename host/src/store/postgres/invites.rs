//! Pairing invites in PostgreSQL: one row per code (by its hash), moved along by compare-and-set
//! updates, so a code is used once however many hosts a race of joins reaches.

use tokio_postgres::Row;

use super::PgStore;
use crate::store::{Invite, InviteState, Joined, StoreError, invite_row};

const COLUMNS: &str =
    "code_hash, peer, created_at, expires_at, state, url, send_key, receive_key, takes";

fn row(r: &Row) -> Result<Invite, StoreError> {
    invite_row(
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get::<_, &str>(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get(8),
    )
}

impl PgStore {
    pub(in crate::store) async fn insert_invite(&self, i: Invite) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO invites (code_hash, peer, created_at, expires_at, state)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &i.code_hash,
                    &i.peer,
                    &i.created_at,
                    &i.expires_at,
                    &i.state.as_str(),
                ],
            )
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn join_invite(
        &self,
        code_hash: &str,
        now: i64,
        j: Joined,
    ) -> Result<Option<Invite>, StoreError> {
        let takes = serde_json::to_string(&j.takes)
            .map_err(|e| StoreError::Corrupt(format!("an invite's takes: {e}")))?;
        self.client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE invites SET state = 'joined', url = $3, send_key = $4,
                                        receive_key = $5, takes = $6
                     WHERE code_hash = $1 AND state = 'open' AND expires_at > $2
                     RETURNING {COLUMNS}"
                ),
                &[
                    &code_hash,
                    &now,
                    &j.url,
                    &j.send_key,
                    &j.receive_key,
                    &takes,
                ],
            )
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    pub(in crate::store) async fn invite(
        &self,
        code_hash: &str,
    ) -> Result<Option<Invite>, StoreError> {
        self.client()
            .await?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM invites WHERE code_hash = $1"),
                &[&code_hash],
            )
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    pub(in crate::store) async fn settle_invite(
        &self,
        code_hash: &str,
        from: InviteState,
        to: InviteState,
    ) -> Result<bool, StoreError> {
        // Settled, the keys are in routes.toml's key files (or nowhere): not kept twice.
        let forget = matches!(to, InviteState::Paired | InviteState::Cancelled);
        Ok(self
            .client()
            .await?
            .execute(
                "UPDATE invites SET state = $3,
                        send_key = CASE WHEN $4 THEN NULL ELSE send_key END,
                        receive_key = CASE WHEN $4 THEN NULL ELSE receive_key END
                 WHERE code_hash = $1 AND state = $2",
                &[&code_hash, &from.as_str(), &to.as_str(), &forget],
            )
            .await?
            > 0)
    }
}
