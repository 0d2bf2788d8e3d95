//! `outpost demo` (the README's first command) runs whole, and shows what it says it shows: a
//! patient moving to another home store, a backfill after a store becomes visible, and three
//! transfers arriving (a stock transfer, a mobile requisition, an internal requisition).

mod common;

use common::{outpost, run};

#[test]
fn the_demo_moves_a_patient_backfills_a_new_collector_and_makes_three_transfers() {
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
    // The transfers, each arriving where it should, numbered there.
    for arrived in [
        "south: supplier invoice `transfer-1:received` arrived on hold; serial -1 replaced by ",
        "north: log message back: supplier invoice `transfer-1:received` made in store `south-clinic`",
        "north: customer requisition `request-1:received` arrived (status new)",
        "east: supplier invoice `fill-1:received` arrived for requisition `request-1`; serial -1 replaced by 1",
        "north: customer invoice `order-1:received` arrived to fill it; serial -1 replaced by ",
        "south: goods received `order-1:received:received` arrived; order line `order-1-1` received 80.0 of 80",
    ] {
        assert!(said.contains(arrived), "the demo says `{arrived}`:\n{said}");
    }
}
