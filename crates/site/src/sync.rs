//! One sync of a site: push everything this site changed, then pull everything that concerns
//! it, in batches, each committed before the next position is remembered.

use crate::client::{ClientError, Exchange};
use crate::link::{Direction, Link};
use crate::status::SyncState;
use model::{Change, Seq, SiteId};
use protocol::{Cursor, PageFormat, PullRequest, PullResponse, PushRequest};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use store::{Db, RejectedFrom, RejectionRecord, StateKey, StoreError};

/// Push batches hold at most this many changes...
pub const PUSH_LIMIT: usize = 5_000;
/// ...and at most this many bytes of records (before compression). Within the bounds, a batch
/// is sized to take about [`crate::link::PUSH_SECS`] on the link as measured ([`Link::page_bytes`]).
pub const PUSH_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Pull pages ask for at most this many bytes of records (about 20,000 typical records), sized
/// to the link like push batches ([`crate::link::PULL_SECS`]).
pub const PULL_MAX_BYTES: usize = 6 * 1024 * 1024;
/// The first page each way, before anything is measured: about 10 KB on the wire, 8 s at
/// 9.6 kbit/s.
pub const FIRST_PAGE_BYTES: usize = 64 * 1024;
/// The smallest page each way (a page of one record is sent even if the record is larger).
pub const MIN_PAGE_BYTES: usize = 16 * 1024;

/// How many times one sync tries an exchange that the link broke, unless `OUTPOST_SYNC_ATTEMPTS`
/// says otherwise. Counting starts again each time something is delivered, so a sync rides
/// out any number of short cuts, and gives up after a minute or so of a dead link (the next
/// sync goes on from there).
pub const SYNC_ATTEMPTS: u32 = 8;
/// The environment variable that changes [`SYNC_ATTEMPTS`].
pub const ATTEMPTS_ENV: &str = "OUTPOST_SYNC_ATTEMPTS";
/// The waits between attempts, in seconds (the last one repeats).
const BACKOFF_SECS: [u64; 4] = [2, 4, 8, 15];

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
    Client { step: String, source: ClientError },
    #[error("{step}: {source}; gave up after {attempts} attempt(s) ({delivered}); the rest waits on this site for the next sync")]
    GaveUp { step: String, source: ClientError, attempts: u32, delivered: String },
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
    /// The sync began; nothing has been answered yet.
    Connecting,
    /// `pushed` of this sync's changes are delivered, `waiting` are still to go.
    Pushing { pushed: u64, waiting: u64 },
    /// `pulled` changes are applied, the central server holds about `remaining` more.
    Pulling { pulled: u64, remaining: u64 },
    /// The link failed (the reason is logged); attempt `attempt` of `of` starts in `in_secs`.
    Retrying { attempt: u32, of: u32, in_secs: u64 },
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
    /// Changes an earlier sync sent whose answer was lost: this sync learnt that they arrived,
    /// and did not send them again.
    pub confirmed: u64,
    pub rejected: u64,
    pub pulled: u64,
    /// Patients this site handed over to another home store (a move made on the central
    /// server): the hand-over is pushed, and the move's completion pulled, in the same sync.
    pub handed_over: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration: Duration,
}

fn store_err(step: &'static str) -> impl Fn(StoreError) -> SyncError {
    move |source| SyncError::Store { step, source: Box::new(source) }
}

/// Runs one sync: push first, then pull. Records the outcome (last sync, last error) in the
/// site's state either way.
pub fn sync_once(db: &Db, client: &impl Exchange, progress: &mut dyn Progress) -> Result<SyncReport, SyncError> {
    // Paused skips the schedule, not a sync a person asks for; disabled stops both.
    let state = crate::status::sync_state(db).map_err(store_err("reading the sync state"))?;
    if state == SyncState::Disabled {
        return Err(SyncError::NotActive(state));
    }
    let started = Instant::now();
    let link = client.link();
    let (sent0, received0) = (link.sent(), link.received());
    // Page sizes start from what the last sync measured, not from nothing.
    match db.state(LINK_RATES) {
        Ok(Some(rates)) => link.resume_from_state(&rates),
        Ok(None) => {}
        // Only the first pages are sized from nothing; the sync goes on.
        Err(e) => tracing::warn!(error = %e, "the link rates of the last sync could not be read"),
    }
    // A failure is reported where it is handled (`outpost site sync` prints it; `site serve`
    // logs it), not here as well.
    let result = push_then_pull(db, client, progress);
    if let Err(e) = record_outcome(db, link, &result) {
        // The sync's own outcome stands; only `site status` will be behind.
        tracing::warn!(error = %e, "the outcome of the sync could not be recorded for `site status`");
    }
    let mut report = result?;
    report.duration = started.elapsed();
    report.bytes_sent = link.sent() - sent0;
    report.bytes_received = link.received() - received0;
    Ok(report)
}

