//! The storage layer's architecture invariants, tested through its public API on a real
//! database, on each backend (`sqlite::…` on a file, `postgres::…` in a schema of its own; see
//! `backends/mod.rs`): every write of a node's own is logged in the same transaction, a batch is all
//! or nothing, the log keeps one (latest) entry per record, deletes leave tombstones, received
//! changes are not pushed back, topology records keep the in-memory network in step (also when
//! a transaction fails), and everything survives reopening the database.

use model::{Action, Change, RecordId, Refusal, Seq, SiteId, StoreId, SyncType};
use outpost_store::{Db, StateKey, StoreError, Write};
use serde_json::{json, Value};

#[macro_use]
mod backends;
use backends::Fixture;

const HERE: &str = "north";
const LOCAL_STORE: &str = "north-pharmacy";
const REMOTE_STORE: &str = "south-clinic";

fn me() -> SiteId {
    SiteId::from(HERE)
}

fn central() -> SiteId {
    SiteId::from("central")
}

/// A change as the central server sends it.
fn received(table: &str, id: &str, data: Value) -> Change {
    Change {
        seq: Seq(0),
        table: table.into(),
        id: RecordId::from(id),
        action: Action::Upsert,
        data: serde_json::value::RawValue::from_string(data.to_string()).ok(),
        origin: central(),
    }
}

fn store_sync(store: &str, site: &str, sync_type: &str) -> Change {
    received(
        "store_sync",
        &format!("{store}@{site}"),
        json!({"store_id": store, "site_id": site, "sync_type": sync_type}),
    )
}

/// The sites and stores a site learns from the central server, without any store active here.
fn sites_and_stores() -> Vec<Change> {
    vec![
        received("site", "central", json!({"name": "Central", "central": true, "primary": true})),
        received("site", HERE, json!({"name": "North"})),
        received("site", "south", json!({"name": "South"})),
        received("store", LOCAL_STORE, json!({"name": "North pharmacy"})),
        received("store", REMOTE_STORE, json!({"name": "South clinic"})),
        store_sync(REMOTE_STORE, "south", "active"),
    ]
}

/// A database for site `north`, knowing the network but with no store active here yet.
fn open_bare(fx: &Fixture) -> Db {
    let db = fx.open();
    db.transaction(|tx| {
        for change in sites_and_stores() {
            tx.apply_received(&change)?;
        }
        tx.set_state(StateKey::LocalSite, HERE)
    })
    .expect("seed the network");
    db
}

/// A database for site `north`, where `north-pharmacy` is active (`south-clinic` is active on
/// `south`).
fn open_site(fx: &Fixture) -> Db {
    let db = open_bare(fx);
    db.transaction(|tx| tx.apply_received(&store_sync(LOCAL_STORE, HERE, "active"))).expect("activate the store here");
    db
}

fn stock_line(id: &str, store: &str, packs: f64) -> Write {
    Write::upsert("stock_line", id, &stock_doc(store, packs))
}

fn stock_doc(store: &str, packs: f64) -> Value {
    json!({"store_id": store, "item_id": "item-amoxicillin", "batch": "B001", "available_packs": packs})
}

/// Every change this node made and still has to push, oldest first.
fn log(db: &Db) -> Vec<Change> {
    db.changes_after(Seq(0), &me(), usize::MAX, usize::MAX).expect("read the change log")
}

fn logged(db: &Db) -> u64 {
    db.count_changes_after(Seq(0), &me()).expect("count the change log")
}

fn data_of(change: &Change) -> Option<Value> {
    change.data.as_ref().map(|raw| serde_json::from_str(raw.get()).expect("logged data is JSON"))
}

fn active_site(db: &Db, store: &str) -> Option<SiteId> {
    db.network().active_site(&StoreId::from(store)).cloned()
}

fn assert_nothing_written(db: &Db, table: &str, id: &str) {
    assert_eq!(db.record(table, id).expect("read the record"), None, "no `{table}` record `{id}` was written");
    assert_eq!(logged(db), 0, "no change-log entry was written");
    assert_eq!(db.last_seq().expect("read the last position"), Seq(0), "the change log is empty");
}

fn store_move(status: &str) -> Value {
    json!({"store_id": LOCAL_STORE, "from_site_id": HERE, "to_site_id": "south", "leave_as": "collector",
           "status": status, "requested_at": "2026-12-02T00:00:00Z"})
}

