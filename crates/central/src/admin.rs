//! Administration of the network, done on the central server: creating it, adding sites and
//! stores, sync types and visibility. Every change here is an ordinary checked, logged and
//! routed write, so the sites learn of it on their next pull.

use crate::engine::{Engine, EngineError};
use crate::session::SessionKey;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use model::{RecordId, SiteId, StoreId, SyncType};
use serde_json::json;
use std::sync::Arc;
use store::{Db, RoutedBy, StateKey, StoreError, Write};

/// What administration refuses.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("this database is already a node (site `{0}`); refusing to initialise it again")]
    AlreadyInitialised(SiteId),
    #[error("there is no site `{0}`; add it first with `outpost central site add {0}`")]
    UnknownSite(SiteId),
    #[error("there is no store `{0}`; add it first with `outpost central store add {0} --active-on SITE`")]
    UnknownStore(StoreId),
    #[error("site `{0}` exists already")]
    SiteExists(SiteId),
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error("a site id may hold only letters, digits, '-' and '_' (got `{0}`)")]
    BadName(String),
    #[error("there is no patient or prescriber `{0}` on this central server")]
    UnknownPatient(RecordId),
    #[error(
        "`{0}` is not a dispensary store: a patient's home store is a dispensary store, where patients are edited"
    )]
    NotADispensary(StoreId),
    #[error("the home store of `{0}` is `{1}` already")]
    AlreadyHome(RecordId, StoreId),
    #[error("`{0}` is already moving to `{1}`; the move completes when site `{2}` next syncs")]
    AlreadyMoving(RecordId, StoreId, SiteId),
    #[error("the administrator password must have at least {MIN_ADMIN_PASSWORD} characters")]
    WeakAdminPassword,
    #[error("making store `{0}` active on `{1}` is a move: run `outpost central store move {0} --to {1}`, which hands the store over safely")]
    MoveNeeded(StoreId, SiteId),
    #[error("store `{0}` is active on `{1}`; to change that, move it to another site with `outpost central store move {0} --to SITE`")]
    ActiveHere(StoreId, SiteId),
    #[error("store `{0}` is active on `{1}` already")]
    ActiveThere(StoreId, SiteId),
    #[error("`{site}` is a mobile site and store `{has}` is active on it already; a mobile site has one active store")]
    MobileHasStore { site: SiteId, has: StoreId },
    #[error("store `{store}` is already moving to `{to}`; the move completes when site `{from}` next syncs (`--force` completes it without that site, if it is lost for good)")]
    StoreAlreadyMoving { store: StoreId, to: SiteId, from: SiteId },
    #[error("a store is left on its old site as `none`, `transfer` or `collector` (got `{0}`)")]
    BadLeaveAs(String),
    #[error("store `{store}` is moving to or from site `{site}`; let the move complete (or `--force` it) before removing the site")]
    MoveUnderWay { site: SiteId, store: StoreId },
    #[error("`{0}` is the primary already")]
    PrimaryAlready(SiteId),
    #[error("the primary is already changing from `{from}` to `{to}`; it completes when `{from}` next syncs")]
    PrimaryAlreadyChanging { from: SiteId, to: SiteId },
    #[error("`{0}` is a mobile site; the primary edits central data for the whole network and must be a desktop site or the central server")]
    MobilePrimary(SiteId),
    #[error("`{0}` is the central server itself; it cannot be {1}")]
    IsCentral(SiteId, &'static str),
    #[error("`{0}` is the primary, where central data is edited; make another site the primary before removing it")]
    IsPrimary(SiteId),
    #[error("site `{site}` still has active stores ({}); move them first with `outpost central store move STORE --to SITE`, or disable the site (its data is kept)", .stores.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))]
    HasActiveStores { site: SiteId, stores: Vec<StoreId> },
}

