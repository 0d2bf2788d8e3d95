//! The harness of the integration tests: real `outpost` processes (the binary this package
//! builds), talking real HTTP on loopback. Each site has its own SQLite file in a temporary
//! directory; the central server has one too, or, on [`Backend::Postgres`], a fresh schema of
//! its own on the test PostgreSQL (dropped at the end), which several server processes may
//! share. The databases are inspected read-only from the test, beside the processes, with the
//! same SQL on both backends ([`rows`], [`count`], [`dump`]…).
//!
//! Every child process is owned by a guard that kills it (SIGKILL) when dropped, so a failing
//! test leaves nothing running.
//!
//! Between the processes, [`Proxy`] cuts connections after so many bytes, and [`link::Link`]
//! shapes a slow link: rates, delay, stalls, cuts, a link that is down or a peer that vanished.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod link;

/// The machine every process of the tests runs on, unless a test says otherwise: its identity
/// file is given to every `outpost` command (`OUTPOST_MACHINE_ID_FILE`), and raw requests carry
/// the fingerprint the binary would send ([`machine`]).
pub const TEST_MACHINE_ID: &str = "outpost-test-machine";

/// A file holding [`TEST_MACHINE_ID`], written once per test process (atomically: a command
/// must never read it half written).
pub fn test_machine_file() -> &'static Path {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("outpost-test-machine-{}", std::process::id()));
        let partial = dir.join(format!("outpost-test-machine-{}.partial", std::process::id()));
        std::fs::write(&partial, TEST_MACHINE_ID).expect("write the test machine's identity");
        std::fs::rename(&partial, &path).expect("put the test machine's identity in place");
        path
    })
}

