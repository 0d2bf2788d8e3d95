//! `outpost demo` (the README's first command) runs whole, and shows what it says it shows: a
//! patient moving to another home store and a backfill after a store becomes visible.

mod common;

use common::{outpost, run};

#[test]
fn the_demo_moves_a_patient_and_backfills_a_new_collector() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let demo = dir.path().join("demo");
    let out = run("outpost demo", outpost().args(["demo", "--transactions", "20", "--dir"]).arg(&demo)).ok();
    let said = &out.stdout;
    assert!(said.contains("editing an item here is refused, as it should be"), "{said}");
    assert!(said.contains("moves from north-dispensary to south-dispensary (pending until `north` syncs)"), "{said}");
    assert!(said.contains("south: `patient-001` is held here now, home store `south-dispensary`"), "{said}");
    let backfill = said.lines().find(|l| l.starts_with("east: now a collector of north-hospital")).unwrap_or_default();
    let held: u64 = backfill.split_whitespace().nth(7).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(held > 400 + 200 + 20, "east holds the hospital's stock lines and transactions too: {backfill}");
}