/// Creates a central server's database. The central server is the primary unless `primary`
/// names another site (mirrored sync), which must then be added with `add_site`.
pub fn init(db: &Arc<Db>, central: &SiteId, primary: Option<&SiteId>) -> Result<Engine, AdminError> {
    check_name(central.as_str())?;
    match db.local_site() {
        Ok(existing) => return Err(AdminError::AlreadyInitialised(existing)),
        Err(StoreError::NotInitialised) => {}
        Err(e) => return Err(e.into()),
    }
    db.set_state(StateKey::LocalSite, central.as_str())?;
    db.set_state(StateKey::Role, "central")?;
    let engine = Engine::new(db.clone());
    let is_primary = primary.is_none_or(|p| p == central);
    // The central site's own record is written before the network knows who is central: it
    // is the one record that bootstraps authority, so it goes in as a received change would.
    db.transaction(|tx| {
        let data = json!({"name": central, "kind": "desktop", "central": true, "primary": is_primary});
        tx.write_founding_site(central, &data)
    })?;
    if let Some(primary) = primary.filter(|p| *p != central) {
        check_name(primary.as_str())?;
        db.set_state(StateKey::PendingPrimary, primary.as_str())?;
    }
    Ok(engine)
}

fn check_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadName(name.to_owned()))
    }
}

/// Adds a remote site and returns its password: shown once, only its argon2 hash is kept.
pub fn add_site(engine: &Engine, site: &SiteId, mobile: bool) -> Result<String, AdminError> {
    let name = site.as_str();
    check_name(name)?;
    let db = engine.db();
    if db.record("site", name)?.is_some() {
        return Err(AdminError::SiteExists(site.clone()));
    }
    let password = new_password();
    let hash = hash_password(&password)?;
    let primary = db.state(StateKey::PendingPrimary)?.as_deref() == Some(name);
    let kind = if mobile { "mobile" } else { "desktop" };
    engine.write(&[Write::upsert("site", name, &json!({"name": name, "kind": kind, "primary": primary}))])?;
    db.transaction(|tx| tx.set_password_hash(site, &hash, true))?;
    if primary {
        // Mirrored sync: from now on the primary is this remote site.
        let central = engine.central()?;
        engine.write(&[Write::upsert(
            "site",
            central.as_str(),
            &json!({"name": central.as_str(), "kind": "desktop", "central": true, "primary": false}),
        )])?;
    }
    Ok(password)
}

/// One site as `outpost central site list` shows it.
#[derive(Debug, Clone)]
pub struct SiteListing {
    pub site: SiteId,
    pub kind: &'static str,
    /// The stores the site holds, with how it holds them (its active stores first).
    pub stores: Vec<(StoreId, SyncType)>,
    pub last_push_at: Option<String>,
    pub last_pull_at: Option<String>,
    /// Changes waiting for the site: not sent to it yet, counted from its last noted pull
    /// (`None`: it has not pulled yet, or is still initialising).
    pub owed: Option<u64>,
    /// What the site said at its last noted pull it still had to push (`None`: not said yet).
    pub waiting_to_push: Option<u64>,
    /// Refused changes of the site that wait for an administrator (its pushes stop at
    /// `engine::MAX_OPEN_REJECTIONS`).
    pub open_rejections: u64,
    pub disabled_at: Option<String>,
}

/// Every site the central server knows, with what it holds and how its sync stands.
pub fn list_sites(engine: &Engine) -> Result<Vec<SiteListing>, EngineError> {
    let db = engine.db();
    let network = db.network();
    let mut listed = Vec::new();
    for row in db.site_sync_rows()? {
        let site = SiteId::from(row.site.as_str());
        let kind = match network.sites.get(&site) {
            Some(model::SiteKind::Mobile) => "mobile",
            Some(_) => "desktop",
            None => "unknown",
        };
        let mut stores: Vec<(StoreId, SyncType)> = network
            .stores
            .keys()
            .map(|store| (store.clone(), network.sync_type(store, &site)))
            .filter(|(_, sync)| *sync != SyncType::None)
            .collect();
        stores.sort_by_key(|(store, sync)| (*sync != SyncType::Active, store.clone()));
        let owed = row.pulled_to.map(|at| engine.owed(&site, at)).transpose()?;
        listed.push(SiteListing {
            kind,
            stores,
            last_push_at: row.last_push_at,
            last_pull_at: row.last_pull_at,
            owed,
            waiting_to_push: row.waiting_to_push,
            open_rejections: db.open_rejections(&site)?.len() as u64,
            disabled_at: row.disabled_at,
            site,
        });
    }
    Ok(listed)
}

