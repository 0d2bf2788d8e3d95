//! The SQLite backend: every node's embedded default.
//!
//! - **One writer, several readers.** SQLite allows one writer at a time: a handle keeps one
//!   write connection behind a lock. Reads go to a small pool of read-only connections, which
//!   WAL lets read while a write transaction commits, so a pull, a status page or the dashboard
//!   does not queue behind a push. (An in-memory database has only its writer.)
//! - **The network.** The writer keeps the network its records describe, updated by every
//!   topology write and read again when another process commits (SQLite's `data_version`
//!   says so). A copy is published for readers that must not wait for the writer.
//! - **Positions.** `change_log.seq` is a rowid: one writer means positions are handed out in
//!   commit order, so a reader's cursor is the sequence number alone.

use super::{change_columns, change_from_parts, take_bounded, Backend, Deferred, Sql, TxSql, REJECTION_COLUMNS};
use crate::db::{network_from_records, Current, Put, Tx};
use crate::history::{
    Debt, DebtSample, SyncRequest, SyncSession, KEEP_SAMPLES_SECS, KEEP_SESSIONS_SECS, SESSION_GAP_SECS,
};
use crate::migrations;
use crate::queries::{PullSource, Stored};
use crate::reports::{Scope, StockRow, UsageRow, ValueRow};
use crate::sync_state::{PushedBatch, RejectionRecord, SiteCredentials, SiteSyncRow};
use crate::{Db, Result, StoreError};
use model::network::TOPOLOGY_TABLES;
use model::{Change, LogPos, Network, RecordId, RecordKeys, Registry, Seq, SiteId};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

/// Read connections kept open per handle.
const READERS: usize = 4;

/// "Now" as SQLite writes it into bookkeeping columns (RFC 3339, milliseconds, UTC).
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

impl Db {
    /// Opens (creating if needed) a database file, in WAL mode, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db> {
        let writer = Connection::open(path)?;
        Ok(Db::with_backend(Backend::Sqlite(SqliteDb::new(writer, Some(path.to_owned()))?)))
    }

    /// A private in-memory database, for tests and benchmarks.
    pub fn open_in_memory() -> Result<Db> {
        Ok(Db::with_backend(Backend::Sqlite(SqliteDb::new(Connection::open_in_memory()?, None)?)))
    }
}

/// A SQLite database, as one [`Db`] handle uses it.
pub(crate) struct SqliteDb {
    /// Idle read connections. Declared before the writer, so they close first: the last
    /// connection to close checkpoints the write-ahead log into the file and removes it, and a
    /// read-only connection cannot.
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Writer>,
    /// Where read connections open (`None`: in memory, the writer reads too).
    path: Option<PathBuf>,
    /// The network as the writer last saw it, for readers while the writer is busy.
    published: Mutex<Arc<Network>>,
    /// Bookkeeping left for the writer while it was busy (a pull's timestamp), run when the
    /// transaction holding it ends.
    deferred: Mutex<Vec<Deferred>>,
}

impl fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDb").field("path", &self.path).finish_non_exhaustive()
    }
}

struct Writer {
    conn: Connection,
    /// The network as this node's records describe it, kept in step with every topology write.
    network: Arc<Network>,
    /// SQLite's `data_version` when the network was last read (it changes on other
    /// connections' commits only).
    data_version: Option<i64>,
}

/// Rows of one multi-row insert ([`Sql::insert_new_unlogged`]): enough that a statement's own
/// cost (its cursors on every index of `record`) is shared, few enough to bind quickly.
const ROWS_PER_INSERT: usize = 32;

static INSERT_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rows = vec![RECORD_ROW; ROWS_PER_INSERT].join(", ");
    format!("INSERT OR IGNORE INTO record ({RECORD_COLUMNS}) VALUES {rows}")
});

/// The statements of [`Sql::insert_new_logged`], for 2, 4, … [`ROWS_PER_INSERT`] rows (a batch
/// is cut into those sizes, so that a few statements serve every length): the records, with
/// their log positions given, then their log entries.
/// Indexed by [`size_index`].
static INSERT_LOGGED: std::sync::LazyLock<Vec<(String, String)>> = std::sync::LazyLock::new(|| {
    statement_sizes(2 * ROWS_PER_INSERT - 1)
        .filter(|n| *n > 1)
        .map(|n| {
            let records = vec![RECORD_ROW; n].join(", ");
            let entries = vec!["(?, ?, ?, ?, ?, ?, ?)"; n].join(", ");
            (
                format!("INSERT OR IGNORE INTO record ({RECORD_COLUMNS}) VALUES {records}"),
                format!(
                    "INSERT OR IGNORE INTO change_log (seq, tbl, record_id, action, merge_into, origin_site, bucket) VALUES {entries}"
                ),
            )
        })
        .collect()
});

/// How a statement writing `len` rows is cut: into statements of [`ROWS_PER_INSERT`], then of
/// the powers of two below it, largest first (for 12 rows: 8, then 4), so that a few statement
/// texts serve every length.
fn statement_sizes(mut len: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let size = match len {
            0 => return None,
            n if n >= ROWS_PER_INSERT => ROWS_PER_INSERT,
            n => 1 << n.ilog2(),
        };
        len -= size;
        Some(size)
    })
}

/// Where the statement for `len` rows (a size of [`statement_sizes`]) is in a list of one
/// statement per size, largest first.
fn size_index(len: usize) -> usize {
    (ROWS_PER_INSERT.ilog2() - len.ilog2()) as usize
}

/// A line's records by their parent (`Sql::records_by`), through the index of migration 8.
const RECORDS_BY_PARENT: &str = "SELECT id, data FROM record WHERE tbl = ?1 AND parent_id = ?2 AND data IS NOT NULL";

/// A store's highest serial of a kind of transaction (`Sql::max_serial`): the last entry of the
/// index of migration 8 (`serial` holds numeric serials only).
const MAX_SERIAL: &str = "SELECT serial FROM record
     WHERE store_id = ?1 AND kind = ?2 AND serial IS NOT NULL AND tbl = 'transaction'
     ORDER BY serial DESC LIMIT 1";

/// The columns every `INSERT INTO record` here writes, in the order [`bind_record`] binds
/// them, and the placeholders of one row.
const RECORD_COLUMNS: &str =
    "tbl, id, store_id, other_store_id, name_id, data, log_seq, parent_id, item_id, kind, serial";
const RECORD_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Binds a record's row of [`RECORD_COLUMNS`] from parameter `at + 1` on: its keys, `data` as
/// stored, its log position, and the fields kept as columns.
fn bind_record(
    stmt: &mut rusqlite::Statement<'_>,
    at: usize,
    put: &Put<'_>,
    data: Option<&str>,
    log_seq: Option<i64>,
) -> rusqlite::Result<()> {
    let (store, other_store, name) = put.key_columns();
    stmt.raw_bind_parameter(at + 1, put.table)?;
    stmt.raw_bind_parameter(at + 2, put.id.as_str())?;
    stmt.raw_bind_parameter(at + 3, store)?;
    stmt.raw_bind_parameter(at + 4, other_store)?;
    stmt.raw_bind_parameter(at + 5, name)?;
    stmt.raw_bind_parameter(at + 6, data)?;
    stmt.raw_bind_parameter(at + 7, log_seq)?;
    Indexed::read(put.table, data).bind(stmt, at + 8)
}

/// The fields of a document kept beside it as columns, for the indexes that find them
/// (migration 8): a line's parent record (`model::transfer::INDEXED_FIELDS`), an invoice line's
/// item, a transaction's kind and serial number. Read here once per write, for those tables
/// only: an index over `json_extract` parsed the document once per index, and made SQLite keep
/// a copy of each page a many-row statement changed (a function may fail half-way).
#[derive(Debug, Default)]
struct Indexed {
    parent: Option<String>,
    item: Option<String>,
    kind: Option<String>,
    serial: Option<f64>,
}

