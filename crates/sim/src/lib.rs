//! A deterministic simulator of an Outpost network: one central server and a few sites in one
//! process, on real databases, running the real sync code — `site::sync::sync_once` (push with
//! its lost-answer check, pull with its pipelined pages and cut pages, apply), the central
//! server's `Engine` (the one checked write, routing, the transfer processors) — over an
//! exchange ([`SimExchange`]) that fails as one seed says: the central server out of reach, an
//! answer lost after the server acted, a pull page cut at any byte. Nodes are killed at the
//! failpoints every transaction passes (`store::failpoint`: before and after each commit, on the
//! central server as on a site) and started again from their database; disks fill up and are
//! freed; sites are restored from old backups.
//!
//! A run draws everything from its seed: which site writes what (stock, invoices to other
//! stores on other sites or on the same one, central items), who syncs when, which exchange fails and how. At the end the
//! link is made good, every site syncs until nothing moves, and the network is checked against
//! what the rules say each node must hold ([`check`]). A failing seed prints itself and replays
//! exactly: `cargo run -p outpost-sim -- simulate --seed N`.

use central::engine::{Engine, EngineError};
use model::{network::SyncType, RecordId, SiteId, StoreId};
use protocol::{PullRequest, PullResponse, PushRequest, PushResponse, StatusResponse};
use serde_json::{json, Value};
use site::client::{ClientError, Exchange, Interrupted, Interruption, Phase};
use site::link::Link;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::failpoint::Killed;
use store::{Db, Write};

/// What a run is made of.
#[derive(Debug, Clone)]
pub struct Config {
    /// Remote sites, each with one active store.
    pub sites: usize,
    /// Steps before the link is made good and the network settles.
    pub steps: usize,
    /// In percent, for each exchange: the central server out of reach, the answer lost after
    /// the server acted, the exchange cut part way (a push while it goes up, a pull answer
    /// while it comes down).
    pub unreachable: u32,
    pub lost_answer: u32,
    pub cut_page: u32,
    /// Sites are backed up now and then, and restored from their backup.
    pub restores: bool,
    /// Sites go off line now and then, for up to half the run, and keep working meanwhile.
    pub outages: bool,
    /// In percent, for each sync: a node is killed at one of the failpoints the sync passes
    /// (the site's or the central server's), and started again.
    pub kills: u32,
    /// Now and then a site's disk, or the central server's, fills up, and later is freed.
    pub disk_full: bool,
    /// A deliberate bug: every pull answer of more than three changes loses its second one on
    /// the way. Only to show that the checks find a node that does not hold what it must.
    pub lose_a_pulled_change: bool,
    /// A deliberate bug: a site killed at a failpoint starts again from its last backup, as if
    /// its disk had not kept what it committed. Only to show that the checks find a saved
    /// record that never reached the central server.
    pub forget_commits_on_kill: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            sites: 4,
            steps: 60,
            unreachable: 10,
            lost_answer: 10,
            cut_page: 10,
            restores: true,
            outages: true,
            kills: 15,
            disk_full: true,
            lose_a_pulled_change: false,
            forget_commits_on_kill: false,
        }
    }
}

/// What a run did, for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub writes: u64,
    pub syncs: u64,
    pub failed_syncs: u64,
    pub faults: u64,
    pub transfers: u64,
    pub restores: u64,
    /// Nodes killed at a failpoint and started again.
    pub kills: u64,
    /// Writes a full disk refused (the person sees the error; nothing of them is kept).
    pub disk_full_writes: u64,
    /// Times a site went off line.
    pub outages: u64,
    /// The time the exchanges took on their simulated links (each site's rate, 2 s round
    /// trips), in whole seconds.
    pub link_secs: u64,
}

/// A seed whose network does not hold what the rules say.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed: {} (replay: cargo run -p outpost-sim -- simulate --seed {})",
            self.seed, self.what, self.seed
        )
    }
}

/// A small, fast generator (SplitMix64): the same seed draws the same run on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < u64::from(percent)
    }
}

/// The faults the exchanges of a run draw, from the run's one generator.
#[derive(Debug)]
struct Faults {
    rng: Rng,
    on: bool,
    config: Config,
    happened: u64,
    /// Simulated seconds the exchanges took on their links.
    link_secs: f64,
}

