//! Databases written by an earlier Outpost open with this one, with nothing lost; a database
//! written by a later one is refused and left as it was.
//!
//! The fixtures are what the binary of `main` on 2026-12-01 (schema version 2) wrote: the
//! demo's central server and one of its sites, dumped with `sqlite3 .dump`, and that day's
//! PostgreSQL schema, filled here with the central server's rows.

#[allow(unused_macros, dead_code)] // this file runs its own tests (not `on_each_backend!`), on SQLite by hand
mod backends;

use model::{LogPos, Seq, SiteId};
use outpost_store::{Db, PullSource, StateKey, StoreError, Write, SCHEMA_VERSION};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const CENTRAL_DUMP: &str = include_str!("fixtures/main-2026-12-01-central.sql");
const SITE_DUMP: &str = include_str!("fixtures/main-2026-12-01-north.sql");

/// Every table that schema version 2 has, with the columns it had, in a stable order.
const TABLES: &[(&str, &str)] = &[
    ("record", "tbl, id, store_id, other_store_id, name_id, data, log_seq"),
    ("change_log", "seq, tbl, record_id, action, merge_into, origin_site, bucket"),
    ("outbox", "site_id, seq"),
    (
        "site_sync",
        "site_id, password_hash, acked_seq, last_push_at, last_pull_at, last_error, hardware_id, push_from, push_digest",
    ),
    ("rejection", "site_id, origin_seq, tbl, record_id, action, data, reason, at, resolved_at"),
    ("state", "key, value"),
];

/// A database file restored from a dump.
fn restore(dump: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("outpost.sqlite");
    let conn = Connection::open(&path).expect("create the database file");
    conn.execute_batch(dump).expect("restore the dump");
    (dir, path)
}

/// Every row of every table, as text, read without Outpost.
fn rows(conn: &Connection) -> BTreeMap<&'static str, Vec<String>> {
    TABLES
        .iter()
        .map(|(table, columns)| {
            let mut stmt =
                conn.prepare(&format!("SELECT json_array({columns}) FROM {table} ORDER BY 1")).expect("read a table");
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).expect("query a table");
            (*table, rows.collect::<Result<Vec<_>, _>>().expect("a row"))
        })
        .collect()
}

fn user_version(path: &Path) -> i64 {
    let conn = Connection::open(path).expect("open");
    conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("user_version")
}

fn raw_records(conn: &Connection) -> Vec<(String, String, String)> {
    let mut stmt =
        conn.prepare("SELECT tbl, id, data FROM record WHERE data IS NOT NULL ORDER BY tbl, id").expect("prepare");
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

fn raw_state(conn: &Connection) -> Vec<(String, String)> {
    let mut stmt = conn.prepare("SELECT key, value FROM state ORDER BY key").expect("prepare");
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

fn raw_count(conn: &Connection, sql: &str) -> u64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// What Outpost reads from a central server's database: records, state, the log, every site's
/// credentials, cursor and queue.
fn check_central(db: &Db, raw: &Connection) {
    assert_eq!(db.dump().expect("dump"), raw_records(raw), "records");
    for (key, value) in raw_state(raw) {
        let known = StateKey::parse(&key).unwrap_or_else(|| panic!("`{key}` is a state key Outpost knows"));
        assert_eq!(db.state(known).expect("state").as_deref(), Some(value.as_str()), "state `{key}`");
    }
    assert_eq!(db.local_site().expect("local site").as_str(), "central");
    assert_eq!(db.last_seq().expect("last seq").0, raw_count(raw, "SELECT max(seq) FROM change_log") as i64);
    let mut sites = raw.prepare("SELECT site_id, password_hash, hardware_id, acked_seq FROM site_sync").expect("sites");
    let sites = sites
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get::<_, i64>(3)?)))
        .expect("query")
        .collect::<Result<Vec<(String, String, Option<String>, i64)>, _>>()
        .expect("rows");
    assert!(sites.len() >= 3, "the demo has three sites");
    for (site, hash, machine, acked) in sites {
        let id = SiteId(site.clone());
        let credentials = db.site_credentials(&id).expect("credentials").expect("the site is known");
        assert_eq!(credentials.password_hash, hash, "{site}'s password");
        assert_eq!(credentials.machine, machine, "{site}'s machine");
        assert_eq!(db.transaction(|tx| tx.acked(&id)).expect("acked").0, acked, "{site}'s acknowledged position");
        let waiting = db.count_pull(&PullSource::Bucket("all"), &id, LogPos::new(0, Seq(0))).expect("count");
        let expected = raw_count(
            raw,
            &format!("SELECT count(*) FROM change_log WHERE bucket = 'all' AND origin_site != '{site}'"),
        );
        assert_eq!(waiting, expected, "{site}'s central data");
        let outbox = db.count_pull(&PullSource::Outbox, &id, LogPos::new(0, Seq(0))).expect("count");
        let expected = raw_count(
            raw,
            &format!("SELECT count(*) FROM outbox o JOIN change_log l ON l.seq = o.seq WHERE o.site_id = '{site}'"),
        );
        assert_eq!(outbox, expected, "{site}'s outbox");
    }
}

