//! The seeds' data types between real processes (issue 11): a central server and remote sites
//! on loopback, the central server on each backend, asserting on what every database holds.

mod common;

use common::{count, on_each_backend, record, run, write_behind_the_checks, Backend, Network};
use serde_json::json;

on_each_backend!(
    local_data_never_leaves_the_site_that_wrote_it,
    local_data_pushed_by_an_old_or_hostile_site_is_refused_and_kept_where_a_person_sees_it,
    a_store_added_after_its_site_was_set_up_reaches_that_site,
    a_dispensarys_transactions_stay_on_its_site_until_it_includes_them_and_then_all_of_them_travel,
    a_new_user_goes_to_the_central_server_only_and_later_edits_stay_on_its_site,
    a_prescription_is_written_only_in_a_dispensary_store_where_its_patient_is_visible,
    a_new_collector_receives_what_the_store_already_holds_and_nobody_loses_anything,
    a_site_that_stops_seeing_a_store_keeps_what_it_holds_and_receives_no_more,
    a_patient_moves_home_on_the_central_server_and_its_records_follow_it,
    a_move_whose_old_home_site_never_syncs_stays_pending_and_nobody_can_edit_the_patient,
    a_patient_made_visible_in_a_store_reaches_its_site_with_its_records,
    an_item_merge_rewrites_every_reference_on_every_node_and_in_what_arrives_later,
    patients_merge_only_within_one_home_store_and_locations_within_one_store,
    the_same_barcode_added_on_two_sites_is_merged_on_the_primary_and_everywhere,
    a_new_patient_lives_where_it_was_created_and_is_seen_by_its_sites_other_dispensaries_only,
    a_site_that_gains_a_dispensary_store_receives_the_dispensary_data_written_before,
    a_satellite_may_switch_centralised_procurement_off_for_its_own_store,
    a_prescriber_is_shared_with_the_dispensary_on_another_site_where_it_prescribes,
);

/// Two sites with a dispensary store each: north's `north-dispensary`, south's `south-dispensary`.
fn two_dispensaries(backend: &Backend) -> Network {
    Network::with(backend, &["north", "south"], |central| {
        for site in ["north", "south"] {
            let store = format!("{site}-dispensary");
            central.admin("store add", &["store", "add", &store, "--active-on", site, "--dispensary"]);
        }
    })
}

/// A patient of north's dispensary, with a medical record, an insurance policy and an event.
fn a_patient_of_north(north: &common::Site) -> Vec<(&'static str, &'static str, serde_json::Value)> {
    let records = vec![
        ("patient", "pat-1", json!({"name": "Asha", "home_store_id": "north-dispensary"})),
        ("patient_medication_record", "pmr-1", json!({"patient_id": "pat-1", "note": "allergic to penicillin"})),
        ("insurance_policy", "ins-1", json!({"patient_id": "pat-1", "provider": "NHIF"})),
        ("patient_event", "ev-1", json!({"patient_id": "pat-1", "event": "first visit"})),
    ];
    for (table, id, data) in &records {
        north.write(table, id, data);
    }
    records
}

/// [`two_dispensaries`], both sites set up, and [`a_patient_of_north`] pushed.
fn north_with_a_patient(backend: &Backend) -> (Network, Vec<(&'static str, &'static str, serde_json::Value)>) {
    let network = two_dispensaries(backend);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    let records = a_patient_of_north(north);
    north.sync();
    (network, records)
}

fn move_patient(network: &Network, patient: &str, to: &str) -> String {
    network.central.admin("patient move", &["patient", "move", patient, "--to", to]).ok().stdout
}

