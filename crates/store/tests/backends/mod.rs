//! Each storage test runs on every backend: SQLite always (a database file in a temporary
//! directory), PostgreSQL when the `postgres` feature is on (a fresh schema of its own, with a
//! random name, dropped at the end).
//!
//! The test PostgreSQL is found by the test kit (`testkit::postgres`): when there is none to
//! reach, a PostgreSQL test is reported skipped by name (on stderr and in the skip report), or
//! fails where PostgreSQL is required (`CI=true`, `OUTPOST_REQUIRE_POSTGRES=1`, a URL given).
//!
//! [`on_each_backend!`] turns `fn name(fx: &Fixture)` into the tests `sqlite::name` and
//! `postgres::name`, so a failure names its backend.

use outpost_store::Db;
use tempfile::TempDir;

/// Where one test's database lives; [`Fixture::open`] opens it (again).
pub enum Fixture {
    Sqlite(TempDir),
    #[cfg(feature = "postgres")]
    Postgres {
        url: String,
        schema: String,
        /// PostgreSQL tests of one binary run one at a time: a pull serves a change only once
        /// every older writing transaction of the cluster has ended, and tests asserting on
        /// pulls must not wait for each other's transactions.
        _turn: testkit::postgres::Turn,
    },
}

impl Fixture {
    pub fn sqlite() -> Fixture {
        Fixture::Sqlite(tempfile::tempdir().expect("a temporary directory"))
    }

    /// A fresh schema on the test PostgreSQL, or `None` (skip, reported) when there is none to
    /// reach.
    #[cfg(feature = "postgres")]
    pub fn postgres() -> Option<Fixture> {
        let url = testkit::postgres::url()?;
        let schema = testkit::postgres::fresh_schema_name();
        let turn = testkit::postgres::turn(true);
        Some(Fixture::Postgres { url, schema, _turn: turn })
    }

    /// Opens the database; a second call opens the same database again, as another process or a
    /// restarted one would.
    pub fn open(&self) -> Db {
        match self {
            Fixture::Sqlite(dir) => Db::open(&dir.path().join("site.sqlite")).expect("open the SQLite database"),
            #[cfg(feature = "postgres")]
            Fixture::Postgres { url, schema, .. } => {
                Db::open_postgres(url, Some(schema)).expect("open the PostgreSQL database")
            }
        }
    }
}

#[cfg(feature = "postgres")]
impl Drop for Fixture {
    fn drop(&mut self) {
        if let Fixture::Postgres { url, schema, .. } = self {
            testkit::postgres::drop_schema(url, schema);
        }
    }
}

/// Runs each named test body (`fn name(fx: &Fixture)`) once per backend, as `sqlite::name` and
/// `postgres::name`.
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::backends::Fixture::sqlite());
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(fixture) = super::backends::Fixture::postgres() {
                        super::$name(&fixture);
                    }
                }
            )*
        }
    };
}
