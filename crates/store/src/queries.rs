//! Reads the sync engine needs: what a site still has to push, what the central server has for
//! a site, a snapshot of current state for initialisation, and counts for status pages.

use crate::db::Conn;
use crate::{Db, Result, StoreError};
use model::{Action, Change, LogPos, RecordId, RecordKeys, Seq, SiteId};
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

/// A change from the columns of [`CHANGE_COLUMNS`], with its size for batching.
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
        data: raw(data),
        origin: SiteId(origin),
    };
    (change, size)
}

/// Takes changes from an ordered iterator until `limit` changes or `max_bytes` are reached
/// (always at least one, so that one oversized record cannot stall a queue).
fn take_bounded<E>(
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

impl Db {
    /// The changes this node made after `after`, oldest first: what a site still has to push.
    pub fn changes_after(&self, after: Seq, origin: &SiteId, limit: usize, max_bytes: usize) -> Result<Vec<Change>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {CHANGE_COLUMNS} FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                     WHERE l.seq > ?1 AND l.origin_site = ?2 ORDER BY l.seq"
                ))?;
                let rows = stmt.query_map(params![after.0, origin.as_str()], change_from_row)?;
                take_bounded(rows, limit, max_bytes)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => {
                let rows = conn.session().changes_after(after, origin, limit)?;
                take_bounded(rows.into_iter().map(Ok::<_, StoreError>), limit, max_bytes)
            }
        })
    }

    /// How many of this node's own changes come after `after`.
    pub fn count_changes_after(&self, after: Seq, origin: &SiteId) -> Result<u64> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => Ok(conn.query_row(
                "SELECT count(*) FROM change_log WHERE seq > ?1 AND origin_site = ?2",
                params![after.0, origin.as_str()],
                |r| r.get(0),
            )?),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().count_changes_after(after, origin),
        })
    }

    /// The highest position in this node's change log.
    pub fn last_seq(&self) -> Result<Seq> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => last_seq(conn),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().last_seq(),
        })
    }

    /// Records in (table, id) order after `after`, for an initialisation snapshot.
    pub fn snapshot_after(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Stored>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
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
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().snapshot_after(after, limit),
        })
    }

    /// How many records come after a key, deleted ones included: an initialisation's estimate of
    /// what remains, read from the (table, id) index alone on both backends.
    pub fn count_records_after(&self, after: Option<(&str, &str)>) -> Result<u64> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                let (tbl, id) = after.unwrap_or(("", ""));
                Ok(conn.query_row(
                    // An estimate (tombstones count too) that reads the index only, not a record.
                    "SELECT count(*) FROM record WHERE (tbl, id) > (?1, ?2)",
                    params![tbl, id],
                    |r| r.get(0),
                )?)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().count_records_after(after),
        })
    }

    /// Live records (deleted ones are not counted).
    pub fn count_records(&self) -> Result<u64> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                Ok(conn.query_row("SELECT count(*) FROM record WHERE data IS NOT NULL", [], |r| r.get(0))?)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().count_records(),
        })
    }

    /// Up to `limit` changes for `site` from one pull source after `after`, in log order.
    pub fn pull_from(
        &self,
        source: &PullSource,
        site: &SiteId,
        after: LogPos,
        limit: usize,
    ) -> Result<Vec<(Change, LogPos, usize)>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                let rows = match source {
                    PullSource::Bucket(bucket) => {
                        let mut stmt = conn.prepare_cached(&format!(
                            "SELECT {CHANGE_COLUMNS} FROM change_log l JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                             WHERE l.bucket = ?1 AND l.seq > ?2 AND l.origin_site != ?3 ORDER BY l.seq LIMIT ?4"
                        ))?;
                        let rows = stmt
                            .query_map(params![bucket, after.seq.0, site.as_str(), limit as i64], change_from_row)?;
                        rows.collect::<rusqlite::Result<Vec<_>>>()?
                    }
                    PullSource::Outbox => {
                        let mut stmt = conn.prepare_cached(&format!(
                            "SELECT {CHANGE_COLUMNS} FROM outbox o JOIN change_log l ON l.seq = o.seq
                             JOIN record r ON r.tbl = l.tbl AND r.id = l.record_id
                             WHERE o.site_id = ?1 AND o.seq > ?2 ORDER BY o.seq LIMIT ?3"
                        ))?;
                        let rows =
                            stmt.query_map(params![site.as_str(), after.seq.0, limit as i64], change_from_row)?;
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
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().pull_from(source, site, after, limit),
        })
    }

    /// How many changes wait for `site` in one pull source after `after`.
    pub fn count_pull(&self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<u64> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => Ok(match source {
                PullSource::Bucket(bucket) => conn.query_row(
                    "SELECT count(*) FROM change_log WHERE bucket = ?1 AND seq > ?2 AND origin_site != ?3",
                    params![bucket, after.seq.0, site.as_str()],
                    |r| r.get(0),
                )?,
                PullSource::Outbox => conn.query_row(
                    "SELECT count(*) FROM outbox o JOIN change_log l ON l.seq = o.seq WHERE o.site_id = ?1 AND o.seq > ?2",
                    params![site.as_str(), after.seq.0],
                    |r| r.get(0),
                )?,
            }),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().count_pull(source, site, after),
        })
    }

    /// Where the log stands for a pull starting now (an initialisation continues from here
    /// once its snapshot is done).
    pub fn log_position(&self) -> Result<LogPos> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => Ok(LogPos::new(0, last_seq(conn)?)),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().log_position(),
        })
    }

    /// One record's document, if it exists and is not deleted.
    pub fn record(&self, table: &str, id: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<Option<String>> = self.read(|conn| match conn {
            Conn::Sqlite(conn) => Ok(rusqlite::OptionalExtension::optional(conn.query_row(
                "SELECT data FROM record WHERE tbl = ?1 AND id = ?2",
                params![table, id],
                |r| r.get(0),
            ))?),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().record(table, id),
        })?;
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
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                let mut stmt =
                    conn.prepare("SELECT tbl, id, data FROM record WHERE data IS NOT NULL ORDER BY tbl, id")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().dump(),
        })
    }

    /// Live records per table.
    pub fn counts_by_table(&self) -> Result<Vec<(String, u64)>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                let mut stmt =
                    conn.prepare("SELECT tbl, count(*) FROM record WHERE data IS NOT NULL GROUP BY tbl ORDER BY tbl")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().counts_by_table(),
        })
    }
}

pub(crate) fn last_seq(conn: &Connection) -> Result<Seq> {
    Ok(Seq(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM change_log", [], |r| r.get(0))?))
}
