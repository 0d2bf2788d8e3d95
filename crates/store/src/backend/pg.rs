//! The PostgreSQL backend (feature `postgres`): the same storage API as SQLite, for central
//! servers whose processes share one database.
//!
//! - **Connections.** A small pool per [`Db`](crate::Db) handle; each connection keeps its own
//!   prepared statements. A transaction holds one connection from `BEGIN` to `COMMIT`, so the
//!   transactions of one process run side by side, and those of several processes too.
//! - **Positions.** `change_log.seq` comes from the column's identity sequence: numbering a
//!   change never waits for another transaction, and nothing locks the whole log. Sequence
//!   values are handed out in write order, not commit order; each entry also records its writing
//!   transaction (`xid`), so that a reader can tell which positions may still be filled in.
//! - **The network.** Each handle caches the network its records describe. Every transaction
//!   that writes a topology record adds one, at commit, to a per-connection counter
//!   (`topology_version`, one row per server connection, so writers never queue on one row).
//!   A transaction starts by reading the counters' sum, one indexed scan of a few rows; if it
//!   moved since the cache was read, another transaction (here or in another process) changed
//!   the network, and the network is read again.
//! - **Records written twice at once.** A write reads the record `FOR UPDATE`, so two
//!   transactions writing the same record take turns, and each supersedes the other's log entry.

use super::{change_columns, change_from_parts, take_bounded, Backend, Sql, TxSql};
use crate::db::{network_from_records, Current, Put, Tx};
use crate::history::{Debt, DebtSample, SyncRequest, SyncSession, KEEP_SAMPLES_SECS, KEEP_SESSIONS_SECS};
use crate::migrations;
use crate::queries::{PullSource, Stored};
use crate::reports::{LineFacts, Scope, StockRow, UsageRow, ValueRow};
use crate::sync_state::{PushedBatch, RejectionRecord, SiteCredentials, SiteSyncRow};
use crate::{Db, DbError, Result, StoreError};
use model::network::TOPOLOGY_TABLES;
use model::{Change, LogPos, Network, RecordId, RecordKeys, Registry, Seq, SiteId};
use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, NoTls, Row, Statement, Transaction};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Connections per handle: as many transactions of one process run at once.
const POOL_SIZE: u32 = 8;
/// How long a request waits for a connection before it is told the database is busy: 10 s, or
/// `OUTPOST_PG_ACQUIRE_MS`.
fn acquire_timeout() -> std::time::Duration {
    let ms = std::env::var("OUTPOST_PG_ACQUIRE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    std::time::Duration::from_millis(ms)
}
/// The advisory lock that lets one process at a time create or migrate a schema.
const MIGRATION_LOCK: i64 = 0x6f75_7470_6f73_7400;

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing guarded here is left half-changed by a panic (a pool list, a cached network).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A PostgreSQL database, as one [`Db`](crate::Db) handle uses it.
pub(crate) struct PgDb {
    pool: r2d2::Pool<Connector>,
    network: Mutex<NetCache>,
}

impl fmt::Debug for PgDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.state();
        f.debug_struct("PgDb").field("open", &state.connections).field("idle", &state.idle_connections).finish()
    }
}

struct NetCache {
    network: Arc<Network>,
    /// The sum of `topology_version` read before `network` was.
    version: i64,
}

/// Opens the pool's connections.
#[derive(Debug)]
pub(crate) struct Connector {
    config: Config,
    /// `SET search_path ...`, run on every new connection when the tables live in a schema.
    search_path: Option<String>,
}

impl r2d2::ManageConnection for Connector {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        if let Some(search_path) = &self.search_path {
            client.batch_execute(search_path)?;
        }
        Ok(PgConn { client, statements: HashMap::new() })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.batch_execute("")
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

/// One connection, with the statements it has prepared.
pub(crate) struct PgConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl PgConn {
    pub(crate) fn session(&mut self) -> Session<'_, Client> {
        Session { client: &mut self.client, statements: &mut self.statements, pending: None }
    }
}

impl PgDb {
    pub(crate) fn open(url: &str, schema: Option<&str>) -> Result<PgDb> {
        let mut config: Config = url.parse()?;
        if config.get_application_name().is_none() {
            config.application_name("outpost");
        }
        let connector =
            Connector { config, search_path: schema.map(|s| format!("SET search_path TO {}", quote_ident(s))) };
        // The first connection is opened here, so that a wrong URL or password is an error now,
        // with the server's words, and not a timeout later.
        let mut first = r2d2::ManageConnection::connect(&connector)?;
        migrate(&mut first.client, schema)?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(0))
            .connection_timeout(acquire_timeout())
            // A broken connection is noticed by the statement that fails, not by a round trip
            // before every use.
            .test_on_check_out(false)
            .build_unchecked(connector);
        let db = PgDb { pool, network: Mutex::new(NetCache { network: Arc::default(), version: -1 }) };
        let mut conn = db.connection()?;
        db.network_now(&mut conn.session())?;
        drop(conn);
        Ok(db)
    }

    /// A connection from the pool, opened if none is idle. When every connection stays in use
    /// for [`acquire_timeout`], the database is busy: an error a server answers with 503.
    pub(crate) fn connection(&self) -> Result<r2d2::PooledConnection<Connector>> {
        self.pool.get().map_err(|e| StoreError::Busy(format!("no PostgreSQL connection free: {e}")))
    }

    /// Runs `f` in one transaction on one connection of the pool.
    pub(crate) fn transaction<T>(
        &self,
        registry: &'static Registry,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.connection()?;
        let PgConn { client, statements } = &mut *conn;
        let mut t = client.transaction()?;
        let (network, version) = self.network_now(&mut Session { client: &mut t, statements, pending: None })?;
        let pg = PgTx { t, statements, pending: Pending::default() };
        let mut tx = Tx::new(TxSql::Postgres(Box::new(RefCell::new(pg))), network, registry);
        // An error (or a panic) drops the transaction, which rolls it back, with the copy of the
        // network it may have changed.
        let value = f(&mut tx)?;
        let committed = tx.commit()?;
        if committed.topology_changed {
            self.adopt(&mut conn, committed.network, version);
        }
        Ok(value)
    }

    /// The network as the database describes it now: the cached one unless a topology change
    /// was committed since it was read. Returns it with the version it was checked against.
    fn network_now<C: GenericClient>(&self, session: &mut Session<'_, C>) -> Result<(Arc<Network>, i64)> {
        let version = session.topology_version()?;
        {
            let cache = lock(&self.network);
            if cache.version == version {
                return Ok((cache.network.clone(), version));
            }
        }
        // Read after the version: the network holds at least every change the version counts.
        let network = Arc::new(session.load_network()?);
        let mut cache = lock(&self.network);
        if version > cache.version {
            *cache = NetCache { network: network.clone(), version };
        }
        Ok((network, version))
    }

    /// After a commit that changed the network: the transaction's network becomes the cached
    /// one if no other topology change was committed meanwhile (otherwise the next transaction
    /// reads the network again).
    fn adopt(&self, conn: &mut PgConn, network: Arc<Network>, started_at: i64) {
        let Ok(now) = conn.session().topology_version() else { return };
        let mut cache = lock(&self.network);
        if cache.version == started_at && now == started_at + 1 {
            *cache = NetCache { network, version: now };
        }
    }

    /// Runs statements on a connection of the pool, outside any transaction.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        let mut conn = self.connection()?;
        f(&mut conn.session())
    }

    pub(crate) fn network(&self) -> Result<Arc<Network>> {
        let mut conn = self.connection()?;
        Ok(self.network_now(&mut conn.session())?.0)
    }

    /// The network last read, without asking the database.
    pub(crate) fn cached_network(&self) -> Arc<Network> {
        lock(&self.network).network.clone()
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the schema (if asked) and brings its tables up to date (`migrations.rs`). One
/// process at a time: a server started twice at once does not create the tables twice.
fn migrate(client: &mut Client, schema: Option<&str>) -> Result<()> {
    let mut t = client.transaction()?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    if let Some(schema) = schema {
        t.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)))?;
    }
    let exists: bool = t.query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?.try_get(0)?;
    let found: i32 =
        if exists { t.query_one("SELECT COALESCE(max(version), 0) FROM schema_version", &[])?.try_get(0)? } else { 0 };
    for migration in migrations::pending(i64::from(found))? {
        t.batch_execute(migration.postgres)?;
        let version = i32::try_from(migration.version).unwrap_or(i32::MAX);
        t.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&version])?;
    }
    t.commit()?;
    Ok(())
}

