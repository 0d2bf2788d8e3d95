//! The data-type registry: the seeds' table "Data / Type / Editable / Notes", as data.
//!
//! Each [`Entry`] is one row of that table (plus one engine row for sync data). An entry either
//! *owns* synced tables, or describes a *variant* of tables owned elsewhere (merges, centralised
//! procurement, new records that travel differently from later edits). `authority` and
//! `recipients` read nothing but this table and the network.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

/// Who may edit a record and who receives it (the seeds' "Type" column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DataType {
    Central,
    CentralStore,
    Store,
    Patient,
    Name,
    Local,
    Sync,
    Message,
}

impl DataType {
    /// The spelling the seeds use.
    pub fn label(self) -> &'static str {
        match self {
            DataType::Central => "Central",
            DataType::CentralStore => "Central store",
            DataType::Store => "Store",
            DataType::Patient => "Patient",
            DataType::Name => "Name",
            DataType::Local => "Local",
            DataType::Sync => "Sync",
            DataType::Message => "Message",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where a record may be edited (the seeds' "Editable" column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Editor {
    /// The primary server (the central server, or a remote site in mirrored sync).
    Primary,
    /// The central (sync) server.
    Central,
    /// The site where the record's store (or the patient's home store) is active.
    StoreSite,
    /// Any site; the record never leaves it.
    AnySite,
}

impl Editor {
    /// The spelling the seeds use.
    pub fn label(self) -> &'static str {
        match self {
            Editor::Primary => "Primary",
            Editor::Central => "Central",
            Editor::StoreSite => "Store",
            Editor::AnySite => "Local",
        }
    }
}

/// The field of a record that says which store, name or patient it belongs to: the key that
/// decides both who edits it and who receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Scope {
    /// Not tied to a store: central data, local data.
    Global,
    /// Belongs to the store in this field (`"id"` for the store record itself).
    Store(&'static str),
    /// Belongs to the name in this field; travels where that name is visible.
    Name(&'static str),
    /// Belongs to the patient (or prescriber) in this field (`"id"` for the patient itself).
    Patient(&'static str),
    /// Routed by `sending_store_id` / `receiving_store_id`.
    Message,
}

/// The special cases of the seeds' notes and sections, each a flag on a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Special {
    /// Abbreviations, item directions, diagnoses, insurance providers, patient event types:
    /// central data received only by sites with at least one active dispensary store.
    DispensaryCentral,
    /// Transactions, prescriptions, stock lines and stocktakes of a dispensary store: they leave
    /// the store's site only when its *Include transactions in sync* preference is on.
    DispensaryStock,
    /// Barcodes: may be *added* on any site; edits and duplicate merges happen on the primary.
    AddedAnywhere,
    /// New users: created on the store's site and sent to the central server only; later edits
    /// of existing users are local.
    NewRecordsToCentral,
    /// A transfer half: also reaches the site where the other store (`other_store_id`) is active.
    Transfer,
    /// A transfer record that can be the responding half of one: the central server may make it
    /// in any store, as it routes the transfer (and never edit it after).
    RespondingHalf,
    /// Prescriptions: a preference sends them to every site where the patient is visible.
    Prescription,
    /// Repeats: a preference allows processing on every site where the patient is visible.
    Repeat,
    /// Name and prescriber visibility: a *new* row for a patient may be made on the patient's
    /// home site and is sent to the central server.
    NewPatientVisibility,
    /// A patient's (or prescriber's) move to another home store: made on the central server,
    /// handed over by the old home site on its next sync, completed by the central server.
    PatientMove,
    /// A store's move to another site: made on the central server, handed over by the old
    /// site on its next sync (the one edit it may make), completed by the central server.
    StoreMove,
    /// A change of primary: made on the central server, handed over by the old primary on its
    /// next sync, completed by the central server.
    PrimaryMove,
}

/// A synced table and how its records are routed.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TableDef {
    pub name: &'static str,
    pub scope: Scope,
    pub specials: &'static [Special],
}

impl TableDef {
    pub fn has(&self, special: Special) -> bool {
        self.specials.contains(&special)
    }
}

/// When a variant entry replaces the owning entry's rule for a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Condition {
    /// The change is a merge (`merge-into`).
    Merge,
    /// The primary's *centralised procurement* preference is on.
    CentralisedProcurement,
    /// The primary's *centralised payments* preference is on.
    CentralisedPayments,
    /// The change creates a visibility row for a patient or prescriber.
    NewPatientVisibility,
    /// The change updates (or deletes) an existing record.
    ExistingRecord,
}

