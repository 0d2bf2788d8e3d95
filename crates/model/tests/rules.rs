//! The seeds' sync rules, one test per sentence: who may write a record (`authority`,
//! `check_write`) and who receives a change (`recipients`), on small hand-built networks.
//!
//! Records are built from JSON documents with `RecordKeys::read`, so the field conventions
//! (`store_id`, `other_store_id`, `name_id`, `patient_id`, `home_store_id`, `sending_store_id`,
//! `receiving_store_id`; a store or patient record is scoped by its own id) are tested too.

use outpost_model::{
    authority, check_write, recipients, registry, Audience, ChangeRef, DataType, Editor, Network, Op, RecordId,
    RecordKeys, Refusal, SiteId, SiteKind, StoreId, SyncType, Writer,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------------
// The standard network
//
//   site     stores (active)                 other sync types
//   central  hq                              collector of every store (implied)
//   north    north-store, north-dispensary   south-store: transfer
//   south    south-store                     north-store: transfer
//   cms      cms-store                       north-store: collector; south-store: none
//
// Patient p1 has home store north-dispensary and is visible in north-dispensary and south-store.
// Patient p2 shares p1's home store; patient p3's home store is south-store.
// Prescriber dr1 has home store north-dispensary. Supplier acme is visible in south-store only.
// ---------------------------------------------------------------------------------------------

const ALL: &[&str] = &["central", "north", "south", "cms"];

fn standard_network() -> Network {
    let mut net = Network::new("central");
    net.add_site("north", SiteKind::Desktop).add_site("south", SiteKind::Desktop).add_site("cms", SiteKind::Desktop);
    net.add_store("hq", "central")
        .add_store("north-store", "north")
        .add_store("north-dispensary", "north")
        .add_store("south-store", "south")
        .add_store("cms-store", "cms");
    dispensary(&mut net, "north-dispensary").include_transactions_in_sync = true;
    net.set_sync_type("south-store", "north", SyncType::Transfer)
        .set_sync_type("north-store", "south", SyncType::Transfer)
        .set_sync_type("north-store", "cms", SyncType::Collector)
        .set_sync_type("south-store", "cms", SyncType::None);
    net.show_name("p1", "north-dispensary").show_name("p1", "south-store");
    net.show_name("p2", "north-dispensary");
    net.show_name("p3", "south-store");
    net.show_name("dr1", "north-dispensary");
    net.show_name("acme", "south-store");
    for (patient, home) in
        [("p1", "north-dispensary"), ("p2", "north-dispensary"), ("p3", "south-store"), ("dr1", "north-dispensary")]
    {
        net.home_stores.insert(RecordId::from(patient), StoreId::from(home));
    }
    net
}

/// The standard network in mirrored sync: the primary is the remote site `cms`.
fn mirrored_network() -> Network {
    let mut net = standard_network();
    net.primary = SiteId::from("cms");
    net
}

/// Marks a store as a dispensary and returns it for further settings.
fn dispensary<'a>(net: &'a mut Network, store: &str) -> &'a mut outpost_model::StoreInfo {
    let info = net.stores.get_mut(&StoreId::from(store)).expect("the store is in the network");
    info.dispensary = true;
    info
}

fn sites(names: &[&str]) -> BTreeSet<SiteId> {
    names.iter().map(|s| SiteId::from(*s)).collect()
}

// ---------------------------------------------------------------------------------------------
// Changes
// ---------------------------------------------------------------------------------------------

struct Change {
    table: &'static str,
    op: Op,
    keys: RecordKeys,
}

/// Reads a record's routing keys the way a node does: from its JSON document.
fn keys(table: &str, id: &str, doc: &Value) -> RecordKeys {
    let (def, _) = registry().table(table).unwrap_or_else(|| panic!("`{table}` is in the registry"));
    RecordKeys::read(def, &RecordId::from(id), doc)
}

fn change(table: &'static str, op: Op, id: &str, doc: Value) -> Change {
    let keys = if registry().table(table).is_some() { keys(table, id, &doc) } else { RecordKeys::default() };
    Change { table, op, keys }
}
fn create(table: &'static str, id: &str, doc: Value) -> Change {
    change(table, Op::Create, id, doc)
}
fn update(table: &'static str, id: &str, doc: Value) -> Change {
    change(table, Op::Update, id, doc)
}
fn merge(table: &'static str, id: &str, into: &str, doc: Value) -> Change {
    change(table, Op::MergeInto(RecordId::from(into)), id, doc)
}

impl Change {
    fn as_ref(&self) -> ChangeRef<'_> {
        ChangeRef { table: self.table, op: &self.op, keys: &self.keys }
    }
    fn writer(&self, net: &Network) -> Result<Writer, Refusal> {
        authority(registry(), net, &self.as_ref())
    }
    fn check(&self, net: &Network, site: &str) -> Result<(), Refusal> {
        check_write(registry(), net, &self.as_ref(), &SiteId::from(site))
    }
    fn audience(&self, net: &Network) -> Result<Audience, Refusal> {
        recipients(registry(), net, &self.as_ref())
    }
    /// The concrete sites that receive the change.
    fn receivers(&self, net: &Network) -> BTreeSet<SiteId> {
        self.audience(net).unwrap_or_else(|e| panic!("recipients of `{}`: {e}", self.table)).sites(net)
    }
}

/// `check_write` accepts the change on exactly `allowed` and refuses it everywhere else with a
/// `NotAuthorised` that names the table and the refused site.
#[track_caller]
fn assert_writable_only_on(net: &Network, change: &Change, allowed: &[&str]) {
    for site in net.sites.keys() {
        let result = change.check(net, site.as_str());
        if allowed.contains(&site.as_str()) {
            assert_eq!(result, Ok(()), "`{}` ({:?}) should be writable on `{site}`", change.table, change.op);
            continue;
        }
        let Err(refusal) = result else { panic!("`{}` ({:?}) should be refused on `{site}`", change.table, change.op) };
        let Refusal::NotAuthorised { what, site: refused, .. } = &refusal else {
            panic!("`{}` ({:?}) on `{site}`: expected NotAuthorised, got {refusal:?}", change.table, change.op)
        };
        assert!(what.contains(&format!("`{}`", change.table)), "{what:?} should name `{}`", change.table);
        assert_eq!(refused, site);
        assert!(refusal.to_string().contains(change.table), "{refusal}");
    }
}

