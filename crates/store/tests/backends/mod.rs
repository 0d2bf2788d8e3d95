//! Each storage test runs on every backend: SQLite always (a database file in a temporary
//! directory), PostgreSQL when the `postgres` feature is on (a fresh schema of its own, with a
//! random name, dropped at the end, so tests run in parallel).
//!
//! PostgreSQL is at `OUTPOST_TEST_POSTGRES`, else `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`. When none is set and the default does not answer,
//! the PostgreSQL tests are skipped (they say so), except under `CI=true`, where a missing
//! PostgreSQL fails them.
//!
//! [`on_each_backend!`] turns `fn name(fx: &Fixture)` into the tests `sqlite::name` and
//! `postgres::name`, so a failure names its backend.

#![allow(dead_code)]

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
        _turn: std::sync::MutexGuard<'static, ()>,
    },
}

impl Fixture {
    pub fn sqlite() -> Fixture {
        Fixture::Sqlite(tempfile::tempdir().expect("a temporary directory"))
    }

    /// A fresh schema on the test PostgreSQL, or `None` (skip) when there is none to reach.
    #[cfg(feature = "postgres")]
    pub fn postgres() -> Option<Fixture> {
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let url = pg::url()?;
        let schema = pg::fresh_schema_name();
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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

    pub fn is_postgres(&self) -> bool {
        !matches!(self, Fixture::Sqlite(_))
    }
}

#[cfg(feature = "postgres")]
impl Drop for Fixture {
    fn drop(&mut self) {
        if let Fixture::Postgres { url, schema, .. } = self {
            pg::drop_schema(url, schema);
        }
    }
}

#[cfg(feature = "postgres")]
pub mod pg {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn connect(url: &str) -> Result<postgres::Client, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| format!("{url} is not a database URL: {e}"))?;
        config.connect_timeout(Duration::from_secs(5));
        config.connect(postgres::NoTls).map_err(|e| format!("cannot connect to {url}: {e}"))
    }

    /// The test PostgreSQL's URL, checked once per test binary; `None` to skip.
    pub fn url() -> Option<String> {
        static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
        let explicit = std::env::var("OUTPOST_TEST_POSTGRES")
            .ok()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .filter(|u| !u.is_empty());
        let required = explicit.is_some() || std::env::var("CI").is_ok_and(|v| v == "true");
        let checked = CHECKED.get_or_init(|| {
            let url = explicit.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
            connect(&url).map(|_| url)
        });
        match checked {
            Ok(url) => Some(url.clone()),
            Err(e) if required => panic!("PostgreSQL is required here (CI, or a URL was given): {e}"),
            Err(e) => {
                eprintln!("skipping a PostgreSQL test: {e} (set OUTPOST_TEST_POSTGRES to run them)");
                None
            }
        }
    }

    /// A schema name no other test (of this run or another) uses.
    pub fn fresh_schema_name() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        format!("outpost_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub fn drop_schema(url: &str, schema: &str) {
        let dropped = connect(url).and_then(|mut client| {
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .map_err(|e| format!("dropping schema {schema}: {e}"))
        });
        if let Err(e) = dropped {
            eprintln!("warning: {e}");
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
