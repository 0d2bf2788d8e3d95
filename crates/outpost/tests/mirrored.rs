//! Mirrored sync and changing the primary (issue 13), between real processes on each backend:
//! the primary is a remote site, often offline; central data is edited only there and reaches
//! every site through the central server; the primary changes hands without an instant in
//! which two sites may edit central data.

mod common;

use common::{dump_table, on_each_backend, record, run, Backend, Network, Site};
use serde_json::{json, Value};
use store::Write;

on_each_backend!(
    a_primary_offline_for_a_week_comes_back_and_every_site_converges,
    the_primary_moves_back_only_after_the_old_one_hands_over,
);

fn enter(site: &Site, records: &[(&str, String, Value)]) {
    let writes: Vec<Write> = records.iter().map(|(table, id, doc)| Write::upsert(table, id.as_str(), doc)).collect();
    site.db().write(&writes).unwrap_or_else(|e| panic!("entering on `{}`: {e}", site.name));
}

fn item(name: &str, edition: u32) -> Value {
    json!({"code": name, "name": format!("Medicine {name} ({edition})")})
}

/// `hq` becomes the primary of a network whose central server was.
fn mirrored(backend: &Backend) -> Network {
    let network = Network::new(backend, &["hq", "north", "south"]);
    network.central.write("item", "item-1", &item("item-1", 0));
    for site in &network.sites {
        site.sync();
    }
    let made = network.central.admin("central set-primary", &["set-primary", "hq"]).stdout;
    assert!(made.contains("`hq` is now the primary"), "{made}");
    network
}

fn a_primary_offline_for_a_week_comes_back_and_every_site_converges(backend: &Backend) {
    let network = mirrored(backend);
    let (central, hq, north, south) =
        (&network.central, network.site("hq"), network.site("north"), network.site("south"));
    let refused = central
        .try_admin("central edits an item", &["write", "item", "item-2", &item("item-2", 0).to_string()])
        .failed();
    assert!(refused.stderr.contains("only the primary server (`hq`) may edit them"), "{}", refused.stderr);
    hq.sync();
    hq.write("item", "item-2", &item("item-2", 1));
    hq.sync();

    // A week: the primary stays offline, editing central data; north and south sync every day,
    // with a stock transfer from north to south each day.
    north.sync();
    south.sync();
    enter(
        north,
        &[(
            "stock_line",
            "sl-north".into(),
            json!({"store_id": "store-north", "item_id": "item-1", "batch": "B1",
        "expiry_date": "2027-06-30", "pack_size": 10.0, "total_number_of_packs": 100.0, "cost_price_per_pack": 2.5}),
        )],
    );
    for day in 1..=7 {
        hq.write("item", &format!("item-day-{day}"), &item(&format!("day-{day}"), day));
        hq.write("item", "item-1", &item("item-1", day));
        let invoice = format!("ci-day-{day}");
        enter(
            north,
            &[
                (
                    "transaction_line",
                    format!("{invoice}-1"),
                    json!({"store_id": "store-north", "transaction_id": invoice, "item_id": "item-1",
                "batch": "B1", "expiry_date": "2027-06-30", "pack_size": 10.0, "number_of_packs": 1.0, "cost_price_per_pack": 2.5,
                "stock_line_id": "sl-north"}),
                ),
                (
                    "transaction",
                    invoice.clone(),
                    json!({"store_id": "store-north", "other_store_id": "store-south",
                "type": "customer_invoice", "status": "finalised", "serial_number": day}),
                ),
            ],
        );
        north.sync();
        south.sync();
        let half = record(south, "transaction", &format!("{invoice}:received"))
            .unwrap_or_else(|| panic!("day {day}: no supplier invoice on south"));
        assert_eq!(half["serial_number"], json!(day), "day {day}: numbered on south");
    }
    assert_eq!(
        record(north, "item", "item-1").map(|d| d["name"].clone()),
        Some(json!("Medicine item-1 (0)")),
        "nothing of the primary's week yet"
    );

    // The primary comes back: its week reaches every site.
    hq.sync();
    north.sync();
    south.sync();
    let catalogue = dump_table(central, "item");
    assert_eq!(catalogue.len(), 9, "{catalogue:?}");
    for site in [hq, north, south] {
        assert_eq!(dump_table(site, "item"), catalogue, "the catalogue on `{}`", site.name);
    }
    assert_eq!(record(south, "item", "item-1").map(|d| d["name"].clone()), Some(json!("Medicine item-1 (7)")));

    // A store is created on the central server, reaches the primary, which sets what it sees.
    central.add_store("store-new", "north");
    hq.sync();
    assert!(record(hq, "store", "store-new").is_some(), "the primary knows the new store");
    hq.write("item_visibility", "item-1@store-new", &json!({"item_id": "item-1", "store_id": "store-new"}));
    hq.sync();
    north.sync();
    assert!(
        record(north, "item_visibility", "item-1@store-new").is_some(),
        "the store's site sees what the primary set"
    );
    let refused =
        central.try_admin("visibility set on the central server", &["show-item", "item-2", "store-new"]).failed();
    assert!(refused.stderr.contains("only the primary server (`hq`)"), "{}", refused.stderr);
}

fn the_primary_moves_back_only_after_the_old_one_hands_over(backend: &Backend) {
    let network = mirrored(backend);
    let (central, hq, north) = (&network.central, network.site("hq"), network.site("north"));
    hq.sync();

    let back = central.admin("central set-primary", &["set-primary", "central"]).stdout;
    assert!(
        back.contains("on its next sync `hq` pushes its edits and hands over; until then it stays the primary"),
        "{back}"
    );
    let status = central.status();
    assert!(status.contains("primary changing from `hq` to `central`"), "{status}");
    let again = central.try_admin("set-primary again", &["set-primary", "north"]).failed();
    assert!(again.stderr.contains("the primary is already changing from `hq` to `central`"), "{}", again.stderr);
    // Until hq hands over, the central server is not the primary: never two editors at once.
    let early = central
        .try_admin("central edits too early", &["write", "item", "item-c", &item("item-c", 0).to_string()])
        .failed();
    assert!(early.stderr.contains("only the primary server (`hq`)"), "{}", early.stderr);

    // Entered on hq before it learns of the change: applied.
    hq.write("item", "item-hq", &item("item-hq", 0));
    hq.sync(); // pushes item-hq, hands over, and learns the change is complete
    assert!(record(central, "item", "item-hq").is_some());
    let late = run(
        "hq edits an item after handing over",
        &mut hq.command(&["write", "item", "item-late", &item("late", 0).to_string()]),
    )
    .failed();
    assert!(late.stderr.contains("only the primary server (`central`) may edit them"), "{}", late.stderr);
    central.write("item", "item-c", &item("item-c", 0));
    assert!(!central.status().contains("primary changing"));
    north.sync();
    assert!(record(north, "item", "item-hq").is_some() && record(north, "item", "item-c").is_some());
    let mobile = central.try_admin("a mobile primary", &["set-primary", "nowhere"]).failed();
    assert!(mobile.stderr.contains("there is no site `nowhere`"), "{}", mobile.stderr);
}
