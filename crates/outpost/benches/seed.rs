//! A new site from a seed file, beside its initial sync over loopback, in the same run:
//! 1,000,000 central records (the sync benchmark's catalogue) that a new site must hold.
//! - **seed file**: `admin::export_seed` on the central server, the file written to disk, read
//!   back and applied by `site::import_seed` (checksum, then every page as a pulled page);
//! - **baseline**: the initial sync of the same site over loopback (`site::sync_once`, HTTP).
//!
//! Prints both times, the ratio, and the file's size beside the bytes on the wire (targets: the
//! file path faster, the file smaller).
//!
//! `cargo bench -p outpost --bench seed` (OUTPOST_BENCH_RECORDS changes the count).

#[path = "support/catalogue.rs"]
mod catalogue;

use central::admin;
use std::sync::Arc;
use std::time::Instant;
use store::{Db, StateKey, Write};

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("OUTPOST_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let central_db = Arc::new(Db::open(&dir.path().join("central.sqlite"))?);
    let engine = admin::init(&central_db, &"central".into(), None)?;
    let password = admin::add_site(&engine, &"new-site".into(), false)?;
    let started = Instant::now();
    let documents: Vec<(String, String)> = (0..n).map(catalogue::item).collect();
    for chunk in documents.chunks(100_000) {
        let writes: Vec<Write> =
            chunk.iter().map(|(id, doc)| Write::upsert_text("item", id.as_str(), doc.clone())).collect();
        engine.write(&writes)?;
    }
    drop(documents);
    println!("setup: {n} items on the central server (SQLite) in {:.1} s", started.elapsed().as_secs_f64());

    // Baseline: the initial sync over loopback.
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    runtime.spawn(central::serve(engine.clone(), listener, central::Limits::default()));
    let url = format!("http://{addr}");
    let site_db = Db::open(&dir.path().join("synced.sqlite"))?;
    for (key, value) in
        [(StateKey::LocalSite, "new-site"), (StateKey::CentralUrl, &url), (StateKey::Password, &password)]
    {
        site_db.set_state(key, value)?;
    }
    let client = site::Client::new(&url, &"new-site".into(), &password);
    let mut quiet = |_: site::sync::Step, _: u64, _: u64| {};
    let report = site::sync_once(&site_db, &client, &mut quiet)?;
    let sync_secs = report.duration.as_secs_f64();
    let wire = report.bytes_received + report.bytes_sent;
    let synced = site_db.count_records()?;
    drop(site_db);

    // The seed file: made, written, read back and applied.
    let file = dir.path().join("new-site.seed");
    let started = Instant::now();
    let (bytes, header) = admin::export_seed(&engine, &"new-site".into(), &url)?;
    std::fs::write(&file, &bytes)?;
    let export_secs = started.elapsed().as_secs_f64();
    drop(bytes);
    let started = Instant::now();
    let bytes = std::fs::read(&file)?;
    let imported = site::import_seed(&dir.path().join("seeded"), &bytes, None, None, "")?;
    let import_secs = started.elapsed().as_secs_f64();
    assert_eq!(imported.applied, header.records);
    let seeded = Db::open(&dir.path().join("seeded").join(site::init::DB_FILE))?.count_records()?;
    assert_eq!(seeded, synced, "the seeded site holds what the synced one does");

    let file_secs = export_secs + import_secs;
    println!("a new site holding {synced} records:");
    println!("  initial sync over loopback:        {sync_secs:>7.2} s, {wire:>11} bytes on the wire");
    println!(
        "  seed file (export {export_secs:.2} s + import {import_secs:.2} s): {file_secs:>7.2} s, {:>11} bytes in the file",
        bytes.len()
    );
    println!(
        "  time: {:.0}% of the initial sync's; size: {:.0}% of the bytes on the wire (targets: below 100% each)",
        100.0 * file_secs / sync_secs,
        100.0 * bytes.len() as f64 / wire as f64
    );
    Ok(())
}