// A store move: the old site hands the store over after pushing what it wrote in it; from then
// on the store is read-only there, whatever else it may still receive.
fn a_store_handed_over_is_read_only_here_until_the_move_completes(fx: &Fixture) {
    let db = open_site(fx);
    db.transaction(|tx| tx.apply_received(&received("store_move", LOCAL_STORE, store_move("pending"))))
        .expect("the move");
    db.write(&[stock_line("sl-before", LOCAL_STORE, 1.0)]).expect("before the hand-over the store is still ours");
    db.write(&[Write::upsert("store_move", LOCAL_STORE, &store_move("handed_over"))]).expect("the hand-over");
    let refused = db.write(&[stock_line("sl-after", LOCAL_STORE, 2.0)]).expect_err("read-only after the hand-over");
    assert!(
        matches!(&refused, StoreError::Refused { refusal, .. } if matches!(**refusal, Refusal::StoreHandedOver { .. })),
        "{refused}"
    );
    assert!(refused.to_string().contains("has been handed over to site `south` and is read-only here"), "{refused}");
    assert_eq!(db.record("stock_line", "sl-after").expect("read"), None);
    // What the central server sends for the store is still applied (a transfer's half, say).
    db.transaction(|tx| tx.apply_received(&received("stock_line", "sl-central", stock_doc(LOCAL_STORE, 3.0))))
        .expect("received changes are not this site's edits");
    // A supplier invoice the central server made for the store before the move completed: the
    // store's new site numbers it, not this one (whose write would be refused, and would stall
    // every pull from here on).
    let half = json!({"store_id": LOCAL_STORE, "other_store_id": REMOTE_STORE, "type": "supplier_invoice",
                      "status": "on_hold", "serial_number": -1});
    let change = received("transaction", "ci-1:received", half);
    db.transaction(|tx| {
        tx.apply_received(&change)?;
        let mut checked = |tx: &mut outpost_store::Tx<'_>, writes: &[Write]| tx.write_all_checked(writes, &me());
        let doc = change.data.as_ref().map(|d| d.get());
        outpost_store::transfers::respond(tx, &me(), &central(), "transaction", &change.id, doc, &mut checked)
    })
    .expect("what arrives for a handed-over store is applied without a write of this site's");
    let stored = db.record("transaction", "ci-1:received").expect("read").expect("applied");
    assert_eq!(stored["serial_number"], json!(-1), "left for the new site to number");
    let pushed: Vec<String> = log(&db).iter().map(|c| format!("{} {}", c.table, c.id)).collect();
    assert_eq!(
        pushed,
        ["stock_line sl-before", "store_move north-pharmacy"],
        "the hand-over goes after what came before"
    );
}

fn only_the_old_site_hands_a_store_over_and_only_by_setting_its_status(fx: &Fixture) {
    let db = open_site(fx);
    let refused = db
        .write(&[Write::upsert("store_move", LOCAL_STORE, &store_move("pending"))])
        .expect_err("a site makes no move");
    assert!(refused.to_string().contains("(`central`) may edit them, not site `north`"), "{refused}");
    db.transaction(|tx| tx.apply_received(&received("store_move", LOCAL_STORE, store_move("pending"))))
        .expect("the move");
    let mut elsewhere = store_move("handed_over");
    elsewhere["to_site_id"] = json!("east");
    let refused = db
        .write(&[Write::upsert("store_move", LOCAL_STORE, &elsewhere)])
        .expect_err("the move's target is the central server's");
    assert!(refused.to_string().contains("a site may only hand it over"), "{refused}");
    let refused = db
        .write(&[Write::upsert("store_move", LOCAL_STORE, &store_move("done"))])
        .expect_err("done is the central server's");
    assert!(refused.to_string().contains("a site may only hand it over"), "{refused}");
    assert_eq!(logged(&db), 0, "nothing refused was logged");
}

// A change of primary: the old primary hands over after pushing its edits; from then on it
// edits no central data, so two sites never may at once.
fn a_primary_that_handed_over_edits_no_central_data(fx: &Fixture) {
    let db = open_site(fx);
    let primary_move = |status: &str| json!({"from_site_id": HERE, "to_site_id": "central", "status": status, "requested_at": "2026-12-02T00:00:00Z"});
    db.transaction(|tx| {
        tx.apply_received(&received("site", "central", json!({"name": "Central", "central": true, "primary": false})))?;
        tx.apply_received(&received("site", HERE, json!({"name": "North", "primary": true})))?;
        tx.apply_received(&received("primary_move", "primary", primary_move("pending")))
    })
    .expect("north is the primary, and is asked to hand over");
    let item = |id: &str| Write::upsert("item", id, &json!({"code": id, "name": "Amoxicillin"}));
    db.write(&[item("item-before")]).expect("still the primary until it hands over");
    let mut elsewhere = primary_move("handed_over");
    elsewhere["to_site_id"] = json!("south");
    let refused = db.write(&[Write::upsert("primary_move", "primary", &elsewhere)]).expect_err("only the status");
    assert!(refused.to_string().contains("the old primary may only hand over"), "{refused}");
    db.write(&[Write::upsert("primary_move", "primary", &primary_move("handed_over"))]).expect("the hand-over");
    let refused = db.write(&[item("item-after")]).expect_err("no central data after the hand-over");
    assert!(
        matches!(&refused, StoreError::Refused { refusal, .. } if matches!(**refusal, Refusal::PrimaryHandedOver { .. })),
        "{refused}"
    );
    db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).expect("its own stores' data is still its own");
    let pushed: Vec<String> = log(&db).iter().map(|c| format!("{} {}", c.table, c.id)).collect();
    assert_eq!(pushed, ["item item-before", "primary_move primary", "stock_line sl-1"]);
}