/// The seeds (001): a patient is moved to another home store only on the central server; it is
/// read-only everywhere until the old home site next syncs, which pushes what it wrote first
/// (applied, not lost) and hands the patient over; the patient and its records then reach the
/// new home store's site, where it is edited from then on.
fn a_patient_moves_home_on_the_central_server_and_its_records_follow_it(backend: &Backend) {
    let (network, records) = north_with_a_patient(backend);
    let (north, south) = (network.site("north"), network.site("south"));
    assert_eq!(south.get("patient", "pat-1"), None, "south does not see north's patient");

    let said = move_patient(&network, "pat-1", "south-dispensary");
    assert!(said.contains("read-only everywhere until site `north` next syncs"), "{said}");
    let status = network.central.status();
    assert!(status.contains("patient move pending: `pat-1` from `north-dispensary` to `south-dispensary`"), "{status}");

    // Written on north before it learns of the move: applied, not lost.
    let late = json!({"patient_id": "pat-1", "note": "allergic to penicillin and sulfa"});
    north.write("patient_medication_record", "pmr-1", &late);
    north.sync();

    let home = |node: &str| {
        match node {
            "central" => record(&network.central, "patient", "pat-1"),
            site => network.site(site).get("patient", "pat-1"),
        }
        .and_then(|p| p["home_store_id"].as_str().map(str::to_owned))
    };
    assert_eq!(home("central").as_deref(), Some("south-dispensary"), "the move completed in north's sync");
    assert_eq!(record(&network.central, "patient_medication_record", "pmr-1"), Some(late.clone()));
    assert!(!network.central.status().contains("patient move pending"), "{}", network.central.status());
    assert_eq!(home("north").as_deref(), Some("south-dispensary"), "north learnt where the patient lives now");
    let pmr = json!({"patient_id": "pat-1"}).to_string();
    let refused =
        run("site write", &mut north.command(&["write", "patient_medication_record", "pmr-1", &pmr])).failed();
    assert!(refused.stderr.contains("south"), "north may no longer edit the patient's records: {}", refused.stderr);

    south.sync();
    assert_eq!(home("south").as_deref(), Some("south-dispensary"));
    for (table, id, data) in &records[1..] {
        let want = if *id == "pmr-1" { late.clone() } else { data.clone() };
        assert_eq!(south.get(table, id), Some(want), "south receives the patient's `{table}`");
    }
    let edited = json!({"patient_id": "pat-1", "provider": "NHIF", "number": "77"});
    south.write("insurance_policy", "ins-1", &edited);
    south.sync();
    north.sync();
    assert_eq!(record(&network.central, "insurance_policy", "ins-1"), Some(edited.clone()), "south edits it now");
    assert_eq!(north.get("insurance_policy", "ins-1"), Some(edited), "north keeps a read-only copy that follows");
}

/// A move whose old home site does not sync stays pending, says so, and leaves the patient
/// editable nowhere: not on the new home site, not on the old one once it knows of the move.
fn a_move_whose_old_home_site_never_syncs_stays_pending_and_nobody_can_edit_the_patient(backend: &Backend) {
    let (network, _) = north_with_a_patient(backend);
    let south = network.site("south");
    move_patient(&network, "pat-1", "south-dispensary");
    south.sync();
    let taken = json!({"name": "Asha", "home_store_id": "south-dispensary"}).to_string();
    let on_south = run("site write", &mut south.command(&["write", "patient", "pat-1", &taken])).failed();
    assert!(
        on_south.stderr.contains("is moving to home store `south-dispensary`"),
        "south cannot take the patient early: {}",
        on_south.stderr
    );
    let again =
        network.central.try_admin("patient move", &["patient", "move", "pat-1", "--to", "north-dispensary"]).failed();
    assert!(
        again.stderr.contains("already moving to `south-dispensary`; the move completes when site `north` next syncs"),
        "{}",
        again.stderr
    );
    let status = network.central.status();
    assert!(status.contains("completes when site `north` next syncs"), "{status}");

    // Nobody but north may hand the patient over, and north only by handing it over: a site
    // writing behind its checks is refused on the central server.
    let forged = json!({"patient_id": "pat-1", "record_table": "patient", "from_store_id": "north-dispensary",
        "to_store_id": "south-dispensary", "status": "handed_over"});
    write_behind_the_checks(south, "patient_move", "pat-1", &forged);
    south.sync();
    assert!(south.rejected().contains("patient_move"), "{}", south.rejected());
    assert!(network.central.status().contains("patient move pending"), "the move still waits for north");
    assert_eq!(record(&network.central, "patient", "pat-1").expect("the patient")["home_store_id"], "north-dispensary");
}

