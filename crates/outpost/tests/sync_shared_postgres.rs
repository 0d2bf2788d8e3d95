//! Two central server processes (`outpost central serve`) on one PostgreSQL schema, as a
//! deployment behind a load balancer runs them: the sites sync with one, then the other, and
//! every change must reach every site that should hold it, exactly once, whichever process
//! took the push and whichever serves the pull.
//!
//! The network: `north`, `south` and `east`, each with its active store; `hub`, with a store of
//! its own and a collector copy of `store-north` and `store-south` (not of `store-east`); and
//! `west`, which writes nothing. Every round, the primary (an `outpost central write` process:
//! a third writer on the same database) adds an item, and each writing site adds stock lines
//! of its store and sends a message; some rounds also edit an earlier item and stock line.
//! The test keeps its own account of what each site must hold and how many changes each must
//! pull, and compares every database with it at the end.

#![cfg(feature = "postgres")]

mod common;

use common::{count, dump_table, row, rows, state, Backend, Central, Server, Site};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use store::Write;

/// The sites that write, in the order they sync within a round.
const WRITERS: [&str; 4] = ["north", "south", "east", "hub"];
/// A site that only receives (in the concurrent test, it joins while the others push).
const LATE: &str = "west";
/// The stores `hub` holds a collector copy of.
const COLLECTED: [&str; 2] = ["store-north", "store-south"];
/// Rounds of writes and syncs: more when the syncs overlap, to give a race more chances.
const ROUNDS: usize = 5;
const CONCURRENT_ROUNDS: usize = 16;
/// New stock lines each writing site makes each round.
const LINES_PER_ROUND: usize = 25;
/// The synced tables the test writes, and compares.
const TABLES: [&str; 3] = ["item", "stock_line", "message"];

#[test]
fn two_central_processes_on_one_postgres_deliver_every_change_exactly_once() {
    if let Some(backend) = Backend::postgres() {
        run(&backend, Mode::Alternating);
    }
}

#[test]
fn two_central_processes_on_one_postgres_serving_sites_at_the_same_time_deliver_every_change_exactly_once() {
    if let Some(backend) = Backend::postgres() {
        run(&backend, Mode::Concurrent);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One sync at a time; each site alternates between the two server processes, and within a
    /// round consecutive sites use different ones.
    Alternating,
    /// Every site syncs at the same time, half of them with each server process (and the other
    /// one the next round); `west` first syncs (its initialisation) in the middle of a round.
    Concurrent,
}

/// Where a site's message goes: the receiving store, or `None` for every remote site.
fn message_to(site: &str) -> Option<&'static str> {
    match site {
        "north" => Some("store-south"),
        "south" => Some("store-east"),
        "hub" => Some("store-north"),
        _ => None,
    }
}

/// The remote sites (other than `origin`) that must receive this record.
fn recipients(origin: &str, table: &str, doc: &Value) -> Vec<String> {
    let everyone: Vec<&str> = WRITERS.iter().copied().chain([LATE]).collect();
    let store_site = |store: &str| store.strip_prefix("store-").map(str::to_owned);
    let to: Vec<String> = match table {
        "item" => everyone.iter().map(|s| s.to_string()).collect(),
        "stock_line" => {
            let store = doc["store_id"].as_str().expect("a stock line has a store");
            let mut to: Vec<String> = store_site(store).into_iter().collect();
            if COLLECTED.contains(&store) {
                to.push("hub".into());
            }
            to
        }
        "message" => match doc["receiving_store_id"].as_str() {
            Some(store) => store_site(store).into_iter().collect(),
            None => everyone.iter().map(|s| s.to_string()).collect(),
        },
        other => panic!("the test does not write `{other}`"),
    };
    to.into_iter().filter(|s| s != origin).collect()
}

/// What a sync reported: "pushed N (R rejected), pulled M".
fn report_numbers(stdout: &str) -> (u64, u64, u64) {
    let number_after = |label: &str| -> u64 {
        let after = stdout.split(label).nth(1).unwrap_or_else(|| panic!("no `{label}` in: {stdout}"));
        after.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect("a count")
    };
    (number_after("pushed "), number_after("("), number_after("pulled "))
}