// 1. Every write appends exactly one change-log entry, in the same transaction.

fn each_write_appends_exactly_one_change_log_entry_and_the_record_is_readable(fx: &Fixture) {
    let db = open_site(fx);
    assert_eq!(logged(&db), 0, "received topology is not logged");

    let seqs = db.write(&[stock_line("sl-1", LOCAL_STORE, 10.0)]).expect("accepted");
    assert_eq!(seqs.len(), 1);
    assert_eq!(logged(&db), 1);
    assert_eq!(db.record("stock_line", "sl-1").expect("read the record"), Some(stock_doc(LOCAL_STORE, 10.0)));

    let seqs2 =
        db.write(&[stock_line("sl-2", LOCAL_STORE, 20.0), stock_line("sl-3", LOCAL_STORE, 30.0)]).expect("accepted");
    assert_eq!(seqs2.len(), 2, "one position per write");
    assert_eq!(logged(&db), 3);

    let log = log(&db);
    let entries: Vec<(Seq, &str, &str)> = log.iter().map(|c| (c.seq, c.table.as_str(), c.id.as_str())).collect();
    assert_eq!(
        entries,
        vec![(seqs[0], "stock_line", "sl-1"), (seqs2[0], "stock_line", "sl-2"), (seqs2[1], "stock_line", "sl-3")]
    );
    for change in &log {
        assert_eq!(change.action, Action::Upsert);
        assert_eq!(change.origin, me());
        assert_eq!(data_of(change), db.record("stock_line", change.id.as_str()).expect("read the record"));
    }
    assert_eq!(db.last_seq().expect("read the last position"), seqs2[1]);
}

fn writes_inside_one_transaction_are_each_logged_once(fx: &Fixture) {
    let db = open_site(fx);
    let seqs = db
        .transaction(|tx| {
            (0..50)
                .map(|i| tx.write_checked(&stock_line(&format!("sl-{i:02}"), LOCAL_STORE, i as f64), &me()))
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("accepted");
    assert_eq!(logged(&db), 50);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "positions increase: {seqs:?}");
    assert_eq!(log(&db).iter().map(|c| c.seq).collect::<Vec<_>>(), seqs);
}

// 2. A batch is all or nothing; a write without authority is refused, naming the table.

fn batch_with_a_write_without_authority_is_refused_naming_the_table_and_writes_nothing(fx: &Fixture) {
    let db = open_site(fx);
    let ok = stock_line("sl-ok", LOCAL_STORE, 5.0);
    // Items are central data, edited only on the primary (the central server here).
    let refused = Write::upsert("item", "item-new", &json!({"code": "AMX", "name": "Amoxicillin"}));

    let err = db.write(&[ok, refused]).expect_err("expected to fail");
    match &err {
        StoreError::Refused { table, id, refusal } => {
            assert_eq!(table, "item");
            assert_eq!(id.as_str(), "item-new");
            assert!(matches!(&**refusal, Refusal::NotAuthorised { site, .. } if *site == me()), "{refusal:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(err.to_string().contains("`item`"), "the message names the table: {err}");

    assert_nothing_written(&db, "stock_line", "sl-ok");
    assert_eq!(db.record("item", "item-new").expect("read the record"), None);
    assert!(db.dump().expect("dump the records").iter().all(|(table, ..)| table != "stock_line" && table != "item"));
}

fn refused_write_first_in_a_batch_also_writes_nothing(fx: &Fixture) {
    let db = open_site(fx);
    let err = db
        .write(&[stock_line("sl-theirs", REMOTE_STORE, 1.0), stock_line("sl-ours", LOCAL_STORE, 1.0)])
        .expect_err("expected to fail");
    assert!(matches!(&err, StoreError::Refused { table, .. } if table == "stock_line"), "{err:?}");
    assert!(err.to_string().contains("`stock_line`"), "{err}");
    assert_nothing_written(&db, "stock_line", "sl-ours");
    assert_eq!(db.record("stock_line", "sl-theirs").expect("read the record"), None);
}

fn a_failed_batch_leaves_earlier_writes_and_later_positions_intact(fx: &Fixture) {
    let db = open_site(fx);
    let first = db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).expect("accepted")[0];

    db.write(&[stock_line("sl-1", LOCAL_STORE, 99.0), Write::delete("item", "item-x")]).expect_err("expected to fail");
    assert_eq!(
        db.record("stock_line", "sl-1").expect("read the record"),
        Some(stock_doc(LOCAL_STORE, 1.0)),
        "the update rolled back"
    );
    let log_after_failure = log(&db);
    assert_eq!(log_after_failure.len(), 1);
    assert_eq!(log_after_failure[0].seq, first, "the original entry survived the rolled-back supersede");

    let next = db.write(&[stock_line("sl-2", LOCAL_STORE, 2.0)]).expect("accepted")[0];
    assert!(next > first);
}

// 3. One entry per record, at the position of its latest change; positions never go backwards.

fn updating_a_record_twice_leaves_one_entry_at_a_higher_seq_with_the_latest_data(fx: &Fixture) {
    let db = open_site(fx);
    let created = db.write(&[stock_line("sl-a", LOCAL_STORE, 10.0)]).expect("accepted")[0];
    let updated = db.write(&[stock_line("sl-a", LOCAL_STORE, 9.0)]).expect("accepted")[0];
    let updated_again = db.write(&[stock_line("sl-a", LOCAL_STORE, 8.0)]).expect("accepted")[0];
    assert!(created < updated && updated < updated_again, "{created:?} < {updated:?} < {updated_again:?}");

    assert_eq!(logged(&db), 1, "superseded entries are pruned");
    let log = log(&db);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].seq, updated_again);
    assert_eq!(log[0].id.as_str(), "sl-a");
    assert_eq!(log[0].action, Action::Upsert);
    assert_eq!(data_of(&log[0]), Some(stock_doc(LOCAL_STORE, 8.0)));
    assert_eq!(db.record("stock_line", "sl-a").expect("read the record"), Some(stock_doc(LOCAL_STORE, 8.0)));

    // A reader whose cursor is past the superseded entries still gets the latest change.
    let after_create = db.changes_after(created, &me(), 10, usize::MAX).expect("read the change log");
    assert_eq!(after_create.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![updated_again]);
    assert_eq!(db.count_changes_after(updated_again, &me()).expect("count the change log"), 0);
}

fn writing_one_record_twice_in_one_batch_leaves_one_entry_with_the_second_data(fx: &Fixture) {
    let db = open_site(fx);
    let seqs =
        db.write(&[stock_line("sl-a", LOCAL_STORE, 1.0), stock_line("sl-a", LOCAL_STORE, 2.0)]).expect("accepted");
    assert!(seqs[0] < seqs[1]);
    let log = log(&db);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].seq, seqs[1]);
    assert_eq!(data_of(&log[0]), Some(stock_doc(LOCAL_STORE, 2.0)));
}