/// Changes to tables owned by other entries that follow this entry when `when` holds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Variant {
    pub tables: &'static [&'static str],
    pub when: Condition,
}

/// One row of the seeds' data-type table.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Entry {
    /// The seeds' "Data" column, word for word.
    pub data: &'static str,
    pub data_type: DataType,
    pub editor: Editor,
    /// The tables this entry owns.
    pub tables: &'static [TableDef],
    /// The tables of other entries whose changes follow this entry under a condition.
    pub variant: Option<Variant>,
    /// Why this entry is shaped as it is (the seeds' notes, and our reading of them).
    pub notes: &'static str,
    /// False for the engine's own rows that the seeds' table does not list.
    pub in_seeds: bool,
}

/// The registry: every entry, indexed by table (every write looks its table up).
#[derive(Debug)]
pub struct Registry {
    pub entries: &'static [Entry],
    by_table: HashMap<&'static str, TableRules>,
}

/// What the registry knows of one table: its definition, its owner, its variants.
#[derive(Debug)]
struct TableRules {
    table: &'static TableDef,
    owner: &'static Entry,
    variants: Vec<(&'static Entry, Condition)>,
}

/// The registry built from the seeds (built once, shared by every caller).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::new(ENTRIES))
}

impl Registry {
    fn new(entries: &'static [Entry]) -> Registry {
        let mut by_table = HashMap::new();
        for entry in entries {
            for table in entry.tables {
                by_table.insert(table.name, TableRules { table, owner: entry, variants: Vec::new() });
            }
        }
        for entry in entries {
            if let Some(Variant { tables, when }) = entry.variant {
                for name in tables {
                    if let Some(rules) = by_table.get_mut(name) {
                        rules.variants.push((entry, when));
                    }
                }
            }
        }
        Registry { entries, by_table }
    }

    /// The table definition and the entry that owns it.
    pub fn table(&self, name: &str) -> Option<(&'static TableDef, &'static Entry)> {
        self.by_table.get(name).map(|r| (r.table, r.owner))
    }

    /// The variant entries that may apply to a table.
    pub fn variants<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'static Entry, Condition)> + 'a {
        self.by_table.get(name).into_iter().flat_map(|r| r.variants.iter().copied())
    }

    /// Every synced table, in registry order.
    pub fn tables(&self) -> impl Iterator<Item = (&'static TableDef, &'static Entry)> + '_ {
        self.entries.iter().flat_map(|entry| entry.tables.iter().map(move |t| (t, entry)))
    }

    /// The entry for a row of the seeds' table, by its "Data" text.
    pub fn entry(&self, data: &str) -> Option<&'static Entry> {
        self.entries.iter().find(|e| e.data == data)
    }
}

const fn t(name: &'static str, scope: Scope) -> TableDef {
    TableDef { name, scope, specials: &[] }
}
const fn ts(name: &'static str, scope: Scope, specials: &'static [Special]) -> TableDef {
    TableDef { name, scope, specials }
}
const fn owns(
    data: &'static str,
    data_type: DataType,
    editor: Editor,
    tables: &'static [TableDef],
    notes: &'static str,
) -> Entry {
    Entry { data, data_type, editor, tables, variant: None, notes, in_seeds: true }
}
const fn variant(
    data: &'static str,
    data_type: DataType,
    editor: Editor,
    tables: &'static [&'static str],
    when: Condition,
    notes: &'static str,
) -> Entry {
    Entry { data, data_type, editor, tables: &[], variant: Some(Variant { tables, when }), notes, in_seeds: true }
}