/// The network, the two server processes, and the test's own account of what must be where.
struct Scenario {
    mode: Mode,
    // Dropped in this order: the second server, the central server (its first process, then its
    // schema), and last the directory that holds the logs.
    second: Server,
    central: Central,
    urls: [String; 2],
    sites: Vec<Site>,
    /// What each site must hold of [`TABLES`], and the central server (everything).
    expected: BTreeMap<String, BTreeMap<(String, String), Value>>,
    on_central: BTreeMap<(String, String), Value>,
    /// The records each writing site wrote (one log entry each, on it and on the central server).
    written_by: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Changes each site must pull after its first sync, and has pulled; changes each site must
    /// have had applied by the central server, and had.
    to_pull: BTreeMap<String, u64>,
    pulled: BTreeMap<String, u64>,
    to_push: BTreeMap<String, u64>,
    pushed: BTreeMap<String, u64>,
    /// Whether a site has had its first sync (its initialisation, not counted).
    initialised: BTreeMap<String, bool>,
    _root: tempfile::TempDir,
}

impl Scenario {
    fn new(backend: &Backend, mode: Mode) -> Scenario {
        let root = tempfile::tempdir().expect("temporary directory");
        let mut central = Central::init(root.path(), backend);
        let mut passwords = Vec::new();
        for site in WRITERS.iter().chain([&LATE]) {
            passwords.push(central.add_site(site));
            central.add_store(&format!("store-{site}"), site);
        }
        for store in COLLECTED {
            central.sync_type(store, "hub", "collector");
        }
        let first = central.start();
        let mut second = central.another_server("second");
        let urls = [first, second.start()];
        let sites: Vec<Site> = WRITERS
            .iter()
            .chain([&LATE])
            .zip(passwords)
            .enumerate()
            .map(|(i, (name, password))| Site::init(root.path(), name, &urls[i % 2], &password))
            .collect();
        let names = sites.iter().map(|s| s.name.clone());
        Scenario {
            mode,
            second,
            central,
            urls,
            expected: names.clone().map(|n| (n, BTreeMap::new())).collect(),
            on_central: BTreeMap::new(),
            written_by: BTreeMap::new(),
            to_pull: names.clone().map(|n| (n, 0)).collect(),
            pulled: names.clone().map(|n| (n, 0)).collect(),
            to_push: names.clone().map(|n| (n, 0)).collect(),
            pushed: names.clone().map(|n| (n, 0)).collect(),
            initialised: names.map(|n| (n, false)).collect(),
            sites,
            _root: root,
        }
    }

    fn site(&self, name: &str) -> &Site {
        self.sites.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no site `{name}`"))
    }

    /// Writes records on `origin` (on a site in one transaction; on `central` with an
    /// `outpost central write` process each), and notes where each must end up.
    fn write(&mut self, origin: &str, records: Vec<(&str, String, Value)>) {
        if origin == "central" {
            for (table, id, doc) in &records {
                self.central.write(table, id, doc);
            }
        } else {
            let writes: Vec<Write> =
                records.iter().map(|(table, id, doc)| Write::upsert(table, id.as_str(), doc)).collect();
            self.site(origin).db().write(&writes).expect("write on the site");
        }
        for (table, id, doc) in records {
            let key = (table.to_owned(), id);
            if origin != "central" {
                self.expected.get_mut(origin).expect("a site").insert(key.clone(), doc.clone());
                *self.to_push.get_mut(origin).expect("a site") += 1;
                self.written_by.entry(origin.into()).or_default().insert(key.clone());
            }
            for to in recipients(origin, table, &doc) {
                self.expected.get_mut(&to).expect("a site").insert(key.clone(), doc.clone());
                *self.to_pull.get_mut(&to).expect("a site") += 1;
            }
            self.on_central.insert(key, doc);
        }
    }

    /// One round of writes. A record is written at most once per round, and (in the concurrent
    /// test) edited only every other round: every version is then pulled before the next one
    /// replaces it in the central server's log, so each version is one change to pull.
    fn write_round(&mut self, round: usize) {
        let edit = round > 1 && (self.mode == Mode::Alternating || round % 2 == 1);
        let item = |n: usize, edition: usize| {
            let name = format!("Medicine {n} (edition {edition})");
            json!({"code": format!("C{n:03}"), "name": name, "unit_id": "unit-tab"})
        };
        let mut items = vec![("item", format!("item-{round}"), item(round, 1))];
        if edit {
            items.push(("item", "item-1".to_owned(), item(1, round)));
        }
        self.write("central", items);
        for site in WRITERS {
            let store = format!("store-{site}");
            let line = |n: usize, packs: usize| json!({"store_id": store, "item_id": format!("item-{n}"), "batch": format!("B{n}"), "total_packs": packs});
            let mut records: Vec<(&str, String, Value)> = (0..LINES_PER_ROUND)
                .map(|k| ("stock_line", format!("sl-{site}-{round}-{k}"), line(round, 10 * round + k)))
                .collect();
            if edit {
                records.push(("stock_line", format!("sl-{site}-1-0"), line(1, 1000 + round)));
            }
            let message = match message_to(site) {
                Some(to) => {
                    json!({"sending_store_id": store, "receiving_store_id": to, "body": format!("round {round}")})
                }
                None => json!({"body": format!("round {round} from {site}, to everyone")}),
            };
            records.push(("message", format!("msg-{site}-{round}"), message));
            self.write(site, records);
        }
    }

