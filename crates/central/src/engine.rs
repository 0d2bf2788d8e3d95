//! Push, route and pull on the central server.

use crate::{backfill, processors};
use model::limits::{self, shown};
use model::{
    check_write, recipients, Action, Audience, Change, ChangeRef, LogPos, Network, Op, RecordId, RecordKeys, Seq,
    SiteId,
};
use protocol::{Cursor, OutgoingChange, PageFormat, PullResponse, PushResponse, Rejection};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::history::{Debt, DebtSample};
use store::{
    Db, Incoming, PullSource, PushedBatch, RejectedFrom, RejectionRecord, RoutedBy, StoreError, Tx, Write, Written,
};

/// What can go wrong while syncing, beyond a single rejected change (which is not an error).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the batch is not in order: change {seq} comes after {previous}")]
    OutOfOrder { seq: Seq, previous: Seq },
    #[error("the batch has {0} changes; the most a batch may carry is {max}", max = protocol::MAX_PUSH_CHANGES)]
    TooManyChanges(usize),
    #[error("change {seq} is at an impossible position: {why}")]
    BadPosition { seq: Seq, why: &'static str },
    #[error("the batch says it follows position {0}, which no site's log can hold (0 to {max})", max = protocol::MAX_SEQ)]
    BadAfter(Seq),
    #[error("site `{site}` is quarantined: {open} of its changes were refused and wait for an administrator (the most is {max}); its changes wait safely on the site. On the central server: `outpost central site rejected {site}`, then `--clear`")]
    Quarantined { site: SiteId, open: u64, max: u64 },
    #[error("the pull position is not one this central server handed out: {0}; `outpost site reset-cursor` on the site starts the pull again")]
    BadCursor(String),
}

/// A site whose refused changes, not yet looked at by an administrator, reach this many is
/// quarantined: its pushes are refused until somebody looks. A misbehaving site cannot fill the
/// central server's disk with rejections, and an honest one with a bug is noticed.
pub const MAX_OPEN_REJECTIONS: u64 = 1_000;

/// The central server's sync engine, over its database.
#[derive(Debug, Clone)]
pub struct Engine {
    db: Arc<Db>,
    /// When each site's pull was last noted in the database (see [`Engine::mark_pulled`]).
    pulls_noted: Arc<Mutex<HashMap<SiteId, Instant>>>,
}

/// How often a site's pull is noted while its pages keep coming.
const NOTE_PULLS_EVERY: Duration = Duration::from_secs(60);

