//! Central servers of real `outpost` processes: the database a test chooses for one
//! ([`Backend`]: SQLite, or a fresh schema on the test PostgreSQL), `outpost central init` and
//! the administration commands ([`Central`]), and its `outpost central serve` processes
//! ([`Server`]), started on a free port, restarted on the same address, killed with SIGKILL, their
//! log shown when a test fails.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::dump::{db_file, DbRef, Inspect};
#[cfg(feature = "postgres")]
use crate::postgres as pg;
use crate::process::{outpost, run, Binary, ChildGuard, Run};

/// The administrator's password of every test central server (`central init` takes it from
/// `OUTPOST_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "test admin passphrase";

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
    /// The test PostgreSQL (see [`pg::url`]), or `None` when the test is to be skipped (and
    /// has been reported skipped).
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

impl Inspect for CentralDb {
    fn db_ref(&self) -> DbRef<'_> {
        match self {
            CentralDb::Sqlite(data) => DbRef::Sqlite(data),
            #[cfg(feature = "postgres")]
            CentralDb::Postgres(schema) => DbRef::Postgres(schema),
        }
    }
}

impl<B: Binary> Inspect for Central<B> {
    fn db_ref(&self) -> DbRef<'_> {
        self.db.db_ref()
    }
}

/// One `outpost central serve` process: started on a free port the first time, on the same
/// address after a restart. Its log (stderr) goes to a file, shown when a test fails.
#[derive(Debug)]
pub struct Server<B: Binary> {
    name: String,
    db_args: Vec<OsString>,
    log: PathBuf,
    addr: Option<SocketAddr>,
    process: Option<ChildGuard>,
    /// More arguments for `central serve` (see [`Central::serve_with`]).
    serve_args: Mutex<Vec<OsString>>,
    binary: PhantomData<fn() -> B>,
}

impl<B: Binary> Server<B> {
    fn new(name: &str, db: &CentralDb, log: PathBuf) -> Server<B> {
        Server {
            name: name.to_owned(),
            db_args: db.args(),
            log,
            addr: None,
            process: None,
            serve_args: Mutex::default(),
            binary: PhantomData,
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
            outpost::<B>()
                .args(["central", "serve", "--listen", listen])
                .args(&self.db_args)
                .args(self.serve_args.lock().expect("serve arguments").iter())
                .env("OUTPOST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log),
        );
        let stdout = guard.take_stdout();
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

    /// The process id of the running `serve` process (to read its memory use).
    pub fn pid(&self) -> u32 {
        let process = self.process.as_ref().unwrap_or_else(|| panic!("the central server `{}` runs", self.name));
        process.id()
    }
}

impl<B: Binary> Drop for Server<B> {
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
pub struct Central<B: Binary> {
    // Dropped in this order: the process ends before its database goes, and the database before
    // the test's turn on PostgreSQL ends.
    server: Server<B>,
    root: PathBuf,
    pub db: CentralDb,
    #[cfg(feature = "postgres")]
    _turn: Option<pg::Turn>,
}

impl<B: Binary> Central<B> {
    /// `outpost central init` on `backend`: in `root/central` on SQLite, in a fresh schema on
    /// PostgreSQL.
    pub fn init(root: &Path, backend: &Backend) -> Central<B> {
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
            outpost::<B>().args(["central", "init"]).args(db.args()).env("OUTPOST_ADMIN_PASSWORD", ADMIN_PASSWORD),
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
        self.try_admin(what, args).ok()
    }

    /// Runs `outpost central ARGS` on this server's database, whatever its outcome.
    pub fn try_admin(&self, what: &str, args: &[&str]) -> Run {
        run(what, outpost::<B>().arg("central").args(args).args(self.db.args()))
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
    /// callable from [`crate::network::Network::with`]'s `prepare`.
    pub fn serve_with(&self, args: &[&str]) {
        *self.server.serve_args.lock().expect("serve arguments") = args.iter().map(OsString::from).collect();
    }

    /// Another `outpost central serve` process on the same database (not started yet).
    pub fn another_server(&self, name: &str) -> Server<B> {
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

    /// The process id of the running `central serve` process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }
}

/// Writes `n` items on the central server (central data: every site receives them), all in
/// one transaction; `edition` changes their names, for a new version of each.
pub fn write_items<B: Binary>(central: &Central<B>, n: usize, edition: u32) {
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
