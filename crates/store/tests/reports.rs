//! The seeds' three reports on each backend, over records written the way a central server
//! writes them (pushed by a site through the one checked write, and received): stock on hand
//! per store, location and item, the value of all stock, monthly usage of an item. Updates and
//! deletes move the totals; a field of the wrong type counts as absent on both backends.

use model::{Action, Change, Seq, SiteId};
use outpost_store::reports::{Scope, StockRow, UsageRow, ValueRow};
use outpost_store::{Db, StateKey, Write};
use serde_json::value::RawValue;
use serde_json::{json, Value};

#[macro_use]
mod backends;
use backends::Fixture;

/// The central server's database, holding the collector copies of two stores on two sites.
fn central(fx: &Fixture) -> Db {
    let db = fx.open();
    let network = [
        Write::upsert("site", "central", &json!({"name": "Central", "central": true, "primary": true})),
        Write::upsert("site", "north", &json!({"name": "North"})),
        Write::upsert("site", "south", &json!({"name": "South"})),
        Write::upsert("store", "north-pharmacy", &json!({"name": "North pharmacy"})),
        Write::upsert("store", "south-clinic", &json!({"name": "South clinic"})),
        Write::upsert(
            "store_sync",
            "north-pharmacy@north",
            &json!({"store_id": "north-pharmacy", "site_id": "north", "sync_type": "active"}),
        ),
        Write::upsert(
            "store_sync",
            "south-clinic@south",
            &json!({"store_id": "south-clinic", "site_id": "south", "sync_type": "active"}),
        ),
        Write::upsert("item", "amoxicillin", &json!({"name": "Amoxicillin 250mg"})),
        Write::upsert("item", "paracetamol", &json!({"name": "Paracetamol 500mg"})),
    ];
    db.transaction(|tx| {
        for write in &network {
            let data = write.incoming().data.map(|d| RawValue::from_string(d.to_owned()).expect("JSON"));
            let change = Change {
                seq: Seq(0),
                table: write.table.clone(),
                id: write.id.clone(),
                action: Action::Upsert,
                data,
                origin: SiteId::from("central"),
            };
            tx.apply_received(&change)?;
        }
        tx.set_state(StateKey::LocalSite, "central")
    })
    .expect("seed the network");
    db
}

/// Writes `writes` through the one checked write, with `site` as the writer (a push).
fn written_by(db: &Db, site: &str, writes: &[Write]) {
    db.transaction(|tx| {
        for write in writes {
            tx.write_as(write.incoming(), &SiteId::from(site))?;
        }
        Ok(())
    })
    .expect("the writes are allowed");
}

/// Writes `records` as `site` pushed them.
fn pushed(db: &Db, site: &str, records: &[(&str, &str, Value)]) {
    let writes: Vec<Write> = records.iter().map(|(table, id, data)| Write::upsert(table, *id, data)).collect();
    written_by(db, site, &writes);
}

fn stock(
    store: &str,
    item: &str,
    location: Option<&str>,
    packs: Value,
    pack_size: Option<f64>,
    cost: Option<f64>,
) -> Value {
    let mut line = json!({"store_id": store, "item_id": item, "batch": "B1", "total_number_of_packs": packs});
    if let Some(location) = location {
        line["location_id"] = json!(location);
    }
    if let Some(pack_size) = pack_size {
        line["pack_size"] = json!(pack_size);
    }
    if let Some(cost) = cost {
        line["cost_price_per_pack"] = json!(cost);
    }
    line
}

fn stocked(fx: &Fixture) -> Db {
    let db = central(fx);
    pushed(
        &db,
        "north",
        &[
            (
                "stock_line",
                "n1",
                stock("north-pharmacy", "amoxicillin", Some("shelf-1"), json!(3), Some(10.0), Some(2.0)),
            ),
            (
                "stock_line",
                "n2",
                stock("north-pharmacy", "amoxicillin", Some("shelf-1"), json!(1), Some(10.0), Some(2.5)),
            ),
            ("stock_line", "n3", stock("north-pharmacy", "paracetamol", None, json!(5), None, None)),
        ],
    );
    pushed(
        &db,
        "south",
        &[
            ("stock_line", "s1", stock("south-clinic", "amoxicillin", Some("fridge"), json!(2), Some(10.0), Some(3.0))),
            // Not a number: a line of the store, holding nothing the report can count.
            (
                "stock_line",
                "s2",
                stock("south-clinic", "paracetamol", Some("fridge"), json!("ten"), Some(1.0), Some(1.0)),
            ),
        ],
    );
    db
}

fn row(store: &str, location: Option<&str>, item: &str, lines: u64, units: f64, value: f64) -> StockRow {
    let store_name = match store {
        "north-pharmacy" => "North pharmacy",
        _ => "South clinic",
    };
    let item_name = match item {
        "amoxicillin" => "Amoxicillin 250mg",
        _ => "Paracetamol 500mg",
    };
    StockRow {
        store: store.into(),
        store_name: Some(store_name.into()),
        location: location.map(Into::into),
        item: item.into(),
        item_name: Some(item_name.into()),
        lines,
        units,
        value,
    }
}

fn all() -> Scope {
    Scope::default()
}