/// The central server of a run: its engine over its database file, opened again when a
/// failpoint kills it, as a restarted server process would.
#[derive(Debug, Clone)]
struct Central {
    engine: Arc<Mutex<Engine>>,
    file: std::path::PathBuf,
    kills: Arc<Mutex<u64>>,
}

impl Central {
    fn kills(&self) -> u64 {
        *self.kills.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn engine(&self) -> Engine {
        self.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Runs `f` on the central server. Killed at a failpoint, the server starts again and the
    /// site sees its connection close without an answer (`None`).
    fn call<T>(&self, f: impl FnOnce(&Engine) -> T) -> Option<T> {
        let engine = self.engine();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&engine))) {
            Ok(value) => Some(value),
            Err(payload) if payload.is::<Killed>() => {
                drop(engine);
                self.restart();
                None
            }
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    fn restart(&self) {
        let mut slot = self.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The old handle closes first, as the killed process's connections would.
        *slot = Engine::new(Arc::new(Db::open_in_memory().expect("an in-memory database")));
        let db = Db::open(&self.file).expect("the central database opens again after a kill");
        *slot = Engine::new(Arc::new(db));
        *self.kills.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
    }
}

/// A site's exchange with the central server of the same process. Each call asks the run's
/// generator whether it fails, and how: the server is called (or not) exactly as over HTTP.
#[derive(Debug, Clone)]
pub struct SimExchange {
    central: Central,
    site: SiteId,
    faults: Arc<Mutex<Faults>>,
    link: Arc<Link>,
    /// This site's link, in bytes per second each way (20 kbit/s to 10 Mbit/s).
    rate: f64,
    /// The site is off line (an outage): the central server is out of reach.
    offline: Arc<std::sync::atomic::AtomicBool>,
    /// [`Config::lose_a_pulled_change`].
    sabotaged: bool,
}

/// The round trip of every simulated link.
const ROUND_TRIP: Duration = Duration::from_secs(2);

enum Fate {
    Fine,
    Unreachable,
    LostAnswer,
    CutAt(u64),
}

impl SimExchange {
    fn fate(&self) -> Fate {
        let mut f = self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !f.on {
            return Fate::Fine;
        }
        if self.offline.load(std::sync::atomic::Ordering::Relaxed) {
            return Fate::Unreachable;
        }
        let (unreachable, lost, cut) = (f.config.unreachable, f.config.lost_answer, f.config.cut_page);
        let fate = if f.rng.chance(unreachable) {
            Fate::Unreachable
        } else if f.rng.chance(lost) {
            Fate::LostAnswer
        } else if f.rng.chance(cut) {
            Fate::CutAt(f.rng.next_u64())
        } else {
            Fate::Fine
        };
        if !matches!(fate, Fate::Fine) {
            f.happened += 1;
        }
        fate
    }

    /// Reports an exchange of `up` and `down` wire bytes to the site's link as it would have
    /// taken on this site's rate: the pages that follow are sized from it, as over HTTP.
    fn carried(&self, up: (usize, usize), down: (usize, usize)) {
        let secs = ROUND_TRIP.as_secs_f64() + (up.1 + down.1) as f64 / self.rate;
        let elapsed = Duration::from_secs_f64(secs);
        let link = &self.link;
        link.count_sent(up.1);
        link.count_received(down.1);
        link.record_ratio(site::link::Direction::Up, up.0, up.1);
        link.record_ratio(site::link::Direction::Down, down.0, down.1);
        if up.1 > 0 {
            link.record(site::link::Direction::Up, up.1 as u64, elapsed);
        }
        link.record(site::link::Direction::Down, down.1 as u64, elapsed);
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).link_secs += secs;
    }

    fn unreachable() -> ClientError {
        ClientError::Unreachable { url: "sim://central".into(), reason: "simulated outage".into() }
    }

    fn interrupted(when: Phase, partial: Vec<u8>) -> ClientError {
        ClientError::Interrupted(Box::new(Interrupted {
            how: Interruption::Cut("simulated cut".into()),
            when,
            partial,
        }))
    }

    fn refused(e: central::engine::EngineError) -> ClientError {
        ClientError::Refused { status: 500, code: "engine".into(), message: e.to_string() }
    }
}

