//! Ids as stored (schema v7): an id in the canonical UUID text the inbox makes (lowercase,
//! hyphenated) is a 16-byte blob in SQLite; anything else a client chose (an A2A contextId, a
//! peer's thread id) stays text. Every column that holds a message, reply, task or thread id goes
//! through here both ways, so a lookup binds the same form the row holds, and the wire only ever
//! sees text.
//!
//! A blob is 20 bytes shorter than the text in the row and again in each index over it, and it
//! compares in one `memcmp` (BENCHMARKS.md has the measurement).

use rusqlite::Row;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Value, ValueRef};

/// The columns that hold ids, per table: what the v7 migration converts (a test holds the two
/// together) and `store migrate` turns back into text for PostgreSQL.
pub(crate) const KEY_COLUMNS: &[(&str, &[&str])] = &[
    ("messages", &["id", "thread_id", "in_reply_to"]),
    ("turns", &["message_id"]),
    ("tokens", &["message_id"]),
    ("replies", &["id", "in_reply_to", "thread_id"]),
    ("deliveries", &["reply_id"]),
    ("attempts", &["reply_id"]),
    ("dedup", &["message_id"]),
    ("tasks", &["id", "context_id"]),
    ("task_inputs", &["task_id", "message_id"]),
    ("push_configs", &["task_id"]),
    ("approvals", &["id", "message_id", "thread_id"]),
    ("reply_counts", &["message_id"]),
    ("thread_aliases", &["alias", "thread_id"]),
];

/// An id as bound to a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key<'a> {
    Uuid([u8; 16]),
    Text(&'a str),
}

/// The stored form of `id`.
pub(super) fn key(id: &str) -> Key<'_> {
    // Only the exact text `Uuid`'s Display gives back: other spellings (upper case, braces, no
    // hyphens) stay text, so every id reads back exactly as it was written.
    if id.len() == 36
        && !id.bytes().any(|b| b.is_ascii_uppercase())
        && let Ok(u) = uuid::Uuid::try_parse(id)
    {
        return Key::Uuid(u.into_bytes());
    }
    Key::Text(id)
}

/// The stored form of an optional id.
pub(super) fn opt_key(id: Option<&str>) -> Option<Key<'_>> {
    id.map(key)
}

impl ToSql for Key<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Key::Uuid(b) => ValueRef::Blob(b),
            Key::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

impl Key<'_> {
    /// As an owned SQL value, for statements whose values are gathered before they run.
    pub(super) fn value(self) -> Value {
        match self {
            Key::Uuid(b) => Value::Blob(b.to_vec()),
            Key::Text(t) => Value::Text(t.to_owned()),
        }
    }
}

/// An id read back: text either way.
struct Id(String);

impl FromSql for Id {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Blob(b) => blob_text(b).map(Id).ok_or(FromSqlError::InvalidBlobSize {
                expected_size: 16,
                blob_size: b.len(),
            }),
            other => String::column_result(other).map(Id),
        }
    }
}

/// The id in column `i`.
pub(super) fn id(r: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(r.get::<_, Id>(i)?.0)
}

/// The id in column `i`, if it is not NULL.
pub(super) fn opt_id(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(r.get::<_, Option<Id>>(i)?.map(|i| i.0))
}

/// A 16-byte id blob as its text (for `store migrate`, which copies ids to PostgreSQL as text).
pub(crate) fn blob_text(b: &[u8]) -> Option<String> {
    uuid::Uuid::from_slice(b)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// Registers `inbox_key(x)`, the stored form of `x` in SQL, for the v7 migration.
pub(super) fn register(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "inbox_key",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Text(t) => match std::str::from_utf8(t) {
                    Ok(s) => key(s).value(),
                    Err(_) => Value::Blob(t.to_vec()),
                },
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::Integer(n),
                ValueRef::Real(f) => Value::Real(f),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_uuid_text_becomes_a_blob() {
        let id = crate::model::new_id();
        let Key::Uuid(b) = key(&id) else {
            panic!("{id} stays text")
        };
        assert_eq!(blob_text(&b).as_deref(), Some(id.as_str()));
        for other in [
            "",
            "ctx-1",
            "0190F7A0-0000-7000-8000-000000000000",
            "0190f7a000007000800000000000000a",
            "{0190f7a0-0000-7000-8000-000000000000}",
            "0190f7a0-0000-7000-8000-00000000000g",
        ] {
            assert_eq!(key(other), Key::Text(other), "{other}");
        }
    }

    #[test]
    fn an_id_reads_back_as_written_either_way() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (id TEXT)").unwrap();
        let uuid = crate::model::new_id();
        for written in [uuid.as_str(), "ctx-1"] {
            c.execute("INSERT INTO t VALUES (?1)", [key(written)])
                .unwrap();
            let back: String = c
                .query_row("SELECT id FROM t WHERE id = ?1", [key(written)], |r| {
                    id(r, 0)
                })
                .unwrap();
            assert_eq!(back, written);
        }
        let kinds: Vec<String> = c
            .prepare("SELECT typeof(id) FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kinds, ["blob", "text"]);
    }
}
