//! Thread aliases: what each peer calls a thread. A peer names threads by its own ids (its
//! `thread_id`, or an A2A `contextId`); each is scoped to that peer, so two peers that pick the
//! same id get two threads, and no peer can name its way into another's. A thread's first message
//! sent without a thread id needs no row: its id, which the ack told the sender, is that
//! sender's name for it (the thread's first message stores `''` as its thread, schema v6).

use rusqlite::{Connection, OptionalExtension, params};

use super::key::{id, key};
use crate::model::{is_push_target, new_id};

/// The thread `peer` means by `alias`, if it names one.
pub(super) fn thread_of(
    c: &Connection,
    peer: &str,
    alias: &str,
) -> rusqlite::Result<Option<String>> {
    let named = c
        .prepare_cached("SELECT thread_id FROM thread_aliases WHERE peer = ?1 AND alias = ?2")?
        .query_row(params![peer, key(alias)], |r| id(r, 0))
        .optional()?;
    if named.is_some() {
        return Ok(named);
    }
    Ok(started_by(c, alias, peer)?.then(|| alias.to_owned()))
}

/// What `peer` calls `thread`, if it has a name for it yet.
pub(super) fn alias_of(
    c: &Connection,
    thread: &str,
    peer: &str,
) -> rusqlite::Result<Option<String>> {
    let named = c
        .prepare_cached("SELECT alias FROM thread_aliases WHERE thread_id = ?1 AND peer = ?2")?
        .query_row(params![key(thread), peer], |r| id(r, 0))
        .optional()?;
    if named.is_some() {
        return Ok(named);
    }
    Ok(started_by(c, thread, peer)?.then(|| thread.to_owned()))
}

/// Whether `thread` is a thread `peer` started without naming it (its first message's id).
fn started_by(c: &Connection, thread: &str, peer: &str) -> rusqlite::Result<bool> {
    Ok(
        c.prepare_cached(
            "SELECT 1 FROM messages WHERE id = ?1 AND sender = ?2 AND thread_id = ''",
        )?
        .query_row(params![key(thread), peer], |_| Ok(()))
        .optional()?
        .is_some(),
    )
}

/// Records that `peer` calls `thread` `alias`.
pub(super) fn insert(
    c: &Connection,
    peer: &str,
    alias: &str,
    thread: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO thread_aliases (peer, alias, thread_id) VALUES (?1, ?2, ?3)")?
        .execute(params![peer, key(alias), key(thread)])?;
    Ok(())
}

/// What `peer` calls `thread`, naming it now if it has no name yet: the thread's own id, unless
/// the peer already means another thread by that, then a fresh id. A push target is no peer and
/// gets none.
pub(super) fn ensure(c: &Connection, thread: &str, peer: &str) -> rusqlite::Result<()> {
    if is_push_target(peer) || alias_of(c, thread, peer)?.is_some() {
        return Ok(());
    }
    let alias = if thread_of(c, peer, thread)?.is_some() {
        new_id()
    } else {
        thread.to_owned()
    };
    insert(c, peer, &alias, thread)
}