#[track_caller]
fn assert_writable_everywhere(net: &Network, change: &Change) {
    assert_eq!(change.writer(net), Ok(Writer::AnySite), "`{}`", change.table);
    for site in ALL {
        assert_eq!(change.check(net, site), Ok(()), "`{}` on `{site}`", change.table);
    }
}

fn transaction(store: &str) -> Change {
    update("transaction", "t1", json!({ "store_id": store, "type": "ci" }))
}

// ---------------------------------------------------------------------------------------------
// Central data
// ---------------------------------------------------------------------------------------------

#[test]
fn central_data_is_written_only_on_the_primary() {
    let net = standard_network();
    let item = update("item", "i1", json!({ "code": "AMOX250", "name": "Amoxicillin 250mg" }));
    assert_eq!(item.writer(&net), Ok(Writer::Site(SiteId::from("central"))));
    assert_writable_only_on(&net, &item, &["central"]);
}

#[test]
fn central_data_on_the_primary_reaches_every_site() {
    let net = standard_network();
    let item = update("item", "i1", json!({}));
    assert_eq!(item.audience(&net), Ok(Audience::Everyone));
    assert_eq!(item.receivers(&net), sites(ALL));
}

#[test]
fn a_remote_site_cannot_edit_items() {
    let net = standard_network();
    let item = update("item", "i1", json!({ "name": "renamed on north" }));
    let refusal = item.check(&net, "north").expect_err("north is not the primary");
    let Refusal::NotAuthorised { what, writer, site, .. } = &refusal else { panic!("{refusal:?}") };
    assert!(what.contains("`item`") && what.contains("central data"), "{what}");
    assert_eq!(writer, "the primary server (`central`)");
    assert_eq!(*site, SiteId::from("north"));
    assert_eq!(
        refusal.to_string(),
        "Items are central data (table `item`): only the primary server (`central`) may edit them, not site `north`; \
         edit them there and they reach this site on its next sync"
    );
}

#[test]
fn names_and_other_central_tables_follow_the_same_rule() {
    let net = standard_network();
    for table in ["name", "unit", "master_list", "currency", "location_type", "custom_report", "region"] {
        let record = update(table, "r1", json!({}));
        assert_writable_only_on(&net, &record, &["central"]);
        assert_eq!(record.audience(&net), Ok(Audience::Everyone), "`{table}`");
    }
}

#[test]
fn in_a_mirrored_network_only_the_primary_may_edit_items_and_the_central_server_may_not() {
    let net = mirrored_network();
    let item = update("item", "i1", json!({}));
    assert_eq!(item.writer(&net), Ok(Writer::Site(SiteId::from("cms"))));
    assert_writable_only_on(&net, &item, &["cms"]);
}

#[test]
fn in_a_mirrored_network_items_still_reach_every_site_including_the_central_server() {
    let net = mirrored_network();
    assert_eq!(update("item", "i1", json!({})).receivers(&net), sites(ALL));
}

#[test]
fn sites_and_sync_settings_are_edited_on_the_central_server_even_when_mirrored() {
    let net = mirrored_network();
    for table in ["site", "store_sync", "dashboard_report", "authoriser", "authorisation"] {
        let record = update(table, "r1", json!({}));
        assert_writable_only_on(&net, &record, &["central"]);
        assert_eq!(record.audience(&net), Ok(Audience::Everyone), "`{table}`");
    }
}

// ---------------------------------------------------------------------------------------------
// Central store data
// ---------------------------------------------------------------------------------------------

#[test]
fn name_visibility_is_edited_on_the_central_server_not_the_mirrored_primary() {
    let net = mirrored_network();
    let row = update("name_visibility", "nv1", json!({ "name_id": "acme", "store_id": "south-store" }));
    assert_eq!(row.writer(&net), Ok(Writer::Site(SiteId::from("central"))));
    assert_writable_only_on(&net, &row, &["central"]);
}

#[test]
fn item_visibility_is_edited_on_the_primary_not_the_central_server() {
    let net = mirrored_network();
    let row = update("item_visibility", "iv1", json!({ "item_id": "i1", "store_id": "south-store" }));
    assert_writable_only_on(&net, &row, &["cms"]);
}

#[test]
fn central_store_data_is_received_only_where_the_store_is_visible() {
    let net = standard_network();
    // south-store: active on south, transfer on north, collector on central, none on cms.
    let row = update("name_visibility", "nv1", json!({ "name_id": "acme", "store_id": "south-store" }));
    assert_eq!(row.receivers(&net), sites(&["central", "north", "south"]));
    // north-store is also collected on cms.
    let pref = update("store_preference", "sp1", json!({ "store_id": "north-store" }));
    assert_eq!(pref.receivers(&net), sites(ALL));
}

#[test]
fn in_a_mirrored_network_central_store_data_also_reaches_the_primary() {
    // "All stores must exist on the primary server": the primary holds every store's settings.
    let net = mirrored_network();
    let row = update("store_tag", "st1", json!({ "store_id": "south-store" }));
    assert_eq!(row.receivers(&net), sites(ALL));
}

#[test]
fn the_store_record_is_scoped_by_its_own_id_and_edited_on_the_central_server() {
    let net = mirrored_network();
    let store = update("store", "south-store", json!({ "name": "South warehouse" }));
    assert_eq!(store.keys.store, Some(StoreId::from("south-store")));
    assert_writable_only_on(&net, &store, &["central"]);

    let net = standard_network();
    assert_eq!(store.receivers(&net), sites(&["central", "north", "south"]));
}

// ---------------------------------------------------------------------------------------------
// Store data
// ---------------------------------------------------------------------------------------------