/// Notes in the site's state what `site status` shows of this sync, and the link rates it
/// measured, in one transaction.
fn record_outcome(db: &Db, link: &Link, result: &Result<SyncReport, SyncError>) -> Result<(), StoreError> {
    let now = now_text();
    db.transaction(|tx| {
        if let Some(rates) = link.to_state() {
            tx.set_state(LINK_RATES, &rates)?;
        }
        match result {
            Ok(_) => {
                tx.set_state(StateKey::LastSyncAt, &now)?;
                tx.set_state(StateKey::LastError, "")
            }
            Err(e) => tx.set_state(StateKey::LastError, &format!("{now}: {e}")),
        }
    })
}

/// The state key of the link rates measured by the last sync (see [`Link::to_state`]).
const LINK_RATES: StateKey = StateKey::LinkRates;

fn push_then_pull(db: &Db, client: &impl Exchange, progress: &mut dyn Progress) -> Result<SyncReport, SyncError> {
    let me = db.local_site().map_err(store_err("reading this site's id"))?;
    let mut report = SyncReport::default();
    show(progress, client, Step::Connecting);
    // What was waiting when the sync started is pushed; what people write meanwhile waits for
    // the next sync, so that a busy site still gets to its pull every time.
    let mut waiting_up_to = db.last_seq().map_err(store_err("reading the change log"))?;
    let mut retry = Retry::new();
    let mut sent = None;
    while let Err(e) = push(db, client, &me, progress, &mut report, &mut waiting_up_to, &mut sent) {
        retry.after(e, &report, client, progress)?;
    }
    let mut remaining = 0;
    pull_all(db, client, &me, progress, &mut report, &mut remaining, &mut retry)?;
    if report.handed_over > 0 {
        // The hand-over goes up now and the completed move comes back: the move is done when
        // this sync ends, not one sync later.
        waiting_up_to = db.last_seq().map_err(store_err("reading the change log"))?;
        while let Err(e) = push(db, client, &me, progress, &mut report, &mut waiting_up_to, &mut sent) {
            retry.after(e, &report, client, progress)?;
        }
        pull_all(db, client, &me, progress, &mut report, &mut remaining, &mut retry)?;
    }
    Ok(report)
}

/// Pulls until nothing remains, trying again after a broken exchange, and from a snapshot when
/// the central server's answer shows this site was restored from a backup.
fn pull_all(
    db: &Db,
    client: &impl Exchange,
    me: &SiteId,
    progress: &mut dyn Progress,
    report: &mut SyncReport,
    remaining: &mut u64,
    retry: &mut Retry,
) -> Result<(), SyncError> {
    loop {
        match pull(db, client, me, progress, report, remaining) {
            Ok(Pulled::Done) => return Ok(()),
            Ok(Pulled::Restored) => continue,
            Err(e) => retry.after(e, report, client, progress)?,
        }
    }
}

/// How a pull ended.
enum Pulled {
    Done,
    /// The central server holds more of this site's changes than it knew it had pushed: it was
    /// put back from a backup. Its position is realigned and the pull starts again from a
    /// snapshot, which brings back its own records written after the backup.
    Restored,
}

fn show(progress: &mut dyn Progress, client: &impl Exchange, step: Step) {
    progress.step(step, client.link().sent(), client.link().received());
}

/// Tries again when the link broke an exchange: a new connection, from what was committed.
#[derive(Debug)]
struct Retry {
    attempts: u32,
    failures: u32,
    /// Changes delivered either way when the last failure came.
    delivered: u64,
}

