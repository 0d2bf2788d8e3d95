//! What a person at a site needs to see: what waits to be pushed, when the last sync
//! succeeded, the last error, whether sync is paused or disabled, and what was rejected.

use crate::sync::pushed_up_to;
use model::RecordId;
use serde::Serialize;
use std::fmt;
use store::{Db, StateKey, StoreError};

/// Whether this site syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    Active,
    /// Temporarily: scheduled syncs are skipped (a sync asked for by a person still runs).
    Paused,
    /// Until turned back on: no sync at all, not even a manual one.
    Disabled,
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncState::Active => "active",
            SyncState::Paused => "paused",
            SyncState::Disabled => "disabled",
        })
    }
}

pub fn sync_state(db: &Db) -> Result<SyncState, StoreError> {
    Ok(match db.state(StateKey::SyncState)?.as_deref() {
        Some("paused") => SyncState::Paused,
        Some("disabled") => SyncState::Disabled,
        _ => SyncState::Active,
    })
}

pub fn set_sync_state(db: &Db, state: SyncState) -> Result<(), StoreError> {
    db.set_state(StateKey::SyncState, &state.to_string())
}

/// A change refused by the central server (or a received change that could not be applied
/// here), kept with its reason.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedChange {
    pub from: String,
    pub seq: i64,
    pub table: String,
    pub id: RecordId,
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    pub site: String,
    pub central_url: String,
    pub state: SyncState,
    pub waiting_to_push: u64,
    pub last_sync_at: Option<String>,
    pub last_error: Option<String>,
    pub rejected: u64,
    pub initialised: bool,
    pub records: u64,
    /// Something this site did on its own that a person should know of (a restore detected).
    pub notice: Option<String>,
    /// Moves of stores from or to this site that are under way, in words.
    pub store_moves: Vec<String>,
}

pub fn status(db: &Db) -> Result<SiteStatus, StoreError> {
    let site = db.local_site()?;
    let waiting_to_push = db.count_changes_after(pushed_up_to(db)?, &site)?;
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let cursor = db.state(StateKey::PullCursor)?.unwrap_or_default();
    let (rejected, records) = (db.count_rejections()?, db.count_records()?);
    Ok(SiteStatus {
        site: site.to_string(),
        central_url: db.state(StateKey::CentralUrl)?.unwrap_or_default(),
        state: sync_state(db)?,
        waiting_to_push,
        last_sync_at: non_empty(db.state(StateKey::LastSyncAt)?),
        last_error: non_empty(db.state(StateKey::LastError)?),
        rejected,
        initialised: cursor.contains("\"log\""),
        records,
        notice: non_empty(db.state(StateKey::LastNotice)?),
        store_moves: store_moves(db, &site),
    })
}

/// The store moves this site takes part in, as a person reads them.
fn store_moves(db: &Db, me: &model::SiteId) -> Vec<String> {
    let network = db.network();
    network
        .store_moves
        .iter()
        .filter_map(|(store, m)| match m.status {
            model::MoveStatus::Pending if m.from == *me => Some(format!(
                "store `{store}` is moving to `{}`: the next sync pushes everything it has and hands it over (it is read-only here from then on)",
                m.to
            )),
            model::MoveStatus::HandedOver if m.from == *me => Some(format!(
                "store `{store}` was handed over to `{}` and is read-only here; the next sync completes the move",
                m.to
            )),
            _ if m.to == *me => Some(format!(
                "store `{store}` is moving here from `{}`: it becomes active here once `{}` has handed it over",
                m.from, m.from
            )),
            _ => None,
        })
        .collect()
}

pub fn rejected(db: &Db) -> Result<Vec<RejectedChange>, StoreError> {
    Ok(db
        .rejections(None)?
        .into_iter()
        .map(|r| RejectedChange {
            from: r.from.to_string(),
            seq: r.seq.0,
            table: r.table,
            id: r.id,
            reason: r.reason,
            at: r.at,
        })
        .collect())
}

impl fmt::Display for SiteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "site:              {}", self.site)?;
        writeln!(f, "central server:    {}", self.central_url)?;
        writeln!(f, "sync:              {}", self.state)?;
        writeln!(f, "waiting to push:   {} change(s)", self.waiting_to_push)?;
        writeln!(f, "last good sync:    {}", self.last_sync_at.as_deref().unwrap_or("never"))?;
        writeln!(f, "last error:        {}", self.last_error.as_deref().unwrap_or("none"))?;
        writeln!(
            f,
            "rejected changes:  {}{}",
            self.rejected,
            if self.rejected > 0 { " (see `outpost site rejected`)" } else { "" }
        )?;
        writeln!(f, "initialised:       {}", if self.initialised { "yes" } else { "not yet (first sync incomplete)" })?;
        write!(f, "records held:      {}", self.records)?;
        for moving in &self.store_moves {
            write!(f, "\nstore move:        {moving}")?;
        }
        if let Some(notice) = &self.notice {
            write!(f, "\nnotice:            {notice}")?;
        }
        Ok(())
    }
}