/// Making a patient visible in a store (on the central server) sends the store's sites the
/// patient and its records, not only the visibility row.
fn a_patient_made_visible_in_a_store_reaches_its_site_with_its_records(backend: &Backend) {
    let (network, records) = north_with_a_patient(backend);
    let south = network.site("south");
    south.sync();
    assert_eq!(south.get("patient", "pat-1"), None);
    network.central.admin("show-name", &["show-name", "pat-1", "south-dispensary"]).ok();
    south.sync();
    for (table, id, data) in &records {
        assert_eq!(south.get(table, id).as_ref(), Some(data), "south receives `{table}` `{id}`");
    }
    let prescription = json!({"store_id": "south-dispensary", "patient_id": "pat-1", "item_id": "item-1"});
    south.write("prescription", "rx-south", &prescription);
}

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

/// A dispensary store's transactions, stock, prescriptions and stocktakes stay on its site while
/// its *Include transactions in sync* is off, the default (seeds). Switched on at the central
/// server, the store's existing records are pushed too, not only later ones.
fn a_dispensarys_transactions_stay_on_its_site_until_it_includes_them_and_then_all_of_them_travel(backend: &Backend) {
    let network = Network::with(backend, &["north"], |central| {
        central.admin("store add", &["store", "add", "north-dispensary", "--active-on", "north", "--dispensary"]);
    });
    let north = network.site("north");
    north.sync();
    let line = json!({"store_id": "north-dispensary", "item_id": "item-1", "total_packs": 12});
    let sale = json!({"store_id": "north-dispensary", "type": "customer_invoice", "status": "new"});
    north.write("stock_line", "sl-disp-1", &line);
    north.write("transaction", "tx-disp-1", &sale);
    assert!(north.status().contains("0 change"), "nothing of the dispensary waits to be pushed:\n{}", north.status());
    north.sync();
    assert_eq!(record(&network.central, "stock_line", "sl-disp-1"), None, "the stock line stayed on the site");
    assert_eq!(record(&network.central, "transaction", "tx-disp-1"), None, "the transaction stayed on the site");
    let logged =
        count(&network.central, "SELECT count(*) FROM change_log WHERE record_id IN ('sl-disp-1', 'tx-disp-1')");
    assert_eq!(logged, 0, "not in the central server's log or any bucket");

    // A site writing behind its checks pushes one anyway: refused, kept, and the site keeps it.
    write_behind_the_checks(
        north,
        "stock_line",
        "sl-disp-pushed",
        &json!({"store_id": "north-dispensary", "total_packs": 1}),
    );
    north.sync();
    assert_eq!(record(&network.central, "stock_line", "sl-disp-pushed"), None);
    assert!(north.get("stock_line", "sl-disp-pushed").is_some(), "the site keeps its record");
    assert!(north.rejected().contains("does not include transactions in sync"), "{}", north.rejected());

    // Switched on at the central server: what the dispensary held travels on the next syncs.
    network.central.admin("store include-transactions", &["store", "include-transactions", "north-dispensary", "on"]);
    // A sync-related preference (the seeds' Synchronisation tab), kept apart from the store record
    // and its non-sync preferences: editing the store record leaves it as it is.
    let prefs = record(&network.central, "store_sync", "north-dispensary");
    assert_eq!(prefs, Some(json!({"store_id": "north-dispensary", "include_transactions_in_sync": true})));
    network.central.write("store", "north-dispensary", &json!({"name": "North dispensary", "dispensary": true}));
    north.sync(); // pulls the change, which logs what was held
    north.sync(); // pushes it
    assert_eq!(record(&network.central, "stock_line", "sl-disp-1"), Some(line), "the existing stock line travelled");
    assert_eq!(record(&network.central, "transaction", "tx-disp-1"), Some(sale), "the existing transaction travelled");
    let later = json!({"store_id": "north-dispensary", "item_id": "item-2", "total_packs": 5});
    north.write("stock_line", "sl-disp-2", &later);
    north.sync();
    assert_eq!(record(&network.central, "stock_line", "sl-disp-2"), Some(later), "and so do later ones");
}