impl Retry {
    fn new() -> Retry {
        let attempts = std::env::var(ATTEMPTS_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(SYNC_ATTEMPTS);
        Retry { attempts: attempts.max(1), failures: 0, delivered: 0 }
    }

    /// Waits before the next attempt after `error`, or gives the error back when trying again
    /// cannot help or the link has failed too many times in a row.
    fn after(
        &mut self,
        error: SyncError,
        report: &SyncReport,
        client: &impl Exchange,
        progress: &mut dyn Progress,
    ) -> Result<(), SyncError> {
        let SyncError::Client { step, source } = error else { return Err(error) };
        if !source.is_transient() {
            return Err(SyncError::Client { step, source });
        }
        let delivered = report.pushed + report.pulled;
        if delivered > self.delivered {
            self.failures = 0;
            self.delivered = delivered;
        }
        self.failures += 1;
        let so_far = format!("{} pushed and {} pulled so far", report.pushed, report.pulled);
        if self.failures >= self.attempts {
            return Err(SyncError::GaveUp { step, source, attempts: self.failures, delivered: so_far });
        }
        if source.is_link() {
            client.link().slowed();
        }
        let wait = BACKOFF_SECS[(self.failures as usize - 1).min(BACKOFF_SECS.len() - 1)];
        tracing::warn!(
            "{step}: {source}; {so_far}; retrying in {wait} s (attempt {} of {})",
            self.failures + 1,
            self.attempts
        );
        show(progress, client, Step::Retrying { attempt: self.failures + 1, of: self.attempts, in_secs: wait });
        client.wait(Duration::from_secs(wait));
        Ok(())
    }
}

/// The position up to which the central server has acknowledged this site's changes.
pub fn pushed_up_to(db: &Db) -> Result<Seq, StoreError> {
    Ok(Seq(db.state(StateKey::PushedSeq)?.and_then(|v| v.parse().ok()).unwrap_or(0)))
}

/// How many times one sync follows an out-of-step answer before it gives up (each is one round
/// trip; two are enough for any honest history).
const MAX_REALIGNS: u32 = 3;

fn push(
    db: &Db,
    client: &impl Exchange,
    me: &SiteId,
    progress: &mut dyn Progress,
    report: &mut SyncReport,
    waiting_up_to: &mut Seq,
    sent: &mut Option<(Seq, Seq)>,
) -> Result<(), SyncError> {
    let mut realigned = 0;
    // A push of an earlier sync, or of an earlier attempt of this one, whose answer never came:
    // `AFTER:LAST:DIGEST` (the digest of what was sent; older sites noted no digest).
    let in_flight = db.state(IN_FLIGHT).map_err(store_err("reading the push in flight"))?.and_then(|text| {
        let mut parts = text.splitn(3, ':');
        let (after, last) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        Some(((Seq(after), Seq(last)), parts.next().map(str::to_owned)))
    });
    let mut unanswered = in_flight.as_ref().map(|(positions, _)| *positions);
    if let Some((positions, digest)) = in_flight {
        match took_lost_push(db, client, me, positions, digest.as_deref())? {
            LostPush::Held(delivered) => {
                // Pushed by this sync if an attempt of this one sent it; else confirmed now.
                if *sent == Some(positions) {
                    report.pushed += delivered;
                } else {
                    report.confirmed += delivered;
                }
                unanswered = None;
            }
            // The central server answered: what it holds is known, and a push answered out of
            // step below is not this one's lost answer.
            LostPush::NotHeld => unanswered = None,
            LostPush::Another => {
                // What the central server holds at those positions is not what this site
                // sent: it was restored from a backup, and its positions were used twice. The
                // push below is answered out of step, and realigned as a restore.
                db.set_state(IN_FLIGHT, "").map_err(store_err("clearing the push in flight"))?;
                unanswered = None;
            }
        }
    }
    let start = pushed_up_to(db).map_err(store_err("reading the push position"))?;
    let to_push = count_between(db, me, start, *waiting_up_to)?;
    let pushed_before = report.pushed;
    if to_push > 0 {
        show(progress, client, Step::Pushing { pushed: report.pushed, waiting: to_push });
    }
    let mut batch_bytes = None;
    loop {
        let acked = pushed_up_to(db).map_err(store_err("reading the push position"))?;
        let max_bytes =
            client.link().page_bytes(Direction::Up, batch_bytes, FIRST_PAGE_BYTES, MIN_PAGE_BYTES, PUSH_MAX_BYTES);
        batch_bytes = Some(max_bytes);
        let mut batch =
            db.changes_after(acked, me, PUSH_LIMIT, max_bytes).map_err(store_err("reading the change log"))?;
        batch.retain(|c| c.seq <= *waiting_up_to);
        let Some(last) = batch.last().map(|c| c.seq) else { return Ok(()) };
        let sending = batch.len();
        // Remembered until the answer is: an answer lost on the way back is then told apart
        // from a restore from a backup (see `realign`), and not sent again (`took_lost_push`).
        let digest = protocol::push_digest(batch.iter());
        db.set_state(IN_FLIGHT, &format!("{}:{}:{digest}", acked.0, last.0))
            .map_err(store_err("noting the push in flight"))?;
        *sent = Some((acked, last));
        let response = match client.push(&PushRequest { after: acked, changes: batch }) {
            Ok(response) => response,
            Err(source) => {
                if !source.may_have_arrived() {
                    // The central server cannot have applied a request it did not receive whole:
                    // nothing to ask about next time (if the note stays, the next sync asks).
                    if let Err(e) = db.set_state(IN_FLIGHT, "") {
                        tracing::debug!(error = %e, "the push in flight could not be cleared; the next attempt asks about it");
                    }
                    *sent = None;
                }
                let step = format!("pushing {sending} change(s) to the central server");
                return Err(SyncError::Client { step, source });
            }
        };
        if response.out_of_step {
            realigned += 1;
            if realigned > MAX_REALIGNS {
                return Err(SyncError::OutOfStep { ours: acked, theirs: response.acked });
            }
            realign(db, acked, response.acked, unanswered.take())?;
            // Renumbering moved what was waiting up the log.
            *waiting_up_to = db.last_seq().map_err(store_err("reading the change log"))?;
            continue;
        }
        db.transaction(|tx| {
            for rejection in &response.rejections {
                // What the person wrote is kept whole beside the reason; the record itself goes
                // back to what the central server holds, so nothing false is shown as true.
                let data = tx.current(&rejection.table, rejection.id.as_str())?.and_then(|c| c.data);
                let action = if data.is_some() { "upsert" } else { "delete" };
                tx.keep_rejection(&RejectionRecord {
                    from: RejectedFrom::Site(me.clone()),
                    seq: rejection.seq,
                    table: rejection.table.clone(),
                    id: rejection.id.clone(),
                    action: action.to_owned(),
                    data,
                    reason: rejection.reason.clone(),
                    at: String::new(),
                })?;
                // What is held on this site (local data; a dispensary's transactions while it
                // does not include them in sync) stays here whatever the central server said of
                // it: it was never the central server's to hold.
                let keys = tx.stored_keys(&rejection.table, rejection.id.as_str())?.unwrap_or_default();
                let change = model::ChangeRef { table: &rejection.table, op: &model::Op::Update, keys: &keys };
                let held = model::held_where_written(tx.registry(), tx.network(), &change).ok().flatten().is_some();
                if !held {
                    tx.undo_refused(
                        &rejection.table,
                        rejection.id.as_str(),
                        rejection.seq,
                        rejection.central_version.as_deref(),
                    )?;
                }
            }
            tx.set_state(IN_FLIGHT, "")?;
            tx.set_state(StateKey::PushedSeq, &response.acked.0.to_string())
        })
        .map_err(store_err("recording the push acknowledgement"))?;
        for rejection in &response.rejections {
            tracing::warn!(table = %rejection.table, id = %rejection.id, reason = %rejection.reason, "the central server rejected a change; the record is put back as the central server holds it, and the refused version is kept in `outpost site rejected`");
        }
        report.pushed += response.applied;
        report.rejected += response.rejections.len() as u64;
        let done = report.pushed + report.rejected - pushed_before;
        show(progress, client, Step::Pushing { pushed: report.pushed, waiting: to_push.saturating_sub(done) });
        if response.acked < last {
            // The server acknowledged less than we sent (a quarantine stops a batch midway):
            // the rest waits for the next sync rather than looping.
            return Ok(());
        }
    }
}

/// How many of this site's changes lie in `(after, up_to]`.
fn count_between(db: &Db, me: &SiteId, after: Seq, up_to: Seq) -> Result<u64, SyncError> {
    let count = |from| db.count_changes_after(from, me).map_err(store_err("counting the change log"));
    Ok(count(after)?.saturating_sub(count(up_to)?))
}

/// A push was sent and its answer never came (`in_flight` = its `after` and last position).
/// Before sending it again, the site asks the central server what it holds: when that batch
/// arrived whole and nothing in it was refused, the site moves on without sending a byte of it
/// again (at 20 kbit/s, a full batch again is most of a minute). Refusals travel only in the
/// answer, so a batch with refusals is sent again and answered again, reasons included.
/// `digest`: of the batch as it was sent ([`protocol::push_digest`]).
fn took_lost_push(
    db: &Db,
    client: &impl Exchange,
    me: &SiteId,
    (after, last): (Seq, Seq),
    digest: Option<&str>,
) -> Result<LostPush, SyncError> {
    if after != pushed_up_to(db).map_err(store_err("reading the push position"))? {
        return Ok(LostPush::NotHeld);
    }
    let status = client.status().map_err(|source| SyncError::Client {
        step: "pushing changes: asking the central server what arrived of the last push".to_owned(),
        source,
    })?;
    let Some(held) = status.last_push else { return Ok(LostPush::NotHeld) };
    let whole = held.after == after && held.acked == status.acked && held.acked > after && held.acked <= last;
    if !whole {
        return Ok(LostPush::NotHeld);
    }
    if let Some(theirs) = held.digest.as_deref() {
        // The batch as sent, or (when the server stopped part way) what the log holds up to
        // where it stopped; anything else at those positions is another batch.
        let ours = if held.acked == last && digest.is_some() {
            digest.map(str::to_owned)
        } else {
            let log =
                db.changes_after(after, me, PUSH_LIMIT, usize::MAX).map_err(store_err("reading the change log"))?;
            Some(protocol::push_digest(log.iter().take_while(|c| c.seq <= held.acked)))
        };
        if ours.as_deref() != Some(theirs) {
            return Ok(LostPush::Another);
        }
    }
    if held.rejected > 0 {
        return Ok(LostPush::NotHeld);
    }
    let delivered = count_between(db, me, after, held.acked)?;
    db.transaction(|tx| {
        tx.set_state(IN_FLIGHT, "")?;
        tx.set_state(StateKey::PushedSeq, &held.acked.0.to_string())
    })
    .map_err(store_err("recording the push acknowledgement"))?;
    tracing::info!(delivered, acked = %held.acked, "the answer to the last push was lost on its way back; the central server holds its changes, so they are not sent again");
    Ok(LostPush::Held(delivered))
}

/// What the central server holds of a push whose answer never came.
enum LostPush {
    /// The batch, whole: this many changes.
    Held(u64),
    /// Not the batch (or not whole, or with refusals only its answer carries): send it again.
    NotHeld,
    /// Another batch at the same positions: this site was restored from a backup.
    Another,
}

/// The state key of the push sent and not answered yet: `AFTER:LAST`.
const IN_FLIGHT: StateKey = StateKey::PushInFlight;

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
                tx.set_state(StateKey::PullCursor, "")?;
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
            tx.set_state(StateKey::PushedSeq, &theirs.0.to_string())?;
            if let Some(notice) = &notice {
                tx.set_state(StateKey::LastNotice, notice)?;
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
    match db.state(StateKey::PullCursor).map_err(store_err("reading the pull position"))? {
        Some(text) if !text.is_empty() => serde_json::from_str(&text).map(Some).map_err(SyncError::BadCursor),
        _ => Ok(None),
    }
}

/// Pulls until nothing remains. Fetching the next batch overlaps applying this one: a fetcher
/// thread asks for batch n+1 (its position is known from batch n's answer) while batch n is
/// committed here. The stored position moves only with a committed batch.
fn pull(
    db: &Db,
    client: &impl Exchange,
    me: &SiteId,
    progress: &mut dyn Progress,
    report: &mut SyncReport,
    remaining: &mut u64,
) -> Result<Pulled, SyncError> {
    let start = load_cursor(db)?;
    let pushed = pushed_up_to(db).map_err(store_err("reading the push position"))?;
    let waiting_to_push = Some(db.count_changes_after(pushed, me).map_err(store_err("counting the changes to push"))?);
    // The central server holds more of this site's changes than it pushed: it was restored.
    let restored = move |batch: &PullResponse| batch.acked.is_some_and(|theirs| theirs > pushed);
    show(progress, client, Step::Pulling { pulled: report.pulled, remaining: *remaining });
    let (sender, receiver) = mpsc::sync_channel::<(Option<Cursor>, Result<PullResponse, ClientError>)>(2);
    let fetcher_client = client.clone();
    let link: &Link = client.link();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut cursor = start;
            let mut waited = 0;
            let mut page = None;
            loop {
                // Each page sized to take about `link::PULL_SECS` at the rate measured so far:
                // small on a slow link (a cut costs little), large on a fast one.
                let max_bytes =
                    link.page_bytes(Direction::Down, page, FIRST_PAGE_BYTES, MIN_PAGE_BYTES, PULL_MAX_BYTES);
                page = Some(max_bytes);
                let asked = cursor.clone();
                let answer = fetcher_client.pull(&PullRequest {
                    cursor: cursor.clone(),
                    max_bytes,
                    waiting_to_push,
                    format: PageFormat::Columns,
                });
                let done = match &answer {
                    Ok(batch) => {
                        let in_log = matches!(batch.next, Cursor::Log { .. });
                        let nothing_new = batch.changes.is_empty() && in_log && Some(&batch.next) == cursor.as_ref();
                        cursor = Some(batch.next.clone());
                        if restored(batch) {
                            // Nothing more: the pull starts again from a snapshot.
                            true
                        } else if nothing_new && batch.remaining > 0 && waited < MAX_WAITS {
                            // Changes exist that a transaction still running on the central
                            // server must be ordered before: ask again in a moment.
                            waited += 1;
                            fetcher_client.wait(WAIT);
                            continue;
                        } else {
                            nothing_new || (batch.remaining == 0 && in_log)
                        }
                    }
                    Err(_) => true,
                };
                if sender.send((asked, answer)).is_err() || done {
                    return;
                }
            }
        });
        for (asked, answer) in receiver {
            let batch = match answer {
                Ok(batch) => batch,
                Err(source) => {
                    keep_cut_page(db, me, asked, &source, report)?;
                    let step = format!("pulling changes from the central server ({} received so far)", report.pulled);
                    return Err(SyncError::Client { step, source });
                }
            };
            if let Some(theirs) = batch.acked.filter(|_| restored(&batch)) {
                // Nothing of this answer is applied: the pull starts again from a snapshot.
                realign(db, pushed, theirs, None)?;
                return Ok(Pulled::Restored);
            }
            report.handed_over += apply_batch(db, me, &batch.changes, &batch.next)?;
            report.pulled += batch.changes.len() as u64;
            *remaining = batch.remaining;
            show(progress, client, Step::Pulling { pulled: report.pulled, remaining: batch.remaining });
        }
        Ok(Pulled::Done)
    })
}

