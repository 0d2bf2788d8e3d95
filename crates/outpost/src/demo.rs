//! `outpost demo`: a whole network on this machine. A central server (the primary too) serves
//! on loopback; three remote sites initialise from it, make stock and transactions offline,
//! then sync; a patient moves to another home store, and a site that becomes a collector
//! receives what the store already holds. Everything is left in a directory a person can
//! inspect afterwards.

use central::{admin, Engine};
use serde_json::json;
use site::sync::Step;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use store::{Db, Write};

const MARKER: &str = ".outpost-demo";
const SITES: [(&str, &str, bool); 3] =
    [("north", "north-hospital", false), ("south", "south-clinic", false), ("east", "east-health-post", true)];
const ITEMS: usize = 400;

pub fn run(dir: &Path, transactions: usize) -> Result<(), String> {
    let started = Instant::now();
    prepare_dir(dir)?;
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: &dyn std::fmt::Display| format!("{what}: {e}")
    };

    // The central server, which is also the primary.
    let central_db = Arc::new(open(&dir.join("central"))?);
    let engine =
        admin::init(&central_db, &"central".into(), None).map_err(|e| fail("creating the central server")(&e))?;
    let admin_password = admin::new_password();
    admin::set_admin_password(&central_db, &admin_password).map_err(|e| fail("setting the administrator")(&e))?;
    admin::add_store(&engine, &"central-warehouse".into(), &"central".into(), false).map_err(|e| e.to_string())?;
    let mut passwords = Vec::new();
    for (site, store, mobile) in SITES {
        passwords.push(admin::add_site(&engine, &site.into(), mobile).map_err(|e| e.to_string())?);
        admin::add_store(&engine, &store.into(), &site.into(), false).map_err(|e| e.to_string())?;
    }
    admin::add_store(&engine, &"north-dispensary".into(), &"north".into(), true).map_err(|e| e.to_string())?;
    admin::add_store(&engine, &"south-dispensary".into(), &"south".into(), true).map_err(|e| e.to_string())?;
    // The hospital and the clinic supply each other: each is a transfer store on the other's site.
    admin::set_sync_type(&engine, &"north-hospital".into(), &"south".into(), model::SyncType::Transfer)
        .map_err(|e| e.to_string())?;
    admin::set_sync_type(&engine, &"south-clinic".into(), &"north".into(), model::SyncType::Transfer)
        .map_err(|e| e.to_string())?;
    central_data(&engine)?;
    println!("central server: {} sites, {} stores, {ITEMS} items", SITES.len() + 1, SITES.len() + 2);

    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(|e| e.to_string())?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let server = engine.clone();
    runtime.spawn(async move { central::serve(server, listener, central::Limits::default()).await });
    println!("central server listening on {url}\n");

    // Each site: initialise, then receive its first data.
    let mut sites = Vec::new();
    for ((site, store, _), password) in SITES.iter().zip(&passwords) {
        let site::InitReport { db, client, .. } =
            site::initialise(&dir.join(site), &url, &model::SiteId::from(*site), password, "")
                .map_err(|e| format!("initialising {site}: {e}"))?;
        sites.push((*site, *store, db, client));
    }
    let mut timings = Vec::new();
    for (site, _, db, client) in &sites {
        timings.push(sync(site, "initialisation", db, client)?);
    }

    // Offline work: stock and transactions on every site, patients in the dispensary, a message.
    for (i, (site, store, db, _)) in sites.iter().enumerate() {
        let writes = site_work(site, store, i, transactions);
        let count = writes.len();
        db.write(&writes).map_err(|e| format!("writing on {site}: {e}"))?;
        println!("{site}: {count} records written offline");
        if let Err(refused) = db.write(&[Write::upsert("item", "item-0001", &json!({"name": "renamed here"}))]) {
            println!("{site}: editing an item here is refused, as it should be: {refused}");
        }
    }
    println!();

    // Everyone syncs twice: the second round delivers what others pushed after a site pulled.
    for round in ["push and pull", "catch up"] {
        for (site, _, db, client) in &sites {
            timings.push(sync(site, round, db, client)?);
        }
    }

    // A patient moves to another home store, on the central server: north hands it over on its
    // next sync, and south receives it with its records.
    let patient = model::RecordId::from("patient-001");
    let outcome = admin::move_patient(&engine, &patient, &"south-dispensary".into()).map_err(|e| e.to_string())?;
    let waits = match outcome {
        admin::MoveOutcome::Pending { old_site } => format!("pending until `{old_site}` syncs"),
        admin::MoveOutcome::Done => "done".to_owned(),
    };
    println!("\ncentral: `patient-001` moves from north-dispensary to south-dispensary ({waits})");
    let [north, south, east] = &sites[..] else { unreachable!("three sites") };
    let (north, south, east): (&Node, &Node, &Node) = (north, south, east);
    timings.push(sync(north.0, "hand over", &north.2, &north.3)?);
    timings.push(sync(south.0, "receive patient", &south.2, &south.3)?);
    let home = south.2.record("patient", patient.as_str()).map_err(|e| e.to_string())?;
    let home = home.as_ref().and_then(|p| p["home_store_id"].as_str()).unwrap_or("(not there)").to_owned();
    println!("south: `patient-001` is held here now, home store `{home}`");

    // Transfers between stores whose sites never talk to each other: the central server makes
    // the other half of each, once, and routes it.
    println!("\ntransfers:");
    transfers(north, south, east, &mut timings)?;

    // The health post becomes a collector of the hospital: it receives what the hospital holds
    // already (a backfill), not only later changes.
    admin::set_sync_type(&engine, &"north-hospital".into(), &"east".into(), model::SyncType::Collector)
        .map_err(|e| e.to_string())?;
    timings.push(sync(east.0, "backfill", &east.2, &east.3)?);
    let held = east.2.count_records().map_err(|e| e.to_string())?;
    println!("east: now a collector of north-hospital, holds {held} records");

    println!("\nwhat each node holds:");
    let summarise = |name: &str, db: &Db| -> Result<(), String> {
        let counts = db.counts_by_table().map_err(|e| e.to_string())?;
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        let pick = |t: &str| counts.iter().find(|(n, _)| n == t).map_or(0, |(_, n)| *n);
        println!(
            "  {name:<8} {total:>6} records: {:>4} items, {:>5} stock lines, {:>5} transactions, {:>5} transaction lines, {:>3} patients, {:>2} messages",
            pick("item"),
            pick("stock_line"),
            pick("transaction"),
            pick("transaction_line"),
            pick("patient"),
            pick("message")
        );
        Ok(())
    };
    summarise("central", &central_db)?;
    for (site, _, db, _) in &sites {
        summarise(site, db)?;
    }
    println!("\nsyncs:");
    for line in &timings {
        println!("  {line}");
    }
    println!(
        "\ndone in {:.1?}. The data is in {}: try `outpost site status --data {}/north`,\n`outpost central status --data {}/central`, or `outpost central serve --data {}/central` for the dashboard\n(http://127.0.0.1:8640/), which asks for the administrator password: {admin_password}",
        started.elapsed(),
        dir.display(),
        dir.display(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

fn prepare_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            let empty = std::fs::read_dir(dir).map_err(|e| e.to_string())?.next().is_none();
            if !empty {
                return Err(format!("{} exists and is not a demo directory; choose another with --dir", dir.display()));
            }
        }
        std::fs::remove_dir_all(dir).map_err(|e| format!("clearing {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by `outpost demo`; safe to delete\n").map_err(|e| e.to_string())
}

fn open(dir: &Path) -> Result<Db, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Db::open(&dir.join("outpost.sqlite")).map_err(|e| format!("opening {}: {e}", dir.display()))
}

