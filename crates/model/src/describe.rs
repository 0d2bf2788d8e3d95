//! The rules in words, for `outpost rules` and the dashboard: a person setting up a network
//! asks "why did this record not reach that site?" and reads the answer here.

use crate::registry::{DataType, Editor, Entry, Scope, Special, TableDef};

/// Where records of this entry may be edited, in words.
pub fn edited_on(entry: &Entry, table: &TableDef) -> String {
    let base = match (entry.editor, entry.data_type) {
        (Editor::Primary, _) => "the primary server",
        (Editor::Central, _) => "the central server",
        (Editor::StoreSite, DataType::Message) => "created on any site, never edited",
        (Editor::StoreSite, DataType::Patient) if table.has(Special::Prescription) => {
            "the site where the prescription's store is active"
        }
        (Editor::StoreSite, DataType::Patient) => "the site where the patient's home store is active",
        (Editor::StoreSite, _) => "the site where its store is active",
        (Editor::AnySite, _) => "any site",
    };
    let mut text = base.to_owned();
    if table.has(Special::AddedAnywhere) {
        text += " (new records may be added on any site)";
    }
    if table.has(Special::Repeat) {
        text += " (with the repeats preference: any site where the patient is visible)";
    }
    if table.has(Special::PatientMove) {
        text += "; the old home site only hands the patient over";
    }
    if table.has(Special::StoreMove) {
        text += "; the store's old site only hands the store over";
    }
    if table.has(Special::PrimaryMove) {
        text += "; the old primary only hands over";
    }
    text
}

/// Which sites receive changes to records of this entry, in words.
pub fn received_by(entry: &Entry, table: &TableDef) -> String {
    let mut text = match entry.data_type {
        DataType::Central if table.has(Special::DispensaryCentral) => {
            "the central server and sites with an active dispensary store".to_owned()
        }
        DataType::Central => "every site".to_owned(),
        DataType::CentralStore => "sites where the store is visible (sync type not none)".to_owned(),
        DataType::Store => "the central server and every site holding a collector copy of the store".to_owned(),
        DataType::Patient if table.has(Special::Prescription) => {
            "the central server and every site holding a collector copy of the prescription's store".to_owned()
        }
        DataType::Patient => "sites where the patient is visible, and the central server".to_owned(),
        DataType::Name => "sites where the name is visible, and the central server".to_owned(),
        DataType::Local => "nobody: it stays on the site that wrote it".to_owned(),
        DataType::Sync => "nobody directly: it drives routing on the central server".to_owned(),
        DataType::Message => {
            "the receiving store's site; with only a sending store, the central server; with neither, every remote site"
                .to_owned()
        }
    };
    if table.has(Special::Transfer) {
        text += "; a transfer half also reaches the other store's site";
    }
    if table.has(Special::DispensaryStock) {
        text += "; a dispensary store's stay on its site unless it includes transactions in sync (off by default)";
    }
    if table.has(Special::NewRecordsToCentral) {
        text = "new records: the central server only; later edits stay local".to_owned();
    }
    if table.has(Special::Prescription) {
        text += "; with the prescriptions preference, also every site where the patient is visible";
    }
    if table.has(Special::PatientMove) {
        text = "the old and the new home store's sites, sites where the patient is visible, and the central server"
            .to_owned();
    }
    text
}

/// The fields of a record that decide where it goes, in words (a person otherwise learns them
/// only from refusals).
pub fn routed_by(entry: &Entry, table: &TableDef) -> String {
    let mut text = match table.scope {
        Scope::Global if matches!(entry.data_type, DataType::Local | DataType::Sync) => {
            "no field: it does not travel".to_owned()
        }
        Scope::Global => "no field: the same record everywhere".to_owned(),
        Scope::Store("id") => "its own id (the store)".to_owned(),
        Scope::Store(field) => format!("`{field}` (its store)"),
        Scope::Name(field) => format!("`{field}` (its name)"),
        Scope::Patient("id") => {
            "its own id (the patient or prescriber) and `home_store_id` (its home store)".to_owned()
        }
        Scope::Patient(field) => format!("`{field}` (its patient) and `store_id` (the store it is written in)"),
        Scope::Message => "`receiving_store_id` and `sending_store_id`".to_owned(),
    };
    if table.has(Special::Transfer) {
        text += "; `other_store_id` (the other store of a transfer)";
    }
    if table.has(Special::PatientMove) {
        text = "`patient_id` (the patient, whose home store is the old one until the move completes) and `to_store_id` (the new home store)".to_owned();
    }
    text
}
