//! Writes 1,000,000 store records (~300 bytes of JSON each) through the storage layer — the
//! authority check, the record and its change-log entry in one transaction — and, in the same
//! run, the same rows into a plain SQLite table in one transaction. Two ways through the
//! storage layer: the records as one batch, `Db::write` (what a site's import or a person's
//! form of many lines calls), and one `Tx::write_checked` at a time in one transaction (a
//! person's edits, one after another). Prints the rates and the ratios (target: at least 60%,
//! for the batch). `cargo bench -p outpost-store --bench write` (OUTPOST_BENCH_RECORDS changes N).

use model::{Action, Change, RecordId, Seq, SiteId};
use outpost_store::{Db, StateKey, StoreError, Write};
use std::time::Instant;

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("OUTPOST_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let writes: Vec<Write> = (0..n).map(stock_line).collect();
    let texts: Vec<(String, String)> =
        writes.iter().map(|w| (w.id.to_string(), w.data.clone().unwrap_or_default())).collect();
    let avg = texts.iter().map(|(_, t)| t.len()).sum::<usize>() / n.max(1);

    // Baseline: the same rows, raw, one transaction.
    let raw = rusqlite::Connection::open(dir.path().join("raw.sqlite"))?;
    raw.pragma_update(None, "journal_mode", "WAL")?;
    raw.pragma_update(None, "synchronous", "NORMAL")?;
    raw.execute_batch("CREATE TABLE stock_line (id TEXT PRIMARY KEY, store_id TEXT, data TEXT) WITHOUT ROWID")?;
    let started = Instant::now();
    {
        let tx = raw.unchecked_transaction()?;
        let mut stmt = tx.prepare("INSERT INTO stock_line (id, store_id, data) VALUES (?1, ?2, ?3)")?;
        for (id, data) in &texts {
            stmt.execute(rusqlite::params![id, "north-pharmacy", data])?;
        }
        drop(stmt);
        tx.commit()?;
    }
    let raw_secs = started.elapsed().as_secs_f64();

    // Outpost, as a site writes a batch: `Db::write`, authority-checked, with the change log.
    let batch_db = Db::open(&dir.path().join("batch.sqlite"))?;
    seed_network(&batch_db)?;
    let started = Instant::now();
    batch_db.write(&writes)?;
    let batch_secs = started.elapsed().as_secs_f64();
    let logged = batch_db.count_changes_after(Seq(0), &batch_db.local_site()?)?;
    assert_eq!(logged as usize, n, "every write has its change-log entry");
    drop(batch_db);

    // Outpost, one write at a time (in one transaction).
    let db = Db::open(&dir.path().join("site.sqlite"))?;
    seed_network(&db)?;
    let me = db.local_site()?;
    let started = Instant::now();
    db.transaction(|tx| {
        for w in &writes {
            tx.write_checked(w, &me)?;
        }
        Ok(())
    })?;
    let ours_secs = started.elapsed().as_secs_f64();
    let logged = db.count_changes_after(Seq(0), &me)?;
    assert_eq!(logged as usize, n, "every write has its change-log entry");

    let raw_rate = n as f64 / raw_secs;
    let (batch_rate, ours_rate) = (n as f64 / batch_secs, n as f64 / ours_secs);
    println!("storage write benchmark: {n} store records, {avg} bytes of JSON each");
    println!("  raw SQLite insert (one transaction):        {raw_rate:>10.0} records/s  ({raw_secs:.2} s)");
    println!("  outpost, one batch (Db::write):             {batch_rate:>10.0} records/s  ({batch_secs:.2} s)");
    println!("  outpost, one write at a time (write_checked): {ours_rate:>8.0} records/s  ({ours_secs:.2} s)");
    println!("  ratio: {:.0}% of the raw insert for the batch (target: at least 60%)", 100.0 * batch_rate / raw_rate);
    println!("  ratio: {:.0}% of the raw insert one at a time", 100.0 * ours_rate / raw_rate);
    Ok(())
}

fn stock_line(i: usize) -> Write {
    Write::upsert(
        "stock_line",
        RecordId(format!("sl-{i:08}")),
        &serde_json::json!({
            "store_id": "north-pharmacy",
            "item_id": format!("item-{:05}", i % 5000),
            "batch": format!("B{:06}", i % 100_000),
            "expiry_date": "2027-06-30",
            "pack_size": 10,
            "available_packs": (i % 400) as f64 + 0.5,
            "total_packs": (i % 400) as f64 + 2.0,
            "cost_price_per_pack": 12.75,
            "sell_price_per_pack": 15.3,
            "location_id": format!("loc-{:03}", i % 120),
            "supplier_id": "name-cms",
            "on_hold": false,
            "note": "received from central medical stores",
        }),
    )
}

/// The topology a site learns from the central server: itself, and its store active on it.
fn seed_network(db: &Db) -> Result<(), StoreError> {
    let central = SiteId::from("central");
    let received = [
        ("site", "central", r#"{"name":"Central","central":true,"primary":true}"#),
        ("site", "north", r#"{"name":"North"}"#),
        ("store", "north-pharmacy", r#"{"name":"North pharmacy"}"#),
        (
            "store_sync",
            "north-pharmacy@north",
            r#"{"store_id":"north-pharmacy","site_id":"north","sync_type":"active"}"#,
        ),
    ];
    db.transaction(|tx| {
        for (table, id, data) in received {
            tx.apply_received(&Change {
                seq: Seq(0),
                table: table.into(),
                id: RecordId::from(id),
                action: Action::Upsert,
                data: serde_json::value::RawValue::from_string(data.into()).ok(),
                origin: central.clone(),
            })?;
        }
        tx.set_state(StateKey::LocalSite, "north")
    })
}
