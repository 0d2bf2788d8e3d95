//! Authority and idempotency of a push, between real processes over HTTP on loopback: the
//! central server re-checks every pushed change, keeps what it refuses with a reason on both
//! sides and lets the rest of the batch in; and a batch sent twice changes nothing the second
//! time. The central server runs on each backend (`sqlite::…`, `postgres::…`).

mod common;

use common::{
    change, count, dump, footprint, on_each_backend, record, rows, write_behind_the_checks, Backend, Central, Http,
    Network,
};
use model::Seq;
use protocol::PushRequest;
use serde_json::json;

on_each_backend!(
    a_remote_site_editing_an_item_is_rejected_with_a_reason_on_both_sides_and_the_rest_of_its_batch_lands,
    the_same_push_batch_sent_twice_leaves_the_same_state,
);

fn a_remote_site_editing_an_item_is_rejected_with_a_reason_on_both_sides_and_the_rest_of_its_batch_lands(
    backend: &Backend,
) {
    let network = Network::new(backend, &["north", "south"]);
    let item = json!({"code": "PCM", "name": "Paracetamol 500mg", "unit_id": "unit-tab"});
    network.central.write("item", "item-pcm", &item);
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    assert_eq!(north.get("item", "item-pcm"), Some(item.clone()));

    // The site itself refuses the edit...
    let refused = common::run(
        "site write item",
        &mut north.command(&["write", "item", "item-pcm", &json!({"name": "renamed on north"}).to_string()]),
    )
    .failed();
    assert!(
        refused
            .stderr
            .contains("Items are central data (table `item`): only the primary server (`central`) may edit them"),
        "{}",
        refused.stderr
    );

    // ...so an old or misbehaving site makes it behind the checks, between legitimate writes.
    north.write("stock_line", "sl-1", &json!({"store_id": "store-north", "item_id": "item-pcm", "total_packs": 10}));
    write_behind_the_checks(north, "item", "item-pcm", &json!({"code": "PCM", "name": "renamed on north"}));
    write_behind_the_checks(north, "item", "item-new", &json!({"code": "NEW", "name": "made on north"}));
    north.write("stock_line", "sl-2", &json!({"store_id": "store-north", "item_id": "item-pcm", "total_packs": 20}));
    let before = footprint(&network.central);

    let synced = north.sync();
    assert!(synced.stdout.contains("pushed 2 (2 rejected)"), "{}", synced.stdout);
    assert!(synced.stdout.contains("outpost site rejected"), "the sync points at the reasons: {}", synced.stdout);

    // The site shows what was refused, and why.
    let rejected = north.rejected();
    for id in ["item-pcm", "item-new"] {
        let line = rejected
            .lines()
            .find(|l| l.contains(&format!("item `{id}`")))
            .unwrap_or_else(|| panic!("`site rejected` does not list {id}:\n{rejected}"));
        assert!(line.contains("only the primary server (`central`) may edit them, not site `north`"), "{line}");
    }
    assert!(north.status().contains("rejected changes:  2"), "{}", north.status());

    // So does the central server.
    let central = &network.central;
    let kept = count(
        central,
        "SELECT count(*) FROM rejection WHERE site_id = 'north' AND tbl = 'item' AND record_id IN ('item-pcm', 'item-new')
         AND reason LIKE '%only the primary server (`central`) may edit them%'",
    );
    assert_eq!(kept, 2, "the central server keeps both rejections with their reason");
    let data = count(
        central,
        "SELECT count(*) FROM rejection WHERE record_id = 'item-pcm' AND data LIKE '%renamed on north%'",
    );
    assert_eq!(data, 1, "the refused record is kept, for a person to look at");
    assert!(network.central.status().contains("rejected 2"), "{}", network.central.status());

    // The legitimate records landed; the item did not change; the new item does not exist.
    assert!(record(central, "stock_line", "sl-1").is_some());
    assert!(record(central, "stock_line", "sl-2").is_some());
    assert_eq!(record(central, "item", "item-pcm"), Some(item.clone()));
    assert_eq!(record(central, "item", "item-new"), None);
    let after = footprint(central);
    assert_eq!(after.records, before.records + 2, "two stock lines, nothing else");
    assert_eq!(after.change_log, before.change_log + 2);
    assert_eq!(after.rejections, before.rejections + 2);

    // Nothing of it reaches another site; a second sync does not push or reject anything again.
    south.sync();
    assert_eq!(south.get("item", "item-pcm"), Some(item));
    assert_eq!(south.get("item", "item-new"), None);
    let again = north.sync();
    assert!(again.stdout.contains("pushed 0 (0 rejected)"), "{}", again.stdout);
    assert_eq!(footprint(central), after);
}

