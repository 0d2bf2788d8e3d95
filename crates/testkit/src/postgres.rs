//! The test PostgreSQL, one discovery for every crate's tests: where it is, a schema of its own
//! for each test (or each central server), and what happens when there is none to reach.
//!
//! PostgreSQL is at `OUTPOST_TEST_POSTGRES`, else `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`, checked once per test binary ([`url`]).
//!
//! # Skipped tests
//!
//! Rust's test harness cannot mark a test as skipped, so a PostgreSQL test that cannot reach its
//! server returns early, which the harness counts as passed. So that a skip never passes for a
//! green run unseen, [`url`] reports it by name:
//!
//! - it prints `SKIPPED <test name>: <reason>` to standard error, past the harness's capture,
//!   so the line shows in every `cargo test` run beside the test's `ok`;
//! - it appends a line `<test binary> <test name>: <reason>` to the skip report: the file named by
//!   `OUTPOST_SKIP_REPORT`, else `postgres-skipped.txt` in the target directory (beside `debug/`).
//!   The report only grows; delete it before a run to see that run's skips alone;
//! - it fails the test instead when PostgreSQL is required: under `CI=true`, with
//!   `OUTPOST_REQUIRE_POSTGRES=1`, or when a URL was given (`OUTPOST_TEST_POSTGRES`,
//!   `DATABASE_URL`), since then a missing server is a broken setup, not a choice.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the test PostgreSQL is when no URL is given.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The file that collects the skipped tests' names (default: `postgres-skipped.txt` in the
/// target directory).
pub const SKIP_REPORT_ENV: &str = "OUTPOST_SKIP_REPORT";

/// `1` makes a missing PostgreSQL fail the tests that need it, as `CI=true` does.
pub const REQUIRE_ENV: &str = "OUTPOST_REQUIRE_POSTGRES";

/// A connection to `url`, giving up after five seconds.
pub fn connect(url: &str) -> Result<postgres::Client, String> {
    let mut config: postgres::Config = url.parse().map_err(|e| format!("{url} is not a database URL: {e}"))?;
    config.connect_timeout(Duration::from_secs(5));
    config.connect(postgres::NoTls).map_err(|e| format!("cannot connect to {url}: {e}"))
}

/// The URL given for the test PostgreSQL, if any.
fn explicit_url() -> Option<String> {
    std::env::var("OUTPOST_TEST_POSTGRES").ok().or_else(|| std::env::var("DATABASE_URL").ok()).filter(|u| !u.is_empty())
}

/// Why a missing PostgreSQL must fail the test rather than skip it, if it must.
fn required() -> Option<&'static str> {
    if explicit_url().is_some() {
        Some("a URL was given")
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        Some("CI=true")
    } else if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        Some("OUTPOST_REQUIRE_POSTGRES=1")
    } else {
        None
    }
}

/// The test PostgreSQL's URL, checked once per test binary. `None` when there is none to reach:
/// the running test is then reported skipped ([`skip`]) and is to return at once.
pub fn url() -> Option<String> {
    static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let url = explicit_url().unwrap_or_else(|| DEFAULT_URL.to_owned());
        connect(&url).map(|_| url)
    });
    match checked {
        Ok(url) => Some(url.clone()),
        Err(e) => {
            skip(e);
            None
        }
    }
}

/// Reports the running test as skipped for `reason`, by name (see the module's documentation),
/// or panics when PostgreSQL is required.
pub fn skip(reason: &str) {
    if let Some(why) = required() {
        panic!("PostgreSQL is required here ({why}): {reason}");
    }
    let test = test_name();
    // Straight to the standard error, not through `eprintln!`, which the harness captures (and
    // shows only for a failed test): a skip is seen in every run.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason} (set OUTPOST_TEST_POSTGRES to run it)");
    let report = skip_report();
    if let Err(e) = append_skip(&report, &test_binary(), &test, reason) {
        eprintln!("warning: cannot write the skip report {}: {e}", report.display());
    }
}

/// The running test's name: the harness runs each test on a thread named after it.
fn test_name() -> String {
    std::thread::current().name().filter(|name| *name != "main").unwrap_or("<a test on the main thread>").to_owned()
}

/// The test binary's name without Cargo's hash (`sync_faults`, not `sync_faults-0123abcd`).
fn test_binary() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_deref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned());
    let stem = stem.unwrap_or_else(|| "<test binary>".to_owned());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
        _ => stem,
    }
}

