//! The two rules of the whole model, as pure functions over the registry and the network:
//! [`authority`] (where a record may be written) and [`recipients`] (who must receive a change).

use crate::ids::{RecordId, SiteId, StoreId};
use crate::network::{MoveStatus, Network};
use crate::registry::{Condition, DataType, Editor, Entry, Registry, Scope, Special, TableDef};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

/// What a change does to its record, as the node applying it sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The record did not exist here before.
    Create,
    /// The record existed and is replaced.
    Update,
    Delete,
    /// The record is merged into another of the same table, whose references replace its own.
    MergeInto(RecordId),
}

/// The keys of a record that route it, read from its JSON document by [`RecordKeys::read`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordKeys {
    /// The store the record belongs to (for a message: the sending store).
    pub store: Option<StoreId>,
    /// The other store of a transfer (for a message: the receiving store; for a patient's move:
    /// the store it moves to).
    pub other_store: Option<StoreId>,
    /// The name (or patient) the record belongs to.
    pub name: Option<RecordId>,
    /// The patient's home store, when the record itself says it (a patient or prescriber record).
    pub home_store: Option<StoreId>,
}

/// The fields of a document that can route it. Parsed without building the whole document:
/// the engine reads these keys and leaves the rest of the record alone.
#[derive(Deserialize, Default)]
struct KeyFields<'a> {
    #[serde(borrow, default)]
    store_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    other_store_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    prescriber_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    patient_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    home_store_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sending_store_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    receiving_store_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to_store_id: Option<Cow<'a, str>>,
}

impl RecordKeys {
    /// Reads the routing keys of a record of `table` from its document.
    pub fn read(table: &TableDef, id: &RecordId, data: &serde_json::Value) -> RecordKeys {
        let fields = KeyFields::deserialize(data).unwrap_or_default();
        Self::from_fields(table, id, fields)
    }

    /// Reads the routing keys from a document's JSON text; fails when the text is not a JSON
    /// object or a key is not a string.
    pub fn parse(table: &TableDef, id: &RecordId, json: &str) -> Result<RecordKeys, serde_json::Error> {
        if !json.trim_start().starts_with('{') {
            // A derived struct also accepts an array of its fields; a record is an object.
            return Err(serde::de::Error::custom("a record must be a JSON object"));
        }
        if table.scope == Scope::Global {
            // Nothing in the document routes it: do not read it. (Text that arrived over the
            // wire was already checked to be JSON when the batch was decoded.)
            return Ok(RecordKeys::default());
        }
        let fields: KeyFields<'_> = serde_json::from_str(json)?;
        Ok(Self::from_fields(table, id, fields))
    }

    fn from_fields(table: &TableDef, id: &RecordId, f: KeyFields<'_>) -> RecordKeys {
        let text = |v: &Option<Cow<'_, str>>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let by_name = |field: &str| match field {
            "id" => Some(id.0.clone()),
            "store_id" => text(&f.store_id),
            "name_id" => text(&f.name_id),
            "patient_id" => text(&f.patient_id),
            "prescriber_id" => text(&f.prescriber_id),
            _ => None,
        };
        let mut keys = RecordKeys::default();
        match table.scope {
            Scope::Global => {}
            Scope::Store(field) => {
                keys.store = by_name(field).map(StoreId);
                keys.other_store = text(&f.other_store_id).map(StoreId);
                keys.name = text(&f.name_id).or_else(|| text(&f.prescriber_id)).map(RecordId);
            }
            Scope::Name(field) => keys.name = by_name(field).map(RecordId),
            Scope::Patient(field) => {
                keys.name = by_name(field).map(RecordId);
                keys.home_store = text(&f.home_store_id).map(StoreId);
                keys.store = text(&f.store_id).map(StoreId);
                if field == "id" && keys.home_store.is_none() {
                    // The seeds: the home store is set from the store the patient was created in.
                    keys.home_store = keys.store.clone();
                }
                // A patient's move: the store it moves to.
                keys.other_store = text(&f.to_store_id).map(StoreId);
            }
            Scope::Message => {
                keys.store = text(&f.sending_store_id).map(StoreId);
                keys.other_store = text(&f.receiving_store_id).map(StoreId);
            }
        }
        keys
    }
}

