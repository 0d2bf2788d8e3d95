//! The network as the rules see it: sites, stores, where each store is active, each store's sync
//! type on each site, visibility, home stores, and the preferences that change routing.

use crate::ids::{RecordId, SiteId, StoreId};
use crate::registry::{Special, TableDef};
use crate::rules::{RecordKeys, Refusal};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How a store exists on a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncType {
    /// Not on this site.
    None,
    /// Only what transfers between stores need.
    Transfer,
    /// A full read-only copy.
    Collector,
    /// Edited here. A store is active on exactly one site.
    Active,
}

impl SyncType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "transfer" => Some(Self::Transfer),
            "collector" => Some(Self::Collector),
            "active" => Some(Self::Active),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Transfer => "transfer",
            Self::Collector => "collector",
            Self::Active => "active",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    #[default]
    Desktop,
    Mobile,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub id: StoreId,
    pub active_site: SiteId,
    /// A dispensary store: patients are edited here, and dispensary data reaches its site.
    pub dispensary: bool,
    /// The dispensary's *Include transactions in sync* preference (meaningless for other stores).
    /// A sync-related preference: it lives in the store's `store_sync` preferences record (id:
    /// the store's id), apart from the store record and its non-sync preferences.
    pub include_transactions_in_sync: bool,
    /// Whether the preference was set in `store_sync` (older databases kept it in the store
    /// record, still read when it was not).
    #[serde(default)]
    pub sync_prefs_apart: bool,
    /// A dispensary whose site's new patients are made visible in it (its visibility
    /// preference, `new_patients_visible` in the store record; on unless said otherwise).
    pub sees_new_patients: bool,
}

/// Where a patient's (or prescriber's) move stands. Only the central server starts a move; the
/// patient is read-only everywhere until the central server completes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveStatus {
    /// Made on the central server; the old home site has not handed the patient over yet.
    Pending,
    /// The old home site has handed it over (it pushed everything it wrote before).
    HandedOver,
}

impl MoveStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveStatus::Pending => "pending",
            MoveStatus::HandedOver => "handed_over",
        }
    }

    /// A move record's `status` while the move is under way; `None` once it is done (or for
    /// a status that is not a move's).
    pub fn under_way(status: Option<&str>) -> Option<MoveStatus> {
        match status {
            Some("pending") => Some(MoveStatus::Pending),
            Some("handed_over") => Some(MoveStatus::HandedOver),
            _ => None,
        }
    }
}

/// A move of a patient or prescriber to another home store that is not complete yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientMove {
    /// The `patient_move` record.
    pub id: RecordId,
    pub from: StoreId,
    pub to: StoreId,
    pub status: MoveStatus,
}

/// A move of a store to another site that is not complete yet (`store_move`, id the store's).
/// Made on the central server; the old site hands the store over on its next sync, after
/// pushing everything it wrote in it, and the store is read-only there from then on; the
/// central server then makes it active on the new site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMove {
    pub from: SiteId,
    pub to: SiteId,
    /// What the old site keeps of the store once the move is complete.
    pub leave_as: SyncType,
    pub status: MoveStatus,
    pub requested_at: String,
}

/// A change of primary not complete yet (`primary_move`, id `primary`): made on the central
/// server; the old primary hands over on its next sync, after pushing its edits of central
/// data, and edits none from then on; the central server then makes the new site the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryMove {
    pub from: SiteId,
    pub to: SiteId,
    pub status: MoveStatus,
    pub requested_at: String,
}

/// Network-wide preferences that change who edits or receives a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefs {
    /// Purchase orders, tenders and quotes of every store are entered on the primary.
    pub centralised_procurement: bool,
    /// Payments of every store are entered on the primary.
    pub centralised_payments: bool,
    /// Prescriptions go to every site where the patient is visible, not only collectors.
    pub prescriptions_to_visible_sites: bool,
    /// Repeats may be processed on every site where the patient is visible.
    pub repeats_on_visible_sites: bool,
}

