//! Stock transfers processed by the central server, beside a baseline measured in the same run:
//! 10,000 customer invoices of 10 lines each, pushed by one site (`north`) for stores on two
//! other sites, in the site's batches and in its log's order (an invoice's lines, then the
//! invoice), twice: through the central server's push alone (`Engine::push`, the code an HTTP
//! push runs), and as the site sends them, over HTTP on loopback (`site::Client::push`, the
//! batches encoded, sent, decoded and answered).
//!
//! - **processed**: the invoices are finalised, so each makes a supplier invoice of 10 lines in
//!   the other store and a log message, in the push's transaction;
//! - **baseline**: the same records, the same sizes, with status `confirmed` (one byte longer),
//!   which the central server stores and routes without making anything: the plain push.
//!
//! Each run gets a new central database; each is run three times, alternating, and the fastest
//! of each is kept. Prints invoices per second for both, and the ratio (target: at least 50%),
//! for each way in.
//!
//! `cargo bench -p outpost --bench transfers` (OUTPOST_BENCH_INVOICES changes the count).

use central::admin;
use model::{Action, Change, Seq, SiteId};
use protocol::PushRequest;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;
use store::{Db, Write};

const LINES: usize = 10;
const ITEMS: usize = 50;
/// Changes per push batch, as a site sends them.
const BATCH: usize = 5_000;
/// Runs of each; the fastest is reported.
const ROUNDS: usize = 3;

/// How the pushed batches reach the central server.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// `Engine::push` called in this process.
    Engine,
    /// A site's push over HTTP on loopback.
    Http,
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("OUTPOST_BENCH_INVOICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    println!(
        "{n} customer invoices of {LINES} lines ({} changes) pushed by one site, best of {ROUNDS}:",
        n * (LINES + 1)
    );
    for (via, name) in [(Via::Engine, "through Engine::push"), (Via::Http, "over HTTP on loopback")] {
        // Best of three, alternating, so that a busy moment of a shared machine hits both alike.
        let (mut baseline, mut processed) = (run(n, "confirmed", via)?, run(n, "finalised", via)?);
        for _ in 1..ROUNDS {
            let (plain, made) = (run(n, "confirmed", via)?, run(n, "finalised", via)?);
            if plain.secs < baseline.secs {
                baseline = plain;
            }
            if made.secs < processed.secs {
                processed = made;
            }
        }
        let (plain, made) = (n as f64 / baseline.secs, n as f64 / processed.secs);
        println!("{name}:");
        println!("  plain push (not finalised, nothing made): {:.2} s, {plain:.0} invoices/s", baseline.secs);
        println!(
            "  processed (finalised: {} supplier invoices, {} lines, {} log messages made): {:.2} s, {made:.0} invoices/s",
            processed.halves, processed.lines, processed.messages, processed.secs
        );
        println!("  ratio: {:.0}% of the plain push (target: at least 50%)", 100.0 * made / plain);
        assert_eq!(baseline.halves, 0, "the baseline makes nothing");
        assert_eq!(processed.halves, n, "one supplier invoice per invoice");
        assert_eq!(processed.lines, n * LINES, "with its lines");
    }
    Ok(())
}

struct Measured {
    secs: f64,
    halves: usize,
    lines: usize,
    messages: usize,
}

fn run(n: usize, status: &str, via: Via) -> Result<Measured, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Arc::new(Db::open(&dir.path().join("central.sqlite"))?);
    let engine = admin::init(&db, &"central".into(), None)?;
    let mut password = String::new();
    for site in ["north", "south", "east"] {
        let made = admin::add_site(&engine, &site.into(), false)?;
        if site == "north" {
            password = made;
        }
        admin::add_store(&engine, &format!("store-{site}").as_str().into(), &site.into(), false)?;
    }
    let items: Vec<Write> = (0..ITEMS)
        .map(|i| {
            Write::upsert(
                "item",
                format!("item-{i:03}"),
                &json!({"code": format!("I{i:03}"), "name": format!("Medicine {i}")}),
            )
        })
        .collect();
    engine.write(&items)?;

    let north = SiteId::from("north");
    let changes = invoices(n, status, &north);
    let batches: Vec<Vec<Change>> = changes.chunks(BATCH).map(<[Change]>::to_vec).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    let client = match via {
        Via::Engine => None,
        Via::Http => {
            let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            let url = format!("http://{}", listener.local_addr()?);
            runtime.spawn(central::serve(engine.clone(), listener, central::Limits::default()));
            Some(site::Client::new(&url, &north, &password))
        }
    };
    let started = Instant::now();
    let mut after = engine.acked(&north)?;
    for batch in batches {
        let last = batch.last().map(|c| c.seq).unwrap_or(after);
        let answer = match &client {
            None => engine.push(&north, after, &batch)?,
            Some(client) => client.push(&PushRequest { after, changes: batch })?,
        };
        assert!(answer.rejections.is_empty(), "refused: {:?}", answer.rejections.first());
        after = last;
    }
    let secs = started.elapsed().as_secs_f64();
    let count = |sql: &str| -> Result<usize, Box<dyn std::error::Error>> {
        let conn = rusqlite::Connection::open(dir.path().join("central.sqlite"))?;
        Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as usize)
    };
    Ok(Measured {
        secs,
        halves: count("SELECT count(*) FROM record WHERE tbl = 'transaction' AND id LIKE '%:received'")?,
        lines: count("SELECT count(*) FROM record WHERE tbl = 'transaction_line' AND id LIKE '%:received'")?,
        messages: count("SELECT count(*) FROM record WHERE tbl = 'message'")?,
    })
}

/// The site's log: each invoice's lines, then the invoice, for `store-south` and `store-east`
/// in turn.
fn invoices(n: usize, status: &str, origin: &SiteId) -> Vec<Change> {
    let mut changes = Vec::with_capacity(n * (LINES + 1));
    let mut push = |table: &str, id: String, doc: serde_json::Value| {
        let data = RawValue::from_string(doc.to_string()).expect("json");
        changes.push(Change {
            seq: Seq(changes.len() as i64 + 1),
            table: table.to_owned(),
            id: id.into(),
            action: Action::Upsert,
            data: Some(data),
            origin: origin.clone(),
        });
    };
    for i in 0..n {
        let id = format!("ci-{i:06}");
        let to = if i % 2 == 0 { "store-south" } else { "store-east" };
        for l in 0..LINES {
            let line = json!({"store_id": "store-north", "transaction_id": id, "item_id": format!("item-{:03}", (i + l) % ITEMS),
                              "batch": format!("B{l}"), "expiry_date": "2027-06-30", "pack_size": 10.0,
                              "number_of_packs": 1.0 + l as f64, "cost_price_per_pack": 2.5, "sell_price_per_pack": 3.0});
            push("transaction_line", format!("{id}-{l}"), line);
        }
        let invoice = json!({"store_id": "store-north", "other_store_id": to, "type": "customer_invoice",
                             "status": status, "serial_number": i + 1, "entry_date": "2026-12-01"});
        push("transaction", id, invoice);
    }
    changes
}
