//! The seeds' three reports over a national network's central server: 100 stores, 1,000,000
//! stock lines and 60,000 finalised customer invoices (180,000 lines), written through the one
//! checked write as the stores' sites push them. Times each report (the best of three, warm),
//! beside the same sums over a table made by hand in the same database with the same rows as
//! typed columns and a covering index (the best a person could do). On SQLite always, and on
//! PostgreSQL with the `postgres` feature and a server to reach (target: under 1 s each there).
//!
//! `cargo bench -p outpost-store --features postgres --bench reports`
//! (OUTPOST_BENCH_RECORDS: stock lines, default 1,000,000; OUTPOST_TEST_POSTGRES: the database).

use model::{Action, Change, RecordId, Seq, SiteId};
use outpost_store::reports::Scope;
use outpost_store::{Db, StateKey, Write};
use serde_json::json;
use std::time::{Duration, Instant};

const STORES: usize = 100;
const SITES: usize = 10;
const ITEMS: usize = 1_000;
const INVOICES: usize = 60_000;
const LINES_EACH: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("OUTPOST_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    println!("report benchmark: {STORES} stores, {n} stock lines, {INVOICES} invoices of {LINES_EACH} lines");
    let lite = Db::open(&dir.path().join("central.sqlite"))?;
    run("SQLite", &lite, n, &mut Baseline::Sqlite(rusqlite::Connection::open(dir.path().join("central.sqlite"))?))?;
    #[cfg(feature = "postgres")]
    postgres_run(n)?;
    Ok(())
}

#[cfg(feature = "postgres")]
fn postgres_run(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("OUTPOST_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("bench_reports_{}", std::process::id());
    let db = match Db::open_postgres(&url, Some(&schema)) {
        Ok(db) => db,
        Err(e) => {
            println!("PostgreSQL: not measured ({e})");
            return Ok(());
        }
    };
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.batch_execute(&format!("SET search_path TO \"{schema}\""))?;
    let result = run("PostgreSQL", &db, n, &mut Baseline::Postgres(&mut client));
    drop(db);
    client.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))?;
    result
}

