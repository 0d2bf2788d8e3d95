//! Moving a store between sites (issue 13), between real processes on each backend: the store
//! is *moving* until its old site has pushed what it has and handed it over; only then is it
//! active on the new site, which receives its current records. Nothing entered on either side
//! is lost, and nothing is entered twice.

mod common;

use common::{count, on_each_backend, record, run, Backend, Network, Site};
use serde_json::json;
use store::Write;

on_each_backend!(
    a_store_moves_only_after_its_old_site_hands_it_over,
    a_store_moves_to_the_central_server_and_back,
    a_mobile_site_takes_no_second_store_and_a_mobile_store_moves_to_a_desktop_and_back,
    a_forced_move_completes_without_a_lost_old_site_and_says_what_it_had_not_pushed,
    a_store_is_made_active_elsewhere_only_by_a_move,
    a_transfer_to_a_moving_store_is_numbered_on_its_new_site,
);

/// A supplier invoice made for a store while it moves reaches its old site in the batch that
/// asks it to hand the store over: the old site hands over and leaves it alone (a write of its
/// own there is refused, and would stall its pulls), and the new site numbers it.
fn a_transfer_to_a_moving_store_is_numbered_on_its_new_site(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    let (central, north, south, east) =
        (&network.central, network.site("north"), network.site("south"), network.site("east"));
    central.write("item", "item-1", &json!({"code": "I1", "name": "Amoxicillin"}));
    for site in [north, south, east] {
        site.sync();
    }
    central.admin("central store move", &["store", "move", "store-south", "--to", "east"]);
    let writes = [
        Write::upsert(
            "stock_line",
            "sl-n",
            &json!({"store_id": "store-north", "item_id": "item-1", "batch": "B1",
            "expiry_date": "2027-06-30", "pack_size": 10.0, "total_number_of_packs": 10.0}),
        ),
        Write::upsert(
            "transaction_line",
            "ci-1-1",
            &json!({"store_id": "store-north", "transaction_id": "ci-1",
            "item_id": "item-1", "batch": "B1", "expiry_date": "2027-06-30", "pack_size": 10.0, "number_of_packs": 2.0,
            "stock_line_id": "sl-n"}),
        ),
        Write::upsert(
            "transaction",
            "ci-1",
            &json!({"store_id": "store-north", "other_store_id": "store-south",
            "type": "customer_invoice", "status": "finalised", "serial_number": 1}),
        ),
    ];
    north.db().write(&writes).expect("a finalised transfer to store-south");
    north.sync();
    assert!(record(central, "transaction", "ci-1:received").is_some(), "the half is made for the moving store");
    south.sync(); // the half and the move in one batch: hands over, leaves the half alone
    assert_eq!(record(south, "transaction", "ci-1:received").map(|d| d["serial_number"].clone()), Some(json!(-1)));
    east.sync();
    assert_eq!(
        record(east, "transaction", "ci-1:received").map(|d| d["serial_number"].clone()),
        Some(json!(1)),
        "numbered on the new site"
    );
    east.sync();
    assert_eq!(record(central, "transaction", "ci-1:received").map(|d| d["serial_number"].clone()), Some(json!(1)));
}

fn stock(site: &Site, store: &str, id: &str, packs: f64) {
    site.write("stock_line", id, &json!({"store_id": store, "item_id": "item-1", "total_number_of_packs": packs}));
}

fn try_stock(site: &Site, store: &str, id: &str) -> common::Run {
    let doc = json!({"store_id": store, "item_id": "item-1", "total_number_of_packs": 1.0}).to_string();
    run("site write", &mut site.command(&["write", "stock_line", id, &doc]))
}

/// Two synced sites; north has entered `sl-1` in `store-north` and pushed it.
fn north_and_south_with_a_line(backend: &Backend) -> Network {
    let network = Network::new(backend, &["north", "south"]);
    network.site("north").sync();
    network.site("south").sync();
    stock(network.site("north"), "store-north", "sl-1", 1.0);
    network.site("north").sync();
    network
}