/// A change as the rules see it.
#[derive(Clone, Debug)]
pub struct ChangeRef<'a> {
    pub table: &'a str,
    pub op: &'a Op,
    pub keys: &'a RecordKeys,
}

/// The rule that governs one change: the owning entry, or a variant whose condition holds.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub table: &'static TableDef,
    pub entry: &'static Entry,
}

impl Rule {
    pub fn data_type(&self) -> DataType {
        self.entry.data_type
    }
}

/// Why a change may not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    #[error("`{}` is not a synced table", crate::limits::shown(.0))]
    UnknownTable(String),
    #[error("{what}: only {writer} may edit them, not site `{site}`{why}")]
    NotAuthorised { what: String, writer: String, site: SiteId, why: String },
    #[error("a {what} record needs `{field}` to say which {needs} it belongs to")]
    MissingKey { what: String, field: &'static str, needs: &'static str },
    #[error("store `{0}` is not in the network")]
    UnknownStore(StoreId),
    #[error("a prescription is written in a dispensary store, and `{store}` is not a dispensary; write it in a dispensary store where the patient is visible")]
    PrescriptionOutsideDispensary { store: StoreId },
    #[error("patient `{patient}` is not visible in store `{store}`: a prescription is written where its patient is visible (visibility is set on the central server)")]
    PatientNotVisible { patient: RecordId, store: StoreId },
    #[error("`{table}` {why}: it stays on the site that wrote it and is never sent, but site `{site}` sent it (a site older than this rule, or one that writes behind its checks); it is not stored here")]
    StaysOnSite { table: String, why: String, site: SiteId },
    #[error("`{patient}` is moving to home store `{to}` and is read-only everywhere until the move completes (the move was made on the central server; it completes when the site of `{from}` next syncs)")]
    PatientMoving { patient: RecordId, from: StoreId, to: StoreId },
    #[error("a patient is moved on the central server; its old home site may only hand it over (`status` becomes `handed_over`, nothing else changes){why}")]
    MoveEdited { why: String },
    #[error(
        "the move of store `{store}` is made and completed on the central server; a site may only hand it over{why}"
    )]
    StoreMoveEdited { store: StoreId, why: String },
    #[error("store `{store}` has been handed over to site `{to}` and is read-only here; what was entered before the hand-over is kept and synced. Enter it on `{to}` once the move is complete")]
    StoreHandedOver { store: StoreId, to: SiteId },
    #[error(
        "the change of primary is made and completed on the central server; the old primary may only hand over{why}"
    )]
    PrimaryMoveEdited { why: String },
    #[error("this site has handed the primary's role to `{to}`: central data is edited there from now on (what was entered here before is kept and synced)")]
    PrimaryHandedOver { to: SiteId },
    #[error("the line cannot be written: {why}")]
    BadLine { why: String },
    #[error("store `{store}` holds {have} packs of item `{item}`, and the invoice takes {want}: finalising it would take stock the store does not have")]
    NotEnoughStock { item: RecordId, store: StoreId, have: String, want: String },
    #[error("a finalised customer invoice needs its lines: write them before finalising it")]
    FinalisedWithoutLines,
    #[error("item `{0}` is not known here: a line is for an item this site has received from the primary server")]
    UnknownItem(RecordId),
    #[error("messages are never edited; create a new one instead")]
    MessageEdited,
    #[error("`{table}` `{into}` is not held here: a record is merged into one this node holds (a patient or prescriber merged on a site needs the other's home store known there)")]
    MergeTargetUnknown { table: String, into: RecordId },
    #[error("a record cannot be merged into itself")]
    MergeIntoItself,
    #[error("locations are merged only within one store (`{0}` and `{1}`)")]
    MergeAcrossStores(StoreId, StoreId),
    #[error("patients can only be merged when both have the same home store (`{0}` and `{1}`)")]
    MergeAcrossHomeStores(StoreId, StoreId),
    #[error("the record's id is not valid: {reason}")]
    BadId { reason: String },
    #[error("the record is {bytes} bytes of JSON; the most a record may hold is {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("the record nests objects and lists more than {max} deep")]
    TooDeep { max: usize },
    #[error("`{name}` cannot be moved to home store {to} by site `{site}` (its home store is `{from}`): a patient is moved to another home store only on the central server")]
    HomeStoreChanged { name: RecordId, from: StoreId, to: String, site: SiteId },
    #[error("store `{store}` cannot be active on mobile site `{site}`: a mobile site has one active store, and `{active}` is active there; move `{active}` first or use another site")]
    MobileHasActiveStore { store: StoreId, site: SiteId, active: StoreId },
    #[error(
        "site `{site}` cannot become a mobile site: a mobile site has one active store, and {stores} are active there"
    )]
    MobileWithSeveralStores { site: SiteId, stores: String },
}

