//! The network as the rules see it: sites, stores, where each store is active, each store's sync
//! type on each site, visibility, home stores, and the preferences that change routing.

use crate::ids::{RecordId, SiteId, StoreId};
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
    pub include_transactions_in_sync: bool,
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
#[derive(Clone, Debug, Default)]
pub struct Network {
    pub central: SiteId,
    pub primary: SiteId,
    pub sites: BTreeMap<SiteId, SiteKind>,
    pub stores: BTreeMap<StoreId, StoreInfo>,
    /// Explicit sync types; the active site and the central server's collector copy are implied.
    pub sync_types: BTreeMap<(StoreId, SiteId), SyncType>,
    /// The stores in which each name (customer, supplier, patient, prescriber) is visible.
    pub name_visibility: BTreeMap<RecordId, BTreeSet<StoreId>>,
    /// The home store of each patient and prescriber.
    pub home_stores: BTreeMap<RecordId, StoreId>,
    pub prefs: Prefs,
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

    fn sites_where(&self, store: &StoreId, keep: impl Fn(SyncType) -> bool) -> BTreeSet<SiteId> {
        self.sites.keys().filter(|site| keep(self.sync_type(store, site))).cloned().collect()
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
