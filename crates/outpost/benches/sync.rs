//! Initial sync of a new site over loopback, and an empty sync, each beside a baseline measured
//! in the same run:
//! - 1,000,000 central records pulled into a new site (records/s) beside a raw SQLite insert of
//!   the same rows, in the order the site receives them ((table, id)), into a table like the
//!   site's `record` with the site's pragmas, in one transaction;
//! - the bytes on the wire beside the size of the same records as plain JSON;
//! - the time and bytes (counted by a TCP proxy, headers included) of a sync when nothing changed.
//!
//! `cargo bench -p outpost --bench sync` (OUTPOST_BENCH_RECORDS changes the count).

#[path = "support/catalogue.rs"]
mod catalogue;

use catalogue::item;
use central::admin;
use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use store::{Db, StateKey, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("OUTPOST_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;

    // The central server, holding n items (central data: every site receives them).
    let central_db = Arc::new(Db::open(&dir.path().join("central.sqlite"))?);
    let engine = admin::init(&central_db, &"central".into(), None)?;
    let password = admin::add_site(&engine, &"new-site".into(), false)?;
    let documents: Vec<(String, String)> = (0..n).map(item).collect();
    let setup_secs = write_items(&engine, &documents)?;
    println!(
        "setup: {n} items written on the central server (SQLite) in {setup_secs:.1} s ({:.0} items/s)",
        n as f64 / setup_secs
    );
    #[cfg(feature = "postgres")]
    postgres_setup(&documents, setup_secs)?;
    let json_bytes: usize = documents
        .iter()
        .map(|(id, doc)| format!(r#"{{"table":"item","id":"{id}","data":{doc}}},"#).len())
        .sum::<usize>()
        + 2;

    // Baseline: the best a person could do by hand with the same rows. They arrive at the site
    // sorted as the snapshot sends them, by (table, id), so they are written in that order (sorted
    // before the clock starts: the sort is the sender's work, not the writer's), into the same
    // table as the site's `record` (crates/store/src/migrations/sqlite/: the same columns, the implicit
    // rowid, the UNIQUE (tbl, id) index and no other), with the pragmas the site's database is
    // opened with (crates/store/src/backend/sqlite.rs), in one transaction, through one prepared statement.
    let mut sorted: Vec<&(String, String)> = documents.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0)); // one table, "item": (table, id) order is id order
    let raw = rusqlite::Connection::open(dir.path().join("raw.sqlite"))?;
    raw.pragma_update(None, "page_size", 16_384)?;
    raw.pragma_update(None, "journal_mode", "WAL")?;
    raw.pragma_update(None, "synchronous", "NORMAL")?;
    raw.pragma_update(None, "cache_size", -262_144)?;
    raw.pragma_update(None, "mmap_size", 4_i64 << 30)?;
    raw.pragma_update(None, "busy_timeout", 10_000)?;
    raw.execute_batch(
        "CREATE TABLE record (
             tbl            TEXT NOT NULL,
             id             TEXT NOT NULL,
             store_id       TEXT,
             other_store_id TEXT,
             name_id        TEXT,
             data           TEXT,
             log_seq        INTEGER,
             UNIQUE (tbl, id)
         )",
    )?;
    let started = Instant::now();
    {
        let tx = raw.unchecked_transaction()?;
        let mut stmt = tx.prepare("INSERT INTO record (tbl, id, data) VALUES ('item', ?1, ?2)")?;
        for (id, doc) in sorted {
            stmt.execute(rusqlite::params![id, doc])?;
        }
        drop(stmt);
        tx.commit()?;
    }
    let raw_secs = started.elapsed().as_secs_f64();
    drop(documents);

    // The server, on loopback, and a counting proxy in front of it for the empty sync.
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    runtime.spawn(central::serve(engine.clone(), listener, central::Limits::default()));
    let counted = Arc::new(AtomicU64::new(0));
    let proxy = counting_proxy(addr, counted.clone())?;

    // Initial sync of a new site.
    let site_db = Db::open(&dir.path().join("site.sqlite"))?;
    for (key, value) in [
        (StateKey::LocalSite, "new-site"),
        (StateKey::CentralUrl, &format!("http://{addr}")),
        (StateKey::Password, &password),
    ] {
        site_db.set_state(key, value)?;
    }
    let client = site::Client::new(&format!("http://{addr}"), &"new-site".into(), &password);
    let mut quiet = |_: site::sync::Step, _: u64, _: u64| {};
    let report = site::sync_once(&site_db, &client, &mut quiet)?;
    let held = site_db.counts_by_table()?.iter().find(|(t, _)| t == "item").map_or(0, |(_, c)| *c);
    assert_eq!(held as usize, n, "the new site holds every item");
    let sync_secs = report.duration.as_secs_f64();

    // An empty sync, through the proxy that counts every byte both ways.
    let via_proxy = site::Client::new(&format!("http://{proxy}"), &"new-site".into(), &password);
    site::sync_once(&site_db, &via_proxy, &mut quiet)?; // warms the connection and the credentials cache
    counted.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let empty = site::sync_once(&site_db, &via_proxy, &mut quiet)?;
    let empty_secs = started.elapsed().as_secs_f64();
    let empty_wire = counted.load(Ordering::Relaxed);
    assert_eq!(empty.pulled + empty.pushed, 0, "nothing changed");

    let raw_rate = n as f64 / raw_secs;
    let sync_rate = n as f64 / sync_secs;
    let wire = report.bytes_received + report.bytes_sent;
    println!("initial sync of {n} records over loopback:");
    println!("  raw SQLite insert (sorted, one tx):   {raw_rate:>10.0} records/s ({raw_secs:.2} s)");
    println!("  initial sync of a new site:          {sync_rate:>10.0} records/s ({sync_secs:.2} s)");
    println!("  ratio: {:.0}% of the raw insert (target: at least 70%)", 100.0 * sync_rate / raw_rate);
    println!("bytes:");
    println!("  the same records as plain JSON:      {:>12} bytes", json_bytes);
    println!("  on the wire (compressed bodies):     {:>12} bytes", wire);
    println!("  ratio: {:.1}% of the JSON (target: at most 15%)", 100.0 * wire as f64 / json_bytes as f64);
    println!("empty sync (nothing changed):");
    println!(
        "  {:.2} ms, {} bytes on the wire, headers included (targets: under 10 ms and 2 KiB)",
        empty_secs * 1000.0,
        empty_wire
    );
    Ok(())
}