use Condition as C;
use DataType as D;
use Editor as E;
use Scope::{Global, Message as Msg, Name as N, Patient as P, Store as S};
use Special as X;

const CENTRAL_ONES: [Entry; 24] = [
    owns(
        "Items",
        D::Central,
        E::Primary,
        &[t("item", Global), t("item_category", Global), t("unit", Global), t("bom_master", Global)],
        "Including item-related data e.g. item categories, units, BOM masters",
    ),
    owns(
        "Names (except patients)",
        D::Central,
        E::Primary,
        &[t("name", Global), t("name_category", Global), t("contact", Global)],
        "Including name-related data e.g. name categories, contacts",
    ),
    variant(
        "Merging of items, units and names (except patients)",
        D::Central,
        E::Primary,
        &["item", "unit", "name"],
        C::Merge,
        "A merge rewrites every reference on every site.",
    ),
    owns("Groups and departments", D::Central, E::Primary, &[t("item_group", Global), t("department", Global)], ""),
    owns(
        "Item master lists and programmes",
        D::Central,
        E::Primary,
        &[t("master_list", Global), t("master_list_line", Global), t("program", Global)],
        "",
    ),
    owns(
        "Budgets, periods and accounts",
        D::Central,
        E::Primary,
        &[t("budget", Global), t("period", Global), t("account", Global)],
        "",
    ),
    owns(
        "Transaction categories and payment types",
        D::Central,
        E::Primary,
        &[t("transaction_category", Global), t("payment_type", Global)],
        "",
    ),
    owns("Purchase order categories", D::Central, E::Primary, &[t("purchase_order_category", Global)], ""),
    owns("Custom data", D::Central, E::Primary, &[t("custom_data", Global)], ""),
    owns(
        "Barcodes",
        D::Central,
        E::Primary,
        &[ts("barcode", Global, &[X::AddedAnywhere])],
        "Can be added on any site; duplicates are automatically merged when synced to the primary",
    ),
    owns("Currencies", D::Central, E::Primary, &[t("currency", Global)], ""),
    owns("Options and properties", D::Central, E::Primary, &[t("option", Global), t("property", Global)], ""),
    owns("Location types", D::Central, E::Primary, &[t("location_type", Global)], ""),
    owns("Regimens and indicators", D::Central, E::Primary, &[t("regimen", Global), t("indicator", Global)], ""),
    owns(
        "Drug interactions and warnings",
        D::Central,
        E::Primary,
        &[t("drug_interaction", Global), t("warning", Global)],
        "",
    ),
    owns(
        "Vaccinators and vaccine settings",
        D::Central,
        E::Primary,
        &[t("vaccinator", Global), t("vaccine_setting", Global)],
        "",
    ),
    owns(
        "Custom reports",
        D::Central,
        E::Primary,
        &[t("custom_report", Global)],
        "Standard reports are regenerated on each upgrade",
    ),
    owns("Asset settings", D::Central, E::Primary, &[t("asset_type", Global), t("asset_status", Global)], ""),
    owns("Regions", D::Central, E::Primary, &[t("region", Global)], ""),
    owns(
        "Incoterms and tender conditions",
        D::Central,
        E::Primary,
        &[t("incoterm", Global), t("tender_condition", Global)],
        "",
    ),
    owns(
        "Abbreviations and item directions",
        D::Central,
        E::Primary,
        &[ts("abbreviation", Global, &[X::DispensaryCentral]), ts("item_direction", Global, &[X::DispensaryCentral])],
        "Dispensary data",
    ),
    owns("Diagnoses", D::Central, E::Primary, &[ts("diagnosis", Global, &[X::DispensaryCentral])], "Dispensary data"),
    owns(
        "Insurance providers",
        D::Central,
        E::Primary,
        &[ts("insurance_provider", Global, &[X::DispensaryCentral])],
        "Dispensary data",
    ),
    owns(
        "Patient event types",
        D::Central,
        E::Primary,
        &[ts("patient_event_type", Global, &[X::DispensaryCentral])],
        "Dispensary data",
    ),
];