fn sync(site: &str, what: &str, db: &Db, client: &site::Client) -> Result<String, String> {
    let mut last = None;
    let mut progress = |step: Step, _: u64, _: u64| last = Some(step);
    let report = site::sync_once(db, client, &mut progress).map_err(|e| format!("{site} ({what}): {e}"))?;
    let line = format!(
        "{site:<6} {what:<15} {:>8.1?}  pushed {:>5} (rejected {}), pulled {:>5}, {} sent, {} received",
        report.duration,
        report.pushed,
        report.rejected,
        report.pulled,
        crate::output::human_bytes(report.bytes_sent),
        crate::output::human_bytes(report.bytes_received)
    );
    println!("{line}");
    Ok(line)
}

/// Central data, edited on the primary: items, units, suppliers and customers, dispensary data.
fn central_data(engine: &Engine) -> Result<(), String> {
    let mut writes = vec![
        Write::upsert("unit", "unit-tab", &json!({"name": "tablet"})),
        Write::upsert("unit", "unit-vial", &json!({"name": "vial"})),
        Write::upsert("name", "supplier-cms", &json!({"name": "Central Medical Stores", "supplier": true})),
        Write::upsert("abbreviation", "abbr-bd", &json!({"abbreviation": "bd", "expansion": "twice a day"})),
        Write::upsert("option", "centralised_procurement", &json!({"value": false})),
    ];
    for i in 1..=ITEMS {
        let unit = if i % 5 == 0 { "unit-vial" } else { "unit-tab" };
        writes.push(Write::upsert(
            "item",
            format!("item-{i:04}"),
            &json!({"code": format!("I{i:04}"), "name": format!("Essential medicine {i}"), "unit_id": unit, "default_pack_size": 10 * (1 + i % 10)}),
        ));
    }
    engine.write(&writes).map_err(|e| format!("writing central data: {e}"))?;
    Ok(())
}