/// Disables a site (`true`): from now on its sync requests are refused with a clear 403, and
/// everything it synced is kept, on the central server and on the site. Enabling it again
/// (`false`) lets it go on where it stopped.
pub fn set_site_disabled(engine: &Engine, site: &SiteId, disabled: bool) -> Result<(), AdminError> {
    if *site == engine.central()? {
        return Err(AdminError::IsCentral(site.clone(), "disabled"));
    }
    if !engine.db().set_site_disabled(site, disabled)? {
        return Err(AdminError::UnknownSite(site.clone()));
    }
    tracing::info!(site = %site, disabled, "a site was {}", if disabled { "disabled" } else { "enabled" });
    Ok(())
}

/// Removes a site that holds no active store: its credentials and bookkeeping go, and so do
/// the stores it held as a collector or transfer copy (their data stays on the central
/// server, where every store has its collector copy). The records it synced stay. Returns the
/// stores it no longer holds.
pub fn remove_site(engine: &Engine, site: &SiteId) -> Result<Vec<StoreId>, AdminError> {
    let db = engine.db();
    let network = db.network();
    if *site == engine.central()? {
        return Err(AdminError::IsCentral(site.clone(), "removed"));
    }
    if network.is_primary(site) {
        return Err(AdminError::IsPrimary(site.clone()));
    }
    if db.record("site", site.as_str())?.is_none() {
        return Err(AdminError::UnknownSite(site.clone()));
    }
    let active = network.active_stores(site);
    if !active.is_empty() {
        return Err(AdminError::HasActiveStores { site: site.clone(), stores: active });
    }
    if let Some((store, _)) = network.store_moves.iter().find(|(_, m)| m.to == *site || m.from == *site) {
        return Err(AdminError::MoveUnderWay { site: site.clone(), store: store.clone() });
    }
    if network.primary_move.as_ref().is_some_and(|m| m.to == *site) {
        return Err(AdminError::PrimaryAlreadyChanging { from: network.primary.clone(), to: site.clone() });
    }
    let rows: Vec<&StoreId> = network.sync_types.keys().filter(|(_, on)| on == site).map(|(store, _)| store).collect();
    let held: Vec<StoreId> =
        rows.iter().filter(|store| network.sync_type(store, site) != SyncType::None).map(|s| (*s).clone()).collect();
    let mut writes: Vec<Write> =
        rows.iter().map(|store| Write::delete("store_sync", format!("{store}@{site}"))).collect();
    writes.push(Write::delete("site", site.as_str()));
    let me = engine.central()?;
    db.transaction(|tx| {
        for write in &writes {
            crate::engine::write_routed(tx, write, &me)?;
        }
        tx.forget_site(site)?;
        Ok(())
    })?;
    tracing::info!(site = %site, "a site was removed");
    Ok(held)
}

/// Gives a site a new password (the old one stops working), returned once.
pub fn reset_password(engine: &Engine, site: &SiteId) -> Result<String, AdminError> {
    let password = new_password();
    let hash = hash_password(&password)?;
    let exists = engine.db().transaction(|tx| tx.set_password_hash(site, &hash, false))?;
    if !exists {
        return Err(AdminError::UnknownSite(site.clone()));
    }
    Ok(password)
}