const STORE_CENTRAL_ONES: [Entry; 13] = [
    variant("Purchase orders (centralised)", D::CentralStore, E::Primary, &["purchase_order", "purchase_order_line"], C::CentralisedProcurement, "With centralised procurement on, purchase orders of any store are entered on the primary."),
    variant("Tenders and quotes (centralised)", D::CentralStore, E::Primary, &["tender", "tender_line", "quote"], C::CentralisedProcurement, ""),
    variant("Payments (centralised)", D::CentralStore, E::Primary, &["payment"], C::CentralisedPayments, ""),
    owns("Visibility of items", D::CentralStore, E::Primary, &[t("item_visibility", S("store_id"))], "Item visibility in a store is edited on the primary."),
    owns("Visibility of names (including existing patients)", D::CentralStore, E::Central, &[ts("name_visibility", S("store_id"), &[X::NewPatientVisibility])], "If store A is visible in store B, B is visible in A."),
    owns("Visibility of existing prescribers", D::CentralStore, E::Central, &[ts("prescriber_visibility", S("store_id"), &[X::NewPatientVisibility])], ""),
    owns("Stores and non sync-related store preferences", D::CentralStore, E::Central, &[t("store", S("id")), t("store_preference", S("store_id")), t("store_tag", S("store_id"))], "Revision 000 (up to v7.13) edited the store record on the primary; both are the same server unless mirrored. It travels to every site where the store's sync type is not none."),
    owns("Sites and sync-related preferences", D::Central, E::Central, &[t("site", Global), t("store_sync", Global)], "Changes on the central server indirectly update related records on remote sites"),
    owns("Dashboard reports", D::Central, E::Central, &[t("dashboard_report", Global)], ""),
    owns("Authorisers and authorisation", D::Central, E::Central, &[t("authoriser", Global), t("authorisation", Global)], ""),
    owns("Messages", D::Message, E::StoreSite, &[t("message", Msg)], "Depends on sending and/or receiving store"),
    variant("Visibility of new patients and prescribers", D::Patient, E::StoreSite, &["name_visibility", "prescriber_visibility"], C::NewPatientVisibility, "New visibility records sent to central server"),
    owns("Patients and prescribers", D::Patient, E::StoreSite, &[t("patient", P("id")), t("prescriber", P("id")), t("patient_medication_record", P("patient_id")), t("insurance_policy", P("patient_id"))], "Including patient-related data e.g. PMR, insurance policies"),
];

const PATIENT_NAME_ONES: [Entry; 6] = [
    variant(
        "Merging of patients and prescribers",
        D::Patient,
        E::StoreSite,
        &["patient", "prescriber"],
        C::Merge,
        "Both records must have the same home store",
    ),
    owns("Patient events", D::Patient, E::StoreSite, &[t("patient_event", P("patient_id"))], "Dispensary data"),
    owns(
        "Repeats",
        D::Patient,
        E::StoreSite,
        &[ts("repeat", P("patient_id"), &[X::Repeat])],
        "Dispensary data; preference can be set to allow processing on all sites where the patient is visible",
    ),
    owns(
        "Prescriptions",
        D::Patient,
        E::StoreSite,
        &[
            ts("prescription", P("patient_id"), &[X::Prescription, X::DispensaryStock]),
            ts("prescription_line", P("patient_id"), &[X::Prescription, X::DispensaryStock]),
        ],
        "Preference can be set to sync to all sites where the patient is visible",
    ),
    owns(
        "Adverse drug reactions",
        D::Patient,
        E::StoreSite,
        &[t("adverse_drug_reaction", P("patient_id"))],
        "Dispensary data",
    ),
    owns(
        "Name-related tags, budgets and master-lists",
        D::Name,
        E::Primary,
        &[t("name_tag", N("name_id")), t("name_budget", N("name_id")), t("name_master_list", N("name_id"))],
        "",
    ),
];

