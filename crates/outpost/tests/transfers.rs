//! Transfers between stores (issue 12), between real processes on each backend: the central
//! server makes the responding half of a transfer between stores on different sites, a site
//! makes it at once between two of its own stores, each exactly once, and stock follows.

mod common;

use common::{count, dump_table, on_each_backend, record, run, Backend, Inspect, Network, Site};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use store::Write;

on_each_backend!(
    a_finalised_customer_invoice_makes_one_supplier_invoice_in_the_other_store_numbered_there,
    a_line_edited_after_its_invoice_was_finalised_still_reaches_the_supplier_invoice,
    between_two_stores_of_one_site_the_site_makes_the_supplier_invoice_at_once,
    a_request_requisition_makes_a_response_whose_invoice_comes_back_as_a_supplier_invoice,
    an_internal_requisition_makes_an_invoice_then_goods_received_and_the_order_learns_what_arrived,
    what_cannot_be_entered_is_refused_on_the_site_before_it_reaches_the_log,
    the_central_server_killed_after_making_halves_and_before_answering_makes_none_twice,
    a_transfer_whose_push_answer_is_lost_is_made_once,
    the_receiving_site_killed_during_the_pull_numbers_each_supplier_invoice_once,
    two_central_processes_on_one_database_make_each_half_once,
    with_centralised_procurement_the_primary_confirms_the_order_and_learns_what_was_received,
);

/// Items every site receives, and the stock `store` holds of them.
fn items_on(network: &Network) {
    for item in ["item-1", "item-2"] {
        network.central.write("item", item, &json!({"code": item, "name": format!("Medicine {item}")}));
    }
}

/// Enters records on a site in one batch, as `outpost site write` does each (the same checked
/// write, `Db::write`).
fn enter(site: &Site, records: &[(&str, &str, Value)]) {
    let writes: Vec<Write> = records.iter().map(|(table, id, doc)| Write::upsert(table, *id, doc)).collect();
    site.db().write(&writes).unwrap_or_else(|e| panic!("entering on `{}`: {e}", site.name));
}

fn stock(store: &str, id: &str, item: &str, packs: f64) -> (&'static str, String, Value) {
    let doc = json!({"store_id": store, "item_id": item, "batch": format!("B-{id}"), "expiry_date": "2027-06-30",
                     "pack_size": 10.0, "total_number_of_packs": packs, "cost_price_per_pack": 2.5});
    ("stock_line", id.to_owned(), doc)
}

fn line(store: &str, transaction: &str, item: &str, packs: f64) -> Value {
    json!({"store_id": store, "transaction_id": transaction, "item_id": item, "batch": "B1",
           "expiry_date": "2027-06-30", "pack_size": 10.0, "number_of_packs": packs, "cost_price_per_pack": 2.5})
}

/// A line that names the stock line it takes from.
fn named_stock(mut line: Value, stock_line: &str) -> Value {
    line["stock_line_id"] = json!(stock_line);
    line
}

fn invoice(from: &str, to: &str, status: &str) -> Value {
    json!({"store_id": from, "other_store_id": to, "type": "customer_invoice", "status": status, "serial_number": 7})
}

/// Stock on hand per item of `store` on a node: packs times pack size, from its stock lines.
fn on_hand(node: &(impl Inspect + ?Sized), store: &str) -> BTreeMap<String, f64> {
    let mut on_hand = BTreeMap::new();
    for doc in dump_table(node, "stock_line").values() {
        let doc: Value = serde_json::from_str(doc).expect("a stock line");
        if doc["store_id"] == store {
            let packs = doc["total_number_of_packs"].as_f64().unwrap_or(0.0) * doc["pack_size"].as_f64().unwrap_or(1.0);
            *on_hand.entry(doc["item_id"].as_str().unwrap_or_default().to_owned()).or_insert(0.0) += packs;
        }
    }
    on_hand
}

fn stock_of(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(item, n)| (item.to_string(), *n)).collect()
}