/// Adds a store, active on `site`.
pub fn add_store(engine: &Engine, store: &StoreId, active_on: &SiteId, dispensary: bool) -> Result<(), AdminError> {
    let name = store.as_str();
    check_name(name)?;
    if engine.db().record("site", active_on.as_str())?.is_none() {
        return Err(AdminError::UnknownSite(active_on.clone()));
    }
    // Where the store is active first: the store record is routed by it, and written before
    // it, it would go to nobody.
    engine.write(&[
        sync_row(store, active_on, SyncType::Active),
        Write::upsert(
            "store",
            name,
            // A dispensary's transactions stay on its site until the central server says
            // otherwise (the seeds' default).
            &json!({"name": name, "dispensary": dispensary}),
        ),
        sync_prefs(store, !dispensary),
    ])?;
    Ok(())
}

/// Sets whether a store's transactions, stock, prescriptions and stocktakes are synced (for a
/// dispensary store: off by default, and they stay on its site).
pub fn set_include_transactions(engine: &Engine, store: &StoreId, include: bool) -> Result<(), AdminError> {
    if engine.db().record("store", store.as_str())?.is_none() {
        return Err(AdminError::UnknownStore(store.clone()));
    }
    engine.write(&[sync_prefs(store, include)])?;
    Ok(())
}

/// A store's sync-related preferences (the seeds' Synchronisation tab, edited on the central
/// server): a `store_sync` record of its own, apart from the store record.
fn sync_prefs(store: &StoreId, include_transactions: bool) -> Write {
    Write::upsert(
        "store_sync",
        store.as_str(),
        &json!({"store_id": store, "include_transactions_in_sync": include_transactions}),
    )
}

/// Sets how a store exists on a site other than its active one (collector, transfer or none).
/// Making it active elsewhere is a move, done safely by [`move_store`] and nowhere else.
pub fn set_sync_type(engine: &Engine, store: &StoreId, site: &SiteId, sync: SyncType) -> Result<(), AdminError> {
    let db = engine.db();
    if db.record("store", store.as_str())?.is_none() {
        return Err(AdminError::UnknownStore(store.clone()));
    }
    if db.record("site", site.as_str())?.is_none() {
        return Err(AdminError::UnknownSite(site.clone()));
    }
    let network = db.network();
    let active = network.active_site(store);
    if sync == SyncType::Active && active != Some(site) {
        return Err(AdminError::MoveNeeded(store.clone(), site.clone()));
    }
    if sync != SyncType::Active && active == Some(site) {
        return Err(AdminError::ActiveHere(store.clone(), site.clone()));
    }
    // A site that comes to hold the store (or see it) receives what the store already has.
    let sent = engine.write_and_backfill(&[sync_row(store, site, sync)], RoutedBy::Store(store))?;
    if sent > 0 {
        tracing::info!(store = %store, site = %site, records = sent, "the site receives the store's existing records on its next sync");
    }
    Ok(())
}

/// The `store_sync` record that says how `store` exists on `site`.
pub(crate) fn sync_row(store: &StoreId, site: &SiteId, sync: SyncType) -> Write {
    Write::upsert(
        "store_sync",
        format!("{store}@{site}"),
        &json!({"store_id": store, "site_id": site, "sync_type": sync.as_str()}),
    )
}

/// Makes a name (customer, supplier, patient) visible in a store. Visibility between stores
/// is symmetric (the seeds: "if store A is visible in store B, then store B is automatically
/// visible in store A"), so showing a store in another also shows the other in it, in the same
/// transaction.
pub fn show_name(engine: &Engine, name: &RecordId, store: &StoreId) -> Result<(), AdminError> {
    let (name, store) = (name.as_str(), store.as_str());
    let visibility = |name: &str, store: &str| {
        Write::upsert("name_visibility", format!("{name}@{store}"), &json!({"name_id": name, "store_id": store}))
    };
    let mut writes = vec![visibility(name, store)];
    if name != store && engine.db().record("store", name)?.is_some() {
        writes.push(visibility(store, name));
    }
    // The sites that come to see the name receive it and its records (a patient's too).
    let sent = engine.write_and_backfill(&writes, RoutedBy::Name(&RecordId::from(name)))?;
    if sent > 0 {
        tracing::info!(name, store, records = sent, "the sites of the store receive the name's existing records");
    }
    Ok(())
}