fn seqs_never_go_backwards_when_updates_prune_older_entries(fx: &Fixture) {
    let db = open_site(fx);
    let a = db.write(&[stock_line("sl-a", LOCAL_STORE, 1.0)]).expect("accepted")[0];
    let a_latest = db.write(&[stock_line("sl-a", LOCAL_STORE, 2.0)]).expect("accepted")[0];
    assert!(a_latest > a);
    let b = db.write(&[stock_line("sl-b", LOCAL_STORE, 1.0)]).expect("accepted")[0];
    assert!(b > a_latest, "B's position {b:?} comes after A's latest {a_latest:?}");
    let b_latest = db.write(&[stock_line("sl-b", LOCAL_STORE, 2.0)]).expect("accepted")[0];
    let a_again = db.write(&[stock_line("sl-a", LOCAL_STORE, 3.0)]).expect("accepted")[0];
    assert!(b_latest > b && a_again > b_latest);

    let seqs: Vec<(Seq, String)> = log(&db).into_iter().map(|c| (c.seq, c.id.0)).collect();
    assert_eq!(seqs, vec![(b_latest, "sl-b".to_owned()), (a_again, "sl-a".to_owned())]);
    assert_eq!(db.last_seq().expect("read the last position"), a_again);
}

// 4. A delete leaves a tombstone that travels.

fn delete_leaves_a_tombstone_logged_as_a_delete_without_data(fx: &Fixture) {
    let db = open_site(fx);
    let created = db
        .write(&[stock_line("sl-gone", LOCAL_STORE, 3.0), stock_line("sl-kept", LOCAL_STORE, 4.0)])
        .expect("accepted");
    let deleted = db.write(&[Write::delete("stock_line", "sl-gone")]).expect("accepted")[0];
    assert!(deleted > created[1]);

    assert_eq!(db.record("stock_line", "sl-gone").expect("read the record"), None);
    assert_eq!(db.record("stock_line", "sl-kept").expect("read the record"), Some(stock_doc(LOCAL_STORE, 4.0)));
    assert_eq!(logged(&db), 2, "the delete superseded the create: one entry per record");
    let log = log(&db);
    let tombstone = log.iter().find(|c| c.id.as_str() == "sl-gone").expect("the delete is logged");
    assert_eq!(tombstone.seq, deleted);
    assert_eq!(tombstone.action, Action::Delete);
    assert!(tombstone.data.is_none(), "a delete carries no data");
    assert_eq!(tombstone.origin, me());
    assert_eq!(log.last().map(|c| c.seq), Some(deleted));
    assert!(db.dump().expect("dump the records").iter().all(|(_, id, _)| id != "sl-gone"));
}