/// Where a record may be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writer {
    Site(SiteId),
    Sites(BTreeSet<SiteId>),
    AnySite,
    Nobody,
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Writer::Site(site) => write!(f, "site `{site}`"),
            Writer::Sites(sites) => {
                let names: Vec<&str> = sites.iter().map(SiteId::as_str).collect();
                write!(f, "sites {}", names.join(", "))
            }
            Writer::AnySite => f.write_str("any site"),
            Writer::Nobody => f.write_str("no site"),
        }
    }
}

impl Writer {
    pub fn allows(&self, site: &SiteId) -> bool {
        match self {
            Writer::Site(s) => s == site,
            Writer::Sites(sites) => sites.contains(site),
            Writer::AnySite => true,
            Writer::Nobody => false,
        }
    }
}

/// Who must receive a change. The central server, being the hub and the collector of every
/// store, stores everything that leaves a site whatever the audience says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Stays where it was written.
    Nobody,
    /// Every site (central data). Stored once in a shared bucket.
    Everyone,
    /// The central server and every site with an active dispensary store. A shared bucket too.
    DispensarySites,
    /// Every site except the central server (a message with neither store set).
    RemoteSites,
    /// These sites only.
    Sites(BTreeSet<SiteId>),
}

impl Audience {
    /// Whether `site` must receive the change.
    pub fn includes(&self, network: &Network, site: &SiteId) -> bool {
        match self {
            Audience::Nobody => false,
            Audience::Everyone => true,
            Audience::DispensarySites => network.is_central(site) || network.dispensary_sites().contains(site),
            Audience::RemoteSites => !network.is_central(site),
            Audience::Sites(sites) => sites.contains(site),
        }
    }

    /// The sites, listed.
    pub fn sites(&self, network: &Network) -> BTreeSet<SiteId> {
        network.sites.keys().filter(|s| self.includes(network, s)).cloned().collect()
    }
}

impl Registry {
    /// The rule for a change: a variant entry whose condition holds, else the owning entry.
    pub fn rule(&self, network: &Network, change: &ChangeRef<'_>) -> Result<Rule, Refusal> {
        let (table, owner) = self.table(change.table).ok_or_else(|| Refusal::UnknownTable(change.table.to_owned()))?;
        let entry = self
            .variants(change.table)
            .find(|(_, when)| condition_holds(*when, network, change))
            .map(|(entry, _)| entry)
            .unwrap_or(owner);
        Ok(Rule { table, entry })
    }
}

