//! Reads the sync engine needs: what a site still has to push, what the central server has for
//! a site, a snapshot of current state for initialisation, and counts for status pages.

use crate::{Db, Result, StoreError};
use model::{Change, LogPos, RecordId, RecordKeys, Seq, SiteId};

/// Where a pull reads from, on the central server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullSource {
    /// A shared bucket of wide changes ('all', 'dispensary', 'remote'); changes the site
    /// itself sent are skipped.
    Bucket(&'static str),
    /// The site's own outbox of narrow changes.
    Outbox,
}

/// A stored record with its routing keys (for initialisation snapshots).
#[derive(Debug, Clone)]
pub struct Stored {
    pub table: String,
    pub id: RecordId,
    pub keys: RecordKeys,
    pub data: String,
}

impl Db {
    /// The changes this node made after `after`, oldest first: what a site still has to push.
    pub fn changes_after(&self, after: Seq, origin: &SiteId, limit: usize, max_bytes: usize) -> Result<Vec<Change>> {
        self.read(|sql| sql.changes_after(after, origin, limit, max_bytes))
    }

    /// How many of this node's own changes come after `after`.
    pub fn count_changes_after(&self, after: Seq, origin: &SiteId) -> Result<u64> {
        self.read(|sql| sql.count_changes_after(after, origin))
    }

    /// The highest position in this node's change log.
    pub fn last_seq(&self) -> Result<Seq> {
        self.read(|sql| sql.last_seq())
    }

    /// Records in (table, id) order after `after`, for an initialisation snapshot.
    pub fn snapshot_after(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Stored>> {
        self.read(|sql| sql.snapshot_after(after, limit))
    }

    /// How many records come after a key, deleted ones included: an initialisation's estimate of
    /// what remains, read from the (table, id) index alone on both backends.
    pub fn count_records_after(&self, after: Option<(&str, &str)>) -> Result<u64> {
        self.read(|sql| sql.count_records_after(after))
    }

    /// Live records (deleted ones are not counted).
    pub fn count_records(&self) -> Result<u64> {
        self.read(|sql| sql.count_records())
    }

    /// Up to `limit` changes for `site` from one pull source after `after`, in log order.
    pub fn pull_from(
        &self,
        source: &PullSource,
        site: &SiteId,
        after: LogPos,
        limit: usize,
    ) -> Result<Vec<(Change, LogPos, usize)>> {
        self.read(|sql| sql.pull_from(source, site, after, limit))
    }

    /// How many changes wait for `site` in one pull source after `after`.
    pub fn count_pull(&self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<u64> {
        self.read(|sql| sql.count_pull(source, site, after))
    }

    /// Where the log stands for a pull starting now (an initialisation continues from here
    /// once its snapshot is done).
    pub fn log_position(&self) -> Result<LogPos> {
        self.read(|sql| sql.log_position())
    }

    /// One record's document, if it exists and is not deleted.
    pub fn record(&self, table: &str, id: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<Option<String>> = self.read(|sql| sql.record(table, id))?;
        text.flatten()
            .map(|t| {
                serde_json::from_str(&t).map_err(|source| StoreError::CorruptRecord {
                    table: table.into(),
                    id: id.into(),
                    source,
                })
            })
            .transpose()
    }

    /// Every live record as (table, id, document text), in order: for comparing two databases.
    pub fn dump(&self) -> Result<Vec<(String, String, String)>> {
        self.read(|sql| sql.dump())
    }

    /// Live records per table.
    pub fn counts_by_table(&self) -> Result<Vec<(String, u64)>> {
        self.read(|sql| sql.counts_by_table())
    }
}
