//! `outpost rules`: the registry as a person reads it.

use model::describe::{edited_on, received_by, routed_by};
use model::registry;
use std::fmt::Write;

pub fn render(table: Option<&str>) -> Result<String, String> {
    let registry = registry();
    let mut out = String::new();
    match table {
        Some(name) => {
            let (def, entry) = registry
                .table(name)
                .ok_or_else(|| format!("`{name}` is not a synced table; `outpost rules` lists them all"))?;
            let _ = writeln!(out, "table:        {}", def.name);
            let _ = writeln!(out, "data type:    {}", entry.data_type);
            let _ = writeln!(out, "edited on:    {}", edited_on(entry, def));
            let _ = writeln!(out, "received by:  {}", received_by(entry, def));
            let _ = writeln!(out, "routed by:    {}", routed_by(entry, def));
            let _ = writeln!(out, "seeds row:    {}", entry.data);
            if !entry.notes.is_empty() {
                let _ = writeln!(out, "notes:        {}", entry.notes);
            }
            for (variant, when) in registry.variants(name) {
                let _ = writeln!(
                    out,
                    "variant:      when {when:?}: {} data, edited on {} (\"{}\")",
                    variant.data_type,
                    variant.editor.label(),
                    variant.data
                );
            }
        }
        None => {
            let _ = writeln!(out, "{:<26} {:<14} {:<52} received by", "table", "data type", "edited on");
            for (def, entry) in registry.tables() {
                let _ = writeln!(
                    out,
                    "{:<26} {:<14} {:<52} {}",
                    def.name,
                    entry.data_type.label(),
                    edited_on(entry, def),
                    received_by(entry, def)
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn items_are_edited_on_the_primary_and_reach_every_site() {
        let text = render(Some("item")).expect("item is a table");
        assert!(text.contains("data type:    Central\n"), "{text}");
        assert!(text.contains("edited on:    the primary server\n"), "{text}");
        assert!(text.contains("received by:  every site\n"), "{text}");
        assert!(text.contains("Merging of items"), "the merge variant is listed: {text}");
    }

    #[test]
    fn a_prescription_says_what_routes_it_and_where_it_goes_by_default() {
        let text = render(Some("prescription")).expect("prescription is a table");
        assert!(text.contains("routed by:    `patient_id` (its patient) and `store_id`"), "{text}");
        assert!(
            text.contains(
                "received by:  the central server and every site holding a collector copy of the prescription's store"
            ),
            "the default is the store's sites, not the patient's: {text}"
        );
    }

    #[test]
    fn an_unknown_table_is_a_clear_error() {
        let err = render(Some("itemz")).expect_err("not a table");
        assert!(err.contains("`itemz` is not a synced table"), "{err}");
    }

    #[test]
    fn every_table_is_listed() {
        let text = render(None).expect("renders");
        for (def, _) in model::registry().tables() {
            assert!(text.lines().any(|l| l.starts_with(&format!("{} ", def.name))), "{} missing", def.name);
        }
    }
}