#[test]
fn store_data_is_written_only_on_the_site_where_the_store_is_active() {
    let net = standard_network();
    let tx = transaction("north-store");
    assert_eq!(tx.writer(&net), Ok(Writer::Site(SiteId::from("north"))));
    assert_writable_only_on(&net, &tx, &["north"]);
    assert_writable_only_on(&net, &transaction("south-store"), &["south"]);
    assert_writable_only_on(&net, &transaction("hq"), &["central"]);
}

#[test]
fn store_data_is_written_on_the_active_site_even_in_a_mirrored_network() {
    let net = mirrored_network();
    assert_writable_only_on(&net, &transaction("north-store"), &["north"]);
    assert_writable_only_on(&net, &transaction("cms-store"), &["cms"]);
}

#[test]
fn store_data_is_received_by_the_central_collector_and_any_other_collector_site() {
    let net = standard_network();
    // north-store: collector on cms, transfer only on south.
    assert_eq!(transaction("north-store").receivers(&net), sites(&["central", "north", "cms"]));
}

#[test]
fn store_data_does_not_reach_a_transfer_only_or_none_site() {
    let net = standard_network();
    // south-store: transfer on north, none on cms.
    let receivers = transaction("south-store").receivers(&net);
    assert_eq!(receivers, sites(&["central", "south"]));
    assert!(!receivers.contains(&SiteId::from("north")));
    assert!(!receivers.contains(&SiteId::from("cms")));
}

#[test]
fn store_data_of_many_kinds_follows_the_store() {
    let net = standard_network();
    for table in
        ["location", "stock_line", "stocktake", "name_note", "item_note", "asset", "store_credential", "payment"]
    {
        let record = update(table, "r1", json!({ "store_id": "south-store" }));
        assert_writable_only_on(&net, &record, &["south"]);
        assert_eq!(record.receivers(&net), sites(&["central", "south"]), "`{table}`");
    }
}

#[test]
fn a_transfer_half_also_reaches_the_other_stores_active_site() {
    let net = standard_network();
    // north-store is a transfer store on south, where south-store is active.
    let tx = update("transaction", "t1", json!({ "store_id": "north-store", "other_store_id": "south-store" }));
    assert_eq!(tx.keys.other_store, Some(StoreId::from("south-store")));
    assert_eq!(tx.receivers(&net), sites(&["central", "north", "cms", "south"]));
    // Still written only where its own store is active.
    assert_writable_only_on(&net, &tx, &["north"]);
}

#[test]
fn a_transfer_half_does_not_reach_a_site_where_the_store_is_not_visible() {
    let net = standard_network();
    // cms-store has no sync type on south.
    let tx = update("transaction", "t1", json!({ "store_id": "cms-store", "other_store_id": "south-store" }));
    assert_eq!(tx.receivers(&net), sites(&["central", "cms"]));
}

#[test]
fn the_other_store_only_matters_for_transfer_tables() {
    let net = standard_network();
    let note = update("transaction_note", "n1", json!({ "store_id": "north-store", "other_store_id": "south-store" }));
    assert_eq!(note.receivers(&net), sites(&["central", "north", "cms"]));
}

#[test]
fn requisitions_and_goods_received_are_transfers_too() {
    let net = standard_network();
    for table in ["requisition", "requisition_line", "goods_received", "purchase_order"] {
        let half = update(table, "r1", json!({ "store_id": "south-store", "other_store_id": "north-store" }));
        assert_eq!(half.receivers(&net), sites(&["central", "south", "north"]), "`{table}`");
    }
}

// ---------------------------------------------------------------------------------------------
// Dispensary data
// ---------------------------------------------------------------------------------------------

#[test]
fn a_dispensary_only_central_record_reaches_only_the_central_server_and_dispensary_sites() {
    let net = standard_network();
    for table in ["abbreviation", "item_direction", "diagnosis", "insurance_provider", "patient_event_type"] {
        let record = update(table, "r1", json!({}));
        assert_eq!(record.audience(&net), Ok(Audience::DispensarySites), "`{table}`");
        assert_eq!(record.receivers(&net), sites(&["central", "north"]), "`{table}`");
    }
}

#[test]
fn dispensary_central_data_is_still_edited_only_on_the_primary() {
    assert_writable_only_on(&standard_network(), &update("abbreviation", "a1", json!({})), &["central"]);
    assert_writable_only_on(&mirrored_network(), &update("abbreviation", "a1", json!({})), &["cms"]);
}

#[test]
fn a_site_receives_dispensary_data_once_it_has_an_active_dispensary_store() {
    let mut net = standard_network();
    dispensary(&mut net, "south-store");
    assert_eq!(update("abbreviation", "a1", json!({})).receivers(&net), sites(&["central", "north", "south"]));
}

#[test]
fn a_collector_copy_of_a_dispensary_does_not_make_a_dispensary_site() {
    let mut net = standard_network();
    net.set_sync_type("north-dispensary", "cms", SyncType::Collector);
    assert_eq!(update("abbreviation", "a1", json!({})).receivers(&net), sites(&["central", "north"]));
}

#[test]
fn a_dispensary_that_excludes_transactions_from_sync_keeps_its_stock_data_at_home() {
    let mut net = standard_network();
    dispensary(&mut net, "north-dispensary").include_transactions_in_sync = false;
    for table in ["transaction", "transaction_line", "backorder", "build", "stock_line", "stocktake", "stocktake_line"]
    {
        let record = update(table, "r1", json!({ "store_id": "north-dispensary" }));
        assert_eq!(record.audience(&net), Ok(Audience::Nobody), "`{table}`");
        assert_writable_only_on(&net, &record, &["north"]);
    }
    let prescription = update("prescription", "rx1", json!({ "store_id": "north-dispensary", "patient_id": "p1" }));
    assert_eq!(prescription.audience(&net), Ok(Audience::Nobody));
}