impl Engine {
    pub fn new(db: Arc<Db>) -> Engine {
        Engine { db, pulls_noted: Arc::default() }
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// This server's own site id.
    pub fn central(&self) -> Result<SiteId, EngineError> {
        Ok(self.db.local_site()?)
    }

    /// Writes made on the central server itself (administration, central data when it is the
    /// primary): through the one checked write, then routed like a pushed change.
    pub fn write(&self, writes: &[Write]) -> Result<Vec<Seq>, EngineError> {
        let me = self.central()?;
        Ok(self.db.transaction(|tx| {
            tx.prefetch_all(writes.iter().map(|w| (w.table.as_str(), w.id.as_str())))?;
            let before = shapes_stores(writes).then(|| tx.network().dispensary_sites());
            let mut routed = |tx: &mut Tx<'_>, writes: &[Write]| write_all_routed(tx, writes, &me);
            let seqs = store::transfers::write_here(tx, &me, writes, &mut routed);
            if let Some(before) = before {
                backfill::dispensary_data_for_new_sites(tx, &before)?;
            }
            seqs
        })?)
    }

    /// [`Engine::write`], then, in the same transaction, sends each site that came to see records
    /// routed by `key` (it became a collector of the store, its transfer site or its active
    /// site; the name became visible in a store it holds) their current state: see
    /// [`crate::backfill`]. Returns how many records are sent.
    pub fn write_and_backfill(&self, writes: &[Write], key: RoutedBy<'_>) -> Result<usize, EngineError> {
        let me = self.central()?;
        Ok(self.db.transaction(|tx| {
            let before = backfill::reach(tx, key)?;
            let dispensaries = tx.network().dispensary_sites();
            tx.prefetch_all(writes.iter().map(|w| (w.table.as_str(), w.id.as_str())))?;
            for write in writes {
                write_routed(tx, write, &me)?;
            }
            backfill::dispensary_data_for_new_sites(tx, &dispensaries)?;
            backfill::send_newly_visible(tx, key, &before)
        })?)
    }

    /// Applies one pushed batch from `site` in one transaction, each change through the one
    /// checked write with the pushing site as the writer. A change the site had no authority
    /// for is kept as a rejection and the rest goes in. A batch that does not follow what this
    /// server acknowledged (`after`) applies nothing and says so: a change at or below an
    /// acknowledged position is never taken for one already held.
    pub fn push(&self, site: &SiteId, after: Seq, changes: &[Change]) -> Result<PushResponse, EngineError> {
        if changes.len() > protocol::MAX_PUSH_CHANGES {
            return Err(EngineError::TooManyChanges(changes.len()));
        }
        check_positions(after, changes)?;
        let outcome = self.db.transaction(|tx| {
            let acked = tx.acked(site)?;
            if after != acked {
                if let Some(last) = tx.last_push(site)?.filter(|last| is_resend(last, after, changes)) {
                    // The answer to this very batch was lost on its way back: answer it again.
                    let rejections = tx
                        .rejections_between(site, Seq(after.0 + 1), last.acked)?
                        .into_iter()
                        .map(|r| {
                            let central_version = version_for(tx, site, &r.table, r.id.as_str())?;
                            Ok(Rejection { seq: r.seq, table: r.table, id: r.id, reason: r.reason, central_version })
                        })
                        .collect::<Result<_, StoreError>>()?;
                    return Ok(Ok(PushResponse { acked, applied: 0, rejections, out_of_step: false }));
                }
                tracing::warn!(site = %site, after = %after, acked = %acked, "a push does not follow the acknowledged position; nothing applied");
                return Ok(Ok(PushResponse { acked, applied: 0, rejections: Vec::new(), out_of_step: true }));
            }
            let mut open = tx.count_open_rejections(site)?;
            if open >= MAX_OPEN_REJECTIONS {
                return Ok(Err(EngineError::Quarantined { site: site.clone(), open, max: MAX_OPEN_REJECTIONS }));
            }
            let (mut acked, mut applied) = (acked, 0);
            let mut rejections = Vec::new();
            tx.prefetch_all(changes.iter().map(|c| (c.table.as_str(), c.id.as_str())))?;
            for change in changes {
                if open >= MAX_OPEN_REJECTIONS {
                    // The rest waits on the site; the next push is refused until somebody looks.
                    break;
                }
                match apply_pushed(tx, site, change)? {
                    Ok(()) => applied += 1,
                    Err(reason) => {
                        rejections.push(reject(tx, site, change, reason)?);
                        open += 1;
                    }
                }
                acked = change.seq;
            }
            let processed = changes.iter().take_while(|c| c.seq <= acked);
            tx.record_push(site, &PushedBatch { from: after, acked, digest: digest(processed) })?;
            Ok(Ok(PushResponse { acked, applied, rejections, out_of_step: false }))
        })?;
        outcome
    }

    /// Notes that a site pulled (for the dashboard's "last synced"): on its last page
    /// (`caught_up`), and at most once a minute while pages keep coming. Not on every page: each
    /// write makes every read connection drop its cache, and an initialisation reads the whole
    /// database in pages. `reached`: the log position the site has been sent up to; `waiting_to_push`: what the
    /// site says it still has to push.
    pub fn mark_pulled(
        &self,
        site: &SiteId,
        caught_up: bool,
        reached: Option<LogPos>,
        waiting_to_push: Option<u64>,
    ) -> Result<(), EngineError> {
        let now = Instant::now();
        {
            let mut noted = self.pulls_noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let recent = noted.get(site).is_some_and(|at| now.duration_since(*at) < NOTE_PULLS_EVERY);
            if recent && !caught_up {
                return Ok(());
            }
            noted.insert(site.clone(), now);
        }
        Ok(self.db.mark_pulled(site, reached, waiting_to_push)?)
    }

    /// The acknowledged push position of a site.
    pub fn acked(&self, site: &SiteId) -> Result<Seq, EngineError> {
        Ok(self.db.acked_now(site)?)
    }

    /// The last push batch applied from `site`, if it is still the acknowledged position: a
    /// site whose answer was lost on the way back learns from it that it need not send the
    /// batch again (unless changes were refused, whose reasons only the answer carries).
    pub fn last_push(&self, site: &SiteId) -> Result<Option<protocol::LastPush>, EngineError> {
        Ok(self.db.transaction(|tx| {
            let Some(last) = tx.last_push(site)?.filter(|last| last.acked > last.from) else { return Ok(None) };
            if tx.acked(site)? != last.acked {
                return Ok(None);
            }
            let rejected = tx.rejections_between(site, Seq(last.from.0 + 1), last.acked)?.len() as u64;
            Ok(Some(protocol::LastPush { after: last.from, acked: last.acked, rejected, digest: Some(last.digest) }))
        })?)
    }

    /// A site's pull request served: the next page, and the note that the site pulled. What the
    /// HTTP handler answers with, and what the simulator's sites are answered with.
    pub fn serve_pull(&self, site: &SiteId, request: protocol::PullRequest) -> Result<PullPage, EngineError> {
        let max_bytes = request.max_bytes.clamp(1024, protocol::MAX_DECODED_BYTES / 2);
        let acked = self.acked(site)?;
        let page =
            PullPage { acked: Some(acked), format: request.format, ..self.pull_page(site, request.cursor, max_bytes)? };
        // How far the site has been sent the log (not while it initialises from a snapshot).
        let reached = match page.next {
            Cursor::Log { after, after_xid } => Some(LogPos::new(after_xid, after)),
            _ => None,
        };
        self.mark_pulled(site, page.remaining == 0, reached, request.waiting_to_push)?;
        Ok(page)
    }

    /// What a site asks before it syncs: who this server is, and how far it holds the site's
    /// changes (with the last push batch, for an answer lost on its way back).
    pub fn serve_status(&self, site: &SiteId) -> Result<protocol::StatusResponse, EngineError> {
        Ok(protocol::StatusResponse {
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: protocol::PROTOCOL_VERSION,
            central: self.central()?,
            acked: self.acked(site)?,
            last_push: self.last_push(site)?,
            site: site.clone(),
            clock: protocol::now_rfc3339(),
        })
    }

    /// The next pull batch for `site` after `cursor`, as wire types.
    pub fn pull(&self, site: &SiteId, cursor: Option<Cursor>, max_bytes: usize) -> Result<PullResponse, EngineError> {
        Ok(self.pull_page(site, cursor, max_bytes)?.into_response())
    }

    /// The next pull batch for `site` after `cursor`, with records as stored (the server
    /// encodes it without parsing them again).
    pub fn pull_page(&self, site: &SiteId, cursor: Option<Cursor>, max_bytes: usize) -> Result<PullPage, EngineError> {
        let cursor = match cursor {
            Some(cursor) => self.checked(cursor)?,
            None => {
                let log_from = self.db.log_position()?;
                Cursor::Snapshot {
                    after: None,
                    log_from: log_from.seq,
                    log_from_xid: log_from.xid,
                    scanned: 0,
                    total: self.db.count_records_after(None)?,
                }
            }
        };
        match cursor {
            Cursor::Snapshot { after, log_from, log_from_xid, scanned, total } => {
                self.snapshot_page(site, after, LogPos::new(log_from_xid, log_from), (scanned, total), max_bytes)
            }
            Cursor::Log { after, after_xid } => self.log_page(site, LogPos::new(after_xid, after), max_bytes),
        }
    }

    /// A cursor from a site is only ever one this server handed out: never negative, never
    /// past the end of its log (a replay from the start, or a position echoed back for ever,
    /// would hide what the site is missing).
    fn checked(&self, cursor: Cursor) -> Result<Cursor, EngineError> {
        let (pos, what) = match &cursor {
            Cursor::Snapshot { log_from, log_from_xid, scanned, total, .. } => {
                if scanned > total {
                    return Err(EngineError::BadCursor(format!("it has scanned {scanned} of {total} records")));
                }
                (LogPos::new(*log_from_xid, *log_from), "the snapshot's log position")
            }
            Cursor::Log { after, after_xid } => (LogPos::new(*after_xid, *after), "the log position"),
        };
        if pos.seq.0 < 0 || pos.xid < 0 {
            return Err(EngineError::BadCursor(format!("{what} is negative")));
        }
        let end = self.db.log_position()?;
        if pos > end {
            return Err(EngineError::BadCursor(format!(
                "{what} ({}) is past the end of this server's log ({})",
                pos.seq, end.seq
            )));
        }
        Ok(cursor)
    }

    /// Initialisation: the current state of what `site` may hold, in (table, id) order.
    fn snapshot_page(
        &self,
        site: &SiteId,
        after: Option<(String, String)>,
        log_from: LogPos,
        (mut scanned, total): (u64, u64),
        max_bytes: usize,
    ) -> Result<PullPage, EngineError> {
        const SCAN: usize = 5_000;
        let network = self.db.network();
        let central = self.central()?;
        let mut holds = HoldCache::default();
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut key = after;
        loop {
            let rows = self.db.snapshot_after(key.as_ref().map(|(t, i)| (t.as_str(), i.as_str())), SCAN)?;
            let exhausted = rows.len() < SCAN;
            let mut last = None;
            for row in rows {
                scanned += 1;
                if !holds.may_hold(&network, site, &row.table, &row.keys) {
                    last = Some((row.table, row.id.0));
                    continue;
                }
                bytes += row.data.len() + 64;
                last = Some((row.table.clone(), row.id.0.clone()));
                changes.push(OutgoingChange {
                    seq: Seq(0),
                    table: row.table,
                    id: row.id,
                    action: Action::Upsert,
                    data: Some(row.data),
                    origin: central.clone(),
                });
                if bytes >= max_bytes {
                    break;
                }
            }
            if last.is_some() {
                key = last;
            }
            if bytes >= max_bytes {
                // An estimate: records written since the snapshot began are counted by the log.
                let remaining = total.saturating_sub(scanned);
                return Ok(PullPage {
                    changes,
                    next: Cursor::Snapshot {
                        after: key,
                        log_from: log_from.seq,
                        log_from_xid: log_from.xid,
                        scanned,
                        total,
                    },
                    remaining,
                    acked: None,
                    format: PageFormat::Rows,
                });
            }
            if exhausted {
                let remaining = self.count_log(site, log_from)?;
                return Ok(PullPage {
                    changes,
                    next: Cursor::log(log_from),
                    remaining,
                    acked: None,
                    format: PageFormat::Rows,
                });
            }
        }
    }

    fn sources(&self, network: &Network, site: &SiteId) -> Vec<PullSource> {
        let mut sources = vec![PullSource::Bucket("all"), PullSource::Outbox];
        if network.dispensary_sites().contains(site) {
            sources.push(PullSource::Bucket("dispensary"));
        }
        if !network.is_central(site) {
            sources.push(PullSource::Bucket("remote"));
        }
        sources
    }

    /// Steady state: the merge, in log order, of the site's buckets and its outbox.
    fn log_page(&self, site: &SiteId, after: LogPos, max_bytes: usize) -> Result<PullPage, EngineError> {
        const LIMIT: usize = 20_000;
        let network = self.db.network();
        // Each source is read by a query of its own, and on PostgreSQL each serves what the
        // transactions older than the oldest one running *at that query* wrote: a later query may
        // serve positions that an earlier one held back, and the cursor would then move past
        // them for good. The page stops at the log position read before them all.
        let horizon = self.db.log_position()?;
        let mut merged = Vec::new();
        for source in self.sources(&network, site) {
            merged.extend(self.db.pull_from(&source, site, after, LIMIT)?);
        }
        merged.retain(|(_, pos, _)| *pos <= horizon);
        merged.sort_by_key(|(_, pos, _)| *pos);
        merged.dedup_by_key(|(_, pos, _)| *pos);
        // Every source returned its first LIMIT changes, so the first LIMIT of the merge are
        // complete: nothing below the last one taken is missing.
        let mut changes = Vec::new();
        let mut next = after;
        let mut bytes = 0;
        for (change, pos, size) in merged.into_iter().take(LIMIT) {
            if !changes.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            next = pos;
            changes.push(OutgoingChange {
                seq: change.seq,
                table: change.table,
                id: change.id,
                action: change.action,
                data: change.data.map(|d| d.get().to_owned()),
                origin: change.origin,
            });
        }
        let remaining = self.count_log(site, next)?;
        Ok(PullPage { changes, next: Cursor::log(next), remaining, acked: None, format: PageFormat::Rows })
    }

    /// How many changes wait for `site` after log position `after`.
    pub fn owed(&self, site: &SiteId, after: LogPos) -> Result<u64, EngineError> {
        self.count_log(site, after)
    }

    /// What waits for `site` after log position `after`: changes, their size, the first of them.
    pub fn debt(&self, site: &SiteId, after: LogPos) -> Result<Debt, EngineError> {
        let network = self.db.network();
        let mut total = Debt::default();
        for source in self.sources(&network, site) {
            total = total.and(self.db.debt(&source, site, after)?);
        }
        Ok(total)
    }

    /// Takes a sample of every site's sync debt at `at` (Unix seconds), for the dashboard's
    /// trend; a site that has not pulled yet has no known debt and no sample. Returns how many
    /// were taken.
    pub fn sample_debts(&self, at: i64) -> Result<usize, EngineError> {
        let log_seq = self.db.last_seq()?;
        let mut taken = 0;
        for row in self.db.site_sync_rows()? {
            let Some(after) = row.pulled_to else { continue };
            let site = SiteId::from(row.site.as_str());
            let debt = self.debt(&site, after)?;
            self.db.add_debt_sample(&DebtSample {
                site: row.site,
                at,
                owed: debt.changes,
                owed_bytes: debt.bytes,
                log_seq,
            })?;
            taken += 1;
        }
        Ok(taken)
    }

    fn count_log(&self, site: &SiteId, after: LogPos) -> Result<u64, EngineError> {
        let network = self.db.network();
        let mut total = 0;
        for source in self.sources(&network, site) {
            total += self.db.count_pull(&source, site, after)?;
        }
        Ok(total)
    }
}

/// One pull batch as read from the database.
#[derive(Debug)]
pub struct PullPage {
    pub changes: Vec<OutgoingChange>,
    pub next: Cursor,
    pub remaining: u64,
    /// The last change of the site the server holds (what [`Engine::serve_pull`] answers with).
    pub acked: Option<Seq>,
    /// How [`PullPage::encode`] writes it: what the site asked for.
    pub format: PageFormat,
}

impl PullPage {
    /// The compressed body of the answer.
    pub fn encode(&self) -> Vec<u8> {
        protocol::encode_pull_response(&self.changes, &self.next, self.remaining, self.acked, self.format)
    }

