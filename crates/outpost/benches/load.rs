//! Load: 1,000 simulated sites push concurrently (each a few small batches) to one central
//! server over loopback, on PostgreSQL (with the `postgres` feature and a server to reach) and
//! then on SQLite. Prints, for each, changes ingested per second, p50/p99 push latency, and the
//! rate at the end of the run beside the rate at its start (it must not fall as the log grows).
//!
//! `cargo bench -p outpost --features postgres --bench load`
//! (OUTPOST_LOAD_SITES, OUTPOST_LOAD_BATCHES, OUTPOST_LOAD_CHANGES change the shape;
//! OUTPOST_TEST_POSTGRES the database, default postgres://postgres@127.0.0.1:5432/test).

use central::{admin, Engine};
use model::{Action, Change, RecordId, Seq, SiteId};
use protocol::PushRequest;
use serde_json::value::RawValue;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use store::{Db, Write};

struct Shape {
    sites: usize,
    batches: usize,
    changes: usize,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shape = Shape {
        sites: env("OUTPOST_LOAD_SITES", 1000),
        batches: env("OUTPOST_LOAD_BATCHES", 5),
        changes: env("OUTPOST_LOAD_CHANGES", 20),
    };
    println!(
        "load: {} sites pushing {} batches of {} changes each, concurrently, over loopback",
        shape.sites, shape.batches, shape.changes
    );
    #[cfg(feature = "postgres")]
    {
        let url = std::env::var("OUTPOST_TEST_POSTGRES")
            .or_else(|_| std::env::var("DATABASE_URL"))
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("outpost_load_{}", std::process::id());
        match Db::open_postgres(&url, Some(&schema)) {
            Ok(db) => {
                let result = run("PostgreSQL", Arc::new(db), &shape);
                if let Ok(mut client) = postgres::Client::connect(&url, postgres::NoTls) {
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                }
                result?;
            }
            Err(e) => println!("PostgreSQL: skipped ({e})"),
        }
    }
    let dir = tempfile::tempdir()?;
    run("SQLite", Arc::new(Db::open(&dir.path().join("central.sqlite"))?), &shape)?;
    Ok(())
}

fn run(backend: &str, db: Arc<Db>, shape: &Shape) -> Result<(), Box<dyn std::error::Error>> {
    // The network: one store active on each site. The first site gets a real password; the
    // others share its hash, so that setting up a thousand sites is not a thousand argon2 runs.
    let engine = admin::init(&db, &"central".into(), None)?;
    let password = admin::add_site(&engine, &"site-0000".into(), false)?;
    let hash = db.password_hash(&SiteId::from("site-0000"))?.ok_or("the first site has a password")?;
    let names: Vec<String> = (0..shape.sites).map(|i| format!("site-{i:04}")).collect();
    let mut writes = Vec::new();
    for name in &names {
        writes.push(Write::upsert("site", name.as_str(), &serde_json::json!({"name": name, "kind": "desktop"})));
        let store = format!("store-{name}");
        writes.push(Write::upsert("store", store.as_str(), &serde_json::json!({"name": store})));
        writes.push(Write::upsert(
            "store_sync",
            format!("{store}@{name}"),
            &serde_json::json!({"store_id": store, "site_id": name, "sync_type": "active"}),
        ));
    }
    Engine::write(&engine, &writes)?;
    db.transaction(|tx| {
        for name in &names[1..] {
            tx.set_password_hash(&SiteId::from(name.as_str()), &hash, true)?;
        }
        Ok(())
    })?;

    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    // Every simulated site connects from 127.0.0.1: no per-address limit.
    let limits = central::Limits { per_address: 0, ..central::Limits::default() };
    runtime.spawn(central::serve(engine.clone(), listener, limits));

    // Every site signs in once first (argon2 is paid here, not in the measured pushes).
    let clients: Vec<site::Client> =
        names.iter().map(|n| site::Client::new(&url, &SiteId::new(n), &password)).collect();
    let started_warmup = Instant::now();
    std::thread::scope(|scope| {
        for chunk in clients.chunks(clients.len().div_ceil(8)) {
            scope.spawn(move || chunk.iter().for_each(|c| drop(c.status())));
        }
    });
    let warmup = started_warmup.elapsed();

    let barrier = Arc::new(Barrier::new(shape.sites));
    let started = Instant::now();
    let mut samples: Vec<(Duration, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter()
            .zip(&names)
            .map(|(client, name)| {
                let barrier = barrier.clone();
                scope.spawn(move || {
                    barrier.wait();
                    let mut done = Vec::new();
                    for b in 0..shape.batches {
                        let changes = (0..shape.changes).map(|c| stock_line(name, b * shape.changes + c + 1)).collect();
                        let sent = Instant::now();
                        let after = Seq((b * shape.changes) as i64);
                        let answer = client.push(&PushRequest { after, changes });
                        let end = Instant::now();
                        match answer {
                            Ok(a) if a.rejections.is_empty() => done.push((end - sent, end - started)),
                            Ok(a) => eprintln!("{name}: {} rejected: {:?}", a.rejections.len(), a.rejections.first()),
                            Err(e) => eprintln!("{name}: push failed: {e}"),
                        }
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let elapsed = started.elapsed();
    let expected = shape.sites * shape.batches;
    let total_changes = samples.len() * shape.changes;

    let mut latencies: Vec<Duration> = samples.iter().map(|(l, _)| *l).collect();
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    samples.sort_by_key(|(_, at)| *at);
    // The rate over the first and the last quarter of the batches, by completion time.
    let quarter = samples.len() / 4;
    let rate = |part: &[(Duration, Duration)], from: Duration| -> f64 {
        let to = part.last().map_or(from, |(_, at)| *at);
        (part.len() * shape.changes) as f64 / (to - from).as_secs_f64().max(1e-9)
    };
    let first = rate(&samples[..quarter], Duration::ZERO);
    let last_start = samples.get(samples.len() - quarter - 1).map_or(Duration::ZERO, |(_, at)| *at);
    let last = rate(&samples[samples.len() - quarter..], last_start);
    let held = db.counts_by_table()?.iter().find(|(t, _)| t == "stock_line").map_or(0, |(_, n)| *n);

    println!("{backend}:");
    println!("  sign-in of {} sites (argon2, not measured below): {:.1?}", shape.sites, warmup);
    println!(
        "  {}/{expected} batches acknowledged, {total_changes} changes in {:.2?}; {held} stock lines held",
        samples.len(),
        elapsed
    );
    println!("  ingested: {:.0} changes/s", total_changes as f64 / elapsed.as_secs_f64());
    println!("  push latency: p50 {:.1?}, p99 {:.1?}", pct(0.5), pct(0.99));
    println!(
        "  rate in the first quarter: {first:.0} changes/s; in the last quarter: {last:.0} changes/s ({:.0}%)",
        100.0 * last / first.max(1e-9)
    );
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn stock_line(site: &str, n: usize) -> Change {
    let data = serde_json::json!({
        "store_id": format!("store-{site}"),
        "item_id": format!("item-{:04}", n % 400),
        "batch": format!("B{n:06}"),
        "expiry_date": "2027-12-31",
        "pack_size": 10,
        "total_packs": n,
        "cost_price_per_pack": 2.5,
    });
    Change {
        seq: Seq(n as i64),
        table: "stock_line".into(),
        id: RecordId(format!("{site}-sl-{n:05}")),
        action: Action::Upsert,
        data: RawValue::from_string(data.to_string()).ok(),
        origin: SiteId::from(site),
    }
}