/// Everything `authority` and `recipients` need to know about the network.
#[derive(Clone, Debug)]
pub struct Network {
    /// The central server ([`SiteId::NONE`] until its `site` record is read: see
    /// [`Network::has_central`]).
    pub central: SiteId,
    /// The primary ([`SiteId::NONE`] until a `site` record says which site it is).
    pub primary: SiteId,
    pub sites: BTreeMap<SiteId, SiteKind>,
    pub stores: BTreeMap<StoreId, StoreInfo>,
    /// Explicit sync types; the active site and the central server's collector copy are implied.
    pub sync_types: BTreeMap<(StoreId, SiteId), SyncType>,
    /// The stores in which each name (customer, supplier, patient, prescriber) is visible.
    pub name_visibility: BTreeMap<RecordId, BTreeSet<StoreId>>,
    /// The home store of each patient and prescriber.
    pub home_stores: BTreeMap<RecordId, StoreId>,
    /// Moves to another home store not complete yet, by patient (or prescriber).
    pub moves: BTreeMap<RecordId, PatientMove>,
    /// Moves of stores to another site not complete yet, by store.
    pub store_moves: BTreeMap<StoreId, StoreMove>,
    /// A change of primary not complete yet.
    pub primary_move: Option<PrimaryMove>,
    /// Stores whose site switched centralised procurement off for them (`local_procurement`).
    pub local_procurement: BTreeSet<StoreId>,
    /// Records merged into others, by (table, merged-away id): see [`crate::merge`].
    pub merged: BTreeMap<(String, RecordId), RecordId>,
    pub prefs: Prefs,
}

/// The network before any topology record: no central server, no primary, no sites.
impl Default for Network {
    fn default() -> Self {
        Network {
            central: SiteId::NONE,
            primary: SiteId::NONE,
            sites: BTreeMap::new(),
            stores: BTreeMap::new(),
            sync_types: BTreeMap::new(),
            name_visibility: BTreeMap::new(),
            home_stores: BTreeMap::new(),
            moves: BTreeMap::new(),
            store_moves: BTreeMap::new(),
            primary_move: None,
            merged: BTreeMap::new(),
            local_procurement: BTreeSet::new(),
            prefs: Prefs::default(),
        }
    }
}

impl Network {
    /// A network whose central server is also the primary.
    pub fn new(central: impl Into<SiteId>) -> Self {
        let central = central.into();
        let mut sites = BTreeMap::new();
        sites.insert(central.clone(), SiteKind::Desktop);
        Network { primary: central.clone(), central, sites, ..Default::default() }
    }

    pub fn add_site(&mut self, site: impl Into<SiteId>, kind: SiteKind) -> &mut Self {
        self.sites.insert(site.into(), kind);
        self
    }

    pub fn add_store(&mut self, store: impl Into<StoreId>, active_on: impl Into<SiteId>) -> &mut Self {
        let id = store.into();
        let info = StoreInfo {
            id: id.clone(),
            active_site: active_on.into(),
            dispensary: false,
            include_transactions_in_sync: true,
            sync_prefs_apart: false,
            sees_new_patients: true,
        };
        self.stores.insert(id, info);
        self
    }

    pub fn set_sync_type(&mut self, store: impl Into<StoreId>, site: impl Into<SiteId>, sync: SyncType) -> &mut Self {
        self.sync_types.insert((store.into(), site.into()), sync);
        self
    }

    /// Makes a name visible in a store.
    pub fn show_name(&mut self, name: impl Into<RecordId>, store: impl Into<StoreId>) -> &mut Self {
        self.name_visibility.entry(name.into()).or_default().insert(store.into());
        self
    }

    /// Whether a `site` record has named the central server (a database not initialised as a
    /// node has none).
    pub fn has_central(&self) -> bool {
        !self.central.is_none()
    }

    pub fn is_central(&self, site: &SiteId) -> bool {
        *site == self.central
    }

    pub fn is_primary(&self, site: &SiteId) -> bool {
        *site == self.primary
    }