type Node = (&'static str, &'static str, Db, site::Client);

/// A stock transfer (north-hospital to south-clinic), a mobile requisition (the east health
/// post asks north-hospital, whose invoice comes back to it) and an internal requisition
/// (south-clinic's purchase order filled by north-hospital), each synced through the central
/// server, with what arrives where.
fn transfers(north: &Node, south: &Node, east: &Node, timings: &mut Vec<String>) -> Result<(), String> {
    let write =
        |node: &Node, writes: Vec<Write>| node.2.write(&writes).map_err(|e| format!("writing on {}: {e}", node.0));
    let read = |node: &Node, table: &str, id: &str| node.2.record(table, id).map_err(|e| e.to_string());
    let line = |store: &str, transaction: &str, item: usize, packs: u32| {
        json!({"store_id": store, "transaction_id": transaction, "item_id": format!("item-{item:04}"), "batch": format!("T{item:04}"),
               "expiry_date": "2027-09-30", "pack_size": 10, "number_of_packs": packs, "cost_price_per_pack": 2.5})
    };
    let serial = |doc: &Option<serde_json::Value>| {
        doc.as_ref().map_or("(not there)".to_owned(), |d| d["serial_number"].to_string())
    };

    // A stock transfer.
    let mut writes: Vec<Write> = (1..=3)
        .map(|l| {
            Write::upsert("transaction_line", format!("transfer-1-{l}"), &line("north-hospital", "transfer-1", l, 5))
        })
        .collect();
    writes.push(Write::upsert(
        "transaction",
        "transfer-1",
        &json!({"store_id": "north-hospital", "other_store_id": "south-clinic",
        "type": "customer_invoice", "status": "finalised", "serial_number": 9001}),
    ));
    write(north, writes)?;
    println!("north: customer invoice `transfer-1` to south-clinic finalised (3 lines)");
    timings.push(sync(north.0, "send transfer", &north.2, &north.3)?);
    timings.push(sync(south.0, "receive transfer", &south.2, &south.3)?);
    let received = read(south, "transaction", "transfer-1:received")?;
    println!(
        "south: supplier invoice `transfer-1:received` arrived on hold; serial -1 replaced by {}",
        serial(&received)
    );
    timings.push(sync(north.0, "transfer log", &north.2, &north.3)?);
    let log = read(north, "message", "transfer-1:log")?;
    println!("north: log message back: {}", log.as_ref().and_then(|m| m["body"].as_str()).unwrap_or("(not there)"));

    // A mobile requisition.
    write(
        east,
        vec![
            Write::upsert(
                "requisition_line",
                "request-1-1",
                &json!({"store_id": "east-health-post", "requisition_id": "request-1", "item_id": "item-0004", "requested_quantity": 60}),
            ),
            Write::upsert(
                "requisition",
                "request-1",
                &json!({"store_id": "east-health-post", "other_store_id": "north-hospital", "type": "request", "status": "finalised"}),
            ),
        ],
    )?;
    println!("east (mobile): request requisition `request-1` to north-hospital finalised");
    timings.push(sync(east.0, "send request", &east.2, &east.3)?);
    timings.push(sync(north.0, "receive request", &north.2, &north.3)?);
    let response = read(north, "requisition", "request-1:received")?;
    println!(
        "north: customer requisition `request-1:received` arrived ({})",
        if response.is_some() { "status new" } else { "not there" }
    );
    write(
        north,
        vec![
            Write::upsert("transaction_line", "fill-1-1", &line("north-hospital", "fill-1", 4, 6)),
            Write::upsert(
                "transaction",
                "fill-1",
                &json!({"store_id": "north-hospital", "other_store_id": "east-health-post",
            "type": "customer_invoice", "status": "finalised", "serial_number": 9002, "requisition_id": "request-1:received"}),
            ),
        ],
    )?;
    println!("north: customer invoice `fill-1` fulfils it, finalised");
    timings.push(sync(north.0, "send supply", &north.2, &north.3)?);
    timings.push(sync(east.0, "receive supply", &east.2, &east.3)?);
    let supplied = read(east, "transaction", "fill-1:received")?;
    println!(
        "east: supplier invoice `fill-1:received` arrived for requisition `{}`; serial -1 replaced by {}",
        supplied.as_ref().and_then(|s| s["requisition_id"].as_str()).unwrap_or("?"),
        serial(&supplied)
    );

    // An internal requisition.
    write(
        south,
        vec![
            Write::upsert(
                "purchase_order_line",
                "order-1-1",
                &json!({"store_id": "south-clinic", "purchase_order_id": "order-1", "item_id": "item-0007", "quantity": 80}),
            ),
            Write::upsert(
                "purchase_order",
                "order-1",
                &json!({"store_id": "south-clinic", "other_store_id": "north-hospital", "status": "confirmed"}),
            ),
        ],
    )?;
    println!("south: purchase order `order-1` to north-hospital confirmed");
    timings.push(sync(south.0, "send order", &south.2, &south.3)?);
    timings.push(sync(north.0, "receive order", &north.2, &north.3)?);
    let Some(mut to_fill) = read(north, "transaction", "order-1:received")? else {
        return Err("north did not receive the invoice for south's order".into());
    };
    println!(
        "north: customer invoice `order-1:received` arrived to fill it; serial -1 replaced by {}",
        to_fill["serial_number"]
    );
    to_fill["status"] = json!("finalised");
    write(
        north,
        vec![
            Write::upsert("transaction_line", "order-1-fill", &line("north-hospital", "order-1:received", 7, 8)),
            Write::upsert("transaction", "order-1:received", &to_fill),
        ],
    )?;
    println!("north: a line added and the invoice finalised");
    timings.push(sync(north.0, "send goods", &north.2, &north.3)?);
    timings.push(sync(south.0, "receive goods", &south.2, &south.3)?);
    let goods = read(south, "goods_received", "order-1:received:received")?;
    let ordered = read(south, "purchase_order_line", "order-1-1")?;
    println!(
        "south: goods received `order-1:received:received` {}; order line `order-1-1` received {} of 80",
        if goods.is_some() { "arrived" } else { "not there" },
        ordered.as_ref().map_or("?".to_owned(), |l| l["received_quantity"].to_string())
    );
    Ok(())
}

