//! A deterministic simulator of an Outpost network: one central server and a few sites in one
//! process, on real databases, running the real sync code — `site::sync::sync_once` (push with
//! its lost-answer check, pull with its pipelined pages and cut pages, apply), the central
//! server's `Engine` (the one checked write, routing, the transfer processors) — over an
//! exchange ([`SimExchange`]) that fails as one seed says: the central server out of reach, an
//! answer lost after the server acted, a pull page cut at any byte.
//!
//! A run draws everything from its seed: which site writes what (stock, invoices to other
//! stores on other sites or on the same one, central items), who syncs when, which exchange fails and how. At the end the
//! link is made good, every site syncs until nothing moves, and the network is checked against
//! what the rules say each node must hold ([`check`]). A failing seed prints itself and replays
//! exactly: `cargo run -p outpost-sim -- simulate --seed N`.

use central::engine::Engine;
use model::{network::SyncType, RecordId, SiteId, StoreId};
use protocol::{PullRequest, PullResponse, PushRequest, PushResponse, StatusResponse};
use serde_json::{json, Value};
use site::client::{ClientError, Exchange, Interrupted, Interruption, Phase};
use site::link::Link;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// A deliberate bug: every pull answer of more than three changes loses its second one on
    /// the way. Only to show that the checks find a node that does not hold what it must.
    pub lose_a_pulled_change: bool,
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
            lose_a_pulled_change: false,
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
}

/// A site's exchange with the central server of the same process. Each call asks the run's
/// generator whether it fails, and how: the server is called (or not) exactly as over HTTP.
#[derive(Debug, Clone)]
pub struct SimExchange {
    engine: Engine,
    site: SiteId,
    faults: Arc<Mutex<Faults>>,
    link: Arc<Link>,
    /// [`Config::lose_a_pulled_change`].
    sabotaged: bool,
}

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
        let answer = self.engine.push(&self.site, request.after, &request.changes).map_err(Self::refused)?;
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
        let page = self
            .engine
            .serve_pull(
                &self.site,
                PullRequest {
                    cursor: request.cursor.clone(),
                    max_bytes: request.max_bytes,
                    waiting_to_push: request.waiting_to_push,
                    format: request.format,
                },
            )
            .map_err(Self::refused)?;
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
                let body = protocol::decompress(&page.encode()).map_err(ClientError::from)?;
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
        self.engine.serve_status(&self.site).map_err(Self::refused)
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
        Ok(true)
    }
}

/// A finalised invoice from one site's store to another's: its responding half must exist
/// exactly once, in the other store, with as many lines.
#[derive(Debug, Clone)]
struct Transfer {
    invoice: String,
    to: StoreId,
    lines: usize,
}

fn failure(seed: u64, what: impl Into<String>) -> Failure {
    Failure { seed, what: what.into() }
}