fn enter_stock(site: &Site, records: &[(&'static str, String, Value)]) {
    let borrowed: Vec<(&str, &str, Value)> = records.iter().map(|(t, id, d)| (*t, id.as_str(), d.clone())).collect();
    enter(site, &borrowed);
}

/// The seeds' stock transfer: a customer invoice from store A to store B, finalised on A's
/// site, makes a supplier invoice in B (serial -1, on hold, the same lines); B's site numbers it
/// with B's next supplier-invoice number and syncs that back; a log message reaches A's site.
/// Stock leaves A when the invoice is finalised and arrives in B when B finalises the supplier
/// invoice, and stock on hand is the same on every node that holds the store: its site, the
/// central server, and a collector. The two sites are never online at the same time. Later
/// edits of the invoice, and the same push again, never make a second half.
fn a_finalised_customer_invoice_makes_one_supplier_invoice_in_the_other_store_numbered_there(backend: &Backend) {
    let network = Network::with(backend, &["north", "south", "east"], |central| {
        central.sync_type("store-south", "east", "collector");
        central.sync_type("store-north", "east", "collector");
    });
    items_on(&network);
    let (north, south, east) = (network.site("north"), network.site("south"), network.site("east"));
    north.sync();
    south.sync();
    enter_stock(north, &[stock("store-north", "sl-n1", "item-1", 20.0), stock("store-north", "sl-n2", "item-2", 15.0)]);
    // The header first, finalised, then its lines: a batch is checked whole.
    enter(
        north,
        &[
            ("transaction", "ci-1", invoice("store-north", "store-south", "finalised")),
            ("transaction_line", "ci-1-a", named_stock(line("store-north", "ci-1", "item-1", 3.0), "sl-n1")),
            ("transaction_line", "ci-1-b", line("store-north", "ci-1", "item-2", 5.0)),
        ],
    );
    let north_left = stock_of(&[("item-1", 170.0), ("item-2", 100.0)]);
    assert_eq!(on_hand(north, "store-north"), north_left, "finalising took the stock from north");
    north.sync();

    let half = record(&network.central, "transaction", "ci-1:received").expect("the supplier invoice is made");
    assert_eq!(
        half,
        json!({"store_id": "store-south", "other_store_id": "store-north", "type": "supplier_invoice",
               "status": "on_hold", "serial_number": -1, "linked_transaction_id": "ci-1"})
    );
    let half_line = record(&network.central, "transaction_line", "ci-1-a:received").expect("its line");
    assert_eq!(half_line["store_id"], "store-south");
    assert_eq!(half_line["transaction_id"], "ci-1:received");
    assert_eq!(half_line["number_of_packs"], 3.0);
    assert_eq!(half_line["batch"], "B1");
    assert_eq!(on_hand(&network.central, "store-north"), north_left, "the central server's copy of north's stock");
    north.sync();
    let log = north.get("message", "ci-1:log").expect("the log message reaches north");
    assert!(log["body"].as_str().is_some_and(|b| b.contains("supplier invoice `ci-1:received`")), "{log}");

    // South comes online after north has gone.
    south.sync();
    let mut received = south.get("transaction", "ci-1:received").expect("south receives it");
    assert_eq!(received["serial_number"], 1, "numbered with south's next supplier-invoice number");
    assert_eq!(received["status"], "on_hold");
    assert!(south.get("transaction_line", "ci-1-b:received").is_some(), "with its lines");
    assert_eq!(on_hand(south, "store-south"), BTreeMap::new(), "no stock before south finalises it");
    received["status"] = json!("finalised");
    south.write("transaction", "ci-1:received", &received);
    let arrived = stock_of(&[("item-1", 30.0), ("item-2", 50.0)]);
    assert_eq!(on_hand(south, "store-south"), arrived, "finalising the supplier invoice added the stock");
    south.sync();
    assert_eq!(
        record(&network.central, "transaction", "ci-1:received").map(|t| t["serial_number"].clone()),
        Some(json!(1))
    );
    assert_eq!(on_hand(&network.central, "store-south"), arrived);
    east.sync();
    assert_eq!(on_hand(east, "store-south"), arrived, "a collector of south holds the same stock");
    assert_eq!(on_hand(east, "store-north"), north_left, "and of north");

    // A later edit of the invoice, and the same push again: never a second half, and the stock
    // is not taken twice.
    let mut edited = invoice("store-north", "store-south", "finalised");
    edited["comment"] = json!("sent with the Tuesday truck");
    north.write("transaction", "ci-1", &edited);
    assert_eq!(on_hand(north, "store-north"), north_left, "an edit of a finalised invoice moves no stock");
    north.sync();
    south.sync();
    let halves =
        count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'transaction' AND store_id = 'store-south'");
    assert_eq!(halves, 1, "exactly one supplier invoice");
    assert_eq!(south.get("transaction", "ci-1:received").map(|t| t["serial_number"].clone()), Some(json!(1)));
}

/// The change log keeps one entry per record, at its latest change: a line edited after its
/// invoice was finalised is pushed after the invoice. The central server makes the supplier
/// invoice with the lines it has, and the late line joins it when it arrives; no line is lost.
fn a_line_edited_after_its_invoice_was_finalised_still_reaches_the_supplier_invoice(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    items_on(&network);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    enter_stock(north, &[stock("store-north", "sl-n1", "item-1", 20.0), stock("store-north", "sl-n2", "item-2", 15.0)]);
    enter(
        north,
        &[
            ("transaction_line", "ci-1-a", line("store-north", "ci-1", "item-1", 3.0)),
            ("transaction_line", "ci-1-b", line("store-north", "ci-1", "item-2", 5.0)),
            ("transaction", "ci-1", invoice("store-north", "store-south", "finalised")),
        ],
    );
    let mut late = line("store-north", "ci-1", "item-1", 3.0);
    late["note"] = json!("checked at the door");
    north.write("transaction_line", "ci-1-a", &late);
    let order: Vec<(String,)> = common::rows(
        north,
        "SELECT record_id FROM change_log WHERE tbl IN ('transaction', 'transaction_line') ORDER BY seq",
        &[],
    );
    assert_eq!(order.last().map(|r| r.0.as_str()), Some("ci-1-a"), "the line is pushed after its invoice");
    north.sync();
    south.sync();
    for id in ["ci-1-a:received", "ci-1-b:received"] {
        assert!(south.get("transaction_line", id).is_some(), "south's supplier invoice has `{id}`");
    }
    assert_eq!(
        count(
            &network.central,
            "SELECT count(*) FROM record WHERE tbl = 'transaction_line' AND store_id = 'store-south'"
        ),
        2
    );
}

/// Both stores active on one site: the site makes the supplier invoice itself, at once, numbered,
/// through the same processor; the central server, when the site syncs, makes no second one.
fn between_two_stores_of_one_site_the_site_makes_the_supplier_invoice_at_once(backend: &Backend) {
    let network = Network::with(backend, &["north"], |central| central.add_store("north-ward", "north"));
    items_on(&network);
    let north = network.site("north");
    north.sync();
    enter_stock(north, &[stock("store-north", "sl-n1", "item-1", 20.0)]);
    enter(
        north,
        &[
            ("transaction_line", "ci-1-a", line("store-north", "ci-1", "item-1", 4.0)),
            ("transaction", "ci-1", invoice("store-north", "north-ward", "finalised")),
        ],
    );
    let half = north.get("transaction", "ci-1:received").expect("made on the site, without a sync");
    assert_eq!((half["store_id"].clone(), half["serial_number"].clone()), (json!("north-ward"), json!(1)));
    assert_eq!(half["status"], "on_hold");
    assert!(north.get("transaction_line", "ci-1-a:received").is_some());
    north.sync();
    north.sync();
    assert_eq!(
        count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'transaction' AND store_id = 'north-ward'"),
        1
    );
    assert_eq!(
        count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'message'"),
        0,
        "no log message: the site made it"
    );
    assert_eq!(record(&network.central, "transaction", "ci-1:received"), north.get("transaction", "ci-1:received"));
}

/// A request requisition finalised in south (to its supplier, north) makes a response
/// requisition in north; north's customer invoice that fulfils it comes back to south as a
/// supplier invoice linked to south's request.
fn a_request_requisition_makes_a_response_whose_invoice_comes_back_as_a_supplier_invoice(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    items_on(&network);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    enter(
        south,
        &[
            (
                "requisition_line",
                "rq-1-a",
                json!({"store_id": "store-south", "requisition_id": "rq-1", "item_id": "item-1", "requested_quantity": 40.0}),
            ),
            (
                "requisition",
                "rq-1",
                json!({"store_id": "store-south", "other_store_id": "store-north", "type": "request", "status": "finalised"}),
            ),
        ],
    );
    south.sync();
    north.sync();
    let response = north.get("requisition", "rq-1:received").expect("north receives the response requisition");
    assert_eq!(
        response,
        json!({"store_id": "store-north", "other_store_id": "store-south", "type": "response", "status": "new",
               "linked_requisition_id": "rq-1"})
    );
    let asked = north.get("requisition_line", "rq-1-a:received").expect("with its line");
    assert_eq!((asked["item_id"].clone(), asked["requested_quantity"].clone()), (json!("item-1"), json!(40.0)));

    enter_stock(north, &[stock("store-north", "sl-n1", "item-1", 20.0)]);
    let mut fulfils = invoice("store-north", "store-south", "finalised");
    fulfils["requisition_id"] = json!("rq-1:received");
    enter(
        north,
        &[("transaction_line", "ci-9-a", line("store-north", "ci-9", "item-1", 4.0)), ("transaction", "ci-9", fulfils)],
    );
    north.sync();
    south.sync();
    let supplied = south.get("transaction", "ci-9:received").expect("the invoice comes back as a supplier invoice");
    assert_eq!(supplied["requisition_id"], "rq-1", "linked to south's request");
    assert_eq!(supplied["serial_number"], 1);
    assert_eq!(count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'requisition'"), 2);
}

/// An internal requisition: south's purchase order, confirmed for supplier store north, makes a
/// customer invoice in north; lines north adds make goods-received lines in south; when north
/// finalises the invoice, a goods received appears in south; the order's lines learn what was
/// received on south's site; south's finalising the goods received adds the stock.
fn an_internal_requisition_makes_an_invoice_then_goods_received_and_the_order_learns_what_arrived(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    items_on(&network);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    enter(
        south,
        &[
            (
                "purchase_order_line",
                "po-1-a",
                json!({"store_id": "store-south", "purchase_order_id": "po-1", "item_id": "item-1", "quantity": 50.0}),
            ),
            (
                "purchase_order",
                "po-1",
                json!({"store_id": "store-south", "other_store_id": "store-north", "status": "confirmed"}),
            ),
        ],
    );
    south.sync();
    north.sync();
    let made = north.get("transaction", "po-1:received").expect("north receives the invoice to fill");
    assert_eq!((made["type"].clone(), made["status"].clone()), (json!("customer_invoice"), json!("new")));
    assert_eq!(made["serial_number"], 1, "numbered with north's next customer-invoice number");
    assert_eq!(made["purchase_order_id"], "po-1");

    enter_stock(north, &[stock("store-north", "sl-n1", "item-1", 20.0)]);
    north.write("transaction_line", "po-1-l1", &line("store-north", "po-1:received", "item-1", 3.0));
    north.sync();
    south.sync();
    let arriving = south.get("goods_received_line", "po-1-l1:received").expect("a goods-received line in south");
    assert_eq!(arriving["purchase_order_line_id"], "po-1-a");
    assert_eq!(arriving["number_of_packs"], 3.0);
    assert_eq!(south.get("goods_received", "po-1:received:received"), None, "no goods received before north finalises");
    assert_eq!(south.get("purchase_order_line", "po-1-a").map(|l| l["received_quantity"].clone()), Some(json!(30.0)));

    let mut finalised = made.clone();
    finalised["status"] = json!("finalised");
    north.write("transaction", "po-1:received", &finalised);
    assert_eq!(on_hand(north, "store-north"), stock_of(&[("item-1", 170.0)]));
    north.sync();
    south.sync();
    let mut received = south.get("goods_received", "po-1:received:received").expect("the goods received appears");
    assert_eq!(received["purchase_order_id"], "po-1");
    assert_eq!(
        count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'transaction' AND store_id = 'store-south'"),
        0,
        "no supplier invoice for an internal requisition"
    );
    received["status"] = json!("finalised");
    south.write("goods_received", "po-1:received:received", &received);
    assert_eq!(on_hand(south, "store-south"), stock_of(&[("item-1", 30.0)]));
    south.sync();
    assert_eq!(on_hand(&network.central, "store-south"), stock_of(&[("item-1", 30.0)]));
    assert_eq!(
        record(&network.central, "purchase_order_line", "po-1-a").map(|l| l["received_quantity"].clone()),
        Some(json!(30.0)),
        "south's update of its order reached the central server"
    );
}

/// Each refused with a clear error on the site, and nothing of it reaches the log.
fn what_cannot_be_entered_is_refused_on_the_site_before_it_reaches_the_log(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    items_on(&network);
    let north = network.site("north");
    north.sync();
    let pushed_before = north.status();
    let refused = |table: &str, id: &str, doc: &Value| {
        run("site write", &mut north.command(&["write", table, id, &doc.to_string()])).failed().stderr
    };
    let negative = refused("transaction_line", "ci-2-a", &line("store-north", "ci-2", "item-1", -4.0));
    assert!(negative.contains("its number of packs is negative"), "{negative}");
    let unknown = refused("transaction_line", "ci-2-a", &line("store-north", "ci-2", "item-404", 4.0));
    assert!(unknown.contains("item `item-404` is not known here"), "{unknown}");
    let empty = refused("transaction", "ci-2", &invoice("store-north", "store-south", "finalised"));
    assert!(empty.contains("a finalised customer invoice needs its lines"), "{empty}");
    north.write("transaction_line", "ci-2-a", &line("store-north", "ci-2", "item-1", 4.0));
    let short = refused("transaction", "ci-2", &invoice("store-north", "store-south", "finalised"));
    assert!(short.contains("store `store-north` holds 0 packs of item `item-1`, and the invoice takes 4"), "{short}");
    assert_eq!(north.get("transaction", "ci-2"), None);
    assert!(
        north.status().contains("waiting to push:   1 change(s)"),
        "only the good line: {}\n(before: {pushed_before})",
        north.status()
    );
}

/// `n` finalised customer invoices of `from` (on `site`) for store `to`, one line of one pack
/// each, with the stock they take, entered in one batch; ids `{prefix}-00001`….
fn many_invoices(site: &Site, from: &str, to: &str, prefix: &str, n: usize) {
    let mut records = vec![stock(from, &format!("{prefix}-stock"), "item-1", n as f64)];
    for i in 1..=n {
        let id = format!("{prefix}-{i:05}");
        records.push(("transaction_line", format!("{id}-a"), line(from, &id, "item-1", 1.0)));
        records.push(("transaction", id, invoice(from, to, "finalised")));
    }
    enter_stock(site, &records);
}

/// What makes a transfer exactly once, on one node: one supplier invoice per customer invoice
/// of `prefix`, one line each, one log entry each, one log message each.
fn assert_once(node: &(impl Inspect + ?Sized), prefix: &str, n: usize) {
    let halves = format!("SELECT count(*) FROM record WHERE tbl = 'transaction' AND id LIKE '{prefix}-%:received'");
    assert_eq!(count(node, &halves), n as i64, "supplier invoices for `{prefix}`");
    let lines = format!("SELECT count(*) FROM record WHERE tbl = 'transaction_line' AND id LIKE '{prefix}-%:received'");
    assert_eq!(count(node, &lines), n as i64, "their lines");
}

/// Every supplier invoice received in `store` on its site is numbered, each number once.
fn assert_numbered_once(site: &Site, store: &str, n: usize) {
    let serials: Vec<(String,)> = common::rows(
        site,
        &format!("SELECT data FROM record WHERE tbl = 'transaction' AND store_id = '{store}' AND id LIKE '%:received'"),
        &[],
    );
    let mut numbers: Vec<i64> = serials
        .iter()
        .map(|(doc,)| serde_json::from_str::<Value>(doc).expect("json")["serial_number"].as_i64().expect("a serial"))
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=n as i64).collect::<Vec<_>>(), "numbered 1 to {n}, each once");
}

/// The central server is killed after it committed the push that made some of the halves, and
/// before it answered. When it is back, the same sync goes on: every invoice has one supplier
/// invoice, one log message, and south numbers each once.
fn the_central_server_killed_after_making_halves_and_before_answering_makes_none_twice(backend: &Backend) {
    let n = if backend.is_postgres() { 1_500 } else { 3_000 };
    let mut network = Network::new(&backend.alone(), &["north", "south"]);
    items_on(&network);
    let (north, south) = (network.site("north").clone(), network.site("south").clone());
    north.sync();
    many_invoices(&north, "store-north", "store-south", "ci", n);
    let halves = |central: &common::Central| {
        count(central, "SELECT count(*) FROM record WHERE tbl = 'transaction' AND store_id = 'store-south'")
    };
    let mut sync = north.spawn_sync();
    common::wait_until(
        "the central server to commit a push that made halves",
        std::time::Duration::from_secs(120),
        || {
            assert!(sync.try_wait().is_none(), "the push finished before the server could be killed");
            halves(&network.central) > 0
        },
    );
    network.central.kill();
    let mid = halves(&network.central);
    assert!(mid > 0 && mid < n as i64, "killed mid-push, with {mid} of {n} halves made");
    network.central.start();
    assert!(sync.wait(std::time::Duration::from_secs(300)).success(), "the sync rides out the restart");
    north.sync();
    assert_once(&network.central, "ci", n);
    let messages = count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'message' AND id LIKE 'ci-%:log'");
    assert_eq!(messages, n as i64, "one log message each");
    south.sync();
    assert_once(&south, "ci", n);
    assert_numbered_once(&south, "store-south", n);
}

/// The push's answer is lost on the way back (the connection breaks after the central server
/// committed it): the next sync learns what arrived, and nothing is made twice.
fn a_transfer_whose_push_answer_is_lost_is_made_once(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    items_on(&network);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    many_invoices(north, "store-north", "store-south", "ci", 50);
    let link = common::link::Link::start(network.central.addr(), common::link::Shape::default());
    north.set_central(&link.url());
    link.cut_after_down_bytes(50);
    assert!(!north.try_sync_once().success(), "the answer was lost");
    assert_once(&network.central, "ci", 50);
    north.sync();
    north.sync();
    assert_once(&network.central, "ci", 50);
    south.sync();
    assert_numbered_once(south, "store-south", 50);
}

/// The receiving site is killed in the middle of its pull of the halves: what it committed is
/// whole batches, and its next sync numbers every supplier invoice once, and sends the numbers
/// back.
fn the_receiving_site_killed_during_the_pull_numbers_each_supplier_invoice_once(backend: &Backend) {
    let n = if backend.is_postgres() { 1_000 } else { 2_000 };
    let network = Network::new(backend, &["north", "south"]);
    items_on(&network);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    many_invoices(north, "store-north", "store-south", "ci", n);
    north.sync();
    let link = common::link::Link::start(
        network.central.addr(),
        common::link::Shape::symmetric(512_000, std::time::Duration::from_millis(5)),
    );
    south.set_central(&link.url());
    let mut sync = south.spawn_sync();
    let received =
        || count(south, "SELECT count(*) FROM record WHERE tbl = 'transaction' AND store_id = 'store-south'");
    common::wait_until("south to commit part of its pull", std::time::Duration::from_secs(120), || {
        assert!(sync.try_wait().is_none(), "the pull finished before south could be killed");
        received() > 0
    });
    sync.kill();
    let mid = received();
    assert!(mid > 0 && mid < n as i64, "killed mid-pull, with {mid} of {n} received");
    south.set_central(&network.central.url());
    south.sync();
    south.sync();
    assert_once(south, "ci", n);
    assert_numbered_once(south, "store-south", n);
    let unnumbered = "SELECT count(*) FROM record WHERE tbl = 'transaction' AND store_id = 'store-south' AND data LIKE '%\"serial_number\":-1%'";
    assert_eq!(count(&network.central, unnumbered), 0, "every number reached the central server");
}

/// Two central server processes on one database: north's push is taken by one, whose answer is
/// lost, and north's next sync lands on the other; then north and east push invoices for south
/// at the same moment, one to each process. Every invoice has one supplier invoice, and south
/// numbers them 1 to n.
fn two_central_processes_on_one_database_make_each_half_once(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    items_on(&network);
    let mut second = network.central.another_server("second");
    let second_url = second.start();
    let (north, south, east) = (network.site("north"), network.site("south"), network.site("east"));
    north.sync();
    east.sync();
    many_invoices(north, "store-north", "store-south", "n1", 40);
    let link = common::link::Link::start(network.central.addr(), common::link::Shape::default());
    north.set_central(&link.url());
    link.cut_after_down_bytes(50);
    assert!(!north.try_sync_once().success(), "the first process's answer was lost");
    north.set_central(&second_url);
    north.sync();
    assert_once(&network.central, "n1", 40);

    many_invoices(north, "store-north", "store-south", "n2", 300);
    many_invoices(east, "store-east", "store-south", "e2", 300);
    north.set_central(&network.central.url());
    east.set_central(&second_url);
    let (mut from_north, mut from_east) = (north.spawn_sync(), east.spawn_sync());
    assert!(from_north.wait(std::time::Duration::from_secs(300)).success(), "north's sync");
    assert!(from_east.wait(std::time::Duration::from_secs(300)).success(), "east's sync");
    for (prefix, n) in [("n1", 40), ("n2", 300), ("e2", 300)] {
        assert_once(&network.central, prefix, n);
    }
    south.set_central(&second_url);
    south.sync();
    south.sync();
    assert_numbered_once(south, "store-south", 640);
    assert_eq!(count(&network.central, "SELECT count(*) FROM rejection"), 0);
}

/// With centralised procurement, purchase orders are entered on the primary (here the central
/// server): an order it confirms for south, from north, makes north's invoice; the goods-received
/// lines update the order's received quantities on the primary as they reach it, and again when
/// south's site changes one. South may not edit the order itself.
fn with_centralised_procurement_the_primary_confirms_the_order_and_learns_what_was_received(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    items_on(&network);
    let central = &network.central;
    central.write("option", "centralised_procurement", &json!({"value": true}));
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    central.write(
        "purchase_order_line",
        "po-1-a",
        &json!({"store_id": "store-south", "purchase_order_id": "po-1", "item_id": "item-1", "quantity": 50.0}),
    );
    central.write(
        "purchase_order",
        "po-1",
        &json!({"store_id": "store-south", "other_store_id": "store-north", "status": "confirmed"}),
    );
    assert!(record(central, "transaction", "po-1:received").is_some(), "the primary made north's invoice at once");
    north.sync();
    let mut made = north.get("transaction", "po-1:received").expect("north receives it");
    assert_eq!(made["serial_number"], 1);
    enter_stock(north, &[stock("store-north", "sl-n1", "item-1", 20.0)]);
    made["status"] = json!("finalised");
    enter(
        north,
        &[
            ("transaction_line", "po-1-l1", line("store-north", "po-1:received", "item-1", 3.0)),
            ("transaction", "po-1:received", made),
        ],
    );
    north.sync();
    let received_on =
        |node: &dyn Inspect| record(node, "purchase_order_line", "po-1-a").map(|l| l["received_quantity"].clone());
    assert_eq!(received_on(central), Some(json!(30.0)), "updated on the primary as the lines reached it");
    south.sync();
    assert_eq!(received_on(south), Some(json!(30.0)), "and south receives the order as the primary keeps it");
    let mut fewer = south.get("goods_received_line", "po-1-l1:received").expect("south's goods-received line");
    fewer["number_of_packs"] = json!(2.0);
    south.write("goods_received_line", "po-1-l1:received", &fewer);
    assert_eq!(received_on(south), Some(json!(30.0)), "south does not edit the primary's order");
    south.sync();
    assert_eq!(received_on(central), Some(json!(20.0)), "south's later update reached the primary's order");
    south.sync();
    assert_eq!(received_on(south), Some(json!(20.0)));
    assert_eq!(count(central, "SELECT count(*) FROM rejection"), 0);
}