/// A pull page cut part way still holds the changes that arrived whole: they are applied, with
/// the position after the last of them, so that trying again asks only for the rest. Only
/// where a change's own position is a position to continue from: in a snapshot (records in
/// (table, id) order) and in a log ordered by sequence alone (a PostgreSQL central server
/// orders its log by transaction first, which a change does not carry).
fn keep_cut_page(
    db: &Db,
    me: &SiteId,
    asked: Option<Cursor>,
    error: &ClientError,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let ClientError::Interrupted(interrupted) = error else { return Ok(()) };
    let changes = protocol::changes_of_cut_pull(&interrupted.partial);
    let Some(last) = changes.last() else { return Ok(()) };
    let next = match asked {
        None => return Ok(()),
        Some(Cursor::Snapshot { log_from, log_from_xid, scanned, total, .. }) => Cursor::Snapshot {
            after: Some((last.table.clone(), last.id.to_string())),
            log_from,
            log_from_xid,
            scanned: (scanned + changes.len() as u64).min(total),
            total,
        },
        Some(Cursor::Log { after_xid: 0, after }) if last.seq > after => Cursor::Log { after: last.seq, after_xid: 0 },
        Some(Cursor::Log { .. }) => return Ok(()),
    };
    report.handed_over += apply_batch(db, me, &changes, &next)?;
    report.pulled += changes.len() as u64;
    tracing::info!(
        kept = changes.len(),
        "a pull page was cut; the changes that arrived whole are applied, and the next attempt asks for the rest"
    );
    Ok(())
}