/// Runs the seed `seed`.
pub fn run(seed: u64, config: &Config) -> Result<Summary, Failure> {
    let fail = |what: String| failure(seed, what);
    let dir = scratch_dir().map_err(|e| fail(format!("a scratch directory: {e}")))?;
    let central_id = SiteId::from("central");
    let db =
        Arc::new(Db::open(&dir.path().join("central.sqlite")).map_err(|e| fail(format!("the central database: {e}")))?);
    let engine = central::admin::init(&db, &central_id, None).map_err(|e| fail(format!("central init: {e}")))?;
    let faults = Arc::new(Mutex::new(Faults { rng: Rng::new(seed), on: false, config: config.clone(), happened: 0 }));
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
            engine: engine.clone(),
            site: id.clone(),
            faults: faults.clone(),
            link: Arc::default(),
            sabotaged: config.lose_a_pulled_change,
        };
        let status = engine.serve_status(&id).map_err(|e| fail(format!("status: {e}")))?;
        let site_db = site::init::create(&dir.path().join(id.as_str()), &status, "sim://central", &password, "")
            .map_err(|e| fail(format!("site create: {e}")))?;
        let dir = dir.path().join(id.as_str());
        sites.push(SimSite { id, stores, db: site_db, exchange, dir, backup: None });
    }
    // The first site also keeps a read-only copy of the second's store.
    if config.sites > 1 {
        central::admin::set_sync_type(&engine, &sites[1].stores[0], &sites[0].id, SyncType::Collector)
            .map_err(|e| fail(format!("sync type: {e}")))?;
    }
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
        match rng.below(100) {
            0..=9 => {
                items += 1;
                let item = json!({"code": format!("I{items}"), "name": format!("Medicine {items}")});
                engine
                    .write(&[Write::upsert("item", format!("item-{items}"), &item)])
                    .map_err(|e| fail(format!("item write: {e}")))?;
                summary.writes += 1;
            }
            10..=39 => {
                let site = &sites[s];
                let Some(item) = held_item(&site.db, items, &mut rng) else { continue };
                let store = &site.stores[rng.below(site.stores.len() as u64) as usize];
                let line = json!({"store_id": store, "item_id": item, "batch": format!("B{step}"),
                                  "pack_size": 10, "total_number_of_packs": 100 + rng.below(50), "cost_price_per_pack": 1.5});
                write_on(&site.db, &[Write::upsert("stock_line", format!("sl-{}-{step}", site.id), &line)])
                    .map_err(|e| fail(format!("stock write on {}: {e}", site.id)))?;
                said(format!("writes sl-{}-{step}", site.id));
                summary.writes += 1;
            }
            55..=57 if config.restores => {
                sites[s].back_up(step).map_err(&fail)?;
                said("is backed up".into());
            }
            58 if config.restores => {
                if sites[s].restore().map_err(&fail)? {
                    said("is restored from its backup".into());
                    summary.restores += 1;
                }
            }
            40..=54 if sites.len() > 1 => {
                // To any other store: on another site (the central server makes the other half)
                // or on this one (this site makes it, through the same processor).
                let from = sites[s].stores[rng.below(sites[s].stores.len() as u64) as usize].clone();
                let others: Vec<&StoreId> = sites.iter().flat_map(|x| &x.stores).filter(|x| **x != from).collect();
                let to = others[rng.below(others.len() as u64) as usize].clone();
                if let Some(transfer) = invoice(&sites[s], &from, &to, step, &mut rng).map_err(&fail)? {
                    said(format!("finalises {} to {}", transfer.invoice, transfer.to));
                    summary.writes += 1;
                    summary.transfers += 1;
                    transfers.push(transfer);
                }
            }
            _ => {
                let site = &sites[s];
                summary.syncs += 1;
                let outcome = site::sync::sync_once(&site.db, &site.exchange, &mut |_, _, _| {});
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
    drop(f);
    settle(&sites).map_err(&fail)?;
    check(&engine, &sites, &transfers).map_err(&fail)?;
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

/// A site's own write, through the one checked write a person's write takes.
fn write_on(db: &Db, writes: &[Write]) -> Result<(), store::StoreError> {
    db.write(writes).map(|_| ())
}

/// An item the site already holds, if any.
fn held_item(db: &Db, items: u64, rng: &mut Rng) -> Option<String> {
    if items == 0 {
        return None;
    }
    let item = format!("item-{}", 1 + rng.below(items));
    db.record("item", &item).ok().flatten().map(|_| item)
}

/// A customer invoice from `store` (one of `from`'s) to `to`, with a stock line to take from:
/// written new, then finalised, which takes its stock and makes the other half — on the central
/// server when `to` is on another site, at once on `from` when it is on the same one. `None`
/// when the site holds no item yet.
fn invoice(
    from: &SimSite,
    store: &StoreId,
    to: &StoreId,
    step: usize,
    rng: &mut Rng,
) -> Result<Option<Transfer>, String> {
    let Some(item) = (1..=20).find_map(|_| held_item(&from.db, 1 + rng.below(50), rng)) else { return Ok(None) };
    let invoice = format!("ci-{}-{step}", from.id);
    let stock_id = format!("sl-{invoice}");
    let lines = 1 + rng.below(3) as usize;
    let mut writes = vec![Write::upsert(
        "stock_line",
        stock_id.as_str(),
        &json!({"store_id": store, "item_id": item, "batch": "T", "pack_size": 1, "total_number_of_packs": 100}),
    )];
    let header = |status: &str| json!({"store_id": store, "other_store_id": to, "type": "customer_invoice", "status": status, "serial_number": step});
    writes.push(Write::upsert("transaction", invoice.as_str(), &header("new")));
    for l in 0..lines {
        let line = json!({"store_id": store, "transaction_id": invoice, "item_id": item, "pack_size": 1,
                          "number_of_packs": 1 + l, "stock_line_id": stock_id});
        writes.push(Write::upsert("transaction_line", format!("{invoice}-{l}"), &line));
    }
    write_on(&from.db, &writes).map_err(|e| format!("invoice on {}: {e}", from.id))?;
    write_on(&from.db, &[Write::upsert("transaction", invoice.as_str(), &header("finalised"))])
        .map_err(|e| format!("finalising {invoice} on {}: {e}", from.id))?;
    Ok(Some(Transfer { invoice, to: to.clone(), lines }))
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
/// - each site holds its own store's records exactly as the central server does, and the
///   collector site a copy of the store it collects;
/// - each site holds every item, as the central server has it;
/// - every finalised invoice to another site's store has its responding half exactly once,
///   with as many lines, on the central server and on the receiving site.
pub fn check_summary() -> &'static str {
    "no refusals, nothing waiting, stores and items equal to the central server's, every transfer half exactly once"
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
    // An invoice a restore took back before it was pushed never happened.
    for transfer in transfers.iter().filter(|t| central.contains_key(&("transaction".to_owned(), t.invoice.clone()))) {
        let half = model::transfer::responding_id(&RecordId::from(transfer.invoice.as_str()));
        let halves = central
            .iter()
            .filter(|((t, _), d)| {
                t == "transaction"
                    && serde_json::from_str::<Value>(d).ok().and_then(|v| v.get("linked_transaction_id").cloned())
                        == Some(json!(transfer.invoice))
            })
            .count();
        if halves != 1 || !central.contains_key(&("transaction".to_owned(), half.to_string())) {
            return Err(format!(
                "invoice {} has {halves} responding halves on the central server (one expected, `{half}`)",
                transfer.invoice
            ));
        }
        let lines = central
            .iter()
            .filter(|((t, _), d)| {
                t == "transaction_line"
                    && serde_json::from_str::<Value>(d).ok().and_then(|v| v.get("transaction_id").cloned())
                        == Some(json!(half.as_str()))
            })
            .count();
        if lines != transfer.lines {
            return Err(format!("the half of {} has {lines} lines, not {}", transfer.invoice, transfer.lines));
        }
        let receiver = sites.iter().find(|s| s.stores.contains(&transfer.to)).ok_or("a transfer to no site")?;
        if receiver.db.record("transaction", half.as_str()).map_err(|e| e.to_string())?.is_none() {
            return Err(format!("{} did not receive the half of {}", receiver.id, transfer.invoice));
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