fn a_store_moves_only_after_its_old_site_hands_it_over(backend: &Backend) {
    let network = north_and_south_with_a_line(backend);
    let (central, north, south) = (&network.central, network.site("north"), network.site("south"));

    let moving = central
        .admin("central store move", &["store", "move", "store-north", "--to", "south", "--leave-as", "collector"])
        .stdout;
    assert!(moving.contains("store `store-north` is moving to `south`"), "{moving}");
    let listed = central.admin("central store list", &["store", "list"]).stdout;
    assert!(listed.contains("store-north  active on north"), "{listed}");
    assert!(listed.contains("  MOVING to south (leaving collector on north) since "), "{listed}");
    assert!(listed.contains("waits for `north` to sync and hand it over"), "{listed}");
    let status = central.status();
    assert!(status.contains("store move pending: `store-north` from `north` to `south`, since "), "{status}");
    let again = central.try_admin("move it again", &["store", "move", "store-north", "--to", "south"]).failed();
    assert!(again.stderr.contains("store `store-north` is already moving to `south`"), "{}", again.stderr);

    // Entered before north learns of the move: applied.
    stock(north, "store-north", "sl-2", 2.0);
    // The new site gets nothing of the store before the hand-over.
    south.sync();
    assert!(south.get("stock_line", "sl-1").is_none(), "south received the store before the hand-over");
    let status = south.status();
    assert!(status.contains("store `store-north` is moving here from `north`"), "{status}");

    north.sync(); // pushes sl-2, learns of the move, hands the store over, and learns it is done
    assert_eq!(record(central, "stock_line", "sl-2").map(|d| d["total_number_of_packs"].clone()), Some(json!(2.0)));
    let listed = central.admin("central store list", &["store", "list"]).stdout;
    assert!(listed.contains("store-north  active on south"), "{listed}");
    assert!(listed.contains("north (collector)"), "{listed}");
    assert!(!listed.contains("MOVING"), "{listed}");
    assert!(!central.status().contains("store move"), "the move is done");
    let refused = try_stock(north, "store-north", "sl-3").failed();
    assert!(refused.stderr.contains("only site `south` may edit them, not site `north`"), "{}", refused.stderr);
    assert!(north.get("stock_line", "sl-3").is_none());

    south.sync();
    for (id, packs) in [("sl-1", 1.0), ("sl-2", 2.0)] {
        let got = south.get("stock_line", id).map(|d| d["total_number_of_packs"].clone());
        assert_eq!(got, Some(json!(packs)), "{id} on the new site");
    }
    stock(south, "store-north", "sl-4", 4.0);
    south.sync();
    north.sync();
    assert!(north.get("stock_line", "sl-4").is_some(), "the old site keeps a collector copy");
    assert_eq!(count(central, "SELECT count(*) FROM rejection"), 0, "nothing was refused on the way");
}

fn a_store_moves_to_the_central_server_and_back(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let (central, north) = (&network.central, network.site("north"));
    north.sync();
    stock(north, "store-north", "sl-1", 1.0);
    central.admin("central store move", &["store", "move", "store-north", "--to", "central"]);
    north.sync();
    let listed = central.admin("central store list", &["store", "list"]).stdout;
    assert!(listed.contains("store-north  active on central"), "{listed}");
    assert!(record(central, "stock_line", "sl-1").is_some());
    central.write(
        "stock_line",
        "sl-c",
        &json!({"store_id": "store-north", "item_id": "item-1", "total_number_of_packs": 5.0}),
    );

    // From the central server nothing has to be handed over: done at once.
    let back = central.admin("central store move", &["store", "move", "store-north", "--to", "north"]).stdout;
    assert!(back.contains("store `store-north` is now active on `north`"), "{back}");
    north.sync();
    assert_eq!(north.get("stock_line", "sl-c").map(|d| d["total_number_of_packs"].clone()), Some(json!(5.0)));
    stock(north, "store-north", "sl-2", 2.0);
    north.sync();
    assert!(record(central, "stock_line", "sl-2").is_some());
}