/// What `site` sends as its machine from the test machine.
pub fn machine(site: &str) -> String {
    site::machine::fingerprint_of(TEST_MACHINE_ID, site)
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_outpost");

/// How long one command may take before the test gives up on it (far above what any takes).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A base command with a clean environment: nothing inherited may point it elsewhere.
pub fn outpost() -> Command {
    // `OUTPOST_TEST_BIN` runs the suite against another build (an older one, to watch a test
    // fail before its fix).
    let mut command = Command::new(std::env::var_os("OUTPOST_TEST_BIN").unwrap_or_else(|| BIN.into()));
    command
        .env_remove("OUTPOST_DATA")
        .env_remove("OUTPOST_DATABASE")
        .env_remove("OUTPOST_DB_SCHEMA")
        .env_remove("OUTPOST_SITE_PASSWORD")
        .env_remove("OUTPOST_ADMIN_PASSWORD")
        .env_remove("OUTPOST_IDLE_TIMEOUT_SECS")
        .env_remove("OUTPOST_MAX_CONNECTIONS_PER_ADDRESS")
        .env("OUTPOST_MACHINE_ID_FILE", test_machine_file())
        .env("OUTPOST_LOG", "warn");
    command
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with everything the command said unless it succeeded.
    pub fn ok(self) -> Run {
        assert!(
            self.success(),
            "`{}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed.
    pub fn failed(self) -> Run {
        assert!(
            !self.success(),
            "`{}` should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default().trim()
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    pub what: String,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(what: impl Into<String>, command: &mut Command) -> ChildGuard {
        let what = what.into();
        let child = command.spawn().unwrap_or_else(|e| panic!("starting `{what}`: {e}"));
        ChildGuard { what, child: Some(child) }
    }

    /// Whether the process has exited (and its status), without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("`{}` did not finish within {timeout:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion (at most [`COMMAND_TIMEOUT`]), capturing what it prints.
pub fn run(what: &str, command: &mut Command) -> Run {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(what, command);
    let child = guard.child.as_mut().expect("just spawned");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = guard.wait(COMMAND_TIMEOUT);
    Run {
        what: what.to_owned(),
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Polls `done` every few milliseconds until it holds; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

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

/// The database a central server runs on, as a test chooses it: SQLite (a file in the
/// server's data directory), or PostgreSQL (a fresh schema for each central server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres {
        url: String,
        /// Whether the test runs alone among this binary's PostgreSQL tests (see [`Backend::alone`]).
        alone: bool,
    },
}

impl Backend {
    /// The test PostgreSQL (see [`pg::url`]), or `None` when the test is to be skipped.
    #[cfg(feature = "postgres")]
    pub fn postgres() -> Option<Backend> {
        pg::url().map(|url| Backend::Postgres { url, alone: false })
    }

    /// The same backend, for a test whose long transactions (thousands of records in one) would
    /// hold back the other tests' pulls: on PostgreSQL a pull serves a change only once every
    /// older transaction of the whole cluster has ended, and a site waits for that only a few
    /// seconds. Such a test runs alone among the PostgreSQL tests of its binary (they share
    /// their turns otherwise); SQLite tests are not held.
    pub fn alone(&self) -> Backend {
        match self {
            Backend::Sqlite => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, .. } => Backend::Postgres { url: url.clone(), alone: true },
        }
    }

    pub fn is_postgres(&self) -> bool {
        !matches!(self, Backend::Sqlite)
    }
}

/// Where one central server's database lives. A PostgreSQL schema is dropped with it.
#[derive(Debug)]
pub enum CentralDb {
    /// The data directory (holding `outpost.sqlite`).
    Sqlite(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(Box<pg::Schema>),
}

impl CentralDb {
    /// The arguments that point an `outpost central …` command at this database.
    pub fn args(&self) -> Vec<OsString> {
        match self {
            CentralDb::Sqlite(data) => vec!["--data".into(), data.into()],
            #[cfg(feature = "postgres")]
            CentralDb::Postgres(schema) => {
                vec!["--database".into(), schema.url.as_str().into(), "--db-schema".into(), schema.name.as_str().into()]
            }
        }
    }

    /// Opens the database with the library, as a server process would.
    pub fn open(&self) -> store::Db {
        match self {
            CentralDb::Sqlite(data) => store::Db::open(&db_file(data)).expect("open the central database"),
            #[cfg(feature = "postgres")]
            CentralDb::Postgres(schema) => {
                store::Db::open_postgres(&schema.url, Some(&schema.name)).expect("open the central database")
            }
        }
    }

    /// Runs SQL statements on the database behind the server's back (e.g. to corrupt a record).
    pub fn execute(&self, sql: &str) {
        match self {
            CentralDb::Sqlite(data) => {
                let conn = Connection::open(db_file(data)).expect("open the central file");
                conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
                conn.execute_batch(sql).unwrap_or_else(|e| panic!("`{sql}`: {e}"));
            }
            #[cfg(feature = "postgres")]
            CentralDb::Postgres(schema) => schema.execute(sql),
        }
    }
}

/// A database to read from in a test: a node's SQLite file, or a central server's PostgreSQL
/// schema.
#[derive(Debug, Clone, Copy)]
pub enum DbRef<'a> {
    /// A data directory (holding `outpost.sqlite`).
    Sqlite(&'a Path),
    #[cfg(feature = "postgres")]
    Postgres(&'a pg::Schema),
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

impl Inspect for CentralDb {
    fn db_ref(&self) -> DbRef<'_> {
        match self {
            CentralDb::Sqlite(data) => DbRef::Sqlite(data),
            #[cfg(feature = "postgres")]
            CentralDb::Postgres(schema) => DbRef::Postgres(schema),
        }
    }
}

impl Inspect for Central {
    fn db_ref(&self) -> DbRef<'_> {
        self.db.db_ref()
    }
}

impl Inspect for Site {
    fn db_ref(&self) -> DbRef<'_> {
        DbRef::Sqlite(&self.data)
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

/// The test PostgreSQL: where it is, and a schema of its own for each central server.
#[cfg(feature = "postgres")]
pub mod pg {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn connect(url: &str) -> Result<postgres::Client, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| format!("{url} is not a database URL: {e}"))?;
        config.connect_timeout(Duration::from_secs(5));
        config.connect(postgres::NoTls).map_err(|e| format!("cannot connect to {url}: {e}"))
    }

    /// The test PostgreSQL's URL: `OUTPOST_TEST_POSTGRES`, else `DATABASE_URL`, else
    /// `postgres://postgres@127.0.0.1:5432/test`, checked once per test binary. `None` (skip,
    /// saying so) when none was given and the default does not answer; a panic when one was
    /// given, or under `CI=true`, since a missing PostgreSQL must not pass as a green run there.
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

    /// A test's turn on the test PostgreSQL: shared with the other tests of its binary, or alone
    /// (see [`super::Backend::alone`]).
    #[derive(Debug)]
    pub enum Turn {
        Shared(RwLockReadGuard<'static, ()>),
        Alone(RwLockWriteGuard<'static, ()>),
    }

    pub fn turn(alone: bool) -> Turn {
        static TURNS: RwLock<()> = RwLock::new(());
        if alone {
            Turn::Alone(TURNS.write().unwrap_or_else(|poisoned| poisoned.into_inner()))
        } else {
            Turn::Shared(TURNS.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
        }
    }

    /// A schema name no other test (of this run or another) uses.
    fn fresh_name() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        format!("outpost_it_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A schema of its own on the test PostgreSQL (created by `outpost central init`), dropped
    /// with this value. The test reads it through one connection of its own.
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
            Schema { url: url.to_owned(), name: fresh_name(), client: Mutex::new(None) }
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
            let reader =
                self.client.get_mut().map(Option::take).unwrap_or_else(|poisoned| poisoned.into_inner().take());
            drop(reader);
            let dropped = connect(&self.url).and_then(|mut client| {
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
                    .map_err(|e| format!("dropping schema {}: {e}", self.name))
            });
            if let Err(e) = dropped {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// One `outpost central serve` process: started on a free port the first time, on the same
/// address after a restart. Its log (stderr) goes to a file, shown when a test fails.
#[derive(Debug)]
pub struct Server {
    name: String,
    db_args: Vec<OsString>,
    log: PathBuf,
    addr: Option<SocketAddr>,
    process: Option<ChildGuard>,
    /// More arguments for `central serve` (see [`Central::serve_with`]).
    serve_args: Mutex<Vec<OsString>>,
}

impl Server {
    fn new(name: &str, db: &CentralDb, log: PathBuf) -> Server {
        Server {
            name: name.to_owned(),
            db_args: db.args(),
            log,
            addr: None,
            process: None,
            serve_args: Mutex::default(),
        }
    }

    /// Starts the server and waits for it to say where it listens; returns its URL.
    pub fn start(&mut self) -> String {
        assert!(self.process.is_none(), "the central server `{}` is already running", self.name);
        let listen = self.addr.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        // After a kill the old port may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_start(&listen) {
                Ok(addr) => {
                    self.addr = Some(addr);
                    return self.url();
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("starting the central server `{}` again: {e}", self.name);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("the central server `{}` did not start: {e}", self.name),
            }
        }
    }

    fn try_start(&mut self, listen: &str) -> Result<SocketAddr, String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("server log");
        let mut guard = ChildGuard::spawn(
            format!("central serve ({})", self.name),
            outpost()
                .args(["central", "serve", "--listen", listen])
                .args(&self.db_args)
                .args(self.serve_args.lock().expect("serve arguments").iter())
                .env("OUTPOST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log),
        );
        let stdout = guard.child.as_mut().and_then(|c| c.stdout.take()).expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        // Reads the first line for the address, then keeps draining until the process ends.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = sender.send(lines.next());
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(line))) => line,
            other => return Err(format!("no address line ({other:?}); see {}", self.log.display())),
        };
        let addr = line
            .strip_prefix("central server listening on http://")
            .ok_or_else(|| format!("unexpected first line `{line}`"))?
            .trim()
            .parse()
            .map_err(|e| format!("`{line}`: {e}"))?;
        self.process = Some(guard);
        Ok(addr)
    }

    /// SIGKILL: no shutdown, no flush; what was committed is what there is.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(|| panic!("the central server `{}` was started", self.name))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The server's log (stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    /// A failing test's temporary directory goes with it: show what the server logged first.
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- the central server `{}`'s log (last lines) ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A central server: its database, and its `serve` process while it runs.
#[derive(Debug)]
pub struct Central {
    // Dropped in this order: the process ends before its database goes, and the database before
    // the test's turn on PostgreSQL ends.
    server: Server,
    root: PathBuf,
    pub db: CentralDb,
    #[cfg(feature = "postgres")]
    _turn: Option<pg::Turn>,
}

impl Central {
    /// `outpost central init` on `backend`: in `root/central` on SQLite, in a fresh schema on
    /// PostgreSQL.
    pub fn init(root: &Path, backend: &Backend) -> Central {
        #[cfg(feature = "postgres")]
        let turn = match backend {
            Backend::Sqlite => None,
            Backend::Postgres { alone, .. } => Some(pg::turn(*alone)),
        };
        let db = match backend {
            Backend::Sqlite => CentralDb::Sqlite(root.join("central")),
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, .. } => CentralDb::Postgres(Box::new(pg::Schema::fresh(url))),
        };
        run(
            "central init",
            outpost().args(["central", "init"]).args(db.args()).env("OUTPOST_ADMIN_PASSWORD", ADMIN_PASSWORD),
        )
        .ok();
        let server = Server::new("central", &db, root.join("central.log"));
        Central {
            server,
            root: root.to_owned(),
            db,
            #[cfg(feature = "postgres")]
            _turn: turn,
        }
    }

    /// The SQLite data directory (for the tests that work on the file itself).
    pub fn data(&self) -> &Path {
        match &self.db {
            CentralDb::Sqlite(data) => data,
            #[cfg(feature = "postgres")]
            CentralDb::Postgres(_) => panic!("this test works on the central server's SQLite file"),
        }
    }

    pub fn is_postgres(&self) -> bool {
        !matches!(self.db, CentralDb::Sqlite(_))
    }

    /// Runs `outpost central ARGS` on this server's database; it must succeed.
    pub fn admin(&self, what: &str, args: &[&str]) -> Run {
        run(what, outpost().arg("central").args(args).args(self.db.args())).ok()
    }

    /// Adds a remote site; returns its password (the last line the command prints).
    pub fn add_site(&self, name: &str) -> String {
        let out = self.admin("central site add", &["site", "add", name]);
        let password = out.last_line().to_owned();
        assert!(password.len() >= 16 && !password.contains(' '), "no password in: {}", out.stdout);
        password
    }

    pub fn add_store(&self, store: &str, active_on: &str) {
        self.admin("central store add", &["store", "add", store, "--active-on", active_on]);
    }

    pub fn sync_type(&self, store: &str, site: &str, sync_type: &str) {
        self.admin("central store sync-type", &["store", "sync-type", store, site, sync_type]);
    }

    /// `outpost central write TABLE ID JSON` (checked like any write on the central server).
    pub fn write(&self, table: &str, id: &str, json: &serde_json::Value) {
        self.admin("central write", &["write", table, id, &json.to_string()]);
    }

    pub fn status(&self) -> String {
        self.admin("central status", &["status"]).stdout
    }

    /// Starts `outpost central serve` (on a free port the first time, on the same address after
    /// a restart) and waits for it to say where it listens.
    pub fn start(&mut self) -> String {
        self.server.start()
    }

    /// More arguments for `outpost central serve` from its next start on (e.g. small timeouts);
    /// callable from [`Network::with`]'s `prepare`.
    pub fn serve_with(&self, args: &[&str]) {
        *self.server.serve_args.lock().expect("serve arguments") = args.iter().map(OsString::from).collect();
    }

    /// Another `outpost central serve` process on the same database (not started yet).
    pub fn another_server(&self, name: &str) -> Server {
        Server::new(name, &self.db, self.root.join(format!("central-{name}.log")))
    }

    /// SIGKILL: no shutdown, no flush; what was committed is what there is.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The server's log (stderr), for failure messages.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// A remote site's data directory and identity.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub data: PathBuf,
    pub password: String,
}

impl Site {
    /// `outpost site init` in `root/NAME` against `central_url`.
    pub fn init(root: &Path, name: &str, central_url: &str, password: &str) -> Site {
        Self::init_in(&root.join(name), name, central_url, password)
    }

    pub fn init_in(data: &Path, name: &str, central_url: &str, password: &str) -> Site {
        run(
            "site init",
            outpost()
                .args(["site", "init", "--central", central_url, "--site", name, "--data"])
                .arg(data)
                .env("OUTPOST_SITE_PASSWORD", password),
        )
        .ok();
        Site { name: name.to_owned(), data: data.to_owned(), password: password.to_owned() }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = outpost();
        command.arg("site").args(args).arg("--data").arg(&self.data);
        command
    }

    /// `outpost site sync`, which may fail.
    pub fn try_sync(&self) -> Run {
        run(&format!("site sync ({})", self.name), &mut self.command(&["sync"]))
    }

    /// `outpost site sync` that tries each exchange once (no retry after a broken link), which
    /// may fail.
    pub fn try_sync_once(&self) -> Run {
        run(
            &format!("site sync, one attempt ({})", self.name),
            self.command(&["sync"]).env(site::sync::ATTEMPTS_ENV, "1"),
        )
    }

    /// `outpost site sync`, which must succeed.
    pub fn sync(&self) -> Run {
        self.try_sync().ok()
    }

    /// `outpost site sync` in the background (to be killed, or waited for).
    pub fn spawn_sync(&self) -> ChildGuard {
        ChildGuard::spawn(
            format!("site sync ({})", self.name),
            self.command(&["sync"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()),
        )
    }

    /// Points the site at another central server (the `central_url` that `site init` stored).
    pub fn set_central(&self, url: &str) {
        self.db().set_state("central_url", url).expect("set the site's central URL");
    }

    pub fn write(&self, table: &str, id: &str, json: &serde_json::Value) {
        run("site write", &mut self.command(&["write", table, id, &json.to_string()])).ok();
    }

    /// `outpost site get`: the record, or `None` when the site does not hold it.
    pub fn get(&self, table: &str, id: &str) -> Option<serde_json::Value> {
        let out = run("site get", &mut self.command(&["get", table, id]));
        if out.success() {
            Some(serde_json::from_str(out.stdout.trim()).expect("`site get` prints JSON"))
        } else {
            assert!(out.stderr.contains("no `"), "`site get` failed otherwise: {}", out.stderr);
            None
        }
    }

    pub fn status(&self) -> String {
        run("site status", &mut self.command(&["status"])).ok().stdout
    }

    pub fn rejected(&self) -> String {
        run("site rejected", &mut self.command(&["rejected"])).ok().stdout
    }

    /// Opens this site's database with the library (e.g. to write many records at once).
    pub fn db(&self) -> store::Db {
        store::Db::open(&db_file(&self.data)).expect("open the site's database")
    }
}

/// A small network: a central server (also the primary), running, and remote sites each with
/// one active store `store-NAME`, initialised (not synced yet).
#[derive(Debug)]
pub struct Network {
    // Dropped in this order: the server (showing its log if the test failed) before the
    // temporary directory that holds the log.
    pub central: Central,
    pub sites: Vec<Site>,
    pub root: tempfile::TempDir,
}

impl Network {
    pub fn new(backend: &Backend, sites: &[&str]) -> Network {
        Self::with(backend, sites, |_| {})
    }

    /// Like [`Network::new`], with `prepare` run on the central server before it starts.
    pub fn with(backend: &Backend, sites: &[&str], prepare: impl FnOnce(&Central)) -> Network {
        let root = tempfile::tempdir().expect("temporary directory");
        let mut central = Central::init(root.path(), backend);
        let mut passwords = Vec::new();
        for site in sites {
            passwords.push(central.add_site(site));
            central.add_store(&format!("store-{site}"), site);
        }
        prepare(&central);
        let url = central.start();
        let sites = sites
            .iter()
            .zip(passwords)
            .map(|(name, password)| Site::init(root.path(), name, &url, &password))
            .collect();
        Network { central, sites, root }
    }

    pub fn site(&self, name: &str) -> &Site {
        self.sites.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no site `{name}`"))
    }
}

/// Runs each named test body (`fn name(backend: &Backend)`) once per central server backend,
/// as `sqlite::name` and `postgres::name`, so that a failure names its backend. A PostgreSQL
/// test is skipped (saying so) when there is no PostgreSQL to reach, except under `CI=true`.
/// Attributes before a name (`#[ignore = "…"]`) go on both tests.
#[allow(unused_macros)]
macro_rules! on_each_backend {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    super::$name(&crate::common::Backend::Sqlite);
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    if let Some(backend) = crate::common::Backend::postgres() {
                        super::$name(&backend);
                    }
                }
            )*
        }
    };
}

/// Raw HTTP to the central server, for requests a well-behaved site never makes.
#[derive(Debug)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

/// A raw answer: status, headers that matter, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_encoding: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The `error.code` of a JSON error body (panics when the body is not one).
    pub fn error_code(&self) -> String {
        let body: protocol::ErrorBody = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {}", String::from_utf8_lossy(&self.body)));
        assert!(!body.error.message.is_empty(), "an error without a message");
        body.error.code
    }

    pub fn push_response(&self) -> protocol::PushResponse {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        protocol::decode(&self.body).expect("a zstd JSON push answer")
    }

    pub fn pull_response(&self) -> protocol::PullResponse {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        protocol::decode(&self.body).expect("a zstd JSON pull answer")
    }
}

pub fn basic(site: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{site}:{password}")))
}

impl Http {
    pub fn new(base: &str) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Http { agent: config.into(), base: base.trim_end_matches('/').to_owned() }
    }

    /// POSTs `body` to `/api/v1/sites/{site}/{action}` with these headers.
    pub fn post(&self, site: &str, action: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut request = self.agent.post(format!("{}/api/v1/sites/{site}/{action}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(body).unwrap_or_else(|e| panic!("POST {action}: {e}"));
        Self::answer(&mut response)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Self::answer(&mut response)
    }

    fn answer(response: &mut ureq::http::Response<ureq::Body>) -> Answer {
        let status = response.status().as_u16();
        let content_encoding =
            response.headers().get("content-encoding").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.body_mut().with_config().limit(128 << 20).read_to_vec().expect("read the body");
        Answer { status, content_encoding, body }
    }

    /// A push as a site makes it: credentials, protocol version, zstd JSON.
    pub fn push(&self, site: &str, password: &str, request: &protocol::PushRequest) -> Answer {
        self.post(site, "push", &good_headers(site, password).as_refs(), &protocol::encode(request))
    }
}

/// The headers of a well-formed request.
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn as_refs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }
}

pub fn good_headers(site: &str, password: &str) -> Headers {
    Headers(vec![
        ("authorization".into(), basic(site, password)),
        ("outpost-protocol".into(), protocol::PROTOCOL_VERSION.to_string()),
        (protocol::MACHINE_HEADER.into(), machine(site)),
        ("content-type".into(), "application/json".into()),
        ("content-encoding".into(), "zstd".into()),
    ])
}

/// A change as a site's log holds it (built from JSON text: the record travels as raw JSON).
pub fn change(seq: i64, origin: &str, table: &str, id: &str, data: &serde_json::Value) -> model::Change {
    let text = serde_json::json!({
        "seq": seq, "table": table, "id": id, "action": "upsert", "data": data, "origin": origin,
    })
    .to_string();
    serde_json::from_str(&text).expect("a change")
}

/// Where a [`Proxy`] cuts the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forward everything.
    Never,
    /// After this many bytes from the site to the central server.
    Requests(u64),
    /// After this many bytes from the central server to the site.
    Responses(u64),
}

#[derive(Debug)]
struct ProxyState {
    cut: Mutex<Cut>,
    up: AtomicU64,
    down: AtomicU64,
    cuts: AtomicUsize,
    stop: AtomicBool,
}

/// A TCP proxy on loopback between a site and the central server that forwards bytes until a
/// budget is spent, then closes both sides of the connection (and refuses further ones).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState {
            cut: Mutex::new(Cut::Never),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            cuts: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = state.clone();
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let state = shared.clone();
                std::thread::spawn(move || connect(client, upstream, state));
            }
        });
        Proxy { addr, state, acceptor: Some(acceptor) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets where to cut from now on, with fresh byte counts.
    pub fn set(&self, cut: Cut) {
        let mut current = self.state.cut.lock().expect("proxy lock");
        self.state.up.store(0, Ordering::SeqCst);
        self.state.down.store(0, Ordering::SeqCst);
        *current = cut;
    }

    /// How many times a connection was cut.
    pub fn cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn connect(client: TcpStream, upstream: SocketAddr, state: Arc<ProxyState>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { return };
    let ends = (client.try_clone().ok(), server.try_clone().ok());
    let both = Arc::new(Mutex::new(ends));
    let up_state = state.clone();
    let up_both = both.clone();
    let up = std::thread::spawn(move || pump(client, server, true, &up_state, &up_both));
    pump(server2, client2, false, &state, &both);
    let _ = up.join();
}

/// Copies bytes one way; on reaching the budget, forwards what fits and closes both sockets.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    upward: bool,
    state: &ProxyState,
    both: &Mutex<(Option<TcpStream>, Option<TcpStream>)>,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let cut = *state.cut.lock().expect("proxy lock");
        let budget = match (cut, upward) {
            (Cut::Requests(limit), true) | (Cut::Responses(limit), false) => Some(limit),
            _ => None,
        };
        let counter = if upward { &state.up } else { &state.down };
        let before = counter.fetch_add(n as u64, Ordering::SeqCst);
        let allowed = budget.map_or(n, |limit| limit.saturating_sub(before).min(n as u64) as usize);
        if allowed > 0 && to.write_all(&buf[..allowed]).is_err() {
            return;
        }
        if allowed < n {
            state.cuts.fetch_add(1, Ordering::SeqCst);
            if let Ok(ends) = both.lock() {
                for end in [&ends.0, &ends.1].into_iter().flatten() {
                    let _ = end.shutdown(Shutdown::Both);
                }
            }
            return;
        }
    }
}