/// New users made on a store's site go to the central server only; later edits of them stay on
/// the site that made them (seeds: "User licenses and existing users" are local data).
fn a_new_user_goes_to_the_central_server_only_and_later_edits_stay_on_its_site(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let (north, south) = (network.site("north"), network.site("south"));
    network.central.sync_type("store-north", "south", "collector");
    north.sync();
    south.sync();
    let user = json!({"store_id": "store-north", "login": "amina", "role": "dispenser"});
    north.write("user", "user-amina", &user);
    north.sync();
    south.sync();
    assert_eq!(
        record(&network.central, "user", "user-amina"),
        Some(user.clone()),
        "the new user reaches the central server"
    );
    assert_eq!(south.get("user", "user-amina"), None, "and no other site, not even a collector of its store");

    let edited = json!({"store_id": "store-north", "login": "amina", "role": "store manager"});
    north.write("user", "user-amina", &edited);
    assert!(north.status().contains("0 change"), "the edit does not wait to be pushed:\n{}", north.status());
    north.sync();
    assert_eq!(north.get("user", "user-amina"), Some(edited), "north keeps its edit");
    assert_eq!(
        record(&network.central, "user", "user-amina"),
        Some(user),
        "the central server keeps the user as created"
    );
}

/// Prescriptions are allowed in dispensary stores where the patient is visible (seeds); not in
/// a store that is not a dispensary, nor for a patient the store cannot see. The rule holds on
/// the site and, for a site that writes behind its checks, on the central server.
fn a_prescription_is_written_only_in_a_dispensary_store_where_its_patient_is_visible(backend: &Backend) {
    let network = Network::with(backend, &["north"], |central| {
        central.admin("store add", &["store", "add", "north-dispensary", "--active-on", "north", "--dispensary"]);
    });
    let north = network.site("north");
    north.sync();
    north.write("patient", "pat-1", &json!({"name": "Asha", "home_store_id": "north-dispensary"}));
    let rx = |store: &str, patient: &str| json!({"store_id": store, "patient_id": patient, "item_id": "item-1"});
    north.write("prescription", "rx-ok", &rx("north-dispensary", "pat-1"));

    let refused = |id: &str, data: &serde_json::Value| {
        run("site write", &mut north.command(&["write", "prescription", id, &data.to_string()])).failed().stderr
    };
    let not_dispensary = refused("rx-general", &rx("store-north", "pat-1"));
    assert!(not_dispensary.contains("not a dispensary"), "{not_dispensary}");
    let not_visible = refused("rx-stranger", &rx("north-dispensary", "pat-elsewhere"));
    assert!(not_visible.contains("not visible in store `north-dispensary`"), "{not_visible}");

    north.sync();
    assert!(record(&network.central, "patient", "pat-1").is_some());
    // A site writing behind its checks: the central server holds the same rule.
    write_behind_the_checks(north, "prescription", "rx-pushed", &rx("store-north", "pat-1"));
    north.sync();
    assert_eq!(record(&network.central, "prescription", "rx-pushed"), None, "refused on the central server too");
    assert!(north.rejected().contains("not a dispensary"), "{}", north.rejected());
}

/// A site that becomes a collector of a store receives the store's current records (the same
/// as an initialisation would give it, limited to what became visible), not only later changes;
/// a collector that already held them keeps them, later edits reach everyone, and the central
/// server's log still holds one entry per record.
fn a_new_collector_receives_what_the_store_already_holds_and_nobody_loses_anything(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    let (north, south, east) = (network.site("north"), network.site("south"), network.site("east"));
    network.central.sync_type("store-north", "south", "collector");
    for site in [north, south, east] {
        site.sync();
    }
    let lines: Vec<_> = (1..=3)
        .map(|i| (format!("sl-{i}"), json!({"store_id": "store-north", "item_id": "item-1", "total_packs": i})))
        .collect();
    for (id, line) in &lines {
        north.write("stock_line", id, line);
    }
    north.sync();
    south.sync();

    network.central.sync_type("store-north", "east", "collector");
    east.sync();
    south.sync();
    for (id, line) in &lines {
        assert_eq!(east.get("stock_line", id).as_ref(), Some(line), "east, the new collector, holds `{id}`");
        assert_eq!(south.get("stock_line", id).as_ref(), Some(line), "south still holds `{id}`");
    }
    let entries =
        count(&network.central, "SELECT count(*) FROM change_log WHERE record_id IN ('sl-1', 'sl-2', 'sl-3')");
    assert_eq!(entries, 3, "one log entry per record");

    let edited = json!({"store_id": "store-north", "item_id": "item-1", "total_packs": 30});
    north.write("stock_line", "sl-3", &edited);
    north.sync();
    east.sync();
    south.sync();
    assert_eq!(east.get("stock_line", "sl-3"), Some(edited.clone()), "a later edit reaches the new collector");
    assert_eq!(south.get("stock_line", "sl-3"), Some(edited), "and the old one");
}

