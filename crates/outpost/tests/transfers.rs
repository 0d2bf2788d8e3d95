//! Transfers between stores on different sites (issue 12), between real processes on each
//! backend: the central server makes the responding half of a transfer, once.

mod common;

use common::{count, on_each_backend, record, run, Backend, Network};
use serde_json::json;

on_each_backend!(
    a_finalised_customer_invoice_makes_one_supplier_invoice_in_the_other_store_numbered_there,
    a_transaction_line_with_a_negative_quantity_is_refused_where_it_is_written,
);

fn line(transaction: &str, item: &str, packs: f64) -> serde_json::Value {
    json!({"store_id": "store-north", "transaction_id": transaction, "item_id": item, "batch": "B1",
           "expiry_date": "2027-06-30", "pack_size": 10.0, "number_of_packs": packs, "cost_price_per_pack": 2.5})
}

/// The seeds' stock transfer: a customer invoice from store A to store B, finalised on A's
/// site, makes a supplier invoice in B (serial -1, on hold, the same lines); B's site numbers it
/// with B's next supplier-invoice number and syncs that back; a log message reaches A's site.
/// Later edits of the invoice never make a second half.
fn a_finalised_customer_invoice_makes_one_supplier_invoice_in_the_other_store_numbered_there(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    north.write("transaction_line", "ci-1-a", &line("ci-1", "item-1", 3.0));
    north.write("transaction_line", "ci-1-b", &line("ci-1", "item-2", 5.0));
    let invoice = json!({"store_id": "store-north", "other_store_id": "store-south", "type": "customer_invoice",
                         "status": "finalised", "serial_number": 7});
    north.write("transaction", "ci-1", &invoice);
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
    north.sync();
    let log = north.get("message", "ci-1:log").expect("the log message reaches north");
    assert!(log["body"].as_str().is_some_and(|b| b.contains("supplier invoice `ci-1:received`")), "{log}");

    south.sync();
    let received = south.get("transaction", "ci-1:received").expect("south receives it");
    assert_eq!(received["serial_number"], 1, "numbered with south's next supplier-invoice number");
    assert_eq!(received["status"], "on_hold");
    assert!(south.get("transaction_line", "ci-1-b:received").is_some(), "with its lines");
    south.sync();
    assert_eq!(
        record(&network.central, "transaction", "ci-1:received").map(|t| t["serial_number"].clone()),
        Some(json!(1))
    );

    // A later edit of the invoice, and the same push again: never a second half.
    let mut edited = invoice.clone();
    edited["comment"] = json!("sent with the Tuesday truck");
    north.write("transaction", "ci-1", &edited);
    north.sync();
    south.sync();
    let halves =
        count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'transaction' AND store_id = 'store-south'");
    assert_eq!(halves, 1, "exactly one supplier invoice");
    assert_eq!(south.get("transaction", "ci-1:received").map(|t| t["serial_number"].clone()), Some(json!(1)));
}

/// A negative quantity is refused on the site, with a clear error, before it reaches the log.
fn a_transaction_line_with_a_negative_quantity_is_refused_where_it_is_written(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    north.sync();
    let bad = line("ci-2", "item-1", -4.0).to_string();
    let refused = run("site write", &mut north.command(&["write", "transaction_line", "ci-2-a", &bad])).failed();
    assert!(refused.stderr.contains("its number of packs is negative"), "{}", refused.stderr);
    assert!(north.status().contains("waiting to push:   0 change(s)"), "{}", north.status());
}