impl Db {
    /// Opens a PostgreSQL database (`postgres://user@host:port/database`, or the `key=value`
    /// form), shared with other server processes, and brings its schema up to date. With
    /// `schema`, the tables live in that PostgreSQL schema, created if needed; without, in the
    /// connection's default (`public`).
    pub fn open_postgres(url: &str, schema: Option<&str>) -> Result<Db> {
        Ok(Db::with_backend(Backend::Postgres(PgDb::open(url, schema)?)))
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        match e.code() {
            // The server's disk (or a quota) is full: the transaction is undone whole, as on SQLite.
            Some(&postgres::error::SqlState::DISK_FULL) => StoreError::DiskFull(message(&e)),
            _ => StoreError::Database(DbError::Postgres(e)),
        }
    }
}

/// A PostgreSQL error with the server's message and detail (the error's own `Display` says only
/// "db error").
pub(crate) fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => e.to_string(),
    }
}

/// One transaction on a pooled connection.
pub(crate) struct PgTx<'a> {
    t: Transaction<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
    pending: Pending,
}

impl<'a> PgTx<'a> {
    pub(crate) fn session(&mut self) -> Session<'_, Transaction<'a>> {
        Session { client: &mut self.t, statements: self.statements, pending: Some(&mut self.pending) }
    }

    /// Commits; a transaction that changed the network first says so to every other one.
    pub(crate) fn commit(mut self, topology_changed: bool) -> Result<()> {
        self.session().flush()?;
        if topology_changed {
            self.session().execute(
                "INSERT INTO topology_version (backend_pid, v) VALUES (pg_backend_pid(), 1)
                 ON CONFLICT (backend_pid) DO UPDATE SET v = topology_version.v + 1",
                &[],
            )?;
        }
        self.t.commit()?;
        Ok(())
    }
}

/// A connection or a transaction, with the connection's prepared statements.
pub(crate) struct Session<'s, C> {
    client: &'s mut C,
    statements: &'s mut HashMap<&'static str, Statement>,
    /// A transaction's writes not sent yet (`None` outside a transaction).
    pending: Option<&'s mut Pending>,
}

/// How many rows wait before they are sent.
const PENDING_ROWS: usize = 2_000;
/// Log positions taken from the sequence at once, for records known to be new.
const SEQ_BLOCK: i64 = 512;

/// New records a transaction writes, held until the next statement (or the commit) and then sent
/// as three multi-row statements: one round trip per table for a whole batch, where writing
/// them one by one took one or two per record. Only records the transaction looked up first
/// ([`Sql::current_many`]) and found absent come here, with positions taken from the sequence in
/// blocks; everything else is written at once, after what waits is sent, so statements still
/// run in the order they were made.
#[derive(Default)]
pub(crate) struct Pending {
    records: Vec<PendingRecord>,
    log: Vec<PendingEntry>,
    /// Where each waiting log entry is in `log`, by position (a bucket is set after the write).
    log_at: HashMap<i64, usize>,
    outbox: Vec<(String, i64)>,
    /// Positions taken from the sequence and not used yet.
    seqs: std::collections::VecDeque<i64>,
    /// How many records the look-ups found absent and are not written yet: positions are taken
    /// for as many as that, no more (each one taken is a gap if unused, and costs a `nextval`).
    expected_new: i64,
}

struct PendingRecord {
    table: String,
    id: String,
    store: Option<String>,
    other_store: Option<String>,
    name: Option<String>,
    data: Option<String>,
    log_seq: Option<i64>,
    facts: LineFacts,
}

struct PendingEntry {
    seq: i64,
    table: String,
    id: String,
    action: &'static str,
    merge_into: Option<String>,
    origin: String,
    bucket: Option<String>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.outbox.is_empty()
    }
}

/// The three multi-row statements of [`Pending`]: records, their log entries, then the outbox
/// rows that point at those entries.
fn send_pending<C: GenericClient>(
    client: &mut C,
    statements: &mut HashMap<&'static str, Statement>,
    records: &[PendingRecord],
    log: &[PendingEntry],
    outbox: &[(String, i64)],
) -> std::result::Result<(), postgres::Error> {
    // Prepared once per connection, like every other statement.
    let mut prepared = |client: &mut C, sql: &'static str| -> std::result::Result<Statement, postgres::Error> {
        if let Some(statement) = statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        statements.insert(sql, statement.clone());
        Ok(statement)
    };
    if !records.is_empty() {
        let column = |f: fn(&PendingRecord) -> Option<&str>| records.iter().map(f).collect::<Vec<_>>();
        let insert = prepared(
            client,
            "INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data, log_seq,
                                 item_id, location_id, packs, pack_size, cost_per_pack)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                                  $8::text[], $9::text[], $10::float8[], $11::float8[], $12::float8[])",
        )?;
        let number = |f: fn(&LineFacts) -> Option<f64>| records.iter().map(|r| f(&r.facts)).collect::<Vec<_>>();
        client.execute(
            &insert,
            &[
                &column(|r| Some(&r.table)),
                &column(|r| Some(&r.id)),
                &column(|r| r.store.as_deref()),
                &column(|r| r.other_store.as_deref()),
                &column(|r| r.name.as_deref()),
                &column(|r| r.data.as_deref()),
                &records.iter().map(|r| r.log_seq).collect::<Vec<_>>(),
                &column(|r| r.facts.item.as_deref()),
                &column(|r| r.facts.location.as_deref()),
                &number(|f| f.packs),
                &number(|f| f.pack_size),
                &number(|f| f.cost_per_pack),
            ],
        )?;
    }
    if !log.is_empty() {
        let column = |f: fn(&PendingEntry) -> Option<&str>| log.iter().map(f).collect::<Vec<_>>();
        let insert = prepared(
            client,
            "INSERT INTO change_log (seq, tbl, record_id, action, merge_into, origin_site, bucket) OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])",
        )?;
        client.execute(
            &insert,
            &[
                &log.iter().map(|e| e.seq).collect::<Vec<_>>(),
                &column(|e| Some(&e.table)),
                &column(|e| Some(&e.id)),
                &column(|e| Some(e.action)),
                &column(|e| e.merge_into.as_deref()),
                &column(|e| Some(&e.origin)),
                &column(|e| e.bucket.as_deref()),
            ],
        )?;
    }
    if !outbox.is_empty() {
        let insert = prepared(
            client,
            "INSERT INTO outbox (site_id, xid, seq)
             SELECT u.site_id, l.xid, l.seq FROM unnest($1::text[], $2::bigint[]) AS u (site_id, seq)
             JOIN change_log l ON l.seq = u.seq
             ON CONFLICT DO NOTHING",
        )?;
        client.execute(
            &insert,
            &[
                &outbox.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
                &outbox.iter().map(|(_, q)| *q).collect::<Vec<_>>(),
            ],
        )?;
    }
    Ok(())
}