impl Indexed {
    fn read(table: &str, data: Option<&str>) -> Indexed {
        use serde_json::value::RawValue;
        // Borrowed as they stand in the document: only the few kept are decoded.
        #[derive(serde::Deserialize)]
        struct Fields<'a> {
            #[serde(borrow)]
            transaction_id: Option<&'a RawValue>,
            #[serde(borrow)]
            requisition_id: Option<&'a RawValue>,
            #[serde(borrow)]
            purchase_order_id: Option<&'a RawValue>,
            #[serde(borrow)]
            goods_received_id: Option<&'a RawValue>,
            #[serde(borrow)]
            item_id: Option<&'a RawValue>,
            #[serde(borrow, rename = "type")]
            kind: Option<&'a RawValue>,
            #[serde(borrow)]
            serial_number: Option<&'a RawValue>,
        }
        let followed = table == "transaction" || model::transfer::INDEXED_FIELDS.iter().any(|(t, _)| *t == table);
        let Some(data) = data.filter(|_| followed) else { return Indexed::default() };
        let Ok(f) = serde_json::from_str::<Fields<'_>>(data) else { return Indexed::default() };
        let text = |v: Option<&RawValue>| v.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
        match table {
            "transaction" => Indexed {
                kind: text(f.kind),
                serial: f
                    .serial_number
                    .and_then(|raw| serde_json::from_str::<serde_json::Number>(raw.get()).ok())
                    .and_then(|n| n.as_f64())
                    .filter(|n| n.is_finite()),
                ..Indexed::default()
            },
            "transaction_line" => {
                Indexed { parent: text(f.transaction_id), item: text(f.item_id), ..Indexed::default() }
            }
            "requisition_line" => Indexed { parent: text(f.requisition_id), ..Indexed::default() },
            "purchase_order_line" => Indexed { parent: text(f.purchase_order_id), ..Indexed::default() },
            _ => Indexed { parent: text(f.goods_received_id), ..Indexed::default() },
        }
    }

    /// Binds the columns from parameter `at` on, in [`RECORD_COLUMNS`]' order.
    fn bind(&self, stmt: &mut rusqlite::Statement<'_>, at: usize) -> rusqlite::Result<()> {
        stmt.raw_bind_parameter(at, self.parent.as_deref())?;
        stmt.raw_bind_parameter(at + 1, self.item.as_deref())?;
        stmt.raw_bind_parameter(at + 2, self.kind.as_deref())?;
        stmt.raw_bind_parameter(at + 3, self.serial)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing guarded this way is left half-changed by a panic (a list of idle connections, an
    // `Arc` swapped whole).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteDb {
    fn new(conn: Connection, path: Option<PathBuf>) -> Result<SqliteDb> {
        migrations::check_sqlite(&conn)?;
        // Records are a few hundred bytes: larger pages mean fewer splits (only effective
        // before the first table is created).
        conn.pragma_update(None, "page_size", 16_384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -262_144)?;
        // A statement that writes many rows inside a transaction keeps a journal of its own, to
        // undo itself alone: in memory, not a page written to a temporary file for each page it
        // changes (which made a 32-row insert slower than 32 inserts).
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Reads through a memory map, not a pread (and a copy) per page: an initialisation reads
        // a whole store in key order, which is not the order the rows were written in.
        conn.pragma_update(None, "mmap_size", 4_i64 << 30)?;
        conn.pragma_update(None, "busy_timeout", 10_000)?;
        migrations::run_sqlite(&conn)?;
        let network = Arc::new(load_network(&conn)?);
        let data_version = data_version(&conn);
        Ok(SqliteDb {
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(Writer { conn, network: network.clone(), data_version }),
            path,
            published: Mutex::new(network),
            deferred: Mutex::new(Vec::new()),
        })
    }

    /// The writer, with its network up to date.
    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock cannot leave SQLite half-written (the transaction rolls
        // back on drop), so a poisoned lock is still safe to use once the network, which may have
        // absorbed records that rolled back, is read again from the database.
        let mut guard = self.writer.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            if let Ok(network) = load_network(&guard.conn) {
                guard.network = Arc::new(network);
                self.writer.clear_poison();
            }
            guard
        });
        // Another process (an admin command beside a running server) may have committed
        // topology changes: SQLite's data_version says so, cheaply.
        let version = data_version(&guard.conn);
        if version.is_some() && version != guard.data_version {
            if let Ok(network) = load_network(&guard.conn) {
                guard.network = Arc::new(network);
                guard.data_version = version;
            }
        }
        *lock(&self.published) = guard.network.clone();
        guard
    }

    pub(crate) fn transaction<T>(
        &self,
        registry: &'static Registry,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.writer();
        let writer = &mut *guard;
        // Immediate: the write lock is taken (waiting up to the busy timeout) before the first
        // read. A deferred transaction that reads, then writes, fails at once with "database is
        // locked" when another process (a person's write beside a running sync) committed in
        // between.
        let sql = writer.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // The transaction takes the network: it is copied only if a reader holds it too.
        let network = std::mem::take(&mut writer.network);
        let mut tx = Tx::new(TxSql::Sqlite(sql), network, registry);
        let outcome = match f(&mut tx) {
            Ok(value) => tx.commit().map(|committed| (value, committed)),
            Err(e) => {
                drop(tx);
                Err(e)
            }
        };
        let result = match outcome {
            Ok((value, committed)) => {
                writer.network = committed.network;
                if committed.topology_changed {
                    *lock(&self.published) = writer.network.clone();
                }
                Ok(value)
            }
            Err(e) => {
                // The transaction rolled back; the network may have absorbed records that are
                // not there any more.
                writer.network = Arc::new(load_network(&writer.conn)?);
                *lock(&self.published) = writer.network.clone();
                Err(e)
            }
        };
        self.run_deferred(&writer.conn);
        result
    }

    #[cfg(feature = "failpoints")]
    pub(crate) fn limit_disk(&self, spare_pages: Option<u64>) -> Result<()> {
        let writer = self.writer();
        let pages = match spare_pages {
            Some(spare) => writer.conn.query_row("PRAGMA page_count", [], |r| r.get::<_, u64>(0))? + spare,
            None => u64::from(u32::MAX - 1),
        };
        writer.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        Ok(())
    }

    /// Writes without a journal and without waiting for the disk (`on`), or as always (WAL,
    /// synchronous NORMAL, and everything written so far flushed to the disk).
    pub(crate) fn bulk_load(&self, on: bool) -> Result<()> {
        let writer = self.writer();
        if on {
            // Leaving WAL checkpoints it first; the journal mode answers with a row.
            writer.conn.query_row("PRAGMA journal_mode = OFF", [], |_| Ok(()))?;
            writer.conn.pragma_update(None, "synchronous", "OFF")?;
        } else {
            writer.conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            writer.conn.pragma_update(None, "synchronous", "NORMAL")?;
            if let Some(path) = &self.path {
                std::fs::File::open(path)
                    .and_then(|file| file.sync_all())
                    .map_err(|source| StoreError::Flush { path: path.clone(), source })?;
            }
        }
        Ok(())
    }

    /// Runs what was left for the writer, each statement committing on its own. A failure is
    /// logged: it is bookkeeping for status pages, not a record.
    fn run_deferred(&self, conn: &Connection) {
        let deferred = std::mem::take(&mut *lock(&self.deferred));
        for f in deferred {
            if let Err(e) = f(&mut Lite(conn)) {
                tracing::warn!(error = %e, "could not write deferred bookkeeping");
            }
        }
    }

    pub(crate) fn write_soon(&self, f: Deferred) -> Result<()> {
        let busy = matches!(self.writer.try_lock(), Err(TryLockError::WouldBlock));
        if !busy {
            return self.write_now(f);
        }
        lock(&self.deferred).push(f);
        // The writer may have finished between the look and the push: run it now if so.
        if !matches!(self.writer.try_lock(), Err(TryLockError::WouldBlock)) {
            let guard = self.writer();
            self.run_deferred(&guard.conn);
        }
        Ok(())
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        let Some(path) = &self.path else { return self.write_now(f) };
        let idle = lock(&self.readers).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(path)?,
        };
        let result = f(&mut Lite(&conn));
        let mut readers = lock(&self.readers);
        if readers.len() < READERS {
            readers.push(conn);
        }
        result
    }

    pub(crate) fn write_now<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        let guard = self.writer();
        let result = f(&mut Lite(&guard.conn));
        self.run_deferred(&guard.conn);
        result
    }

    pub(crate) fn network(&self) -> Arc<Network> {
        // A busy writer is in a transaction of this process, which will publish what it changes.
        let busy = matches!(self.writer.try_lock(), Err(TryLockError::WouldBlock));
        if busy {
            lock(&self.published).clone()
        } else {
            self.writer().network.clone()
        }
    }
}