#[test]
fn a_dispensary_that_includes_transactions_in_sync_sends_them_to_its_collectors() {
    let mut net = standard_network();
    dispensary(&mut net, "north-dispensary").include_transactions_in_sync = true;
    let tx = transaction("north-dispensary");
    assert_eq!(tx.audience(&net), Ok(Audience::Sites(sites(&["central", "north"]))));
}

#[test]
fn the_include_transactions_preference_matters_only_for_dispensary_stores_and_stock_data() {
    let mut net = standard_network();
    net.stores.get_mut(&StoreId::from("south-store")).expect("known store").include_transactions_in_sync = false;
    dispensary(&mut net, "north-dispensary").include_transactions_in_sync = false;
    // Not a dispensary: synced as usual.
    assert_eq!(transaction("south-store").receivers(&net), sites(&["central", "south"]));
    // A dispensary's locations are not stock data.
    let location = update("location", "l1", json!({ "store_id": "north-dispensary" }));
    assert_eq!(location.receivers(&net), sites(&["central", "north"]));
}

// ---------------------------------------------------------------------------------------------
// Patient data
// ---------------------------------------------------------------------------------------------

#[test]
fn a_patient_is_written_only_on_the_site_where_its_home_store_is_active() {
    let net = standard_network();
    let patient = update("patient", "p1", json!({ "home_store_id": "north-dispensary", "name": "Ana" }));
    assert_eq!(patient.keys.name, Some(RecordId::from("p1")));
    assert_writable_only_on(&net, &patient, &["north"]);
}

#[test]
fn a_patient_visible_in_two_stores_on_two_sites_is_received_by_both_and_the_central_server() {
    let net = standard_network();
    let patient = update("patient", "p1", json!({ "home_store_id": "north-dispensary" }));
    assert_eq!(patient.receivers(&net), sites(&["central", "north", "south"]));
}

#[test]
fn a_patient_related_record_finds_the_home_store_in_the_network() {
    let net = standard_network();
    let pmr = update("patient_medication_record", "pmr1", json!({ "patient_id": "p1", "store_id": "south-store" }));
    assert_eq!(pmr.keys.name, Some(RecordId::from("p1")));
    assert_eq!(pmr.keys.home_store, None);
    assert_writable_only_on(&net, &pmr, &["north"]);
    assert_eq!(pmr.receivers(&net), sites(&["central", "north", "south"]));
}

#[test]
fn all_patient_related_tables_follow_the_patient() {
    let net = standard_network();
    for table in ["insurance_policy", "patient_event", "adverse_drug_reaction", "repeat"] {
        let record = update(table, "r1", json!({ "patient_id": "p3" }));
        assert_writable_only_on(&net, &record, &["south"]);
        assert_eq!(record.receivers(&net), sites(&["central", "south"]), "`{table}`");
    }
}

#[test]
fn a_record_cannot_move_its_patient_to_another_home_store() {
    // Moving a patient is done on the central server; the network's home store wins.
    let net = standard_network();
    let patient = update("patient", "p1", json!({ "home_store_id": "south-store" }));
    assert_writable_only_on(&net, &patient, &["north"]);
}

#[test]
fn a_new_patient_whose_home_store_is_unknown_uses_the_home_store_id_of_its_own_record() {
    let net = standard_network();
    let patient = create("patient", "p9", json!({ "home_store_id": "south-store", "name": "Bea" }));
    assert_eq!(patient.keys.home_store, Some(StoreId::from("south-store")));
    assert_writable_only_on(&net, &patient, &["south"]);
    assert_eq!(patient.receivers(&net), sites(&["central", "south"]));
}

#[test]
fn prescribers_are_treated_like_patients() {
    let net = standard_network();
    let prescriber = update("prescriber", "dr1", json!({ "home_store_id": "north-dispensary" }));
    assert_writable_only_on(&net, &prescriber, &["north"]);
    assert_eq!(prescriber.receivers(&net), sites(&["central", "north"]));
}

#[test]
fn a_patient_without_any_home_store_is_refused() {
    let net = standard_network();
    let patient = create("patient", "p9", json!({ "name": "Nobody knows" }));
    let expected = Refusal::MissingKey { what: "patient".into(), field: "home_store_id", needs: "home store" };
    assert_eq!(patient.writer(&net), Err(expected.clone()));
    assert_eq!(patient.audience(&net), Err(expected));
}

#[test]
fn a_patient_related_record_without_patient_id_is_refused() {
    let net = standard_network();
    let pmr = update("patient_medication_record", "pmr1", json!({ "store_id": "north-dispensary" }));
    let expected =
        Err(Refusal::MissingKey { what: "patient_medication_record".into(), field: "patient_id", needs: "patient" });
    assert_eq!(pmr.writer(&net), expected);
}

// ---------------------------------------------------------------------------------------------
// Name data
// ---------------------------------------------------------------------------------------------

#[test]
fn name_data_is_written_only_on_the_primary() {
    let tag = update("name_tag", "nt1", json!({ "name_id": "acme" }));
    assert_writable_only_on(&standard_network(), &tag, &["central"]);
    assert_writable_only_on(&mirrored_network(), &tag, &["cms"]);
}

#[test]
fn name_data_is_received_where_the_name_is_visible() {
    // acme is visible in south-store only.
    let tag = update("name_master_list", "nm1", json!({ "name_id": "acme" }));
    assert_eq!(tag.receivers(&standard_network()), sites(&["central", "south"]));
    assert_eq!(tag.receivers(&mirrored_network()), sites(&["central", "south", "cms"]));
}

#[test]
fn name_data_without_name_id_is_refused() {
    let tag = update("name_budget", "nb1", json!({}));
    assert_eq!(
        tag.audience(&standard_network()),
        Err(Refusal::MissingKey { what: "name_budget".into(), field: "name_id", needs: "name" })
    );
}

// ---------------------------------------------------------------------------------------------
// Merges
// ---------------------------------------------------------------------------------------------