/// How a move of a patient to another home store stands once it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The old home store is active on a remote site: the move completes when that site next
    /// syncs (it pushes what it wrote first, then hands the patient over).
    Pending { old_site: SiteId },
    /// The old home store is active on the central server: done at once.
    Done,
}

/// Moves a patient (or prescriber) to another home store: done only on the central server (the
/// seeds). The patient becomes read-only everywhere and a `patient_move` record, the seeds'
/// special message, goes to the old home store's site; the move completes when that site hands
/// the patient over on its next sync (see `processors::complete_move`).
pub fn move_patient(engine: &Engine, patient: &RecordId, to: &StoreId) -> Result<MoveOutcome, AdminError> {
    let db = engine.db();
    let network = db.network();
    let Some(to_info) = network.stores.get(to) else { return Err(AdminError::UnknownStore(to.clone())) };
    if !to_info.dispensary {
        return Err(AdminError::NotADispensary(to.clone()));
    }
    if let Some(found) = network.moves.get(patient) {
        let old_site = network.active_site(&found.from).cloned().unwrap_or(SiteId::NONE);
        return Err(AdminError::AlreadyMoving(patient.clone(), found.to.clone(), old_site));
    }
    let table = ["patient", "prescriber"]
        .into_iter()
        .find(|table| db.record(table, patient.as_str()).ok().flatten().is_some())
        .ok_or_else(|| AdminError::UnknownPatient(patient.clone()))?;
    let Some(from) = network.home_stores.get(patient).cloned() else {
        return Err(AdminError::UnknownPatient(patient.clone()));
    };
    if from == *to {
        return Err(AdminError::AlreadyHome(patient.clone(), from));
    }
    let old_site = network.active_site(&from).cloned().unwrap_or(SiteId::NONE);
    let me = engine.central()?;
    let doc = json!({
        "patient_id": patient,
        "record_table": table,
        "from_store_id": from,
        "to_store_id": to,
        "status": "pending",
        "requested_at": protocol::now_rfc3339(),
    });
    let done = db.transaction(|tx| {
        crate::engine::write_routed(tx, &Write::upsert("patient_move", patient.as_str(), &doc), &me)?;
        if !crate::processors::completes_at_once(tx, &from) {
            return Ok(false);
        }
        crate::processors::complete_move(tx, patient, doc.clone())?;
        Ok(true)
    })?;
    Ok(if done { MoveOutcome::Done } else { MoveOutcome::Pending { old_site } })
}

/// How a store's move stands once `move_store` has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMoveOutcome {
    /// The old site hands the store over on its next sync; the move completes then.
    Pending { old_site: SiteId },
    /// Complete: the new site receives `records` on its next sync.
    Done { records: usize },
    /// Completed without the old site (`--force`): what it had not pushed before its last push
    /// is not on the central server, and is refused if it ever syncs again.
    Forced {
        records: usize,
        old_site: SiteId,
        last_push_at: Option<String>,
        acked: model::Seq,
        /// What the old site said, at its last pull, it still had to push.
        waiting_to_push: Option<u64>,
    },
}