const STORE_ONES: [Entry; 20] = [
    owns("Name notes", D::Store, E::StoreSite, &[t("name_note", S("store_id"))], ""),
    owns(
        "Customer stock history and requisitions",
        D::Store,
        E::StoreSite,
        &[
            t("customer_stock_history", S("store_id")),
            ts("requisition", S("store_id"), &[X::Transfer, X::RespondingHalf]),
            ts("requisition_line", S("store_id"), &[X::Transfer, X::RespondingHalf]),
        ],
        "",
    ),
    owns("Locations", D::Store, E::StoreSite, &[t("location", S("store_id"))], ""),
    variant(
        "Merging locations",
        D::Store,
        E::StoreSite,
        &["location"],
        C::Merge,
        "Both locations belong to the same store.",
    ),
    owns(
        "Stock and replenishments",
        D::Store,
        E::StoreSite,
        &[ts("stock_line", S("store_id"), &[X::DispensaryStock]), t("replenishment", S("store_id"))],
        "",
    ),
    owns(
        "Stocktakes and inventory adjustments",
        D::Store,
        E::StoreSite,
        &[
            ts("stocktake", S("store_id"), &[X::DispensaryStock]),
            ts("stocktake_line", S("store_id"), &[X::DispensaryStock]),
            t("inventory_adjustment", S("store_id")),
        ],
        "",
    ),
    owns("AMC projections", D::Store, E::StoreSite, &[t("amc_projection", S("store_id"))], ""),
    owns(
        "Transactions (but not prescriptions)",
        D::Store,
        E::StoreSite,
        &[
            ts("transaction", S("store_id"), &[X::Transfer, X::RespondingHalf, X::DispensaryStock]),
            ts("transaction_line", S("store_id"), &[X::Transfer, X::RespondingHalf, X::DispensaryStock]),
            ts("backorder", S("store_id"), &[X::DispensaryStock]),
            ts("build", S("store_id"), &[X::DispensaryStock]),
        ],
        "Including other transaction-related data e.g. backorders, builds",
    ),
    owns("Transaction notes", D::Store, E::StoreSite, &[t("transaction_note", S("store_id"))], ""),
    owns("Item notes", D::Store, E::StoreSite, &[t("item_note", S("store_id"))], ""),
    owns("Boxes", D::Store, E::StoreSite, &[t("box", S("store_id"))], ""),
    owns(
        "Goods received",
        D::Store,
        E::StoreSite,
        &[
            ts("goods_received", S("store_id"), &[X::Transfer, X::RespondingHalf]),
            ts("goods_received_line", S("store_id"), &[X::Transfer, X::RespondingHalf]),
        ],
        "",
    ),
    owns("Indicator values", D::Store, E::StoreSite, &[t("indicator_value", S("store_id"))], ""),
    owns("Vaccine monitors/sensors", D::Store, E::StoreSite, &[t("sensor", S("store_id"))], ""),
    owns("Assets", D::Store, E::StoreSite, &[t("asset", S("store_id"))], ""),
    owns("Store credentials", D::Store, E::StoreSite, &[t("store_credential", S("store_id"))], ""),
    owns(
        "Tenders and quotes",
        D::Store,
        E::StoreSite,
        &[t("tender", S("store_id")), t("tender_line", S("store_id")), t("quote", S("store_id"))],
        "Except for centralised procurement",
    ),
    owns(
        "Purchase orders",
        D::Store,
        E::StoreSite,
        &[
            ts("purchase_order", S("store_id"), &[X::Transfer]),
            ts("purchase_order_line", S("store_id"), &[X::Transfer]),
        ],
        "Except for centralised procurement or supervisor-mode ordering",
    ),
    owns("Payments", D::Store, E::StoreSite, &[t("payment", S("store_id"))], "Except for centralised payments"),
    owns(
        "New users",
        D::Store,
        E::StoreSite,
        &[ts("user", S("store_id"), &[X::NewRecordsToCentral])],
        "New user records sent to central server",
    ),
];