impl Exchange for SimExchange {
    fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError> {
        let fate = self.fate();
        match fate {
            Fate::Unreachable => return Err(Self::unreachable()),
            Fate::CutAt(at) => {
                // Cut while the request was still going up: the server never saw it whole.
                let total = protocol::encode(request).len() as u64;
                return Err(Self::interrupted(Phase::Sending { sent: at % total.max(1), total }, Vec::new()));
            }
            _ => {}
        }
        let Some(answer) = self.central.call(|engine| engine.push(&self.site, request.after, &request.changes)) else {
            return Err(Self::interrupted(Phase::Waiting, Vec::new()));
        };
        let answer = answer.map_err(Self::refused)?;
        let json = serde_json::to_vec(request).unwrap_or_default();
        let answered = protocol::encode(&answer).len();
        self.carried((json.len(), protocol::compress(&json).len()), (answered, answered));
        match fate {
            Fate::LostAnswer => Err(Self::interrupted(Phase::Waiting, Vec::new())),
            _ => Ok(answer),
        }
    }

    fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError> {
        let fate = self.fate();
        if matches!(fate, Fate::Unreachable) {
            return Err(Self::unreachable());
        }
        let Some(page) = self.central.call(|engine| {
            let request = PullRequest {
                cursor: request.cursor.clone(),
                max_bytes: request.max_bytes,
                waiting_to_push: request.waiting_to_push,
                format: request.format,
            };
            engine.serve_pull(&self.site, request)
        }) else {
            return Err(Self::interrupted(Phase::Waiting, Vec::new()));
        };
        let page = page.map_err(Self::refused)?;
        match fate {
            Fate::LostAnswer => Err(Self::interrupted(Phase::Waiting, Vec::new())),
            Fate::CutAt(at) => {
                let body = page.encode();
                let cut = (at % (body.len() as u64).max(1)) as usize;
                Err(Self::interrupted(Phase::Receiving { received: cut as u64 }, body[..cut].to_vec()))
            }
            _ => {
                // Through the encoding a real answer takes, so that the simulator reads what a
                // site would.
                let wire = page.encode();
                let body = protocol::decompress(&wire).map_err(ClientError::from)?;
                self.carried((0, 0), (body.len(), wire.len()));
                let mut answer = protocol::decode_pull(&body).map_err(ClientError::from)?;
                if self.sabotaged && answer.changes.len() > 3 {
                    answer.changes.remove(1);
                }
                Ok(answer)
            }
        }
    }

    fn status(&self) -> Result<StatusResponse, ClientError> {
        if !matches!(self.fate(), Fate::Fine) {
            return Err(Self::unreachable());
        }
        match self.central.call(|engine| engine.serve_status(&self.site)) {
            Some(status) => status.map_err(Self::refused),
            None => Err(Self::interrupted(Phase::Waiting, Vec::new())),
        }
    }

    fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// Simulated time: waiting is free.
    fn wait(&self, _: Duration) {}
}

/// One remote site of the run.
struct SimSite {
    id: SiteId,
    /// The stores active here (the first site has two: transfers between them are made here).
    stores: Vec<StoreId>,
    db: Db,
    exchange: SimExchange,
    dir: std::path::PathBuf,
    /// A copy of its database taken earlier, as an operator's nightly backup.
    backup: Option<std::path::PathBuf>,
    /// Every record a person wrote here and was told was saved: each must reach the central
    /// server, unless a restore took it back before it was pushed.
    written: BTreeSet<(String, String)>,
    /// [`SimSite::written`] when the backup was taken.
    written_at_backup: BTreeSet<(String, String)>,
    /// The disk is full (see `Db::limit_disk`).
    disk_full: bool,
    /// Off line until this step.
    offline_until: Option<usize>,
}

impl SimSite {
    fn file(&self) -> std::path::PathBuf {
        self.dir.join(site::init::DB_FILE)
    }