    /// The site where a store is active, if the store is known.
    pub fn active_site(&self, store: &StoreId) -> Option<&SiteId> {
        self.stores.get(store).map(|s| &s.active_site)
    }

    /// How a store exists on a site: active where it is active, a collector on the central
    /// server, otherwise what the central server's settings say (none by default).
    pub fn sync_type(&self, store: &StoreId, site: &SiteId) -> SyncType {
        let Some(info) = self.stores.get(store) else { return SyncType::None };
        if info.active_site == *site {
            return SyncType::Active;
        }
        if self.is_central(site) {
            return SyncType::Collector;
        }
        self.sync_types.get(&(store.clone(), site.clone())).copied().unwrap_or(SyncType::None)
    }

    /// Sites holding a full copy of the store: its active site and every collector.
    pub fn store_holders(&self, store: &StoreId) -> BTreeSet<SiteId> {
        self.sites_where(store, |t| t >= SyncType::Collector)
    }

    /// Sites where the store is visible at all (sync type not none).
    pub fn store_visible_on(&self, store: &StoreId) -> BTreeSet<SiteId> {
        self.sites_where(store, |t| t != SyncType::None)
    }

    /// Only the sites that can hold the store are looked at (its active site, the central
    /// server, and those with a sync type set for it), not every site of the network: routing
    /// one change must not cost as much as the network is large.
    fn sites_where(&self, store: &StoreId, keep: impl Fn(SyncType) -> bool) -> BTreeSet<SiteId> {
        let Some(info) = self.stores.get(store) else { return BTreeSet::new() };
        let explicit = self
            .sync_types
            .range((store.clone(), SiteId::NONE)..) // the empty id sorts before every site
            .take_while(|((s, _), _)| s == store)
            .map(|((_, site), sync_type)| (site, *sync_type));
        // As `sync_type` says, without looking each site up again.
        let sync_type = |site: &SiteId, set: SyncType| match site {
            site if *site == info.active_site => SyncType::Active,
            site if self.is_central(site) => SyncType::Collector,
            _ => set,
        };
        [(&info.active_site, SyncType::None), (&self.central, SyncType::None)]
            .into_iter()
            .chain(explicit)
            .filter(|(site, set)| self.sites.contains_key(*site) && keep(sync_type(site, *set)))
            .map(|(site, _)| site.clone())
            .collect()
    }

    /// Sites that hold a store in which the name is visible, plus the central server.
    pub fn name_visible_on(&self, name: &RecordId) -> BTreeSet<SiteId> {
        let mut sites = BTreeSet::from([self.central.clone()]);
        for store in self.name_visibility.get(name).into_iter().flatten() {
            sites.extend(self.store_holders(store));
        }
        sites
    }

    /// Sites with at least one active dispensary store.
    pub fn dispensary_sites(&self) -> BTreeSet<SiteId> {
        self.stores.values().filter(|s| s.dispensary).map(|s| s.active_site.clone()).collect()
    }
}

/// The tables whose records shape the network. A write to one of them changes routing, so the
/// storage layer feeds each such record to [`Network::absorb`] in the same transaction.
pub const TOPOLOGY_TABLES: &[&str] = &[
    "site",
    "store",
    "store_sync",
    "name_visibility",
    "prescriber_visibility",
    "patient",
    "prescriber",
    "patient_move",
    "store_move",
    "primary_move",
    "local_procurement",
    "option",
];

