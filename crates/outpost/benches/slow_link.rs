//! Sync over the links our users have (issue 9), through the shaping proxy of the test kit, each
//! figure beside its goal and a baseline from the same run:
//! - **catch-up**: a site a week behind pulls 10,000 changes (central items and names, a store's
//!   stock lines it collects, requisitions addressed to its store) at 64 kbit/s and at 20 kbit/s
//!   with a 1 s round trip, beside the time its bytes on the wire need at that rate;
//! - **cut initialisation**: a new site initialises 20,000 records at 256 kbit/s, then another
//!   through a link cut five times, beside the bytes of the uncut one;
//! - **empty sync** over a 1 s round trip, beside two round trips (connect, one request).
//!
//! `cargo bench -p outpost --bench slow_link` (about 8 minutes). `OUTPOST_BENCH_QUICK=1` scales
//! the data down tenfold for a smoke run; `OUTPOST_LOG=outpost_site=debug` shows the site's logs.

#[path = "support/catalogue.rs"]
mod catalogue;

use catalogue::{DRUGS, FORMS};

use central::{admin, Engine};
// The proxy of the real-process tests (the test kit's), not a copy of it.
use model::{SiteId, SyncType};
use serde_json::json;
use site::sync::Step;
use site::{Client, SyncReport};
use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Db, StateKey, Write};
use testkit::link::{Link, Shape};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// One way of the long links: a 1 s round trip (a satellite hop, a congested radio network).
const LONG_DELAY: Duration = Duration::from_millis(500);

pub fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let quick = std::env::var("OUTPOST_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let scale = if quick { 10 } else { 1 };
    if quick {
        println!("OUTPOST_BENCH_QUICK: data scaled down {scale}x (the goals are for the full size)\n");
    }
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    catch_up(&dir.path().join("catch-up"), &runtime, scale)?;
    cut_initialisation(&dir.path().join("cut"), &runtime, scale)?;
    println!("whole run: {:.0?}", started.elapsed());
    Ok(())
}

/// An in-process central server (SQLite, the embedded default) on loopback.
struct Central {
    engine: Engine,
    addr: SocketAddr,
}

impl Central {
    fn start(dir: &Path, runtime: &tokio::runtime::Runtime) -> Result<Central> {
        std::fs::create_dir_all(dir)?;
        let db = Arc::new(Db::open(&dir.join("central.sqlite"))?);
        let engine = admin::init(&db, &"central".into(), None)?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        runtime.spawn(central::serve(engine.clone(), listener, central::Limits::default()));
        Ok(Central { engine, addr })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new site, with its store active on it, initialised on this machine (not synced yet).
    fn add_site(&self, dir: &Path, name: &str) -> Result<Site> {
        let password = admin::add_site(&self.engine, &name.into(), false)?;
        admin::add_store(&self.engine, &store_of(name).as_str().into(), &name.into(), false)?;
        let db = Db::open(&dir.join(format!("{name}.sqlite")))?;
        for (key, value) in
            [(StateKey::LocalSite, name), (StateKey::CentralUrl, &self.url()), (StateKey::Password, &password)]
        {
            db.set_state(key, value)?;
        }
        Ok(Site { name: name.to_owned(), password, db })
    }
}

fn store_of(site: &str) -> String {
    format!("store-{site}")
}

struct Site {
    name: String,
    password: String,
    db: Db,
}

impl Site {
    /// A client that reaches the central server at `url` (loopback, or a link in front of it),
    /// with a fresh connection and nothing measured of the link yet.
    fn client(&self, url: &str) -> Client {
        Client::new(url, &SiteId::new(&self.name), &self.password)
    }

    fn sync(&self, url: &str) -> Result<SyncReport> {
        Ok(site::sync_once(&self.db, &self.client(url), &mut |_: Step, _: u64, _: u64| {})?)
    }