fn data_version(conn: &Connection) -> Option<i64> {
    conn.pragma_query_value(None, "data_version", |r| r.get(0)).ok()
}

/// A read-only connection to the database file.
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )?;
    // As large as the writer's: a snapshot reads a whole store in key order, and a small cache
    // rebuilds pages it just had (the memory is taken only as pages are read).
    conn.pragma_update(None, "cache_size", -262_144)?;
    conn.pragma_update(None, "mmap_size", 4_i64 << 30)?;
    conn.pragma_update(None, "busy_timeout", 10_000)?;
    Ok(conn)
}

fn load_network(conn: &Connection) -> Result<Network> {
    let placeholders = vec!["?"; TOPOLOGY_TABLES.len()].join(",");
    let mut stmt = conn.prepare(&format!(
        "SELECT tbl, id, data FROM record WHERE tbl IN ({placeholders}) AND data IS NOT NULL
         ORDER BY CASE tbl WHEN 'site' THEN 0 WHEN 'store' THEN 1 ELSE 2 END"
    ))?;
    let rows = stmt.query_map(rusqlite::params_from_iter(TOPOLOGY_TABLES), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })?;
    let mut network = network_from_records(rows.collect::<rusqlite::Result<_>>()?)?;
    let mut stmt = conn.prepare("SELECT tbl, id, into_id FROM merged")?;
    let merged = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, RecordId(r.get(1)?), RecordId(r.get(2)?))))?;
    for row in merged {
        let (table, id, into) = row?;
        network.merged.insert((table, id), into);
    }
    Ok(network)
}

fn change_from_row(row: &Row<'_>) -> rusqlite::Result<(Change, usize)> {
    Ok(change_from_parts(
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        &row.get::<_, String>(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn rejection_from_row(r: &Row<'_>) -> rusqlite::Result<RejectionRecord> {
    Ok(RejectionRecord {
        from: crate::RejectedFrom::from_stored(r.get(0)?),
        seq: Seq(r.get(1)?),
        table: r.get(2)?,
        id: RecordId(r.get(3)?),
        action: r.get(4)?,
        data: r.get(5)?,
        reason: r.get(6)?,
        at: r.get(7)?,
    })
}

fn keys_from_row(r: &Row<'_>, first: usize) -> rusqlite::Result<RecordKeys> {
    Ok(RecordKeys {
        store: r.get::<_, Option<String>>(first)?.map(Into::into),
        other_store: r.get::<_, Option<String>>(first + 1)?.map(Into::into),
        name: r.get::<_, Option<String>>(first + 2)?.map(Into::into),
        home_store: None,
    })
}

/// The live stock lines of the stores `?1` names (a JSON array; NULL for every store), with
/// what the reports read of each, a field of the wrong type taken as absent: the `line` of the
/// stock reports' queries.
macro_rules! stock_lines {
    () => {
        "WITH line AS (
             SELECT store_id,
                    CASE WHEN json_type(data, '$.item_id') = 'text' THEN json_extract(data, '$.item_id') END AS item,
                    CASE WHEN json_type(data, '$.location_id') = 'text' THEN json_extract(data, '$.location_id') END AS location,
                    CASE WHEN json_type(data, '$.total_number_of_packs') IN ('integer', 'real')
                         THEN json_extract(data, '$.total_number_of_packs') END AS packs,
                    CASE WHEN json_type(data, '$.pack_size') IN ('integer', 'real') THEN json_extract(data, '$.pack_size') END AS pack_size,
                    CASE WHEN json_type(data, '$.cost_price_per_pack') IN ('integer', 'real')
                         THEN json_extract(data, '$.cost_price_per_pack') END AS cost
             FROM record
             WHERE tbl = 'stock_line' AND data IS NOT NULL AND store_id IS NOT NULL
               AND (?1 IS NULL OR store_id IN (SELECT value FROM json_each(?1)))
         ) "
    };
}

/// A report's stores as `json_each` reads them: `None` for every store.
fn store_list(scope: &Scope) -> Option<String> {
    scope.store_list().map(|stores| serde_json::Value::from(stores.to_vec()).to_string())
}

/// Statements on a SQLite connection (a transaction derefs to one).
pub(crate) struct Lite<'c>(pub(crate) &'c Connection);

impl Lite<'_> {
    /// Appends a record's log entry: at `seq`, or, without one, at the next position (`seq` is
    /// the row id: NULL takes max + 1).
    fn append_log(&self, put: &Put<'_>, seq: Option<i64>) -> Result<Seq> {
        self.0
            .prepare_cached(
                "INSERT INTO change_log (seq, tbl, record_id, action, merge_into, origin_site, bucket)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                seq,
                put.table,
                put.id.as_str(),
                put.action.code(),
                put.merge_into(),
                put.origin.as_str(),
                put.bucket
            ])?;
        Ok(Seq(self.0.last_insert_rowid()))
    }
}