fn count(row: &Row) -> Result<u64> {
    let n: i64 = row.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

const CHANGES_AFTER: &str = concat!(
    "SELECT ",
    change_columns!(),
    " FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
     WHERE l.seq > $1 AND l.origin_site = $2 ORDER BY l.seq LIMIT $3"
);
/// Pulls read in (writing transaction, sequence) order, and only what every transaction that
/// could still commit will sort after: a change is served once its transaction id is below the
/// oldest one still running (`pg_snapshot_xmin`). Sequence numbers alone would not do: several
/// server processes take them in one order and commit in another, and a reader that had moved
/// past a number would never see a lower one committed later.
macro_rules! horizon {
    () => {
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    };
}
const PULL_BUCKET: &str = concat!(
    "SELECT ",
    change_columns!(),
    ", l.xid FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
     WHERE l.bucket = $1 AND (l.xid, l.seq) > ($2, $3) AND l.xid < ",
    horizon!(),
    " AND l.origin_site <> $4 ORDER BY l.xid, l.seq LIMIT $5"
);
const PULL_OUTBOX: &str = concat!(
    "SELECT ",
    change_columns!(),
    ", o.xid FROM outbox o JOIN change_log l ON l.seq = o.seq JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
     WHERE o.site_id = $1 AND (o.xid, o.seq) > ($2, $3) AND o.xid < ",
    horizon!(),
    " ORDER BY o.xid, o.seq LIMIT $4"
);

fn change_from_row(row: &Row) -> Result<(Change, usize)> {
    Ok(change_from_parts(
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        &row.try_get::<_, String>(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
    ))
}

fn rejection_from_row(r: &Row) -> Result<RejectionRecord> {
    Ok(RejectionRecord {
        from: crate::RejectedFrom::from_stored(r.try_get(0)?),
        seq: Seq(r.try_get(1)?),
        table: r.try_get(2)?,
        id: RecordId(r.try_get(3)?),
        action: r.try_get(4)?,
        data: r.try_get(5)?,
        reason: r.try_get(6)?,
        at: r.try_get(7)?,
    })
}

fn keys_from_row(r: &Row, first: usize) -> Result<RecordKeys> {
    Ok(RecordKeys {
        store: r.try_get::<_, Option<String>>(first)?.map(Into::into),
        other_store: r.try_get::<_, Option<String>>(first + 1)?.map(Into::into),
        name: r.try_get::<_, Option<String>>(first + 2)?.map(Into::into),
        home_store: None,
    })
}

impl<C: GenericClient> Session<'_, C> {
    /// The `name` of each record of `table` among `ids` that has one.
    fn names<'i>(&mut self, table: &str, ids: impl Iterator<Item = &'i str>) -> Result<HashMap<String, String>> {
        let mut ids: Vec<&str> = ids.collect();
        ids.sort_unstable();
        ids.dedup();
        let rows = self.query(
            "SELECT id, data::json ->> 'name' FROM record WHERE tbl = $1 AND id = ANY($2) AND data IS NOT NULL",
            &[&table, &ids],
        )?;
        rows.iter()
            .filter_map(|r| match (r.try_get::<_, String>(0), r.try_get::<_, Option<String>>(1)) {
                (Ok(id), Ok(Some(name))) => Some(Ok((id, name))),
                (Err(e), _) | (_, Err(e)) => Some(Err(e.into())),
                _ => None,
            })
            .collect()
    }

    /// Sends the writes that wait, before any other statement: what runs next sees them.
    fn flush(&mut self) -> Result<()> {
        let Some(pending) = self.pending.as_deref_mut().filter(|p| !p.is_empty()) else { return Ok(()) };
        let records = std::mem::take(&mut pending.records);
        let log = std::mem::take(&mut pending.log);
        let outbox = std::mem::take(&mut pending.outbox);
        pending.log_at.clear();
        let sent = send_pending(self.client, self.statements, &records, &log, &outbox);
        sent.map_err(|e| match e.code() {
            // Another transaction wrote one of these records after this one looked: nothing of
            // this one is kept, and the request is worth sending again.
            Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => StoreError::Busy(format!(
                "another server process wrote one of these records at the same moment ({})",
                message(&e)
            )),
            _ => StoreError::from(e),
        })
    }

    /// A position for a new log entry, from the block taken ahead.
    fn next_seq(&mut self) -> Result<i64> {
        let has = self.pending.as_deref().is_some_and(|p| !p.seqs.is_empty());
        if !has {
            let rows =
                self.query("SELECT nextval('change_log_seq_seq') FROM generate_series(1, $1::bigint)", &[&SEQ_BLOCK])?;
            let seqs = rows.iter().map(|r| r.try_get::<_, i64>(0)).collect::<Result<Vec<_>, _>>()?;
            if let Some(pending) = self.pending.as_deref_mut() {
                pending.seqs.extend(seqs);
            }
        }
        self.pending.as_deref_mut().and_then(|p| p.seqs.pop_front()).ok_or_else(|| StoreError::Invalid {
            table: "change_log".into(),
            id: RecordId::from(""),
            reason: "a record was held back outside a transaction".into(),
        })
    }

    fn prepared(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        self.flush()?;
        let statement = self.prepared(sql)?;
        Ok(self.client.query(&statement, params)?)
    }

    fn query_opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        self.flush()?;
        let statement = self.prepared(sql)?;
        Ok(self.client.query_opt(&statement, params)?)
    }

    fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        self.flush()?;
        let statement = self.prepared(sql)?;
        Ok(self.client.query_one(&statement, params)?)
    }

    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        self.flush()?;
        let statement = self.prepared(sql)?;
        Ok(self.client.execute(&statement, params)?)
    }

    // The network.

    fn topology_version(&mut self) -> Result<i64> {
        Ok(self.query_one("SELECT COALESCE(sum(v), 0)::bigint FROM topology_version", &[])?.try_get(0)?)
    }

    fn load_network(&mut self) -> Result<Network> {
        let rows = self.query(
            "SELECT tbl, id, data FROM record WHERE tbl = ANY($1) AND data IS NOT NULL
             ORDER BY CASE tbl WHEN 'site' THEN 0 WHEN 'store' THEN 1 ELSE 2 END",
            &[&TOPOLOGY_TABLES],
        )?;
        let records = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<(String, String, String)>>>()?;
        let mut network = network_from_records(records)?;
        for row in self.query("SELECT tbl, id, into_id FROM merged", &[])? {
            network.merged.insert((row.try_get(0)?, RecordId(row.try_get(1)?)), RecordId(row.try_get(2)?));
        }
        Ok(network)
    }
}