impl Network {
    /// Builds the network from topology records (table, id, document).
    pub fn from_records<'a>(records: impl IntoIterator<Item = (&'a str, &'a str, serde_json::Value)>) -> Network {
        let mut network = Network::default();
        for (table, id, data) in records {
            network.absorb(table, id, None, Some(&data));
        }
        network
    }

    /// Applies one written topology record: `old` is what the record held before (to undo),
    /// `new` what it holds now (`None` when deleted). Other tables are ignored.
    pub fn absorb(&mut self, table: &str, id: &str, old: Option<&serde_json::Value>, new: Option<&serde_json::Value>) {
        let text = |v: &serde_json::Value, f: &str| v.get(f).and_then(|x| x.as_str()).map(str::to_owned);
        let flag = |v: &serde_json::Value, f: &str| v.get(f).and_then(|x| x.as_bool());
        match table {
            "site" => {
                let site = SiteId::from(id);
                let Some(new) = new else {
                    self.sites.remove(&site);
                    return;
                };
                let kind =
                    if text(new, "kind").as_deref() == Some("mobile") { SiteKind::Mobile } else { SiteKind::Desktop };
                self.sites.insert(site.clone(), kind);
                if flag(new, "central") == Some(true) {
                    self.central = site.clone();
                }
                if flag(new, "primary") == Some(true) {
                    self.primary = site;
                }
            }
            "store" => {
                let store = StoreId::from(id);
                let Some(new) = new else {
                    self.stores.remove(&store);
                    return;
                };
                let info = self.store_entry(&store);
                info.dispensary = flag(new, "dispensary").unwrap_or(false);
                // Off unless said otherwise for a dispensary (the seeds' default), on for the rest.
                if !info.sync_prefs_apart {
                    info.include_transactions_in_sync =
                        flag(new, "include_transactions_in_sync").unwrap_or(!info.dispensary);
                }
                info.sees_new_patients = flag(new, "new_patients_visible").unwrap_or(true);
            }
            "store_sync" => {
                if let Some(old) = old {
                    if let (Some(store), Some(site)) = (text(old, "store_id"), text(old, "site_id")) {
                        self.sync_types.remove(&(StoreId(store), SiteId(site)));
                    }
                }
                let Some(new) = new else { return };
                if let (Some(store), None, Some(include)) =
                    (text(new, "store_id"), text(new, "site_id"), flag(new, "include_transactions_in_sync"))
                {
                    // The store's sync-related preferences (the seeds' Synchronisation tab).
                    let info = self.store_entry(&StoreId(store));
                    info.include_transactions_in_sync = include;
                    info.sync_prefs_apart = true;
                    return;
                }
                let (Some(store), Some(site)) = (text(new, "store_id"), text(new, "site_id")) else { return };
                let sync = text(new, "sync_type").as_deref().and_then(SyncType::parse).unwrap_or(SyncType::None);
                let (store, site) = (StoreId(store), SiteId(site));
                if sync == SyncType::Active {
                    self.store_entry(&store).active_site = site.clone();
                }
                self.sync_types.insert((store, site), sync);
            }
            "name_visibility" | "prescriber_visibility" => {
                let name_field = if table == "name_visibility" { "name_id" } else { "prescriber_id" };
                if let Some(old) = old {
                    if let (Some(name), Some(store)) = (text(old, name_field), text(old, "store_id")) {
                        if let Some(stores) = self.name_visibility.get_mut(&RecordId(name)) {
                            stores.remove(&StoreId(store));
                        }
                    }
                }
                if let Some(new) = new {
                    if let (Some(name), Some(store)) = (text(new, name_field), text(new, "store_id")) {
                        self.show_name(RecordId(name), StoreId(store));
                    }
                }
            }
            "patient" | "prescriber" => {
                let name = RecordId::from(id);
                // As `RecordKeys` reads it: an empty field is no home store.
                let field = |n: &serde_json::Value, f: &str| text(n, f).filter(|s| !s.is_empty());
                match new.and_then(|n| field(n, "home_store_id").or_else(|| field(n, "store_id"))) {
                    Some(home) => {
                        self.home_stores.insert(name, StoreId(home));
                    }
                    None => {
                        self.home_stores.remove(&name);
                    }
                }
            }
            "patient_move" => {
                if let Some(patient) = old.and_then(|o| text(o, "patient_id")) {
                    self.moves.remove(&RecordId(patient));
                }
                let Some(new) = new else { return };
                let Some(status) = MoveStatus::under_way(text(new, "status").as_deref()) else {
                    return; // done: the patient's own record now says where it lives
                };
                let (Some(patient), Some(from), Some(to)) =
                    (text(new, "patient_id"), text(new, "from_store_id"), text(new, "to_store_id"))
                else {
                    return;
                };
                let found = PatientMove { id: RecordId::from(id), from: StoreId(from), to: StoreId(to), status };
                self.moves.insert(RecordId(patient), found);
            }
            "store_move" => {
                let store = StoreId::from(id);
                self.store_moves.remove(&store);
                let Some(new) = new else { return };
                let Some(status) = MoveStatus::under_way(text(new, "status").as_deref()) else {
                    return; // done: the store's sync types now say where it is active
                };
                let (Some(from), Some(to)) = (text(new, "from_site_id"), text(new, "to_site_id")) else { return };
                let leave_as = text(new, "leave_as").as_deref().and_then(SyncType::parse).unwrap_or(SyncType::None);
                let requested_at = text(new, "requested_at").unwrap_or_default();
                let found = StoreMove { from: SiteId(from), to: SiteId(to), leave_as, status, requested_at };
                self.store_moves.insert(store, found);
            }
            "primary_move" => {
                self.primary_move = None;
                let Some(new) = new else { return };
                let Some(status) = MoveStatus::under_way(text(new, "status").as_deref()) else {
                    return; // done: the site records say which site is the primary
                };
                let (Some(from), Some(to)) = (text(new, "from_site_id"), text(new, "to_site_id")) else { return };
                let requested_at = text(new, "requested_at").unwrap_or_default();
                self.primary_move = Some(PrimaryMove { from: SiteId(from), to: SiteId(to), status, requested_at });
            }
            "local_procurement" => {
                if let Some(store) = old.and_then(|o| text(o, "store_id")) {
                    self.local_procurement.remove(&StoreId(store));
                }
                if let Some(store) = new.filter(|n| flag(n, "on") != Some(false)).and_then(|n| text(n, "store_id")) {
                    self.local_procurement.insert(StoreId(store));
                }
            }
            "option" => {
                let on = new.and_then(|n| n.get("value")).and_then(|v| v.as_bool()).unwrap_or(false);
                match id {
                    "centralised_procurement" => self.prefs.centralised_procurement = on,
                    "centralised_payments" => self.prefs.centralised_payments = on,
                    "prescriptions_to_visible_sites" => self.prefs.prescriptions_to_visible_sites = on,
                    "repeats_on_visible_sites" => self.prefs.repeats_on_visible_sites = on,
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Checks that writing a topology record keeps the network possible: a mobile site has one
    /// active store (the seeds: "A mobile site can only have one Active store"). `new` is the
    /// record as it will stand (`None` for a delete, which never breaks it).
    pub fn check_topology(&self, table: &str, id: &str, new: Option<&serde_json::Value>) -> Result<(), Refusal> {
        let Some(new) = new else { return Ok(()) };
        let text = |f: &str| new.get(f).and_then(|x| x.as_str()).map(str::to_owned);
        match table {
            "store_sync" => {
                let (Some(store), Some(site)) = (text("store_id"), text("site_id")) else { return Ok(()) };
                let active = text("sync_type").as_deref().and_then(SyncType::parse) == Some(SyncType::Active);
                let (store, site) = (StoreId(store), SiteId(site));
                if !active || self.sites.get(&site) != Some(&SiteKind::Mobile) {
                    return Ok(());
                }
                match self.active_stores(&site).into_iter().find(|other| *other != store) {
                    Some(active) => Err(Refusal::MobileHasActiveStore { store, site, active }),
                    None => Ok(()),
                }
            }
            "site" if text("kind").as_deref() == Some("mobile") => {
                let site = SiteId::from(id);
                let stores = self.active_stores(&site);
                if stores.len() > 1 {
                    let names: Vec<String> = stores.iter().map(|s| format!("`{s}`")).collect();
                    return Err(Refusal::MobileWithSeveralStores { site, stores: names.join(", ") });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A change to a patient or prescriber record keeps its home store, unless the central
    /// server writes it: moving a patient is done there (the seeds), never by a site's edit,
    /// which would hand the patient and everything routed by it to another site.
    pub fn check_home_store(
        &self,
        table: &str,
        id: &RecordId,
        new_home: Option<&StoreId>,
        writer: &SiteId,
    ) -> Result<(), Refusal> {
        if !matches!(table, "patient" | "prescriber") || *writer == self.central {
            return Ok(());
        }
        match self.home_stores.get(id) {
            Some(known) if new_home != Some(known) => Err(Refusal::HomeStoreChanged {
                name: id.clone(),
                from: known.clone(),
                to: new_home.map_or_else(|| "none".to_owned(), |s| format!("`{s}`")),
                site: writer.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// A prescription (or its line) is written in a dispensary store where its patient is
    /// visible (the seeds): not in a store that does not dispense, nor for a patient the store
    /// cannot see. The central server is not held to it (it corrects what others wrote).
    pub fn check_prescription(&self, table: &TableDef, keys: &RecordKeys, writer: &SiteId) -> Result<(), Refusal> {
        if !table.has(Special::Prescription) || *writer == self.central {
            return Ok(());
        }
        let (Some(store), Some(patient)) = (&keys.store, &keys.name) else { return Ok(()) };
        if !self.stores.get(store).is_some_and(|info| info.dispensary) {
            return Err(Refusal::PrescriptionOutsideDispensary { store: store.clone() });
        }
        let visible = self.home_stores.get(patient) == Some(store)
            || self.name_visibility.get(patient).is_some_and(|stores| stores.contains(store));
        if !visible {
            return Err(Refusal::PatientNotVisible { patient: patient.clone(), store: store.clone() });
        }
        Ok(())
    }

    /// A site's write of a `patient_move` record is the old home site handing its patient over:
    /// the pending move's own record, with `status` set to `handed_over` and nothing else changed.
    /// The central server writes moves as it likes (it makes and completes them).
    pub fn check_handover(&self, id: &RecordId, new: &serde_json::Value, writer: &SiteId) -> Result<(), Refusal> {
        if *writer == self.central {
            return Ok(());
        }
        let field = |f: &str| new.get(f).and_then(|x| x.as_str());
        let refused = |why: String| Err(Refusal::MoveEdited { why });
        let Some(patient) = field("patient_id") else { return refused(String::new()) };
        let Some(found) = self.moves.get(&RecordId::from(patient)).filter(|m| m.id == *id) else {
            return refused(format!(" (no move of `{patient}` waits to be handed over)"));
        };
        if found.status != MoveStatus::Pending {
            return refused(" (it was handed over already)".to_owned());
        }
        let same =
            field("from_store_id") == Some(found.from.as_str()) && field("to_store_id") == Some(found.to.as_str());
        if field("status") != Some(MoveStatus::HandedOver.as_str()) || !same {
            return refused(String::new());
        }
        Ok(())
    }

    /// A site's write of a `store_move` record is the old site handing its store over: the
    /// pending move's own record with `status` set to `handed_over` and nothing else changed.
    /// The central server writes moves as it likes (it makes and completes them).
    pub fn check_store_handover(
        &self,
        store: &StoreId,
        new: &serde_json::Value,
        writer: &SiteId,
    ) -> Result<(), Refusal> {
        if *writer == self.central {
            return Ok(());
        }
        let refused = |why: &str| Err(Refusal::StoreMoveEdited { store: store.clone(), why: why.to_owned() });
        let Some(found) = self.store_moves.get(store) else {
            return refused(" (no move of it waits to be handed over)");
        };
        let kept = [
            ("from_site_id", found.from.as_str()),
            ("to_site_id", found.to.as_str()),
            ("leave_as", found.leave_as.as_str()),
        ];
        only_handed_over(found.status, new, &kept).or_else(refused)
    }

    /// A site's write of the `primary_move` record is the old primary handing over: the pending
    /// change's own record with `status` set to `handed_over` and nothing else changed.
    pub fn check_primary_handover(&self, new: &serde_json::Value, writer: &SiteId) -> Result<(), Refusal> {
        if *writer == self.central {
            return Ok(());
        }
        let refused = |why: &str| Err(Refusal::PrimaryMoveEdited { why: why.to_owned() });
        let Some(found) = &self.primary_move else { return refused(" (no change of primary waits to be handed over)") };
        let kept = [("from_site_id", found.from.as_str()), ("to_site_id", found.to.as_str())];
        only_handed_over(found.status, new, &kept).or_else(refused)
    }

    /// Whether `site` has handed `store` over to another site: the store is read-only there
    /// while the central server completes the move.
    pub fn handed_over_by(&self, store: &StoreId, site: &SiteId) -> Option<&StoreMove> {
        self.store_moves.get(store).filter(|m| m.status == MoveStatus::HandedOver && m.from == *site)
    }

    /// The stores a new patient (or prescriber) of `home` is made visible in (the seeds): the
    /// other dispensary stores active on the home store's site, each if its preference says so.
    /// Later visibility is set on the central server.
    pub fn stores_seeing_new_patients_of(&self, home: &StoreId) -> Vec<StoreId> {
        let Some(site) = self.active_site(home) else { return Vec::new() };
        self.stores
            .values()
            .filter(|s| s.active_site == *site && s.id != *home && s.dispensary && s.sees_new_patients)
            .map(|s| s.id.clone())
            .collect()
    }

    /// The stores active on a site.
    pub fn active_stores(&self, site: &SiteId) -> Vec<StoreId> {
        self.stores.values().filter(|info| info.active_site == *site).map(|info| info.id.clone()).collect()
    }

    fn store_entry(&mut self, store: &StoreId) -> &mut StoreInfo {
        self.stores.entry(store.clone()).or_insert_with(|| StoreInfo {
            id: store.clone(),
            active_site: SiteId::NONE, // until the store's own record names its site
            dispensary: false,
            include_transactions_in_sync: true,
            sync_prefs_apart: false,
            sees_new_patients: true,
        })
    }
}

/// A hand-over of a move under way (at `status`): the record with `status` set to
/// `handed_over` and the `kept` fields unchanged. `Err` says why not, as a refusal's tail.
fn only_handed_over(status: MoveStatus, new: &serde_json::Value, kept: &[(&str, &str)]) -> Result<(), &'static str> {
    if status != MoveStatus::Pending {
        return Err(" (it was handed over already)");
    }
    let field = |f: &str| new.get(f).and_then(|x| x.as_str());
    let same = kept.iter().all(|(name, value)| field(name) == Some(*value));
    if field("status") != Some(MoveStatus::HandedOver.as_str()) || !same {
        return Err("");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sites holding (or seeing) a store are those whose sync type says so, among every
    /// site: including a sync type set for the active site or the central server, which their
    /// place overrides, and one set for a site the network does not know.
    #[test]
    fn the_sites_of_a_store_are_those_its_sync_types_name() {
        let mut net = Network::new("central");
        net.add_site("north", SiteKind::Desktop)
            .add_site("south", SiteKind::Desktop)
            .add_site("east", SiteKind::Mobile);
        net.add_store("store-north", "north").add_store("store-south", "south");
        net.set_sync_type("store-north", "south", SyncType::Collector)
            .set_sync_type("store-north", "east", SyncType::Transfer)
            .set_sync_type("store-north", "north", SyncType::None)
            .set_sync_type("store-north", "central", SyncType::None)
            .set_sync_type("store-north", "gone", SyncType::Collector)
            .set_sync_type("store-south", "north", SyncType::Transfer);
        for store in ["store-north", "store-south", "unknown"].map(StoreId::from) {
            let every = |keep: fn(SyncType) -> bool| -> BTreeSet<SiteId> {
                net.sites.keys().filter(|site| keep(net.sync_type(&store, site))).cloned().collect()
            };
            assert_eq!(net.store_holders(&store), every(|t| t >= SyncType::Collector), "{store}");
            assert_eq!(net.store_visible_on(&store), every(|t| t != SyncType::None), "{store}");
        }
        assert_eq!(net.store_holders(&"store-north".into()).len(), 3, "north, south and the central server");
    }
}