/// Commits one pulled batch and the position after it, in one transaction. A change that
/// cannot be applied here (a table this version does not know, a malformed record) is kept
/// with its reason, visible in `outpost site rejected`, instead of stalling every later sync.
pub(crate) fn apply_batch(db: &Db, me: &SiteId, changes: &[Change], next: &Cursor) -> Result<u64, SyncError> {
    let cursor = serde_json::to_string(next).map_err(SyncError::BadCursor)?;
    db.transaction(|tx| apply_in(tx, me, changes, &cursor)).map_err(store_err("applying a pulled batch"))
}

/// [`apply_batch`] in the caller's transaction (a seed file's import applies every page in
/// one); `cursor`: the position after the batch, as stored.
pub(crate) fn apply_in(
    tx: &mut store::Tx<'_>,
    me: &SiteId,
    changes: &[Change],
    cursor: &str,
) -> Result<u64, StoreError> {
    // A record this site changed and has not pushed yet keeps the local change: it goes to
    // the central server next, which decides (only a re-initialisation or a restore sends a
    // site its own records).
    let pushed = Seq(tx.state(StateKey::PushedSeq)?.and_then(|v| v.parse().ok()).unwrap_or(0));
    let pending = tx.count_changes_after(pushed, me)? > 0;
    let mut applying = Vec::with_capacity(changes.len());
    for change in changes {
        if pending && tx.current(&change.table, change.id.as_str())?.and_then(|c| c.log_seq).is_some_and(|s| s > pushed)
        {
            tracing::debug!(table = %change.table, id = %change.id, "kept the local change waiting to be pushed over a received one");
            continue;
        }
        applying.push(change);
    }
    let results = tx.apply_received_all(&applying)?;
    for (change, result) in applying.iter().zip(results) {
        let Err(e) = result else { continue };
        tracing::warn!(table = %change.table, id = %change.id, error = %e, "a received change could not be applied; kept for review");
        tx.keep_rejection(&RejectionRecord {
            from: RejectedFrom::Received(change.origin.clone()),
            seq: change.seq,
            table: change.table.clone(),
            id: change.id.clone(),
            action: change.action.code().to_owned(),
            data: change.data.as_ref().map(|d| d.get().to_owned()),
            reason: format!("could not apply on `{me}`: {e}"),
            at: String::new(),
        })?;
    }
    let handed_over = hand_over(tx, me, changes)?;
    let mut checked = |tx: &mut store::Tx<'_>, writes: &[store::Write]| tx.write_all_checked(writes, me);
    for change in changes.iter().filter(|c| c.data.is_some()) {
        let doc = change.data.as_ref().map(|d| d.get());
        store::transfers::respond(tx, me, &change.origin, &change.table, &change.id, doc, &mut checked)?;
    }
    tx.set_state(StateKey::PullCursor, cursor)?;
    Ok(handed_over)
}