fn condition_holds(when: Condition, network: &Network, change: &ChangeRef<'_>) -> bool {
    match when {
        Condition::Merge => matches!(change.op, Op::MergeInto(_)),
        // A satellite may switch it off for its own stores (the seeds).
        Condition::CentralisedProcurement => {
            network.prefs.centralised_procurement
                && !change.keys.store.as_ref().is_some_and(|store| network.local_procurement.contains(store))
        }
        Condition::CentralisedPayments => network.prefs.centralised_payments,
        Condition::ExistingRecord => !matches!(change.op, Op::Create),
        Condition::NewPatientVisibility => {
            matches!(change.op, Op::Create)
                && change.keys.name.as_ref().is_some_and(|name| network.home_stores.contains_key(name))
        }
    }
}

/// Where the record a change touches may be written.
pub fn authority(registry: &Registry, network: &Network, change: &ChangeRef<'_>) -> Result<Writer, Refusal> {
    let rule = registry.rule(network, change)?;
    let active_site_of = |store: &Option<StoreId>, field: &'static str| -> Result<SiteId, Refusal> {
        let store =
            store.as_ref().ok_or(Refusal::MissingKey { what: change.table.to_owned(), field, needs: "store" })?;
        network.active_site(store).cloned().ok_or_else(|| Refusal::UnknownStore(store.clone()))
    };
    let moving = change.keys.name.as_ref().and_then(|name| network.moves.get(name));
    let writer = match rule.entry.editor {
        // A move is made on the central server; the old home site hands the patient over.
        Editor::Central if rule.table.has(Special::PatientMove) => match moving {
            Some(found) if *change.op != Op::Create => {
                let old_home = active_site_of(&Some(found.from.clone()), "from_store_id")?;
                Writer::Sites(BTreeSet::from([network.central.clone(), old_home]))
            }
            _ => Writer::Site(network.central.clone()),
        },
        // A store's move is made on the central server; its old site hands the store over.
        Editor::Central if rule.table.has(Special::StoreMove) => {
            match change.keys.store.as_ref().and_then(|store| network.store_moves.get(store)) {
                Some(found) if *change.op != Op::Create => {
                    Writer::Sites(BTreeSet::from([network.central.clone(), found.from.clone()]))
                }
                _ => Writer::Site(network.central.clone()),
            }
        }
        // A change of primary is made on the central server; the old primary hands over.
        Editor::Central if rule.table.has(Special::PrimaryMove) => match &network.primary_move {
            Some(found) if *change.op != Op::Create => {
                Writer::Sites(BTreeSet::from([network.central.clone(), found.from.clone()]))
            }
            _ => Writer::Site(network.central.clone()),
        },
        Editor::Primary if rule.table.has(Special::AddedAnywhere) && *change.op == Op::Create => Writer::AnySite,
        Editor::Primary => Writer::Site(network.primary.clone()),
        Editor::Central => Writer::Site(network.central.clone()),
        Editor::AnySite => Writer::AnySite,
        Editor::StoreSite => match rule.data_type() {
            // A message may be sent from any site, but in the name of a store only from the site
            // where that store is active: nobody may speak for another site's store.
            DataType::Message if *change.op == Op::Create => match &change.keys.store {
                Some(sending) => Writer::Site(active_site_of(&Some(sending.clone()), "sending_store_id")?),
                None => Writer::AnySite,
            },
            DataType::Message => return Err(Refusal::MessageEdited),
            DataType::Patient if rule.table.has(Special::Prescription) => {
                Writer::Site(active_site_of(&change.keys.store, "store_id")?)
            }
            DataType::Patient => {
                let home = home_store(network, change)?;
                if let Op::MergeInto(into) = change.op {
                    if let Some(other) = network.home_stores.get(into).filter(|other| **other != home) {
                        return Err(Refusal::MergeAcrossHomeStores(home, other.clone()));
                    }
                }
                let home_site = active_site_of(&Some(home), "home_store_id")?;
                if rule.table.has(Special::Repeat) && network.prefs.repeats_on_visible_sites {
                    // The preference widens where repeats are processed; the home site keeps it.
                    let name = change.keys.name.as_ref().expect("home_store found it");
                    let mut sites = network.name_visible_on(name);
                    sites.insert(home_site);
                    Writer::Sites(sites)
                } else if rule.table.has(Special::NewPatientVisibility) {
                    // A new visibility row for a patient: made on its home site, in its own stores
                    // (its other dispensary stores); the central server keeps its authority over
                    // name visibility "including existing patients", in any store.
                    let store = change.keys.store.as_ref();
                    match store.and_then(|s| network.active_site(s)) {
                        Some(site) if *site == home_site => {
                            Writer::Sites(BTreeSet::from([home_site, network.central.clone()]))
                        }
                        _ => Writer::Site(network.central.clone()),
                    }
                } else if moving.is_some() && rule.table.scope == Scope::Patient("id") {
                    // The central server completes a move by writing the patient's new home store.
                    Writer::Sites(BTreeSet::from([home_site, network.central.clone()]))
                } else {
                    Writer::Site(home_site)
                }
            }
            // The central server makes the responding half of a transfer (the seeds: it "routes
            // transfers from one store to another"); only the store's site edits it after that.
            _ if rule.table.has(Special::RespondingHalf) && *change.op == Op::Create => {
                Writer::Sites(BTreeSet::from([
                    active_site_of(&change.keys.store, "store_id")?,
                    network.central.clone(),
                ]))
            }
            _ => Writer::Site(active_site_of(&change.keys.store, "store_id")?),
        },
    };
    Ok(writer)
}