fn a_mobile_site_takes_no_second_store_and_a_mobile_store_moves_to_a_desktop_and_back(backend: &Backend) {
    let network = Network::with(backend, &["north"], |central| {
        central.admin("central site add", &["site", "add", "tablet", "--mobile"]);
        central.add_store("tablet-store", "tablet");
    });
    let central = &network.central;
    let refused =
        central.try_admin("move to a mobile site", &["store", "move", "store-north", "--to", "tablet"]).failed();
    assert!(
        refused.stderr.contains("`tablet` is a mobile site and store `tablet-store` is active on it already"),
        "{}",
        refused.stderr
    );
    let password =
        central.admin("central site reset-password", &["site", "reset-password", "tablet"]).last_line().to_owned();
    let tablet = Site::init(network.root.path(), "tablet", &central.url(), &password);
    let north = network.site("north");
    tablet.sync();
    north.sync();
    stock(&tablet, "tablet-store", "sl-t", 3.0);

    central.admin("central store move", &["store", "move", "tablet-store", "--to", "north"]);
    tablet.sync();
    north.sync();
    assert!(north.get("stock_line", "sl-t").is_some(), "the desktop received the mobile store");
    stock(north, "tablet-store", "sl-n", 1.0);

    central.admin("central store move", &["store", "move", "tablet-store", "--to", "tablet"]);
    north.sync();
    tablet.sync();
    assert!(tablet.get("stock_line", "sl-n").is_some(), "the mobile site has its store back, with what north entered");
    stock(&tablet, "tablet-store", "sl-t2", 1.0);
    tablet.sync();
    assert!(record(central, "stock_line", "sl-t2").is_some());
}

fn a_forced_move_completes_without_a_lost_old_site_and_says_what_it_had_not_pushed(backend: &Backend) {
    let network = north_and_south_with_a_line(backend);
    let (central, north, south) = (&network.central, network.site("north"), network.site("south"));
    stock(north, "store-north", "sl-lost", 9.0); // never pushed before the site is "lost"

    central.admin("central store move", &["store", "move", "store-north", "--to", "south"]);
    let forced = central
        .admin("central store move --force", &["store", "move", "store-north", "--to", "south", "--force"])
        .stdout;
    assert!(forced.contains("store `store-north` is now active on `south` without a hand-over by `north`"), "{forced}");
    assert!(forced.contains("What `north` entered after its last push ("), "{forced}");
    assert!(forced.contains("(at its last pull it had nothing left to push)"), "{forced}");
    south.sync();
    assert!(south.get("stock_line", "sl-1").is_some(), "everything the central server held went to the new site");

    // The old site comes back after all: what it had not pushed is refused and kept, visibly.
    let synced = run("site sync of the old site", &mut north.command(&["sync"]));
    assert!(synced.success(), "{}", synced.stderr);
    assert!(record(central, "stock_line", "sl-lost").is_none());
    let kept = central.admin("central site rejected", &["site", "rejected", "north"]).stdout;
    assert!(kept.contains("stock_line `sl-lost`"), "{kept}");
    assert!(north.rejected().contains("sl-lost"), "the old site shows what was refused");
}

fn a_store_is_made_active_elsewhere_only_by_a_move(backend: &Backend) {
    let network = Network::with(backend, &["north", "south"], |central| {
        central.add_site("spare");
    });
    let central = &network.central;
    central.admin("central store move", &["store", "move", "store-south", "--to", "spare"]);
    let remove = central.try_admin("remove the site a store moves to", &["site", "remove", "spare"]).failed();
    assert!(remove.stderr.contains("store `store-south` is moving to or from site `spare`"), "{}", remove.stderr);
    let refused =
        central.try_admin("sync-type active", &["store", "sync-type", "store-north", "south", "active"]).failed();
    assert!(refused.stderr.contains("outpost central store move store-north --to south"), "{}", refused.stderr);
    let refused = central
        .try_admin("sync-type on the active site", &["store", "sync-type", "store-north", "north", "none"])
        .failed();
    assert!(refused.stderr.contains("store `store-north` is active on `north`"), "{}", refused.stderr);
    let listed = central.admin("central store list", &["store", "list"]).stdout;
    assert!(listed.contains("store-north  active on north"), "{listed}");
}