    /// The answer's JSON, column by column and not compressed (as a seed file holds it).
    pub fn json(&self) -> Vec<u8> {
        protocol::columns::file_page_json(&self.changes, &self.next, self.remaining, self.acked)
    }

    /// The answer as wire types (each record checked to be JSON).
    pub fn into_response(self) -> PullResponse {
        let changes = self
            .changes
            .into_iter()
            .map(|c| Change {
                seq: c.seq,
                table: c.table,
                id: c.id,
                action: c.action,
                data: c.data.and_then(|d| RawValue::from_string(d).ok()),
                origin: c.origin,
            })
            .collect();
        PullResponse { changes, next: self.next, remaining: self.remaining, acked: self.acked }
    }
}

/// Which records a site may hold, memoised by the keys that decide it.
#[derive(Default)]
struct HoldCache {
    /// Records with no routing keys (central data): decided per table.
    by_table: HashMap<String, bool>,
    decided: HashMap<(String, RecordKeys), bool>,
}

impl HoldCache {
    fn may_hold(&mut self, network: &Network, site: &SiteId, table: &str, keys: &RecordKeys) -> bool {
        if let Some(known) = self.by_table.get(table).filter(|_| *keys == RecordKeys::default()) {
            return *known;
        }
        if *keys == RecordKeys::default() {
            let change = ChangeRef { table, op: &Op::Update, keys };
            let holds = recipients(model::registry(), network, &change).is_ok_and(|a| a.includes(network, site));
            self.by_table.insert(table.to_owned(), holds);
            return holds;
        }
        let key = (table.to_owned(), keys.clone());
        if let Some(known) = self.decided.get(&key) {
            return *known;
        }
        let change = ChangeRef { table, op: &Op::Update, keys };
        let holds = recipients(model::registry(), network, &change).is_ok_and(|a| a.includes(network, site));
        self.decided.insert(key, holds);
        holds
    }
}

/// The positions of a pushed batch must be ones the site could have written: above what it says
/// was acknowledged, strictly increasing, and within [`protocol::MAX_SEQ`].
fn check_positions(after: Seq, changes: &[Change]) -> Result<(), EngineError> {
    if after.0 < 0 || after.0 > protocol::MAX_SEQ {
        return Err(EngineError::BadAfter(after));
    }
    let mut previous = after;
    for change in changes {
        if change.seq.0 > protocol::MAX_SEQ {
            return Err(EngineError::BadPosition {
                seq: change.seq,
                why: "beyond any position a site's log can reach",
            });
        }
        if change.seq <= previous {
            if previous == after {
                return Err(EngineError::BadPosition {
                    seq: change.seq,
                    why: "at or below the position the batch says is acknowledged",
                });
            }
            return Err(EngineError::OutOfOrder { seq: change.seq, previous });
        }
        previous = change.seq;
    }
    Ok(())
}

/// Whether a batch is the last one applied, sent again: it follows the same position, and its
/// changes up to what that batch reached are the same ones. A restored site's new changes at
/// the same positions differ, and are never taken for it.
fn is_resend(last: &PushedBatch, after: Seq, changes: &[Change]) -> bool {
    last.from == after && digest(changes.iter().take_while(|c| c.seq <= last.acked)) == last.digest
}

fn digest<'a>(changes: impl Iterator<Item = &'a Change>) -> String {
    protocol::push_digest(changes)
}

