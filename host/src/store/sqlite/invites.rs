//! Pairing invites in SQLite: one row per code (by its hash), moved along by compare-and-set
//! updates, so a code is used once however many joins race for it.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::writer::{Tx, Write};
use crate::store::{Invite, InviteState, Joined, StoreError, invite_row};

const COLUMNS: &str =
    "code_hash, peer, created_at, expires_at, state, url, send_key, receive_key, takes";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Invite, StoreError>> {
    let state: String = r.get(4)?;
    Ok(invite_row(
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        &state,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

struct InsertInvite(Invite);

impl Write for InsertInvite {
    type Output = ();

    fn apply(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let i = &self.0;
        tx.conn
            .prepare_cached(
                "INSERT INTO invites (code_hash, peer, created_at, expires_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                i.code_hash,
                i.peer,
                i.created_at,
                i.expires_at,
                i.state.as_str()
            ])?;
        Ok(())
    }
}

struct JoinInvite {
    code_hash: String,
    now: i64,
    joined: Joined,
}

impl Write for JoinInvite {
    type Output = Option<Invite>;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<Option<Invite>, StoreError> {
        let j = &self.joined;
        let takes = serde_json::to_string(&j.takes)
            .map_err(|e| StoreError::Corrupt(format!("an invite's takes: {e}")))?;
        tx.conn
            .prepare_cached(&format!(
                "UPDATE invites SET state = 'joined', url = ?3, send_key = ?4, receive_key = ?5,
                                    takes = ?6
                 WHERE code_hash = ?1 AND state = 'open' AND expires_at > ?2
                 RETURNING {COLUMNS}"
            ))?
            .query_row(
                params![
                    self.code_hash,
                    self.now,
                    j.url,
                    j.send_key,
                    j.receive_key,
                    takes
                ],
                row,
            )
            .optional()?
            .transpose()
    }
}

struct SettleInvite {
    code_hash: String,
    from: InviteState,
    to: InviteState,
}

impl Write for SettleInvite {
    type Output = bool;

    fn apply(&self, tx: &mut Tx<'_>) -> Result<bool, StoreError> {
        // Settled, the keys are in routes.toml's key files (or nowhere): not kept twice.
        let forget = matches!(self.to, InviteState::Paired | InviteState::Cancelled);
        let changed = tx
            .conn
            .prepare_cached(
                "UPDATE invites SET state = ?3,
                        send_key = CASE WHEN ?4 THEN NULL ELSE send_key END,
                        receive_key = CASE WHEN ?4 THEN NULL ELSE receive_key END
                 WHERE code_hash = ?1 AND state = ?2",
            )?
            .execute(params![
                self.code_hash,
                self.from.as_str(),
                self.to.as_str(),
                forget
            ])?;
        Ok(changed > 0)
    }
}

impl SqliteStore {
    pub(in crate::store) async fn insert_invite(&self, invite: Invite) -> Result<(), StoreError> {
        self.writer.write(InsertInvite(invite)).await
    }

    pub(in crate::store) async fn join_invite(
        &self,
        code_hash: &str,
        now: i64,
        joined: Joined,
    ) -> Result<Option<Invite>, StoreError> {
        self.writer
            .write(JoinInvite {
                code_hash: code_hash.to_owned(),
                now,
                joined,
            })
            .await
    }

    pub(in crate::store) async fn invite(
        &self,
        code_hash: &str,
    ) -> Result<Option<Invite>, StoreError> {
        let hash = code_hash.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM invites WHERE code_hash = ?1"
            ))?
            .query_row(params![hash], row)
            .optional()?
            .transpose()
        })
        .await
    }

    pub(in crate::store) async fn settle_invite(
        &self,
        code_hash: &str,
        from: InviteState,
        to: InviteState,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(SettleInvite {
                code_hash: code_hash.to_owned(),
                from,
                to,
            })
            .await
    }
}
