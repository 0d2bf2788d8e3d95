//! Merges: a record merged into another (two items that are one, a patient entered twice) is
//! gone, and every record that named it names the one it was merged into. That holds on every
//! node that holds either record, and for records that arrive later still naming the merged-away
//! one (a site offline during the merge pushes a stock line of the old item a week later): each
//! node rewrites them as they are written or received, from the merges it knows
//! ([`Network::merged`]).

use crate::ids::RecordId;
use crate::network::Network;
use serde_json::Value;

/// The fields that name a record of another table, and the tables each may name (`name_id`
/// names a name or a patient: patients are names).
pub const REFERENCES: &[(&str, &[&str])] = &[
    ("item_id", &["item"]),
    ("unit_id", &["unit"]),
    ("name_id", &["name", "patient"]),
    ("patient_id", &["patient"]),
    ("prescriber_id", &["prescriber"]),
    ("location_id", &["location"]),
    ("barcode_id", &["barcode"]),
];

/// The fields that may name a record of `table`.
pub fn fields_naming(table: &str) -> impl Iterator<Item = &'static str> + '_ {
    REFERENCES.iter().filter(move |(_, tables)| tables.contains(&table)).map(|(field, _)| *field)
}

/// The most merges followed from one id (a merged-into record merged again): a cycle, which
/// the checks prevent, cannot loop.
const MAX_CHAIN: usize = 16;

impl Network {
    /// Where a record of `table` now lives, if it was merged away (following later merges).
    pub fn merged_into(&self, table: &str, id: &str) -> Option<&RecordId> {
        let mut found = None;
        let mut current = id;
        for _ in 0..MAX_CHAIN {
            match self.merged.get(&(table.to_owned(), RecordId::from(current))) {
                Some(into) => {
                    found = Some(into);
                    current = into.as_str();
                }
                None => break,
            }
        }
        found
    }
}

/// Rewrites, in a record's document, every reference to a merged-away record into the record it
/// was merged into. Whether anything changed.
pub fn rewrite_references(network: &Network, doc: &mut Value) -> bool {
    let Some(fields) = doc.as_object_mut() else { return false };
    let mut changed = false;
    for (field, tables) in REFERENCES {
        let Some(Value::String(id)) = fields.get(*field) else { continue };
        if let Some(into) = tables.iter().find_map(|table| network.merged_into(table, id)) {
            fields.insert((*field).to_owned(), Value::String(into.0.clone()));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reference_to_a_merged_record_names_the_record_it_was_merged_into() {
        let mut network = Network::new("central");
        network.merged.insert(("item".into(), RecordId::from("item-old")), RecordId::from("item-mid"));
        network.merged.insert(("item".into(), RecordId::from("item-mid")), RecordId::from("item-new"));
        network.merged.insert(("patient".into(), RecordId::from("pat-2")), RecordId::from("pat-1"));
        let mut line = json!({"item_id": "item-old", "name_id": "pat-2", "location_id": "loc-1"});
        assert!(rewrite_references(&network, &mut line));
        assert_eq!(line, json!({"item_id": "item-new", "name_id": "pat-1", "location_id": "loc-1"}));
        assert!(!rewrite_references(&network, &mut line), "nothing more to rewrite");
        let mut other = json!({"item_id": "pat-2"});
        assert!(!rewrite_references(&network, &mut other), "an item id is not a patient's");
    }
}
