//! Sending a site what it can newly see. When a write widens who receives a set of records (a
//! site becomes a collector of a store, a name becomes visible in a store, a patient moves to
//! another home store), the sites that now see a record must receive its current state, not only
//! its later changes. Each such record's log entry moves to the end of the log with the routing
//! it had, and is routed to the sites that gained it too: one entry per record is kept.

use model::{recipients, ChangeRef, Op, RecordId, SiteId};
use std::collections::{BTreeSet, HashMap};
use store::{RoutedBy, StoreError, Tx};

/// Who receives each record routed by `key`, as the network stands.
pub(crate) type Reach = HashMap<(String, RecordId), BTreeSet<SiteId>>;

/// The sites each logged record routed by `key` reaches now (remote sites only: the central
/// server holds everything already).
pub(crate) fn reach(tx: &Tx<'_>, key: RoutedBy<'_>) -> Result<Reach, StoreError> {
    let network = tx.network();
    let mut reach = Reach::new();
    for (table, id, keys, _) in tx.logged_records(key)? {
        let change = ChangeRef { table: &table, op: &Op::Update, keys: &keys };
        let sites = match recipients(tx.registry(), network, &change) {
            Ok(audience) => audience.sites(network).into_iter().filter(|s| !network.is_central(s)).collect(),
            Err(_) => BTreeSet::new(),
        };
        reach.insert((table, id), sites);
    }
    Ok(reach)
}

/// Sends every record routed by `key` to the sites it reaches now and did not reach `before`;
/// how many records were sent (to at least one site).
pub(crate) fn send_newly_visible(tx: &mut Tx<'_>, key: RoutedBy<'_>, before: &Reach) -> Result<usize, StoreError> {
    let network = tx.network().clone();
    let mut moving = Vec::new();
    let mut gainers = Vec::new();
    for (table, id, keys, seq) in tx.logged_records(key)? {
        let change = ChangeRef { table: &table, op: &Op::Update, keys: &keys };
        let Ok(audience) = recipients(tx.registry(), &network, &change) else { continue };
        let had = before.get(&(table.clone(), id.clone()));
        let gained: Vec<SiteId> = audience
            .sites(&network)
            .into_iter()
            .filter(|site| !network.is_central(site) && had.is_none_or(|had| !had.contains(site)))
            .collect();
        if gained.is_empty() {
            continue;
        }
        moving.push(seq);
        gainers.push(gained);
    }
    let moved = tx.relog_all(&moving)?;
    for (seq, gained) in moved.iter().zip(&gainers) {
        for site in gained {
            tx.add_outbox(site, *seq)?;
        }
    }
    Ok(moving.len())
}

/// Dispensary data (abbreviations, item directions, diagnoses, insurance providers, patient
/// event types) reaches only sites with an active dispensary store, from a shared bucket read
/// from each site's position on: a site that *gains* a dispensary store would see only later
/// changes. When the writes of a transaction give a site its first dispensary store, every
/// entry of the bucket moves to the end of the log (the other dispensary sites receive those
/// records once more; they are few). How many entries moved.
pub(crate) fn dispensary_data_for_new_sites(tx: &mut Tx<'_>, before: &BTreeSet<SiteId>) -> Result<usize, StoreError> {
    let gained: Vec<SiteId> = tx.network().dispensary_sites().difference(before).cloned().collect();
    if gained.is_empty() {
        return Ok(0);
    }
    let seqs = tx.seqs_in_bucket("dispensary")?;
    tx.relog_all(&seqs)?;
    tracing::info!(sites = ?gained, records = seqs.len(), "sites with a new dispensary store receive the dispensary data");
    Ok(seqs.len())
}
