//! Numbered schema migrations: one list, both backends.
//!
//! Migration N is a pair of scripts, `migrations/sqlite/N_*.sql` and `migrations/postgres/N_*.sql`,
//! that take a database from N-1 to N. A database records the last migration applied (SQLite:
//! `PRAGMA user_version`; PostgreSQL: a row per migration in `schema_version`), and opening it
//! runs every later migration, in one transaction, so a migration is applied whole or not at
//! all. A database recorded past the last migration this binary knows was written by a newer
//! Outpost: it is refused, never guessed at.
//!
//! A migration, once released, never changes: a new column or index is a new migration.

use crate::{Result, StoreError};

/// One step of the schema.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) sqlite: &'static str,
    /// Compiled into every build, so that a default build checks that each migration has both.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) postgres: &'static str,
}

macro_rules! migration {
    ($version:literal, $file:literal) => {
        Migration {
            version: $version,
            sqlite: include_str!(concat!("migrations/sqlite/", $file)),
            postgres: include_str!(concat!("migrations/postgres/", $file)),
        }
    };
}

/// Every migration, in order, numbered from 1 without gaps.
pub(crate) const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_records_and_log.sql"),
    migration!(2, "0002_refusals_seen_and_last_batch.sql"),
    migration!(3, "0003_merges.sql"),
    migration!(4, "0004_lines_by_parent.sql"),
    migration!(5, "0005_site_admin.sql"),
    migration!(6, "0006_sync_history.sql"),
    migration!(7, "0007_report_columns.sql"),
    migration!(8, "0008_indexed_fields_as_columns.sql"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The migrations a database recorded at `found` still needs. A newer database is refused.
pub(crate) fn pending(found: i64) -> Result<&'static [Migration]> {
    match usize::try_from(found) {
        Ok(done) if done <= MIGRATIONS.len() => Ok(&MIGRATIONS[done..]),
        _ => Err(StoreError::NewerSchema { found, known: SCHEMA_VERSION }),
    }
}

/// The migrations a SQLite database still needs; refuses a newer one before anything (even a
/// pragma) touches the file.
pub(crate) fn check_sqlite(conn: &rusqlite::Connection) -> Result<&'static [Migration]> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    pending(found)
}

/// Brings a SQLite database up to date, in one transaction.
pub(crate) fn run_sqlite(conn: &rusqlite::Connection) -> Result<()> {
    let todo = check_sqlite(conn)?;
    if todo.is_empty() {
        return Ok(());
    }
    let fresh = todo.len() == MIGRATIONS.len();
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    for migration in todo {
        tx.execute_batch(migration.sqlite)?;
        tx.pragma_update(None, "user_version", migration.version)?;
    }
    tx.commit()?;
    if fresh {
        // A new database starts without the pages of what a later migration dropped (an
        // index made by one and replaced by another): cheap while it is empty.
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
    }

    #[test]
    fn a_database_newer_than_the_binary_is_refused() {
        assert_eq!(pending(0).map(<[Migration]>::len).ok(), Some(MIGRATIONS.len()));
        assert_eq!(pending(SCHEMA_VERSION).map(<[Migration]>::len).ok(), Some(0));
        let newer = pending(SCHEMA_VERSION + 1).expect_err("a newer schema must be refused");
        assert!(newer.to_string().contains("newer"), "{newer}");
        assert!(pending(-1).is_err());
    }
}