#[test]
fn items_units_and_names_are_merged_only_on_the_primary() {
    for table in ["item", "unit", "name"] {
        let merge = merge(table, "dup", "keep", json!({}));
        assert_writable_only_on(&standard_network(), &merge, &["central"]);
        assert_writable_only_on(&mirrored_network(), &merge, &["cms"]);
        assert_eq!(merge.receivers(&mirrored_network()), sites(ALL), "`{table}`");
    }
}

#[test]
fn patients_with_the_same_home_store_are_merged_on_their_home_site() {
    let net = standard_network();
    let merge = merge("patient", "p2", "p1", json!({ "home_store_id": "north-dispensary" }));
    assert_writable_only_on(&net, &merge, &["north"]);
}

#[test]
fn a_patient_merge_across_different_home_stores_is_refused() {
    let net = standard_network();
    let merge = merge("patient", "p1", "p3", json!({ "home_store_id": "north-dispensary" }));
    let expected = Refusal::MergeAcrossHomeStores(StoreId::from("north-dispensary"), StoreId::from("south-store"));
    assert_eq!(merge.writer(&net), Err(expected.clone()));
    for site in ALL {
        assert_eq!(merge.check(&net, site), Err(expected.clone()), "on `{site}`");
    }
}

#[test]
fn locations_are_merged_on_the_stores_active_site() {
    let net = standard_network();
    let merge = merge("location", "shelf-2", "shelf-1", json!({ "store_id": "north-store" }));
    assert_writable_only_on(&net, &merge, &["north"]);
    assert_eq!(merge.receivers(&net), sites(&["central", "north", "cms"]));
}

// ---------------------------------------------------------------------------------------------
// Barcodes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_barcode_may_be_created_on_any_site_and_reaches_every_site() {
    let barcode = create("barcode", "b1", json!({ "item_id": "i1", "barcode": "9300675024235" }));
    assert_writable_everywhere(&mirrored_network(), &barcode);
    assert_eq!(barcode.audience(&standard_network()), Ok(Audience::Everyone));
}

#[test]
fn a_barcode_is_updated_only_on_the_primary() {
    let barcode = update("barcode", "b1", json!({ "item_id": "i1" }));
    assert_writable_only_on(&standard_network(), &barcode, &["central"]);
    assert_writable_only_on(&mirrored_network(), &barcode, &["cms"]);
}