fn a_deleted_record_can_be_created_again(fx: &Fixture) {
    let db = open_site(fx);
    db.write(&[stock_line("sl-x", LOCAL_STORE, 1.0)]).expect("accepted");
    db.write(&[Write::delete("stock_line", "sl-x")]).expect("accepted");
    let again = db.write(&[stock_line("sl-x", LOCAL_STORE, 5.0)]).expect("accepted")[0];
    assert_eq!(db.record("stock_line", "sl-x").expect("read the record"), Some(stock_doc(LOCAL_STORE, 5.0)));
    let log = log(&db);
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].seq, &log[0].action), (again, &Action::Upsert));
}

fn deleting_a_record_of_a_store_active_elsewhere_is_refused(fx: &Fixture) {
    let db = open_site(fx);
    db.transaction(|tx| tx.apply_received(&received("stock_line", "sl-south", stock_doc(REMOTE_STORE, 7.0))))
        .expect("accepted");
    let err = db.write(&[Write::delete("stock_line", "sl-south")]).expect_err("expected to fail");
    assert!(matches!(&err, StoreError::Refused { table, .. } if table == "stock_line"), "{err:?}");
    assert_eq!(db.record("stock_line", "sl-south").expect("read the record"), Some(stock_doc(REMOTE_STORE, 7.0)));
    assert_eq!(logged(&db), 0);
}

// 5. Received changes are written but not logged; received topology changes authority.

fn received_change_is_written_but_not_added_to_the_change_log(fx: &Fixture) {
    let db = open_site(fx);
    let item = json!({"code": "AMX", "name": "Amoxicillin 250mg"});
    db.transaction(|tx| {
        tx.apply_received(&received("item", "item-amx", item.clone()))?;
        tx.apply_received(&received("stock_line", "sl-south", stock_doc(REMOTE_STORE, 7.0)))
    })
    .expect("accepted");

    assert_eq!(db.record("item", "item-amx").expect("read the record"), Some(item));
    assert_eq!(db.record("stock_line", "sl-south").expect("read the record"), Some(stock_doc(REMOTE_STORE, 7.0)));
    assert_eq!(logged(&db), 0, "nothing to push");
    assert_eq!(
        db.count_changes_after(Seq(0), &central()).expect("count the change log"),
        0,
        "not logged under its origin either"
    );
    assert_eq!(db.last_seq().expect("read the last position"), Seq(0));
    assert!(log(&db).is_empty());
}

fn received_delete_leaves_a_tombstone_without_logging_it(fx: &Fixture) {
    let db = open_site(fx);
    db.transaction(|tx| tx.apply_received(&received("item", "item-amx", json!({"name": "Amoxicillin"}))))
        .expect("accepted");
    let delete = Change { action: Action::Delete, data: None, ..received("item", "item-amx", Value::Null) };
    db.transaction(|tx| tx.apply_received(&delete)).expect("accepted");
    assert_eq!(db.record("item", "item-amx").expect("read the record"), None);
    assert_eq!(db.last_seq().expect("read the last position"), Seq(0));
}

fn received_store_sync_activating_a_store_here_makes_local_writes_to_it_accepted(fx: &Fixture) {
    let db = open_bare(fx);
    assert_ne!(active_site(&db, LOCAL_STORE), Some(me()));
    let err = db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).expect_err("expected to fail");
    assert!(matches!(err, StoreError::Refused { .. }), "not active here yet: {err:?}");
    assert_nothing_written(&db, "stock_line", "sl-1");

    db.transaction(|tx| tx.apply_received(&store_sync(LOCAL_STORE, HERE, "active"))).expect("accepted");
    assert_eq!(logged(&db), 0, "the received topology record is not logged");
    let network = db.network();
    assert_eq!(network.active_site(&StoreId::from(LOCAL_STORE)), Some(&me()));
    assert_eq!(network.sync_type(&StoreId::from(LOCAL_STORE), &me()), SyncType::Active);
    assert_eq!(network.active_site(&StoreId::from(REMOTE_STORE)), Some(&SiteId::from("south")));

    let seq = db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).expect("accepted")[0];
    assert_eq!(db.record("stock_line", "sl-1").expect("read the record"), Some(stock_doc(LOCAL_STORE, 1.0)));
    assert_eq!(log(&db).iter().map(|c| c.seq).collect::<Vec<_>>(), vec![seq]);

    let err = db.write(&[stock_line("sl-2", REMOTE_STORE, 1.0)]).expect_err("expected to fail");
    match &err {
        StoreError::Refused { table, refusal, .. } if matches!(**refusal, Refusal::NotAuthorised { .. }) => {
            let Refusal::NotAuthorised { writer, .. } = &**refusal else { unreachable!("matched above") };
            assert_eq!(table, "stock_line");
            assert!(writer.contains("south"), "the refusal says where it may be written: {writer}");
        }
        other => panic!("expected a refusal naming the store's site, got {other:?}"),
    }
    assert_eq!(db.record("stock_line", "sl-2").expect("read the record"), None);
    assert_eq!(logged(&db), 1);
}