impl Sql for Lite<'_> {
    fn current(&mut self, table: &str, id: &str) -> Result<Option<(Current, RecordKeys)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT data, log_seq, store_id, other_store_id, name_id FROM record WHERE tbl = ?1 AND id = ?2",
        )?;
        Ok(stmt
            .query_row(params![table, id], |r| {
                let current = Current { data: r.get(0)?, log_seq: r.get::<_, Option<i64>>(1)?.map(Seq) };
                Ok((current, keys_from_row(r, 2)?))
            })
            .optional()?)
    }

    fn stored_keys(&mut self, table: &str, id: &str) -> Result<Option<RecordKeys>> {
        let mut stmt =
            self.0.prepare_cached("SELECT store_id, other_store_id, name_id FROM record WHERE tbl = ?1 AND id = ?2")?;
        Ok(stmt.query_row(params![table, id], |r| keys_from_row(r, 0)).optional()?)
    }

    fn looks_up_ahead(&self) -> bool {
        false // a look-up is a call in this process
    }

    fn current_many(&mut self, _table: &str, _ids: &[&str]) -> Result<Option<Vec<(String, Current, RecordKeys)>>> {
        Ok(None)
    }

    fn insert_absent(&mut self, put: &Put<'_>) -> Result<Seq> {
        // Never reached: `current_many` finds nothing absent here. Written as any new record.
        self.insert_new(put)?.ok_or_else(|| StoreError::Invalid {
            table: put.table.to_owned(),
            id: put.id.clone(),
            reason: "a record taken to be new exists".into(),
        })
    }

    fn insert_new(&mut self, put: &Put<'_>) -> Result<Option<Seq>> {
        let seq = if put.log { Some(self.append_log(put, None)?) } else { None };
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data, log_seq, parent_id, item_id, kind, serial)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (tbl, id) DO NOTHING",
        )?;
        bind_record(&mut stmt, 0, put, put.data, seq.map(|s| s.0))?;
        let inserted = stmt.raw_execute()?;
        drop(stmt);
        if inserted == 0 {
            if let Some(seq) = seq {
                // Nobody has seen this entry: it is the newest, and removing it leaves no gap.
                self.0.prepare_cached("DELETE FROM change_log WHERE seq = ?1")?.execute([seq.0])?;
            }
            return Ok(None);
        }
        Ok(Some(seq.unwrap_or_default()))
    }

    fn insert_new_unlogged(&mut self, puts: &[Put<'_>]) -> Result<Vec<bool>> {
        let mut inserted = Vec::with_capacity(puts.len());
        let mut rest = puts;
        while !rest.is_empty() {
            let len = rest.len().min(ROWS_PER_INSERT);
            let (chunk, tail) = rest.split_at(len);
            rest = tail;
            if len < ROWS_PER_INSERT {
                for put in chunk {
                    inserted.push(self.insert_new(put)?.is_some());
                }
                continue;
            }
            let mut stmt = self.0.prepare_cached(&INSERT_MANY)?;
            for (row, put) in chunk.iter().enumerate() {
                bind_record(&mut stmt, row * 11, put, put.data, None)?;
            }
            if stmt.raw_execute()? == len {
                inserted.extend(std::iter::repeat_n(true, len));
                continue;
            }
            // Some existed (`RETURNING` would say which, at twice the cost of the insert; a
            // record twice in the chunk is one of them): one that holds the document as given
            // needs nothing more, whether it was inserted now or was so already.
            drop(stmt);
            for put in chunk {
                let data: Option<Option<String>> = self
                    .0
                    .prepare_cached("SELECT data FROM record WHERE tbl = ?1 AND id = ?2")?
                    .query_row(params![put.table, put.id.as_str()], |r| r.get(0))
                    .optional()?;
                inserted.push(data.flatten().as_deref() == put.data);
            }
        }
        Ok(inserted)
    }

    fn insert_new_logged(&mut self, puts: &[Put<'_>]) -> Result<Vec<Option<Seq>>> {
        let mut seqs = Vec::with_capacity(puts.len());
        let mut rest = puts;
        for len in statement_sizes(puts.len()) {
            let (chunk, tail) = rest.split_at(len);
            rest = tail;
            if len == 1 {
                seqs.push(self.insert_new(&chunk[0])?);
                continue;
            }
            let (records, entries) = &INSERT_LOGGED[size_index(len)];
            // The positions the log would give them one by one (`seq` is the row id: max + 1).
            let first: i64 = self
                .0
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM change_log")?
                .query_row([], |r| r.get(0))?;
            let mut stmt = self.0.prepare_cached(records)?;
            for (row, put) in chunk.iter().enumerate() {
                bind_record(&mut stmt, row * 11, put, put.data, Some(first + row as i64))?;
            }
            let all_new = stmt.raw_execute()? == len;
            drop(stmt);
            let mut inserted: Vec<Option<Seq>> = (0..len as i64).map(|row| Some(Seq(first + row))).collect();
            if !all_new {
                // Some existed (a record twice in the chunk is one of them): those hold another
                // position, and get no entry here.
                for (put, seq) in chunk.iter().zip(inserted.iter_mut()) {
                    let held: Option<Option<i64>> = self
                        .0
                        .prepare_cached("SELECT log_seq FROM record WHERE tbl = ?1 AND id = ?2")?
                        .query_row(params![put.table, put.id.as_str()], |r| r.get(0))
                        .optional()?;
                    if held.flatten() != seq.map(|s| s.0) {
                        *seq = None;
                    }
                }
            }
            if all_new {
                let mut stmt = self.0.prepare_cached(entries)?;
                for (row, put) in chunk.iter().enumerate() {
                    let at = row * 7;
                    stmt.raw_bind_parameter(at + 1, first + row as i64)?;
                    stmt.raw_bind_parameter(at + 2, put.table)?;
                    stmt.raw_bind_parameter(at + 3, put.id.as_str())?;
                    stmt.raw_bind_parameter(at + 4, put.action.code())?;
                    stmt.raw_bind_parameter(at + 5, put.merge_into())?;
                    stmt.raw_bind_parameter(at + 6, put.origin.as_str())?;
                    stmt.raw_bind_parameter(at + 7, put.bucket)?;
                }
                stmt.raw_execute()?;
            } else {
                for (put, seq) in chunk.iter().zip(&inserted) {
                    let Some(seq) = seq else { continue };
                    self.append_log(put, Some(seq.0))?;
                }
            }
            seqs.extend(inserted);
        }
        Ok(seqs)
    }

    fn write_record(&mut self, put: &Put<'_>, old_seq: Option<Seq>) -> Result<Option<Seq>> {
        let seq = if put.log {
            let seq = self.append_log(put, None)?;
            if let Some(old) = old_seq {
                // The record's earlier entry is superseded: a late reader needs only the latest.
                self.0.prepare_cached("DELETE FROM change_log WHERE seq = ?1")?.execute([old.0])?;
            }
            Some(seq)
        } else {
            None
        };
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data, log_seq, parent_id, item_id, kind, serial)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (tbl, id) DO UPDATE SET store_id = excluded.store_id, other_store_id = excluded.other_store_id,
               name_id = excluded.name_id, data = excluded.data, log_seq = COALESCE(excluded.log_seq, record.log_seq),
               parent_id = excluded.parent_id, item_id = excluded.item_id, kind = excluded.kind, serial = excluded.serial",
        )?;
        bind_record(&mut stmt, 0, put, put.stored_data(), seq.map(|s| s.0))?;
        stmt.raw_execute()?;
        Ok(seq)
    }

    fn set_bucket(&mut self, seq: Seq, bucket: &str) -> Result<()> {
        self.0.prepare_cached("UPDATE change_log SET bucket = ?2 WHERE seq = ?1")?.execute(params![seq.0, bucket])?;
        Ok(())
    }

    fn seqs_in_bucket(&mut self, bucket: &str) -> Result<Vec<Seq>> {
        let mut stmt = self.0.prepare("SELECT seq FROM change_log WHERE bucket = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([bucket], |r| Ok(Seq(r.get(0)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn add_merged(&mut self, table: &str, id: &str, into: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO merged (tbl, id, into_id) VALUES (?1, ?2, ?3) ON CONFLICT (tbl, id) DO UPDATE SET into_id = excluded.into_id",
            params![table, id, into],
        )?;
        Ok(())
    }

    fn records_containing(&mut self, table: Option<&str>, text: &str) -> Result<Vec<(String, RecordId, String)>> {
        // `tbl` leads the record's unique key, so a table's scan reads that table only.
        let mut stmt = self.0.prepare_cached(
            "SELECT tbl, id, data FROM record
             WHERE (?1 IS NULL OR tbl = ?1) AND data IS NOT NULL AND instr(data, ?2) > 0",
        )?;
        let rows =
            stmt.query_map(params![table, text], |r| Ok((r.get::<_, String>(0)?, RecordId(r.get(1)?), r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn records_by(&mut self, lookup: usize, value: &str) -> Result<Vec<(RecordId, String)>> {
        let (table, _) = model::transfer::INDEXED_FIELDS[lookup];
        let mut stmt = self.0.prepare_cached(RECORDS_BY_PARENT)?;
        let rows = stmt.query_map([table, value], |r| Ok((RecordId(r.get(0)?), r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn max_serial(&mut self, store: &str, kind: &str) -> Result<Option<i64>> {
        let mut stmt = self.0.prepare_cached(MAX_SERIAL)?;
        let found: Option<f64> = stmt.query_row(params![store, kind], |r| r.get(0)).optional()?;
        Ok(found.map(|n| n as i64))
    }

    fn logged_records(
        &mut self,
        column: &'static str,
        value: &str,
    ) -> Result<Vec<(String, RecordId, RecordKeys, Seq)>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT tbl, id, store_id, other_store_id, name_id, log_seq FROM record
                 WHERE {column} = ?1 AND data IS NOT NULL AND log_seq IS NOT NULL ORDER BY log_seq"
        ))?;
        let rows = stmt.query_map([value], |r| {
            Ok((r.get::<_, String>(0)?, RecordId(r.get(1)?), keys_from_row(r, 2)?, Seq(r.get(5)?)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn relog_all(&mut self, olds: &[Seq]) -> Result<Vec<Seq>> {
        if olds.is_empty() {
            return Ok(Vec::new());
        }
        self.0.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS relog_map (old INTEGER PRIMARY KEY, new INTEGER NOT NULL);
             DELETE FROM temp.relog_map;",
        )?;
        let mut news = Vec::with_capacity(olds.len());
        {
            let mut copy = self.0.prepare_cached(
                "INSERT INTO change_log (tbl, record_id, action, merge_into, origin_site, bucket)
                 SELECT tbl, record_id, action, merge_into, origin_site, bucket FROM change_log WHERE seq = ?1",
            )?;
            let mut map = self.0.prepare_cached("INSERT OR IGNORE INTO temp.relog_map (old, new) VALUES (?1, ?2)")?;
            for old in olds {
                if copy.execute([old.0])? == 0 {
                    news.push(*old);
                    continue;
                }
                let new = self.0.last_insert_rowid();
                map.execute(params![old.0, new])?;
                news.push(Seq(new));
            }
        }
        self.0.execute_batch(
            "UPDATE outbox SET seq = (SELECT new FROM temp.relog_map WHERE old = outbox.seq)
                 WHERE seq IN (SELECT old FROM temp.relog_map);
             UPDATE record SET log_seq = (SELECT new FROM temp.relog_map WHERE old = record.log_seq)
                 WHERE log_seq IN (SELECT old FROM temp.relog_map);
             DELETE FROM change_log WHERE seq IN (SELECT old FROM temp.relog_map);
             DELETE FROM temp.relog_map;",
        )?;
        Ok(news)
    }

    fn log_unlogged(&mut self, table: &str, store: &str, origin: &SiteId) -> Result<u64> {
        let logged = self.0.execute(
            "INSERT INTO change_log (tbl, record_id, action, origin_site)
             SELECT tbl, id, 'upsert', ?3 FROM record
             WHERE tbl = ?1 AND store_id = ?2 AND log_seq IS NULL AND data IS NOT NULL ORDER BY id",
            params![table, store, origin.as_str()],
        )?;
        self.0.execute(
            "UPDATE record SET log_seq = (SELECT max(l.seq) FROM change_log l WHERE l.tbl = record.tbl AND l.record_id = record.id)
             WHERE tbl = ?1 AND store_id = ?2 AND log_seq IS NULL AND data IS NOT NULL",
            params![table, store],
        )?;
        Ok(logged as u64)
    }

    fn add_outbox(&mut self, site: &SiteId, seq: Seq) -> Result<()> {
        self.0
            .prepare_cached("INSERT OR IGNORE INTO outbox (site_id, seq) VALUES (?1, ?2)")?
            .execute(params![site.as_str(), seq.0])?;
        Ok(())
    }

    fn add_outbox_all(&mut self, entries: &[(&SiteId, Seq)]) -> Result<()> {
        // One statement per size of `statement_sizes`, the largest first.
        static INSERTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
            statement_sizes(2 * ROWS_PER_INSERT - 1)
                .map(|n| format!("INSERT OR IGNORE INTO outbox (site_id, seq) VALUES {}", vec!["(?, ?)"; n].join(", ")))
                .collect()
        });
        let mut rest = entries;
        for len in statement_sizes(entries.len()) {
            let (chunk, tail) = rest.split_at(len);
            rest = tail;
            let mut stmt = self.0.prepare_cached(&INSERTS[size_index(len)])?;
            for (row, (site, seq)) in chunk.iter().enumerate() {
                stmt.raw_bind_parameter(row * 2 + 1, site.as_str())?;
                stmt.raw_bind_parameter(row * 2 + 2, seq.0)?;
            }
            stmt.raw_execute()?;
        }
        Ok(())
    }

    fn shift_log_after(&mut self, pushed: Seq, shift: i64) -> Result<u64> {
        // Through negative numbers: no entry takes a position another still holds.
        let moved =
            self.0.execute("UPDATE change_log SET seq = -(seq + ?2) WHERE seq > ?1", params![pushed.0, shift])?;
        self.0.execute("UPDATE change_log SET seq = -seq WHERE seq < 0", [])?;
        self.0.execute("UPDATE record SET log_seq = log_seq + ?2 WHERE log_seq > ?1", params![pushed.0, shift])?;
        Ok(moved as u64)
    }

    fn state(&mut self, key: &str) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT value FROM state WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    fn set_state(&mut self, key: &str, value: &str) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
        Ok(())
    }

    fn keep_rejection(&mut self, rejection: &RejectionRecord) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR IGNORE INTO rejection (site_id, origin_seq, tbl, record_id, action, data, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                rejection.from.to_string(),
                rejection.seq.0,
                rejection.table,
                rejection.id.as_str(),
                rejection.action,
                rejection.data,
                rejection.reason
            ])?;
        Ok(())
    }

    fn rejections_between(&mut self, from: &str, first: Seq, last: Seq) -> Result<Vec<RejectionRecord>> {
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT {REJECTION_COLUMNS} FROM rejection WHERE site_id = ?1 AND origin_seq BETWEEN ?2 AND ?3 ORDER BY origin_seq"
        ))?;
        let rows = stmt.query_map(params![from, first.0, last.0], rejection_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn acked_now(&mut self, site: &SiteId) -> Result<Seq> {
        self.acked(site)
    }

    fn acked(&mut self, site: &SiteId) -> Result<Seq> {
        let seq: Option<i64> = self
            .0
            .prepare_cached("SELECT acked_seq FROM site_sync WHERE site_id = ?1")?
            .query_row([site.as_str()], |r| r.get(0))
            .optional()?;
        Ok(Seq(seq.unwrap_or(0)))
    }

    fn record_push(&mut self, site: &SiteId, batch: &PushedBatch) -> Result<()> {
        self.0
            .prepare_cached(&format!(
                "UPDATE site_sync SET acked_seq = ?2, push_from = ?3, push_digest = ?4, last_push_at = {NOW} WHERE site_id = ?1"
            ))?
            .execute(params![site.as_str(), batch.acked.0, batch.from.0, batch.digest])?;
        Ok(())
    }

    fn last_push(&mut self, site: &SiteId) -> Result<Option<PushedBatch>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT acked_seq, push_from, push_digest FROM site_sync WHERE site_id = ?1 AND push_digest IS NOT NULL",
            )?
            .query_row([site.as_str()], |r| {
                Ok(PushedBatch {
                    acked: Seq(r.get(0)?),
                    from: Seq(r.get::<_, Option<i64>>(1)?.unwrap_or(0)),
                    digest: r.get(2)?,
                })
            })
            .optional()?)
    }

    fn set_password_hash(&mut self, site: &str, hash: &str, create: bool) -> Result<bool> {
        let changed = if create {
            self.0.execute(
                "INSERT INTO site_sync (site_id, password_hash) VALUES (?1, ?2)
                 ON CONFLICT (site_id) DO UPDATE SET password_hash = excluded.password_hash",
                params![site, hash],
            )?
        } else {
            self.0.execute("UPDATE site_sync SET password_hash = ?2 WHERE site_id = ?1", params![site, hash])?
        };
        Ok(changed > 0)
    }

    fn start_log_after(&mut self, seq: Seq) -> Result<()> {
        self.0.execute(
            "INSERT OR IGNORE INTO change_log (seq, tbl, record_id, action, origin_site) VALUES (?1, '', '', 'upsert', '')",
            [seq.0],
        )?;
        Ok(())
    }

    fn mark_pulled(&mut self, site: &SiteId, reached: Option<LogPos>, waiting_to_push: Option<u64>) -> Result<()> {
        let waiting = waiting_to_push.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.0
            .prepare_cached(&format!(
                "UPDATE site_sync SET last_pull_at = {NOW}, pulled_seq = COALESCE(?2, pulled_seq), pulled_xid = COALESCE(?3, pulled_xid),
                   waiting_to_push = COALESCE(?4, waiting_to_push)
                 WHERE site_id = ?1"
            ))?
            .execute(params![site.as_str(), reached.map(|r| r.seq.0), reached.map(|r| r.xid), waiting])?;
        Ok(())
    }

    fn set_site_disabled(&mut self, site: &str, disabled: bool) -> Result<bool> {
        let sql = if disabled {
            format!("UPDATE site_sync SET disabled_at = COALESCE(disabled_at, {NOW}) WHERE site_id = ?1")
        } else {
            "UPDATE site_sync SET disabled_at = NULL WHERE site_id = ?1".to_owned()
        };
        Ok(self.0.execute(&sql, [site])? > 0)
    }

    fn forget_site(&mut self, site: &str) -> Result<bool> {
        self.0.execute("DELETE FROM outbox WHERE site_id = ?1", [site])?;
        Ok(self.0.execute("DELETE FROM site_sync WHERE site_id = ?1", [site])? > 0)
    }

    fn bind_machine(&mut self, site: &str, machine: &str) -> Result<Option<String>> {
        self.0
            .prepare_cached("UPDATE site_sync SET hardware_id = ?2 WHERE site_id = ?1 AND hardware_id IS NULL")?
            .execute(params![site, machine])?;
        Ok(self
            .0
            .prepare_cached("SELECT hardware_id FROM site_sync WHERE site_id = ?1")?
            .query_row([site], |r| r.get(0))
            .optional()?
            .flatten())
    }

    fn site_credentials(&mut self, site: &str) -> Result<Option<SiteCredentials>> {
        Ok(self
            .0
            .prepare_cached("SELECT password_hash, hardware_id, disabled_at FROM site_sync WHERE site_id = ?1")?
            .query_row([site], |r| {
                Ok(SiteCredentials { password_hash: r.get(0)?, machine: r.get(1)?, disabled_at: r.get(2)? })
            })
            .optional()?)
    }

    fn unbind_machine(&mut self, site: &str) -> Result<bool> {
        Ok(self.0.execute("UPDATE site_sync SET hardware_id = NULL WHERE site_id = ?1", [site])? > 0)
    }

    fn password_hash(&mut self, site: &str) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT password_hash FROM site_sync WHERE site_id = ?1")?
            .query_row([site], |r| r.get(0))
            .optional()?)
    }

    fn site_sync_rows(&mut self) -> Result<Vec<SiteSyncRow>> {
        let mut stmt = self.0.prepare(
            "SELECT s.site_id, s.acked_seq, s.last_push_at, s.last_pull_at,
                    COALESCE(julianday('now') - julianday(COALESCE(s.last_pull_at, s.last_push_at)), 0) > 30,
                    (SELECT count(*) FROM rejection r WHERE r.site_id = s.site_id),
                    s.disabled_at, s.pulled_seq, s.pulled_xid, s.waiting_to_push
             FROM site_sync s ORDER BY s.site_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SiteSyncRow {
                site: r.get(0)?,
                acked: Seq(r.get(1)?),
                last_push_at: r.get(2)?,
                last_pull_at: r.get(3)?,
                stale: r.get(4)?,
                rejections: r.get(5)?,
                disabled_at: r.get(6)?,
                pulled_to: r.get::<_, Option<i64>>(7)?.map(|seq| LogPos::new(0, Seq(seq))),
                waiting_to_push: r.get::<_, Option<i64>>(9)?.map(|n| u64::try_from(n).unwrap_or(0)),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn rejections(&mut self, limit: Option<usize>) -> Result<Vec<RejectionRecord>> {
        let sql = match limit {
            Some(n) => format!("SELECT {REJECTION_COLUMNS} FROM rejection ORDER BY id DESC LIMIT {n}"),
            None => format!("SELECT {REJECTION_COLUMNS} FROM rejection ORDER BY id"),
        };
        let mut stmt = self.0.prepare(&sql)?;
        let rows = stmt.query_map([], rejection_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn rejections_matching(
        &mut self,
        site: Option<&str>,
        table: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RejectionRecord>> {
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT {REJECTION_COLUMNS} FROM rejection WHERE (?1 IS NULL OR site_id = ?1) AND (?2 IS NULL OR tbl = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows =
            stmt.query_map(params![site, table, i64::try_from(limit).unwrap_or(i64::MAX)], rejection_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn open_rejections(&mut self, site: &str) -> Result<Vec<RejectionRecord>> {
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT {REJECTION_COLUMNS} FROM rejection WHERE site_id = ?1 AND resolved_at IS NULL ORDER BY id"
        ))?;
        let rows = stmt.query_map([site], rejection_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn resolve_rejections(&mut self, site: &str) -> Result<u64> {
        Ok(self.0.execute(
            &format!("UPDATE rejection SET resolved_at = {NOW} WHERE site_id = ?1 AND resolved_at IS NULL"),
            [site],
        )? as u64)
    }

    fn count_open_rejections(&mut self, site: &SiteId) -> Result<u64> {
        Ok(self
            .0
            .prepare_cached("SELECT count(*) FROM rejection WHERE site_id = ?1 AND resolved_at IS NULL")?
            .query_row([site.as_str()], |r| r.get(0))?)
    }

    fn count_rejections(&mut self) -> Result<u64> {
        Ok(self.0.query_row("SELECT count(*) FROM rejection", [], |r| r.get(0))?)
    }

    fn note_sync(&mut self, site: &SiteId, request: &SyncRequest) -> Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let values = params![
            site.as_str(),
            request.at,
            n(request.pushed),
            n(request.pulled),
            n(request.bytes_up),
            n(request.bytes_down),
            n(request.busy_ms)
        ];
        let joined = self
            .0
            .prepare_cached(&format!(
                "UPDATE sync_session SET ended_at = max(ended_at, ?2), requests = requests + 1, pushed = pushed + ?3,
                   pulled = pulled + ?4, bytes_up = bytes_up + ?5, bytes_down = bytes_down + ?6, busy_ms = busy_ms + ?7
                 WHERE id = (SELECT id FROM sync_session WHERE site_id = ?1 ORDER BY ended_at DESC, id DESC LIMIT 1)
                   AND ended_at >= ?2 - {SESSION_GAP_SECS}"
            ))?
            .execute(values)?;
        if joined == 0 {
            self.0
                .prepare_cached(
                    "INSERT INTO sync_session (site_id, started_at, ended_at, requests, pushed, pulled, bytes_up, bytes_down, busy_ms)
                     VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(values)?;
            self.0
                .prepare_cached("DELETE FROM sync_session WHERE site_id = ?1 AND ended_at < ?2")?
                .execute(params![site.as_str(), request.at - KEEP_SESSIONS_SECS])?;
        }
        Ok(())
    }

    fn sync_sessions(&mut self, site: &str, since: i64) -> Result<Vec<SyncSession>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT site_id, started_at, ended_at, requests, pushed, pulled, bytes_up, bytes_down, busy_ms
             FROM sync_session WHERE site_id = ?1 AND ended_at >= ?2 ORDER BY ended_at, id",
        )?;
        let rows = stmt.query_map(params![site, since], |r| {
            Ok(SyncSession {
                site: r.get(0)?,
                started_at: r.get(1)?,
                ended_at: r.get(2)?,
                requests: r.get(3)?,
                pushed: r.get(4)?,
                pulled: r.get(5)?,
                bytes_up: r.get(6)?,
                bytes_down: r.get(7)?,
                busy_ms: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn add_debt_sample(&mut self, sample: &DebtSample) -> Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.0
            .prepare_cached(
                "INSERT INTO debt_sample (site_id, at, owed, owed_bytes, log_seq) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (site_id, at) DO UPDATE SET owed = excluded.owed, owed_bytes = excluded.owed_bytes, log_seq = excluded.log_seq",
            )?
            .execute(params![sample.site, sample.at, n(sample.owed), n(sample.owed_bytes), sample.log_seq.0])?;
        self.0
            .prepare_cached("DELETE FROM debt_sample WHERE site_id = ?1 AND at < ?2")?
            .execute(params![sample.site, sample.at - KEEP_SAMPLES_SECS])?;
        Ok(())
    }

    fn debt_samples(&mut self, site: Option<&str>, since: i64) -> Result<Vec<DebtSample>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT site_id, at, owed, owed_bytes, log_seq FROM debt_sample
             WHERE (?1 IS NULL OR site_id = ?1) AND at >= ?2 ORDER BY at, site_id",
        )?;
        let rows = stmt.query_map(params![site, since], |r| {
            Ok(DebtSample {
                site: r.get(0)?,
                at: r.get(1)?,
                owed: r.get(2)?,
                owed_bytes: r.get(3)?,
                log_seq: Seq(r.get(4)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn logged_by(&mut self, seq: Seq) -> Result<Option<i64>> {
        Ok(self.0.query_row("SELECT min(at) FROM debt_sample WHERE log_seq >= ?1", [seq.0], |r| r.get(0))?)
    }

    // The reports: over the documents themselves (see `store::reports`); a field of the wrong
    // type counts as absent, as PostgreSQL's columns have it.

    fn stock_on_hand(&mut self, scope: &Scope) -> Result<Vec<StockRow>> {
        let mut stmt = self.0.prepare_cached(concat!(
            stock_lines!(),
            "SELECT s.store_id, json_extract(st.data, '$.name'), s.location, s.item, json_extract(it.data, '$.name'),
                    s.lines, s.units, s.value
             FROM (SELECT store_id, location, item, count(*) AS lines, total(packs * coalesce(pack_size, 1)) AS units,
                          total(packs * coalesce(cost, 0)) AS value
                   FROM line WHERE ?2 IS NULL OR item = ?2 GROUP BY store_id, item, location) s
             LEFT JOIN record st ON st.tbl = 'store' AND st.id = s.store_id
             LEFT JOIN record it ON it.tbl = 'item' AND it.id = s.item
             ORDER BY s.store_id, s.item, s.location NULLS LAST"
        ))?;
        let rows = stmt.query_map(params![store_list(scope), scope.item], |r| {
            Ok(StockRow {
                store: r.get(0)?,
                store_name: r.get(1)?,
                location: r.get(2)?,
                item: r.get(3)?,
                item_name: r.get(4)?,
                lines: r.get(5)?,
                units: r.get(6)?,
                value: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn stock_value(&mut self, scope: &Scope) -> Result<Vec<ValueRow>> {
        let mut stmt = self.0.prepare_cached(concat!(
            stock_lines!(),
            "SELECT s.store_id, json_extract(st.data, '$.name'), s.lines, s.units, s.value
             FROM (SELECT store_id, count(*) AS lines, total(packs * coalesce(pack_size, 1)) AS units,
                          total(packs * coalesce(cost, 0)) AS value
                   FROM line GROUP BY store_id) s
             LEFT JOIN record st ON st.tbl = 'store' AND st.id = s.store_id
             ORDER BY s.store_id"
        ))?;
        let rows = stmt.query_map(params![store_list(scope)], |r| {
            Ok(ValueRow {
                store: r.get(0)?,
                store_name: r.get(1)?,
                lines: r.get(2)?,
                units: r.get(3)?,
                value: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn monthly_usage(&mut self, scope: &Scope, item: &str) -> Result<Vec<UsageRow>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT u.store_id, json_extract(st.data, '$.name'), u.month, u.units
             FROM (SELECT l.store_id, coalesce(substr(json_extract(t.data, '$.finalised_date'), 1, 7), 'none') AS month,
                          total(CASE WHEN json_type(l.data, '$.number_of_packs') IN ('integer', 'real')
                                     THEN json_extract(l.data, '$.number_of_packs') END
                                * coalesce(CASE WHEN json_type(l.data, '$.pack_size') IN ('integer', 'real')
                                                THEN json_extract(l.data, '$.pack_size') END, 1)) AS units
                   FROM record l
                   JOIN record t ON t.tbl = 'transaction' AND t.id = l.parent_id
                   WHERE l.tbl = 'transaction_line' AND l.item_id = ?2 AND l.store_id IS NOT NULL
                     AND (?1 IS NULL OR l.store_id IN (SELECT value FROM json_each(?1)))
                     AND json_extract(t.data, '$.type') = 'customer_invoice' AND json_extract(t.data, '$.status') = 'finalised'
                   GROUP BY 1, 2) u
             LEFT JOIN record st ON st.tbl = 'store' AND st.id = u.store_id
             ORDER BY u.month, u.store_id",
        )?;
        let rows = stmt.query_map(params![store_list(scope), item], |r| {
            Ok(UsageRow { store: r.get(0)?, store_name: r.get(1)?, month: r.get(2)?, units: r.get(3)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn changes_after(&mut self, after: Seq, origin: &SiteId, limit: usize, max_bytes: usize) -> Result<Vec<Change>> {
        let mut stmt = self.0.prepare_cached(concat!(
            "SELECT ",
            change_columns!(),
            " FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
             WHERE l.seq > ?1 AND l.origin_site = ?2 ORDER BY l.seq"
        ))?;
        let rows = stmt.query_map(params![after.0, origin.as_str()], change_from_row)?;
        take_bounded(rows, limit, max_bytes)
    }

    fn count_changes_after(&mut self, after: Seq, origin: &SiteId) -> Result<u64> {
        Ok(self
            .0
            .prepare_cached("SELECT count(*) FROM change_log WHERE seq > ?1 AND origin_site = ?2")?
            .query_row(params![after.0, origin.as_str()], |r| r.get(0))?)
    }

    fn last_seq(&mut self) -> Result<Seq> {
        Ok(Seq(self.0.query_row("SELECT COALESCE(MAX(seq), 0) FROM change_log", [], |r| r.get(0))?))
    }

    fn snapshot_after(&mut self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Stored>> {
        let (tbl, id) = after.unwrap_or(("", ""));
        let mut stmt = self.0.prepare_cached(
            "SELECT tbl, id, store_id, other_store_id, name_id, data FROM record
             WHERE (tbl, id) > (?1, ?2) AND data IS NOT NULL ORDER BY tbl, id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![tbl, id, limit as i64], |r| {
            Ok(Stored { table: r.get(0)?, id: RecordId(r.get(1)?), keys: keys_from_row(r, 2)?, data: r.get(5)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn count_records_after(&mut self, after: Option<(&str, &str)>) -> Result<u64> {
        let (tbl, id) = after.unwrap_or(("", ""));
        Ok(self.0.query_row(
            // An estimate (tombstones count too) that reads the index only, not a record.
            "SELECT count(*) FROM record WHERE (tbl, id) > (?1, ?2)",
            params![tbl, id],
            |r| r.get(0),
        )?)
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
                let mut stmt = self.0.prepare_cached(concat!(
                    "SELECT ",
                    change_columns!(),
                    " FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                     WHERE l.bucket = ?1 AND l.seq > ?2 AND l.origin_site != ?3 ORDER BY l.seq LIMIT ?4"
                ))?;
                let rows =
                    stmt.query_map(params![bucket, after.seq.0, site.as_str(), limit as i64], change_from_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
            PullSource::Outbox => {
                let mut stmt = self.0.prepare_cached(concat!(
                    "SELECT ",
                    change_columns!(),
                    " FROM outbox o JOIN change_log l ON l.seq = o.seq
                     JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                     WHERE o.site_id = ?1 AND o.seq > ?2 ORDER BY o.seq LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![site.as_str(), after.seq.0, limit as i64], change_from_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        // One writer at a time: the sequence is the order changes became visible.
        Ok(rows
            .into_iter()
            .map(|(change, size)| {
                let pos = LogPos::new(0, change.seq);
                (change, pos, size)
            })
            .collect())
    }

    fn count_pull(&mut self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<u64> {
        Ok(match source {
            PullSource::Bucket(bucket) => self.0.query_row(
                "SELECT count(*) FROM change_log WHERE bucket = ?1 AND seq > ?2 AND origin_site != ?3",
                params![bucket, after.seq.0, site.as_str()],
                |r| r.get(0),
            )?,
            PullSource::Outbox => self.0.query_row(
                "SELECT count(*) FROM outbox o JOIN change_log l ON l.seq = o.seq WHERE o.site_id = ?1 AND o.seq > ?2",
                params![site.as_str(), after.seq.0],
                |r| r.get(0),
            )?,
        })
    }

    fn debt(&mut self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<Debt> {
        let row = |r: &rusqlite::Row<'_>| {
            Ok(Debt {
                changes: r.get(0)?,
                bytes: r.get::<_, Option<u64>>(1)?.unwrap_or(0),
                oldest: r.get::<_, Option<i64>>(2)?.map(Seq),
            })
        };
        Ok(match source {
            PullSource::Bucket(bucket) => self.0.query_row(
                "SELECT count(*), sum(length(r.data)), min(l.seq) FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                 WHERE l.bucket = ?1 AND l.seq > ?2 AND l.origin_site != ?3",
                params![bucket, after.seq.0, site.as_str()],
                row,
            )?,
            PullSource::Outbox => self.0.query_row(
                "SELECT count(*), sum(length(r.data)), min(l.seq) FROM outbox o JOIN change_log l ON l.seq = o.seq
                 JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id WHERE o.site_id = ?1 AND o.seq > ?2",
                params![site.as_str(), after.seq.0],
                row,
            )?,
        })
    }

    fn log_position(&mut self) -> Result<LogPos> {
        Ok(LogPos::new(0, self.last_seq()?))
    }

    fn record(&mut self, table: &str, id: &str) -> Result<Option<Option<String>>> {
        Ok(self
            .0
            .query_row("SELECT data FROM record WHERE tbl = ?1 AND id = ?2", params![table, id], |r| r.get(0))
            .optional()?)
    }

    fn dump(&mut self) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self.0.prepare("SELECT tbl, id, data FROM record WHERE data IS NOT NULL ORDER BY tbl, id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn counts_by_table(&mut self) -> Result<Vec<(String, u64)>> {
        let mut stmt =
            self.0.prepare("SELECT tbl, count(*) FROM record WHERE data IS NOT NULL GROUP BY tbl ORDER BY tbl")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn count_records(&mut self) -> Result<u64> {
        Ok(self.0.query_row("SELECT count(*) FROM record WHERE data IS NOT NULL", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("explain");
        // Both queries take two values; what they are does not change the plan.
        let rows = stmt.query_map(["a", "b"], |r| r.get::<_, String>(3)).expect("plan");
        rows.collect::<rusqlite::Result<Vec<_>>>().expect("plan").join("; ")
    }

    #[test]
    fn lookups_of_processors_use_the_indexed_columns() {
        let conn = Connection::open_in_memory().expect("open");
        migrations::run_sqlite(&conn).expect("migrate");
        let by_parent = plan(&conn, RECORDS_BY_PARENT);
        assert!(by_parent.contains("INDEX record_parent"), "{by_parent}");
        let serial = plan(&conn, MAX_SERIAL);
        assert!(serial.contains("INDEX transaction_serial") && !serial.contains("TEMP B-TREE"), "{serial}");
    }

    #[test]
    fn a_database_of_migration_7_gets_its_indexed_columns_from_the_documents() {
        let conn = Connection::open_in_memory().expect("open");
        for migration in &migrations::MIGRATIONS[..7] {
            conn.execute_batch(migration.sqlite).expect("an older schema");
            conn.pragma_update(None, "user_version", migration.version).expect("version");
        }
        let rows = [
            ("transaction_line", "l1", r#"{"transaction_id": "ci-1", "item_id": "item-1"}"#),
            ("requisition_line", "r1", r#"{"requisition_id": "rq-1"}"#),
            ("transaction", "ci-1", r#"{"type": "customer_invoice", "serial_number": 12}"#),
        ];
        for (table, id, data) in rows {
            conn.execute(
                "INSERT INTO record (tbl, id, store_id, data) VALUES (?1, ?2, 'store-a', ?3)",
                params![table, id, data],
            )
            .expect("insert");
        }
        migrations::run_sqlite(&conn).expect("migrate");
        let lines: Vec<String> = conn
            .prepare(RECORDS_BY_PARENT)
            .and_then(|mut stmt| stmt.query_map(["transaction_line", "ci-1"], |r| r.get(0))?.collect())
            .expect("by parent");
        assert_eq!(lines, ["l1"]);
        let item: Option<String> =
            conn.query_row("SELECT item_id FROM record WHERE id = 'l1'", [], |r| r.get(0)).expect("item");
        assert_eq!(item.as_deref(), Some("item-1"));
        let serial: f64 = conn.query_row(MAX_SERIAL, ["store-a", "customer_invoice"], |r| r.get(0)).expect("serial");
        assert_eq!(serial, 12.0);
    }

    #[test]
    fn statements_of_many_rows_come_in_few_sizes() {
        let sizes = |len| statement_sizes(len).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(12), [8, 4]);
        assert_eq!(sizes(70), [32, 32, 4, 2]);
        assert_eq!(sizes(31), [16, 8, 4, 2, 1]);
    }

    #[test]
    fn indexed_fields_are_read_for_the_tables_that_have_them_only() {
        let line = r#"{"transaction_id": "ci-1", "item_id": "item-1", "number_of_packs": 2}"#;
        let read = Indexed::read("transaction_line", Some(line));
        assert_eq!((read.parent.as_deref(), read.item.as_deref()), (Some("ci-1"), Some("item-1")));
        let invoice = r#"{"type": "customer_invoice", "serial_number": 7, "transaction_id": "x"}"#;
        let read = Indexed::read("transaction", Some(invoice));
        assert_eq!((read.kind.as_deref(), read.serial, read.parent), (Some("customer_invoice"), Some(7.0), None));
        let text_serial = Indexed::read("transaction", Some(r#"{"type": "customer_invoice", "serial_number": "7"}"#));
        assert_eq!(text_serial.serial, None, "a text serial is not a number");
        let number_parent = Indexed::read("requisition_line", Some(r#"{"requisition_id": 5}"#));
        assert_eq!(number_parent.parent, None, "only a text id names a parent");
        assert_eq!(Indexed::read("item", Some(line)).parent, None, "other tables keep nothing");
    }
}
