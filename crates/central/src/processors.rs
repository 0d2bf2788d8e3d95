//! What the central server writes in answer to a pushed change, in the same transaction as the
//! push that brought it: ordinary checked, logged and routed writes, so that nothing here is a
//! second way to write: completing a patient's move to another home store once its old home
//! site hands it over, merging a barcode that duplicates one the primary holds, and sharing a
//! prescriber with the dispensary store where it has prescribed. Transfers between stores of
//! different sites are answered by `store::transfers`, the code a site runs for two of its own
//! stores.

use crate::backfill;
use crate::engine::{write_all_routed, write_routed};
use model::{Change, RecordId, SiteId, StoreId};
use serde_json::{json, Value};
use store::{RoutedBy, StoreError, Tx, Write};

/// Runs what a change pushed by `site` (already written and routed) sets off.
pub(crate) fn after_push(tx: &mut Tx<'_>, site: &SiteId, change: &Change) -> Result<(), StoreError> {
    if change.table == "barcode" {
        return merge_duplicate_barcode(tx, &change.id);
    }
    if change.table == "prescription" {
        return share_prescriber(tx, &change.id);
    }
    if change.table == "primary_move" {
        let handed_over = tx.network().primary_move.as_ref().is_some_and(|m| m.status == model::MoveStatus::HandedOver);
        return if handed_over { complete_primary_move(tx) } else { Ok(()) };
    }
    if change.table == "store_move" {
        let store = StoreId::from(change.id.as_str());
        let handed_over =
            tx.network().store_moves.get(&store).is_some_and(|m| m.status == model::MoveStatus::HandedOver);
        return if handed_over { complete_store_move(tx, &store, false).map(|_| ()) } else { Ok(()) };
    }
    if change.data.is_some() && change.table != "patient_move" {
        let me = tx.network().central.clone();
        let mut routed = |tx: &mut Tx<'_>, writes: &[Write]| write_all_routed(tx, writes, &me);
        let doc = change.data.as_ref().map(|d| d.get());
        return store::transfers::respond(tx, &me, site, &change.table, &change.id, doc, &mut routed);
    }
    if change.table != "patient_move" {
        return Ok(());
    }
    let Some(doc) = tx.current(&change.table, change.id.as_str())?.and_then(|c| c.data) else { return Ok(()) };
    let doc: Value = serde_json::from_str(&doc).unwrap_or_default();
    if doc.get("status").and_then(Value::as_str) == Some(model::MoveStatus::HandedOver.as_str()) {
        complete_move(tx, &change.id, doc)?;
    }
    Ok(())
}

/// Completes a move whose old home site has handed the patient over (or that has no remote old
/// home site): the patient's record names its new home store, it stays visible (read-only) in
/// its old home store, the move is marked done, and the new home store's site receives the
/// patient and every record that belongs to it (prescriptions, medical records, insurance
/// policies, repeats, events, adverse drug reactions). All in the caller's transaction.
pub(crate) fn complete_move(tx: &mut Tx<'_>, move_id: &RecordId, mut doc: Value) -> Result<(), StoreError> {
    let me = tx.network().central.clone();
    let text = |f: &str| doc.get(f).and_then(Value::as_str).map(str::to_owned);
    let (Some(patient), Some(from), Some(to)) = (text("patient_id"), text("from_store_id"), text("to_store_id")) else {
        return Ok(());
    };
    let table = text("record_table").unwrap_or_else(|| "patient".to_owned());
    let (patient, from) = (RecordId(patient), StoreId(from));
    let key = RoutedBy::Name(&patient);
    let before = backfill::reach(tx, key)?;
    let (visibility, name_field) =
        if table == "prescriber" { ("prescriber_visibility", "prescriber_id") } else { ("name_visibility", "name_id") };
    write_routed(
        tx,
        &Write::upsert(visibility, format!("{patient}@{from}"), &json!({name_field: patient, "store_id": from})),
        &me,
    )?;
    if let Some(record) = tx.current(&table, patient.as_str())?.and_then(|c| c.data) {
        let mut record: Value = serde_json::from_str(&record).unwrap_or_default();
        if let Some(fields) = record.as_object_mut() {
            fields.insert("home_store_id".into(), json!(to));
        }
        write_routed(tx, &Write::upsert(&table, patient.as_str(), &record), &me)?;
    }
    if let Some(fields) = doc.as_object_mut() {
        fields.insert("status".into(), json!("done"));
        fields.insert("completed_at".into(), json!(protocol::now_rfc3339()));
    }
    write_routed(tx, &Write::upsert("patient_move", move_id.as_str(), &doc), &me)?;
    let sent = backfill::send_newly_visible(tx, key, &before)?;
    tracing::info!(%patient, %from, %to, records = sent, "a patient's move to another home store is complete");
    Ok(())
}

/// Completes a store's move to another site, once its old site has handed it over (or at once
/// when the old site is the central server itself, or when an administrator forces it): the
/// old site keeps what the move said (`leave_as`), the store becomes active on the new site,
/// the move is marked done, and the new site receives the store's current records on its next
/// sync (each record once, as it stands, not its history). All in the caller's transaction.
/// Returns how many records the new site is sent.
pub(crate) fn complete_store_move(tx: &mut Tx<'_>, store: &StoreId, forced: bool) -> Result<usize, StoreError> {
    let network = tx.network();
    let Some(found) = network.store_moves.get(store).cloned() else { return Ok(0) };
    let me = network.central.clone();
    let key = RoutedBy::Store(store);
    let before = backfill::reach(tx, key)?;
    let dispensaries = network.dispensary_sites();
    // The old site lets go first: a store is active on one site at every step.
    let old = if network.is_central(&found.from) { model::SyncType::Collector } else { found.leave_as };
    write_routed(tx, &crate::admin::sync_row(store, &found.from, old), &me)?;
    write_routed(tx, &crate::admin::sync_row(store, &found.to, model::SyncType::Active), &me)?;
    let done = json!({
        "store_id": store,
        "from_site_id": found.from,
        "to_site_id": found.to,
        "leave_as": found.leave_as.as_str(),
        "status": if forced { "forced" } else { "done" },
        "requested_at": found.requested_at,
        "completed_at": protocol::now_rfc3339(),
    });
    write_routed(tx, &Write::upsert("store_move", store.as_str(), &done), &me)?;
    backfill::dispensary_data_for_new_sites(tx, &dispensaries)?;
    let sent = backfill::send_newly_visible(tx, key, &before)?;
    tracing::info!(%store, from = %found.from, to = %found.to, forced, records = sent, "a store's move to another site is complete");
    Ok(sent)
}

