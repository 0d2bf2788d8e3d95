//! # outpost-store
//!
//! Where a node keeps its synced records, its change log, and its sync state.
//!
//! Records of every synced table live in one `record` table as JSON documents, with the keys
//! that route them (store, other store, name) as indexed columns. Every write goes through
//! `Tx::put`, which writes the record and its change-log entry in the same database
//! transaction, and keeps the node's picture of the [`Network`] up to date when the record
//! shapes it.
//!
//! Two backends sit behind the one API of [`Db`] and [`Tx`]: SQLite, every node's embedded
//! default ([`Db::open`]), and PostgreSQL for central servers whose processes share one
//! database (`Db::open_postgres`, feature `postgres`; see `src/backend/pg.rs` for how positions,
//! concurrent writers and network changes work there).
//!
//! **Architecture invariant:** nothing writes the `record` table except `Tx::put` (private to
//! this crate; callers write through [`Tx::write_as`], checked, or [`Tx::apply_received`]), and `put`
//! always appends to the change log in the same transaction (or, for a change pulled from the
//! central server, records it came from elsewhere). A crash can leave neither without the other.
//!
//! **Architecture invariant:** [`Db::write`], the one entry point for a node's own edits, refuses
//! a write this node has no authority for (see `model::check_write`).

mod backend;
mod db;
pub mod failpoint;
pub mod history;
mod migrations;
mod queries;
pub mod reports;
mod state_key;
mod sync_state;
pub mod transfers;

pub use backend::DbError;
pub use db::{Current, Db, Incoming, Tx, Written, PREFETCH_FROM};
pub use migrations::SCHEMA_VERSION;
pub use queries::{PullSource, Stored};
pub use state_key::StateKey;
pub use sync_state::{PushedBatch, RejectedFrom, RejectionRecord, SiteCredentials, SiteSyncRow};

use model::limits::shown;
use model::{Action, RecordId, Refusal};

/// What routes a set of records: their store or their name (customer, patient, …).
#[derive(Debug, Clone, Copy)]
pub enum RoutedBy<'a> {
    Store(&'a model::StoreId),
    Name(&'a model::RecordId),
}

impl RoutedBy<'_> {
    /// The record table's column that holds the key.
    pub(crate) fn column(&self) -> &'static str {
        match self {
            RoutedBy::Store(_) => "store_id",
            RoutedBy::Name(_) => "name_id",
        }
    }
    pub(crate) fn value(&self) -> &str {
        match self {
            RoutedBy::Store(store) => store.as_str(),
            RoutedBy::Name(name) => name.as_str(),
        }
    }
}

/// A write a person (or a program on their behalf) makes on this node.
#[derive(Clone, Debug)]
pub struct Write {
    pub table: String,
    pub id: RecordId,
    pub action: Action,
    /// The whole record as JSON text (an object); required for an upsert.
    pub data: Option<String>,
}

impl Write {
    pub fn upsert(table: &str, id: impl Into<RecordId>, data: &serde_json::Value) -> Write {
        Write::upsert_text(table, id, data.to_string())
    }
    pub fn upsert_text(table: &str, id: impl Into<RecordId>, data: String) -> Write {
        Write { table: table.to_owned(), id: id.into(), action: Action::Upsert, data: Some(data) }
    }
    pub fn delete(table: &str, id: impl Into<RecordId>) -> Write {
        Write { table: table.to_owned(), id: id.into(), action: Action::Delete, data: None }
    }
    /// Merges `table`/`id` into `into`: the record goes, and whatever named it names `into`.
    pub fn merge(table: &str, id: impl Into<RecordId>, into: impl Into<RecordId>) -> Write {
        Write { table: table.to_owned(), id: id.into(), action: Action::MergeInto(into.into()), data: None }
    }

    /// The write as the one checked write takes it.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { table: &self.table, id: &self.id, action: &self.action, data: self.data.as_deref() }
    }
}

/// What can go wrong in storage. Each variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] DbError),
    /// The database did not let this request in within its wait (every PostgreSQL connection
    /// in use; another process holding SQLite's write lock). Worth trying again shortly.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// The disk holding the database is full (or the database reached the size it may have):
    /// the transaction rolled back whole, and trying again once there is room loses nothing.
    #[error(
        "the disk holding the database is full, so nothing of this write was kept ({0}); free some space and try again"
    )]
    DiskFull(String),
    #[error("writing `{}` record `{}` was refused: {refusal}", shown(table), shown(id.as_str()))]
    Refused { table: String, id: RecordId, refusal: Box<Refusal> },
    #[error("`{}` record `{}` is not valid: {reason}", shown(table), shown(id.as_str()))]
    Invalid { table: String, id: RecordId, reason: String },
    #[error("this database has not been initialised as a node (no local site id); run `init` first")]
    NotInitialised,
    #[error(
        "this database's schema is version {found}, newer than this outpost understands (version {known}): \
         it was written by a newer release; run that release, or a newer one"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error("the stored record `{table}`/`{id}` is not valid JSON: {source}")]
    CorruptRecord { table: String, id: String, source: serde_json::Error },
    #[error("flushing {} to the disk: {source}", path.display())]
    Flush { path: std::path::PathBuf, source: std::io::Error },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