    /// Takes a consistent copy of the database as it stands (`VACUUM INTO`, as a backup tool would).
    fn back_up(&mut self, step: usize) -> Result<(), String> {
        let copy = self.dir.with_extension(format!("backup-{step}.sqlite"));
        let conn = rusqlite::Connection::open(self.file()).map_err(|e| e.to_string())?;
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()]).map_err(|e| format!("backing up {}: {e}", self.id))?;
        self.backup = Some(copy);
        self.written_at_backup = self.written.clone();
        Ok(())
    }

    /// Puts the backup back in place of the database, as an operator restoring a broken disk:
    /// what was written since is gone from the site (what it had pushed is on the central server).
    fn restore(&mut self) -> Result<bool, String> {
        let Some(backup) = self.backup.clone() else { return Ok(false) };
        let placeholder = Db::open(&self.dir.with_extension("closed.sqlite")).map_err(|e| e.to_string())?;
        drop(std::mem::replace(&mut self.db, placeholder));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.file().display()));
        }
        std::fs::copy(&backup, self.file()).map_err(|e| format!("restoring {}: {e}", self.id))?;
        self.db = Db::open(&self.file()).map_err(|e| format!("opening the restored {}: {e}", self.id))?;
        self.disk_full = false;
        Ok(true)
    }

    /// Starts the site again after a kill: its database as the kill left it, its link's
    /// measurements gone with the process.
    fn restart(&mut self) -> Result<(), String> {
        let placeholder = Db::open(&self.dir.with_extension("closed.sqlite")).map_err(|e| e.to_string())?;
        drop(std::mem::replace(&mut self.db, placeholder));
        self.db = Db::open(&self.file()).map_err(|e| format!("opening {} after a kill: {e}", self.id))?;
        self.exchange.link = Arc::default();
        self.disk_full = false;
        Ok(())
    }

    /// A person's write here, through the one checked write. `Ok(false)`: the disk is full and
    /// the person was told so; nothing of it was kept.
    fn write(&mut self, writes: &[Write]) -> Result<bool, String> {
        match self.db.write(writes) {
            Ok(_) => {
                self.written.extend(writes.iter().map(|w| (w.table.clone(), w.id.to_string())));
                Ok(true)
            }
            Err(store::StoreError::DiskFull(_)) if self.disk_full => Ok(false),
            Err(e) => Err(format!("a write on {}: {e}", self.id)),
        }
    }
}

/// A finalised invoice or request requisition from one store to another: its responding
/// half must exist exactly once, in the other store, with as many lines.
#[derive(Debug, Clone)]
struct Transfer {
    kind: TransferKind,
    /// The initiating half.
    id: String,
    to: StoreId,
    lines: usize,
}

#[derive(Debug, Clone, Copy)]
enum TransferKind {
    /// A customer invoice; its half is a supplier invoice.
    Invoice,
    /// A request requisition; its half is a response requisition.
    Requisition,
}

impl TransferKind {
    /// The header's table, its lines' table, the half's field naming the initiating record,
    /// and the lines' field naming their header.
    fn tables(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            TransferKind::Invoice => ("transaction", "transaction_line", "linked_transaction_id", "transaction_id"),
            TransferKind::Requisition => ("requisition", "requisition_line", "linked_requisition_id", "requisition_id"),
        }
    }
}

fn failure(seed: u64, what: impl Into<String>) -> Failure {
    Failure { seed, what: what.into() }
}

