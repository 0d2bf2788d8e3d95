//! Reads the sync engine needs: what a site still has to push, what the central server has for
//! a site, a snapshot of current state for initialisation, and counts for status pages.

use crate::{Db, Result, StoreError};
use model::{Action, Change, RecordId, RecordKeys, Seq, SiteId};
use rusqlite::{params, Connection, Row};
use serde_json::value::RawValue;

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

fn action_of(code: &str, merge_into: Option<String>) -> Action {
    match (code, merge_into) {
        ("delete", _) => Action::Delete,
        ("merge", Some(into)) => Action::MergeInto(RecordId(into)),
        _ => Action::Upsert,
    }
}

fn raw(data: Option<String>) -> Option<Box<RawValue>> {
    data.and_then(|text| RawValue::from_string(text).ok())
}

const CHANGE_COLUMNS: &str = "l.seq, l.tbl, l.record_id, l.action, l.merge_into, l.origin_site, r.data";

fn change_from_row(row: &Row<'_>) -> rusqlite::Result<(Change, usize)> {
    let data: Option<String> = row.get(6)?;
    let size = data.as_ref().map_or(0, String::len) + 64;
    let change = Change {
        seq: Seq(row.get(0)?),
        table: row.get(1)?,
        id: RecordId(row.get(2)?),
        action: action_of(&row.get::<_, String>(3)?, row.get(4)?),
        data: raw(data),
        origin: SiteId(row.get(5)?),
    };
    Ok((change, size))
}

/// Takes changes from an ordered iterator until `limit` changes or `max_bytes` are reached
/// (always at least one, so that one oversized record cannot stall a queue).
fn take_bounded(
    rows: impl Iterator<Item = rusqlite::Result<(Change, usize)>>,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<Change>> {
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

impl Db {
    /// The changes this node made after `after`, oldest first: what a site still has to push.
    pub fn changes_after(&self, after: Seq, origin: &SiteId, limit: usize, max_bytes: usize) -> Result<Vec<Change>> {
        self.read(|conn, _| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CHANGE_COLUMNS} FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                 WHERE l.seq > ?1 AND l.origin_site = ?2 ORDER BY l.seq"
            ))?;
            let rows = stmt.query_map(params![after.0, origin.as_str()], change_from_row)?;
            take_bounded(rows, limit, max_bytes)
        })
    }

    /// How many of this node's own changes come after `after`.
    pub fn count_changes_after(&self, after: Seq, origin: &SiteId) -> Result<u64> {
        self.read(|conn, _| {
            Ok(conn.query_row(
                "SELECT count(*) FROM change_log WHERE seq > ?1 AND origin_site = ?2",
                params![after.0, origin.as_str()],
                |r| r.get(0),
            )?)
        })
    }

    /// The highest position in this node's change log.
    pub fn last_seq(&self) -> Result<Seq> {
        self.read(|conn, _| last_seq(conn))
    }

    /// Records in (table, id) order after `after`, for an initialisation snapshot.
    pub fn snapshot_after(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Stored>> {
        self.read(|conn, _| {
            let (tbl, id) = after.unwrap_or(("", ""));
            let mut stmt = conn.prepare_cached(
                "SELECT tbl, id, store_id, other_store_id, name_id, data FROM record
                 WHERE (tbl, id) > (?1, ?2) AND data IS NOT NULL ORDER BY tbl, id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![tbl, id, limit as i64], |r| {
                Ok(Stored {
                    table: r.get(0)?,
                    id: RecordId(r.get(1)?),
                    keys: RecordKeys {
                        store: r.get::<_, Option<String>>(2)?.map(Into::into),
                        other_store: r.get::<_, Option<String>>(3)?.map(Into::into),
                        name: r.get::<_, Option<String>>(4)?.map(Into::into),
                        home_store: None,
                    },
                    data: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// How many live records come after a key (an initialisation's estimate of what remains).
    pub fn count_records_after(&self, after: Option<(&str, &str)>) -> Result<u64> {
        self.read(|conn, _| {
            let (tbl, id) = after.unwrap_or(("", ""));
            Ok(conn.query_row(
                "SELECT count(*) FROM record WHERE (tbl, id) > (?1, ?2) AND data IS NOT NULL",
                params![tbl, id],
                |r| r.get(0),
            )?)
        })
    }

    /// Up to `limit` changes for `site` from one pull source after `after`, oldest first.
    pub fn pull_from(
        &self,
        source: &PullSource,
        site: &SiteId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Change, usize)>> {
        self.read(|conn, _| {
            let rows = match source {
                PullSource::Bucket(bucket) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {CHANGE_COLUMNS} FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                         WHERE l.bucket = ?1 AND l.seq > ?2 AND l.origin_site != ?3 ORDER BY l.seq LIMIT ?4"
                    ))?;
                    let rows =
                        stmt.query_map(params![bucket, after.0, site.as_str(), limit as i64], change_from_row)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                }
                PullSource::Outbox => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {CHANGE_COLUMNS} FROM outbox o JOIN change_log l ON l.seq = o.seq
                         JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                         WHERE o.site_id = ?1 AND o.seq > ?2 ORDER BY o.seq LIMIT ?3"
                    ))?;
                    let rows = stmt.query_map(params![site.as_str(), after.0, limit as i64], change_from_row)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            Ok(rows)
        })
    }

    /// How many changes wait for `site` in one pull source after `after`.
    pub fn count_pull(&self, source: &PullSource, site: &SiteId, after: Seq) -> Result<u64> {
        self.read(|conn, _| {
            Ok(match source {
                PullSource::Bucket(bucket) => conn.query_row(
                    "SELECT count(*) FROM change_log WHERE bucket = ?1 AND seq > ?2 AND origin_site != ?3",
                    params![bucket, after.0, site.as_str()],
                    |r| r.get(0),
                )?,
                PullSource::Outbox => conn.query_row(
                    "SELECT count(*) FROM outbox o JOIN change_log l ON l.seq = o.seq WHERE o.site_id = ?1 AND o.seq > ?2",
                    params![site.as_str(), after.0],
                    |r| r.get(0),
                )?,
            })
        })
    }

    /// One record's document, if it exists and is not deleted.
    pub fn record(&self, table: &str, id: &str) -> Result<Option<serde_json::Value>> {
        self.read(|conn, _| {
            let text: Option<Option<String>> = rusqlite::OptionalExtension::optional(conn.query_row(
                "SELECT data FROM record WHERE tbl = ?1 AND id = ?2",
                params![table, id],
                |r| r.get(0),
            ))?;
            text.flatten()
                .map(|t| {
                    serde_json::from_str(&t).map_err(|source| StoreError::CorruptRecord {
                        table: table.into(),
                        id: id.into(),
                        source,
                    })
                })
                .transpose()
        })
    }

    /// Every live record as (table, id, document text), in order: for comparing two databases.
    pub fn dump(&self) -> Result<Vec<(String, String, String)>> {
        self.read(|conn, _| {
            let mut stmt = conn.prepare("SELECT tbl, id, data FROM record WHERE data IS NOT NULL ORDER BY tbl, id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Live records per table.
    pub fn counts_by_table(&self) -> Result<Vec<(String, u64)>> {
        self.read(|conn, _| {
            let mut stmt =
                conn.prepare("SELECT tbl, count(*) FROM record WHERE data IS NOT NULL GROUP BY tbl ORDER BY tbl")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

pub(crate) fn last_seq(conn: &Connection) -> Result<Seq> {
    Ok(Seq(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM change_log", [], |r| r.get(0))?))
}