/// Whether writes may change where stores are active or which are dispensaries.
fn shapes_stores(writes: &[Write]) -> bool {
    writes.iter().any(|w| w.table == "store" || w.table == "store_sync")
}

/// One of the central server's own writes, through the one checked write, routed.
pub(crate) fn write_routed(tx: &mut Tx<'_>, write: &Write, me: &SiteId) -> Result<Written, StoreError> {
    let written = tx.write_as(write.incoming(), me)?;
    route(tx, written.seq, &written.audience, me)?;
    Ok(written)
}

/// The central server's own writes made together (a transfer's half), through the one checked
/// write, the new records inserted together, each routed; their log positions.
pub(crate) fn write_all_routed(tx: &mut Tx<'_>, writes: &[Write], me: &SiteId) -> Result<Vec<Seq>, StoreError> {
    let incoming: Vec<store::Incoming<'_>> = writes.iter().map(Write::incoming).collect();
    let written = tx.write_all_as(&incoming, me)?;
    let routes: Vec<(Seq, &Audience)> = written.iter().map(|w| (w.seq, &w.audience)).collect();
    route_all(tx, &routes, me)?;
    Ok(written.iter().map(|w| w.seq).collect())
}

/// Applies one pushed change through the one checked write, and routes it; `Ok(Err(reason))`
/// when it is refused (kept, not an error).
fn apply_pushed(tx: &mut Tx<'_>, site: &SiteId, change: &Change) -> Result<Result<(), String>, StoreError> {
    if change.origin != *site {
        return Ok(Err(format!(
            "site `{site}` pushed a change made on `{}`; a site pushes only its own changes",
            shown(change.origin.as_str())
        )));
    }
    let incoming = Incoming {
        table: &change.table,
        id: &change.id,
        action: &change.action,
        data: change.data.as_ref().map(|d| d.get()),
    };
    match tx.write_as(incoming, site) {
        Ok(written) => {
            route(tx, written.seq, &written.audience, site)?;
            processors::after_push(tx, site, change)?;
            Ok(Ok(()))
        }
        Err(refused @ (StoreError::Refused { .. } | StoreError::Invalid { .. })) => Ok(Err(refused.to_string())),
        Err(other) => Err(other),
    }
}