fn received_store_sync_moving_a_store_away_makes_local_writes_to_it_refused(fx: &Fixture) {
    let db = open_site(fx);
    db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).expect("accepted");
    // The store is made active on south: north loses the right to edit it.
    db.transaction(|tx| {
        tx.apply_received(&store_sync(LOCAL_STORE, HERE, "collector"))?;
        tx.apply_received(&store_sync(LOCAL_STORE, "south", "active"))
    })
    .expect("accepted");
    assert_eq!(active_site(&db, LOCAL_STORE), Some(SiteId::from("south")));
    let err = db.write(&[stock_line("sl-1", LOCAL_STORE, 2.0)]).expect_err("expected to fail");
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
    assert_eq!(db.record("stock_line", "sl-1").expect("read the record"), Some(stock_doc(LOCAL_STORE, 1.0)));
}

fn an_update_moving_a_record_of_a_store_active_elsewhere_into_a_local_store_is_refused(fx: &Fixture) {
    let db = open_site(fx);
    db.transaction(|tx| tx.apply_received(&received("stock_line", "sl-south", stock_doc(REMOTE_STORE, 7.0))))
        .expect("accepted");
    // The record belongs to south's store: north may not take it over by rewriting its store.
    let err = db.write(&[stock_line("sl-south", LOCAL_STORE, 7.0)]).expect_err("expected to fail");
    assert!(matches!(&err, StoreError::Refused { table, .. } if table == "stock_line"), "{err:?}");
    assert_eq!(db.record("stock_line", "sl-south").expect("read the record"), Some(stock_doc(REMOTE_STORE, 7.0)));
    assert_eq!(logged(&db), 0);
}

// 6. A failed transaction rolls back the records and the in-memory network together.

fn error_in_a_transaction_after_a_topology_change_rolls_back_record_and_network(fx: &Fixture) {
    let db = open_bare(fx);
    let before = active_site(&db, LOCAL_STORE);
    assert_ne!(before, Some(me()));

    let result: Result<(), StoreError> = db.transaction(|tx| {
        tx.apply_received(&store_sync(LOCAL_STORE, HERE, "active"))?;
        assert_eq!(tx.network().active_site(&StoreId::from(LOCAL_STORE)), Some(&me()), "seen inside the transaction");
        Err(StoreError::Invalid { table: "test".into(), id: RecordId::from("x"), reason: "fail on purpose".into() })
    });
    assert!(matches!(result, Err(StoreError::Invalid { .. })));

    assert_eq!(
        db.record("store_sync", &format!("{LOCAL_STORE}@{HERE}")).expect("read the record"),
        None,
        "the record rolled back"
    );
    assert_eq!(active_site(&db, LOCAL_STORE), before, "the network rolled back");
    let err = db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).expect_err("expected to fail");
    assert!(matches!(err, StoreError::Refused { .. }), "still not writable here: {err:?}");
}

fn error_after_moving_a_store_rolls_the_network_back_to_where_it_was(fx: &Fixture) {
    let db = open_site(fx);
    let result: Result<(), StoreError> = db.transaction(|tx| {
        tx.apply_received(&store_sync(LOCAL_STORE, "south", "active"))?;
        tx.apply_received(&received("store", "new-store", json!({"name": "New"})))?;
        tx.write_checked(&Write::upsert("item", "item-x", &json!({})), &SiteId::from(HERE)).map(drop)
    });
    assert!(matches!(result, Err(StoreError::Refused { .. })), "{result:?}");
    assert_eq!(active_site(&db, LOCAL_STORE), Some(me()));
    assert!(!db.network().stores.contains_key(&StoreId::from("new-store")));
    assert_eq!(db.record("store", "new-store").expect("read the record"), None);
    db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).expect("the store is still active here");
}

fn failed_write_batch_with_a_topology_write_rolls_back_the_network(fx: &Fixture) {
    // On the central server, topology is written locally through `Db::write`.
    let db = fx.open();
    db.transaction(|tx| {
        for change in sites_and_stores() {
            tx.apply_received(&change)?;
        }
        tx.set_state(StateKey::LocalSite, "central")
    })
    .expect("accepted");
    let sync = store_sync(LOCAL_STORE, HERE, "active");
    let activate =
        Write::upsert_text("store_sync", sync.id.as_str(), sync.data.expect("a store_sync has data").get().to_owned());
    let err = db.write(&[activate, Write::upsert("no_such_table", "x", &json!({}))]).expect_err("expected to fail");
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
    assert_ne!(active_site(&db, LOCAL_STORE), Some(me()));
    assert_eq!(db.count_changes_after(Seq(0), &central()).expect("count the change log"), 0);
}