/// The home store of the patient a change belongs to: the one the network knows (a change
/// cannot move a patient; that is done on the central server), else the record's own.
fn home_store(network: &Network, change: &ChangeRef<'_>) -> Result<StoreId, Refusal> {
    let name = change.keys.name.as_ref().ok_or(Refusal::MissingKey {
        what: change.table.to_owned(),
        field: "patient_id",
        needs: "patient",
    })?;
    network.home_stores.get(name).or(change.keys.home_store.as_ref()).cloned().ok_or(Refusal::MissingKey {
        what: change.table.to_owned(),
        field: "home_store_id",
        needs: "home store",
    })
}

/// Checks that `site` may write the change, with a reason a person can act on when it may not.
pub fn check_write(
    registry: &Registry,
    network: &Network,
    change: &ChangeRef<'_>,
    site: &SiteId,
) -> Result<(), Refusal> {
    let writer = authority(registry, network, change)?;
    if writer.allows(site) {
        return Ok(());
    }
    let rule = registry.rule(network, change)?;
    // Say what decided it, so that a person can tell a wrong store id from a wrong site.
    let why = match (rule.entry.editor, rule.table.scope, &change.keys.store, &change.keys.name) {
        (Editor::StoreSite, Scope::Store(field) | Scope::Patient(field), Some(store), _) if field == "store_id" => {
            format!(" (the record's `store_id` is `{store}`, which is active there); write it in a store of this site, or on the site where `{store}` is active")
        }
        (Editor::StoreSite, Scope::Message, Some(store), _) => {
            format!(" (the message's `sending_store_id` is `{store}`, which is active there); send it from a store of this site")
        }
        (Editor::StoreSite, Scope::Patient(_), _, Some(name)) => {
            format!(" (the home store of `{name}` is active there); edit it on that site, or move the patient on the central server")
        }
        (Editor::Primary | Editor::Central, ..) => {
            "; edit them there and they reach this site on its next sync".to_owned()
        }
        _ => String::new(),
    };
    Err(Refusal::NotAuthorised {
        what: format!(
            "{} are {} data (table `{}`)",
            rule.entry.data,
            rule.data_type().label().to_lowercase(),
            change.table
        ),
        writer: describe_writer(network, &writer),
        site: site.clone(),
        why,
    })
}