/// The administrator's password of every test central server (`central init` takes it from
/// `OUTPOST_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "test admin passphrase";

impl Server {
    /// The process id of the running `serve` process (to read its memory use).
    pub fn pid(&self) -> u32 {
        let process = self.process.as_ref().unwrap_or_else(|| panic!("the central server `{}` runs", self.name));
        process.child.as_ref().map(Child::id).expect("a running child")
    }
}

impl Central {
    /// The process id of the running `central serve` process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }
}

/// The peak resident memory of a process, in KiB (`VmHWM` of `/proc/PID/status`, Linux).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

impl ChildGuard {
    /// The child's piped standard error (to read what it logs).
    pub fn take_stderr(&mut self) -> std::process::ChildStderr {
        self.child.as_mut().and_then(|c| c.stderr.take()).expect("a piped stderr")
    }

    /// The child's piped standard output (to read what it prints).
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child.as_mut().and_then(|c| c.stdout.take()).expect("a piped stdout")
    }
}

/// Writes as an old or misbehaving site would: straight into its SQLite file, a record and its
/// change-log entry in one transaction, without the checks that `outpost site write` makes.
pub fn write_behind_the_checks(site: &Site, table: &str, id: &str, data: &serde_json::Value) -> i64 {
    let mut conn = rusqlite::Connection::open(db_file(&site.data)).expect("open the site's file");
    let tx = conn.transaction().expect("begin");
    tx.execute(
        "INSERT INTO change_log (tbl, record_id, action, origin_site) VALUES (?1, ?2, 'upsert', ?3)",
        rusqlite::params![table, id, site.name],
    )
    .expect("log the change");
    let seq = tx.last_insert_rowid();
    let store = data.get("store_id").and_then(|s| s.as_str());
    tx.execute(
        "INSERT INTO record (tbl, id, store_id, data, log_seq) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tbl, id) DO UPDATE SET data = excluded.data, store_id = excluded.store_id, log_seq = excluded.log_seq",
        rusqlite::params![table, id, store, data.to_string(), seq],
    )
    .expect("write the record");
    tx.commit().expect("commit");
    seq
}