/// After the checks, the database takes new writes after its last position.
fn still_writable(db: &Db) {
    let before = db.last_seq().expect("last seq");
    let item = serde_json::json!({"code": "NEW1", "name": "Written after the upgrade"});
    let seqs = db.write(&[Write::upsert("item", "item-after-upgrade", &item)]).expect("a write after the upgrade");
    assert!(seqs[0] > before, "a new change goes after the old ones ({:?} after {before:?})", seqs[0]);
    assert_eq!(db.record("item", "item-after-upgrade").expect("read").as_ref(), Some(&item));
}

#[test]
fn a_central_server_database_from_main_opens_with_everything_in_place() {
    let (_dir, path) = restore(CENTRAL_DUMP);
    let before = rows(&Connection::open(&path).expect("open"));
    assert_eq!(user_version(&path), 2);
    {
        let db = Db::open(&path).expect("open a version 2 database");
        let raw = Connection::open(&path).expect("open");
        check_central(&db, &raw);
    }
    assert_eq!(rows(&Connection::open(&path).expect("open")), before, "opening changed no row");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    still_writable(&Db::open(&path).expect("open again"));
}

#[test]
fn a_site_database_from_main_opens_with_everything_in_place() {
    let (_dir, path) = restore(SITE_DUMP);
    let raw = Connection::open(&path).expect("open");
    let before = rows(&raw);
    let db = Db::open(&path).expect("open a version 2 database");
    assert_eq!(db.dump().expect("dump"), raw_records(&raw), "records");
    for (key, value) in raw_state(&raw) {
        let known = StateKey::parse(&key).unwrap_or_else(|| panic!("`{key}` is a state key Outpost knows"));
        assert_eq!(db.state(known).expect("state").as_deref(), Some(value.as_str()), "state `{key}`");
    }
    let me = db.local_site().expect("local site");
    assert_eq!(me.as_str(), "north");
    // The cursors: what was pushed, where the pull stands, and what still waits.
    let pushed: i64 = db.state(StateKey::PushedSeq).expect("state").expect("pushed_seq").parse().expect("a number");
    assert!(pushed > 0, "the demo's site has pushed");
    assert!(db.state(StateKey::PullCursor).expect("state").is_some_and(|c| c.contains("log")), "the pull cursor");
    let own = raw_count(&raw, "SELECT count(*) FROM change_log WHERE origin_site = 'north'");
    assert_eq!(db.count_changes_after(Seq(0), &me).expect("count"), own, "the site's own log");
    assert_eq!(db.changes_after(Seq(0), &me, 100_000, usize::MAX).expect("changes").len() as u64, own);
    drop(db);
    assert_eq!(rows(&raw), before, "opening changed no row");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

#[test]
fn a_database_newer_than_this_binary_is_refused_and_left_as_it_was() {
    let (_dir, path) = restore(SITE_DUMP);
    let newer = SCHEMA_VERSION + 1;
    Connection::open(&path).expect("open").pragma_update(None, "user_version", newer).expect("set the version");
    let before = std::fs::read(&path).expect("read the file");
    let err = Db::open(&path).expect_err("a newer database must be refused");
    assert!(matches!(err, StoreError::NewerSchema { found, known } if found == newer && known == SCHEMA_VERSION));
    let message = err.to_string();
    assert!(message.contains(&format!("version {newer}")) && message.contains("newer"), "{message}");
    assert!(std::fs::read(&path).expect("read the file") == before, "the refused database is untouched");
}

#[cfg(feature = "postgres")]
mod on_postgres {
    use super::*;
    use crate::backends::Fixture;

    const SCHEMA: &str = include_str!("fixtures/main-2026-12-01-postgres-schema.sql");

    /// Today's PostgreSQL schema, as `main` created it (version 2 recorded), holding the demo
    /// central server's rows.
    fn fill(url: &str, schema: &str, from: &Connection) {
        let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
        let mut t = client.transaction().expect("begin");
        t.batch_execute(&format!("CREATE SCHEMA \"{schema}\"; SET LOCAL search_path TO \"{schema}\";"))
            .expect("schema");
        t.batch_execute(SCHEMA).expect("today's tables");
        t.batch_execute("INSERT INTO schema_version (version) VALUES (2)").expect("version");
        for (table, columns) in TABLES {
            let n = columns.split(',').count();
            let placeholders = (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let overriding = if matches!(*table, "change_log" | "rejection") { "OVERRIDING SYSTEM VALUE" } else { "" };
            let insert = format!("INSERT INTO {table} ({columns}) {overriding} VALUES ({placeholders})");
            let statement = t.prepare(&insert).expect("prepare");
            let mut stmt = from.prepare(&format!("SELECT {columns} FROM {table}")).expect("read");
            let mut rows = stmt.query([]).expect("rows");
            while let Some(row) = rows.next().expect("row") {
                let values: Vec<Box<dyn postgres::types::ToSql + Sync>> = (0..n)
                    .map(|i| -> Box<dyn postgres::types::ToSql + Sync> {
                        match row.get_ref(i).expect("value") {
                            rusqlite::types::ValueRef::Integer(v) => Box::new(v),
                            rusqlite::types::ValueRef::Null if columns.split(", ").nth(i).is_some_and(is_integer) => {
                                Box::new(None::<i64>)
                            }
                            rusqlite::types::ValueRef::Null => Box::new(None::<String>),
                            other => Box::new(other.as_str().expect("text").to_owned()),
                        }
                    })
                    .collect();
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = values.iter().map(|v| &**v).collect();
                t.execute(&statement, &params).expect("insert a row");
            }
        }
        // As the identity columns stood when main had written these rows.
        t.batch_execute(
            "SELECT setval(pg_get_serial_sequence('change_log', 'seq'), (SELECT max(seq) FROM change_log));",
        )
        .expect("the log's sequence");
        t.commit().expect("commit");
    }

    fn is_integer(column: &str) -> bool {
        matches!(column, "log_seq" | "seq" | "acked_seq" | "push_from" | "origin_seq")
    }

    #[test]
    fn a_postgres_central_server_from_main_opens_with_everything_in_place() {
        let Some(fixture) = Fixture::postgres() else { return };
        let Fixture::Postgres { url, schema, .. } = &fixture else { unreachable!("a PostgreSQL fixture") };
        let (_dir, path) = restore(CENTRAL_DUMP);
        let raw = Connection::open(&path).expect("open");
        fill(url, schema, &raw);
        let db = fixture.open();
        check_central(&db, &raw);
        // Migration 7 filled the report columns of the lines already there: the reports read
        // from them what SQLite reads from the documents.
        drop(raw);
        let lite = Db::open(&path).expect("open the SQLite copy");
        let every = outpost_store::reports::Scope::default();
        let stock = db.stock_on_hand(&every).expect("the stock report");
        assert!(!stock.is_empty(), "the fixture holds stock lines");
        assert_eq!(stock, lite.stock_on_hand(&every).expect("the stock report on SQLite"));
        assert_eq!(db.stock_value(&every).expect("value"), lite.stock_value(&every).expect("value on SQLite"));
        still_writable(&db);
        drop(db);
        let db = fixture.open();
        assert!(db.record("item", "item-after-upgrade").expect("read").is_some(), "the write after the upgrade");
    }

    #[test]
    fn a_postgres_database_newer_than_this_binary_is_refused() {
        let Some(fixture) = Fixture::postgres() else { return };
        let Fixture::Postgres { url, schema, .. } = &fixture else { unreachable!("a PostgreSQL fixture") };
        drop(fixture.open());
        let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
        let newer = i32::try_from(SCHEMA_VERSION + 1).expect("a small version");
        client
            .execute(&format!("INSERT INTO \"{schema}\".schema_version (version) VALUES ($1)"), &[&newer])
            .expect("record a newer version");
        let err = Db::open_postgres(url, Some(schema)).expect_err("a newer database must be refused");
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    }
}