/// Completes a change of primary, once the old primary has handed over (or at once when the
/// old primary is the central server itself): the new site's record says it is the primary,
/// then the old one's that it is not, and the change is marked done. In the caller's
/// transaction; from its commit only the new primary may edit central data.
pub(crate) fn complete_primary_move(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    let network = tx.network();
    let Some(found) = network.primary_move.clone() else { return Ok(()) };
    let me = network.central.clone();
    for (site, primary) in [(&found.to, true), (&found.from, false)] {
        let mut doc: Value = tx
            .current("site", site.as_str())?
            .and_then(|c| c.data)
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| json!({"name": site}));
        if let Some(fields) = doc.as_object_mut() {
            fields.insert("primary".into(), json!(primary));
        }
        write_routed(tx, &Write::upsert("site", site.as_str(), &doc), &me)?;
    }
    let done = json!({
        "from_site_id": found.from,
        "to_site_id": found.to,
        "status": "done",
        "requested_at": found.requested_at,
        "completed_at": protocol::now_rfc3339(),
    });
    write_routed(tx, &Write::upsert("primary_move", "primary", &done), &me)?;
    tracing::info!(from = %found.from, to = %found.to, "the primary changed");
    Ok(())
}

/// Whether a move from `from` can complete at once: its old home store is active on the central
/// server itself (no other site has to hand it over).
pub(crate) fn completes_at_once(tx: &Tx<'_>, from: &StoreId) -> bool {
    let network = tx.network();
    network.active_site(from).is_none_or(|site: &SiteId| network.is_central(site))
}

/// Barcodes may be added on any site, so two sites may add the same code for the same item; the
/// primary merges the newcomer into the barcode it holds already (the seeds), and the merge
/// reaches every site. Only where the central server is the primary (in mirrored sync the
/// primary is a remote site, which does not run this yet).
fn merge_duplicate_barcode(tx: &mut Tx<'_>, id: &RecordId) -> Result<(), StoreError> {
    let network = tx.network();
    if !network.is_primary(&network.central) {
        return Ok(());
    }
    let me = network.central.clone();
    let Some(doc) = tx.current("barcode", id.as_str())?.and_then(|c| c.data) else { return Ok(()) };
    let doc: Value = serde_json::from_str(&doc).unwrap_or_default();
    let (Some(code), item) = (doc.get("code").and_then(Value::as_str), doc.get("item_id")) else { return Ok(()) };
    let needle = Value::String(code.to_owned()).to_string();
    let kept = tx
        .records_containing("barcode", &needle)?
        .into_iter()
        .filter(|(other, found)| other != id && found.get("code").and_then(Value::as_str) == Some(code))
        .filter(|(_, found)| found.get("item_id") == item)
        .map(|(other, _)| other)
        .min();
    if let Some(kept) = kept {
        tracing::info!(barcode = %id, into = %kept, code, "a duplicate barcode is merged into the one the primary holds");
        write_routed(tx, &Write::merge("barcode", id.as_str(), kept.as_str()), &me)?;
    }
    Ok(())
}

/// Prescribers behave like patients, and are shared with the dispensary stores on other sites
/// where they have prescribed (the seeds): a prescription that names a prescriber not visible
/// in its store makes it visible there, and the store's sites receive the prescriber. (Only
/// prescriptions that reach the central server: a dispensary that keeps its transactions on
/// its site shares nothing until it includes them.)
fn share_prescriber(tx: &mut Tx<'_>, id: &RecordId) -> Result<(), StoreError> {
    let Some(doc) = tx.current("prescription", id.as_str())?.and_then(|c| c.data) else { return Ok(()) };
    let doc: Value = serde_json::from_str(&doc).unwrap_or_default();
    let (Some(prescriber), Some(store)) =
        (doc.get("prescriber_id").and_then(Value::as_str), doc.get("store_id").and_then(Value::as_str))
    else {
        return Ok(());
    };
    let (prescriber, store) = (RecordId::from(prescriber), StoreId::from(store));
    let network = tx.network();
    let known = network.home_stores.contains_key(&prescriber);
    let sees = network.home_stores.get(&prescriber) == Some(&store)
        || network.name_visibility.get(&prescriber).is_some_and(|stores| stores.contains(&store));
    if !known || sees || tx.current("prescriber", prescriber.as_str())?.is_none() {
        return Ok(());
    }
    let me = network.central.clone();
    let key = RoutedBy::Name(&prescriber);
    let before = backfill::reach(tx, key)?;
    let row = json!({"prescriber_id": prescriber, "store_id": store});
    write_routed(tx, &Write::upsert("prescriber_visibility", format!("{prescriber}@{store}"), &row), &me)?;
    let sent = backfill::send_newly_visible(tx, key, &before)?;
    tracing::info!(%prescriber, %store, records = sent, "a prescriber is shared with the store where it prescribed");
    Ok(())
}
