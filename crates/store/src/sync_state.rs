//! The sync bookkeeping both ends keep beside the records: what a site pushed and pulled, its
//! credentials (central server), and the changes that were refused, with their reasons.

use crate::{Db, Result, Tx};
use model::{LogPos, RecordId, Seq, SiteId};
use std::fmt;

/// A change that was refused (or could not be applied), kept where a person can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionRecord {
    /// Whose change it was, and how it came.
    pub from: RejectedFrom,
    pub seq: Seq,
    pub table: String,
    /// The record's id (as the central server shows it: escaped and cut when it came from the
    /// wire too long or unprintable).
    pub id: RecordId,
    pub action: String,
    pub data: Option<String>,
    pub reason: String,
    pub at: String,
}

/// Whose refused change a [`RejectionRecord`] keeps. Stored (and shown) as the site id, or as
/// `received:<site>` for a pulled change: [`fmt::Display`] and [`RejectedFrom::from_stored`]
/// convert, and databases already hold both forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectedFrom {
    /// A change this site made, refused by the central server (kept on both ends).
    Site(SiteId),
    /// A change made on another site, pulled here and not applied (kept on the site only).
    Received(SiteId),
}

impl RejectedFrom {
    const RECEIVED: &'static str = "received:";

    /// Reads the stored form back.
    pub fn from_stored(stored: String) -> RejectedFrom {
        match stored.strip_prefix(Self::RECEIVED) {
            Some(origin) => RejectedFrom::Received(SiteId::from(origin)),
            None => RejectedFrom::Site(SiteId(stored)),
        }
    }

    /// The site whose change it was.
    pub fn site(&self) -> &SiteId {
        match self {
            RejectedFrom::Site(site) | RejectedFrom::Received(site) => site,
        }
    }
}

impl fmt::Display for RejectedFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectedFrom::Site(site) => write!(f, "{site}"),
            RejectedFrom::Received(origin) => write!(f, "{}{origin}", Self::RECEIVED),
        }
    }
}

/// One site as the central server's bookkeeping sees it.
#[derive(Debug, Clone)]
pub struct SiteSyncRow {
    pub site: String,
    pub acked: Seq,
    pub last_push_at: Option<String>,
    pub last_pull_at: Option<String>,
    /// Synced once, but not for more than a month (a site that never synced is not stale: see
    /// [`SiteSyncRow::never_synced`]).
    pub stale: bool,
    pub rejections: u64,
    /// When an administrator disabled the site (`None`: it may sync).
    pub disabled_at: Option<String>,
    /// The log position the site's last noted pull reached (`None`: never noted, or still
    /// initialising): what it is still owed is counted from here.
    pub pulled_to: Option<LogPos>,
    /// What the site said, at its last noted pull, it still had to push.
    pub waiting_to_push: Option<u64>,
}

/// What the central server checks a site's sync requests against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCredentials {
    pub password_hash: String,
    /// The machine fingerprint the site is bound to, once it has synced.
    pub machine: Option<String>,
    /// When an administrator disabled the site: its requests are refused, its data is kept.
    pub disabled_at: Option<String>,
}

/// The last batch a site pushed, as the central server remembers it: the position it
/// followed, the position it reached, and a digest of its changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedBatch {
    pub from: Seq,
    pub acked: Seq,
    pub digest: String,
}

impl SiteSyncRow {
    /// Added, but never pushed nor pulled: a site being set up, not one gone silent.
    pub fn never_synced(&self) -> bool {
        self.last_pull_at.is_none() && self.last_push_at.is_none()
    }
}

impl Tx<'_> {
    /// Keeps a refused change. Keeping the same change twice (a resent batch) keeps it once.
    pub fn keep_rejection(&mut self, rejection: &RejectionRecord) -> Result<()> {
        self.sql(|sql| sql.keep_rejection(rejection))
    }

    /// The refusals kept for `from`'s changes between two positions.
    pub fn rejections_between(&self, from: &SiteId, first: Seq, last: Seq) -> Result<Vec<RejectionRecord>> {
        self.sql(|sql| sql.rejections_between(from.as_str(), first, last))
    }

    /// Central server: the last change of `site` that was applied or rejected. On PostgreSQL the
    /// site's row stays locked until the transaction ends, so that two server processes cannot
    /// apply the same site's batch at once (SQLite has one writer at a time anyway).
    pub fn acked(&self, site: &SiteId) -> Result<Seq> {
        self.sql(|sql| sql.acked(site))
    }

    /// Central server: `site` pushed `batch`, and everything up to its `acked` is applied or
    /// rejected.
    pub fn record_push(&mut self, site: &SiteId, batch: &PushedBatch) -> Result<()> {
        self.sql(|sql| sql.record_push(site, batch))
    }

    /// Central server: the last batch `site` pushed, if the server remembers one.
    pub fn last_push(&self, site: &SiteId) -> Result<Option<PushedBatch>> {
        self.sql(|sql| sql.last_push(site))
    }

    /// Central server: forgets a removed site's credentials, bookkeeping and outbox (its kept
    /// refusals stay, for the record). Whether it existed.
    pub fn forget_site(&mut self, site: &SiteId) -> Result<bool> {
        self.sql(|sql| sql.forget_site(site.as_str()))
    }

    /// Central server: stores a site's password hash (creating the site's bookkeeping when
    /// `create`). Returns whether the site exists.
    pub fn set_password_hash(&mut self, site: &SiteId, hash: &str, create: bool) -> Result<bool> {
        self.sql(|sql| sql.set_password_hash(site.as_str(), hash, create))
    }

    /// Remote site initialised again: its own change log continues after `seq`, the last of
    /// its changes the central server already holds, so new changes are not mistaken for old
    /// ones. The marker entry has no record: it is never pushed nor counted as waiting.
    pub fn start_log_after(&mut self, seq: Seq) -> Result<()> {
        if seq.0 <= 0 {
            return Ok(());
        }
        self.sql(|sql| sql.start_log_after(seq))
    }
}