fn the_same_push_batch_sent_twice_leaves_the_same_state(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    let http = Http::new(&network.central.url());

    let line = |i: i64| json!({"store_id": "store-north", "item_id": format!("item-{i}"), "total_packs": i});
    let mut changes: Vec<_> =
        (1..=60).map(|i| change(i, "north", "stock_line", &format!("sl-{i}"), &line(i))).collect();
    changes.push(change(61, "north", "item", "item-x", &json!({"name": "not north's to make"})));
    changes.extend((62..=80).map(|i| change(i, "north", "stock_line", &format!("sl-{i}"), &line(i))));
    let batch = PushRequest { after: Seq(0), changes };

    let first = http.push(&north.name, &north.password, &batch).push_response();
    assert_eq!(first.acked, Seq(80));
    assert_eq!(first.applied, 79);
    assert_eq!(first.rejections.len(), 1);
    assert_eq!((first.rejections[0].seq, first.rejections[0].id.as_str()), (Seq(61), "item-x"));
    let state = (dump(central), footprint(central), change_log(central));

    let second = http.push(&north.name, &north.password, &batch).push_response();
    assert_eq!(second.applied, 0, "a resent batch applies nothing");
    assert!(!second.out_of_step, "the same batch again is recognised: its answer was lost");
    assert_eq!(second.acked, first.acked);
    assert_eq!(second.rejections, first.rejections, "and answered again");
    assert_eq!((dump(central), footprint(central), change_log(central)), state, "the central database is unchanged");

    // A batch that overlaps what was acknowledged, but is not the batch applied, applies nothing:
    // a change at or below an acknowledged position is never taken for one already held.
    let line_changes = |from: i64, to: i64| -> Vec<_> {
        (from..=to).map(|i| change(i, "north", "stock_line", &format!("sl-{i}"), &line(i))).collect()
    };
    let overlap = PushRequest { after: Seq(70), changes: line_changes(71, 90) };
    let third = http.push(&north.name, &north.password, &overlap).push_response();
    assert_eq!((third.acked, third.applied, third.out_of_step), (Seq(80), 0, true));
    assert_eq!((dump(central), footprint(central), change_log(central)), state, "the central database is unchanged");

    // What follows the acknowledged position goes in.
    let next = PushRequest { after: Seq(80), changes: line_changes(81, 90) };
    let fourth = http.push(&north.name, &north.password, &next).push_response();
    assert_eq!((fourth.acked, fourth.applied, fourth.out_of_step), (Seq(90), 10, false));
    assert!(fourth.rejections.is_empty());
    assert_eq!(count(central, "SELECT count(*) FROM record WHERE tbl = 'stock_line'"), 89);
    assert_eq!(
        count(central, "SELECT count(*) FROM change_log WHERE tbl = 'stock_line' AND origin_site = 'north'"),
        89,
        "one log entry per record"
    );
    assert_eq!(footprint(central).rejections, 1);
}

/// The central server's change log, entry by entry.
fn change_log(central: &Central) -> Vec<(i64, String, String, String, Option<String>)> {
    rows(central, "SELECT seq, tbl, record_id, origin_site, bucket FROM change_log ORDER BY seq", &[])
}