/// Where a record may be written, in the words a refusal uses: "the primary server (`cms`)",
/// "the central server (`central`)", "site `north`".
fn describe_writer(network: &Network, writer: &Writer) -> String {
    let one = |site: &SiteId| {
        if network.is_central(site) {
            format!("the central server (`{site}`)")
        } else if network.is_primary(site) {
            format!("the primary server (`{site}`)")
        } else {
            format!("site `{site}`")
        }
    };
    match writer {
        Writer::Site(site) if network.is_primary(site) => format!("the primary server (`{site}`)"),
        Writer::Site(site) => one(site),
        Writer::Sites(sites) => sites.iter().map(one).collect::<Vec<_>>().join(" or "),
        other => other.to_string(),
    }
}

/// A patient (or prescriber) that is moving to another home store is read-only everywhere until
/// the central server completes the move: a site refuses its own edits of it and of its
/// records. What the old home site pushes is still taken (`local_edit` false on the central
/// server): it was written before the site learnt of the move, which it hands over only after
/// pushing everything it wrote before.
pub fn check_not_moving(
    registry: &Registry,
    network: &Network,
    change: &ChangeRef<'_>,
    local_edit: bool,
) -> Result<(), Refusal> {
    let Some((patient, found)) = change.keys.name.as_ref().and_then(|n| network.moves.get_key_value(n)) else {
        return Ok(());
    };
    let rule = registry.rule(network, change)?;
    let patient_data = rule.data_type() == DataType::Patient
        && !rule.table.has(Special::Prescription)
        && !rule.table.has(Special::PatientMove);
    if !local_edit || !patient_data {
        return Ok(());
    }
    Err(Refusal::PatientMoving { patient: patient.clone(), from: found.from.clone(), to: found.to.clone() })
}

/// A store its site has handed over to another site is read-only there while the central
/// server completes the move: that site's own changes of the store's records are refused (the
/// hand-over itself aside). Everyone else's are taken: they do not come from the old site.
pub fn check_not_handed_over(
    registry: &Registry,
    network: &Network,
    change: &ChangeRef<'_>,
    writer: &SiteId,
) -> Result<(), Refusal> {
    if let Some(found) =
        network.primary_move.as_ref().filter(|m| m.status == MoveStatus::HandedOver && m.from == *writer)
    {
        if registry.rule(network, change)?.entry.editor == Editor::Primary {
            return Err(Refusal::PrimaryHandedOver { to: found.to.clone() });
        }
    }
    let Some((store, found)) = change.keys.store.as_ref().and_then(|s| Some(s).zip(network.handed_over_by(s, writer)))
    else {
        return Ok(());
    };
    if registry.table(change.table).is_some_and(|(table, _)| table.has(Special::StoreMove)) {
        return Ok(());
    }
    Err(Refusal::StoreHandedOver { store: store.clone(), to: found.to.clone() })
}

/// Why a change stays on the node that wrote it, if it does: local (and sync) data never
/// travels, and a dispensary store's transactions, stock, prescriptions and stocktakes stay on
/// its site while the store does not include transactions in sync. Such a change is not logged
/// to push, and no other node takes it.
pub fn held_where_written(
    registry: &Registry,
    network: &Network,
    change: &ChangeRef<'_>,
) -> Result<Option<String>, Refusal> {
    let rule = registry.rule(network, change)?;
    if matches!(rule.data_type(), DataType::Local | DataType::Sync) {
        return Ok(Some(format!("is {} data (\"{}\")", rule.data_type(), rule.entry.data)));
    }
    if rule.table.has(Special::DispensaryStock) {
        if let Some(store) = &change.keys.store {
            if network.stores.get(store).is_some_and(|info| info.dispensary && !info.include_transactions_in_sync) {
                return Ok(Some(format!(
                    "belongs to dispensary store `{store}`, which does not include transactions in sync"
                )));
            }
        }
    }
    Ok(None)
}