    /// Which of the two server processes site `i` uses in round `round`.
    fn server_for(&self, i: usize, round: usize) -> &str {
        &self.urls[(i + round) % 2]
    }

    /// Syncs the sites of `names` (each with the server process of its turn): one after the
    /// other, or all at the same time. Returns (site, pushed, pulled) of each.
    fn sync(&mut self, round: usize, names: &[&str]) -> Vec<(String, u64, u64)> {
        let turns: Vec<(Site, String)> = names
            .iter()
            .map(|name| {
                let i = self.sites.iter().position(|s| s.name == *name).expect("a site");
                let site = self.sites[i].clone();
                site.set_central(self.server_for(i, round));
                (site, self.server_for(i, round).to_owned())
            })
            .collect();
        let runs: Vec<(String, String)> = match self.mode {
            Mode::Alternating => turns.iter().map(|(site, url)| (site.name.clone(), sync_with(site, url))).collect(),
            Mode::Concurrent => std::thread::scope(|scope| {
                let handles: Vec<_> = turns
                    .iter()
                    .map(|(site, url)| scope.spawn(move || (site.name.clone(), sync_with(site, url))))
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a sync thread")).collect()
            }),
        };
        let mut numbers = Vec::new();
        for (name, stdout) in runs {
            let (pushed, rejected, pulled) = report_numbers(&stdout);
            assert_eq!(rejected, 0, "`{name}` had changes rejected: {stdout}");
            let first = !std::mem::replace(self.initialised.get_mut(&name).expect("a site"), true);
            if !first {
                *self.pulled.get_mut(&name).expect("a site") += pulled;
            }
            *self.pushed.get_mut(&name).expect("a site") += pushed;
            numbers.push((name, pushed, pulled));
        }
        numbers
    }
}

/// `outpost site sync` (the site's central URL already set to `url`); returns what it printed.
fn sync_with(site: &Site, url: &str) -> String {
    let out = site.try_sync();
    assert!(out.success(), "`{}` failed against {url} ({}):\n{}\n{}", out.what, out.status, out.stdout, out.stderr);
    out.stdout
}

fn run(backend: &Backend, mode: Mode) {
    let mut s = Scenario::new(backend, mode);

    // Initialisation: each writing site's first sync (a snapshot), alternating between servers.
    // In the concurrent test, `west` initialises later, while the others push.
    let first: Vec<&str> =
        if mode == Mode::Concurrent { WRITERS.to_vec() } else { WRITERS.iter().copied().chain([LATE]).collect() };
    s.sync(0, &first);

    let everyone: Vec<&str> = WRITERS.iter().copied().chain([LATE]).collect();
    let rounds = if mode == Mode::Concurrent { CONCURRENT_ROUNDS } else { ROUNDS };
    for round in 1..=rounds {
        s.write_round(round);
        let syncing: &[&str] = if mode == Mode::Concurrent && round == 1 { &WRITERS } else { &everyone };
        s.sync(round, syncing);
    }
    // Every push is in: one more sync each brings every site up to date...
    s.sync(rounds + 1, &everyone);
    // ...and after it nothing is left to push or pull, on either server process.
    for (name, pushed, pulled) in s.sync(rounds + 2, &everyone) {
        assert_eq!((pushed, pulled), (0, 0), "`{name}` pushed or pulled again after it was up to date");
    }

    check(&s);
}

/// The records of [`TABLES`] a node holds, as JSON.
fn held(node: &(impl common::Inspect + ?Sized)) -> BTreeMap<(String, String), Value> {
    TABLES
        .iter()
        .flat_map(|table| dump_table(node, table))
        .map(|(key, text)| (key, serde_json::from_str(&text).expect("a stored record is JSON")))
        .collect()
}