    /// One sync through `link`, recording when each step of it came.
    fn sync_through(&self, link: &Link) -> (std::result::Result<SyncReport, site::SyncError>, Trace) {
        let mut trace = Trace { started: Instant::now(), steps: Vec::new() };
        let client = self.client(&link.url());
        let result = site::sync_once(&self.db, &client, &mut |step: Step, _: u64, received: u64| {
            trace.steps.push((trace.started.elapsed(), step, received));
        });
        (result, trace)
    }

    fn count(&self, table: &str) -> Result<u64> {
        Ok(self.db.counts_by_table()?.iter().find(|(t, _)| t == table).map_or(0, |(_, n)| *n))
    }

    fn holds(&self) -> Result<u64> {
        Ok(self.db.counts_by_table()?.iter().map(|(_, n)| n).sum())
    }
}

/// The steps of one sync as its progress saw them: when, what, and the body bytes received.
#[derive(Debug)]
struct Trace {
    started: Instant,
    steps: Vec<(Duration, Step, u64)>,
}

impl Trace {
    /// When each pulled page was applied, how many changes it held, and its body bytes.
    fn pages(&self) -> Vec<(Duration, u64, u64)> {
        let mut pages = Vec::new();
        let (mut pulled, mut received) = (0, 0);
        for (at, step, bytes) in &self.steps {
            if let Step::Pulling { pulled: now, .. } = step {
                if *now > pulled {
                    pages.push((*at, now - pulled, bytes - received));
                    (pulled, received) = (*now, *bytes);
                }
            }
        }
        pages
    }

    fn retries(&self) -> (usize, u64) {
        self.steps.iter().fold((0, 0), |(n, secs), (_, step, _)| match step {
            Step::Retrying { in_secs, .. } => (n + 1, secs + in_secs),
            _ => (n, secs),
        })
    }

