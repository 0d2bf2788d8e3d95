//! Site administration (issue 13) between real processes on each backend: listing sites with
//! what they hold and are owed, disabling a site (refused with a clear 403, nothing lost) and
//! enabling it again, and removing a site (refused while it has active stores).

mod common;

use common::{count, masked, on_each_backend, record, run, Backend, Network};
use serde_json::json;

on_each_backend!(
    a_disabled_site_is_refused_with_a_clear_error_and_loses_nothing,
    a_site_with_active_stores_cannot_be_removed_and_a_removed_site_cannot_sync,
    the_site_list_shows_what_each_site_holds_and_is_owed,
    a_site_silent_for_a_month_is_stale_and_one_never_synced_is_not,
);

fn a_site_silent_for_a_month_is_stale_and_one_never_synced_is_not(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    let central = &network.central;
    network.site("north").sync();
    network.site("east").sync();
    // north last synced 31 days ago; east today; south never.
    central.db.execute(
        "UPDATE site_sync SET last_pull_at = '2020-01-01T00:00:00.000Z', last_push_at = NULL WHERE site_id = 'north'",
    );
    let status = central.status();
    let line = |site: &str| status.lines().find(|l| l.trim_start().starts_with(site)).unwrap_or_default().to_owned();
    assert!(line("north").ends_with("(no sync for over a month)"), "{status}");
    assert!(line("south").ends_with("(never synced yet)"), "{status}");
    assert!(!line("east").contains('('), "{status}");
}

fn a_disabled_site_is_refused_with_a_clear_error_and_loses_nothing(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let (central, north) = (&network.central, network.site("north"));
    north.sync();
    north.write(
        "stock_line",
        "sl-1",
        &json!({"store_id": "store-north", "item_id": "i", "total_number_of_packs": 1.0}),
    );
    north.sync();

    central.admin("central site disable", &["site", "disable", "north"]);
    // Entered while the site is disabled: kept on the site, refused nowhere.
    north.write(
        "stock_line",
        "sl-2",
        &json!({"store_id": "store-north", "item_id": "i", "total_number_of_packs": 2.0}),
    );
    let refused = run("site sync while disabled", &mut north.command(&["sync"])).failed();
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    assert!(refused.stderr.contains("site `north` is disabled on the central server since"), "{}", refused.stderr);
    assert!(refused.stderr.contains("outpost central site enable north"), "{}", refused.stderr);
    assert!(record(central, "stock_line", "sl-1").is_some(), "what it synced before is kept");
    assert!(record(central, "stock_line", "sl-2").is_none(), "nothing of a disabled site is taken");
    assert!(north.get("stock_line", "sl-2").is_some(), "the site keeps what it entered");
    let listed = central.admin("central site list", &["site", "list"]).stdout;
    assert!(listed.contains("north (desktop)  DISABLED since "), "{listed}");

    central.admin("central site enable", &["site", "enable", "north"]);
    north.sync();
    assert_eq!(record(central, "stock_line", "sl-2").map(|d| d["total_number_of_packs"].clone()), Some(json!(2.0)));
    let listed = central.admin("central site list", &["site", "list"]).stdout;
    assert!(!listed.contains("DISABLED"), "{listed}");

    let unknown = central.try_admin("disable an unknown site", &["site", "disable", "nowhere"]).failed();
    assert!(unknown.stderr.contains("there is no site `nowhere`"), "{}", unknown.stderr);
    let me = central.try_admin("disable the central server", &["site", "disable", "central"]).failed();
    assert!(me.stderr.contains("is the central server itself"), "{}", me.stderr);
}

fn a_site_with_active_stores_cannot_be_removed_and_a_removed_site_cannot_sync(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let (central, north, south) = (&network.central, network.site("north"), network.site("south"));
    central.sync_type("store-south", "north", "collector");
    north.sync();
    north.write(
        "stock_line",
        "sl-n",
        &json!({"store_id": "store-north", "item_id": "i", "total_number_of_packs": 1.0}),
    );
    north.sync();
    south.sync();

    let refused = central.try_admin("remove a site with an active store", &["site", "remove", "north"]).failed();
    assert!(refused.stderr.contains("site `north` still has active stores (`store-north`)"), "{}", refused.stderr);
    assert!(refused.stderr.contains("outpost central store move"), "{}", refused.stderr);
    north.sync(); // nothing changed: it still syncs

    // Its store goes to south (north hands it over on its sync); then north holds only a copy,
    // and may go.
    central.admin("central store move", &["store", "move", "store-north", "--to", "south", "--leave-as", "none"]);
    north.sync();
    let removed = central.admin("central site remove", &["site", "remove", "north"]).stdout;
    assert!(removed.contains("site `north` removed"), "{removed}");
    assert!(removed.contains("it no longer holds copies of `store-south`"), "{removed}");
    assert_eq!(count(central, "SELECT count(*) FROM site_sync WHERE site_id = 'north'"), 0);
    assert!(record(central, "stock_line", "sl-n").is_some(), "the records it synced stay");
    let gone = run("site sync after removal", &mut north.command(&["sync"])).failed();
    assert!(gone.stderr.contains("401"), "{}", gone.stderr);
    south.sync();
    assert!(south.get("stock_line", "sl-n").is_some(), "the store's data reached its new site");
    let listed = central.admin("central site list", &["site", "list"]).stdout;
    assert!(!listed.lines().any(|l| l.starts_with("north ")), "{listed}");
}

fn the_site_list_shows_what_each_site_holds_and_is_owed(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let (central, north) = (&network.central, network.site("north"));
    central.sync_type("store-south", "north", "collector");
    north.sync();
    let listed = central.admin("central site list", &["site", "list"]).stdout;
    assert!(
        listed.contains("north (desktop)\n  stores:    store-north (active), store-south (collector)\n"),
        "{listed}"
    );
    assert!(listed.contains("  owed:      0 change(s) wait for the site"), "{listed}");
    // south has never synced: nothing is known of what it holds yet.
    assert!(listed.contains("south (desktop)\n  stores:    store-south (active)\n  last push: never\n  last pull: never\n  owed:      not known until the site has pulled once"), "{listed}");

    // Three changes for north's collector copy of store-south: owed until north pulls them.
    let south = network.site("south");
    south.sync();
    north.sync(); // owed nothing again
    for i in 0..3 {
        south.write(
            "stock_line",
            &format!("sl-{i}"),
            &json!({"store_id": "store-south", "item_id": "i", "total_number_of_packs": 1.0}),
        );
    }
    south.sync();
    let listed = central.admin("central site list", &["site", "list"]).stdout;
    assert!(listed.contains("  owed:      3 change(s) wait for the site"), "{}", masked(&listed, &central.url()));
    assert!(listed.contains("  owes:      0 change(s) still to push, as the site said at its last pull"), "{listed}");

    // What a site says it still has to push is shown as it said it.
    let http = common::Http::new(&central.url());
    let pull = protocol::PullRequest {
        cursor: None,
        max_bytes: 1 << 20,
        waiting_to_push: Some(5),
        format: Default::default(),
    };
    let answer =
        http.post("north", "pull", &common::good_headers("north", &north.password).as_refs(), &protocol::encode(&pull));
    assert_eq!(answer.status, 200);
    let listed = central.admin("central site list", &["site", "list"]).stdout;
    assert!(listed.contains("  owes:      5 change(s) still to push, as the site said at its last pull"), "{listed}");
}