/// Moves a store to another site, safely: the store is *moving* until its old site, on its
/// next sync, has pushed everything it wrote in the store and handed it over (the store is
/// read-only there from then on); only then does the central server make it active on `to`,
/// which receives the store's current records. A move from the central server completes at
/// once. `force` completes a pending move without its old site (lost for good).
pub fn move_store(
    engine: &Engine,
    store: &StoreId,
    to: &SiteId,
    leave_as: SyncType,
    force: bool,
) -> Result<StoreMoveOutcome, AdminError> {
    let db = engine.db();
    let network = db.network();
    if !network.stores.contains_key(store) {
        return Err(AdminError::UnknownStore(store.clone()));
    }
    if !network.sites.contains_key(to) {
        return Err(AdminError::UnknownSite(to.clone()));
    }
    if leave_as == SyncType::Active {
        return Err(AdminError::BadLeaveAs(leave_as.as_str().to_owned()));
    }
    let from = network.active_site(store).cloned().unwrap_or(SiteId::NONE);
    let pending = network.store_moves.get(store).cloned();
    match &pending {
        // `--force` completes the move under way, to where it was going, and nothing else.
        Some(found) if !force || found.to != *to => {
            return Err(AdminError::StoreAlreadyMoving {
                store: store.clone(),
                to: found.to.clone(),
                from: found.from.clone(),
            })
        }
        None if from == *to => return Err(AdminError::ActiveThere(store.clone(), to.clone())),
        _ => {}
    }
    if network.sites.get(to) == Some(&model::SiteKind::Mobile) {
        if let Some(has) = network.active_stores(to).into_iter().find(|s| s != store) {
            return Err(AdminError::MobileHasStore { site: to.clone(), has });
        }
    }
    let me = engine.central()?;
    let (last_push_at, acked, waiting_to_push) = db
        .site_sync_rows()?
        .into_iter()
        .find(|row| row.site == from.as_str())
        .map(|row| (row.last_push_at, row.acked, row.waiting_to_push))
        .unwrap_or_default();
    let outcome = db.transaction(|tx| {
        if pending.is_none() {
            let doc = json!({
                "store_id": store,
                "from_site_id": from,
                "to_site_id": to,
                "leave_as": leave_as.as_str(),
                "status": "pending",
                "requested_at": protocol::now_rfc3339(),
            });
            crate::engine::write_routed(tx, &Write::upsert("store_move", store.as_str(), &doc), &me)?;
        }
        if network.is_central(&from) {
            return Ok(StoreMoveOutcome::Done { records: crate::processors::complete_store_move(tx, store, false)? });
        }
        if force {
            let records = crate::processors::complete_store_move(tx, store, true)?;
            return Ok(StoreMoveOutcome::Forced {
                records,
                old_site: from.clone(),
                last_push_at,
                acked,
                waiting_to_push,
            });
        }
        Ok(StoreMoveOutcome::Pending { old_site: from.clone() })
    })?;
    tracing::info!(%store, %to, ?outcome, "a store move");
    Ok(outcome)
}

/// How a change of primary stands once `set_primary` has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryOutcome {
    /// The old primary hands over on its next sync; the change completes then.
    Pending { old_primary: SiteId },
    /// Done: the central server was the primary and has handed over at once.
    Done,
}

/// Makes `to` the primary, the one site that edits central data, with never two at once: the
/// old primary hands over on its next sync (after pushing its edits) and edits nothing from
/// then on; only then does `to` become the primary. When the central server is the old
/// primary, it hands over at once (the network becomes a mirrored one).
pub fn set_primary(engine: &Engine, to: &SiteId) -> Result<PrimaryOutcome, AdminError> {
    let db = engine.db();
    let network = db.network();
    match network.sites.get(to) {
        None => return Err(AdminError::UnknownSite(to.clone())),
        Some(model::SiteKind::Mobile) => return Err(AdminError::MobilePrimary(to.clone())),
        Some(_) => {}
    }
    if let Some(found) = &network.primary_move {
        return Err(AdminError::PrimaryAlreadyChanging { from: found.from.clone(), to: found.to.clone() });
    }
    let from = network.primary.clone();
    if from == *to {
        return Err(AdminError::PrimaryAlready(to.clone()));
    }
    let me = engine.central()?;
    let doc =
        json!({"from_site_id": from, "to_site_id": to, "status": "pending", "requested_at": protocol::now_rfc3339()});
    let outcome = db.transaction(|tx| {
        crate::engine::write_routed(tx, &Write::upsert("primary_move", "primary", &doc), &me)?;
        if network.is_central(&from) {
            crate::processors::complete_primary_move(tx)?;
            return Ok(PrimaryOutcome::Done);
        }
        Ok(PrimaryOutcome::Pending { old_primary: from.clone() })
    })?;
    tracing::info!(%from, %to, ?outcome, "a change of primary");
    Ok(outcome)
}