/// Keeps a refused change where a person can see it, and says what the site is told. Kept
/// within bounds: an id or a table name from the wire is escaped and cut, and a record too large
/// to store is not stored here either (the site keeps what it wrote).
fn reject(tx: &mut Tx<'_>, site: &SiteId, change: &Change, reason: String) -> Result<Rejection, StoreError> {
    let (table, id) = (shown(&change.table).into_owned(), RecordId(shown(change.id.as_str()).into_owned()));
    tracing::warn!(site = %site, seq = %change.seq, %table, %id, %reason, "rejected a pushed change");
    let data = change.data.as_ref().map(|d| d.get()).filter(|d| d.len() <= limits::MAX_RECORD_BYTES);
    tx.keep_rejection(&RejectionRecord {
        from: RejectedFrom::Site(site.clone()),
        seq: change.seq,
        table: table.clone(),
        id: id.clone(),
        action: change.action.code().to_owned(),
        data: data.map(str::to_owned),
        reason: reason.clone(),
        at: String::new(),
    })?;
    let central_version = version_for(tx, site, &change.table, change.id.as_str())?;
    Ok(Rejection { seq: change.seq, table, id, reason, central_version })
}

/// The record as this server holds it, if `site` may hold it: what a site puts back in place of
/// a change that was refused.
fn version_for(tx: &Tx<'_>, site: &SiteId, table: &str, id: &str) -> Result<Option<String>, StoreError> {
    if limits::check_id(id).is_err() || tx.registry().table(table).is_none() {
        return Ok(None);
    }
    let Some(data) = tx.current(table, id)?.and_then(|c| c.data) else { return Ok(None) };
    let keys = tx.stored_keys(table, id)?.unwrap_or_default();
    let change = ChangeRef { table, op: &Op::Update, keys: &keys };
    let network = tx.network();
    let may_hold = recipients(tx.registry(), network, &change).is_ok_and(|a| a.includes(network, site))
        || check_write(tx.registry(), network, &change, site).is_ok();
    Ok(may_hold.then_some(data))
}

