//! Routing between real processes: a central server (`outpost central serve`) and remote sites
//! (`outpost site sync`), over HTTP on loopback, each site with its own SQLite file and the
//! central server on each backend (`sqlite::…`, `postgres::…`). Each test builds a small
//! network, writes with the CLI, syncs, and asserts on what every database holds.

mod common;

use common::{dump_table, on_each_backend, record, Backend, Network};
use serde_json::json;

on_each_backend!(
    a_central_data_change_on_the_primary_reaches_every_site,
    a_store_record_reaches_the_central_collector_and_no_other_site,
    a_message_reaches_the_site_where_its_receiving_store_is_active_and_no_other,
    a_site_that_becomes_a_collector_of_a_store_receives_the_records_the_store_already_had,
);

/// Syncs every site once, in order.
fn sync_all(network: &Network) {
    for site in &network.sites {
        site.sync();
    }
}

fn a_central_data_change_on_the_primary_reaches_every_site(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    sync_all(&network);
    let item = json!({"code": "AMX500", "name": "Amoxicillin 500mg", "unit_id": "unit-tab", "default_pack_size": 20});
    network.central.write("item", "item-amx", &item);

    sync_all(&network);
    for site in &network.sites {
        assert_eq!(site.get("item", "item-amx"), Some(item.clone()), "site `{}`", site.name);
    }

    // An edit of it on the primary travels the same way, and replaces it everywhere.
    let renamed =
        json!({"code": "AMX500", "name": "Amoxicillin 500 mg caps", "unit_id": "unit-tab", "default_pack_size": 20});
    network.central.write("item", "item-amx", &renamed);
    sync_all(&network);
    let on_central = dump_table(&network.central, "item");
    for site in &network.sites {
        assert_eq!(site.get("item", "item-amx"), Some(renamed.clone()), "site `{}`", site.name);
        assert_eq!(dump_table(&site.data, "item"), on_central, "items on `{}`", site.name);
    }
}

fn a_store_record_reaches_the_central_collector_and_no_other_site(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    // `east` keeps a full (collector) copy of north's store; `south` has no copy at all.
    network.central.sync_type("store-north", "east", "collector");
    sync_all(&network);
    let (north, south, east) = (network.site("north"), network.site("south"), network.site("east"));

    let line =
        json!({"store_id": "store-north", "item_id": "item-1", "batch": "B-17", "pack_size": 10, "total_packs": 40});
    north.write("stock_line", "sl-north-1", &line);
    // An edit before the sync: the latest version is what travels.
    let edited =
        json!({"store_id": "store-north", "item_id": "item-1", "batch": "B-17", "pack_size": 10, "total_packs": 35});
    north.write("stock_line", "sl-north-1", &edited);
    let synced = north.sync();
    assert!(synced.stdout.contains("pushed 1 (0 rejected)"), "{}", synced.stdout);
    south.sync();
    east.sync();

    assert_eq!(record(&network.central, "stock_line", "sl-north-1"), Some(edited.clone()), "central collector");
    assert_eq!(east.get("stock_line", "sl-north-1"), Some(edited.clone()), "the collector site `east`");
    assert_eq!(south.get("stock_line", "sl-north-1"), None, "`south` has no copy of store-north");
    assert!(dump_table(&south.data, "stock_line").is_empty(), "south holds no stock line at all");

    // A record of south's own store stays between south and the central server.
    south.write("stock_line", "sl-south-1", &json!({"store_id": "store-south", "item_id": "item-1", "total_packs": 3}));
    south.sync();
    north.sync();
    east.sync();
    assert!(record(&network.central, "stock_line", "sl-south-1").is_some());
    assert_eq!(north.get("stock_line", "sl-south-1"), None);
    assert_eq!(east.get("stock_line", "sl-south-1"), None);
    // The central server logged each record once, and routed nothing back to its origin.
    assert_eq!(dump_table(&network.central, "stock_line").len(), 2);
}

fn a_message_reaches_the_site_where_its_receiving_store_is_active_and_no_other(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    sync_all(&network);
    let (north, south, east) = (network.site("north"), network.site("south"), network.site("east"));

    let message = json!({"sending_store_id": "store-north", "receiving_store_id": "store-south", "body": "Amoxicillin stock-out next week"});
    north.write("message", "msg-1", &message);
    // Neither store set: every remote site. Only the sending store set: the central server only.
    let broadcast = json!({"body": "Sync maintenance on Sunday"});
    north.write("message", "msg-all", &broadcast);
    let to_central = json!({"sending_store_id": "store-north", "body": "Please call us"});
    north.write("message", "msg-central", &to_central);
    north.sync();
    south.sync();
    east.sync();

    assert_eq!(south.get("message", "msg-1"), Some(message.clone()), "the receiving store's site");
    assert_eq!(east.get("message", "msg-1"), None, "a site with neither store");
    assert_eq!(record(&network.central, "message", "msg-1"), Some(message), "the central server keeps everything");

    assert_eq!(south.get("message", "msg-all"), Some(broadcast.clone()));
    assert_eq!(east.get("message", "msg-all"), Some(broadcast));

    assert!(record(&network.central, "message", "msg-central").is_some());
    assert_eq!(south.get("message", "msg-central"), None);
    assert_eq!(east.get("message", "msg-central"), None);
}

/// DESIGN.md §4: "The same path serves a backfill when a store becomes visible to a site or its
/// sync type changes." The engine initialises a new site from a snapshot, but does not yet
/// backfill a site that becomes a collector of a store later: it receives only later changes.
fn a_site_that_becomes_a_collector_of_a_store_receives_the_records_the_store_already_had(backend: &Backend) {
    let network = Network::new(backend, &["north", "east"]);
    sync_all(&network);
    let (north, east) = (network.site("north"), network.site("east"));
    let line = json!({"store_id": "store-north", "item_id": "item-1", "total_packs": 1});
    north.write("stock_line", "sl-before", &line);
    north.sync();

    network.central.sync_type("store-north", "east", "collector");
    east.sync();
    assert_eq!(east.get("stock_line", "sl-before"), Some(line), "east holds a full copy of store-north");
}