/// What the central server asks this site to hand over, in a received batch: a patient whose
/// home store is active here and is moving (`patient_move`), a store active here that is moving
/// to another site (`store_move`), or the primary's role (`primary_move`). The hand-over is this
/// site's own change, logged after everything it wrote before, so the central server applies
/// that first and then completes the move; what was handed over is read-only here from now on.
/// Returns how many were handed over.
fn hand_over(tx: &mut store::Tx<'_>, me: &SiteId, changes: &[Change]) -> Result<u64, StoreError> {
    let mut handed_over = 0;
    for change in changes.iter().filter(|c| matches!(c.table.as_str(), "patient_move" | "store_move" | "primary_move"))
    {
        let network = tx.network();
        let pending = model::MoveStatus::Pending;
        let ours = match change.table.as_str() {
            "patient_move" => network.moves.values().any(|m| {
                m.id == change.id && m.status == pending && network.active_site(&m.from).is_some_and(|site| site == me)
            }),
            "store_move" => {
                let store = model::StoreId::from(change.id.as_str());
                network.store_moves.get(&store).is_some_and(|m| m.status == pending && m.from == *me)
                    && network.active_site(&store) == Some(me)
            }
            _ => network.primary_move.as_ref().is_some_and(|m| m.status == pending && m.from == *me),
        };
        let stored = if ours { tx.current(&change.table, change.id.as_str())?.and_then(|c| c.data) } else { None };
        let Some(mut doc) = stored.and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok()) else {
            continue;
        };
        if let Some(fields) = doc.as_object_mut() {
            fields.insert("status".into(), serde_json::json!(model::MoveStatus::HandedOver.as_str()));
        }
        tx.write_checked(&store::Write::upsert(&change.table, change.id.as_str(), &doc), me)?;
        tracing::info!(table = %change.table, id = %change.id, "handed over; it is read-only here from now on");
        handed_over += 1;
    }
    Ok(handed_over)
}

pub(crate) fn now_text() -> String {
    protocol::now_rfc3339()
}