/// `OUTPOST_SKIP_REPORT`, else `postgres-skipped.txt` in the target directory: a test binary
/// runs from `<target>/<profile>/deps/`.
pub fn skip_report() -> PathBuf {
    if let Some(path) = std::env::var_os(SKIP_REPORT_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().ok();
    let deps = exe.as_deref().and_then(|p| p.parent()).filter(|dir| dir.ends_with("deps"));
    let target = deps.and_then(|deps| deps.parent()).and_then(|profile| profile.parent());
    target.map_or_else(std::env::temp_dir, |t| t.to_owned()).join("postgres-skipped.txt")
}

fn append_skip(report: &std::path::Path, binary: &str, test: &str, reason: &str) -> std::io::Result<()> {
    let mut line = String::new();
    let _ = writeln!(line, "{binary} {test}: {}", reason.replace('\n', " "));
    // One write of one line to a file opened for appending: parallel tests do not interleave.
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(report)?;
    file.write_all(line.as_bytes())
}

/// A test's turn on the test PostgreSQL: shared with the other tests of its binary, or alone.
///
/// On PostgreSQL a pull serves a change only once every older writing transaction of the whole
/// cluster has ended, so a test with long transactions, or one asserting on pulls, must not
/// wait for the other tests' transactions: it takes its turn alone.
#[derive(Debug)]
pub enum Turn {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

/// Waits for a turn on the test PostgreSQL (see [`Turn`]); held until dropped.
pub fn turn(alone: bool) -> Turn {
    static TURNS: RwLock<()> = RwLock::new(());
    if alone {
        Turn::Alone(TURNS.write().unwrap_or_else(|poisoned| poisoned.into_inner()))
    } else {
        Turn::Shared(TURNS.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// A schema name no other test (of this run or another) uses.
pub fn fresh_schema_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("outpost_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Drops a test's schema and everything in it (a warning, not a failure, when it cannot).
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

/// A schema of its own on the test PostgreSQL (created by whoever uses it, e.g. `outpost central
/// init`), dropped with this value. The test reads it through one connection of its own.
pub struct Schema {
    pub url: String,
    pub name: String,
    client: Mutex<Option<postgres::Client>>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("url", &self.url).field("name", &self.name).finish_non_exhaustive()
    }
}

impl Schema {
    pub fn fresh(url: &str) -> Schema {
        Schema { url: url.to_owned(), name: fresh_schema_name(), client: Mutex::new(None) }
    }

    fn with_client<T>(&self, f: impl FnOnce(&mut postgres::Client) -> T) -> T {
        let mut guard = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            let mut client = connect(&self.url).unwrap_or_else(|e| panic!("{e}"));
            client
                .batch_execute(&format!("SET search_path TO \"{}\"", self.name))
                .unwrap_or_else(|e| panic!("setting the search path: {e}"));
            *guard = Some(client);
        }
        f(guard.as_mut().expect("connected just now"))
    }

    /// Each statement on its own (autocommit): reading never holds a transaction open that
    /// the servers' pulls would wait for.
    pub fn query(&self, sql: &str, params: &[&str]) -> Vec<postgres::Row> {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect();
        self.with_client(|client| client.query(sql, &params)).unwrap_or_else(|e| panic!("`{sql}`: {e}"))
    }

    pub fn execute(&self, sql: &str) {
        self.with_client(|client| client.batch_execute(sql)).unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let reader = self.client.get_mut().map(Option::take).unwrap_or_else(|poisoned| poisoned.into_inner().take());
        drop(reader);
        drop_schema(&self.url, &self.name);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_skip_is_appended_to_the_report_by_name() {
        let dir = tempfile_dir();
        let report = dir.join("skipped.txt");
        super::append_skip(&report, "storage", "postgres::one", "cannot connect\nat all").expect("append");
        super::append_skip(&report, "storage", "postgres::two", "cannot connect").expect("append");
        let text = std::fs::read_to_string(&report).expect("read the report");
        assert_eq!(text, "storage postgres::one: cannot connect at all\nstorage postgres::two: cannot connect\n");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn the_test_name_is_the_harness_thread_name() {
        assert_eq!(super::test_name(), "postgres::tests::the_test_name_is_the_harness_thread_name");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("outpost-testkit-{}", super::fresh_schema_name()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    }
}