fn panic_in_a_transaction_after_a_topology_change_rolls_back_record_and_network(fx: &Fixture) {
    let db = open_bare(fx);
    let before = active_site(&db, LOCAL_STORE);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.transaction(|tx| -> Result<(), StoreError> {
            tx.apply_received(&store_sync(LOCAL_STORE, HERE, "active"))?;
            panic!("a bug in the middle of a transaction");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(
        db.record("store_sync", &format!("{LOCAL_STORE}@{HERE}")).expect("read the record"),
        None,
        "the record rolled back"
    );
    assert_eq!(active_site(&db, LOCAL_STORE), before, "the network rolled back with it");
    assert!(db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).is_err(), "no authority from a rolled-back record");
}

// 8. Reopening the file keeps records, log, network and the order of positions.

fn reopening_the_database_keeps_records_log_and_network(fx: &Fixture) {
    let (seqs, last) = {
        let db = open_site(fx);
        let seqs =
            db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0), stock_line("sl-2", LOCAL_STORE, 2.0)]).expect("accepted");
        db.write(&[Write::delete("stock_line", "sl-2")]).expect("accepted");
        (seqs, db.last_seq().expect("read the last position"))
    };

    let db = fx.open();
    assert_eq!(db.local_site().expect("the local site"), me());
    assert_eq!(db.record("stock_line", "sl-1").expect("read the record"), Some(stock_doc(LOCAL_STORE, 1.0)));
    assert_eq!(db.record("stock_line", "sl-2").expect("read the record"), None);
    let log = log(&db);
    let entries: Vec<(Seq, &str, Action)> = log.iter().map(|c| (c.seq, c.id.as_str(), c.action.clone())).collect();
    assert_eq!(entries, vec![(seqs[0], "sl-1", Action::Upsert), (last, "sl-2", Action::Delete)]);
    assert_eq!(db.last_seq().expect("read the last position"), last);

    let network = db.network();
    assert_eq!(network.central, central());
    assert_eq!(network.primary, central());
    assert_eq!(network.sites.len(), 3);
    assert_eq!(network.active_site(&StoreId::from(LOCAL_STORE)), Some(&me()));
    assert_eq!(network.active_site(&StoreId::from(REMOTE_STORE)), Some(&SiteId::from("south")));

    let next = db.write(&[stock_line("sl-3", LOCAL_STORE, 3.0)]).expect("still writable after reopening")[0];
    assert!(next > last, "positions continue after reopening");
    assert!(db.write(&[stock_line("sl-4", REMOTE_STORE, 3.0)]).is_err(), "still refused after reopening");
}

fn reopening_after_a_rolled_back_topology_change_does_not_resurrect_it(fx: &Fixture) {
    {
        let db = open_bare(fx);
        let _ = db.transaction(|tx| -> Result<(), StoreError> {
            tx.apply_received(&store_sync(LOCAL_STORE, HERE, "active"))?;
            Err(StoreError::NotInitialised)
        });
    }
    let db = fx.open();
    assert_ne!(active_site(&db, LOCAL_STORE), Some(me()));
    assert_eq!(active_site(&db, REMOTE_STORE), Some(SiteId::from("south")));
}

// 9. Invalid input is refused before anything is written.

fn upsert_whose_data_is_not_a_json_object_is_invalid_and_writes_nothing(fx: &Fixture) {
    let db = open_site(fx);
    for text in
        ["[\"north-pharmacy\"]", "[1,2]", "[]", "42", "\"text\"", "null", "true", "not json", "", "{\"store_id\":"]
    {
        let err = db.write(&[Write::upsert_text("stock_line", "x", text.into())]).expect_err("expected to fail");
        match &err {
            StoreError::Invalid { table, id, .. } => assert_eq!((table.as_str(), id.as_str()), ("stock_line", "x")),
            other => panic!("data {text:?}: expected Invalid, got {other:?}"),
        }
        assert_nothing_written(&db, "stock_line", "x");
    }
}

fn invalid_upsert_in_a_batch_writes_nothing_of_the_batch(fx: &Fixture) {
    let db = open_site(fx);
    let err = db
        .write(&[stock_line("sl-ok", LOCAL_STORE, 1.0), Write::upsert_text("stock_line", "sl-bad", "[1,2]".into())])
        .expect_err("expected to fail");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_nothing_written(&db, "stock_line", "sl-ok");
}

fn upsert_without_data_is_invalid(fx: &Fixture) {
    let db = open_site(fx);
    let write = Write { data: None, ..stock_line("sl-1", LOCAL_STORE, 1.0) };
    let err = db.write(&[write]).expect_err("expected to fail");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_nothing_written(&db, "stock_line", "sl-1");
}