/// Runs the seed `seed`.
pub fn run(seed: u64, config: &Config) -> Result<Summary, Failure> {
    let fail = |what: String| failure(seed, what);
    let dir = scratch_dir().map_err(|e| fail(format!("a scratch directory: {e}")))?;
    let central_id = SiteId::from("central");
    let central_file = dir.path().join("central.sqlite");
    let db = Arc::new(Db::open(&central_file).map_err(|e| fail(format!("the central database: {e}")))?);
    let engine = central::admin::init(&db, &central_id, None).map_err(|e| fail(format!("central init: {e}")))?;
    drop(db);
    let central = Central { engine: Arc::new(Mutex::new(engine.clone())), file: central_file, kills: Arc::default() };
    quiet_kills();
    let faults = Arc::new(Mutex::new(Faults {
        rng: Rng::new(seed),
        on: false,
        config: config.clone(),
        happened: 0,
        link_secs: 0.0,
    }));
    let mut links = Rng::new(seed ^ 0x5EED_11AE);
    let mut sites = Vec::new();
    for i in 0..config.sites {
        let (id, store) = (SiteId::from(format!("site-{i}")), StoreId::from(format!("store-{i}")));
        let password = central::admin::add_site(&engine, &id, false).map_err(|e| fail(format!("site add: {e}")))?;
        let mut stores = vec![store];
        if i == 0 {
            stores.push(StoreId::from("store-0b"));
        }
        for store in &stores {
            central::admin::add_store(&engine, store, &id, false).map_err(|e| fail(format!("store add: {e}")))?;
        }
        let exchange = SimExchange {
            central: central.clone(),
            site: id.clone(),
            faults: faults.clone(),
            link: Arc::default(),
            // 2,500 to 1,250,000 bytes per second, spread evenly over the powers of ten.
            rate: 2_500.0 * 500_f64.powf(links.below(1_000) as f64 / 1_000.0),
            offline: Arc::default(),
            sabotaged: config.lose_a_pulled_change,
        };
        let status = engine.serve_status(&id).map_err(|e| fail(format!("status: {e}")))?;
        let site_db = site::init::create(&dir.path().join(id.as_str()), &status, "sim://central", &password, "")
            .map_err(|e| fail(format!("site create: {e}")))?;
        let dir = dir.path().join(id.as_str());
        sites.push(SimSite {
            id,
            stores,
            db: site_db,
            exchange,
            dir,
            backup: None,
            written: BTreeSet::new(),
            written_at_backup: BTreeSet::new(),
            disk_full: false,
            offline_until: None,
        });
    }
    // The first site also keeps a read-only copy of the second's store.
    if config.sites > 1 {
        central::admin::set_sync_type(&engine, &sites[1].stores[0], &sites[0].id, SyncType::Collector)
            .map_err(|e| fail(format!("sync type: {e}")))?;
    }
    drop(engine);
    let mut central_disk_full = false;
    let mut rng = Rng::new(seed ^ 0xA5A5_5A5A_DEAD_BEEF);
    let mut summary = Summary::default();
    let mut transfers: Vec<Transfer> = Vec::new();
    let mut items = 0_u64;
    faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).on = true;
    // `OUTPOST_SIM_TRACE=1` prints every step of the run (to follow a failing seed).
    let trace = std::env::var_os("OUTPOST_SIM_TRACE").is_some();
    for step in 0..config.steps {
        let s = rng.below(sites.len() as u64) as usize;
        let who = sites[s].id.clone();
        let said = |what: String| {
            if trace {
                eprintln!("step {step:>4} {who}: {what}");
            }
        };
        for site in sites.iter_mut().filter(|x| x.offline_until.is_some_and(|until| until <= step)) {
            site.offline_until = None;
            site.exchange.offline.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        if config.outages && sites[s].offline_until.is_none() && rng.chance(2) {
            let until = step + 1 + rng.below(config.steps as u64 / 2 + 1) as usize;
            sites[s].offline_until = Some(until);
            sites[s].exchange.offline.store(true, std::sync::atomic::Ordering::Relaxed);
            said(format!("goes off line until step {until}"));
            summary.outages += 1;
        }
        match rng.below(100) {
            0..=9 => {
                items += 1;
                let item = json!({"code": format!("I{items}"), "name": format!("Medicine {items}")});
                match central.engine().write(&[Write::upsert("item", format!("item-{items}"), &item)]) {
                    Ok(_) => summary.writes += 1,
                    Err(EngineError::Store(store::StoreError::DiskFull(_))) if central_disk_full => {
                        summary.disk_full_writes += 1;
                    }
                    Err(e) => return Err(fail(format!("item write: {e}"))),
                }
            }
            10..=39 => {
                let site = &mut sites[s];
                let Some(item) = held_item(&site.db, items, &mut rng) else { continue };
                let store = site.stores[rng.below(site.stores.len() as u64) as usize].clone();
                let line = json!({"store_id": store, "item_id": item, "batch": format!("B{step}"),
                                  "pack_size": 10, "total_number_of_packs": 100 + rng.below(50), "cost_price_per_pack": 1.5,
                                  // Records of every size, so that a full disk is felt.
                                  "note": "n".repeat(rng.below(3_000) as usize)});
                let id = format!("sl-{}-{step}", site.id);
                if site.write(&[Write::upsert("stock_line", id.as_str(), &line)]).map_err(&fail)? {
                    said(format!("writes {id}"));
                    summary.writes += 1;
                } else {
                    said(format!("cannot write {id}: its disk is full"));
                    summary.disk_full_writes += 1;
                }
            }
            55..=57 if config.restores => {
                sites[s].back_up(step).map_err(&fail)?;
                said("is backed up".into());
            }
            58 if config.restores => {
                if sites[s].restore().map_err(&fail)? {
                    // What it wrote since the backup is gone from it, but not what it pushed.
                    let engine = central.engine();
                    let site = &mut sites[s];
                    let backed_up = std::mem::take(&mut site.written_at_backup);
                    site.written.retain(|(table, id)| {
                        backed_up.contains(&(table.clone(), id.clone()))
                            || engine.db().record(table, id).ok().flatten().is_some()
                    });
                    site.written_at_backup = backed_up;
                    said("is restored from its backup".into());
                    summary.restores += 1;
                }
            }
            59..=60 if config.disk_full => {
                let site = &mut sites[s];
                let spare = (!site.disk_full).then(|| rng.below(3));
                site.db.limit_disk(spare).map_err(|e| fail(format!("filling the disk of {}: {e}", site.id)))?;
                site.disk_full = spare.is_some();
                said(if site.disk_full { "has a full disk".into() } else { "has room on its disk again".into() });
            }
            61 if config.disk_full => {
                let spare = (!central_disk_full).then(|| rng.below(3));
                central.engine().db().limit_disk(spare).map_err(|e| fail(format!("filling the central disk: {e}")))?;
                central_disk_full = spare.is_some();
            }
            roll @ 40..=54 if sites.len() > 1 => {
                // To any other store: on another site (the central server makes the other half)
                // or on this one (this site makes it, through the same processor).
                let from = sites[s].stores[rng.below(sites[s].stores.len() as u64) as usize].clone();
                let others: Vec<&StoreId> = sites.iter().flat_map(|x| &x.stores).filter(|x| **x != from).collect();
                let to = others[rng.below(others.len() as u64) as usize].clone();
                let kind = if roll < 50 { TransferKind::Invoice } else { TransferKind::Requisition };
                if let Some(transfer) = transfer(kind, &mut sites[s], &from, &to, step, &mut rng).map_err(&fail)? {
                    said(format!("finalises {} to {}", transfer.id, transfer.to));
                    summary.writes += 1;
                    summary.transfers += 1;
                    transfers.push(transfer);
                }
            }
            _ => {
                summary.syncs += 1;
                if rng.chance(config.kills) {
                    store::failpoint::arm(rng.below(12));
                }
                let kills_before = central.kills();
                let site = &mut sites[s];
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    site::sync::sync_once(&site.db, &site.exchange, &mut |_, _, _| {})
                }));
                store::failpoint::disarm();
                if central.kills() > kills_before {
                    said("syncs; the central server is killed during the sync and starts again".into());
                    summary.kills += 1;
                    central_disk_full = false;
                }
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(payload) => {
                        let Some(killed) = payload.downcast_ref::<Killed>() else { std::panic::resume_unwind(payload) };
                        said(format!("syncs and is killed at \"{}\"; starts again", killed.at));
                        if !(config.forget_commits_on_kill && site.restore().map_err(&fail)?) {
                            site.restart().map_err(&fail)?;
                        }
                        summary.kills += 1;
                        summary.failed_syncs += 1;
                        continue;
                    }
                };
                let pushed = site::sync::pushed_up_to(&site.db).map(|s| s.0).unwrap_or(-1);
                match &outcome {
                    Ok(r) => said(format!(
                        "syncs: pushed {}, confirmed {}, pulled {}; pushed up to {pushed}",
                        r.pushed, r.confirmed, r.pulled
                    )),
                    Err(e) => said(format!("syncs and fails: {e}; pushed up to {pushed}")),
                }
                if outcome.is_err() {
                    summary.failed_syncs += 1;
                }
            }
        }
    }
    // The link is made good; every site syncs until a whole round moves nothing.
    let mut f = faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f.on = false;
    summary.faults = f.happened;
    summary.link_secs = f.link_secs as u64;
    drop(f);
    // Every site is on line, and every disk has room.
    for site in &mut sites {
        site.exchange.offline.store(false, std::sync::atomic::Ordering::Relaxed);
        site.db.limit_disk(None).map_err(|e| fail(format!("freeing the disk of {}: {e}", site.id)))?;
        site.disk_full = false;
    }
    central.engine().db().limit_disk(None).map_err(|e| fail(format!("freeing the central disk: {e}")))?;
    settle(&sites).map_err(&fail)?;
    check(&central.engine(), &sites, &transfers).map_err(&fail)?;
    Ok(summary)
}