/// Writes the items on the central server, 100,000 to a transaction; the seconds it took.
fn write_items(engine: &central::Engine, documents: &[(String, String)]) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    for chunk in documents.chunks(100_000) {
        let writes: Vec<Write> =
            chunk.iter().map(|(id, doc)| Write::upsert_text("item", id.as_str(), doc.clone())).collect();
        engine.write(&writes)?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The same setup on a PostgreSQL central server (`OUTPOST_TEST_POSTGRES`, else the local test
/// database), in a schema of its own dropped afterwards, its rate beside SQLite's.
#[cfg(feature = "postgres")]
fn postgres_setup(documents: &[(String, String)], sqlite_secs: f64) -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("OUTPOST_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("outpost_bench_{}", std::process::id());
    let db = Arc::new(Db::open_postgres(&url, Some(&schema))?);
    let engine = admin::init(&db, &"central".into(), None)?;
    let secs = write_items(&engine, documents)?;
    let n = documents.len() as f64;
    println!(
        "setup on PostgreSQL: {} items in {secs:.1} s ({:.0} items/s; SQLite {:.0} items/s, ratio {:.0}%)",
        documents.len(),
        n / secs,
        n / sqlite_secs,
        100.0 * sqlite_secs / secs
    );
    drop(engine);
    drop(db);
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))?;
    Ok(())
}

/// A TCP proxy that forwards to `target` and counts the bytes it carries both ways.
fn counting_proxy(target: std::net::SocketAddr, counted: Arc<AtomicU64>) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(target) else { continue };
            for (mut from, mut to) in
                [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())]
                    .into_iter()
                    .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
            {
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    while let Ok(read) = from.read(&mut buf) {
                        if read == 0 || to.write_all(&buf[..read]).is_err() {
                            break;
                        }
                        counted.fetch_add(read as u64, Ordering::Relaxed);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    Ok(addr)
}