const LOCAL_ONES: [Entry; 14] = [
    Entry { data: "User licenses and existing users", data_type: D::Local, editor: E::AnySite, tables: &[t("user_licence", Global)], variant: Some(Variant { tables: &["user"], when: C::ExistingRecord }), notes: "Edits of an existing user stay on the site that made them.", in_seeds: true },
    owns("User permissions", D::Local, E::AnySite, &[t("user_permission", Global)], ""),
    owns("Preferences (non-store)", D::Local, E::AnySite, &[t("preference", Global)], "Except for a few special cases which are explicitly synced"),
    owns("Reference documents", D::Local, E::AnySite, &[t("reference_document", Global)], ""),
    owns("HIS", D::Local, E::AnySite, &[t("his_record", Global)], ""),
    owns("Drug registration", D::Local, E::AnySite, &[t("drug_registration", Global)], ""),
    owns("Labels", D::Local, E::AnySite, &[t("label", Global)], ""),
    owns("Logs", D::Local, E::AnySite, &[t("log", Global)], ""),
    owns("Reminders", D::Local, E::AnySite, &[t("reminder", Global)], ""),
    Entry { data: "Local procurement", data_type: D::Store, editor: E::StoreSite, tables: &[t("local_procurement", S("store_id"))], variant: None, notes: "Not in the seeds' table: the seeds let a satellite switch centralised procurement off locally, for its own stores. A record per store, made on the store's site; while it stands, that store's purchase orders, tenders and quotes are entered on its site, not on the primary.", in_seeds: false },
    Entry { data: "Patient moves", data_type: D::Patient, editor: E::Central, tables: &[ts("patient_move", P("patient_id"), &[X::PatientMove])], variant: None, notes: "Not in the seeds' table: the seeds' special message to the current home store's site when a patient is moved to another home store on the central server. The old home site hands the patient over (the one edit it may make); the central server then completes the move.", in_seeds: false },
    Entry { data: "Store moves", data_type: D::Central, editor: E::Central, tables: &[ts("store_move", S("id"), &[X::StoreMove])], variant: None, notes: "Not in the seeds' table: the seeds move a store between sites by hand (synchronise both sites, stop data entry, change sync types on the central server). Made on the central server and known everywhere; the old site hands the store over after pushing what it wrote in it, the store is read-only there from then on, and the central server then makes it active on the new site.", in_seeds: false },
    Entry { data: "Primary changes", data_type: D::Central, editor: E::Central, tables: &[ts("primary_move", Global, &[X::PrimaryMove])], variant: None, notes: "Not in the seeds' table: the seeds change the primary (turning a network into a mirrored one) by hand. Made on the central server and known everywhere; the old primary hands over after pushing its edits of central data and edits none from then on; the central server then makes the new site the primary, so that no two sites may edit central data at once.", in_seeds: false },
    Entry { data: "Site credentials and sync state", data_type: D::Sync, editor: E::Central, tables: &[t("site_credential", Global)], variant: None, notes: "Not in the seeds' table: the engine's own data. Edited on the central server, never sent; it drives routing.", in_seeds: false },
];

const fn concat_entries() -> [Entry; 77] {
    let parts: [&[Entry]; 5] = [&CENTRAL_ONES, &STORE_CENTRAL_ONES, &PATIENT_NAME_ONES, &STORE_ONES, &LOCAL_ONES];
    let mut out = [CENTRAL_ONES[0]; 77];
    let mut n = 0;
    let mut p = 0;
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            out[n] = parts[p][i];
            n += 1;
            i += 1;
        }
        p += 1;
    }
    assert!(n == 77, "the registry's parts must add up to its length");
    out
}

static ENTRIES: &[Entry] = &concat_entries();