fn write_to_an_unknown_table_is_refused_naming_it(fx: &Fixture) {
    let db = open_site(fx);
    let err = db
        .write(&[Write::upsert("no_such_table", "x", &json!({"store_id": LOCAL_STORE}))])
        .expect_err("expected to fail");
    match &err {
        StoreError::Refused { table, refusal, .. } if matches!(**refusal, Refusal::UnknownTable(_)) => {
            let Refusal::UnknownTable(name) = &**refusal else { unreachable!("matched above") };
            assert_eq!(table, "no_such_table");
            assert_eq!(name, "no_such_table");
        }
        other => panic!("expected an unknown-table refusal, got {other:?}"),
    }
    assert!(err.to_string().contains("no_such_table"), "{err}");
    assert_nothing_written(&db, "no_such_table", "x");
}

fn received_change_to_an_unknown_table_or_with_non_object_data_writes_nothing(fx: &Fixture) {
    let db = open_site(fx);
    let dump = db.dump().expect("dump the records");
    let unknown = db
        .transaction(|tx| tx.apply_received(&received("no_such_table", "x", json!({}))))
        .expect_err("expected to fail");
    assert!(matches!(&unknown, StoreError::Refused { table, .. } if table == "no_such_table"), "{unknown:?}");
    assert!(unknown.to_string().contains("no_such_table"));
    for data in [json!([1, 2]), json!([]), json!([REMOTE_STORE]), json!("text"), json!(3)] {
        let err = db
            .transaction(|tx| tx.apply_received(&received("stock_line", "x", data.clone())))
            .expect_err("expected to fail");
        assert!(matches!(err, StoreError::Invalid { .. }), "data {data}: {err:?}");
    }
    assert_eq!(db.dump().expect("dump the records"), dump, "nothing was written");
    assert_eq!(db.last_seq().expect("read the last position"), Seq(0));
}

fn write_on_a_database_without_a_local_site_is_refused_as_not_initialised(fx: &Fixture) {
    let db = fx.open();
    let err = db.write(&[stock_line("sl-1", LOCAL_STORE, 1.0)]).expect_err("expected to fail");
    assert!(matches!(err, StoreError::NotInitialised), "{err:?}");
    assert_eq!(db.record("stock_line", "sl-1").expect("read the record"), None);
    assert_eq!(db.last_seq().expect("read the last position"), Seq(0));
}

on_each_backend!(
    each_write_appends_exactly_one_change_log_entry_and_the_record_is_readable,
    writes_inside_one_transaction_are_each_logged_once,
    batch_with_a_write_without_authority_is_refused_naming_the_table_and_writes_nothing,
    refused_write_first_in_a_batch_also_writes_nothing,
    a_failed_batch_leaves_earlier_writes_and_later_positions_intact,
    updating_a_record_twice_leaves_one_entry_at_a_higher_seq_with_the_latest_data,
    writing_one_record_twice_in_one_batch_leaves_one_entry_with_the_second_data,
    seqs_never_go_backwards_when_updates_prune_older_entries,
    delete_leaves_a_tombstone_logged_as_a_delete_without_data,
    a_deleted_record_can_be_created_again,
    deleting_a_record_of_a_store_active_elsewhere_is_refused,
    received_change_is_written_but_not_added_to_the_change_log,
    received_delete_leaves_a_tombstone_without_logging_it,
    received_store_sync_activating_a_store_here_makes_local_writes_to_it_accepted,
    received_store_sync_moving_a_store_away_makes_local_writes_to_it_refused,
    a_store_handed_over_is_read_only_here_until_the_move_completes,
    only_the_old_site_hands_a_store_over_and_only_by_setting_its_status,
    a_primary_that_handed_over_edits_no_central_data,
    an_update_moving_a_record_of_a_store_active_elsewhere_into_a_local_store_is_refused,
    error_in_a_transaction_after_a_topology_change_rolls_back_record_and_network,
    error_after_moving_a_store_rolls_the_network_back_to_where_it_was,
    failed_write_batch_with_a_topology_write_rolls_back_the_network,
    panic_in_a_transaction_after_a_topology_change_rolls_back_record_and_network,
    reopening_the_database_keeps_records_log_and_network,
    reopening_after_a_rolled_back_topology_change_does_not_resurrect_it,
    upsert_whose_data_is_not_a_json_object_is_invalid_and_writes_nothing,
    invalid_upsert_in_a_batch_writes_nothing_of_the_batch,
    upsert_without_data_is_invalid,
    write_to_an_unknown_table_is_refused_naming_it,
    received_change_to_an_unknown_table_or_with_non_object_data_writes_nothing,
    write_on_a_database_without_a_local_site_is_refused_as_not_initialised,
);
