//! Thread aliases on PostgreSQL: what each peer calls a thread (see the SQLite store's
//! `aliases.rs` for the model). A thread's first message sent without a thread id needs no row:
//! its id is its sender's name for it. Rows are only added, with `ON CONFLICT DO NOTHING`, so two
//! hosts naming one thread at once agree on the row that won.

use deadpool_postgres::GenericClient;

use crate::model::{is_push_target, new_id};
use crate::store::StoreError;

/// The thread `peer` means by `alias`, if it names one.
pub(super) async fn thread_of(
    c: &impl GenericClient,
    peer: &str,
    alias: &str,
) -> Result<Option<String>, StoreError> {
    let row = c
        .query_opt(
            "SELECT thread_id FROM thread_aliases WHERE peer = $1 AND alias = $2
             UNION ALL
             SELECT id FROM messages WHERE id = $2 AND sender = $1 AND thread_id = id
             LIMIT 1",
            &[&peer, &alias],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// What `peer` calls `thread`, if it has a name for it yet.
pub(super) async fn alias_of(
    c: &impl GenericClient,
    thread: &str,
    peer: &str,
) -> Result<Option<String>, StoreError> {
    let named = c
        .query_opt(
            "SELECT alias FROM thread_aliases WHERE thread_id = $1 AND peer = $2",
            &[&thread, &peer],
        )
        .await?;
    if let Some(r) = named {
        return Ok(Some(r.get(0)));
    }
    let started = c
        .query_opt(
            "SELECT 1 FROM messages WHERE id = $1 AND sender = $2 AND thread_id = id",
            &[&thread, &peer],
        )
        .await?;
    Ok(started.map(|_| thread.to_owned()))
}

/// The thread `peer` means by `alias`, naming `new_thread` by it the first time.
pub(super) async fn resolve(
    c: &impl GenericClient,
    peer: &str,
    alias: &str,
    new_thread: &str,
) -> Result<String, StoreError> {
    if let Some(thread) = thread_of(c, peer, alias).await? {
        return Ok(thread);
    }
    c.execute(
        "INSERT INTO thread_aliases (peer, alias, thread_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&peer, &alias, &new_thread],
    )
    .await?;
    // Another host may have named it first: its row is the thread.
    Ok(thread_of(c, peer, alias)
        .await?
        .unwrap_or_else(|| new_thread.to_owned()))
}

/// Names `thread` for `peer` if it has no name for it yet: the thread's own id, unless the peer
/// already means another thread by that, then a fresh id. A push target is no peer.
pub(super) async fn ensure(
    c: &impl GenericClient,
    thread: &str,
    peer: &str,
) -> Result<(), StoreError> {
    if is_push_target(peer) || alias_of(c, thread, peer).await?.is_some() {
        return Ok(());
    }
    let alias = if thread_of(c, peer, thread).await?.is_some() {
        new_id()
    } else {
        thread.to_owned()
    };
    c.execute(
        "INSERT INTO thread_aliases (peer, alias, thread_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&peer, &alias, &thread],
    )
    .await?;
    Ok(())
}
