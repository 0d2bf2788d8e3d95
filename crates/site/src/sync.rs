//! One sync of a site: push everything this site changed, then pull everything that concerns
//! it, in batches, each committed before the next position is remembered.

use crate::client::{Client, ClientError};
use crate::status::SyncState;
use model::{Change, Seq, SiteId};
use protocol::{Cursor, PullRequest, PullResponse, PushRequest};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use store::{Db, RejectionRecord, StoreError};

/// Push batches hold at most this many changes...
pub const PUSH_LIMIT: usize = 5_000;
/// ...and about this many bytes of records (before compression).
pub const PUSH_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Pull batches ask for about this many bytes of records (about 20,000 typical records).
pub const PULL_MAX_BYTES: usize = 6 * 1024 * 1024;

/// How long to wait before asking again when the central server holds changes it cannot order
/// yet (a transaction is still running there), and how many times; the rest comes next sync.
const WAIT: Duration = Duration::from_millis(100);
const MAX_WAITS: u32 = 30;

/// Why a sync stopped. Everything committed before it stays committed; the next sync goes on
/// from there.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync is {0} on this site; `outpost site resume` turns it back on")]
    NotActive(SyncState),
    #[error("{step}: {source}")]
    Client { step: &'static str, source: ClientError },
    #[error("{step}: {source}")]
    Store { step: &'static str, source: Box<StoreError> },
    #[error("the stored pull position is unreadable ({0}); `outpost site reset-cursor` starts the pull again")]
    BadCursor(serde_json::Error),
    #[error("the central server keeps answering that this site's push position ({ours}) is not its own ({theirs}); nothing was lost, the changes wait on this site")]
    OutOfStep { ours: Seq, theirs: Seq },
}

/// Where a sync is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Pushing { pushed: u64, waiting: u64 },
    Pulling { pulled: u64, remaining: u64 },
}

/// Something that shows progress (a terminal bar, a log line, nothing).
pub trait Progress {
    fn step(&mut self, step: Step, bytes_sent: u64, bytes_received: u64);
}

