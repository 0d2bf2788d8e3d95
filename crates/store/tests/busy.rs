//! Readers do not wait for writers, and a database that cannot let a request in says so.
//!
//! On SQLite a transaction holds the one writer; reads (status pages, pulls, the dashboard's
//! network) go to read connections and must answer while it is held. On PostgreSQL, when every
//! pooled connection stays in use, a request waits a bounded time and gets `Busy` (the central
//! server answers 503 with Retry-After), never waits forever.

#[allow(unused_macros, dead_code)] // this file runs its own tests (not `on_each_backend!`), on SQLite by hand
mod backends;

use model::SiteId;
use outpost_store::{Db, StateKey, Write};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// A database with a few records and a site's bookkeeping.
fn filled(db: &Db) {
    db.set_state(StateKey::LocalSite, "central").expect("identity");
    db.transaction(|tx| {
        tx.set_password_hash(&SiteId::from("north"), "hash", true)?;
        let site = serde_json::json!({"name": "Central", "central": true, "primary": true});
        tx.write_founding_site(&SiteId("central".into()), &site)?;
        Ok(())
    })
    .expect("bookkeeping");
    let items: Vec<Write> =
        (0..50).map(|i| Write::upsert("item", format!("item-{i}"), &serde_json::json!({"code": i}))).collect();
    db.write(&items).expect("items");
}

#[test]
fn sqlite_reads_answer_while_a_transaction_holds_the_writer() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Arc::new(Db::open(&dir.path().join("central.sqlite")).expect("open"));
    filled(&db);
    let (holding, held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            db.transaction(|tx| {
                tx.set_state(StateKey::LastNotice, "yes")?;
                holding.send(()).expect("say the writer is held");
                released.recv().expect("wait to be released");
                Ok(())
            })
        })
    };
    held.recv().expect("the writer is held");
    let (answered, answers) = mpsc::channel();
    {
        let db = db.clone();
        std::thread::spawn(move || {
            let records = db.count_records().expect("count");
            let dump = db.dump().expect("dump").len();
            let sites = db.site_sync_rows().expect("sites").len();
            let credentials = db.site_credentials(&SiteId::from("north")).expect("credentials").is_some();
            let network = db.network().central.clone();
            db.mark_pulled(&SiteId("north".into()), None, None).expect("note the pull");
            // Uncommitted writes are not seen.
            let busy = db.state(StateKey::LastNotice).expect("state");
            answered.send((records, dump, sites, credentials, network, busy)).expect("answer");
        });
    }
    let answer = answers.recv_timeout(Duration::from_secs(5));
    release.send(()).expect("release the writer");
    writer.join().expect("the writer thread").expect("the transaction");
    let (records, dump, sites, credentials, network, busy) =
        answer.expect("reads answered while a transaction held the writer");
    assert_eq!((records, dump, sites, credentials), (51, 51, 1, true));
    assert_eq!(network.as_str(), "central");
    assert_eq!(busy, None, "a read does not see an uncommitted write");
    // The pull noted while the writer was busy is written once it is free.
    let north = db.site_sync_rows().expect("sites").into_iter().find(|s| s.site == "north").expect("north");
    assert!(north.last_pull_at.is_some(), "the pull was noted after the transaction ended");
    assert_eq!(db.state(StateKey::LastNotice).expect("state").as_deref(), Some("yes"));
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_with_every_connection_in_use_answers_busy_after_a_bounded_wait() {
    use backends::Fixture;
    use outpost_store::StoreError;
    // This file's own process: the setting touches no other test.
    std::env::set_var("OUTPOST_PG_ACQUIRE_MS", "500");
    let Some(fixture) = Fixture::postgres() else { return };
    let db = Arc::new(fixture.open());
    filled(&db);
    let (holding, held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(std::sync::Mutex::new(released));
    let holders: Vec<_> = (0..8)
        .map(|_| {
            let (db, holding, released) = (db.clone(), holding.clone(), released.clone());
            std::thread::spawn(move || {
                db.transaction(|_| {
                    holding.send(()).expect("say a connection is held");
                    let _ = released.lock().map(|r| r.recv());
                    Ok(())
                })
            })
        })
        .collect();
    for _ in 0..8 {
        held.recv_timeout(Duration::from_secs(10)).expect("eight connections held");
    }
    let started = std::time::Instant::now();
    let err = db.count_records().expect_err("no connection is free");
    let waited = started.elapsed();
    assert!(matches!(err, StoreError::Busy(_)), "{err}");
    assert!(err.to_string().contains("busy"), "{err}");
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(5), "waited {waited:?}");
    for _ in 0..8 {
        release.send(()).expect("release");
    }
    for holder in holders {
        holder.join().expect("a holder").expect("its transaction");
    }
    assert_eq!(db.count_records().expect("count once free"), 51);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_a_new_record_written_meanwhile_by_another_process_fails_the_batch_as_busy_and_loses_nothing() {
    use backends::Fixture;
    use outpost_store::StoreError;
    let Some(fixture) = Fixture::postgres() else { return };
    let (ours, theirs) = (fixture.open(), fixture.open());
    filled(&ours);
    let me = SiteId("central".into());
    // A batch large enough to be looked up ahead and sent together.
    let mut mine = vec![Write::upsert("item", "item-race", &serde_json::json!({"code": "OURS"}))];
    mine.extend(
        (0..outpost_store::PREFETCH_FROM)
            .map(|i| Write::upsert("item", format!("item-ours-only-{i}"), &serde_json::json!({"code": "ALSO OURS"}))),
    );
    let result = ours.transaction(|tx| {
        tx.prefetch_all(mine.iter().map(|w| (w.table.as_str(), w.id.as_str())))?;
        for write in &mine {
            tx.write_checked(write, &me)?;
        }
        // Another server process creates the same record, and commits first.
        theirs.write(&[Write::upsert("item", "item-race", &serde_json::json!({"code": "THEIRS"}))])?;
        Ok(())
    });
    let err = result.expect_err("the batch that came second must not commit");
    assert!(matches!(err, StoreError::Busy(_)), "{err}");
    assert_eq!(theirs.record("item", "item-race").expect("read"), Some(serde_json::json!({"code": "THEIRS"})));
    assert_eq!(theirs.record("item", "item-ours-only-0").expect("read"), None, "nothing of the failed batch is kept");
    // Sent again, the batch sees the record and updates it.
    ours.write(&mine).expect("the batch sent again");
    assert_eq!(theirs.record("item", "item-race").expect("read"), Some(serde_json::json!({"code": "OURS"})));
    assert!(theirs.record("item", "item-ours-only-0").expect("read").is_some());
}
