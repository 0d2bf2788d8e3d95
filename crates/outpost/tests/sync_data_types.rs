//! The seeds' data types between real processes (issue 11): a central server and remote sites
//! on loopback, the central server on each backend, asserting on what every database holds.

mod common;

use common::{count, on_each_backend, record, write_behind_the_checks, Backend, Network};
use serde_json::json;

on_each_backend!(
    local_data_never_leaves_the_site_that_wrote_it,
    local_data_pushed_by_an_old_or_hostile_site_is_refused_and_kept_where_a_person_sees_it,
    a_store_added_after_its_site_was_set_up_reaches_that_site,
);

/// Local data "doesn't sync anywhere" (seeds): logs, user permissions, non-store preferences,
/// labels, reminders. Written on a site, it stays there: not pushed, not stored centrally, not
/// counted as waiting.
fn local_data_never_leaves_the_site_that_wrote_it(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    let local = [
        ("log", "log-1", json!({"message": "stock take started"})),
        ("user_permission", "perm-1", json!({"user_id": "user-1", "permission": "dispense"})),
        ("preference", "pref-1", json!({"key": "printer", "value": "ward-3"})),
        ("label", "label-1", json!({"text": "Keep cold"})),
        ("reminder", "rem-1", json!({"text": "order insulin"})),
    ];
    for (table, id, data) in &local {
        north.write(table, id, data);
    }
    assert!(north.status().contains("0 change"), "nothing waits to be pushed:\n{}", north.status());
    north.sync();
    south.sync();
    for (table, id, data) in &local {
        assert_eq!(north.get(table, id).as_ref(), Some(data), "north keeps its `{table}`");
        assert_eq!(record(&network.central, table, id), None, "`{table}` is not stored on the central server");
        assert_eq!(south.get(table, id), None, "`{table}` does not reach south");
    }
    let logged = count(
        &network.central,
        "SELECT count(*) FROM change_log WHERE tbl IN ('log', 'user_permission', 'preference', 'label', 'reminder')",
    );
    assert_eq!(logged, 0, "nothing local is in the central server's log or any bucket");
}

/// A site built before this rule (or a hostile one) pushes a local record anyway: the central
/// server refuses it, keeps the refusal where an administrator sees it, and stores nothing.
fn local_data_pushed_by_an_old_or_hostile_site_is_refused_and_kept_where_a_person_sees_it(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    north.sync();
    write_behind_the_checks(north, "log", "log-pushed", &json!({"message": "from an old site"}));
    north.sync();
    assert_eq!(record(&network.central, "log", "log-pushed"), None, "the central server stores no local data");
    let refused =
        count(&network.central, "SELECT count(*) FROM rejection WHERE tbl = 'log' AND record_id = 'log-pushed'");
    assert_eq!(refused, 1, "the refusal is kept on the central server");
    assert!(north.get("log", "log-pushed").is_some(), "the site keeps its own local record");
    let rejected = north.rejected();
    assert!(
        rejected.contains("log-pushed") && rejected.contains("stays on the site"),
        "the site is told why:\n{rejected}"
    );
}

/// A store added once the network runs reaches the site it is active on, which may then write
/// in it.
fn a_store_added_after_its_site_was_set_up_reaches_that_site(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    network.central.add_store("store-south-ward", "south");
    south.sync();
    north.sync();
    assert!(south.get("store", "store-south-ward").is_some(), "the new store reaches the site it is active on");
    assert!(south.get("store_sync", "store-south-ward@south").is_some(), "and so does where it is active");
    let line = json!({"store_id": "store-south-ward", "item_id": "item-1", "total_packs": 3});
    south.write("stock_line", "sl-ward-1", &line);
    south.sync();
    assert_eq!(record(&network.central, "stock_line", "sl-ward-1"), Some(line), "south writes in its new store");
}