/// A temporary directory, in memory where the machine has one (the runs are many and short).
fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return Ok(dir);
        }
    }
    tempfile::tempdir()
}

/// Kills at a failpoint unwind quietly; any other panic is still printed.
fn quiet_kills() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let printed = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Killed>() {
                printed(info);
            }
        }));
    });
}

/// An item the site already holds, if any.
fn held_item(db: &Db, items: u64, rng: &mut Rng) -> Option<String> {
    if items == 0 {
        return None;
    }
    let item = format!("item-{}", 1 + rng.below(items));
    db.record("item", &item).ok().flatten().map(|_| item)
}

/// A transfer from `store` (one of `from`'s) to `to`, written new, then finalised; `None` when
/// the site holds no item yet, or its disk is full (the person is told; what could not be
/// finalised stays new).
/// - A customer invoice, with a stock line to take from: finalising takes its stock and makes
///   the other half, on the central server when `to` is on another site, at once on `from`
///   when it is on the same one.
/// - A request requisition: finalising makes its response in `to`, the same ways.
fn transfer(
    kind: TransferKind,
    from: &mut SimSite,
    store: &StoreId,
    to: &StoreId,
    step: usize,
    rng: &mut Rng,
) -> Result<Option<Transfer>, String> {
    let Some(item) = (1..=20).find_map(|_| held_item(&from.db, 1 + rng.below(50), rng)) else { return Ok(None) };
    let (table, _, _, parent) = kind.tables();
    let header = |status: &str| match kind {
        TransferKind::Invoice => json!({"store_id": store, "other_store_id": to, "type": "customer_invoice",
                                        "status": status, "serial_number": step}),
        TransferKind::Requisition => {
            json!({"store_id": store, "other_store_id": to, "type": "request", "status": status})
        }
    };
    let (prefix, most_lines) = match kind {
        TransferKind::Invoice => ("ci", 3),
        TransferKind::Requisition => ("rq", 4),
    };
    let id = format!("{prefix}-{}-{step}", from.id);
    let lines = 1 + rng.below(most_lines) as usize;
    let stock_id = format!("sl-{id}");
    let mut writes = Vec::new();
    if let TransferKind::Invoice = kind {
        let stock =
            json!({"store_id": store, "item_id": item, "batch": "T", "pack_size": 1, "total_number_of_packs": 100});
        writes.push(Write::upsert("stock_line", stock_id.as_str(), &stock));
    }
    writes.push(Write::upsert(table, id.as_str(), &header("new")));
    for l in 0..lines {
        let mut line = json!({"store_id": store, parent: id, "item_id": item});
        match kind {
            TransferKind::Invoice => {
                line["pack_size"] = json!(1);
                line["number_of_packs"] = json!(1 + l);
                line["stock_line_id"] = json!(stock_id);
            }
            TransferKind::Requisition => line["requested_quantity"] = json!(10 * (l + 1)),
        }
        writes.push(Write::upsert(kind.tables().1, format!("{id}-{l}"), &line));
    }
    if !from.write(&writes)? || !from.write(&[Write::upsert(table, id.as_str(), &header("finalised"))])? {
        return Ok(None);
    }
    Ok(Some(Transfer { kind, id, to: to.clone(), lines }))
}

