//! Reading a node's database beside its running process: the same SQL on both backends (a
//! site's or central server's SQLite file, read-only; a central server's PostgreSQL schema),
//! giving rows ([`rows`], [`row`], [`count`]), records ([`record`], [`state`]), dumps of every
//! live record ([`dump`], [`dump_table`]) and the counts a request must not change
//! ([`footprint`]).

use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The SQLite file of a node's data directory.
pub fn db_file(data: &Path) -> PathBuf {
    data.join("outpost.sqlite")
}

/// A read-only connection to a node's database (WAL lets it read beside a running writer).
pub fn open_ro(data: &Path) -> Connection {
    let conn = Connection::open_with_flags(db_file(data), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("opening {} read-only: {e}", data.display()));
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    conn
}

/// A database to read from in a test: a node's SQLite file, or a central server's PostgreSQL
/// schema.
#[derive(Debug, Clone, Copy)]
pub enum DbRef<'a> {
    /// A data directory (holding `outpost.sqlite`).
    Sqlite(&'a Path),
    #[cfg(feature = "postgres")]
    Postgres(&'a crate::postgres::Schema),
}

/// Anything whose database a test can read: a data directory, a site, a central server.
pub trait Inspect {
    fn db_ref(&self) -> DbRef<'_>;
}

impl Inspect for Path {
    fn db_ref(&self) -> DbRef<'_> {
        DbRef::Sqlite(self)
    }
}

impl Inspect for PathBuf {
    fn db_ref(&self) -> DbRef<'_> {
        DbRef::Sqlite(self)
    }
}

/// A column value readable from both backends (`i64`, `String`, `Option<…>` of them).
#[cfg(feature = "postgres")]
pub trait Value: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a> {}
#[cfg(feature = "postgres")]
impl<T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>> Value for T {}
/// A column value readable from both backends (`i64`, `String`, `Option<…>` of them).
#[cfg(not(feature = "postgres"))]
pub trait Value: rusqlite::types::FromSql {}
#[cfg(not(feature = "postgres"))]
impl<T: rusqlite::types::FromSql> Value for T {}

/// A row of a query, as a tuple of [`Value`]s.
pub trait FromRow: Sized {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
    #[cfg(feature = "postgres")]
    fn from_postgres(row: &postgres::Row) -> Result<Self, postgres::Error>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Value),+> FromRow for ($($t,)+) {
            fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(($(row.get($i)?,)+))
            }
            #[cfg(feature = "postgres")]
            fn from_postgres(row: &postgres::Row) -> Result<Self, postgres::Error> {
                Ok(($(row.try_get($i)?,)+))
            }
        }
    };
}
tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);

/// The rows of a query on a node's database. The SQL is the same on both backends; its
/// parameters are text, written `$1`, `$2`… (which SQLite reads as well as PostgreSQL).
pub fn rows<R: FromRow>(node: &(impl Inspect + ?Sized), sql: &str, params: &[&str]) -> Vec<R> {
    match node.db_ref() {
        DbRef::Sqlite(data) => {
            let conn = open_ro(data);
            let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("`{sql}`: {e}"));
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |r| R::from_sqlite(r))
                .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
            rows.collect::<rusqlite::Result<_>>().unwrap_or_else(|e| panic!("`{sql}`: {e}"))
        }
        #[cfg(feature = "postgres")]
        DbRef::Postgres(schema) => schema
            .query(sql, params)
            .iter()
            .map(|r| R::from_postgres(r).unwrap_or_else(|e| panic!("`{sql}`: {e}")))
            .collect(),
    }
}

/// The one row of a query (panics unless there is exactly one).
pub fn row<R: FromRow>(node: &(impl Inspect + ?Sized), sql: &str, params: &[&str]) -> R {
    let mut all = rows::<R>(node, sql, params);
    assert_eq!(all.len(), 1, "`{sql}` gave {} rows, not one", all.len());
    all.remove(0)
}

/// Every live record of a node: (table, id) → document text.
pub type Dump = BTreeMap<(String, String), String>;

pub fn dump(node: &(impl Inspect + ?Sized)) -> Dump {
    let all = rows::<(String, String, String)>(
        node,
        "SELECT tbl, id, data FROM record WHERE data IS NOT NULL ORDER BY tbl, id",
        &[],
    );
    all.into_iter().map(|(table, id, data)| ((table, id), data)).collect()
}

/// The live records of one table.
pub fn dump_table(node: &(impl Inspect + ?Sized), table: &str) -> Dump {
    let all = rows::<(String, String, String)>(
        node,
        "SELECT tbl, id, data FROM record WHERE data IS NOT NULL AND tbl = $1 ORDER BY tbl, id",
        &[table],
    );
    all.into_iter().map(|(table, id, data)| ((table, id), data)).collect()
}

/// One number from a query on a node's database.
pub fn count(node: &(impl Inspect + ?Sized), sql: &str) -> i64 {
    row::<(i64,)>(node, sql, &[]).0
}

/// One `state` value of a node.
pub fn state(node: &(impl Inspect + ?Sized), key: &str) -> Option<String> {
    rows::<(String,)>(node, "SELECT value FROM state WHERE key = $1", &[key]).pop().map(|(v,)| v)
}

/// What a record holds, as JSON, on a node.
pub fn record(node: &(impl Inspect + ?Sized), table: &str, id: &str) -> Option<serde_json::Value> {
    let text = rows::<(Option<String>,)>(node, "SELECT data FROM record WHERE tbl = $1 AND id = $2", &[table, id])
        .pop()
        .and_then(|(data,)| data);
    text.map(|t| serde_json::from_str(&t).expect("a stored record is JSON"))
}

/// Counts that a request must not change on the central server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    pub records: i64,
    pub change_log: i64,
    pub outbox: i64,
    pub rejections: i64,
    pub acked: Vec<(String, i64)>,
}

pub fn footprint(node: &(impl Inspect + ?Sized)) -> Footprint {
    Footprint {
        records: count(node, "SELECT count(*) FROM record"),
        change_log: count(node, "SELECT count(*) FROM change_log"),
        outbox: count(node, "SELECT count(*) FROM outbox"),
        rejections: count(node, "SELECT count(*) FROM rejection"),
        acked: rows(node, "SELECT site_id, acked_seq FROM site_sync ORDER BY site_id", &[]),
    }
}
