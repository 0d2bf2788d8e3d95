//! The seam between the storage API and the two databases.
//!
//! The API (`db.rs`, `queries.rs`, `sync_state.rs`) says *what* is done: the checks, the order of
//! steps, what a caller gets back. Each statement it needs is one method of [`Sql`], written once
//! for SQLite (`sqlite.rs`) and once for PostgreSQL (`pg.rs`). This module is the only
//! place that knows both exist: adding a query means one API function, one [`Sql`] method, and
//! one implementation per backend.

pub(crate) mod sqlite;

#[cfg(feature = "postgres")]
pub(crate) mod pg;

use crate::db::{Current, Put, Tx};
use crate::queries::{PullSource, Stored};
use crate::sync_state::{PushedBatch, RejectionRecord, SiteCredentials, SiteSyncRow};
use crate::{Result, StoreError};
use model::{Action, Change, LogPos, Network, RecordId, RecordKeys, Registry, Seq, SiteId};
use serde_json::value::RawValue;
use std::sync::Arc;

/// Every statement the storage API runs, on a connection or inside a transaction. Object safe:
/// the API holds a `&mut dyn Sql` and never learns which database answers.
pub(crate) trait Sql {
    // Records (in a transaction).

    /// A record as it stands, with its keys (`None` if it never existed). On PostgreSQL the row
    /// stays locked until the transaction ends, so a concurrent write of it waits.
    fn current(&mut self, table: &str, id: &str) -> Result<Option<(Current, RecordKeys)>>;
    fn stored_keys(&mut self, table: &str, id: &str) -> Result<Option<RecordKeys>>;
    /// Whether looking a batch's records up ahead ([`Sql::current_many`]) saves anything here.
    fn looks_up_ahead(&self) -> bool;
    /// Many records of one table at once, with their keys, locked as [`Sql::current`] locks one;
    /// `None` where one look-up per record costs nothing (SQLite, in process).
    fn current_many(&mut self, table: &str, ids: &[&str]) -> Result<Option<Vec<(String, Current, RecordKeys)>>>;
    /// Inserts a record [`Sql::current_many`] found absent, with its log entry when logged.
    /// PostgreSQL holds it back and sends it with the others (see `pg.rs`, `Pending`).
    fn insert_absent(&mut self, put: &Put<'_>) -> Result<Seq>;
    /// Inserts a record that does not exist yet and, when logged, its change-log entry; `None`
    /// (nothing written) when it exists.
    fn insert_new(&mut self, put: &Put<'_>) -> Result<Option<Seq>>;
    /// [`Sql::insert_new`] for many unlogged records, in order: for each, whether the record now
    /// holds the document as given (`false`: it existed, and is to be written over). SQLite
    /// writes many to a statement (a statement's own cost is paid per row otherwise).
    fn insert_new_unlogged(&mut self, puts: &[Put<'_>]) -> Result<Vec<bool>> {
        puts.iter().map(|put| Ok(self.insert_new(put)?.is_some())).collect()
    }
    /// [`Sql::insert_new`] for many logged records, in order: each one's log position, or `None`
    /// (nothing written for it) when it exists. SQLite writes many to a statement.
    fn insert_new_logged(&mut self, puts: &[Put<'_>]) -> Result<Vec<Option<Seq>>> {
        puts.iter().map(|put| self.insert_new(put)).collect()
    }
    /// Writes a record over its current state, with a new log entry that supersedes `old_seq`
    /// when the change is logged. Returns the new entry's position, if any.
    fn write_record(&mut self, put: &Put<'_>, old_seq: Option<Seq>) -> Result<Option<Seq>>;
    fn set_bucket(&mut self, seq: Seq, bucket: &str) -> Result<()>;
    /// Logs, as `origin`'s changes, every record of `table` in `store` that was never logged
    /// (held on the site while its store did not include them in sync); how many.
    fn log_unlogged(&mut self, table: &str, store: &str, origin: &SiteId) -> Result<u64>;
    fn add_outbox(&mut self, site: &SiteId, seq: Seq) -> Result<()>;
    fn add_outbox_all(&mut self, entries: &[(&SiteId, Seq)]) -> Result<()> {
        entries.iter().try_for_each(|(site, seq)| self.add_outbox(site, *seq))
    }
    /// The positions of the log entries in a shared bucket, in order.
    fn seqs_in_bucket(&mut self, bucket: &str) -> Result<Vec<Seq>>;
    /// Notes that `table`/`id` was merged into `into`.
    fn add_merged(&mut self, table: &str, id: &str, into: &str) -> Result<()>;
    /// The live records (of `table`, or of every table) whose document contains `text` (table,
    /// id, document): candidates the caller checks field by field. A scan: for merges and
    /// processors, not for every write.
    fn records_containing(&mut self, table: Option<&str>, text: &str) -> Result<Vec<(String, RecordId, String)>>;
    /// The live records whose document's field is `value`, for the lookup
    /// `model::transfer::INDEXED_FIELDS[lookup]` (which has an index): id and document, by id.
    fn records_by(&mut self, lookup: usize, value: &str) -> Result<Vec<(RecordId, String)>>;
    /// The highest numeric `serial_number` of the live transactions of `store` whose `type` is
    /// `kind` (an index: migration 4).
    fn max_serial(&mut self, store: &str, kind: &str) -> Result<Option<i64>>;
    /// The logged, live records whose routing column (`store_id` or `name_id`, from
    /// [`crate::RoutedBy::column`]) holds `value`: table, id, keys, position.
    fn logged_records(&mut self, column: &'static str, value: &str)
        -> Result<Vec<(String, RecordId, RecordKeys, Seq)>>;
    /// Moves log entries to new positions at the end of the log, in the order given, each with
    /// the routing it had (bucket, outbox rows), so that a site whose cursor is past an old
    /// position can be sent it; the new positions (an old one that is not in the log stays).
    /// The outbox and the records are each updated in one pass for the whole set: neither has
    /// an index on the position, and one pass per entry made a backfill quadratic.
    fn relog_all(&mut self, olds: &[Seq]) -> Result<Vec<Seq>>;
    /// Moves every log entry after `pushed` up by `shift`, in order; how many moved.
    fn shift_log_after(&mut self, pushed: Seq, shift: i64) -> Result<u64>;
    fn state(&mut self, key: &str) -> Result<Option<String>>;
    fn set_state(&mut self, key: &str, value: &str) -> Result<()>;

    // Sync bookkeeping.

    fn keep_rejection(&mut self, rejection: &RejectionRecord) -> Result<()>;
    fn rejections_between(&mut self, from: &str, first: Seq, last: Seq) -> Result<Vec<RejectionRecord>>;
    /// The last change of `site` applied or rejected; on PostgreSQL the site's row stays locked.
    fn acked(&mut self, site: &SiteId) -> Result<Seq>;
    /// [`Sql::acked`] read as it stands, locking nothing (a pull, a status).
    fn acked_now(&mut self, site: &SiteId) -> Result<Seq>;
    fn record_push(&mut self, site: &SiteId, batch: &PushedBatch) -> Result<()>;
    fn last_push(&mut self, site: &SiteId) -> Result<Option<PushedBatch>>;
    fn set_password_hash(&mut self, site: &str, hash: &str, create: bool) -> Result<bool>;
    fn start_log_after(&mut self, seq: Seq) -> Result<()>;
    fn mark_pulled(&mut self, site: &SiteId, reached: Option<LogPos>, waiting_to_push: Option<u64>) -> Result<()>;
    fn set_site_disabled(&mut self, site: &str, disabled: bool) -> Result<bool>;
    fn forget_site(&mut self, site: &str) -> Result<bool>;
    fn bind_machine(&mut self, site: &str, machine: &str) -> Result<Option<String>>;
    fn site_credentials(&mut self, site: &str) -> Result<Option<SiteCredentials>>;
    fn unbind_machine(&mut self, site: &str) -> Result<bool>;
    fn password_hash(&mut self, site: &str) -> Result<Option<String>>;
    fn site_sync_rows(&mut self) -> Result<Vec<SiteSyncRow>>;
    fn rejections(&mut self, limit: Option<usize>) -> Result<Vec<RejectionRecord>>;
    fn rejections_matching(
        &mut self,
        site: Option<&str>,
        table: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RejectionRecord>>;
    fn open_rejections(&mut self, site: &str) -> Result<Vec<RejectionRecord>>;
    fn resolve_rejections(&mut self, site: &str) -> Result<u64>;
    fn count_open_rejections(&mut self, site: &SiteId) -> Result<u64>;
    fn count_rejections(&mut self) -> Result<u64>;
    fn note_sync(&mut self, site: &SiteId, request: &crate::history::SyncRequest) -> Result<()>;
    fn sync_sessions(&mut self, site: &str, since: i64) -> Result<Vec<crate::history::SyncSession>>;
    fn add_debt_sample(&mut self, sample: &crate::history::DebtSample) -> Result<()>;
    fn debt_samples(&mut self, site: Option<&str>, since: i64) -> Result<Vec<crate::history::DebtSample>>;
    fn logged_by(&mut self, seq: Seq) -> Result<Option<i64>>;
    fn stock_on_hand(&mut self, scope: &crate::reports::Scope) -> Result<Vec<crate::reports::StockRow>>;
    fn stock_value(&mut self, scope: &crate::reports::Scope) -> Result<Vec<crate::reports::ValueRow>>;
    fn monthly_usage(&mut self, scope: &crate::reports::Scope, item: &str) -> Result<Vec<crate::reports::UsageRow>>;

    // Reads for the sync engine and status pages.

    fn changes_after(&mut self, after: Seq, origin: &SiteId, limit: usize, max_bytes: usize) -> Result<Vec<Change>>;
    fn count_changes_after(&mut self, after: Seq, origin: &SiteId) -> Result<u64>;
    fn last_seq(&mut self) -> Result<Seq>;
    fn snapshot_after(&mut self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Stored>>;
    fn count_records_after(&mut self, after: Option<(&str, &str)>) -> Result<u64>;
    fn pull_from(
        &mut self,
        source: &PullSource,
        site: &SiteId,
        after: LogPos,
        limit: usize,
    ) -> Result<Vec<(Change, LogPos, usize)>>;
    fn count_pull(&mut self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<u64>;
    fn debt(&mut self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<crate::history::Debt>;
    fn log_position(&mut self) -> Result<LogPos>;
    /// A record's stored document: `Some(None)` for a tombstone.
    fn record(&mut self, table: &str, id: &str) -> Result<Option<Option<String>>>;
    fn dump(&mut self) -> Result<Vec<(String, String, String)>>;
    fn counts_by_table(&mut self) -> Result<Vec<(String, u64)>>;
    fn count_records(&mut self) -> Result<u64>;
}

/// A database as one [`Db`](crate::Db) handle holds it (one per process or so: the size of the
/// variants does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    Sqlite(sqlite::SqliteDb),
    #[cfg(feature = "postgres")]
    Postgres(pg::PgDb),
}

impl Backend {
    #[cfg(feature = "failpoints")]
    pub(crate) fn limit_disk(&self, spare_pages: Option<u64>) -> Result<()> {
        match self {
            Backend::Sqlite(db) => db.limit_disk(spare_pages),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Ok(()),
        }
    }

    pub(crate) fn bulk_load(&self, on: bool) -> Result<()> {
        match self {
            Backend::Sqlite(db) => db.bulk_load(on),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Runs `f` in one transaction: all of it is committed, or none of it.
    pub(crate) fn transaction<T>(
        &self,
        registry: &'static Registry,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        match self {
            Backend::Sqlite(db) => db.transaction(registry, f),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.transaction(registry, f),
        }
    }

    /// Runs read-only statements on a connection, outside any transaction. On SQLite a read
    /// connection: it does not wait for a writer's transaction.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match self {
            Backend::Sqlite(db) => db.read(f),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.read(f),
        }
    }

    /// Runs a statement that records what happened (a site pulled) without making the caller
    /// wait for a writer: on SQLite, if a transaction holds the writer, it runs as soon as that
    /// transaction ends.
    pub(crate) fn write_soon(&self, f: Deferred) -> Result<()> {
        match self {
            Backend::Sqlite(db) => db.write_soon(f),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.read(f),
        }
    }

    pub(crate) fn network(&self) -> Arc<Network> {
        match self {
            Backend::Sqlite(db) => db.network(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.network().unwrap_or_else(|e| {
                // The last network read stands in until the database answers again.
                tracing::warn!(error = %e, "could not check the network for changes; using the last one read");
                db.cached_network()
            }),
        }
    }
}

/// A statement left for the writer to run when it is free.
pub(crate) type Deferred = Box<dyn FnOnce(&mut dyn Sql) -> Result<()> + Send>;

/// The database transaction under a [`Tx`].
pub(crate) enum TxSql<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    /// In a `RefCell` because the postgres client needs `&mut` even to read, and `Tx`'s reads
    /// take `&self`.
    #[cfg(feature = "postgres")]
    Postgres(Box<std::cell::RefCell<pg::PgTx<'a>>>),
}

impl TxSql<'_> {
    /// Runs statements of this transaction.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut dyn Sql) -> T) -> T {
        match self {
            TxSql::Sqlite(tx) => f(&mut sqlite::Lite(tx)),
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => f(&mut pg.borrow_mut().session()),
        }
    }

    /// Commits; a transaction that changed the network says so to other processes (PostgreSQL;
    /// SQLite's other processes see `data_version` move).
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub(crate) fn commit(self, topology_changed: bool) -> Result<()> {
        match self {
            TxSql::Sqlite(tx) => Ok(tx.commit()?),
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.into_inner().commit(topology_changed),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            TxSql::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            TxSql::Postgres(_) => "postgres",
        }
    }
}

/// An error from the database itself, as its driver reports it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL error: {}", pg::message(.0))]
    Postgres(#[from] ::postgres::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy(format!("another process is writing to the database ({e})"))
            }
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull(e.to_string()),
            _ => StoreError::Database(DbError::Sqlite(e)),
        }
    }
}

// Rows into values, the same on both backends.

fn action_of(code: &str, merge_into: Option<String>) -> Action {
    match (code, merge_into) {
        ("delete", _) => Action::Delete,
        ("merge", Some(into)) => Action::MergeInto(RecordId(into)),
        _ => Action::Upsert,
    }
}

/// The columns a change is read from, in [`change_from_parts`]'s order (`l`: the change log,
/// `r`: the record).
macro_rules! change_columns {
    () => {
        "l.seq, l.tbl, l.record_id, l.action, l.merge_into, l.origin_site, r.data"
    };
}
pub(crate) use change_columns;

/// A change from the columns of [`change_columns`], with its size for batching.
pub(crate) fn change_from_parts(
    seq: i64,
    table: String,
    id: String,
    action: &str,
    merge_into: Option<String>,
    origin: String,
    data: Option<String>,
) -> (Change, usize) {
    let size = data.as_ref().map_or(0, String::len) + 64;
    let change = Change {
        seq: Seq(seq),
        table,
        id: RecordId(id),
        action: action_of(action, merge_into),
        data: data.and_then(|text| RawValue::from_string(text).ok()),
        origin: SiteId(origin),
    };
    (change, size)
}

/// Takes changes from an ordered iterator until `limit` changes or `max_bytes` are reached
/// (always at least one, so that one oversized record cannot stall a queue).
pub(crate) fn take_bounded<E>(
    rows: impl Iterator<Item = std::result::Result<(Change, usize), E>>,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<Change>>
where
    StoreError: From<E>,
{
    let mut out = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let (change, size) = row?;
        if !out.is_empty() && (out.len() >= limit || bytes + size > max_bytes) {
            break;
        }
        bytes += size;
        out.push(change);
    }
    Ok(out)
}

/// The columns a kept refusal is read from.
pub(crate) const REJECTION_COLUMNS: &str = "site_id, origin_seq, tbl, record_id, action, data, reason, at";