/// Syncs every site until a whole round pushes and pulls nothing (at most 20 rounds).
fn settle(sites: &[SimSite]) -> Result<(), String> {
    for _ in 0..20 {
        let mut moved = 0;
        for site in sites {
            let report = site::sync::sync_once(&site.db, &site.exchange, &mut |_, _, _| {})
                .map_err(|e| format!("{} could not sync on a good link: {e}", site.id))?;
            moved += report.pushed + report.pulled + report.confirmed;
        }
        if moved == 0 {
            return Ok(());
        }
    }
    Err("the network did not settle in 20 rounds of syncs on a good link".into())
}

type Records = BTreeMap<(String, String), String>;

/// A node's live records, keyed by (table, id).
fn records(db: &Db) -> Result<Records, String> {
    Ok(db.dump().map_err(|e| e.to_string())?.into_iter().map(|(t, i, d)| ((t, i), d)).collect())
}

fn store_of(data: &str) -> Option<String> {
    serde_json::from_str::<Value>(data).ok()?.get("store_id")?.as_str().map(str::to_owned)
}

/// What the rules say the settled network holds:
/// - nothing was refused anywhere (every write of the run is allowed), nothing waits to push;
/// - every record a site saved reached the central server (unless a restore took it back
///   before it was pushed), whichever node was killed, and when;
/// - each site holds its own store's records exactly as the central server does, and the
///   collector site a copy of the store it collects;
/// - each site holds every item, as the central server has it;
/// - every finalised invoice and request requisition has its responding half exactly once,
///   with as many lines, on the central server and on the receiving site.
pub fn check_summary() -> &'static str {
    "no refusals, nothing waiting, every saved record on the central server, stores and items equal to the central server's, every transfer half exactly once"
}

