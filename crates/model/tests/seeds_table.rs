//! The seeds' data-type table ("Data / Type / Editable / Notes", transcribed in
//! `seeds-table.tsv`) checked row by row against the registry, plus the registry's own
//! consistency: unique table names, variants that point at owned tables, no empty entries.

use outpost_model::{registry, Special};
use std::collections::{BTreeMap, BTreeSet};

const TSV_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/seeds-table.tsv");

/// One row of the seeds' table.
#[derive(Debug)]
struct Row {
    line: usize,
    data: String,
    data_type: String,
    editable: String,
    notes: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(TSV_PATH).unwrap_or_else(|e| panic!("reading {TSV_PATH}: {e}"));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert!(
                (3..=4).contains(&cols.len()),
                "seeds-table.tsv line {}: expected data, type, editable[, notes], got {cols:?}",
                i + 1
            );
            Row {
                line: i + 1,
                data: cols[0].to_owned(),
                data_type: cols[1].to_owned(),
                editable: cols[2].to_owned(),
                notes: cols.get(3).copied().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

#[test]
fn the_seeds_table_has_72_rows() {
    assert_eq!(rows().len(), 72);
}

#[test]
fn no_row_of_the_seeds_table_appears_twice() {
    let mut seen = BTreeMap::new();
    for row in rows() {
        if let Some(first) = seen.insert(row.data.clone(), row.line) {
            panic!("\"{}\" is on line {first} and again on line {}", row.data, row.line);
        }
    }
}

#[test]
fn every_row_of_the_seeds_table_is_in_the_registry_with_its_type_and_editor() {
    let registry = registry();
    let mut mismatches = Vec::new();
    for row in rows() {
        let Some(entry) = registry.entry(&row.data) else {
            mismatches.push(format!("line {}: \"{}\" has no registry entry", row.line, row.data));
            continue;
        };
        if !entry.in_seeds {
            mismatches.push(format!("line {}: \"{}\" is marked in_seeds = false", row.line, row.data));
        }
        if entry.data_type.label() != row.data_type {
            mismatches.push(format!(
                "line {}: \"{}\" has type \"{}\" in the seeds but \"{}\" in the registry",
                row.line,
                row.data,
                row.data_type,
                entry.data_type.label()
            ));
        }
        if entry.editor.label() != row.editable {
            mismatches.push(format!(
                "line {}: \"{}\" is editable on \"{}\" in the seeds but \"{}\" in the registry",
                row.line,
                row.data,
                row.editable,
                entry.editor.label()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{} mismatch(es):\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn every_seeds_entry_of_the_registry_has_a_row_in_the_seeds_table() {
    let listed: BTreeSet<String> = rows().into_iter().map(|r| r.data).collect();
    let missing: Vec<&str> =
        registry().entries.iter().filter(|e| e.in_seeds && !listed.contains(e.data)).map(|e| e.data).collect();
    assert!(missing.is_empty(), "registry entries marked in_seeds but not in seeds-table.tsv: {missing:?}");
}

#[test]
fn the_registry_keeps_the_notes_of_the_seeds() {
    let registry = registry();
    let mut lost = Vec::new();
    for row in rows().into_iter().filter(|r| !r.notes.is_empty()) {
        if let Some(entry) = registry.entry(&row.data) {
            if !entry.notes.contains(&row.notes) {
                lost.push(format!(
                    "line {}: \"{}\" notes {:?} but the registry says {:?}",
                    row.line, row.data, row.notes, entry.notes
                ));
            }
        }
    }
    assert!(lost.is_empty(), "{}", lost.join("\n"));
}

#[test]
fn every_table_name_in_the_registry_is_unique() {
    let mut owners: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (table, entry) in registry().tables() {
        owners.entry(table.name).or_default().push(entry.data);
    }
    let duplicates: Vec<String> =
        owners.iter().filter(|(_, o)| o.len() > 1).map(|(t, o)| format!("`{t}` is owned by {o:?}")).collect();
    assert!(duplicates.is_empty(), "{}", duplicates.join("\n"));
}

#[test]
fn every_variant_names_tables_that_some_entry_owns() {
    let registry = registry();
    let mut dangling = Vec::new();
    for entry in registry.entries {
        let Some(variant) = entry.variant else { continue };
        assert!(!variant.tables.is_empty(), "\"{}\" is a variant of no table", entry.data);
        for name in variant.tables {
            match registry.table(name) {
                None => dangling.push(format!("\"{}\" names `{name}`, which no entry owns", entry.data)),
                Some((_, owner)) if owner.data == entry.data => {
                    dangling.push(format!("\"{}\" is a variant of its own table `{name}`", entry.data))
                }
                Some(_) => {}
            }
        }
    }
    assert!(dangling.is_empty(), "{}", dangling.join("\n"));
}

#[test]
fn every_seeds_entry_owns_a_table_or_is_a_variant() {
    let empty: Vec<&str> = registry()
        .entries
        .iter()
        .filter(|e| e.in_seeds && e.tables.is_empty() && e.variant.is_none())
        .map(|e| e.data)
        .collect();
    assert!(empty.is_empty(), "entries that govern no table: {empty:?}");
}

#[test]
fn central_dispensary_data_rows_map_to_tables_flagged_dispensary_central() {
    let registry = registry();
    let dispensary_rows: Vec<Row> =
        rows().into_iter().filter(|r| r.data_type == "Central" && r.notes.contains("Dispensary data")).collect();
    // Abbreviations and item directions, diagnoses, insurance providers, patient event types.
    assert_eq!(dispensary_rows.len(), 4, "{dispensary_rows:#?}");

    let mut flagged_by_rows = BTreeSet::new();
    for row in &dispensary_rows {
        let entry = registry.entry(&row.data).expect("every row has an entry");
        assert!(!entry.tables.is_empty(), "\"{}\" owns no table", row.data);
        for table in entry.tables {
            assert!(
                table.has(Special::DispensaryCentral),
                "`{}` of \"{}\" is not DispensaryCentral",
                table.name,
                row.data
            );
            flagged_by_rows.insert(table.name);
        }
    }

    // And nothing else is: the flag means exactly "central dispensary data".
    let flagged: BTreeSet<&str> =
        registry.tables().filter(|(t, _)| t.has(Special::DispensaryCentral)).map(|(t, _)| t.name).collect();
    assert_eq!(flagged, flagged_by_rows);
}