    /// One line on the pages: how many, the first, the largest, the gaps between them.
    fn describe_pages(&self) -> String {
        let pages = self.pages();
        let Some(first) = pages.first() else { return "no page pulled".to_owned() };
        let largest = pages.iter().map(|p| p.1).max().unwrap_or(0);
        let mut line = format!(
            "{} page(s); the first ({} changes, {} body bytes) applied at {:.1} s; the largest {} changes",
            pages.len(),
            first.1,
            first.2,
            first.0.as_secs_f64(),
            largest
        );
        if pages.len() > 1 {
            let sizes: Vec<String> = pages.iter().map(|p| p.1.to_string()).collect();
            line.push_str(&format!("; changes per page: {}", sizes.join(", ")));
        }
        line
    }
}

/// A week of changes waiting for two sites that last synced a week ago, pulled by each through
/// its own link (64 and 20 kbit/s both ways, a 1 s round trip).
fn catch_up(dir: &Path, runtime: &tokio::runtime::Runtime, scale: usize) -> Result<()> {
    let central = Central::start(dir, runtime)?;
    let engine = &central.engine;
    // `north` keeps a store whose stock the remote sites collect (a district store's full
    // copy of a health centre); `south` sends requisitions to the remote sites' stores.
    let north = central.add_site(dir, "north")?;
    let south = central.add_site(dir, "south")?;
    let rates = [64_000, 20_000];
    let remotes: Vec<Site> =
        rates.iter().map(|r| central.add_site(dir, &format!("remote-{}k", r / 1000))).collect::<Result<_>>()?;
    for remote in &remotes {
        admin::set_sync_type(
            engine,
            &store_of("north").as_str().into(),
            &remote.name.as_str().into(),
            SyncType::Collector,
        )?;
        admin::set_sync_type(
            engine,
            &store_of("south").as_str().into(),
            &remote.name.as_str().into(),
            SyncType::Transfer,
        )?;
    }

    // What the sites already hold: the catalogue and the names of last week.
    let (base_items, base_names) = (6_000 / scale, 1_500 / scale);
    write_central(engine, &(0..base_items).map(|i| item(i, 0)).collect::<Vec<_>>())?;
    write_central(engine, &(0..base_names).map(name).collect::<Vec<_>>())?;
    let started = Instant::now();
    for site in [&north, &south].into_iter().chain(&remotes) {
        site.sync(&central.url())?;
    }
    for remote in &remotes {
        // The site last synced over its own link. What this program's initialisation over
        // loopback measured would size its first page for loopback; it starts from nothing
        // instead, as a site whose link is unknown does (the cautious case: small first pages).
        remote.db.set_state(StateKey::LinkRates, "")?;
    }
    println!(
        "catch-up setup: {} sites initialised over loopback, holding {} records each, in {:.1?}",
        remotes.len() + 2,
        remotes[0].holds()?,
        started.elapsed()
    );

    // The week: the catalogue revised and grown, new names, a store's stock, requisitions.
    let (edits, new_items, new_names) = (2_000 / scale, 1_000 / scale, 1_000 / scale);
    let (stock_lines, requisitions, lines_each) = (4_000 / scale, 500 / scale, 3);
    let mut central_week: Vec<Record> = (0..edits).map(|i| item(i * base_items / edits, 1)).collect();
    central_week.extend((base_items..base_items + new_items).map(|i| item(i, 0)));
    central_week.extend((base_names..base_names + new_names).map(name));
    write_central(engine, &central_week)?;
    // The sites that write this week's stock and requisitions know the new items first (a line
    // for an item a site has not received is refused).
    north.sync(&central.url())?;
    south.sync(&central.url())?;
    let item_ids: Vec<String> = (0..base_items + new_items).map(|i| item(i, 0).1).collect();
    let name_ids: Vec<String> = (0..base_names).map(|i| name(i).1).collect();
    let stock: Vec<Record> = (0..stock_lines).map(|i| stock_line(i, &item_ids)).collect();
    north.db.write(&writes(&stock))?;
    let mut addressed = Vec::new();
    for (r, remote) in remotes.iter().enumerate() {
        let to = store_of(&remote.name);
        let records: Vec<Record> = (0..requisitions)
            .flat_map(|i| requisition(r * requisitions + i, lines_each, &to, &item_ids, &name_ids))
            .collect();
        south.db.write(&writes(&records))?;
        addressed.push(records);
    }
    north.sync(&central.url())?;
    south.sync(&central.url())?;

    for ((remote, rate), addressed) in remotes.iter().zip(rates).zip(&addressed) {
        let week: Vec<&Record> = central_week.iter().chain(&stock).chain(addressed).collect();
        let json_bytes = week.iter().map(|r| json_size(r)).sum::<usize>() + 2;
        let link = Link::start(central.addr, Shape::symmetric(rate, LONG_DELAY));
        let (result, trace) = remote.sync_through(&link);
        let report = result?;
        let secs = trace.started.elapsed().as_secs_f64();
        assert!(report.pulled >= week.len() as u64, "{} pulled {} of {}", remote.name, report.pulled, week.len());
        let (up, down) = (link.bytes_up(), link.bytes_down());
        let wire = up + down;
        let baseline = (wire * 8) as f64 / rate as f64;
        let goal = if rate >= 64_000 { 75.0 } else { 240.0 };
        println!("catch-up of a site a week behind at {} kbit/s both ways, 1 s round trip:", rate / 1000);
        println!("  {} changes pulled ({} waiting for it)", report.pulled, week.len());
        println!("  time:            {secs:>9.1} s (goal: under {goal:.0} s)");
        println!("  bytes on the wire: {wire:>9} ({down} down, {up} up; headers included, counted by the proxy)");
        println!(
            "  the same changes as plain JSON: {json_bytes} bytes ({:.1}% of it on the wire)",
            pct(wire, json_bytes)
        );
        println!("  baseline (wire bits / rate): {baseline:>6.1} s");
        println!("  ratio: {:.2}x the baseline (goal: within 1.2x)", secs / baseline);
        let pages = trace.pages().len();
        println!(
            "  {:.1} bytes on the wire a change; {:.1} s beyond the baseline over {pages} page(s), {:.2} s a page (the round trip is {:.0} s)",
            wire as f64 / report.pulled as f64,
            secs - baseline,
            (secs - baseline) / pages.max(1) as f64,
            2.0 * LONG_DELAY.as_secs_f64()
        );
        println!("  {}", trace.describe_pages());
        println!("  {} connection(s)\n", link.connections());
    }
    Ok(())
}

/// A new site initialising 20,000 records at 256 kbit/s, uncut, then another through a link cut
/// five times; then an empty sync over a 1 s round trip.
fn cut_initialisation(dir: &Path, runtime: &tokio::runtime::Runtime, scale: usize) -> Result<()> {
    let central = Central::start(dir, runtime)?;
    let (items, names) = (15_000 / scale, 5_000 / scale);
    write_central(&central.engine, &(0..items).map(|i| item(i, 0)).collect::<Vec<_>>())?;
    write_central(&central.engine, &(0..names).map(name).collect::<Vec<_>>())?;
    let shape = Shape::symmetric(256_000, Duration::from_millis(50));

    let uncut_site = central.add_site(dir, "new-uncut")?;
    let uncut = Link::start(central.addr, shape);
    let (result, uncut_trace) = uncut_site.sync_through(&uncut);
    result?;
    let uncut_secs = uncut_trace.started.elapsed().as_secs_f64();
    let (uncut_down, uncut_wire) = (uncut.bytes_down(), uncut.bytes_up() + uncut.bytes_down());
    let held = uncut_site.holds()?;

    let cut_site = central.add_site(dir, "new-cut")?;
    let cut = Link::start(central.addr, shape);
    cut.cut_every_down_bytes(uncut_down / 6, 5);
    let started = Instant::now();
    let mut calls = 0;
    let mut traces = Vec::new();
    loop {
        calls += 1;
        let (result, trace) = cut_site.sync_through(&cut);
        traces.push(trace);
        match result {
            Ok(_) => break,
            Err(e) if calls < 10 => println!("  sync_once call {calls} failed: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    let cut_secs = started.elapsed().as_secs_f64();
    let cut_wire = cut.bytes_up() + cut.bytes_down();
    assert_eq!(cut_site.count("item")? + cut_site.count("name")?, (items + names) as u64, "every record arrived");
    let (retries, backoff) = traces.iter().map(Trace::retries).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    println!(
        "initialisation of a new site, {} records ({held} held with the network's own), 256 kbit/s both ways, 100 ms round trip:",
        items + names
    );
    println!("  uncut:            {uncut_wire:>9} bytes on the wire ({uncut_down} down), {uncut_secs:.1} s");
    println!(
        "  cut {} time(s):    {cut_wire:>9} bytes on the wire ({} down), {cut_secs:.1} s, in {calls} sync_once call(s), {retries} retries waiting {backoff} s in all",
        cut.cuts(),
        cut.bytes_down()
    );
    println!(
        "  ratio: {:.2}x the bytes of the uncut one ({:.2}x down) (goal: under 1.3x)",
        cut_wire as f64 / uncut_wire as f64,
        cut.bytes_down() as f64 / uncut_down as f64
    );
    println!("  uncut: {}", uncut_trace.describe_pages());
    for (n, trace) in traces.iter().enumerate() {
        println!("  cut, call {}: {}", n + 1, trace.describe_pages());
    }
    println!();

    // Nothing changed since (the first site has received the second's own records by now):
    // one request over a fresh connection.
    uncut_site.sync(&central.url())?;
    let link = Link::start(central.addr, Shape { one_way_delay: LONG_DELAY, ..Shape::default() });
    let (result, trace) = uncut_site.sync_through(&link);
    let report = result?;
    let secs = trace.started.elapsed().as_secs_f64();
    assert_eq!(report.pushed + report.pulled, 0, "nothing changed");
    let wire = link.bytes_up() + link.bytes_down();
    let rtt = 2.0 * LONG_DELAY.as_secs_f64();
    println!("empty sync (nothing changed), unshaped rate, 1 s round trip:");
    println!(
        "  time: {secs:.2} s beside {:.2} s for connecting and one request (2 round trips; the proxy's connect \
         returns at once, so it shows one)",
        2.0 * rtt
    );
    println!(
        "  bytes on the wire: {wire} ({} up, {} down; headers included) (goal: under 1024)",
        link.bytes_up(),
        link.bytes_down()
    );
    println!("  {} connection(s)\n", link.connections());
    Ok(())
}

/// A record to write: table, id, document.
type Record = (&'static str, String, String);

fn writes(records: &[Record]) -> Vec<Write> {
    records.iter().map(|(table, id, doc)| Write::upsert_text(table, id.as_str(), doc.clone())).collect()
}

/// Central data, written on the central server (the primary), checked and logged.
fn write_central(engine: &Engine, records: &[Record]) -> Result<()> {
    for chunk in records.chunks(20_000) {
        engine.write(&writes(chunk))?;
    }
    Ok(())
}

/// The size of a change as plain JSON, as a naive protocol would send it.
fn json_size((table, id, doc): &Record) -> usize {
    format!(r#"{{"table":"{table}","id":"{id}","data":{doc}}},"#).len()
}

fn pct(part: u64, whole: usize) -> f64 {
    100.0 * part as f64 / whole as f64
}

/// An id as mSupply's: 32 random hex digits.
fn hex_id(rng: &mut Rng) -> String {
    format!("{:016X}{:016X}", rng.next(), rng.next())
}

/// An item of a real catalogue (as in the `sync` benchmark): random ids, names from a
/// vocabulary, varied numbers. Edition 1 is the same item with its price and note revised.
fn item(i: usize, edition: u64) -> Record {
    let mut rng = Rng::seeded(1, i);
    let id = hex_id(&mut rng);
    let strength = 5 * (1 + rng.below(100));
    let pack = [1, 10, 20, 28, 30, 50, 100, 500][rng.below(8) as usize];
    let price = rng.below(1_000_000) as f64 / 1000.0 * (1.0 + edition as f64 * 0.05);
    let weight = [0.0, 5.0, 12.5, 50.0, 100.0, 250.0][rng.below(6) as usize];
    let doc = json!({
        "code": format!("{}{:05}", letter(&mut rng, 26), rng.below(100_000)),
        "name": format!("{} {strength} mg {}, pack of {pack}", DRUGS[rng.below(16) as usize], FORMS[rng.below(8) as usize]),
        "unit_id": format!("unit-{:02}", rng.below(40)),
        "category_id": format!("category-{:03}", rng.below(300)),
        "default_pack_size": pack,
        "atc_code": format!("{}{:02}{}{}{:02}", letter(&mut rng, 14), rng.below(99), letter(&mut rng, 26), letter(&mut rng, 26), rng.below(99)),
        "is_vaccine": rng.below(20) == 0,
        "cold_chain": rng.below(15) == 0,
        "price_per_unit": (price * 1000.0).round() / 1000.0,
        "weight_grams": weight,
        "note": if edition > 0 { "price revised 2026-03" } else if rng.below(4) == 0 { "essential medicines list 2026" } else { "" },
    });
    ("item", id, doc.to_string())
}

/// A name (a facility, a supplier, a customer) with its address.
fn name(i: usize) -> Record {
    const KINDS: [&str; 4] = ["facility", "customer", "supplier", "manufacturer"];
    const PLACES: [&str; 12] = [
        "Mzuzu",
        "Lilongwe",
        "Blantyre",
        "Zomba",
        "Kasungu",
        "Mangochi",
        "Karonga",
        "Salima",
        "Dedza",
        "Nkhata Bay",
        "Balaka",
        "Chitipa",
    ];
    const WORDS: [&str; 8] = [
        "District Hospital",
        "Health Centre",
        "Pharmacy",
        "Clinic",
        "Medical Stores",
        "Dispensary",
        "Mission",
        "Depot",
    ];
    let mut rng = Rng::seeded(2, i);
    let id = hex_id(&mut rng);
    let place = PLACES[rng.below(12) as usize];
    let doc = json!({
        "code": format!("N{:05}", rng.below(100_000)),
        "name": format!("{place} {} {}", WORDS[rng.below(8) as usize], rng.below(40)),
        "type": KINDS[rng.below(4) as usize],
        "address1": format!("P.O. Box {}", rng.below(5_000)),
        "address2": place,
        "phone": format!("+265 {} {:03} {:03}", 1 + rng.below(9), rng.below(1000), rng.below(1000)),
        "email": if rng.below(3) == 0 { format!("stores{}@health.example", rng.below(1000)) } else { String::new() },
        "is_customer": rng.below(2) == 0,
        "is_supplier": rng.below(5) == 0,
    });
    ("name", id, doc.to_string())
}

/// A stock line of `store-north`: a batch of an item, its expiry, its quantities and prices.
fn stock_line(i: usize, items: &[String]) -> Record {
    let mut rng = Rng::seeded(3, i);
    let id = hex_id(&mut rng);
    let pack = [1, 10, 20, 28, 30, 50, 100][rng.below(7) as usize];
    let total = rng.below(2_000);
    let cost = rng.below(100_000) as f64 / 100.0;
    let doc = json!({
        "store_id": store_of("north"),
        "item_id": items[rng.below(items.len() as u64) as usize],
        "batch": format!("{}{:06}", letter(&mut rng, 26), rng.below(1_000_000)),
        "expiry_date": format!("20{}-{:02}-{:02}", 26 + rng.below(4), 1 + rng.below(12), 1 + rng.below(28)),
        "pack_size": pack,
        "total_packs": total,
        "available_packs": total - rng.below(total + 1) / 4,
        "cost_price_per_pack": cost,
        "sell_price_per_pack": (cost * 1.2 * 100.0).round() / 100.0,
        "location_id": format!("shelf-{}{:02}", letter(&mut rng, 8), rng.below(40)),
        "on_hold": rng.below(30) == 0,
    });
    ("stock_line", id, doc.to_string())
}

/// A requisition of `store-south` addressed to store `to`, with its lines.
fn requisition(i: usize, lines: usize, to: &str, items: &[String], names: &[String]) -> Vec<Record> {
    let mut rng = Rng::seeded(4, i);
    let id = hex_id(&mut rng);
    let from = store_of("south");
    let status = ["draft", "sent", "sent", "finalised"][rng.below(4) as usize];
    let header = json!({
        "store_id": from,
        "other_store_id": to,
        "name_id": names[rng.below(names.len() as u64) as usize],
        "serial_number": 1_000 + i,
        "status": status,
        "type": "request",
        "created_date": format!("2026-03-{:02}", 1 + rng.below(7)),
        "their_reference": format!("REQ/{}/{:04}", 2026, rng.below(10_000)),
        "max_months_of_stock": 3,
        "comment": if rng.below(3) == 0 { "urgent: stock-out expected" } else { "" },
    });
    let mut records = vec![("requisition", id.clone(), header.to_string())];
    for l in 0..lines {
        let line_id = hex_id(&mut rng);
        let stock = rng.below(500);
        let amc = rng.below(300);
        let line = json!({
            "store_id": from,
            "other_store_id": to,
            "requisition_id": id,
            "line_number": l + 1,
            "item_id": items[rng.below(items.len() as u64) as usize],
            "stock_on_hand": stock,
            "average_monthly_consumption": amc,
            "suggested_quantity": (3 * amc).saturating_sub(stock),
            "requested_quantity": (3 * amc).saturating_sub(stock) + rng.below(50),
        });
        records.push(("requisition_line", line_id, line.to_string()));
    }
    records
}

fn letter(rng: &mut Rng, of: u64) -> char {
    char::from(b'A' + rng.below(of) as u8)
}

/// xorshift64*: deterministic, dependency-free variety for benchmark data.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    /// The generator for record `i` of kind `kind`: the same record every time it is asked for.
    fn seeded(kind: u64, i: usize) -> Rng {
        Rng(0x9E37_79B9_7F4A_7C15
            ^ kind.wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