fn check(s: &Scenario) {
    let central = &s.central;
    for site in &s.sites {
        let name = site.name.as_str();
        eprintln!(
            "{:?}: `{name}` pushed {} (expected {}), pulled {} after its initialisation (expected {}), holds {}",
            s.mode,
            s.pushed[name],
            s.to_push[name],
            s.pulled[name],
            s.to_pull[name],
            s.expected[name].len()
        );
    }

    // The central server holds every record, each once in its log, and refused nothing.
    assert_eq!(held(central), s.on_central, "the central server's records");
    assert_eq!(count(central, "SELECT count(*) FROM rejection"), 0, "rejections on the central server");
    let twice: Vec<(String, String, i64)> = rows(
        central,
        "SELECT tbl, record_id, count(*) FROM change_log GROUP BY tbl, record_id HAVING count(*) > 1",
        &[],
    );
    assert!(twice.is_empty(), "records with more than one log entry: {twice:?}");
    let logged = count(central, "SELECT count(*) FROM change_log WHERE tbl IN ('item', 'stock_line', 'message')");
    assert_eq!(logged, s.on_central.len() as i64, "one central log entry per record");
    let unlogged = count(
        central,
        "SELECT count(*) FROM record r WHERE r.tbl IN ('item', 'stock_line', 'message') AND NOT EXISTS (
             SELECT 1 FROM change_log l WHERE l.seq = r.log_seq AND l.tbl = r.tbl AND l.record_id = r.id)",
    );
    assert_eq!(unlogged, 0, "records whose latest log entry is missing on the central server");

    for site in &s.sites {
        let name = site.name.as_str();
        // Exactly the records it should hold: nothing missing, nothing it has no copy of.
        let holds = held(site);
        let expected = &s.expected[name];
        let missing: Vec<_> = expected.keys().filter(|k| holds.get(*k) != expected.get(*k)).collect();
        let extra: Vec<_> = holds.keys().filter(|k| !expected.contains_key(*k)).collect();
        assert!(missing.is_empty() && extra.is_empty(), "`{name}`: missing or stale {missing:?}, extra {extra:?}");
        for (key, doc) in &holds {
            assert_eq!(Some(doc), s.on_central.get(key), "`{name}` holds {key:?} as the central server does");
        }
        // A store's records are only on the sites that have a copy of the store.
        for other in WRITERS.iter().chain([&LATE]) {
            let store = format!("store-{other}");
            let has_copy = *other == name || (name == "hub" && COLLECTED.contains(&store.as_str()));
            if !has_copy {
                let lines = holds.iter().filter(|((t, _), d)| t == "stock_line" && d["store_id"] == json!(store));
                assert_eq!(lines.count(), 0, "`{name}` holds stock lines of {store}, which it has no copy of");
            }
        }
        assert_eq!(count(site, "SELECT count(*) FROM rejection"), 0, "rejections on `{name}`: {}", site.rejected());

        // Every change reached it exactly once: as many pulled as were routed to it (`west`
        // initialised while changes were being made, so its snapshot and log may overlap).
        if name != LATE || s.mode == Mode::Alternating {
            assert_eq!(s.pulled[name], s.to_pull[name], "changes pulled by `{name}` after its initialisation");
        }

        // Every change it made was applied once on the central server, which acknowledged all.
        assert_eq!(s.pushed[name], s.to_push[name], "changes of `{name}` applied by the central server");
        let written = s.written_by.get(name).map_or(0, |w| w.len()) as i64;
        let (logged,): (i64,) = row(central, "SELECT count(*) FROM change_log WHERE origin_site = $1", &[name]);
        assert_eq!(logged, written, "central log entries from `{name}`: one per record it wrote");
        let (acked,): (i64,) = row(central, "SELECT acked_seq FROM site_sync WHERE site_id = $1", &[name]);
        let (last,): (Option<i64>,) = row(site, "SELECT max(seq) FROM change_log", &[]);
        if written > 0 {
            assert_eq!(Some(acked), last, "the central server acknowledged `{name}`'s last change");
            assert_eq!(state(site, "pushed_seq"), Some(acked.to_string()), "`{name}`'s pushed position");
        }
        assert!(site.status().contains("waiting to push:   0 change(s)"), "{}", site.status());
    }

    // Both server processes took pushes from every writing site.
    for (server, log) in [("first", s.central.log()), ("second", s.second.log())] {
        let log = without_colours(&log);
        for name in WRITERS {
            let site = format!("site={name} ");
            let pushes = log.lines().filter(|l| l.contains(": push ") && l.contains(&site)).count();
            assert!(pushes > 0, "the {server} server process took no push from `{name}`:\n{log}");
        }
    }
}

/// A log without its terminal colour codes (`ESC [ … m`).
fn without_colours(log: &str) -> String {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().take_while(|&c| c != 'm').for_each(drop);
        } else {
            plain.push(c);
        }
    }
    plain
}