/// The hand-made tables of the baseline, in the database under test.
enum Baseline<'c> {
    Sqlite(rusqlite::Connection),
    #[cfg(feature = "postgres")]
    Postgres(&'c mut postgres::Client),
    #[allow(dead_code)]
    None(std::marker::PhantomData<&'c ()>),
}

/// One stock line: (store, item, location, packs, pack size, cost per pack).
type Stock = (String, String, String, f64, f64, f64);
/// One invoice line: (store, item, invoice, month, packs, pack size).
type Sold = (String, String, String, String, f64, f64);

fn store(i: usize) -> String {
    format!("store-{:03}", i % STORES)
}

fn item(i: usize) -> String {
    format!("item-{:04}", i % ITEMS)
}

fn run(backend: &str, db: &Db, n: usize, baseline: &mut Baseline<'_>) -> Result<(), Box<dyn std::error::Error>> {
    seed_network(db)?;
    let stock: Vec<Stock> = (0..n)
        .map(|i| {
            (store(i), item(i / STORES), format!("loc-{:02}", i % 12), (i % 40) as f64, 10.0, 0.25 + (i % 7) as f64)
        })
        .collect();
    let sold: Vec<Sold> = (0..INVOICES * LINES_EACH)
        .map(|l| {
            let invoice = l / LINES_EACH;
            // Item 0 is on every invoice: its usage report reads 60,000 lines.
            let it = if l % LINES_EACH == 0 { item(0) } else { item(l * 7) };
            (
                store(invoice),
                it,
                format!("ci-{invoice:06}"),
                format!("2026-{:02}", 1 + invoice % 12),
                1.0 + (l % 5) as f64,
                10.0,
            )
        })
        .collect();

    let started = Instant::now();
    write_pushed(db, &stock, &sold)?;
    let wrote = started.elapsed();
    println!(
        "{backend}: wrote {} records through the checked write in {:.1} s",
        stock.len() + sold.len() + INVOICES,
        wrote.as_secs_f64()
    );
    baseline.fill(&stock, &sold)?;

    let every = Scope::default();
    let ten = Scope { stores: (0..10).map(store).collect(), item: None };
    let one_item = Scope { stores: vec![], item: Some(item(0)) };
    let reports: [(&str, Box<Report<'_>>, BaselineQuery); 5] = [
        (
            "stock on hand, every item and store",
            Box::new(|| Ok(db.stock_on_hand(&every)?.len())),
            BaselineQuery::Stock(None),
        ),
        (
            "stock on hand, one item",
            Box::new(|| Ok(db.stock_on_hand(&one_item)?.len())),
            BaselineQuery::Stock(Some(item(0))),
        ),
        (
            "value of all stock, every store",
            Box::new(|| Ok(db.stock_value(&every)?.len())),
            BaselineQuery::Value(vec![]),
        ),
        (
            "value of all stock, 10 stores",
            Box::new(|| Ok(db.stock_value(&ten)?.len())),
            BaselineQuery::Value(ten.stores.clone()),
        ),
        (
            "monthly usage of the busiest item",
            Box::new(|| Ok(db.monthly_usage(&every, &item(0))?.len())),
            BaselineQuery::Usage(item(0)),
        ),
    ];
    for (name, report, query) in &reports {
        let (ours, rows) = best_of_three(report)?;
        let (theirs, base_rows) = best_of_three(|| baseline.query(query))?;
        assert_eq!(rows, base_rows, "{name}: the report and the baseline give as many rows");
        println!(
            "  {name:<38} {:>8.1} ms  ({rows} rows)   by hand {:>8.1} ms   ratio {:>4.0}%",
            ms(ours),
            ms(theirs),
            100.0 * theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn best_of_three<E>(mut f: impl FnMut() -> Result<usize, E>) -> Result<(Duration, usize), E> {
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..3 {
        let started = Instant::now();
        rows = f()?;
        best = best.min(started.elapsed());
    }
    Ok((best, rows))
}

/// One report as Outpost makes it: how many rows it gave.
type Report<'d> = dyn Fn() -> Result<usize, Box<dyn std::error::Error>> + 'd;

enum BaselineQuery {
    Stock(Option<String>),
    Value(Vec<String>),
    Usage(String),
}

impl Baseline<'_> {
    fn fill(&mut self, stock: &[Stock], sold: &[Sold]) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Baseline::Sqlite(conn) => {
                conn.execute_batch(
                    "CREATE TABLE raw_stock (store_id TEXT, item_id TEXT, location_id TEXT, packs REAL, pack_size REAL, cost REAL);
                     CREATE TABLE raw_sold (store_id TEXT, item_id TEXT, invoice TEXT, month TEXT, packs REAL, pack_size REAL);",
                )?;
                let tx = conn.unchecked_transaction()?;
                {
                    let mut insert = tx.prepare("INSERT INTO raw_stock VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
                    for s in stock {
                        insert.execute(rusqlite::params![s.0, s.1, s.2, s.3, s.4, s.5])?;
                    }
                    let mut insert = tx.prepare("INSERT INTO raw_sold VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
                    for s in sold {
                        insert.execute(rusqlite::params![s.0, s.1, s.2, s.3, s.4, s.5])?;
                    }
                }
                tx.execute_batch(
                    "CREATE INDEX raw_stock_cover ON raw_stock (store_id, item_id, location_id, packs, pack_size, cost);
                     CREATE INDEX raw_sold_item ON raw_sold (item_id, store_id, month, packs, pack_size); ANALYZE;",
                )?;
                tx.commit()?;
            }
            #[cfg(feature = "postgres")]
            Baseline::Postgres(client) => {
                client.batch_execute(
                    "CREATE TABLE raw_stock (store_id TEXT, item_id TEXT, location_id TEXT, packs float8, pack_size float8, cost float8);
                     CREATE TABLE raw_sold (store_id TEXT, item_id TEXT, invoice TEXT, month TEXT, packs float8, pack_size float8);",
                )?;
                let col = |f: fn(&Stock) -> String| stock.iter().map(f).collect::<Vec<_>>();
                let num = |f: fn(&Stock) -> f64| stock.iter().map(f).collect::<Vec<_>>();
                client.execute(
                    "INSERT INTO raw_stock SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[])",
                    &[&col(|s| s.0.clone()), &col(|s| s.1.clone()), &col(|s| s.2.clone()), &num(|s| s.3), &num(|s| s.4), &num(|s| s.5)],
                )?;
                let col = |f: fn(&Sold) -> String| sold.iter().map(f).collect::<Vec<_>>();
                let num = |f: fn(&Sold) -> f64| sold.iter().map(f).collect::<Vec<_>>();
                client.execute(
                    "INSERT INTO raw_sold SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[])",
                    &[&col(|s| s.0.clone()), &col(|s| s.1.clone()), &col(|s| s.2.clone()), &col(|s| s.3.clone()), &num(|s| s.4), &num(|s| s.5)],
                )?;
                client.batch_execute(
                    "CREATE INDEX raw_stock_cover ON raw_stock (store_id, item_id, location_id) INCLUDE (packs, pack_size, cost);
                     CREATE INDEX raw_sold_item ON raw_sold (item_id, store_id) INCLUDE (month, packs, pack_size);",
                )?;
                // As autovacuum leaves a table at rest (the visibility map lets a scan skip the
                // rows), for both sides alike.
                for table in ["raw_stock", "raw_sold", "record"] {
                    client.batch_execute(&format!("VACUUM ANALYZE {table}"))?;
                }
            }
            Baseline::None(_) => {}
        }
        Ok(())
    }

    fn query(&mut self, query: &BaselineQuery) -> Result<usize, Box<dyn std::error::Error>> {
        const STOCK: &str =
            "SELECT store_id, item_id, location_id, count(*), sum(packs * pack_size), sum(packs * cost) FROM raw_stock";
        const VALUE: &str = "SELECT store_id, count(*), sum(packs * pack_size), sum(packs * cost) FROM raw_stock";
        const USAGE: &str = "SELECT store_id, month, sum(packs * pack_size) FROM raw_sold";
        match self {
            Baseline::Sqlite(conn) => {
                let (sql, param) = match query {
                    BaselineQuery::Stock(None) => (format!("{STOCK} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"), None),
                    BaselineQuery::Stock(Some(item)) => {
                        (format!("{STOCK} WHERE item_id = ?1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"), Some(item.clone()))
                    }
                    BaselineQuery::Value(stores) if stores.is_empty() => {
                        (format!("{VALUE} GROUP BY 1 ORDER BY 1"), None)
                    }
                    BaselineQuery::Value(stores) => (
                        format!("{VALUE} WHERE store_id IN (SELECT value FROM json_each(?1)) GROUP BY 1 ORDER BY 1"),
                        Some(json!(stores).to_string()),
                    ),
                    BaselineQuery::Usage(item) => {
                        (format!("{USAGE} WHERE item_id = ?1 GROUP BY 1, 2 ORDER BY 2, 1"), Some(item.clone()))
                    }
                };
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = match param {
                    Some(p) => stmt.query_map([p], |_| Ok(()))?.count(),
                    None => stmt.query_map([], |_| Ok(()))?.count(),
                };
                Ok(rows)
            }
            #[cfg(feature = "postgres")]
            Baseline::Postgres(client) => {
                let rows = match query {
                    BaselineQuery::Stock(None) => {
                        client.query(&format!("{STOCK} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"), &[])?
                    }
                    BaselineQuery::Stock(Some(item)) => client
                        .query(&format!("{STOCK} WHERE item_id = $1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"), &[item])?,
                    BaselineQuery::Value(stores) if stores.is_empty() => {
                        client.query(&format!("{VALUE} GROUP BY 1 ORDER BY 1"), &[])?
                    }
                    BaselineQuery::Value(stores) => {
                        client.query(&format!("{VALUE} WHERE store_id = ANY($1) GROUP BY 1 ORDER BY 1"), &[stores])?
                    }
                    BaselineQuery::Usage(item) => {
                        client.query(&format!("{USAGE} WHERE item_id = $1 GROUP BY 1, 2 ORDER BY 2, 1"), &[item])?
                    }
                };
                Ok(rows.len())
            }
            Baseline::None(_) => Ok(0),
        }
    }
}

/// The central server, ten sites, a hundred stores active on them, the items.
fn seed_network(db: &Db) -> Result<(), Box<dyn std::error::Error>> {
    let mut records =
        vec![("site".to_owned(), "central".to_owned(), json!({"name": "Central", "central": true, "primary": true}))];
    for s in 0..SITES {
        records.push(("site".into(), format!("site-{s:02}"), json!({"name": format!("Site {s}")})));
    }
    for i in 0..STORES {
        let store = store(i);
        records.push(("store".into(), store.clone(), json!({"name": format!("Store {i}")})));
        let site = format!("site-{:02}", i % SITES);
        records.push((
            "store_sync".into(),
            format!("{store}@{site}"),
            json!({"store_id": store, "site_id": site, "sync_type": "active"}),
        ));
    }
    for i in 0..ITEMS {
        records.push(("item".into(), item(i), json!({"code": format!("I{i}"), "name": format!("Medicine {i}")})));
    }
    db.transaction(|tx| {
        for (table, id, data) in &records {
            tx.apply_received(&Change {
                seq: Seq(0),
                table: table.clone(),
                id: RecordId::from(id.as_str()),
                action: Action::Upsert,
                data: serde_json::value::RawValue::from_string(data.to_string()).ok(),
                origin: SiteId::from("central"),
            })?;
        }
        tx.set_state(StateKey::LocalSite, "central")
    })?;
    Ok(())
}

/// Every record as its store's site pushes it, in transactions of 10,000.
fn write_pushed(db: &Db, stock: &[Stock], sold: &[Sold]) -> Result<(), Box<dyn std::error::Error>> {
    let site_of = |store: &str| SiteId::from(format!("site-{:02}", store[6..].parse::<usize>().unwrap_or(0) % SITES));
    let mut writes: Vec<(SiteId, Write)> = Vec::with_capacity(stock.len() + sold.len() + INVOICES);
    for (i, (store, item, location, packs, pack_size, cost)) in stock.iter().enumerate() {
        let line = json!({"store_id": store, "item_id": item, "location_id": location, "batch": format!("B{i:07}"),
                          "expiry_date": "2027-06-30", "pack_size": pack_size, "total_number_of_packs": packs,
                          "cost_price_per_pack": cost, "sell_price_per_pack": cost * 1.2, "supplier_id": "name-cms"});
        writes.push((site_of(store), Write::upsert("stock_line", format!("sl-{i:07}"), &line)));
    }
    for (l, (store, item, invoice, month, packs, pack_size)) in sold.iter().enumerate() {
        if l % LINES_EACH == 0 {
            let header = json!({"store_id": store, "type": "customer_invoice", "status": "finalised",
                                "serial_number": l / LINES_EACH, "finalised_date": format!("{month}-15")});
            writes.push((site_of(store), Write::upsert("transaction", invoice.as_str(), &header)));
        }
        let line = json!({"store_id": store, "transaction_id": invoice, "item_id": item, "pack_size": pack_size,
                          "number_of_packs": packs, "cost_price_per_pack": 1.0, "stock_line_id": "none"});
        writes.push((site_of(store), Write::upsert("transaction_line", format!("{invoice}-{l}"), &line)));
    }
    for chunk in writes.chunks(10_000) {
        db.transaction(|tx| {
            for (site, write) in chunk {
                tx.write_as(write.incoming(), site)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