/// Records who must receive a logged change: a shared bucket for a wide audience, the outbox of
/// each site for a narrow one (never the site it came from, never the central server itself).
fn route(tx: &mut Tx<'_>, seq: Seq, audience: &Audience, origin: &SiteId) -> Result<(), StoreError> {
    route_all(tx, &[(seq, audience)], origin)
}

/// [`route`] for changes written together, their outbox rows added together.
fn route_all(tx: &mut Tx<'_>, changes: &[(Seq, &Audience)], origin: &SiteId) -> Result<(), StoreError> {
    let central = tx.network().central.clone();
    let mut outbox = Vec::new();
    for &(seq, audience) in changes {
        let bucket = match audience {
            Audience::Nobody => continue,
            Audience::Everyone => "all",
            Audience::DispensarySites => "dispensary",
            Audience::RemoteSites => "remote",
            Audience::Sites(sites) => {
                outbox.extend(sites.iter().filter(|s| *s != origin && **s != central).map(|site| (site, seq)));
                continue;
            }
        };
        tx.set_bucket(seq, bucket)?;
    }
    tx.add_outbox_all(&outbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: i64, id: &str, packs: i64) -> Change {
        let text = serde_json::json!({
            "seq": seq, "table": "stock_line", "id": id, "action": "upsert",
            "data": {"store_id": "store-north", "total_packs": packs}, "origin": "north",
        })
        .to_string();
        serde_json::from_str(&text).expect("a change")
    }

    #[test]
    fn a_batch_is_a_resend_only_when_its_changes_are_the_same() {
        let sent = [line(2, "sl-n1", 1)];
        let last = PushedBatch { from: Seq(1), acked: Seq(2), digest: digest(sent.iter()) };
        assert!(is_resend(&last, Seq(1), &sent));
        assert!(is_resend(&last, Seq(1), &[line(2, "sl-n1", 1), line(3, "sl-n3", 3)]), "more after it");
        assert!(!is_resend(&last, Seq(1), &[line(2, "sl-n2", 2)]), "another change at the same position");
        assert!(!is_resend(&last, Seq(1), &[line(2, "sl-n1", 5)]), "another version of the record");
        assert!(!is_resend(&last, Seq(0), &sent), "another start");
    }
}