/// Which sites must receive a change.
pub fn recipients(registry: &Registry, network: &Network, change: &ChangeRef<'_>) -> Result<Audience, Refusal> {
    let rule = registry.rule(network, change)?;
    let keys = change.keys;
    let store_key = || {
        keys.store.as_ref().ok_or(Refusal::MissingKey {
            what: change.table.to_owned(),
            field: "store_id",
            needs: "store",
        })
    };
    let audience = match rule.data_type() {
        DataType::Local | DataType::Sync => Audience::Nobody,
        DataType::Central if rule.table.has(Special::DispensaryCentral) => Audience::DispensarySites,
        DataType::Central => Audience::Everyone,
        DataType::CentralStore => {
            let mut sites = network.store_visible_on(store_key()?);
            sites.insert(network.central.clone());
            sites.insert(network.primary.clone());
            Audience::Sites(sites)
        }
        DataType::Name => {
            let name = keys.name.as_ref().ok_or(Refusal::MissingKey {
                what: change.table.to_owned(),
                field: "name_id",
                needs: "name",
            })?;
            let mut sites = network.name_visible_on(name);
            sites.insert(network.primary.clone());
            Audience::Sites(sites)
        }
        DataType::Store => store_audience(network, rule.table, keys, store_key()?, change.op)?,
        DataType::Patient if rule.table.has(Special::Prescription) => {
            let store = store_key()?;
            let mut audience = store_audience(network, rule.table, keys, store, change.op)?;
            if network.prefs.prescriptions_to_visible_sites {
                if let (Audience::Sites(sites), Some(name)) = (&mut audience, &keys.name) {
                    sites.extend(network.name_visible_on(name));
                }
            }
            audience
        }
        DataType::Patient => {
            let home = home_store(network, change)?;
            let name = keys.name.as_ref().expect("home_store found it");
            let mut sites = network.name_visible_on(name);
            sites.extend(network.active_site(&home).cloned());
            if let Some(to) = keys.other_store.as_ref().filter(|_| rule.table.has(Special::PatientMove)) {
                // A move is also known where the patient is going, which must not take it early.
                sites.extend(network.active_site(to).cloned());
            }
            if rule.table.has(Special::NewPatientVisibility) {
                // A visibility row also travels like central store data: where its store is visible.
                sites.extend(network.store_visible_on(store_key()?));
                sites.insert(network.primary.clone());
            }
            Audience::Sites(sites)
        }
        DataType::Message => match (&keys.other_store, &keys.store) {
            (Some(receiving), _) => {
                let site = network.active_site(receiving).ok_or_else(|| Refusal::UnknownStore(receiving.clone()))?;
                Audience::Sites(BTreeSet::from([site.clone(), network.central.clone()]))
            }
            (None, Some(_sending)) => Audience::Sites(BTreeSet::from([network.central.clone()])),
            (None, None) => Audience::RemoteSites,
        },
    };
    Ok(audience)
}

/// Store data goes to every site holding a full copy of the store; a transfer half also to the
/// other store's site; a dispensary's stock only when it includes transactions in sync; a new
/// user only to the central server.
fn store_audience(
    network: &Network,
    table: &TableDef,
    keys: &RecordKeys,
    store: &StoreId,
    op: &Op,
) -> Result<Audience, Refusal> {
    let info = network.stores.get(store).ok_or_else(|| Refusal::UnknownStore(store.clone()))?;
    if table.has(Special::DispensaryStock) && info.dispensary && !info.include_transactions_in_sync {
        return Ok(Audience::Nobody);
    }
    if table.has(Special::NewRecordsToCentral) && *op == Op::Create {
        return Ok(Audience::Sites(BTreeSet::from([network.central.clone()])));
    }
    let mut sites = network.store_holders(store);
    if table.has(Special::Transfer) {
        if let Some(other_site) = keys.other_store.as_ref().and_then(|o| network.active_site(o)) {
            if network.sync_type(store, other_site) != crate::network::SyncType::None {
                sites.insert(other_site.clone());
            }
        }
    }
    Ok(Audience::Sites(sites))
}