/// One store as `outpost central store list` shows it.
#[derive(Debug, Clone)]
pub struct StoreListing {
    pub store: StoreId,
    pub active_on: SiteId,
    pub dispensary: bool,
    /// The other sites that hold it, and how.
    pub held_by: Vec<(SiteId, SyncType)>,
    pub moving: Option<model::StoreMove>,
}

/// Every store, where it is active and held, and its move if one is under way.
pub fn list_stores(engine: &Engine) -> Vec<StoreListing> {
    let network = engine.db().network();
    network
        .stores
        .values()
        .map(|info| StoreListing {
            store: info.id.clone(),
            active_on: info.active_site.clone(),
            dispensary: info.dispensary,
            held_by: network
                .sites
                .keys()
                .filter(|site| **site != info.active_site)
                .map(|site| (site.clone(), network.sync_type(&info.id, site)))
                .filter(|(_, sync)| *sync != SyncType::None)
                .collect(),
            moving: network.store_moves.get(&info.id).cloned(),
        })
        .collect()
}

/// A seed file for `site`: everything it must hold now, as the pages its initial sync would
/// pull (read through the same `Engine::pull_page`), with the position its syncs continue
/// from. Returns the file's bytes and its header.
/// The file also holds the address the site syncs with and a new password for it (the old one
/// stops working), so that `outpost site import FILE` needs nothing else.
pub fn export_seed(
    engine: &Engine,
    site: &SiteId,
    central_url: &str,
) -> Result<(Vec<u8>, protocol::seed::SeedHeader), AdminError> {
    let db = engine.db();
    if *site == engine.central()? {
        return Err(AdminError::IsCentral(site.clone(), "exported as a site"));
    }
    let Some(row) = db.site_sync_rows()?.into_iter().find(|row| row.site == site.as_str()) else {
        return Err(AdminError::UnknownSite(site.clone()));
    };
    // Pages are read here, and written out and compressed on another thread meanwhile: the
    // reading and the writing take about as long as each other.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<crate::engine::PullPage>(2);
    let (read, bodies) = std::thread::scope(|scope| {
        let compressor = scope
            .spawn(move || receiver.iter().map(|page| protocol::seed::compress_page(&page.json())).collect::<Vec<_>>());
        let read = read_pages(engine, site, &sender);
        drop(sender);
        (read, compressor.join().unwrap_or_default())
    });
    let (cursor, records) = read?;
    let password = reset_password(engine, site)?;
    let created_at = protocol::now_rfc3339();
    let header = protocol::seed::SeedHeader {
        site: site.clone(),
        central: engine.central()?,
        central_url: central_url.to_owned(),
        password,
        expires_at: protocol::seed::expiry_of(&created_at),
        created_at,
        position: cursor,
        acked: row.acked,
        records,
        pages: bodies.len() as u64,
    };
    let mut writer = protocol::seed::SeedWriter::new(&header);
    for body in &bodies {
        writer.page(body);
    }
    tracing::info!(%site, records, "a seed file was made");
    Ok((writer.finish(), header))
}

/// Reads every page an initial sync of `site` would pull into `pages`; returns the position
/// after the last and how many changes they hold.
fn read_pages(
    engine: &Engine,
    site: &SiteId,
    pages: &std::sync::mpsc::SyncSender<crate::engine::PullPage>,
) -> Result<(protocol::Cursor, u64), AdminError> {
    let (mut cursor, mut records) = (None, 0u64);
    loop {
        let page = engine.pull_page(site, cursor.clone(), protocol::MAX_DECODED_BYTES / 2)?;
        records += page.changes.len() as u64;
        // Nothing more to take now (on PostgreSQL, changes a running transaction must be ordered
        // before): the site's first sync continues from here.
        let stuck = page.changes.is_empty() && cursor.as_ref() == Some(&page.next);
        let done = stuck || page.remaining == 0 && matches!(page.next, protocol::Cursor::Log { .. });
        let next = page.next.clone();
        let _ = pages.send(page);
        if done {
            return Ok((next, records));
        }
        cursor = Some(next);
    }
}

