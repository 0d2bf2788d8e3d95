//! The central server's memory of each site over time, for the dashboard: its sync sessions
//! (when, how long, records and bytes each way) and hourly samples of its sync debt (what waits
//! for it). Written beside the sync, never in its way: a note that cannot be written now is
//! written when the database is free (see [`Db::write_soon`]).

use crate::queries::PullSource;
use crate::{Db, Result};
use model::{LogPos, Seq, SiteId};

/// Requests of one site closer together than this are one sync session.
pub const SESSION_GAP_SECS: i64 = 120;
// The PostgreSQL backend's query spells it out.
const _: () = assert!(SESSION_GAP_SECS == 120);
/// Sessions older than this are forgotten.
pub const KEEP_SESSIONS_SECS: i64 = 90 * 24 * 3600;
/// Debt samples older than this are forgotten.
pub const KEEP_SAMPLES_SECS: i64 = 30 * 24 * 3600;

/// One request of a site's sync, as the central server served it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncRequest {
    /// When it was served (Unix seconds).
    pub at: i64,
    /// Changes the site pushed, and changes it was sent.
    pub pushed: u64,
    pub pulled: u64,
    /// The request and the answer as on the wire.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// How long the server worked on it.
    pub busy_ms: u64,
}

/// A site's sync session: its requests within [`SESSION_GAP_SECS`] of each other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncSession {
    pub site: String,
    pub started_at: i64,
    pub ended_at: i64,
    pub requests: u64,
    pub pushed: u64,
    pub pulled: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub busy_ms: u64,
}

/// What waits for a site in the central server's log: the seeds' `sync_out` count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Debt {
    pub changes: u64,
    /// The records' size as stored (JSON, before compression).
    pub bytes: u64,
    /// The first waiting change's position in the log.
    pub oldest: Option<Seq>,
}

impl Debt {
    /// The debt of two pull sources together.
    pub fn and(self, other: Debt) -> Debt {
        Debt {
            changes: self.changes + other.changes,
            bytes: self.bytes + other.bytes,
            oldest: match (self.oldest, other.oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// A site's debt at one time, and where the central server's log ended then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebtSample {
    pub site: String,
    pub at: i64,
    pub owed: u64,
    pub owed_bytes: u64,
    pub log_seq: Seq,
}

impl Db {
    /// Central server: notes one request of a site's sync, in its current session or a new one.
    pub fn note_sync(&self, site: &SiteId, request: SyncRequest) -> Result<()> {
        let site = site.clone();
        self.write_soon(Box::new(move |sql| sql.note_sync(&site, &request)))
    }

    /// Central server: a site's sync sessions that ended at or after `since`, oldest first.
    pub fn sync_sessions(&self, site: &SiteId, since: i64) -> Result<Vec<SyncSession>> {
        self.read(|sql| sql.sync_sessions(site.as_str(), since))
    }

    /// Central server: what waits for `site` in one pull source after `after`.
    pub fn debt(&self, source: &PullSource, site: &SiteId, after: LogPos) -> Result<Debt> {
        self.read(|sql| sql.debt(source, site, after))
    }

    /// Central server: keeps a debt sample (and forgets those older than
    /// [`KEEP_SAMPLES_SECS`]).
    pub fn add_debt_sample(&self, sample: &DebtSample) -> Result<()> {
        self.transaction(|tx| tx.sql(|sql| sql.add_debt_sample(sample)))
    }

    /// Central server: debt samples taken at or after `since`, every site's or one's, oldest first.
    pub fn debt_samples(&self, site: Option<&SiteId>, since: i64) -> Result<Vec<DebtSample>> {
        self.read(|sql| sql.debt_samples(site.map(SiteId::as_str), since))
    }

    /// Central server: the time of the first debt sample whose log reached `seq`: a change at
    /// `seq` was in the log by then.
    pub fn logged_by(&self, seq: Seq) -> Result<Option<i64>> {
        self.read(|sql| sql.logged_by(seq))
    }
}
