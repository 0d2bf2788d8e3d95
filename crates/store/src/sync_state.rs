//! The sync bookkeeping both ends keep beside the records: what a site pushed and pulled, its
//! credentials (central server), and the changes that were refused, with their reasons.

use crate::db::{Conn, TxSql};
use crate::{Db, Result, Tx};
use model::{Seq, SiteId};
use rusqlite::{params, OptionalExtension};

/// A change that was refused (or could not be applied), kept where a person can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionRecord {
    /// The site whose change it was (`received:<site>` for a pulled change a site could not apply).
    pub from: String,
    pub seq: Seq,
    pub table: String,
    pub id: String,
    pub action: String,
    pub data: Option<String>,
    pub reason: String,
    pub at: String,
}

/// One site as the central server's bookkeeping sees it.
#[derive(Debug, Clone)]
pub struct SiteSyncRow {
    pub site: String,
    pub acked: Seq,
    pub last_push_at: Option<String>,
    pub last_pull_at: Option<String>,
    /// Not synced for more than a month (or never).
    pub stale: bool,
    pub rejections: u64,
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

fn rejection_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RejectionRecord> {
    Ok(RejectionRecord {
        from: r.get(0)?,
        seq: Seq(r.get(1)?),
        table: r.get(2)?,
        id: r.get(3)?,
        action: r.get(4)?,
        data: r.get(5)?,
        reason: r.get(6)?,
        at: r.get(7)?,
    })
}

/// What the central server checks a site's sync requests against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCredentials {
    pub password_hash: String,
    /// The machine fingerprint the site is bound to, once it has synced.
    pub machine: Option<String>,
}

/// The last batch a site pushed, as the central server remembers it: the position it
/// followed, the position it reached, and a digest of its changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedBatch {
    pub from: Seq,
    pub acked: Seq,
    pub digest: String,
}

const REJECTION_COLUMNS: &str = "site_id, origin_seq, tbl, record_id, action, data, reason, at";