fn check(engine: &Engine, sites: &[SimSite], transfers: &[Transfer]) -> Result<(), String> {
    let central = records(engine.db())?;
    let refused = engine.db().count_rejections().map_err(|e| e.to_string())?;
    if refused > 0 {
        let first = engine.db().rejections(Some(3)).map_err(|e| e.to_string())?;
        return Err(format!("the central server refused {refused} changes: {first:?}"));
    }
    let items: Records =
        central.iter().filter(|((t, _), _)| t == "item").map(|(k, v)| (k.clone(), v.clone())).collect();
    for (i, site) in sites.iter().enumerate() {
        if let Some((table, id)) = site.written.iter().find(|k| !central.contains_key(k)) {
            return Err(format!(
                "{} was told `{table}` record `{id}` was saved, and the central server never received it",
                site.id
            ));
        }
        let held = records(&site.db)?;
        let refused = site.db.count_rejections().map_err(|e| e.to_string())?;
        if refused > 0 {
            return Err(format!("{} kept {refused} refused changes: {:?}", site.id, site.db.rejections(Some(3)).ok()));
        }
        let status = site::status::status(&site.db).map_err(|e| e.to_string())?;
        if status.waiting_to_push > 0 {
            return Err(format!("{} still has {} changes to push", site.id, status.waiting_to_push));
        }
        let mut stores: BTreeSet<String> = site.stores.iter().map(|s| s.to_string()).collect();
        if i == 0 && sites.len() > 1 {
            stores.insert(sites[1].stores[0].to_string());
        }
        for store in &stores {
            let of = |r: &Records| -> Records {
                r.iter()
                    .filter(|(_, d)| store_of(d).as_deref() == Some(store.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let (there, here) = (of(&central), of(&held));
            if there != here {
                return Err(format!(
                    "{} holds store {store} unlike the central server: {}",
                    site.id,
                    difference(&there, &here)
                ));
            }
        }
        let held_items: Records =
            held.iter().filter(|((t, _), _)| t == "item").map(|(k, v)| (k.clone(), v.clone())).collect();
        if held_items != items {
            return Err(format!(
                "{} holds items unlike the central server: {}",
                site.id,
                difference(&items, &held_items)
            ));
        }
    }
    let field = |d: &str, name: &str| serde_json::from_str::<Value>(d).ok().and_then(|v| v.get(name).cloned());
    for transfer in transfers {
        let (table, line_table, link, parent) = transfer.kind.tables();
        // A transfer a restore took back before it was pushed never happened.
        let Some(initiating) = central.get(&(table.to_owned(), transfer.id.clone())) else { continue };
        if field(initiating, "status") != Some(json!("finalised")) {
            return Err(format!("{table} {} is not finalised on the central server: {initiating}", transfer.id));
        }
        let half = model::transfer::responding_id(&RecordId::from(transfer.id.as_str()));
        let halves =
            central.iter().filter(|((t, _), d)| t == table && field(d, link) == Some(json!(transfer.id))).count();
        if halves != 1 || !central.contains_key(&(table.to_owned(), half.to_string())) {
            return Err(format!(
                "{table} {} has {halves} responding halves on the central server (one expected, `{half}`)",
                transfer.id
            ));
        }
        let lines = central
            .iter()
            .filter(|((t, _), d)| t == line_table && field(d, parent) == Some(json!(half.as_str())))
            .count();
        if lines != transfer.lines {
            return Err(format!("the half of {} has {lines} lines, not {}", transfer.id, transfer.lines));
        }
        let receiver = sites.iter().find(|s| s.stores.contains(&transfer.to)).ok_or("a transfer to no site")?;
        if receiver.db.record(table, half.as_str()).map_err(|e| e.to_string())?.is_none() {
            return Err(format!("{} did not receive the half of {}", receiver.id, transfer.id));
        }
    }
    Ok(())
}

/// The first records two nodes hold differently, in words.
fn difference(expected: &Records, found: &Records) -> String {
    let missing: Vec<_> = expected.keys().filter(|k| !found.contains_key(*k)).take(3).collect();
    let extra: Vec<_> = found.keys().filter(|k| !expected.contains_key(*k)).take(3).collect();
    let changed: Vec<_> =
        expected.iter().filter(|(k, v)| found.get(*k).is_some_and(|f| f != *v)).map(|(k, _)| k).take(3).collect();
    format!("missing {missing:?}, extra {extra:?}, different {changed:?}")
}