/// A site that stops holding a store (sync type `none`) keeps the records it already holds (they
/// are read-only there: it never had authority over them) and receives no later change.
fn a_site_that_stops_seeing_a_store_keeps_what_it_holds_and_receives_no_more(backend: &Backend) {
    let network = Network::new(backend, &["north", "east"]);
    let (north, east) = (network.site("north"), network.site("east"));
    network.central.sync_type("store-north", "east", "collector");
    north.sync();
    east.sync();
    let line = json!({"store_id": "store-north", "item_id": "item-1", "total_packs": 4});
    north.write("stock_line", "sl-1", &line);
    north.sync();
    east.sync();
    assert_eq!(east.get("stock_line", "sl-1").as_ref(), Some(&line), "east held the store");

    network.central.sync_type("store-north", "east", "none");
    east.sync();
    let edited = json!({"store_id": "store-north", "item_id": "item-1", "total_packs": 40});
    north.write("stock_line", "sl-1", &edited);
    north.write("stock_line", "sl-2", &line);
    north.sync();
    east.sync();
    assert_eq!(east.get("stock_line", "sl-1"), Some(line), "east keeps what it held, as it was");
    assert_eq!(east.get("stock_line", "sl-2"), None, "and receives nothing new of the store");
    let refused = run("site write", &mut east.command(&["write", "stock_line", "sl-1", &edited.to_string()])).failed();
    assert!(refused.stderr.contains("store-north"), "east cannot edit it: {}", refused.stderr);
}

/// The seeds: merging items (on the primary) rewrites every reference on every site. A site
/// offline during the merge pushes a stock line of the old item a week later: it is rewritten
/// on the central server as it arrives, and on the site itself when the merge reaches it; a line
/// written after that, naming the old item, is rewritten where it is written.
fn an_item_merge_rewrites_every_reference_on_every_node_and_in_what_arrives_later(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    let (north, south, east) = (network.site("north"), network.site("south"), network.site("east"));
    network.central.sync_type("store-north", "south", "collector");
    network.central.write("item", "item-a", &json!({"name": "Paracetamol 500mg"}));
    network.central.write("item", "item-b", &json!({"name": "Paracetamol 500 mg tablet"}));
    for site in [north, south, east] {
        site.sync();
    }
    let line = |store: &str, item: &str| json!({"store_id": store, "item_id": item, "total_packs": 5});
    north.write("stock_line", "sl-1", &line("store-north", "item-a"));
    east.write("stock_line", "sl-east", &line("store-east", "item-a")); // east stays offline
    north.sync();
    south.sync();

    let said = network.central.admin("merge", &["merge", "item", "item-a", "--into", "item-b"]).ok().stdout;
    assert!(said.contains("merged into `item-b`"), "{said}");
    north.sync();
    south.sync();
    assert_eq!(record(&network.central, "item", "item-a"), None, "the merged-away item is gone");
    assert_eq!(north.get("item", "item-a"), None);
    let item_of = |doc: Option<serde_json::Value>| doc.and_then(|d| d["item_id"].as_str().map(str::to_owned));
    assert_eq!(item_of(record(&network.central, "stock_line", "sl-1")).as_deref(), Some("item-b"));
    assert_eq!(item_of(north.get("stock_line", "sl-1")).as_deref(), Some("item-b"), "on the store's site");
    assert_eq!(item_of(south.get("stock_line", "sl-1")).as_deref(), Some("item-b"), "on its collector");

    east.sync();
    assert_eq!(item_of(record(&network.central, "stock_line", "sl-east")).as_deref(), Some("item-b"), "late push");
    assert_eq!(item_of(east.get("stock_line", "sl-east")).as_deref(), Some("item-b"), "rewritten on east too");
    east.write("stock_line", "sl-east-2", &line("store-east", "item-a"));
    assert_eq!(item_of(east.get("stock_line", "sl-east-2")).as_deref(), Some("item-b"), "and what is written later");
}