impl<F: FnMut(Step, u64, u64)> Progress for F {
    fn step(&mut self, step: Step, sent: u64, received: u64) {
        self(step, sent, received)
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub pushed: u64,
    pub rejected: u64,
    pub pulled: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration: Duration,
}

fn store_err(step: &'static str) -> impl Fn(StoreError) -> SyncError {
    move |source| SyncError::Store { step, source: Box::new(source) }
}

/// Runs one sync: push first, then pull. Records the outcome (last sync, last error) in the
/// site's state either way.
pub fn sync_once(db: &Db, client: &Client, progress: &mut dyn Progress) -> Result<SyncReport, SyncError> {
    // Paused skips the schedule, not a sync a person asks for; disabled stops both.
    let state = crate::status::sync_state(db).map_err(store_err("reading the sync state"))?;
    if state == SyncState::Disabled {
        return Err(SyncError::NotActive(state));
    }
    let started = Instant::now();
    let sent0 = client.sent.load(std::sync::atomic::Ordering::Relaxed);
    let received0 = client.received.load(std::sync::atomic::Ordering::Relaxed);
    let result = push_then_pull(db, client, progress);
    let now = now_text();
    match &result {
        Ok(_) => {
            let _ = db.set_state("last_sync_at", &now);
            let _ = db.set_state("last_error", "");
        }
        Err(e) => {
            tracing::warn!(error = %e, "sync failed");
            let _ = db.set_state("last_error", &format!("{now}: {e}"));
        }
    }
    let mut report = result?;
    report.duration = started.elapsed();
    report.bytes_sent = client.sent.load(std::sync::atomic::Ordering::Relaxed) - sent0;
    report.bytes_received = client.received.load(std::sync::atomic::Ordering::Relaxed) - received0;
    Ok(report)
}

fn push_then_pull(db: &Db, client: &Client, progress: &mut dyn Progress) -> Result<SyncReport, SyncError> {
    let me = db.local_site().map_err(store_err("reading this site's id"))?;
    let mut report = SyncReport::default();
    push(db, client, &me, progress, &mut report)?;
    pull(db, client, &me, progress, &mut report)?;
    Ok(report)
}

/// The position up to which the central server has acknowledged this site's changes.
pub fn pushed_up_to(db: &Db) -> Result<Seq, StoreError> {
    Ok(Seq(db.state("pushed_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0)))
}

/// How many times one sync follows an out-of-step answer before it gives up (each is one round
/// trip; two are enough for any honest history).
const MAX_REALIGNS: u32 = 3;

fn push(
    db: &Db,
    client: &Client,
    me: &SiteId,
    progress: &mut dyn Progress,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let mut realigned = 0;
    // A push of an earlier sync whose answer never came (read before this sync sends its own).
    let mut unanswered = db.state(IN_FLIGHT).map_err(store_err("reading the push in flight"))?.and_then(|text| {
        let (after, last) = text.split_once(':')?;
        Some((Seq(after.parse().ok()?), Seq(last.parse().ok()?)))
    });
    // What was waiting when the sync started is pushed; what people write meanwhile waits for
    // the next sync, so that a busy site still gets to its pull every time.
    let mut waiting_up_to = db.last_seq().map_err(store_err("reading the change log"))?;
    loop {
        let acked = pushed_up_to(db).map_err(store_err("reading the push position"))?;
        let mut batch =
            db.changes_after(acked, me, PUSH_LIMIT, PUSH_MAX_BYTES).map_err(store_err("reading the change log"))?;
        batch.retain(|c| c.seq <= waiting_up_to);
        let Some(last) = batch.last().map(|c| c.seq) else { return Ok(()) };
        // Remembered until the answer is: an answer lost on the way back is then told apart
        // from a restore from a backup (see `realign`).
        db.set_state(IN_FLIGHT, &format!("{}:{}", acked.0, last.0)).map_err(store_err("noting the push in flight"))?;
        let response = client
            .push(&PushRequest { after: acked, changes: batch })
            .map_err(|source| SyncError::Client { step: "pushing changes to the central server", source })?;
        if response.out_of_step {
            realigned += 1;
            if realigned > MAX_REALIGNS {
                return Err(SyncError::OutOfStep { ours: acked, theirs: response.acked });
            }
            realign(db, acked, response.acked, unanswered.take())?;
            // Renumbering moved what was waiting up the log.
            waiting_up_to = db.last_seq().map_err(store_err("reading the change log"))?;
            continue;
        }
        let batch_len = db.count_changes_after(acked, me).map_err(store_err("counting the change log"))?;
        db.transaction(|tx| {
            for rejection in &response.rejections {
                // What the person wrote is kept whole beside the reason; the record itself goes
                // back to what the central server holds, so nothing false is shown as true.
                let data = tx.current(&rejection.table, &rejection.id)?.and_then(|c| c.data);
                let action = if data.is_some() { "upsert" } else { "delete" };
                tx.keep_rejection(&RejectionRecord {
                    from: me.to_string(),
                    seq: rejection.seq,
                    table: rejection.table.clone(),
                    id: rejection.id.clone(),
                    action: action.to_owned(),
                    data,
                    reason: rejection.reason.clone(),
                    at: String::new(),
                })?;
                tx.undo_refused(&rejection.table, &rejection.id, rejection.seq, rejection.central_version.as_deref())?;
            }
            tx.set_state(IN_FLIGHT, "")?;
            tx.set_state("pushed_seq", &response.acked.0.to_string())
        })
        .map_err(store_err("recording the push acknowledgement"))?;
        for rejection in &response.rejections {
            tracing::warn!(table = %rejection.table, id = %rejection.id, reason = %rejection.reason, "the central server rejected a change; the record is put back as the central server holds it, and the refused version is kept in `outpost site rejected`");
        }
        let pushed = response.acked.0.min(last.0) - acked.0;
        report.pushed += response.applied;
        report.rejected += response.rejections.len() as u64;
        let waiting = batch_len.saturating_sub(pushed.max(0) as u64);
        progress.step(
            Step::Pushing { pushed: report.pushed, waiting },
            client.sent.load(std::sync::atomic::Ordering::Relaxed),
            client.received.load(std::sync::atomic::Ordering::Relaxed),
        );
        if response.acked < last {
            // The server acknowledged less than we sent (a quarantine stops a batch midway):
            // the rest waits for the next sync rather than looping.
            return Ok(());
        }
    }
}

/// The state key of the push sent and not answered yet: `AFTER:LAST`.
const IN_FLIGHT: &str = "push_in_flight";

/// The central server acknowledged `theirs` where this site believed `ours`.
///
/// - A push of an earlier sync (`unanswered`) after `ours`, up to at least `theirs`, was sent and
///   its answer never came: the central server applied it, and nothing else since. The site moves on to `theirs`
///   (its changes up to there went in as they stand in its log; a record edited since has a
///   later position and is pushed again).
/// - Otherwise, behind (`ours < theirs`): this database was restored from a backup taken before
///   changes the central server holds. The changes written since move up past `theirs` (so they
///   are pushed as new, never taken for ones already held), and the next pull starts again from
///   a snapshot, which brings back this site's own records written after the backup.
/// - Ahead (`ours > theirs`): the central server lost what it acknowledged (it was restored
///   itself); the site pushes again from its position.
fn realign(db: &Db, ours: Seq, theirs: Seq, unanswered: Option<(Seq, Seq)>) -> Result<(), SyncError> {
    let now = now_text();
    let lost_answer = unanswered.is_some_and(|(after, last)| after == ours && ours < theirs && theirs <= last);
    let notice = db
        .transaction(|tx| {
            let notice = if lost_answer {
                None
            } else if ours < theirs {
                let moved = tx.renumber_after(ours, theirs)?;
                tx.set_state("pull_cursor", "")?;
                Some(format!(
                    "{now}: the central server holds this site's changes up to {theirs}, but this database knew of only {ours} \
                     pushed: it was restored from a backup. {moved} change(s) written since were renumbered after {theirs} and pushed; \
                     this site's records are fetched again from the central server"
                ))
            } else {
                Some(format!(
                    "{now}: the central server holds this site's changes only up to {theirs}, not {ours} as it once said \
                     (was the central server restored?); pushing again from {theirs}"
                ))
            };
            tx.set_state(IN_FLIGHT, "")?;
            tx.set_state("pushed_seq", &theirs.0.to_string())?;
            if let Some(notice) = &notice {
                tx.set_state("last_notice", notice)?;
            }
            Ok(notice)
        })
        .map_err(store_err("realigning the push position"))?;
    match notice {
        Some(notice) => tracing::warn!("{notice}"),
        None => tracing::info!(%ours, %theirs, "the answer to the last push was lost; the central server holds it"),
    }
    Ok(())
}

fn load_cursor(db: &Db) -> Result<Option<Cursor>, SyncError> {
    match db.state("pull_cursor").map_err(store_err("reading the pull position"))? {
        Some(text) if !text.is_empty() => serde_json::from_str(&text).map(Some).map_err(SyncError::BadCursor),
        _ => Ok(None),
    }
}

/// Pulls until nothing remains. Fetching the next batch overlaps applying this one: a fetcher
/// thread asks for batch n+1 (its position is known from batch n's answer) while batch n is
/// committed here. The stored position moves only with a committed batch.
fn pull(
    db: &Db,
    client: &Client,
    me: &SiteId,
    progress: &mut dyn Progress,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let start = load_cursor(db)?;
    let (sender, receiver) = mpsc::sync_channel::<Result<PullResponse, ClientError>>(2);
    let fetcher_client = client.clone();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut cursor = start;
            // A small first batch fills the pipeline sooner; the rest are full size.
            let mut max_bytes = PULL_MAX_BYTES / 16;
            let mut waited = 0;
            loop {
                let answer = fetcher_client.pull(&PullRequest { cursor: cursor.clone(), max_bytes });
                max_bytes = PULL_MAX_BYTES;
                let done = match &answer {
                    Ok(batch) => {
                        let in_log = matches!(batch.next, Cursor::Log { .. });
                        let nothing_new = batch.changes.is_empty() && in_log && Some(&batch.next) == cursor.as_ref();
                        cursor = Some(batch.next.clone());
                        if nothing_new && batch.remaining > 0 && waited < MAX_WAITS {
                            // Changes exist that a transaction still running on the central
                            // server must be ordered before: ask again in a moment.
                            waited += 1;
                            std::thread::sleep(WAIT);
                            continue;
                        }
                        nothing_new || (batch.remaining == 0 && in_log)
                    }
                    Err(_) => true,
                };
                if sender.send(answer).is_err() || done {
                    return;
                }
            }
        });
        for answer in receiver {
            let batch = answer
                .map_err(|source| SyncError::Client { step: "pulling changes from the central server", source })?;
            apply_batch(db, me, &batch.changes, &batch.next)?;
            report.pulled += batch.changes.len() as u64;
            progress.step(
                Step::Pulling { pulled: report.pulled, remaining: batch.remaining },
                client.sent.load(std::sync::atomic::Ordering::Relaxed),
                client.received.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        Ok(())
    })
}

/// Commits one pulled batch and the position after it, in one transaction. A change that
/// cannot be applied here (a table this version does not know, a malformed record) is kept
/// with its reason, visible in `outpost site rejected`, instead of stalling every later sync.
fn apply_batch(db: &Db, me: &SiteId, changes: &[Change], next: &Cursor) -> Result<(), SyncError> {
    let cursor = serde_json::to_string(next).map_err(SyncError::BadCursor)?;
    db.transaction(|tx| {
        // A record this site changed and has not pushed yet keeps the local change: it goes to
        // the central server next, which decides (only a re-initialisation or a restore sends a
        // site its own records).
        let pushed = Seq(tx.state("pushed_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0));
        let pending = tx.count_changes_after(pushed, me)? > 0;
        for change in changes {
            if pending && tx.current(&change.table, change.id.as_str())?.and_then(|c| c.log_seq).is_some_and(|s| s > pushed) {
                tracing::debug!(table = %change.table, id = %change.id, "kept the local change waiting to be pushed over a received one");
                continue;
            }
            let refused = match tx.apply_received(change) {
                Ok(()) => continue,
                Err(e @ (StoreError::Refused { .. } | StoreError::Invalid { .. })) => e,
                Err(other) => return Err(other),
            };
            {
                let e = refused;
                tracing::warn!(table = %change.table, id = %change.id, error = %e, "a received change could not be applied; kept for review");
                tx.keep_rejection(&RejectionRecord {
                    from: format!("received:{}", change.origin),
                    seq: change.seq,
                    table: change.table.clone(),
                    id: change.id.to_string(),
                    action: change.action.code().to_owned(),
                    data: change.data.as_ref().map(|d| d.get().to_owned()),
                    reason: format!("could not apply on `{me}`: {e}"),
                    at: String::new(),
                })?;
            }
        }
        tx.set_state("pull_cursor", &cursor)
    })
    .map_err(store_err("applying a pulled batch"))
}

pub(crate) fn now_text() -> String {
    protocol::now_rfc3339()
}