/// Writes `n` items on the central server (central data: every site receives them), all in
/// one transaction; `edition` changes their names, for a new version of each.
pub fn write_items(central: &Central, n: usize, edition: u32) {
    let started = Instant::now();
    let engine = central::Engine::new(Arc::new(central.db.open()));
    let writes: Vec<store::Write> = (0..n)
        .map(|i| {
            store::Write::upsert(
                "item",
                format!("item-{i:06}"),
                &serde_json::json!({"code": format!("C{i:06}"), "name": format!("Essential medicine {i} ({edition})"), "unit_id": "unit-tab", "default_pack_size": 10 + i % 90}),
            )
        })
        .collect();
    engine.write(&writes).expect("write the items");
    eprintln!("wrote {n} items on the central server in {:.1?}", started.elapsed());
}

/// Writes `n` stock lines of the site's store on the site, with the library (checked and logged
/// like `outpost site write`, in one transaction).
pub fn write_stock_lines(site: &Site, n: usize) {
    let started = Instant::now();
    let store = format!("store-{}", site.name);
    let writes: Vec<store::Write> = (1..=n)
        .map(|i| {
            store::Write::upsert(
                "stock_line",
                format!("sl-{i:06}"),
                &serde_json::json!({"store_id": store, "item_id": format!("item-{:06}", i % 1000), "batch": format!("B{i:06}"), "expiry_date": "2027-12-31", "pack_size": 10, "total_packs": i % 500, "cost_price_per_pack": 2.5}),
            )
        })
        .collect();
    site.db().write(&writes).expect("write the stock lines");
    eprintln!("wrote {n} stock lines on `{}` in {:.1?}", site.name, started.elapsed());
}

/// Replaces what changes from run to run (times, the server's port) in text a person reads.
pub fn masked(text: &str, central_url: &str) -> String {
    let text = text.replace(central_url, "http://<central>");
    let mut out = String::new();
    for word in text.split_inclusive(char::is_whitespace) {
        let bare = word.trim_end().trim_end_matches(':');
        let is_time = bare.len() >= 20 && bare.as_bytes().get(4) == Some(&b'-') && bare.contains('T');
        out.push_str(&if is_time { word.replacen(bare, "<time>", 1) } else { word.to_owned() });
    }
    out
}