#[test]
fn duplicate_barcodes_are_merged_only_on_the_primary() {
    let merge = merge("barcode", "b2", "b1", json!({ "item_id": "i1" }));
    assert_writable_only_on(&mirrored_network(), &merge, &["cms"]);
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

#[test]
fn a_message_may_be_created_on_any_site() {
    let message = create("message", "m1", json!({ "receiving_store_id": "north-store", "body": "hello" }));
    assert_writable_everywhere(&standard_network(), &message);
}

#[test]
fn a_message_from_a_store_may_be_created_only_on_the_site_where_that_store_is_active() {
    // Nobody may speak for another site's store (a pushed message naming another site's store
    // as its sender was accepted once).
    let message = create("message", "m1", json!({ "sending_store_id": "north-store", "body": "hello" }));
    assert_writable_only_on(&standard_network(), &message, &["north"]);
    let forged = create("message", "m2", json!({ "sending_store_id": "atlantis", "body": "hello" }));
    assert_eq!(forged.writer(&standard_network()), Err(Refusal::UnknownStore(StoreId::from("atlantis"))));
}

#[test]
fn a_message_for_a_receiving_store_goes_to_the_site_where_that_store_is_active() {
    let net = standard_network();
    let message =
        create("message", "m1", json!({ "sending_store_id": "north-store", "receiving_store_id": "south-store" }));
    assert_eq!(message.keys.store, Some(StoreId::from("north-store")));
    assert_eq!(message.keys.other_store, Some(StoreId::from("south-store")));
    assert_eq!(message.receivers(&net), sites(&["central", "south"]));
}

#[test]
fn a_message_for_a_receiving_store_without_a_sending_store_still_goes_to_that_store() {
    let net = standard_network();
    let message = create("message", "m1", json!({ "receiving_store_id": "cms-store" }));
    assert_eq!(message.receivers(&net), sites(&["central", "cms"]));
}

#[test]
fn a_message_with_only_a_sending_store_stays_on_the_central_server() {
    let net = standard_network();
    let message = create("message", "m1", json!({ "sending_store_id": "north-store" }));
    assert_eq!(message.audience(&net), Ok(Audience::Sites(sites(&["central"]))));
}

#[test]
fn a_message_with_neither_store_goes_to_every_remote_site_but_not_the_central_server() {
    let net = standard_network();
    let message = create("message", "m1", json!({ "body": "system maintenance tonight" }));
    assert_eq!(message.audience(&net), Ok(Audience::RemoteSites));
    assert_eq!(message.receivers(&net), sites(&["north", "south", "cms"]));
}

#[test]
fn blank_store_fields_of_a_message_count_as_not_set() {
    let net = standard_network();
    let message = create("message", "m1", json!({ "sending_store_id": "", "receiving_store_id": "" }));
    assert_eq!(message.keys, RecordKeys::default());
    assert_eq!(message.audience(&net), Ok(Audience::RemoteSites));
}

#[test]
fn a_message_for_an_unknown_store_is_refused() {
    let net = standard_network();
    let message = create("message", "m1", json!({ "receiving_store_id": "atlantis" }));
    assert_eq!(message.audience(&net), Err(Refusal::UnknownStore(StoreId::from("atlantis"))));
}

#[test]
fn editing_a_message_is_refused() {
    let net = standard_network();
    let doc = json!({ "sending_store_id": "north-store", "receiving_store_id": "south-store" });
    for op in [Op::Update, Op::Delete] {
        let message = change("message", op.clone(), "m1", doc.clone());
        assert_eq!(message.writer(&net), Err(Refusal::MessageEdited), "{op:?}");
        for site in ALL {
            assert_eq!(message.check(&net, site), Err(Refusal::MessageEdited), "{op:?} on `{site}`");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[test]
fn a_new_user_is_created_on_its_stores_site_and_received_only_by_the_central_server() {
    let net = standard_network();
    let user = create("user", "u1", json!({ "store_id": "north-store", "name": "ana" }));
    assert_writable_only_on(&net, &user, &["north"]);
    assert_eq!(user.audience(&net), Ok(Audience::Sites(sites(&["central"]))));
}

#[test]
fn an_update_of_an_existing_user_is_local() {
    let net = standard_network();
    let user = update("user", "u1", json!({ "store_id": "north-store", "name": "ana" }));
    assert_writable_everywhere(&net, &user);
    assert_eq!(user.audience(&net), Ok(Audience::Nobody));
}

// ---------------------------------------------------------------------------------------------
// Patient visibility
// ---------------------------------------------------------------------------------------------

#[test]
fn new_visibility_of_a_patient_may_be_made_on_the_patients_home_site_and_reaches_the_central_server() {
    let net = standard_network();
    let row = create("name_visibility", "nv1", json!({ "name_id": "p1", "store_id": "north-store" }));
    assert_eq!(row.keys.name, Some(RecordId::from("p1")));
    // The home site north, or the central server that controls all name visibility.
    assert_writable_only_on(&net, &row, &["north", "central"]);
    assert!(row.receivers(&net).contains(&SiteId::from("central")));
}

#[test]
fn the_home_site_makes_its_patient_visible_only_in_its_own_stores_the_central_server_anywhere() {
    let net = standard_network();
    let elsewhere = create("name_visibility", "nv9", json!({ "name_id": "p1", "store_id": "south-store" }));
    assert_writable_only_on(&net, &elsewhere, &["central"]);
}

#[test]
fn a_patient_created_without_a_home_store_lives_in_the_store_it_was_created_in() {
    let net = standard_network();
    let patient = create("patient", "p7", json!({ "name": "Ben", "store_id": "north-dispensary" }));
    assert_eq!(patient.keys.home_store, Some(StoreId::from("north-dispensary")));
    assert_writable_only_on(&net, &patient, &["north"]);
}

#[test]
fn an_update_of_patient_visibility_is_made_only_on_the_central_server() {
    let net = standard_network();
    let row = update("name_visibility", "nv1", json!({ "name_id": "p1", "store_id": "north-store" }));
    assert_writable_only_on(&net, &row, &["central"]);
}

#[test]
fn new_visibility_of_a_supplier_is_made_only_on_the_central_server() {
    let net = standard_network();
    let row = create("name_visibility", "nv2", json!({ "name_id": "acme", "store_id": "north-store" }));
    assert_writable_only_on(&net, &row, &["central"]);
}

#[test]
fn new_visibility_of_a_prescriber_is_read_from_prescriber_id() {
    let net = standard_network();
    let row = create("prescriber_visibility", "pv1", json!({ "prescriber_id": "dr1", "store_id": "north-store" }));
    assert_eq!(row.keys.name, Some(RecordId::from("dr1")));
    assert_writable_only_on(&net, &row, &["north", "central"]);
}

#[test]
fn the_central_server_may_make_an_existing_patient_visible_in_another_store() {
    // "Visibility of names (including existing patients): Central store, edited on Central";
    // "subsequently, patient visibility is controlled from the central server".
    let net = standard_network();
    let row = create("name_visibility", "nv3", json!({ "name_id": "p1", "store_id": "cms-store" }));
    assert_eq!(row.check(&net, "central"), Ok(()));
    assert!(matches!(row.check(&net, "cms"), Err(Refusal::NotAuthorised { .. })));
    // ... and the row reaches the site where that store is, so the patient shows up there.
    assert!(row.receivers(&net).contains(&SiteId::from("cms")));
}

// ---------------------------------------------------------------------------------------------
// Centralised procurement and payments
// ---------------------------------------------------------------------------------------------

fn purchase_order(store: &str) -> Change {
    update("purchase_order", "po1", json!({ "store_id": store }))
}

#[test]
fn a_purchase_order_is_normally_written_on_its_stores_active_site() {
    let net = standard_network();
    assert_writable_only_on(&net, &purchase_order("south-store"), &["south"]);
    assert_eq!(purchase_order("south-store").receivers(&net), sites(&["central", "south"]));
}

#[test]
fn with_centralised_procurement_purchase_orders_are_written_only_on_the_primary() {
    let mut net = standard_network();
    net.prefs.centralised_procurement = true;
    assert_writable_only_on(&net, &purchase_order("south-store"), &["central"]);
    let mut net = mirrored_network();
    net.prefs.centralised_procurement = true;
    assert_writable_only_on(&net, &purchase_order("south-store"), &["cms"]);
    assert_writable_only_on(&net, &update("purchase_order_line", "pol1", json!({ "store_id": "cms-store" })), &["cms"]);
}

#[test]
fn a_centralised_purchase_order_is_received_where_its_store_is_visible() {
    let mut net = standard_network();
    net.prefs.centralised_procurement = true;
    // south-store is visible on south (active) and north (transfer), not on cms.
    assert_eq!(purchase_order("south-store").receivers(&net), sites(&["central", "north", "south"]));
}

#[test]
fn a_satellite_that_switches_centralised_procurement_off_for_its_store_enters_its_orders_itself() {
    let mut net = standard_network();
    net.prefs.centralised_procurement = true;
    net.local_procurement.insert(StoreId::from("north-store"));
    let order = update("purchase_order", "po1", json!({ "store_id": "north-store" }));
    assert_writable_only_on(&net, &order, &["north"]);
    let other = update("purchase_order", "po2", json!({ "store_id": "south-store" }));
    assert_writable_only_on(&net, &other, &["central"]);
}

#[test]
fn centralised_procurement_covers_tenders_and_quotes_but_not_payments() {
    let mut net = mirrored_network();
    net.prefs.centralised_procurement = true;
    for table in ["tender", "tender_line", "quote"] {
        assert_writable_only_on(&net, &update(table, "r1", json!({ "store_id": "south-store" })), &["cms"]);
    }
    assert_writable_only_on(&net, &update("payment", "pay1", json!({ "store_id": "south-store" })), &["south"]);
}

#[test]
fn with_centralised_payments_payments_are_written_only_on_the_primary() {
    let mut net = mirrored_network();
    net.prefs.centralised_payments = true;
    let payment = update("payment", "pay1", json!({ "store_id": "south-store" }));
    assert_writable_only_on(&net, &payment, &["cms"]);
    assert_eq!(payment.receivers(&net), sites(&["central", "north", "south", "cms"]));
    // Purchase orders are not affected.
    assert_writable_only_on(&net, &purchase_order("south-store"), &["south"]);
}

// ---------------------------------------------------------------------------------------------
// Prescriptions and repeats
// ---------------------------------------------------------------------------------------------

fn prescription(store: &str) -> Change {
    update("prescription", "rx1", json!({ "store_id": store, "patient_id": "p1" }))
}

#[test]
fn a_prescription_is_written_on_the_active_site_of_its_store() {
    let net = standard_network();
    assert_writable_only_on(&net, &prescription("north-dispensary"), &["north"]);
    // p1 is visible in south-store, so it may be dispensed there too: on south.
    assert_writable_only_on(&net, &prescription("south-store"), &["south"]);
}

#[test]
fn a_prescription_goes_to_its_stores_collectors_by_default() {
    let net = standard_network();
    assert_eq!(prescription("north-dispensary").receivers(&net), sites(&["central", "north"]));
}

#[test]
fn with_the_preference_a_prescription_also_reaches_every_site_where_the_patient_is_visible() {
    let mut net = standard_network();
    net.prefs.prescriptions_to_visible_sites = true;
    assert_eq!(prescription("north-dispensary").receivers(&net), sites(&["central", "north", "south"]));
    let line = update("prescription_line", "rl1", json!({ "store_id": "north-dispensary", "patient_id": "p1" }));
    assert_eq!(line.receivers(&net), sites(&["central", "north", "south"]));
}

#[test]
fn a_prescription_without_a_store_is_refused() {
    let net = standard_network();
    let rx = update("prescription", "rx1", json!({ "patient_id": "p1" }));
    assert_eq!(
        rx.writer(&net),
        Err(Refusal::MissingKey { what: "prescription".into(), field: "store_id", needs: "store" })
    );
}

fn repeat() -> Change {
    update("repeat", "rep1", json!({ "patient_id": "p1", "store_id": "south-store" }))
}

#[test]
fn repeats_are_processed_only_on_the_patients_home_site_by_default() {
    assert_writable_only_on(&standard_network(), &repeat(), &["north"]);
}

#[test]
fn with_the_preference_repeats_may_be_processed_on_any_site_where_the_patient_is_visible() {
    let mut net = standard_network();
    net.prefs.repeats_on_visible_sites = true;
    // p1 is visible in north-dispensary (north) and south-store (south); central collects both.
    assert_writable_only_on(&net, &repeat(), &["north", "south", "central"]);
    assert_eq!(repeat().receivers(&net), sites(&["central", "north", "south"]));
}

#[test]
fn with_the_repeats_preference_the_home_site_may_still_process_repeats() {
    // The preference widens where repeats are processed; it never takes it from the home site,
    // even when the visibility list does not mention the home store.
    let mut net = standard_network();
    net.prefs.repeats_on_visible_sites = true;
    net.home_stores.insert(RecordId::from("p4"), StoreId::from("north-dispensary"));
    net.show_name("p4", "south-store");
    let repeat = update("repeat", "rep4", json!({ "patient_id": "p4" }));
    assert_eq!(repeat.check(&net, "north"), Ok(()));
    assert_eq!(repeat.check(&net, "south"), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Local and sync data
// ---------------------------------------------------------------------------------------------

#[test]
fn local_data_is_writable_anywhere_and_goes_nowhere() {
    let net = mirrored_network();
    let log = create("log", "l1", json!({ "message": "started" }));
    assert_writable_everywhere(&net, &log);
    assert_eq!(log.audience(&net), Ok(Audience::Nobody));
    assert!(log.receivers(&net).is_empty());
}

#[test]
fn every_local_table_is_writable_anywhere_and_goes_nowhere() {
    let net = standard_network();
    let local: Vec<&str> =
        registry().tables().filter(|(_, e)| e.data_type == DataType::Local).map(|(t, _)| t.name).collect();
    assert!(local.len() >= 9, "{local:?}");
    for table in local {
        let record = Change { table, op: Op::Update, keys: RecordKeys::default() };
        assert_writable_everywhere(&net, &record);
        assert_eq!(record.audience(&net), Ok(Audience::Nobody), "`{table}`");
    }
}

#[test]
fn sync_data_is_written_only_on_the_central_server_and_goes_nowhere() {
    let net = mirrored_network();
    let credential = update("site_credential", "north", json!({ "secret_hash": "…" }));
    assert_writable_only_on(&net, &credential, &["central"]);
    assert_eq!(credential.audience(&net), Ok(Audience::Nobody));
}

// ---------------------------------------------------------------------------------------------
// Every table, every type
// ---------------------------------------------------------------------------------------------

/// A document that carries every routing key, pointing at north.
fn north_document() -> Value {
    json!({
        "store_id": "north-dispensary",
        "name_id": "p1",
        "patient_id": "p1",
        "prescriber_id": "dr1",
        "home_store_id": "north-dispensary",
        "sending_store_id": "north-store",
    })
}

#[test]
fn every_synced_table_has_the_writer_its_editor_says() {
    let net = mirrored_network();
    let registry = registry();
    for (table, _) in registry.tables() {
        let keys = keys(table.name, "p1", &north_document());
        let change = ChangeRef { table: table.name, op: &Op::Update, keys: &keys };
        let rule = registry.rule(&net, &change).expect("a registered table");
        let expected = match (rule.entry.editor, rule.data_type()) {
            (Editor::Primary, _) => Ok(Writer::Site(SiteId::from("cms"))),
            (Editor::Central, _) => Ok(Writer::Site(SiteId::from("central"))),
            (Editor::AnySite, _) => Ok(Writer::AnySite),
            (Editor::StoreSite, DataType::Message) => Err(Refusal::MessageEdited),
            (Editor::StoreSite, _) => Ok(Writer::Site(SiteId::from("north"))),
        };
        assert_eq!(authority(registry, &net, &change), expected, "`{}` (\"{}\")", table.name, rule.entry.data);
    }
}

#[test]
fn every_change_that_leaves_its_site_reaches_the_central_server() {
    // The central server is the hub and collects every store: only local and sync data, and
    // messages for every remote site, stay away from it.
    let net = standard_network();
    let registry = registry();
    for (table, _) in registry.tables() {
        let keys = keys(table.name, "p1", &north_document());
        for op in [Op::Create, Op::Update] {
            let change = ChangeRef { table: table.name, op: &op, keys: &keys };
            let rule = registry.rule(&net, &change).expect("a registered table");
            let audience = recipients(registry, &net, &change).expect("every key is present");
            match (rule.data_type(), &audience) {
                (DataType::Local | DataType::Sync, Audience::Nobody) => {}
                (DataType::Local | DataType::Sync, other) => panic!("`{}` is {other:?}", table.name),
                (_, Audience::Nobody) => {
                    // Only a dispensary's stock data may stay home, and only by its preference.
                    panic!("`{}` ({op:?}) goes nowhere", table.name)
                }
                (_, audience) => assert!(
                    audience.includes(&net, &SiteId::from("central")),
                    "`{}` ({op:?}) misses the central server: {audience:?}",
                    table.name
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unknown_table_is_refused() {
    let net = standard_network();
    let change = Change { table: "no_such_table", op: Op::Update, keys: RecordKeys::default() };
    let expected = Refusal::UnknownTable("no_such_table".into());
    assert_eq!(change.writer(&net), Err(expected.clone()));
    assert_eq!(change.check(&net, "central"), Err(expected.clone()));
    assert_eq!(change.audience(&net), Err(expected));
}

#[test]
fn a_store_record_without_store_id_is_refused() {
    let net = standard_network();
    let tx = update("transaction", "t1", json!({ "other_store_id": "south-store" }));
    let expected = Refusal::MissingKey { what: "transaction".into(), field: "store_id", needs: "store" };
    assert_eq!(tx.writer(&net), Err(expected.clone()));
    assert_eq!(tx.check(&net, "north"), Err(expected.clone()));
    assert_eq!(tx.audience(&net), Err(expected));
}

#[test]
fn an_empty_store_id_counts_as_missing() {
    let net = standard_network();
    let tx = update("transaction", "t1", json!({ "store_id": "" }));
    assert!(matches!(tx.writer(&net), Err(Refusal::MissingKey { field: "store_id", .. })));
}

#[test]
fn a_record_of_an_unknown_store_is_refused() {
    let net = standard_network();
    let tx = transaction("atlantis");
    let expected = Refusal::UnknownStore(StoreId::from("atlantis"));
    assert_eq!(tx.writer(&net), Err(expected.clone()));
    assert_eq!(tx.check(&net, "north"), Err(expected.clone()));
    assert_eq!(tx.audience(&net), Err(expected));
}

#[test]
fn a_prescription_is_held_to_a_dispensary_store_where_its_patient_is_visible() {
    let net = standard_network();
    let (table, _) = registry().table("prescription").expect("a table");
    let rx =
        |store: &str, patient: &str| keys("prescription", "rx1", &json!({ "store_id": store, "patient_id": patient }));
    let north = SiteId::from("north");
    assert_eq!(net.check_prescription(table, &rx("north-dispensary", "p1"), &north), Ok(()));
    assert_eq!(
        net.check_prescription(table, &rx("north-store", "p1"), &north),
        Err(Refusal::PrescriptionOutsideDispensary { store: StoreId::from("north-store") })
    );
    assert_eq!(
        net.check_prescription(table, &rx("north-dispensary", "p3"), &north),
        Err(Refusal::PatientNotVisible { patient: RecordId::from("p3"), store: StoreId::from("north-dispensary") })
    );
    // The central server corrects what others wrote: it is not held to it.
    assert_eq!(net.check_prescription(table, &rx("north-store", "p3"), &SiteId::from("central")), Ok(()));
}

#[test]
fn include_transactions_in_sync_lives_in_the_stores_sync_preferences_not_its_record() {
    let store = |dispensary: bool| json!({ "name": "North dispensary", "dispensary": dispensary });
    let prefs = json!({ "store_id": "north-dispensary", "include_transactions_in_sync": true });
    let mut net = Network::from_records([
        ("store", "north-dispensary", store(true)),
        ("store_sync", "north-dispensary", prefs.clone()),
    ]);
    let info = |net: &Network| net.stores[&StoreId::from("north-dispensary")].include_transactions_in_sync;
    assert!(info(&net), "the preference set on the Synchronisation tab");
    net.absorb("store", "north-dispensary", Some(&store(true)), Some(&store(true)));
    assert!(info(&net), "an edit of the store record leaves the sync preference as it is");
    let old_style = Network::from_records([("store", "north-dispensary", store(true))]);
    assert!(!info(&old_style), "off by default for a dispensary");
}

/// Found by `push_props`: an empty `home_store_id` is no home store, in the network as in a
/// record's keys, so a patient created in a store with one lives in that store.
#[test]
fn an_empty_home_store_id_is_read_as_none_by_the_network_and_by_the_keys_alike() {
    let doc = json!({ "home_store_id": "", "store_id": "north-dispensary" });
    let net = Network::from_records([("patient", "p8", doc.clone())]);
    assert_eq!(net.home_stores.get(&RecordId::from("p8")), Some(&StoreId::from("north-dispensary")));
    let patient = create("patient", "p8", doc);
    assert_eq!(patient.keys.home_store, Some(StoreId::from("north-dispensary")));
}