/// The seeds: patients (and prescribers) are merged only when both have the same home store,
/// checked even when the other's home store is unknown to the site; locations only within one
/// store. A merge of two patients of one home store rewrites their records everywhere.
fn patients_merge_only_within_one_home_store_and_locations_within_one_store(backend: &Backend) {
    let network = two_dispensaries(backend);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    north.write("patient", "pat-1", &json!({"name": "Asha Mwangi", "home_store_id": "north-dispensary"}));
    north.write("patient", "pat-2", &json!({"name": "Asha Mwangi", "home_store_id": "north-dispensary"}));
    north.write("patient_medication_record", "pmr-2", &json!({"patient_id": "pat-2", "note": "asthma"}));
    south.write("patient", "pat-s", &json!({"name": "Asha M.", "home_store_id": "south-dispensary"}));
    south.sync();

    let merge = |site: &common::Site, table: &str, id: &str, into: &str| {
        run("site merge", &mut site.command(&["merge", table, id, "--into", into]))
    };
    merge(north, "patient", "pat-2", "pat-1").ok();
    north.sync();
    assert_eq!(record(&network.central, "patient", "pat-2"), None);
    let pmr = record(&network.central, "patient_medication_record", "pmr-2");
    assert_eq!(pmr.as_ref().map(|p| p["patient_id"].clone()), Some(json!("pat-1")), "{pmr:?}");

    let unknown = merge(north, "patient", "pat-1", "pat-s").failed().stderr;
    assert!(unknown.contains("`pat-s` is not held here"), "{unknown}");
    north.write("location", "loc-1", &json!({"store_id": "store-north", "code": "A1"}));
    north.write("location", "loc-2", &json!({"store_id": "north-dispensary", "code": "A1"}));
    let across = merge(north, "location", "loc-1", "loc-2").failed().stderr;
    assert!(across.contains("only within one store"), "{across}");
}

/// The seeds: barcodes can be added on any site; duplicates (the same code for the same item,
/// added on two sites) are merged automatically when they reach the primary, and the merge
/// reaches every site. The same code for another item is not a duplicate.
fn the_same_barcode_added_on_two_sites_is_merged_on_the_primary_and_everywhere(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    let barcode = |item: &str| json!({"code": "6001234500017", "item_id": item});
    north.write("barcode", "bc-north", &barcode("item-1"));
    south.write("barcode", "bc-south", &barcode("item-1"));
    south.write("barcode", "bc-other", &barcode("item-2"));
    north.sync();
    south.sync();
    north.sync();
    for (node, get) in [
        ("central", Box::new(|id: &str| record(&network.central, "barcode", id)) as Box<dyn Fn(&str) -> _>),
        ("north", Box::new(|id: &str| north.get("barcode", id))),
        ("south", Box::new(|id: &str| south.get("barcode", id))),
    ] {
        assert_eq!(get("bc-north"), Some(barcode("item-1")), "{node} keeps the first barcode");
        assert_eq!(get("bc-south"), None, "{node}: the duplicate is merged away");
        assert_eq!(get("bc-other"), Some(barcode("item-2")), "{node}: another item's is kept");
    }
}

/// The seeds: the home store is set from the store the patient was created in; a new patient is
/// made visible in the other dispensary stores of its home site; visibility anywhere else is set
/// on the central server, and a home site that tries is refused.
fn a_new_patient_lives_where_it_was_created_and_is_seen_by_its_sites_other_dispensaries_only(backend: &Backend) {
    let network = Network::with(backend, &["north", "south"], |central| {
        for (store, site) in [("north-dispensary", "north"), ("north-clinic", "north"), ("south-dispensary", "south")] {
            central.admin("store add", &["store", "add", store, "--active-on", site, "--dispensary"]);
        }
    });
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    north.write("patient", "pat-1", &json!({"name": "Asha", "store_id": "north-dispensary"}));
    north.sync();
    let home = record(&network.central, "patient", "pat-1").map(|p| p["store_id"].clone());
    assert_eq!(home, Some(json!("north-dispensary")));
    let seen = record(&network.central, "name_visibility", "pat-1@north-clinic");
    assert_eq!(
        seen,
        Some(json!({"name_id": "pat-1", "store_id": "north-clinic"})),
        "visible in north's other dispensary"
    );
    assert_eq!(
        record(&network.central, "name_visibility", "pat-1@store-north"),
        None,
        "not in a store that does not dispense"
    );

    let row = json!({"name_id": "pat-1", "store_id": "south-dispensary"}).to_string();
    let refused =
        run("site write", &mut north.command(&["write", "name_visibility", "pat-1@south-dispensary", &row])).failed();
    assert!(
        refused.stderr.contains("central"),
        "visibility elsewhere is set on the central server: {}",
        refused.stderr
    );
    let rx = json!({"store_id": "north-clinic", "patient_id": "pat-1", "item_id": "item-1"});
    north.write("prescription", "rx-clinic", &rx);
}