/// Makes an item visible in a store (edited on the primary).
pub fn show_item(engine: &Engine, item: &RecordId, store: &StoreId) -> Result<(), AdminError> {
    engine.write(&[Write::upsert(
        "item_visibility",
        format!("{item}@{store}"),
        &json!({"item_id": item, "store_id": store}),
    )])?;
    Ok(())
}

/// A new random password of 24 letters and digits (no look-alikes such as `l` and `1`).
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    // The OS random source failing is not recoverable for a password generator.
    if getrandom::fill(&mut bytes).is_err() {
        panic!("the operating system's random source is unavailable");
    }
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Hashes a password with argon2 (default parameters, a random salt), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, AdminError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| AdminError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| AdminError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Hash(e.to_string()))
}

/// Checks a password against a stored argon2 hash.
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash)
        .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// The shortest administrator password accepted: the dashboard may face the internet.
pub const MIN_ADMIN_PASSWORD: usize = 10;

const ADMIN_HASH: StateKey = StateKey::AdminPasswordHash;
const SESSION_KEY: StateKey = StateKey::SessionKey;
const SESSION_GENERATION: StateKey = StateKey::AdminSessionGeneration;

/// Refuses an administrator password too short to face the internet.
pub fn check_admin_password(password: &str) -> Result<(), AdminError> {
    if password.chars().count() < MIN_ADMIN_PASSWORD {
        return Err(AdminError::WeakAdminPassword);
    }
    Ok(())
}

/// Sets the administrator's password (only its argon2 hash is kept). Sessions opened with an
/// earlier password end; the key that signs sessions is made the first time.
pub fn set_admin_password(db: &Db, password: &str) -> Result<(), AdminError> {
    check_admin_password(password)?;
    let hash = hash_password(password)?;
    let key = match db.state(SESSION_KEY)?.as_deref().and_then(SessionKey::from_hex) {
        Some(key) => key,
        None => SessionKey::new(random_bytes().map_err(AdminError::Hash)?),
    };
    let generation = crate::session::to_hex(&random_bytes::<16>().map_err(AdminError::Hash)?);
    db.transaction(|tx| {
        tx.set_state(SESSION_KEY, &key.to_hex())?;
        tx.set_state(SESSION_GENERATION, &generation)?;
        tx.set_state(ADMIN_HASH, &hash)
    })?;
    Ok(())
}

/// What the dashboard needs to check the administrator: read from the database on every
/// request, so that a change made by any process holds at once.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub hash: String,
    pub key: SessionKey,
    generation: String,
}

impl AdminAuth {
    /// What a session is bound to: a new password or a logout changes it.
    pub fn binding(&self) -> String {
        format!("{}\0{}", self.hash, self.generation)
    }
}

/// The administrator's credentials, or `None` when no administrator has been set.
pub fn admin_auth(db: &Db) -> Result<Option<AdminAuth>, StoreError> {
    let Some(hash) = db.state(ADMIN_HASH)?.filter(|h| !h.is_empty()) else { return Ok(None) };
    let Some(key) = db.state(SESSION_KEY)?.as_deref().and_then(SessionKey::from_hex) else { return Ok(None) };
    let generation = db.state(SESSION_GENERATION)?.unwrap_or_default();
    Ok(Some(AdminAuth { hash, key, generation }))
}

/// Ends every administrator session, on every server process (a logout).
pub fn end_sessions(db: &Db) -> Result<(), AdminError> {
    let generation = crate::session::to_hex(&random_bytes::<16>().map_err(AdminError::Hash)?);
    db.set_state(SESSION_GENERATION, &generation)?;
    Ok(())
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("the operating system's random source failed: {e}"))?;
    Ok(bytes)
}