impl Tx<'_> {
    /// Keeps a refused change. Keeping the same change twice (a resent batch) keeps it once.
    pub fn keep_rejection(&mut self, rejection: &RejectionRecord) -> Result<()> {
        match &mut self.sql {
            TxSql::Sqlite(sql) => {
                sql.prepare_cached(
                    "INSERT OR IGNORE INTO rejection (site_id, origin_seq, tbl, record_id, action, data, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    rejection.from,
                    rejection.seq.0,
                    rejection.table,
                    rejection.id,
                    rejection.action,
                    rejection.data,
                    rejection.reason
                ])?;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().keep_rejection(rejection),
        }
    }

    /// The refusals kept for `from`'s changes between two positions.
    pub fn rejections_between(&self, from: &str, first: Seq, last: Seq) -> Result<Vec<RejectionRecord>> {
        match &self.sql {
            TxSql::Sqlite(sql) => {
                let mut stmt = sql.prepare_cached(&format!(
                    "SELECT {REJECTION_COLUMNS} FROM rejection WHERE site_id = ?1 AND origin_seq BETWEEN ?2 AND ?3 ORDER BY origin_seq"
                ))?;
                let rows = stmt.query_map(params![from, first.0, last.0], rejection_from_row)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.borrow_mut().session().rejections_between(from, first, last),
        }
    }

    /// Central server: the last change of `site` that was applied or rejected. On PostgreSQL the
    /// site's row stays locked until the transaction ends, so that two server processes cannot
    /// apply the same site's batch at once (SQLite has one writer at a time anyway).
    pub fn acked(&self, site: &SiteId) -> Result<Seq> {
        match &self.sql {
            TxSql::Sqlite(sql) => {
                let seq: Option<i64> = sql
                    .prepare_cached("SELECT acked_seq FROM site_sync WHERE site_id = ?1")?
                    .query_row([site.as_str()], |r| r.get(0))
                    .optional()?;
                Ok(Seq(seq.unwrap_or(0)))
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.borrow_mut().session().acked(site),
        }
    }

    /// Central server: `site` pushed `batch`, and everything up to its `acked` is applied or
    /// rejected.
    pub fn record_push(&mut self, site: &SiteId, batch: &PushedBatch) -> Result<()> {
        match &mut self.sql {
            TxSql::Sqlite(sql) => {
                sql.prepare_cached(&format!(
                    "UPDATE site_sync SET acked_seq = ?2, push_from = ?3, push_digest = ?4, last_push_at = {NOW} WHERE site_id = ?1"
                ))?
                .execute(params![site.as_str(), batch.acked.0, batch.from.0, batch.digest])?;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().record_push(site, batch),
        }
    }

    /// Central server: the last batch `site` pushed, if the server remembers one.
    pub fn last_push(&self, site: &SiteId) -> Result<Option<PushedBatch>> {
        match &self.sql {
            TxSql::Sqlite(sql) => Ok(sql
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
                .optional()?),
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.borrow_mut().session().last_push(site),
        }
    }

    /// Central server: stores a site's password hash (creating the site's bookkeeping when
    /// `create`). Returns whether the site exists.
    pub fn set_password_hash(&mut self, site: &str, hash: &str, create: bool) -> Result<bool> {
        match &mut self.sql {
            TxSql::Sqlite(sql) => {
                let changed = if create {
                    sql.execute(
                        "INSERT INTO site_sync (site_id, password_hash) VALUES (?1, ?2)
                         ON CONFLICT (site_id) DO UPDATE SET password_hash = excluded.password_hash",
                        params![site, hash],
                    )?
                } else {
                    sql.execute("UPDATE site_sync SET password_hash = ?2 WHERE site_id = ?1", params![site, hash])?
                };
                Ok(changed > 0)
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().set_password_hash(site, hash, create),
        }
    }

    /// Remote site initialised again: its own change log continues after `seq`, the last of
    /// its changes the central server already holds, so new changes are not mistaken for old
    /// ones. The marker entry has no record: it is never pushed nor counted as waiting.
    pub fn start_log_after(&mut self, seq: Seq) -> Result<()> {
        if seq.0 <= 0 {
            return Ok(());
        }
        match &mut self.sql {
            TxSql::Sqlite(sql) => {
                sql.execute(
                    "INSERT OR IGNORE INTO change_log (seq, tbl, record_id, action, origin_site) VALUES (?1, '', '', 'upsert', '')",
                    [seq.0],
                )?;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().start_log_after(seq),
        }
    }
}

impl Db {
    /// Central server: notes that a site pulled (the dashboard's "last synced").
    pub fn mark_pulled(&self, site: &SiteId) -> Result<()> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                conn.prepare_cached(&format!("UPDATE site_sync SET last_pull_at = {NOW} WHERE site_id = ?1"))?
                    .execute([site.as_str()])?;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().mark_pulled(site),
        })
    }

    /// Central server: a site's stored password hash, if the site exists.
    pub fn password_hash(&self, site: &str) -> Result<Option<String>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => Ok(conn
                .prepare_cached("SELECT password_hash FROM site_sync WHERE site_id = ?1")?
                .query_row([site], |r| r.get(0))
                .optional()?),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().password_hash(site),
        })
    }

    /// Central server: a site's password hash and the machine it is bound to, in one read (every
    /// sync request needs both); `None` for an unknown site.
    pub fn site_credentials(&self, site: &str) -> Result<Option<SiteCredentials>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => Ok(conn
                .prepare_cached("SELECT password_hash, hardware_id FROM site_sync WHERE site_id = ?1")?
                .query_row([site], |r| Ok(SiteCredentials { password_hash: r.get(0)?, machine: r.get(1)? }))
                .optional()?),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().site_credentials(site),
        })
    }

    /// Central server: binds a site to `machine` if it is bound to none yet (its first sync, or
    /// after `unbind`). Returns the machine it is bound to now.
    pub fn bind_machine(&self, site: &str, machine: &str) -> Result<Option<String>> {
        self.transaction(|tx| match &mut tx.sql {
            TxSql::Sqlite(sql) => {
                sql.prepare_cached("UPDATE site_sync SET hardware_id = ?2 WHERE site_id = ?1 AND hardware_id IS NULL")?
                    .execute(params![site, machine])?;
                Ok(sql
                    .prepare_cached("SELECT hardware_id FROM site_sync WHERE site_id = ?1")?
                    .query_row([site], |r| r.get(0))
                    .optional()?
                    .flatten())
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().bind_machine(site, machine),
        })
    }

    /// Central server: forgets the machine a site is bound to, so that its next sync binds it to
    /// the machine it comes from (a site moved to new hardware on purpose). Whether it exists.
    pub fn unbind_machine(&self, site: &str) -> Result<bool> {
        self.transaction(|tx| match &mut tx.sql {
            TxSql::Sqlite(sql) => {
                Ok(sql.execute("UPDATE site_sync SET hardware_id = NULL WHERE site_id = ?1", [site])? > 0)
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().unbind_machine(site),
        })
    }

    /// Central server: every site's bookkeeping, by site id.
    pub fn site_sync_rows(&self) -> Result<Vec<SiteSyncRow>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare(
                    "SELECT s.site_id, s.acked_seq, s.last_push_at, s.last_pull_at,
                            COALESCE(julianday('now') - julianday(COALESCE(s.last_pull_at, s.last_push_at)), 1e9) > 30,
                            (SELECT count(*) FROM rejection r WHERE r.site_id = s.site_id)
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
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().site_sync_rows(),
        })
    }

    /// Kept refusals, oldest first, or the newest `limit` of them, newest first.
    pub fn rejections(&self, limit: Option<usize>) -> Result<Vec<RejectionRecord>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                let sql = match limit {
                    Some(n) => format!("SELECT {REJECTION_COLUMNS} FROM rejection ORDER BY id DESC LIMIT {n}"),
                    None => format!("SELECT {REJECTION_COLUMNS} FROM rejection ORDER BY id"),
                };
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map([], rejection_from_row)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().rejections(limit),
        })
    }

    /// How many refusals are kept.
    pub fn count_rejections(&self) -> Result<u64> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => Ok(conn.query_row("SELECT count(*) FROM rejection", [], |r| r.get(0))?),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().count_rejections(),
        })
    }

    /// Central server: the refusals of `site`'s changes that no administrator has looked at yet,
    /// oldest first.
    pub fn open_rejections(&self, site: &str) -> Result<Vec<RejectionRecord>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {REJECTION_COLUMNS} FROM rejection WHERE site_id = ?1 AND resolved_at IS NULL ORDER BY id"
                ))?;
                let rows = stmt.query_map([site], rejection_from_row)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().open_rejections(site),
        })
    }

    /// Central server: an administrator has looked at `site`'s refused changes. They are kept,
    /// marked as seen, and no longer count towards the site's quarantine. Returns how many.
    pub fn resolve_rejections(&self, site: &str) -> Result<u64> {
        self.transaction(|tx| match &mut tx.sql {
            TxSql::Sqlite(sql) => Ok(sql.execute(
                &format!("UPDATE rejection SET resolved_at = {NOW} WHERE site_id = ?1 AND resolved_at IS NULL"),
                [site],
            )? as u64),
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().resolve_rejections(site),
        })
    }
}

impl Tx<'_> {
    /// Central server: how many of `site`'s refused changes wait for an administrator.
    pub fn count_open_rejections(&self, site: &SiteId) -> Result<u64> {
        match &self.sql {
            TxSql::Sqlite(sql) => Ok(sql
                .prepare_cached("SELECT count(*) FROM rejection WHERE site_id = ?1 AND resolved_at IS NULL")?
                .query_row([site.as_str()], |r| r.get(0))?),
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.borrow_mut().session().count_open_rejections(site),
        }
    }
}