/// Dispensary data reaches only sites with an active dispensary store (the seeds), and a site
/// that gains one receives what was written before, not only later changes.
fn a_site_that_gains_a_dispensary_store_receives_the_dispensary_data_written_before(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let abbreviation = json!({"code": "bd", "text": "twice a day"});
    network.central.write("abbreviation", "abbr-bd", &abbreviation);
    north.sync();
    assert_eq!(north.get("abbreviation", "abbr-bd"), None, "north has no dispensary store yet");
    network.central.admin("store add", &["store", "add", "north-dispensary", "--active-on", "north", "--dispensary"]);
    north.sync();
    assert_eq!(north.get("abbreviation", "abbr-bd"), Some(abbreviation), "it does now, and receives what exists");
}

/// The seeds: with centralised procurement on at the primary, purchase orders of every store
/// are entered there and on no satellite; a satellite may still switch it off locally for its
/// own stores (with a warning that the primary's permissions must be disabled by hand), and its
/// orders are then accepted, while the primary's for that store are not.
fn a_satellite_may_switch_centralised_procurement_off_for_its_own_store(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    network.central.write("option", "centralised_procurement", &json!({"value": true}));
    north.sync();
    let order = |n: u32| json!({"store_id": "store-north", "supplier": "medsupply", "lines": n});
    let po = order(1).to_string();
    let refused = run("site write", &mut north.command(&["write", "purchase_order", "po-1", &po])).failed();
    assert!(refused.stderr.contains("only the primary server (`central`) may edit them"), "{}", refused.stderr);
    network.central.write("purchase_order", "po-central", &order(2));

    let said = run("site procurement", &mut north.command(&["procurement", "store-north", "local"])).ok().stdout;
    assert!(
        said.contains("warning: the primary server may still give its users permissions for `store-north`"),
        "{said}"
    );
    north.write("purchase_order", "po-1", &order(1));
    north.sync();
    assert_eq!(record(&network.central, "purchase_order", "po-1"), Some(order(1)), "north's order is accepted");
    let primary =
        network.central.try_admin("write", &["write", "purchase_order", "po-central-2", &order(3).to_string()]);
    assert!(primary.failed().stderr.contains("only site `north` may edit them"), "the primary no longer may");
}

/// The seeds: prescribers behave like patients, and are shared with dispensary stores on other
/// sites where they have prescribed, automatically, when a prescription there names them.
fn a_prescriber_is_shared_with_the_dispensary_on_another_site_where_it_prescribes(backend: &Backend) {
    let network = two_dispensaries(backend);
    let (north, south) = (network.site("north"), network.site("south"));
    network.central.admin("store include-transactions", &["store", "include-transactions", "south-dispensary", "on"]);
    north.sync();
    south.sync();
    let doctor = json!({"name": "Dr Otieno", "home_store_id": "north-dispensary"});
    north.write("prescriber", "dr-1", &doctor);
    north.sync();
    south.sync();
    assert_eq!(south.get("prescriber", "dr-1"), None, "not shared before it prescribes there");

    south.write("patient", "pat-s", &json!({"name": "Juma", "home_store_id": "south-dispensary"}));
    let rx =
        json!({"store_id": "south-dispensary", "patient_id": "pat-s", "prescriber_id": "dr-1", "item_id": "item-1"});
    south.write("prescription", "rx-s", &rx);
    south.sync();
    assert_eq!(south.get("prescriber", "dr-1"), Some(doctor), "shared with south in the same sync");
    let shared = record(&network.central, "prescriber_visibility", "dr-1@south-dispensary");
    assert_eq!(shared, Some(json!({"prescriber_id": "dr-1", "store_id": "south-dispensary"})));
}