impl Db {
    /// Central server: notes that a site pulled (the dashboard's "last synced"). A pull does not
    /// wait for a push to commit: on SQLite, while another transaction writes, the note is
    /// written when it ends.
    pub fn mark_pulled(&self, site: &SiteId, reached: Option<LogPos>, waiting_to_push: Option<u64>) -> Result<()> {
        let site = site.clone();
        self.write_soon(Box::new(move |sql| sql.mark_pulled(&site, reached, waiting_to_push)))
    }

    /// Central server: disables a site (`true`: its sync requests are refused from now on, its
    /// data and bookkeeping are kept) or enables it again. Whether the site exists.
    pub fn set_site_disabled(&self, site: &SiteId, disabled: bool) -> Result<bool> {
        self.transaction(|tx| tx.sql(|sql| sql.set_site_disabled(site.as_str(), disabled)))
    }

    /// Central server: a site's stored password hash, if the site exists.
    pub fn password_hash(&self, site: &SiteId) -> Result<Option<String>> {
        self.read(|sql| sql.password_hash(site.as_str()))
    }

    /// Central server: a site's password hash and the machine it is bound to, in one read (every
    /// sync request needs both); `None` for an unknown site.
    /// Central server: the last change of `site` applied or rejected, as it stands now (no lock:
    /// what a pull answer and a status tell the site).
    pub fn acked_now(&self, site: &SiteId) -> Result<Seq> {
        self.read(|sql| sql.acked_now(site))
    }

    pub fn site_credentials(&self, site: &SiteId) -> Result<Option<SiteCredentials>> {
        self.read(|sql| sql.site_credentials(site.as_str()))
    }

    /// Central server: binds a site to `machine` if it is bound to none yet (its first sync, or
    /// after `unbind`). Returns the machine it is bound to now.
    pub fn bind_machine(&self, site: &SiteId, machine: &str) -> Result<Option<String>> {
        self.transaction(|tx| tx.sql(|sql| sql.bind_machine(site.as_str(), machine)))
    }

    /// Central server: forgets the machine a site is bound to, so that its next sync binds it to
    /// the machine it comes from (a site moved to new hardware on purpose). Whether it exists.
    pub fn unbind_machine(&self, site: &SiteId) -> Result<bool> {
        self.transaction(|tx| tx.sql(|sql| sql.unbind_machine(site.as_str())))
    }

    /// Central server: every site's bookkeeping, by site id.
    pub fn site_sync_rows(&self) -> Result<Vec<SiteSyncRow>> {
        self.read(|sql| sql.site_sync_rows())
    }

    /// Kept refusals, oldest first, or the newest `limit` of them, newest first.
    pub fn rejections(&self, limit: Option<usize>) -> Result<Vec<RejectionRecord>> {
        self.read(|sql| sql.rejections(limit))
    }

    /// The newest `limit` refusals, newest first, of one site's changes and of one table, or of all.
    pub fn rejections_matching(
        &self,
        site: Option<&str>,
        table: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RejectionRecord>> {
        self.read(|sql| sql.rejections_matching(site, table, limit))
    }

    /// Central server: a site's refusals nobody has looked at yet (towards its quarantine).
    pub fn count_open_rejections(&self, site: &SiteId) -> Result<u64> {
        self.read(|sql| sql.count_open_rejections(site))
    }

    /// How many refusals are kept.
    pub fn count_rejections(&self) -> Result<u64> {
        self.read(|sql| sql.count_rejections())
    }

    /// Central server: the refusals of `site`'s changes that no administrator has looked at yet,
    /// oldest first.
    pub fn open_rejections(&self, site: &SiteId) -> Result<Vec<RejectionRecord>> {
        self.read(|sql| sql.open_rejections(site.as_str()))
    }

    /// Central server: an administrator has looked at `site`'s refused changes. They are kept,
    /// marked as seen, and no longer count towards the site's quarantine. Returns how many.
    pub fn resolve_rejections(&self, site: &SiteId) -> Result<u64> {
        self.transaction(|tx| tx.sql(|sql| sql.resolve_rejections(site.as_str())))
    }
}

impl Tx<'_> {
    /// Central server: how many of `site`'s refused changes wait for an administrator.
    pub fn count_open_rejections(&self, site: &SiteId) -> Result<u64> {
        self.sql(|sql| sql.count_open_rejections(site))
    }
}

#[cfg(test)]
mod tests {
    use super::RejectedFrom;
    use model::SiteId;

    /// Databases hold both forms: reading one back gives what was kept.
    #[test]
    fn whose_rejection_keeps_its_stored_form() {
        for (from, stored) in [
            (RejectedFrom::Site(SiteId::from("north")), "north"),
            (RejectedFrom::Received(SiteId::from("south")), "received:south"),
        ] {
            assert_eq!(from.to_string(), stored);
            assert_eq!(RejectedFrom::from_stored(stored.to_owned()), from);
        }
    }
}