fn stock_on_hand_per_store_item_and_location(fx: &Fixture) {
    let db = stocked(fx);
    assert_eq!(
        db.stock_on_hand(&all()).expect("the report"),
        [
            row("north-pharmacy", Some("shelf-1"), "amoxicillin", 2, 40.0, 8.5),
            row("north-pharmacy", None, "paracetamol", 1, 5.0, 0.0),
            row("south-clinic", Some("fridge"), "amoxicillin", 1, 20.0, 6.0),
            row("south-clinic", Some("fridge"), "paracetamol", 1, 0.0, 0.0),
        ]
    );
    let amoxicillin = Scope { item: Some("amoxicillin".into()), ..all() };
    assert_eq!(
        db.stock_on_hand(&amoxicillin).expect("the report"),
        [
            row("north-pharmacy", Some("shelf-1"), "amoxicillin", 2, 40.0, 8.5),
            row("south-clinic", Some("fridge"), "amoxicillin", 1, 20.0, 6.0),
        ]
    );
    let south = Scope { stores: vec!["south-clinic".into()], item: None };
    assert_eq!(
        db.stock_on_hand(&south).expect("the report").iter().map(|r| r.store.as_str()).collect::<Vec<_>>(),
        ["south-clinic"; 2]
    );
    let nowhere = Scope { stores: vec!["no-such-store".into()], item: None };
    assert_eq!(db.stock_on_hand(&nowhere).expect("the report"), []);
}

fn value_of_all_stock_per_store(fx: &Fixture) {
    let db = stocked(fx);
    let value = |store: &str, lines, units, value| ValueRow {
        store: store.into(),
        store_name: Some(if store == "north-pharmacy" { "North pharmacy" } else { "South clinic" }.into()),
        lines,
        units,
        value,
    };
    assert_eq!(
        db.stock_value(&all()).expect("the report"),
        [value("north-pharmacy", 3, 45.0, 8.5), value("south-clinic", 2, 20.0, 6.0)]
    );
    // A batch used up, another deleted: the totals follow the records as they stand.
    pushed(
        &db,
        "north",
        &[(
            "stock_line",
            "n2",
            stock("north-pharmacy", "amoxicillin", Some("shelf-1"), json!(0), Some(10.0), Some(2.5)),
        )],
    );
    written_by(&db, "north", &[Write::delete("stock_line", "n3")]);
    assert_eq!(db.stock_value(&all()).expect("the report")[0], value("north-pharmacy", 2, 30.0, 6.0));
    let north = Scope { stores: vec!["north-pharmacy".into()], item: None };
    assert_eq!(db.stock_value(&north).expect("the report").len(), 1);
}

fn monthly_usage_counts_finalised_customer_invoices_by_month(fx: &Fixture) {
    let db = central(fx);
    let invoice = |store: &str, kind: &str, status: &str, date: Option<&str>| {
        let mut t = json!({"store_id": store, "type": kind, "status": status});
        if let Some(date) = date {
            t["finalised_date"] = json!(date);
        }
        t
    };
    let line = |store: &str, transaction: &str, item: &str, packs: f64, pack_size: f64| json!({"store_id": store, "transaction_id": transaction, "item_id": item, "number_of_packs": packs, "pack_size": pack_size});
    pushed(
        &db,
        "north",
        &[
            ("transaction", "t1", invoice("north-pharmacy", "customer_invoice", "finalised", Some("2026-10-05"))),
            ("transaction_line", "t1-1", line("north-pharmacy", "t1", "amoxicillin", 2.0, 10.0)),
            ("transaction_line", "t1-2", line("north-pharmacy", "t1", "amoxicillin", 0.5, 10.0)),
            (
                "transaction",
                "t2",
                invoice("north-pharmacy", "customer_invoice", "finalised", Some("2026-11-01T09:30:00Z")),
            ),
            ("transaction_line", "t2-1", line("north-pharmacy", "t2", "amoxicillin", 1.0, 10.0)),
            ("transaction_line", "t2-2", line("north-pharmacy", "t2", "paracetamol", 7.0, 1.0)),
            // Not finalised yet: nothing has left the store.
            ("transaction", "t3", invoice("north-pharmacy", "customer_invoice", "new", None)),
            ("transaction_line", "t3-1", line("north-pharmacy", "t3", "amoxicillin", 9.0, 10.0)),
        ],
    );
    pushed(
        &db,
        "south",
        &[
            // Goods coming in are not usage.
            ("transaction", "t4", invoice("south-clinic", "supplier_invoice", "finalised", Some("2026-10-10"))),
            ("transaction_line", "t4-1", line("south-clinic", "t4", "amoxicillin", 4.0, 10.0)),
            ("transaction", "t5", invoice("south-clinic", "customer_invoice", "finalised", None)),
            ("transaction_line", "t5-1", line("south-clinic", "t5", "amoxicillin", 3.0, 10.0)),
        ],
    );
    let usage = |store: &str, month: &str, units| UsageRow {
        store: store.into(),
        store_name: Some(if store == "north-pharmacy" { "North pharmacy" } else { "South clinic" }.into()),
        month: month.into(),
        units,
    };
    assert_eq!(
        db.monthly_usage(&all(), "amoxicillin").expect("the report"),
        [
            usage("north-pharmacy", "2026-10", 25.0),
            usage("north-pharmacy", "2026-11", 10.0),
            usage("south-clinic", "none", 30.0)
        ]
    );
    let south = Scope { stores: vec!["south-clinic".into()], item: None };
    assert_eq!(db.monthly_usage(&south, "amoxicillin").expect("the report"), [usage("south-clinic", "none", 30.0)]);
    assert_eq!(db.monthly_usage(&all(), "paracetamol").expect("the report"), [usage("north-pharmacy", "2026-11", 7.0)]);
    assert_eq!(db.monthly_usage(&all(), "no-such-item").expect("the report"), []);
}

on_each_backend!(
    stock_on_hand_per_store_item_and_location,
    value_of_all_stock_per_store,
    monthly_usage_counts_finalised_customer_invoices_by_month,
);
