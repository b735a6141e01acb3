//! Copying an embedded (SQLite) inbox into a shared (PostgreSQL) one, for a team that grows into
//! several hosts: `agent-inbox store migrate --from <data dir>`.
//!
//! The copy is one PostgreSQL transaction (all of it or none), into a database with no messages
//! yet, from a data directory no inbox is using (its lock file says so). Rows keep their ids and
//! order; a turn the SQLite inbox left running gets a lease that has already run out, so the first
//! host to start settles it by `on_interrupt`, as a restart would.

use std::path::Path;

use rusqlite::types::ValueRef;
use serde_json::{Map, Value};

use super::StoreError;
use super::postgres::{PgSettings, PgStore};
use super::sqlite;

/// A row read from SQLite: its rowid (0 for a keyed table) and its columns as JSON.
type Row = (i64, Map<String, Value>);

/// Rows read and written per statement.
const BATCH: i64 = 500;

/// How a table's rows are paged: by rowid, or (a `WITHOUT ROWID` table) by its key.
#[derive(Clone, Copy)]
enum Order {
    Rowid,
    Key(&'static str),
}

/// The tables, parents first, each with how to page it, the SQLite expression of its `seq` (when
/// PostgreSQL has one) and its boolean columns (0/1 in SQLite).
const TABLES: &[(&str, Order, Option<&str>, &[&str])] = &[
    ("messages", Order::Rowid, Some("seq"), &["mailbox"]),
    ("turns", Order::Rowid, Some("rowid"), &[]),
    ("tokens", Order::Rowid, None, &[]),
    ("replies", Order::Rowid, Some("seq"), &[]),
    ("deliveries", Order::Rowid, None, &[]),
    ("attempts", Order::Rowid, Some("rowid"), &[]),
    ("dedup", Order::Key("sender, key"), None, &[]),
    ("tasks", Order::Rowid, Some("seq"), &[]),
    ("task_inputs", Order::Rowid, Some("seq"), &[]),
    ("push_configs", Order::Key("task_id, id"), None, &["done"]),
    ("approvals", Order::Rowid, None, &[]),
    ("reply_counts", Order::Key("message_id, attempt"), None, &[]),
    ("revoked_sessions", Order::Key("id"), None, &[]),
    ("thread_aliases", Order::Key("peer, alias"), None, &[]),
    ("refusals", Order::Rowid, Some("rowid"), &[]),
];

/// How many rows of each table were copied.
pub type Copied = Vec<(&'static str, u64)>;

/// Copies the SQLite inbox in `from` into the PostgreSQL `to` names (migrating its schema first).
pub async fn sqlite_to_postgres(from: &Path, to: &PgSettings) -> Result<Copied, StoreError> {
    let refused = |reason: String| StoreError::Open {
        path: from.to_owned(),
        reason,
    };
    // Held for the whole copy: an inbox that starts on this directory meanwhile is refused.
    let _lock =
        sqlite::lock::DirLock::acquire(from, std::time::Duration::ZERO).map_err(|e| match e {
            sqlite::lock::LockError::Held { holder, .. } => {
                refused(format!("{holder} has it open: stop it first"))
            }
            e => refused(e.to_string()),
        })?;
    let path = from.join(sqlite::FILE_NAME);
    if !path.is_file() {
        return Err(refused(format!("no inbox database at {}", path.display())));
    }
    let source = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let version: i64 = source.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != sqlite::latest_schema() {
        return Err(refused(format!(
            "its schema is version {version}; this binary copies version {}: start the inbox on it once with this version, stop it, then copy",
            sqlite::latest_schema()
        )));
    }
    let target = PgStore::open(to).await?;
    let mut client = target.client_for_copy().await?;
    let tx = client.transaction().await?;
    let used: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM replies)",
            &[],
        )
        .await?
        .get(0);
    if used {
        return Err(StoreError::Open {
            path: super::postgres::describe(&to.url).into(),
            reason: "the database already holds messages: copy into an empty one".into(),
        });
    }
    let mut copied = Vec::new();
    for &(table, order, seq, bools) in TABLES {
        let mut after = 0i64;
        let mut n = 0u64;
        loop {
            let rows = read_batch(&source, table, order, seq, bools, after)?;
            let Some(last) = rows.last().map(|(at, _)| *at) else {
                break;
            };
            after = match order {
                Order::Rowid => last,
                Order::Key(_) => after + rows.len() as i64,
            };
            n += rows.len() as u64;
            let json = Value::Array(rows.into_iter().map(|(_, r)| Value::Object(r)).collect());
            tx.execute(
                &format!(
                    "INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, $1::TEXT::JSON)"
                ),
                &[&json.to_string()],
            )
            .await?;
        }
        if seq.is_some() {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'seq'),
                                   coalesce((SELECT max(seq) FROM {table}), 0) + 1, false)"
                ),
                &[],
            )
            .await?;
        }
        copied.push((table, n));
    }
    // SQLite stores a thread's first message with thread_id '' (its own id; schema v6).
    tx.execute(
        "UPDATE messages SET thread_id = id WHERE thread_id = ''",
        &[],
    )
    .await?;
    // Left running by the SQLite inbox: its lease has run out, so a host settles it at start.
    tx.execute(
        "UPDATE turns SET leased_by = 'migrated/0', lease_until = now() - interval '1 second'
         WHERE state = 'running'",
        &[],
    )
    .await?;
    tx.commit().await?;
    Ok(copied)
}

/// The next rows of `table` after `after` (a rowid, or for a keyed table how many were read),
/// each with its rowid (or 0) and a JSON object keyed by column (the `seq` PostgreSQL numbers by,
/// booleans as booleans, ids as text, other blobs as `\x` hex).
fn read_batch(
    c: &rusqlite::Connection,
    table: &str,
    order: Order,
    seq: Option<&str>,
    bools: &[&str],
    after: i64,
) -> Result<Vec<Row>, StoreError> {
    let extra = match seq {
        Some("rowid") => ", rowid AS seq",
        _ => "",
    };
    let sql = match order {
        Order::Rowid => format!(
            "SELECT rowid AS inbox_rowid, *{extra} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
        ),
        Order::Key(key) => {
            format!("SELECT 0 AS inbox_rowid, * FROM {table} ORDER BY {key} LIMIT ?2 OFFSET ?1")
        }
    };
    let mut stmt = c.prepare(&sql)?;
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let keys = sqlite::key::KEY_COLUMNS
        .iter()
        .find(|(t, _)| *t == table)
        .map_or(&[][..], |(_, columns)| *columns);
    let rows = stmt
        .query_map(rusqlite::params![after, BATCH], |r| {
            let rowid: i64 = r.get(0)?;
            let mut obj = Map::new();
            for (i, name) in names.iter().enumerate().skip(1) {
                let v = match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) if bools.contains(&name.as_str()) => Value::Bool(n != 0),
                    ValueRef::Integer(n) => Value::from(n),
                    ValueRef::Real(f) => Value::from(f),
                    ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                    // An id stored as its 16 bytes (schema v7) goes back to its text.
                    ValueRef::Blob(b) if keys.contains(&name.as_str()) => sqlite::key::blob_text(b)
                        .map(Value::String)
                        .ok_or(rusqlite::Error::InvalidColumnType(
                            i,
                            name.clone(),
                            rusqlite::types::Type::Blob,
                        ))?,
                    ValueRef::Blob(b) => Value::String(format!("\\x{}", hex::encode(b))),
                };
                obj.insert(name.clone(), v);
            }
            Ok((rowid, obj))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