/// What a site does between syncs: stock arrives, stock goes out.
fn site_work(site: &str, store: &str, index: usize, transactions: usize) -> Vec<Write> {
    let mut writes = Vec::new();
    for i in 1..=ITEMS / 2 {
        writes.push(Write::upsert(
            "stock_line",
            format!("{store}-sl-{i:04}"),
            &json!({"store_id": store, "item_id": format!("item-{i:04}"), "batch": format!("B{index}{i:04}"), "expiry_date": "2027-12-31", "pack_size": 10, "total_number_of_packs": 100 + i, "cost_price_per_pack": 2.5}),
        ));
    }
    for t in 1..=transactions {
        let id = format!("{store}-tx-{t:05}");
        let kind = if t % 3 == 0 { "supplier_invoice" } else { "customer_invoice" };
        writes.push(Write::upsert(
            "transaction",
            id.clone(),
            &json!({"store_id": store, "type": kind, "name_id": "supplier-cms", "status": "finalised", "serial_number": t, "entry_date": "2026-11-30"}),
        ));
        for l in 1..=2 {
            let item = 1 + (t * 7 + l) % (ITEMS / 2);
            writes.push(Write::upsert(
                "transaction_line",
                format!("{id}-{l}"),
                &json!({"store_id": store, "transaction_id": id, "item_id": format!("item-{item:04}"), "number_of_packs": 1 + t % 9, "pack_size": 10}),
            ));
        }
    }
    if site == "north" {
        for p in 1..=40 {
            writes.push(Write::upsert(
                "patient",
                format!("patient-{p:03}"),
                &json!({"name": format!("Patient {p}"), "home_store_id": "north-dispensary", "date_of_birth": "1990-01-01"}),
            ));
        }
        writes.push(Write::upsert(
            "message",
            "msg-north-south-1",
            &json!({"sending_store_id": store, "receiving_store_id": "south-clinic", "body": "Amoxicillin stock-out expected next week"}),
        ));
    }
    writes
}
