//! The failpoints every transaction passes, and a full disk: a transaction killed before its
//! commit leaves nothing, one killed after it leaves all of it, and a write refused by a full
//! disk says so and keeps nothing. (Feature `failpoints`; the simulator drives these at random.)
#![cfg(feature = "failpoints")]

use model::SiteId;
use outpost_store::failpoint::{self, Killed};
use outpost_store::{Db, StateKey, StoreError, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn site(dir: &std::path::Path) -> Db {
    let db = Db::open(&dir.join("site.sqlite")).expect("open");
    db.set_state(StateKey::LocalSite, "central").expect("identity");
    db.transaction(|tx| {
        let site = serde_json::json!({"name": "Central", "central": true, "primary": true});
        tx.write_founding_site(&SiteId::from("central"), &site)
    })
    .expect("the primary server's own site");
    db
}

fn item(i: usize) -> Write {
    Write::upsert("item", format!("item-{i}"), &serde_json::json!({"code": i, "name": "x".repeat(500)}))
}

/// Kills the write of `item-1` (central data, written on the primary server) at the `after`-th failpoint; says where it stopped.
fn killed_write(db: &Db, after: u64) -> &'static str {
    failpoint::arm(after);
    let outcome = catch_unwind(AssertUnwindSafe(|| db.write(&[item(1)])));
    failpoint::disarm();
    let payload = outcome.expect_err("the write was killed");
    payload.downcast_ref::<Killed>().expect("killed at a failpoint").at
}

#[test]
fn a_kill_before_the_commit_leaves_nothing_and_after_it_everything() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = site(dir.path());
    let logged = |db: &Db| db.count_changes_after(model::Seq(0), &SiteId::from("central")).expect("log");
    let before = logged(&db);
    assert_eq!(killed_write(&db, 0), failpoint::BEFORE_COMMIT);
    drop(db);
    let db = Db::open(&dir.path().join("site.sqlite")).expect("opened again, as after a restart");
    assert!(db.record("item", "item-1").expect("read").is_none(), "a killed transaction left its record");
    assert_eq!(logged(&db), before, "and its log entry");

    assert_eq!(killed_write(&db, 1), failpoint::AFTER_COMMIT);
    drop(db);
    let db = Db::open(&dir.path().join("site.sqlite")).expect("opened again");
    assert!(db.record("item", "item-1").expect("read").is_some(), "a committed write was lost");
    // A handle that lived through a kill still writes (its lock was poisoned by the unwind).
    assert_eq!(killed_write(&db, 0), failpoint::BEFORE_COMMIT);
    db.write(&[item(2)]).expect("the handle still writes");
}

#[test]
fn an_unarmed_failpoint_does_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = site(dir.path());
    failpoint::arm(1_000);
    db.write(&[item(1)]).expect("a write");
    assert!(failpoint::disarm(), "the countdown had not reached zero");
}

#[test]
fn a_full_disk_refuses_a_write_whole_and_says_so() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = site(dir.path());
    db.write(&[item(0)]).expect("a write with room");
    db.limit_disk(Some(0)).expect("fill the disk");
    let writes: Vec<Write> = (1..200).map(item).collect();
    let err = db.write(&writes).expect_err("no room for 100 KB");
    assert!(matches!(err, StoreError::DiskFull(_)), "{err:?}");
    reads_well(&err.to_string());
    assert!(db.record("item", "item-1").expect("read").is_none(), "part of a refused write was kept");
    db.limit_disk(None).expect("free the disk");
    db.write(&writes).expect("the same write, once there is room");
    assert!(db.record("item", "item-199").expect("read").is_some());
}

/// What a person reads when the disk is full names the cause and what to do.
fn reads_well(message: &str) {
    assert!(
        message.starts_with("the disk holding the database is full, so nothing of this write was kept"),
        "{message}"
    );
    assert!(message.ends_with("free some space and try again"), "{message}");
}