impl<C: GenericClient> Sql for Session<'_, C> {
    // Writes (in a transaction).

    /// The record as it stands, with its keys, locked until the transaction ends: a concurrent
    /// write of the same record waits, then sees this one's log entry and supersedes it.
    fn current(&mut self, table: &str, id: &str) -> Result<Option<(Current, RecordKeys)>> {
        let row = self.query_opt(
            "SELECT data, log_seq, store_id, other_store_id, name_id FROM record WHERE tbl = $1 AND id = $2 FOR UPDATE",
            &[&table, &id],
        )?;
        row.map(|r| {
            let current = Current { data: r.try_get(0)?, log_seq: r.try_get::<_, Option<i64>>(1)?.map(Seq) };
            Ok((current, keys_from_row(&r, 2)?))
        })
        .transpose()
    }

    fn stored_keys(&mut self, table: &str, id: &str) -> Result<Option<RecordKeys>> {
        let row = self.query_opt(
            "SELECT store_id, other_store_id, name_id FROM record WHERE tbl = $1 AND id = $2",
            &[&table, &id],
        )?;
        row.map(|r| keys_from_row(&r, 0)).transpose()
    }

    /// Inserts a record that does not exist yet and, when logged, its change-log entry, in one
    /// statement; `None` (nothing written) when the record exists.
    fn insert_new(&mut self, put: &Put<'_>) -> Result<Option<Seq>> {
        let (store, other_store, name) = put.key_columns();
        let id = put.id.as_str();
        let f = LineFacts::read(put.table, put.data);
        if !put.log {
            let inserted = self.execute(
                "INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data,
                                     item_id, location_id, packs, pack_size, cost_per_pack)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (tbl, id) DO NOTHING",
                &[
                    &put.table,
                    &id,
                    &store,
                    &other_store,
                    &name,
                    &put.data,
                    &f.item,
                    &f.location,
                    &f.packs,
                    &f.pack_size,
                    &f.cost_per_pack,
                ],
            )?;
            return Ok((inserted > 0).then_some(Seq(0)));
        }
        // The record takes its position from the log's sequence; the entry is written only if
        // the record was (a record that exists goes the update path, with no entry to undo).
        let row = self.query_opt(
            "WITH r AS (
                 INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data, log_seq,
                                     item_id, location_id, packs, pack_size, cost_per_pack)
                 VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, nextval('change_log_seq_seq'),
                         $11::text, $12::text, $13::float8, $14::float8, $15::float8)
                 ON CONFLICT (tbl, id) DO NOTHING
                 RETURNING log_seq
             )
             INSERT INTO change_log (seq, tbl, record_id, action, merge_into, origin_site, bucket) OVERRIDING SYSTEM VALUE
             SELECT r.log_seq, $1::text, $2::text, $7::text, $8::text, $9::text, $10::text FROM r
             RETURNING seq",
            &[
                &put.table,
                &id,
                &store,
                &other_store,
                &name,
                &put.data,
                &put.action.code(),
                &put.merge_into(),
                &put.origin.as_str(),
                &put.bucket,
                &f.item,
                &f.location,
                &f.packs,
                &f.pack_size,
                &f.cost_per_pack,
            ],
        )?;
        row.map(|r| Ok(Seq(r.try_get(0)?))).transpose()
    }

    fn insert_absent(&mut self, put: &Put<'_>) -> Result<Seq> {
        let seq = if put.log { Some(self.next_seq()?) } else { None };
        let Some(pending) = self.pending.as_deref_mut() else {
            // Outside a transaction nothing waits: written at once.
            return self.insert_new(put)?.ok_or_else(|| StoreError::Invalid {
                table: put.table.to_owned(),
                id: put.id.clone(),
                reason: "a record taken to be new exists".into(),
            });
        };
        let keys = put.keys;
        pending.records.push(PendingRecord {
            table: put.table.to_owned(),
            id: put.id.as_str().to_owned(),
            store: keys.store.as_ref().map(|s| s.as_str().to_owned()),
            other_store: keys.other_store.as_ref().map(|s| s.as_str().to_owned()),
            name: keys.name.as_ref().map(|s| s.as_str().to_owned()),
            data: put.data.map(str::to_owned),
            log_seq: seq,
            facts: LineFacts::read(put.table, put.data),
        });
        if let Some(seq) = seq {
            pending.log_at.insert(seq, pending.log.len());
            pending.log.push(PendingEntry {
                seq,
                table: put.table.to_owned(),
                id: put.id.as_str().to_owned(),
                action: put.action.code(),
                merge_into: put.merge_into().map(str::to_owned),
                origin: put.origin.as_str().to_owned(),
                bucket: put.bucket.map(str::to_owned),
            });
        }
        if pending.records.len() >= PENDING_ROWS {
            self.flush()?;
        }
        Ok(Seq(seq.unwrap_or(0)))
    }

    fn looks_up_ahead(&self) -> bool {
        true
    }

    /// Locks and reads every one of `ids` that exists, in one round trip.
    fn current_many(&mut self, table: &str, ids: &[&str]) -> Result<Option<Vec<(String, Current, RecordKeys)>>> {
        let rows = self.query(
            "SELECT id, data, log_seq, store_id, other_store_id, name_id FROM record
             WHERE tbl = $1 AND id = ANY($2) FOR UPDATE",
            &[&table, &ids],
        )?;
        if let Some(pending) = self.pending.as_deref_mut() {
            pending.expected_new += i64::try_from(ids.len().saturating_sub(rows.len())).unwrap_or(0);
        }
        rows.iter()
            .map(|r| {
                let current = Current { data: r.try_get(1)?, log_seq: r.try_get::<_, Option<i64>>(2)?.map(Seq) };
                Ok((r.try_get(0)?, current, keys_from_row(r, 3)?))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Writes a record over its current state; when logged, with a new entry that supersedes
    /// `old_seq`, all in one statement. Returns the new entry's position, if any.
    fn write_record(&mut self, put: &Put<'_>, old_seq: Option<Seq>) -> Result<Option<Seq>> {
        let (store, other_store, name) = put.key_columns();
        let id = put.id.as_str();
        let data = put.stored_data();
        let f = LineFacts::read(put.table, data);
        if !put.log {
            self.execute(
                "INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data,
                                     item_id, location_id, packs, pack_size, cost_per_pack)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (tbl, id) DO UPDATE SET store_id = excluded.store_id, other_store_id = excluded.other_store_id,
                   name_id = excluded.name_id, data = excluded.data, item_id = excluded.item_id,
                   location_id = excluded.location_id, packs = excluded.packs, pack_size = excluded.pack_size,
                   cost_per_pack = excluded.cost_per_pack",
                &[&put.table, &id, &store, &other_store, &name, &data, &f.item, &f.location, &f.packs, &f.pack_size, &f.cost_per_pack],
            )?;
            return Ok(None);
        }
        let row = self.query_one(
            "WITH l AS (
                 INSERT INTO change_log (tbl, record_id, action, merge_into, origin_site, bucket)
                 VALUES ($1::text, $2::text, $7::text, $8::text, $9::text, $10::text)
                 RETURNING seq
             ), superseded AS (
                 DELETE FROM change_log WHERE seq = $11::bigint
             )
             INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data, log_seq,
                                 item_id, location_id, packs, pack_size, cost_per_pack)
             SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, l.seq,
                    $12::text, $13::text, $14::float8, $15::float8, $16::float8 FROM l
             ON CONFLICT (tbl, id) DO UPDATE SET store_id = excluded.store_id, other_store_id = excluded.other_store_id,
               name_id = excluded.name_id, data = excluded.data, log_seq = excluded.log_seq, item_id = excluded.item_id,
               location_id = excluded.location_id, packs = excluded.packs, pack_size = excluded.pack_size,
               cost_per_pack = excluded.cost_per_pack
             RETURNING log_seq",
            &[
                &put.table,
                &id,
                &store,
                &other_store,
                &name,
                &data,
                &put.action.code(),
                &put.merge_into(),
                &put.origin.as_str(),
                &put.bucket,
                &old_seq.map(|s| s.0),
                &f.item,
                &f.location,
                &f.packs,
                &f.pack_size,
                &f.cost_per_pack,
            ],
        )?;
        Ok(Some(Seq(row.try_get(0)?)))
    }

    fn set_bucket(&mut self, seq: Seq, bucket: &str) -> Result<()> {
        if let Some(pending) = self.pending.as_deref_mut() {
            if let Some(&at) = pending.log_at.get(&seq.0) {
                pending.log[at].bucket = Some(bucket.to_owned());
                return Ok(());
            }
        }
        self.execute("UPDATE change_log SET bucket = $2 WHERE seq = $1", &[&seq.0, &bucket])?;
        Ok(())
    }

    fn add_outbox(&mut self, site: &SiteId, seq: Seq) -> Result<()> {
        if let Some(pending) = self.pending.as_deref_mut().filter(|p| p.log_at.contains_key(&seq.0)) {
            pending.outbox.push((site.as_str().to_owned(), seq.0));
            return Ok(());
        }
        self.execute(
            // At the position of the log entry it points to (same transaction id), so adding it
            // again is a no-op.
            "INSERT INTO outbox (site_id, xid, seq) SELECT $1, xid, seq FROM change_log WHERE seq = $2 ON CONFLICT DO NOTHING",
            &[&site.as_str(), &seq.0],
        )?;
        Ok(())
    }

    fn seqs_in_bucket(&mut self, bucket: &str) -> Result<Vec<Seq>> {
        self.query("SELECT seq FROM change_log WHERE bucket = $1 ORDER BY xid, seq", &[&bucket])?
            .iter()
            .map(|r| Ok(Seq(r.try_get(0)?)))
            .collect()
    }

    fn add_merged(&mut self, table: &str, id: &str, into: &str) -> Result<()> {
        self.execute(
            "INSERT INTO merged (tbl, id, into_id) VALUES ($1, $2, $3) ON CONFLICT (tbl, id) DO UPDATE SET into_id = excluded.into_id",
            &[&table, &id, &into],
        )?;
        Ok(())
    }

    fn records_containing(&mut self, table: Option<&str>, text: &str) -> Result<Vec<(String, RecordId, String)>> {
        let rows = match table {
            Some(table) => self.query(
                "SELECT tbl, id, data FROM record WHERE tbl = $1 AND data IS NOT NULL AND strpos(data, $2) > 0",
                &[&table, &text],
            )?,
            None => self
                .query("SELECT tbl, id, data FROM record WHERE data IS NOT NULL AND strpos(data, $1) > 0", &[&text])?,
        };
        rows.iter().map(|r| Ok((r.try_get(0)?, RecordId(r.try_get(1)?), r.try_get(2)?))).collect()
    }

    fn records_by(&mut self, lookup: usize, value: &str) -> Result<Vec<(RecordId, String)>> {
        static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        // The expression and the table are those of the partial index (migration 4).
        let sql = SQL.get_or_init(|| {
            model::transfer::INDEXED_FIELDS
                .iter()
                .map(|(table, field)| {
                    format!(
                        "SELECT id, data FROM record WHERE tbl = '{table}' AND (data::jsonb ->> '{field}') = $1
                         AND data IS NOT NULL"
                    )
                })
                .collect()
        });
        let rows = self.query(&sql[lookup], &[&value])?;
        rows.iter().map(|r| Ok((RecordId(r.try_get(0)?), r.try_get(1)?))).collect()
    }

    fn max_serial(&mut self, store: &str, kind: &str) -> Result<Option<i64>> {
        // The expression is the index's (migration 4).
        let row = self.query_opt(
            "SELECT (CASE WHEN jsonb_typeof(data::jsonb -> 'serial_number') = 'number' THEN (data::jsonb ->> 'serial_number')::numeric END)::float8
             FROM record WHERE tbl = 'transaction' AND store_id = $1 AND (data::jsonb ->> 'type') = $2
               AND (CASE WHEN jsonb_typeof(data::jsonb -> 'serial_number') = 'number' THEN (data::jsonb ->> 'serial_number')::numeric END) IS NOT NULL
             ORDER BY (CASE WHEN jsonb_typeof(data::jsonb -> 'serial_number') = 'number' THEN (data::jsonb ->> 'serial_number')::numeric END) DESC LIMIT 1",
            &[&store, &kind],
        )?;
        Ok(row.map(|r| r.try_get::<_, f64>(0)).transpose()?.map(|n| n as i64))
    }

    fn logged_records(
        &mut self,
        column: &'static str,
        value: &str,
    ) -> Result<Vec<(String, RecordId, RecordKeys, Seq)>> {
        let sql = match column {
            "store_id" => {
                "SELECT tbl, id, store_id, other_store_id, name_id, log_seq FROM record
                 WHERE store_id = $1 AND data IS NOT NULL AND log_seq IS NOT NULL ORDER BY log_seq"
            }
            _ => {
                "SELECT tbl, id, store_id, other_store_id, name_id, log_seq FROM record
                 WHERE name_id = $1 AND data IS NOT NULL AND log_seq IS NOT NULL ORDER BY log_seq"
            }
        };
        self.query(sql, &[&value])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, RecordId(r.try_get(1)?), keys_from_row(r, 2)?, Seq(r.try_get(5)?))))
            .collect()
    }

    fn relog_all(&mut self, olds: &[Seq]) -> Result<Vec<Seq>> {
        let (mut moved_from, mut moved_to) = (Vec::new(), Vec::new());
        let mut news = Vec::with_capacity(olds.len());
        for old in olds {
            let row = self.query_opt(
                "INSERT INTO change_log (tbl, record_id, action, merge_into, origin_site, bucket)
                 SELECT tbl, record_id, action, merge_into, origin_site, bucket FROM change_log WHERE seq = $1
                 RETURNING seq",
                &[&old.0],
            )?;
            let Some(row) = row else {
                news.push(*old);
                continue;
            };
            let new: i64 = row.try_get(0)?;
            moved_from.push(old.0);
            moved_to.push(new);
            news.push(Seq(new));
        }
        if moved_from.is_empty() {
            return Ok(news);
        }
        // The rows move to this transaction's position in the order pulls read.
        self.execute(
            "UPDATE outbox o SET seq = m.new, xid = pg_current_xact_id()::text::bigint
             FROM unnest($1::bigint[], $2::bigint[]) AS m(old, new) WHERE o.seq = m.old",
            &[&moved_from, &moved_to],
        )?;
        self.execute(
            "UPDATE record r SET log_seq = m.new FROM unnest($1::bigint[], $2::bigint[]) AS m(old, new)
             WHERE r.log_seq = m.old",
            &[&moved_from, &moved_to],
        )?;
        self.execute("DELETE FROM change_log WHERE seq = ANY($1)", &[&moved_from])?;
        Ok(news)
    }

    fn log_unlogged(&mut self, table: &str, store: &str, origin: &SiteId) -> Result<u64> {
        let logged = self.execute(
            "INSERT INTO change_log (tbl, record_id, action, origin_site)
             SELECT tbl, id, 'upsert', $3 FROM record
             WHERE tbl = $1 AND store_id = $2 AND log_seq IS NULL AND data IS NOT NULL ORDER BY id",
            &[&table, &store, &origin.as_str()],
        )?;
        self.execute(
            "UPDATE record SET log_seq = (SELECT max(l.seq) FROM change_log l WHERE l.tbl = record.tbl AND l.record_id = record.id)
             WHERE tbl = $1 AND store_id = $2 AND log_seq IS NULL AND data IS NOT NULL",
            &[&table, &store],
        )?;
        Ok(logged)
    }

    fn shift_log_after(&mut self, _pushed: Seq, _shift: i64) -> Result<u64> {
        Err(StoreError::Invalid {
            table: "change_log".into(),
            id: RecordId::from(""),
            reason: "a central server's log is never renumbered".into(),
        })
    }

    fn state(&mut self, key: &str) -> Result<Option<String>> {
        self.query_opt("SELECT value FROM state WHERE key = $1", &[&key])?.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    fn set_state(&mut self, key: &str, value: &str) -> Result<()> {
        self.execute(
            "INSERT INTO state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    // Sync bookkeeping.

    fn keep_rejection(&mut self, rejection: &RejectionRecord) -> Result<()> {
        self.execute(
            "INSERT INTO rejection (site_id, origin_seq, tbl, record_id, action, data, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &rejection.from.to_string(),
                &rejection.seq.0,
                &rejection.table,
                &rejection.id.as_str(),
                &rejection.action,
                &rejection.data,
                &rejection.reason,
            ],
        )?;
        Ok(())
    }

    fn rejections_between(&mut self, from: &str, first: Seq, last: Seq) -> Result<Vec<RejectionRecord>> {
        self.query(
            "SELECT site_id, origin_seq, tbl, record_id, action, data, reason, at FROM rejection
             WHERE site_id = $1 AND origin_seq BETWEEN $2 AND $3 ORDER BY origin_seq",
            &[&from, &first.0, &last.0],
        )?
        .iter()
        .map(rejection_from_row)
        .collect()
    }

    /// The site's acknowledged position, its row locked until the transaction ends: a second
    /// push of the same site (another process, another connection) waits for this one.
    fn acked(&mut self, site: &SiteId) -> Result<Seq> {
        let row = self.query_opt("SELECT acked_seq FROM site_sync WHERE site_id = $1 FOR UPDATE", &[&site.as_str()])?;
        Ok(Seq(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0)))
    }

    fn acked_now(&mut self, site: &SiteId) -> Result<Seq> {
        let row = self.query_opt("SELECT acked_seq FROM site_sync WHERE site_id = $1", &[&site.as_str()])?;
        Ok(Seq(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0)))
    }

    fn record_push(&mut self, site: &SiteId, batch: &PushedBatch) -> Result<()> {
        self.execute(
            r#"UPDATE site_sync SET acked_seq = $2, push_from = $3, push_digest = $4,
                 last_push_at = to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
               WHERE site_id = $1"#,
            &[&site.as_str(), &batch.acked.0, &batch.from.0, &batch.digest],
        )?;
        Ok(())
    }

    fn last_push(&mut self, site: &SiteId) -> Result<Option<PushedBatch>> {
        let row = self.query_opt(
            "SELECT acked_seq, push_from, push_digest FROM site_sync WHERE site_id = $1 AND push_digest IS NOT NULL",
            &[&site.as_str()],
        )?;
        row.map(|r| {
            Ok(PushedBatch {
                acked: Seq(r.try_get(0)?),
                from: Seq(r.try_get::<_, Option<i64>>(1)?.unwrap_or(0)),
                digest: r.try_get(2)?,
            })
        })
        .transpose()
    }

    fn set_password_hash(&mut self, site: &str, hash: &str, create: bool) -> Result<bool> {
        let changed = if create {
            self.execute(
                "INSERT INTO site_sync (site_id, password_hash) VALUES ($1, $2)
                 ON CONFLICT (site_id) DO UPDATE SET password_hash = excluded.password_hash",
                &[&site, &hash],
            )?
        } else {
            self.execute("UPDATE site_sync SET password_hash = $2 WHERE site_id = $1", &[&site, &hash])?
        };
        Ok(changed > 0)
    }

    /// The marker entry at `seq`, and the sequence moved past it so new entries come after.
    fn start_log_after(&mut self, seq: Seq) -> Result<()> {
        self.execute(
            "INSERT INTO change_log (seq, tbl, record_id, action, origin_site) OVERRIDING SYSTEM VALUE
             VALUES ($1, '', '', 'upsert', '') ON CONFLICT DO NOTHING",
            &[&seq.0],
        )?;
        self.query(
            "SELECT setval('change_log_seq_seq', $1) WHERE $1 >= (SELECT last_value FROM change_log_seq_seq)",
            &[&seq.0],
        )?;
        Ok(())
    }

    fn mark_pulled(&mut self, site: &SiteId, reached: Option<LogPos>, waiting_to_push: Option<u64>) -> Result<()> {
        let waiting = waiting_to_push.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.execute(
            r#"UPDATE site_sync SET last_pull_at = to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                   pulled_seq = COALESCE($2, pulled_seq), pulled_xid = COALESCE($3, pulled_xid),
                   waiting_to_push = COALESCE($4, waiting_to_push)
               WHERE site_id = $1"#,
            &[&site.as_str(), &reached.map(|r| r.seq.0), &reached.map(|r| r.xid), &waiting],
        )?;
        Ok(())
    }

    fn set_site_disabled(&mut self, site: &str, disabled: bool) -> Result<bool> {
        let sql = if disabled {
            r#"UPDATE site_sync SET disabled_at = COALESCE(disabled_at, to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
               WHERE site_id = $1"#
        } else {
            "UPDATE site_sync SET disabled_at = NULL WHERE site_id = $1"
        };
        Ok(self.execute(sql, &[&site])? > 0)
    }

    fn forget_site(&mut self, site: &str) -> Result<bool> {
        self.execute("DELETE FROM outbox WHERE site_id = $1", &[&site])?;
        Ok(self.execute("DELETE FROM site_sync WHERE site_id = $1", &[&site])? > 0)
    }

    fn bind_machine(&mut self, site: &str, machine: &str) -> Result<Option<String>> {
        self.execute(
            "UPDATE site_sync SET hardware_id = $2 WHERE site_id = $1 AND hardware_id IS NULL",
            &[&site, &machine],
        )?;
        Ok(self
            .query_opt("SELECT hardware_id FROM site_sync WHERE site_id = $1", &[&site])?
            .map(|r| r.try_get::<_, Option<String>>(0))
            .transpose()?
            .flatten())
    }

    fn site_credentials(&mut self, site: &str) -> Result<Option<SiteCredentials>> {
        self.query_opt("SELECT password_hash, hardware_id, disabled_at FROM site_sync WHERE site_id = $1", &[&site])?
            .map(|r| {
                Ok(SiteCredentials { password_hash: r.try_get(0)?, machine: r.try_get(1)?, disabled_at: r.try_get(2)? })
            })
            .transpose()
    }

    fn unbind_machine(&mut self, site: &str) -> Result<bool> {
        Ok(self.execute("UPDATE site_sync SET hardware_id = NULL WHERE site_id = $1", &[&site])? > 0)
    }

    fn password_hash(&mut self, site: &str) -> Result<Option<String>> {
        self.query_opt("SELECT password_hash FROM site_sync WHERE site_id = $1", &[&site])?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    fn site_sync_rows(&mut self) -> Result<Vec<SiteSyncRow>> {
        self.query(
            "SELECT s.site_id, s.acked_seq, s.last_push_at, s.last_pull_at,
                    COALESCE(now() - COALESCE(s.last_pull_at, s.last_push_at)::timestamptz > interval '30 days', false),
                    (SELECT count(*) FROM rejection r WHERE r.site_id = s.site_id),
                    s.disabled_at, s.pulled_seq, s.pulled_xid, s.waiting_to_push
             FROM site_sync s ORDER BY s.site_id",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(SiteSyncRow {
                site: r.try_get(0)?,
                acked: Seq(r.try_get(1)?),
                last_push_at: r.try_get(2)?,
                last_pull_at: r.try_get(3)?,
                stale: r.try_get(4)?,
                rejections: u64::try_from(r.try_get::<_, i64>(5)?).unwrap_or(0),
                disabled_at: r.try_get(6)?,
                pulled_to: r
                    .try_get::<_, Option<i64>>(7)?
                    .map(|seq| Ok::<_, StoreError>(LogPos::new(r.try_get::<_, Option<i64>>(8)?.unwrap_or(0), Seq(seq))))
                    .transpose()?,
                waiting_to_push: r.try_get::<_, Option<i64>>(9)?.map(|n| u64::try_from(n).unwrap_or(0)),
            })
        })
        .collect()
    }

    fn rejections(&mut self, limit: Option<usize>) -> Result<Vec<RejectionRecord>> {
        let rows = match limit {
            Some(n) => self.query(
                "SELECT site_id, origin_seq, tbl, record_id, action, data, reason, at FROM rejection
                 ORDER BY id DESC LIMIT $1",
                &[&limit_param(n)],
            )?,
            None => self.query(
                "SELECT site_id, origin_seq, tbl, record_id, action, data, reason, at FROM rejection ORDER BY id",
                &[],
            )?,
        };
        rows.iter().map(rejection_from_row).collect()
    }

    fn rejections_matching(
        &mut self,
        site: Option<&str>,
        table: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RejectionRecord>> {
        self.query(
            "SELECT site_id, origin_seq, tbl, record_id, action, data, reason, at FROM rejection
             WHERE ($1::text IS NULL OR site_id = $1) AND ($2::text IS NULL OR tbl = $2) ORDER BY id DESC LIMIT $3",
            &[&site, &table, &limit_param(limit)],
        )?
        .iter()
        .map(rejection_from_row)
        .collect()
    }

    fn open_rejections(&mut self, site: &str) -> Result<Vec<RejectionRecord>> {
        self.query(
            "SELECT site_id, origin_seq, tbl, record_id, action, data, reason, at FROM rejection
             WHERE site_id = $1 AND resolved_at IS NULL ORDER BY id",
            &[&site],
        )?
        .iter()
        .map(rejection_from_row)
        .collect()
    }

    fn resolve_rejections(&mut self, site: &str) -> Result<u64> {
        self.execute(
            r#"UPDATE rejection SET resolved_at = to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
               WHERE site_id = $1 AND resolved_at IS NULL"#,
            &[&site],
        )
    }

    fn count_open_rejections(&mut self, site: &SiteId) -> Result<u64> {
        count(&self.query_one(
            "SELECT count(*) FROM rejection WHERE site_id = $1 AND resolved_at IS NULL",
            &[&site.as_str()],
        )?)
    }

    fn count_rejections(&mut self) -> Result<u64> {
        count(&self.query_one("SELECT count(*) FROM rejection", &[])?)
    }

    fn note_sync(&mut self, site: &SiteId, request: &SyncRequest) -> Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let values: [&(dyn ToSql + Sync); 7] = [
            &site.as_str(),
            &request.at,
            &n(request.pushed),
            &n(request.pulled),
            &n(request.bytes_up),
            &n(request.bytes_down),
            &n(request.busy_ms),
        ];
        let joined = self.execute(
            "UPDATE sync_session SET ended_at = greatest(ended_at, $2::bigint), requests = requests + 1,
               pushed = pushed + $3::bigint, pulled = pulled + $4::bigint, bytes_up = bytes_up + $5::bigint,
               bytes_down = bytes_down + $6::bigint, busy_ms = busy_ms + $7::bigint
             WHERE id = (SELECT id FROM sync_session WHERE site_id = $1 ORDER BY ended_at DESC, id DESC LIMIT 1)
               AND ended_at >= $2::bigint - 120", // history::SESSION_GAP_SECS
            &values,
        )?;
        if joined == 0 {
            self.execute(
                "INSERT INTO sync_session (site_id, started_at, ended_at, requests, pushed, pulled, bytes_up, bytes_down, busy_ms)
                 VALUES ($1, $2, $2, 1, $3, $4, $5, $6, $7)",
                &values,
            )?;
            self.execute(
                "DELETE FROM sync_session WHERE site_id = $1 AND ended_at < $2",
                &[&site.as_str(), &(request.at - KEEP_SESSIONS_SECS)],
            )?;
        }
        Ok(())
    }

    fn sync_sessions(&mut self, site: &str, since: i64) -> Result<Vec<SyncSession>> {
        let u = |r: &Row, i: usize| -> Result<u64> { Ok(u64::try_from(r.try_get::<_, i64>(i)?).unwrap_or(0)) };
        self.query(
            "SELECT site_id, started_at, ended_at, requests, pushed, pulled, bytes_up, bytes_down, busy_ms
             FROM sync_session WHERE site_id = $1 AND ended_at >= $2 ORDER BY ended_at, id",
            &[&site, &since],
        )?
        .iter()
        .map(|r| {
            Ok(SyncSession {
                site: r.try_get(0)?,
                started_at: r.try_get(1)?,
                ended_at: r.try_get(2)?,
                requests: u(r, 3)?,
                pushed: u(r, 4)?,
                pulled: u(r, 5)?,
                bytes_up: u(r, 6)?,
                bytes_down: u(r, 7)?,
                busy_ms: u(r, 8)?,
            })
        })
        .collect()
    }

    fn add_debt_sample(&mut self, sample: &DebtSample) -> Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.execute(
            "INSERT INTO debt_sample (site_id, at, owed, owed_bytes, log_seq) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (site_id, at) DO UPDATE SET owed = excluded.owed, owed_bytes = excluded.owed_bytes, log_seq = excluded.log_seq",
            &[&sample.site, &sample.at, &n(sample.owed), &n(sample.owed_bytes), &sample.log_seq.0],
        )?;
        self.execute(
            "DELETE FROM debt_sample WHERE site_id = $1 AND at < $2",
            &[&sample.site, &(sample.at - KEEP_SAMPLES_SECS)],
        )?;
        Ok(())
    }

    fn debt_samples(&mut self, site: Option<&str>, since: i64) -> Result<Vec<DebtSample>> {
        let u = |r: &Row, i: usize| -> Result<u64> { Ok(u64::try_from(r.try_get::<_, i64>(i)?).unwrap_or(0)) };
        self.query(
            "SELECT site_id, at, owed, owed_bytes, log_seq FROM debt_sample
             WHERE ($1::text IS NULL OR site_id = $1) AND at >= $2 ORDER BY at, site_id",
            &[&site, &since],
        )?
        .iter()
        .map(|r| {
            Ok(DebtSample {
                site: r.try_get(0)?,
                at: r.try_get(1)?,
                owed: u(r, 2)?,
                owed_bytes: u(r, 3)?,
                log_seq: Seq(r.try_get(4)?),
            })
        })
        .collect()
    }

    fn logged_by(&mut self, seq: Seq) -> Result<Option<i64>> {
        Ok(self.query_one("SELECT min(at) FROM debt_sample WHERE log_seq >= $1", &[&seq.0])?.try_get(0)?)
    }

    // The reports: over the columns of migration 7 (a live line has its item; a tombstone none).

    fn stock_on_hand(&mut self, scope: &Scope) -> Result<Vec<StockRow>> {
        // In the index's order, so that PostgreSQL sums as it scans; the names are looked up
        // once per store and item afterwards, not joined to every row.
        let rows = self.query(
            "SELECT store_id COLLATE \"C\", item_id, location_id, count(*), coalesce(sum(packs * coalesce(pack_size, 1)), 0),
                    coalesce(sum(packs * coalesce(cost_per_pack, 0)), 0)
             FROM record
             WHERE tbl = 'stock_line' AND item_id IS NOT NULL AND store_id IS NOT NULL
               AND ($1::text[] IS NULL OR store_id COLLATE \"C\" = ANY($1)) AND ($2::text IS NULL OR item_id = $2)
             GROUP BY 1, 2, 3
             ORDER BY 1, 2, 3",
            &[&scope.store_list(), &scope.item],
        )?;
        let mut stock = rows
            .iter()
            .map(|r| {
                Ok(StockRow {
                    store: r.try_get(0)?,
                    store_name: None,
                    item: r.try_get(1)?,
                    item_name: None,
                    location: r.try_get(2)?,
                    lines: u64::try_from(r.try_get::<_, i64>(3)?).unwrap_or(0),
                    units: r.try_get(4)?,
                    value: r.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let stores = self.names("store", stock.iter().map(|r| r.store.as_str()))?;
        let items = self.names("item", stock.iter().map(|r| r.item.as_str()))?;
        for row in &mut stock {
            row.store_name = stores.get(&row.store).cloned();
            row.item_name = items.get(&row.item).cloned();
        }
        Ok(stock)
    }

    fn stock_value(&mut self, scope: &Scope) -> Result<Vec<ValueRow>> {
        let rows = self.query(
            "SELECT s.store_id, st.data::json ->> 'name', s.lines, s.units, s.value
             FROM (SELECT store_id COLLATE \"C\" AS store_id, count(*) AS lines,
                          coalesce(sum(packs * coalesce(pack_size, 1)), 0) AS units,
                          coalesce(sum(packs * coalesce(cost_per_pack, 0)), 0) AS value
                   FROM record
                   WHERE tbl = 'stock_line' AND item_id IS NOT NULL AND store_id IS NOT NULL
                     AND ($1::text[] IS NULL OR store_id COLLATE \"C\" = ANY($1))
                   GROUP BY 1) s
             LEFT JOIN record st ON st.tbl = 'store' AND st.id = s.store_id
             ORDER BY s.store_id",
            &[&scope.store_list()],
        )?;
        rows.iter()
            .map(|r| {
                Ok(ValueRow {
                    store: r.try_get(0)?,
                    store_name: r.try_get(1)?,
                    lines: u64::try_from(r.try_get::<_, i64>(2)?).unwrap_or(0),
                    units: r.try_get(3)?,
                    value: r.try_get(4)?,
                })
            })
            .collect()
    }

    fn monthly_usage(&mut self, scope: &Scope, item: &str) -> Result<Vec<UsageRow>> {
        let rows = self.query(
            "SELECT u.store_id, st.data::json ->> 'name', u.month, u.units
             FROM (SELECT l.store_id, coalesce(left(t.data::json ->> 'finalised_date', 7), 'none') AS month,
                          coalesce(sum(l.packs * coalesce(l.pack_size, 1)), 0) AS units
                   FROM record l
                   JOIN record t ON t.tbl = 'transaction' AND t.id = (l.data::json ->> 'transaction_id') COLLATE \"C\"
                   WHERE l.tbl = 'transaction_line' AND l.item_id = $2 AND l.store_id IS NOT NULL
                     AND ($1::text[] IS NULL OR l.store_id = ANY($1))
                     AND t.data::json ->> 'type' = 'customer_invoice' AND t.data::json ->> 'status' = 'finalised'
                   GROUP BY 1, 2) u
             LEFT JOIN record st ON st.tbl = 'store' AND st.id = u.store_id COLLATE \"C\"
             ORDER BY u.month COLLATE \"C\", u.store_id COLLATE \"C\"",
            &[&scope.store_list(), &item],
        )?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    store: r.try_get(0)?,
                    store_name: r.try_get(1)?,
                    month: r.try_get(2)?,
                    units: r.try_get(3)?,
                })
            })
            .collect()
    }

    // Reads for the sync engine.

    fn changes_after(&mut self, after: Seq, origin: &SiteId, limit: usize, max_bytes: usize) -> Result<Vec<Change>> {
        let rows = self.query(CHANGES_AFTER, &[&after.0, &origin.as_str(), &limit_param(limit)])?;
        take_bounded(rows.iter().map(change_from_row), limit, max_bytes)
    }

    fn count_changes_after(&mut self, after: Seq, origin: &SiteId) -> Result<u64> {
        count(&self.query_one(
            "SELECT count(*) FROM change_log WHERE seq > $1 AND origin_site = $2",
            &[&after.0, &origin.as_str()],
        )?)
    }

    fn last_seq(&mut self) -> Result<Seq> {
        Ok(Seq(self.query_one("SELECT COALESCE(max(seq), 0)::bigint FROM change_log", &[])?.try_get(0)?))
    }

    fn snapshot_after(&mut self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Stored>> {
        let (tbl, id) = after.unwrap_or(("", ""));
        self.query(
            "SELECT tbl, id, store_id, other_store_id, name_id, data FROM record
             WHERE (tbl, id) > ($1, $2) AND data IS NOT NULL ORDER BY tbl, id LIMIT $3",
            &[&tbl, &id, &limit_param(limit)],
        )?
        .iter()
        .map(|r| {
            Ok(Stored {
                table: r.try_get(0)?,
                id: RecordId(r.try_get(1)?),
                keys: keys_from_row(r, 2)?,
                data: r.try_get(5)?,
            })
        })
        .collect()
    }

    fn count_records_after(&mut self, after: Option<(&str, &str)>) -> Result<u64> {
        let (tbl, id) = after.unwrap_or(("", ""));
        count(&self.query_one("SELECT count(*) FROM record WHERE (tbl, id) > ($1, $2)", &[&tbl, &id])?)
    }

    fn pull_from(
        &mut self,
        source: &PullSource,
        site: &SiteId,
        after: LogPos,
        limit: usize,
    ) -> Result<Vec<(Change, LogPos, usize)>> {
        let rows = match source {
            PullSource::Bucket(bucket) => {
                self.query(PULL_BUCKET, &[bucket, &after.xid, &after.seq.0, &site.as_str(), &limit_param(limit)])?
            }
            PullSource::Outbox => {
                self.query(PULL_OUTBOX, &[&site.as_str(), &after.xid, &after.seq.0, &limit_param(limit)])?
            }
        };
        rows.iter()
            .map(|row| {
                let (change, size) = change_from_row(row)?;
                let pos = LogPos::new(row.try_get(7)?, change.seq);
                Ok((change, pos, size))
            })
            .collect()
    }

    /// Counts what waits, including changes of transactions a pull must still wait for (so a
    /// site that sees an empty batch but a count above zero knows to ask again shortly).
    fn count_pull(&mut self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<u64> {
        let row = match source {
            PullSource::Bucket(bucket) => self.query_one(
                "SELECT count(*) FROM change_log WHERE bucket = $1 AND (xid, seq) > ($2, $3) AND origin_site <> $4",
                &[bucket, &after.xid, &after.seq.0, &site.as_str()],
            )?,
            PullSource::Outbox => self.query_one(
                "SELECT count(*) FROM outbox o JOIN change_log l ON l.seq = o.seq
                 WHERE o.site_id = $1 AND (o.xid, o.seq) > ($2, $3)",
                &[&site.as_str(), &after.xid, &after.seq.0],
            )?,
        };
        count(&row)
    }

    fn debt(&mut self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<Debt> {
        let row = match source {
            PullSource::Bucket(bucket) => self.query_one(
                "SELECT count(*), sum(octet_length(r.data))::bigint, min(l.seq) FROM change_log l
                 JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                 WHERE l.bucket = $1 AND (l.xid, l.seq) > ($2, $3) AND l.origin_site <> $4",
                &[bucket, &after.xid, &after.seq.0, &site.as_str()],
            )?,
            PullSource::Outbox => self.query_one(
                "SELECT count(*), sum(octet_length(r.data))::bigint, min(l.seq) FROM outbox o JOIN change_log l ON l.seq = o.seq
                 JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                 WHERE o.site_id = $1 AND (o.xid, o.seq) > ($2, $3)",
                &[&site.as_str(), &after.xid, &after.seq.0],
            )?,
        };
        Ok(Debt {
            changes: count(&row)?,
            bytes: row.try_get::<_, Option<i64>>(1)?.map_or(0, |b| u64::try_from(b).unwrap_or(0)),
            oldest: row.try_get::<_, Option<i64>>(2)?.map(Seq),
        })
    }

    /// Where the log stands for a reader starting now: everything written by transactions
    /// older than the oldest still running is before it.
    fn log_position(&mut self) -> Result<LogPos> {
        let row = self.query_one(concat!("SELECT ", horizon!(), " - 1"), &[])?;
        Ok(LogPos::new(row.try_get(0)?, Seq(i64::MAX)))
    }

    fn record(&mut self, table: &str, id: &str) -> Result<Option<Option<String>>> {
        self.query_opt("SELECT data FROM record WHERE tbl = $1 AND id = $2", &[&table, &id])?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    fn dump(&mut self) -> Result<Vec<(String, String, String)>> {
        self.query("SELECT tbl, id, data FROM record WHERE data IS NOT NULL ORDER BY tbl, id", &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    fn counts_by_table(&mut self) -> Result<Vec<(String, u64)>> {
        self.query("SELECT tbl, count(*) FROM record WHERE data IS NOT NULL GROUP BY tbl ORDER BY tbl", &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0))))
            .collect()
    }

    fn count_records(&mut self) -> Result<u64> {
        count(&self.query_one("SELECT count(*) FROM record WHERE data IS NOT NULL", &[])?)
    }
}
