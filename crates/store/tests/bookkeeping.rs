//! The rest of the storage API, on each backend, as the central server and the sites use it:
//! pull sources and their counts, snapshot paging, the sync bookkeeping (acknowledgements,
//! credentials, rejections), a log that starts after a given position, and a second handle on
//! the same database (another process) seeing topology changes. Under the `postgres` feature,
//! also what only PostgreSQL allows: handles writing at the same time.

use model::{Action, Change, LogPos, RecordId, Seq, SiteId, StoreId};
use outpost_store::{Db, PullSource, PushedBatch, RejectedFrom, RejectionRecord, StateKey, Write};
use serde_json::{json, Value};

#[macro_use]
mod backends;
use backends::Fixture;

fn central() -> SiteId {
    SiteId::from("central")
}

fn north() -> SiteId {
    SiteId::from("north")
}

fn south() -> SiteId {
    SiteId::from("south")
}

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

/// Sites central (central and primary), north and south; `north-pharmacy` active on north,
/// `south-clinic` on south. The node is `me`.
fn open_node(fx: &Fixture, me: &str) -> Db {
    let db = fx.open();
    db.transaction(|tx| {
        for change in [
            received("site", "central", json!({"name": "Central", "central": true, "primary": true})),
            received("site", "north", json!({"name": "North"})),
            received("site", "south", json!({"name": "South"})),
            received("store", "north-pharmacy", json!({"name": "North pharmacy"})),
            received("store", "south-clinic", json!({"name": "South clinic"})),
            store_sync("north-pharmacy", "north", "active"),
            store_sync("south-clinic", "south", "active"),
        ] {
            tx.apply_received(&change)?;
        }
        tx.set_state(StateKey::LocalSite, me)
    })
    .expect("seed the network");
    db
}

fn stock_line(id: &str, store: &str, packs: f64) -> Write {
    Write::upsert("stock_line", id, &json!({"store_id": store, "item_id": "item-1", "available_packs": packs}))
}

/// Logs a change on the central server as a push would: through the one checked write with
/// `origin` as the writer, then routed to a bucket or to sites' outboxes.
fn log_change(db: &Db, origin: &SiteId, write: &Write, bucket: Option<&str>, outbox: &[SiteId]) -> Seq {
    db.transaction(|tx| {
        let seq = tx.write_as(write.incoming(), origin)?.seq;
        if let Some(bucket) = bucket {
            tx.set_bucket(seq, bucket)?;
        }
        for site in outbox {
            tx.add_outbox(site, seq)?;
        }
        Ok(seq)
    })
    .expect("log the change")
}

fn item(id: &str, name: &str) -> Write {
    Write::upsert("item", id, &json!({"name": name}))
}

/// A batch that reached `acked` (its start and digest do not matter here).
fn pushed(acked: Seq) -> PushedBatch {
    PushedBatch { from: Seq(0), acked, digest: String::new() }
}

fn barcode(id: &str, code: &str) -> Write {
    Write::upsert("barcode", id, &json!({"barcode": code}))
}

/// The log position of the entry at `seq`, as `site` sees it in `source` (`Seq(0)`: the start).
fn pos(db: &Db, source: &PullSource, site: &SiteId, seq: Seq) -> LogPos {
    if seq == Seq(0) {
        return LogPos::default();
    }
    db.pull_from(source, site, LogPos::default(), 100_000)
        .expect("pull")
        .into_iter()
        .find(|(change, _, _)| change.seq == seq)
        .map(|(_, pos, _)| pos)
        .expect("the entry is in the source")
}

fn pulled(db: &Db, source: &PullSource, site: &SiteId, after: Seq) -> Vec<(Seq, String)> {
    db.pull_from(source, site, pos(db, source, site, after), 100)
        .expect("pull")
        .into_iter()
        .map(|(change, _, size)| {
            assert!(size >= 64, "a change's size counts its overhead");
            (change.seq, change.id.0)
        })
        .collect()
}

fn is_timestamp(text: &str) -> bool {
    // 2025-01-31T12:34:56.789Z, as SQLite's strftime('%Y-%m-%dT%H:%M:%fZ') writes it.
    let b = text.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

// Pull sources.

fn buckets_give_their_changes_in_log_order_without_the_sites_own(fx: &Fixture) {
    let db = open_node(fx, "central");
    let a = log_change(&db, &central(), &item("item-a", "A"), Some("all"), &[]);
    // A barcode may be added on any site; it travels to every site like the rest of central data.
    let from_north = log_change(&db, &north(), &barcode("item-n", "N"), Some("all"), &[]);
    let b = log_change(&db, &central(), &item("item-b", "B"), Some("all"), &[]);
    let elsewhere = log_change(&db, &central(), &item("item-d", "D"), Some("dispensary"), &[]);
    assert!(a < from_north && from_north < b && b < elsewhere);

    let all = PullSource::Bucket("all");
    assert_eq!(pulled(&db, &all, &north(), Seq(0)), vec![(a, "item-a".into()), (b, "item-b".into())]);
    assert_eq!(
        pulled(&db, &all, &south(), Seq(0)),
        vec![(a, "item-a".into()), (from_north, "item-n".into()), (b, "item-b".into())]
    );
    assert_eq!(pulled(&db, &all, &south(), a), vec![(from_north, "item-n".into()), (b, "item-b".into())]);
    assert_eq!(db.pull_from(&all, &south(), LogPos::default(), 2).expect("pull").len(), 2, "the limit holds");
    assert_eq!(db.count_pull(&all, &north(), pos(&db, &all, &north(), Seq(0))).expect("count"), 2);
    assert_eq!(db.count_pull(&all, &south(), pos(&db, &all, &south(), a)).expect("count"), 2);
    assert_eq!(pulled(&db, &PullSource::Bucket("dispensary"), &north(), Seq(0)), vec![(elsewhere, "item-d".into())]);
    assert_eq!(db.last_seq().expect("last position"), elsewhere);

    // An update supersedes the earlier entry: the bucket holds the record once, at its latest.
    let a_again = log_change(&db, &central(), &item("item-a", "A2"), Some("all"), &[]);
    assert_eq!(
        pulled(&db, &all, &north(), Seq(0)),
        vec![(b, "item-b".into()), (a_again, "item-a".into())],
        "one entry per record"
    );
    let changes = db.pull_from(&all, &north(), pos(&db, &all, &north(), b), 10).expect("pull");
    assert_eq!(changes.len(), 1);
    let data: Value = serde_json::from_str(changes[0].0.data.as_ref().expect("data").get()).expect("JSON");
    assert_eq!(data, json!({"name": "A2"}));
    assert_eq!(changes[0].0.origin, central());
}

fn outboxes_give_each_site_its_narrow_changes_and_skip_superseded_entries(fx: &Fixture) {
    let db = open_node(fx, "central");
    let one = log_change(&db, &north(), &stock_line("sl-1", "north-pharmacy", 1.0), None, &[south()]);
    let two = log_change(&db, &north(), &stock_line("sl-2", "north-pharmacy", 2.0), None, &[south(), central()]);
    let outbox = PullSource::Outbox;
    assert_eq!(pulled(&db, &outbox, &south(), Seq(0)), vec![(one, "sl-1".into()), (two, "sl-2".into())]);
    assert_eq!(pulled(&db, &outbox, &central(), Seq(0)), vec![(two, "sl-2".into())]);
    assert!(pulled(&db, &outbox, &north(), Seq(0)).is_empty());
    assert_eq!(db.count_pull(&outbox, &south(), pos(&db, &outbox, &south(), one)).expect("count"), 1);

    // Adding the same row twice keeps one.
    db.transaction(|tx| tx.add_outbox(&south(), one)).expect("add again");
    assert_eq!(db.count_pull(&outbox, &south(), pos(&db, &outbox, &south(), Seq(0))).expect("count"), 2);

    // sl-1 changes again: its old outbox row no longer joins a log entry.
    let three = log_change(&db, &north(), &stock_line("sl-1", "north-pharmacy", 3.0), None, &[south()]);
    assert_eq!(pulled(&db, &outbox, &south(), Seq(0)), vec![(two, "sl-2".into()), (three, "sl-1".into())]);
    assert_eq!(db.count_pull(&outbox, &south(), pos(&db, &outbox, &south(), Seq(0))).expect("count"), 2);
}

fn a_delete_and_a_merge_travel_as_logged_actions_without_data(fx: &Fixture) {
    let db = open_node(fx, "central");
    log_change(&db, &central(), &item("item-a", "A"), Some("all"), &[]);
    log_change(&db, &central(), &item("item-b", "B"), Some("all"), &[]);
    let merge =
        Write { table: "item".into(), id: "item-a".into(), action: Action::MergeInto("item-b".into()), data: None };
    let merged = log_change(&db, &central(), &merge, Some("all"), &[]);
    let deleted = log_change(&db, &central(), &Write::delete("item", "item-b"), Some("all"), &[]);
    let changes = db.pull_from(&PullSource::Bucket("all"), &north(), LogPos::default(), 10).expect("pull");
    let actions: Vec<(Seq, &str, Action, bool)> =
        changes.iter().map(|(c, _, _)| (c.seq, c.id.as_str(), c.action.clone(), c.data.is_some())).collect();
    assert_eq!(
        actions,
        vec![(merged, "item-a", Action::MergeInto("item-b".into()), false), (deleted, "item-b", Action::Delete, false)]
    );
    assert_eq!(db.record("item", "item-a").expect("read"), None);
    assert_eq!(db.counts_by_table().expect("counts").iter().find(|(t, _)| t == "item"), None);
}

// Snapshots and counts.

fn snapshots_page_through_live_records_in_table_and_id_order(fx: &Fixture) {
    let db = open_node(fx, "central");
    // Byte order: upper case before lower case, '-' before digits.
    for id in ["item-b", "item-B", "item-a", "item-10", "item-9", "item-"] {
        log_change(&db, &central(), &item(id, id), Some("all"), &[]);
    }
    log_change(&db, &central(), &Write::delete("item", "item-9"), Some("all"), &[]);
    log_change(&db, &north(), &stock_line("sl-1", "north-pharmacy", 1.0), None, &[]);
    let items = |after: Option<(&str, &str)>, limit| -> Vec<String> {
        db.snapshot_after(after, limit)
            .expect("snapshot")
            .into_iter()
            .filter(|s| s.table == "item")
            .map(|s| s.id.0)
            .collect()
    };
    assert_eq!(items(Some(("item", "")), 100), vec!["item-", "item-10", "item-B", "item-a", "item-b"]);
    assert_eq!(items(Some(("item", "item-10")), 2), vec!["item-B", "item-a"]);

    let all = db.snapshot_after(None, 1000).expect("snapshot");
    let keys: Vec<(String, String)> = all.iter().map(|s| (s.table.clone(), s.id.0.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "(table, id) order");
    let dumped: Vec<(String, String)> =
        db.dump().expect("dump").into_iter().map(|(table, id, _)| (table, id)).collect();
    assert_eq!(dumped, keys, "dump walks the same order");
    let line = all.iter().find(|s| s.table == "stock_line").expect("a stock line");
    assert_eq!(line.keys.store, Some(StoreId::from("north-pharmacy")), "with its routing keys");

    // The estimate of what remains counts tombstones too (one here: item-9).
    assert_eq!(db.count_records_after(None).expect("count"), all.len() as u64 + 1);
    let after = |id: &str| all.iter().filter(|s| (s.table.as_str(), s.id.as_str()) > ("item", id)).count() as u64;
    assert_eq!(db.count_records_after(Some(("item", "item-"))).expect("count"), after("item-") + 1, "item-9 is after");
    assert_eq!(db.count_records_after(Some(("item", "item-B"))).expect("count"), after("item-B"), "item-9 is before");
    assert_eq!(db.count_records().expect("count"), all.len() as u64);
    let counts = db.counts_by_table().expect("counts");
    assert_eq!(counts.iter().find(|(t, _)| t == "item").map(|(_, n)| *n), Some(5));
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), all.len() as u64);
    let tables: Vec<&String> = counts.iter().map(|(t, _)| t).collect();
    assert!(tables.windows(2).all(|w| w[0] < w[1]), "by table: {tables:?}");
}

// The sync bookkeeping.

// What the dashboard shows of a site over time.

fn a_sites_requests_make_sessions_and_its_debt_is_counted_sized_and_sampled(fx: &Fixture) {
    use outpost_store::history::{Debt, DebtSample, SyncRequest, KEEP_SAMPLES_SECS};
    let db = open_node(fx, "central");
    let at = 1_800_000_000;
    let request = |at, pushed, pulled| SyncRequest { at, pushed, pulled, bytes_up: 100, bytes_down: 1_000, busy_ms: 5 };
    // A push and two pulls a minute apart are one session; an hour later is another.
    db.note_sync(&north(), request(at, 3, 0)).expect("note");
    db.note_sync(&north(), request(at + 60, 0, 10)).expect("note");
    db.note_sync(&north(), request(at + 170, 0, 5)).expect("note");
    db.note_sync(&north(), request(at + 3_600, 1, 0)).expect("note");
    db.note_sync(&south(), request(at + 30, 0, 2)).expect("note");
    let sessions = db.sync_sessions(&north(), 0).expect("sessions");
    let seen: Vec<_> = sessions.iter().map(|s| (s.started_at, s.ended_at, s.requests, s.pushed, s.pulled)).collect();
    assert_eq!(seen, vec![(at, at + 170, 3, 3, 15), (at + 3_600, at + 3_600, 1, 1, 0)]);
    assert_eq!((sessions[0].bytes_up, sessions[0].bytes_down, sessions[0].busy_ms), (300, 3_000, 15));
    assert_eq!(db.sync_sessions(&north(), at + 1_000).expect("sessions").len(), 1, "since a time");
    assert_eq!(db.sync_sessions(&south(), 0).expect("sessions").len(), 1, "each site its own");

    // The debt: what waits for south in the outbox, its size as stored, and the first of it.
    let outbox = PullSource::Outbox;
    assert_eq!(db.debt(&outbox, &south(), LogPos::default()).expect("debt"), Debt::default());
    let one = log_change(&db, &north(), &stock_line("sl-1", "north-pharmacy", 1.0), None, &[south()]);
    let two = log_change(&db, &north(), &stock_line("sl-2", "north-pharmacy", 2.0), None, &[south()]);
    let debt = db.debt(&outbox, &south(), LogPos::default()).expect("debt");
    let stored: u64 = ["sl-1", "sl-2"]
        .iter()
        .map(|id| db.record("stock_line", id).expect("read").expect("held").to_string().len() as u64)
        .sum();
    assert_eq!((debt.changes, debt.oldest), (2, Some(one)));
    assert!(debt.bytes >= stored - 4 && debt.bytes <= stored + 4, "{} bytes, {stored} as JSON", debt.bytes);
    let after_one = pos(&db, &outbox, &south(), one);
    assert_eq!(db.debt(&outbox, &south(), after_one).expect("debt").oldest, Some(two));

    // Samples: kept per site and time, forgotten after a month; the first one whose log
    // reached a position says when a change there was already logged.
    let sample = |at, owed, log_seq| DebtSample { site: "south".into(), at, owed, owed_bytes: 10 * owed, log_seq };
    db.add_debt_sample(&sample(at, 0, Seq(0))).expect("sample");
    db.add_debt_sample(&sample(at + 3_600, 2, two)).expect("sample");
    db.add_debt_sample(&sample(at + 3_600, 3, two)).expect("the same hour again replaces it");
    let samples = db.debt_samples(Some(&south()), 0).expect("samples");
    assert_eq!(samples.iter().map(|s| (s.at, s.owed)).collect::<Vec<_>>(), vec![(at, 0), (at + 3_600, 3)]);
    assert!(db.debt_samples(Some(&north()), 0).expect("samples").is_empty());
    assert_eq!(db.logged_by(one).expect("logged by"), Some(at + 3_600));
    assert_eq!(db.logged_by(Seq(two.0 + 1)).expect("logged by"), None, "not logged by any sample yet");
    db.add_debt_sample(&sample(at + KEEP_SAMPLES_SECS + 10, 0, two)).expect("a month later");
    let kept: Vec<i64> = db.debt_samples(None, 0).expect("samples").iter().map(|s| s.at).collect();
    assert_eq!(kept, vec![at + 3_600, at + KEEP_SAMPLES_SECS + 10], "the oldest is forgotten");
}

fn a_push_is_acknowledged_and_the_site_shows_when_it_last_synced(fx: &Fixture) {
    let db = open_node(fx, "central");
    assert!(db.transaction(|tx| tx.set_password_hash(&SiteId::from("north"), "hash-1", true)).expect("create"));
    assert!(
        !db.transaction(|tx| tx.set_password_hash(&SiteId::from("nowhere"), "hash", false)).expect("update"),
        "no such site"
    );
    assert!(db.transaction(|tx| tx.set_password_hash(&SiteId::from("north"), "hash-2", false)).expect("update"));
    assert_eq!(db.password_hash(&SiteId::from("north")).expect("hash").as_deref(), Some("hash-2"));
    assert_eq!(db.password_hash(&SiteId::from("nowhere")).expect("hash"), None);

    let rows = db.site_sync_rows().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].site.as_str(), rows[0].acked), ("north", Seq(0)));
    assert!(rows[0].never_synced() && !rows[0].stale, "never synced is its own state, not stale");
    assert_eq!(db.transaction(|tx| tx.acked(&north())).expect("acked"), Seq(0));

    db.transaction(|tx| {
        assert_eq!(tx.acked(&north())?, Seq(0));
        tx.record_push(&north(), &pushed(Seq(42)))
    })
    .expect("record the push");
    assert_eq!(db.transaction(|tx| tx.acked(&north())).expect("acked"), Seq(42));
    db.mark_pulled(&north(), None, None).expect("mark pulled");
    db.transaction(|tx| tx.set_password_hash(&SiteId::from("south"), "hash-s", true)).expect("create");

    let rows = db.site_sync_rows().expect("rows");
    let sites: Vec<&str> = rows.iter().map(|r| r.site.as_str()).collect();
    assert_eq!(sites, vec!["north", "south"]);
    let row = &rows[0];
    assert_eq!(row.acked, Seq(42));
    assert!(row.last_push_at.as_deref().is_some_and(is_timestamp), "{:?}", row.last_push_at);
    assert!(row.last_pull_at.as_deref().is_some_and(is_timestamp), "{:?}", row.last_pull_at);
    assert!(!row.stale && !row.never_synced(), "synced just now");
    assert!(rows[1].never_synced() && !rows[1].stale, "south never synced");
}

fn rejections_are_kept_once_and_listed_oldest_or_newest_first(fx: &Fixture) {
    let db = open_node(fx, "central");
    db.transaction(|tx| tx.set_password_hash(&SiteId::from("north"), "hash", true)).expect("create");
    let rejection = |seq: i64, reason: &str| RejectionRecord {
        from: RejectedFrom::Site(north()),
        seq: Seq(seq),
        table: "item".into(),
        id: format!("item-{seq}").into(),
        action: "upsert".into(),
        data: Some("{}".into()),
        reason: reason.into(),
        at: String::new(),
    };
    db.transaction(|tx| {
        tx.keep_rejection(&rejection(3, "no authority"))?;
        tx.keep_rejection(&rejection(5, "unknown table"))?;
        tx.keep_rejection(&rejection(3, "the same change again"))?;
        tx.keep_rejection(&RejectionRecord { from: RejectedFrom::Site(south()), ..rejection(4, "elsewhere") })
    })
    .expect("keep");
    assert_eq!(db.count_rejections().expect("count"), 3, "a change is kept once");

    let between = db.transaction(|tx| tx.rejections_between(&SiteId::from("north"), Seq(1), Seq(5))).expect("between");
    let kept: Vec<(Seq, &str)> = between.iter().map(|r| (r.seq, r.reason.as_str())).collect();
    assert_eq!(kept, vec![(Seq(3), "no authority"), (Seq(5), "unknown table")]);
    assert!(between.iter().all(|r| is_timestamp(&r.at)), "{between:?}");
    assert_eq!(
        db.transaction(|tx| tx.rejections_between(&SiteId::from("north"), Seq(4), Seq(4))).expect("between"),
        vec![]
    );

    let oldest_first: Vec<Seq> = db.rejections(None).expect("list").iter().map(|r| r.seq).collect();
    assert_eq!(oldest_first, vec![Seq(3), Seq(5), Seq(4)]);
    let newest: Vec<Seq> = db.rejections(Some(2)).expect("list").iter().map(|r| r.seq).collect();
    assert_eq!(newest, vec![Seq(4), Seq(5)]);
    assert_eq!(db.site_sync_rows().expect("rows")[0].rejections, 2);
}

fn a_log_started_after_a_position_numbers_new_changes_after_it(fx: &Fixture) {
    let db = open_node(fx, "north");
    db.transaction(|tx| {
        tx.start_log_after(Seq(0))?;
        tx.start_log_after(Seq(1000))
    })
    .expect("start the log");
    assert_eq!(db.count_changes_after(Seq(0), &north()).expect("count"), 0, "the marker is not a change");
    assert!(db.changes_after(Seq(0), &north(), 10, usize::MAX).expect("changes").is_empty());
    let seq = db.write(&[stock_line("sl-1", "north-pharmacy", 1.0)]).expect("write")[0];
    assert!(seq > Seq(1000), "{seq:?}");
    let changes = db.changes_after(Seq(1000), &north(), 10, usize::MAX).expect("changes");
    assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![seq]);
    assert_eq!(db.last_seq().expect("last"), seq);
    // Starting again at or below where the log is changes nothing.
    db.transaction(|tx| tx.start_log_after(Seq(1000))).expect("again");
    let next = db.write(&[stock_line("sl-2", "north-pharmacy", 1.0)]).expect("write")[0];
    assert!(next > seq);
}

fn pushes_are_read_in_batches_bounded_by_count_and_bytes(fx: &Fixture) {
    let db = open_node(fx, "north");
    let seqs: Vec<Seq> = db
        .write(&(0..10).map(|i| stock_line(&format!("sl-{i}"), "north-pharmacy", 1.0)).collect::<Vec<_>>())
        .expect("write");
    let batch = db.changes_after(Seq(0), &north(), 4, usize::MAX).expect("changes");
    assert_eq!(batch.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs[..4]);
    let one = db.changes_after(seqs[2], &north(), 100, 1).expect("changes");
    assert_eq!(one.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![seqs[3]], "at least one, however large");
    assert_eq!(db.count_changes_after(seqs[2], &north()).expect("count"), 7);
    assert!(db.changes_after(Seq(0), &south(), 100, usize::MAX).expect("changes").is_empty(), "by origin");
}

fn checked_writes_say_what_they_did_and_state_is_kept_in_the_transaction(fx: &Fixture) {
    let db = open_node(fx, "north");
    let me = north();
    let (created, updated, deleted) = db
        .transaction(|tx| {
            let created = tx.write_checked_full(&stock_line("sl-1", "north-pharmacy", 1.0), &me)?;
            let updated = tx.write_checked_full(&stock_line("sl-1", "north-pharmacy", 2.0), &me)?;
            let deleted = tx.write_checked_full(&Write::delete("stock_line", "sl-1"), &me)?;
            tx.set_state(StateKey::PullCursor, "one")?;
            tx.set_state(StateKey::PullCursor, "two")?;
            assert_eq!(tx.state(StateKey::PullCursor)?.as_deref(), Some("two"));
            assert_eq!(tx.current("stock_line", "sl-1")?.map(|c| (c.data, c.log_seq)), Some((None, Some(deleted.seq))));
            Ok((created, updated, deleted))
        })
        .expect("write");
    assert_eq!((created.op, updated.op, deleted.op), (model::Op::Create, model::Op::Update, model::Op::Delete));
    assert_eq!(created.keys.store, Some(StoreId::from("north-pharmacy")));
    assert_eq!(deleted.keys.store, Some(StoreId::from("north-pharmacy")), "a delete keeps the stored keys");
    assert!(created.seq < updated.seq && updated.seq < deleted.seq);
    assert_eq!(db.state(StateKey::PullCursor).expect("state").as_deref(), Some("two"));
    assert_eq!(db.state(StateKey::LastNotice).expect("state"), None);
    assert_eq!(db.local_site().expect("local site"), me);
}

// Another handle on the same database: another process.

fn a_topology_change_committed_through_another_handle_is_seen(fx: &Fixture) {
    let writer = open_node(fx, "north");
    let reader = fx.open();
    assert_eq!(reader.local_site().expect("local site"), north());
    assert_eq!(reader.network().active_site(&StoreId::from("north-pharmacy")), Some(&north()));
    reader.write(&[stock_line("sl-1", "north-pharmacy", 1.0)]).expect("north-pharmacy is active here");

    // The store moves to south through the other handle.
    writer
        .transaction(|tx| {
            tx.apply_received(&store_sync("north-pharmacy", "north", "collector"))?;
            tx.apply_received(&store_sync("north-pharmacy", "south", "active"))
        })
        .expect("move the store");
    assert_eq!(reader.network().active_site(&StoreId::from("north-pharmacy")), Some(&south()));
    let err = reader.write(&[stock_line("sl-2", "north-pharmacy", 1.0)]).expect_err("moved away");
    assert!(matches!(err, outpost_store::StoreError::Refused { .. }), "{err:?}");

    // And back, with a patient-visibility record in between (a frequent topology table).
    writer
        .transaction(|tx| {
            tx.apply_received(&received(
                "name_visibility",
                "nv-1",
                json!({"name_id": "patient-1", "store_id": "south-clinic"}),
            ))?;
            tx.apply_received(&store_sync("north-pharmacy", "south", "collector"))?;
            tx.apply_received(&store_sync("north-pharmacy", "north", "active"))
        })
        .expect("move it back");
    reader.write(&[stock_line("sl-2", "north-pharmacy", 1.0)]).expect("active here again");
    let network = reader.network();
    assert!(network
        .name_visibility
        .get(&RecordId::from("patient-1"))
        .is_some_and(|s| s.contains(&StoreId::from("south-clinic"))));

    // A change made through this handle is seen by the other one too.
    reader
        .transaction(|tx| tx.apply_received(&received("store", "new-store", json!({"name": "New"}))))
        .expect("add a store");
    assert!(writer.network().stores.contains_key(&StoreId::from("new-store")));
}

on_each_backend!(
    buckets_give_their_changes_in_log_order_without_the_sites_own,
    outboxes_give_each_site_its_narrow_changes_and_skip_superseded_entries,
    a_delete_and_a_merge_travel_as_logged_actions_without_data,
    snapshots_page_through_live_records_in_table_and_id_order,
    a_push_is_acknowledged_and_the_site_shows_when_it_last_synced,
    a_sites_requests_make_sessions_and_its_debt_is_counted_sized_and_sampled,
    rejections_are_kept_once_and_listed_oldest_or_newest_first,
    a_log_started_after_a_position_numbers_new_changes_after_it,
    pushes_are_read_in_batches_bounded_by_count_and_bytes,
    checked_writes_say_what_they_did_and_state_is_kept_in_the_transaction,
    a_topology_change_committed_through_another_handle_is_seen,
);

/// What only PostgreSQL allows: several handles (server processes) and threads writing at once.
#[cfg(feature = "postgres")]
mod postgres_concurrency {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_push_waits_for_another_process_push_of_the_same_site_but_not_of_another() {
        let Some(fx) = Fixture::postgres() else { return };
        let first = open_node(&fx, "central");
        let second = fx.open();
        first
            .transaction(|tx| {
                tx.set_password_hash(&SiteId::from("north"), "hash", true)?;
                tx.set_password_hash(&SiteId::from("south"), "hash", true)
            })
            .expect("create the sites");
        let (locked, wait_for_lock) = mpsc::channel();
        let (go_on, wait_to_go_on) = mpsc::channel::<()>();
        let second_done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let first = &first;
            let first_push = s.spawn(move || {
                first
                    .transaction(|tx| {
                        let acked = tx.acked(&north())?;
                        locked.send(()).expect("tell the other process");
                        let told = wait_to_go_on.recv_timeout(Duration::from_secs(10)).is_ok();
                        tx.record_push(&north(), &pushed(Seq(acked.0 + 10)))?;
                        Ok(told)
                    })
                    .expect("first push")
            });
            wait_for_lock.recv().expect("the first push holds the site");

            // Were this to wait for the first push, the first push would time out waiting for us.
            let other_site = second
                .transaction(|tx| {
                    let acked = tx.acked(&south())?;
                    tx.record_push(&south(), &pushed(Seq(acked.0 + 1)))?;
                    Ok(acked)
                })
                .expect("push of another site");
            assert_eq!(other_site, Seq(0));

            let second_push = s.spawn(|| {
                let seen = second
                    .transaction(|tx| {
                        let acked = tx.acked(&north())?;
                        tx.record_push(&north(), &pushed(Seq(acked.0 + 10)))?;
                        Ok(acked)
                    })
                    .expect("second push");
                second_done.store(true, Ordering::SeqCst);
                seen
            });
            std::thread::sleep(Duration::from_millis(300));
            assert!(!second_done.load(Ordering::SeqCst), "the second push of the site waits for the first");
            go_on.send(()).expect("let the first push finish");
            assert!(first_push.join().expect("first push"), "the push of another site did not wait");
            assert_eq!(second_push.join().expect("second push"), Seq(10), "it saw the first push's acknowledgement");
        });
        assert_eq!(first.transaction(|tx| tx.acked(&north())).expect("acked"), Seq(20));
    }

    #[test]
    fn concurrent_writers_on_two_handles_number_every_change_once_and_keep_one_entry_per_record() {
        let Some(fx) = Fixture::postgres() else { return };
        let one = open_node(&fx, "central");
        let two = fx.open();
        const THREADS: usize = 12; // more than one handle's pool
        const TRANSACTIONS: usize = 5;
        const PER_TRANSACTION: usize = 10;
        std::thread::scope(|s| {
            for thread in 0..THREADS {
                let db = if thread % 3 == 0 { &two } else { &one };
                s.spawn(move || {
                    for t in 0..TRANSACTIONS {
                        for i in 0..PER_TRANSACTION {
                            let write = item(&format!("item-{thread}-{t}-{i}"), "x");
                            log_change(db, &central(), &write, Some("all"), &[]);
                        }
                        // Every transaction also rewrites one shared record.
                        log_change(db, &central(), &item("item-shared", &format!("{thread}-{t}")), Some("all"), &[]);
                    }
                });
            }
        });
        let changes = one.pull_from(&PullSource::Bucket("all"), &north(), LogPos::default(), 100_000).expect("pull");
        let positions: Vec<LogPos> = changes.iter().map(|(_, p, _)| *p).collect();
        assert_eq!(changes.len(), THREADS * TRANSACTIONS * PER_TRANSACTION + 1, "one entry per record");
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "in log order");
        let mut seqs: Vec<Seq> = changes.iter().map(|(c, _, _)| c.seq).collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), changes.len(), "no position given twice");
        let shared: Vec<&Change> =
            changes.iter().map(|(c, _, _)| c).filter(|c| c.id.as_str() == "item-shared").collect();
        assert_eq!(shared.len(), 1, "the shared record's superseded entries are gone");
        let record = one.record("item", "item-shared").expect("read").expect("present");
        let logged: Value = serde_json::from_str(shared[0].data.as_ref().expect("data").get()).expect("JSON");
        assert_eq!(logged, record);
        assert_eq!(one.last_seq().expect("last"), *seqs.last().expect("changes"));
        assert!(one.log_position().expect("position") >= *positions.last().expect("changes"), "nothing is running");
    }

    #[test]
    fn each_entry_records_the_transaction_that_wrote_it() {
        let Some(fx) = Fixture::postgres() else { return };
        let db = open_node(&fx, "central");
        db.transaction(|tx| {
            for id in ["a", "b"] {
                let seq = tx.write_as(item(id, id).incoming(), &central())?.seq;
                tx.set_bucket(seq, "all")?;
            }
            Ok(())
        })
        .expect("one transaction");
        log_change(&db, &central(), &item("c", "C"), Some("all"), &[]);
        let backends::Fixture::Postgres { url, schema, .. } = &fx else { unreachable!("a PostgreSQL fixture") };
        let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
        let rows = client
            .query(&format!("SELECT record_id, xid::text FROM \"{schema}\".change_log ORDER BY seq"), &[])
            .expect("read the log");
        let xids: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(xids.len(), 3);
        assert_eq!(xids[0].1, xids[1].1, "one transaction: {xids:?}");
        assert_ne!(xids[1].1, xids[2].1, "another transaction: {xids:?}");
    }
}

/// The records of two databases, which must be the same, with the same routing keys.
fn same_records(a: &Db, b: &Db) -> Vec<(String, String, String)> {
    let dump = a.dump().expect("dump");
    assert_eq!(dump, b.dump().expect("dump"), "the same records");
    for (table, id, _) in &dump {
        let keys = |db: &Db| db.transaction(|tx| tx.stored_keys(table, id)).expect("keys");
        assert_eq!(keys(a), keys(b), "{table} {id}: the same keys");
    }
    dump
}

/// The `note` field of a record of a dump.
fn note_of(dump: &[(String, String, String)], id: &str) -> Option<String> {
    let (_, _, text) = dump.iter().find(|(_, i, _)| i == id).unwrap_or_else(|| panic!("{id} is missing"));
    serde_json::from_str::<Value>(text).expect("json")["note"].as_str().map(str::to_owned)
}

/// `apply_received_all` inserts new records many to a statement: the records, their keys and
/// the refusals are those of `apply_received` one change at a time, over batches that cross
/// its statements' bounds with records that exist (as given, or otherwise), a record twice in
/// one statement, a delete, a topology record, an unknown table and a malformed document.
/// (SQLite: PostgreSQL inserts them one by one.)
#[test]
fn received_changes_applied_together_end_as_applied_one_by_one() {
    let doc = |i: usize, v: &str| json!({"store_id": "north-pharmacy", "item_id": format!("item-{i}"), "note": v});
    let existing: Vec<Change> = (0..10).map(|i| received("stock_line", &format!("e-{i}"), doc(i, "old"))).collect();
    let mut batch = Vec::new();
    for i in 0..70 {
        batch.push(received("stock_line", &format!("n-{i}"), doc(i, "new")));
        if i < 10 {
            // as it is (even), or changed (odd)
            batch.push(received("stock_line", &format!("e-{i}"), doc(i, if i % 2 == 0 { "old" } else { "changed" })));
        }
        if i == 5 || i == 40 {
            batch.push(received("stock_line", &format!("n-{}", i - 2), doc(i, "again")));
        }
        if i == 20 {
            batch.push(Change { action: Action::Delete, data: None, ..received("stock_line", "e-2", json!({})) });
            batch.push(received("store", "east-depot", json!({"name": "East depot"})));
            batch.push(received("nonsense", "x-1", json!({})));
            batch.push(received("stock_line", "bad-1", json!({"store_id": 5})));
        }
    }
    let (fx, other) = (Fixture::sqlite(), Fixture::sqlite());
    let (together, one_by_one) = (open_node(&fx, "north"), open_node(&other, "north"));
    for db in [&together, &one_by_one] {
        db.transaction(|tx| existing.iter().try_for_each(|c| tx.apply_received(c))).expect("existing records");
    }
    let refused_together: Vec<bool> = together
        .transaction(|tx| {
            let changes: Vec<&Change> = batch.iter().collect();
            Ok(tx.apply_received_all(&changes)?.iter().map(Result::is_err).collect())
        })
        .expect("applied together");
    let refused_one_by_one: Vec<bool> = one_by_one
        .transaction(|tx| {
            batch
                .iter()
                .map(|c| match tx.apply_received(c) {
                    Ok(()) => Ok(false),
                    Err(outpost_store::StoreError::Refused { .. } | outpost_store::StoreError::Invalid { .. }) => {
                        Ok(true)
                    }
                    Err(other) => Err(other),
                })
                .collect()
        })
        .expect("applied one by one");
    assert_eq!(refused_together, refused_one_by_one, "the same changes refused");
    assert_eq!(refused_together.iter().filter(|r| **r).count(), 2, "the unknown table and the malformed document");
    let dump = same_records(&together, &one_by_one);
    let note = |id: &str| note_of(&dump, id);
    assert_eq!(note("e-1").as_deref(), Some("changed"), "an existing record is written over");
    assert_eq!(note("e-0").as_deref(), Some("old"));
    assert_eq!(note("n-3").as_deref(), Some("again"), "the later of a record twice in a batch");
    assert_eq!(note("n-38").as_deref(), Some("again"));
    assert!(dump.iter().all(|(_, id, _)| id != "e-2"), "the delete");
    assert!(together.network().stores.contains_key(&StoreId::from("east-depot")), "the network follows");
}

/// Local writes written together (`Tx::write_all_checked`, which `Db::write` uses) end as the
/// same writes one by one: the same records, keys, lines found by their invoice, and log
/// entries, over a batch that crosses its statements' bounds with records that exist (as given,
/// or otherwise), a record twice in the batch, a delete and another table between; and a refused
/// write in a batch refuses the batch. (SQLite: PostgreSQL inserts them one by one.)
#[test]
fn local_writes_written_together_end_as_written_one_by_one() {
    let stock = |i: usize, v: &str| json!({"store_id": "north-pharmacy", "item_id": format!("item-{i}"), "note": v});
    let line = |i: usize| {
        json!({"store_id": "north-pharmacy", "transaction_id": format!("ci-{}", i % 3), "item_id": "item-1",
               "number_of_packs": 1.0 + i as f64, "pack_size": 1.0})
    };
    let existing: Vec<Write> =
        (0..10).map(|i| Write::upsert("stock_line", format!("e-{i}"), &stock(i, "old"))).collect();
    let mut batch = Vec::new();
    for i in 0..70 {
        batch.push(Write::upsert("stock_line", format!("n-{i}"), &stock(i, "new")));
        batch.push(Write::upsert("transaction_line", format!("l-{i}"), &line(i)));
        if i < 10 {
            batch.push(Write::upsert(
                "stock_line",
                format!("e-{i}"),
                &stock(i, if i % 2 == 0 { "old" } else { "changed" }),
            ));
        }
        if i == 5 || i == 40 {
            batch.push(Write::upsert("stock_line", format!("n-{}", i - 2), &stock(i, "again")));
        }
        if i == 20 {
            batch.push(Write::delete("stock_line", "e-2"));
            batch.push(Write::upsert("location", "shelf-1", &json!({"store_id": "north-pharmacy", "code": "S1"})));
        }
    }
    let (fx, other) = (Fixture::sqlite(), Fixture::sqlite());
    let (together, one_by_one) = (open_node(&fx, "north"), open_node(&other, "north"));
    for db in [&together, &one_by_one] {
        db.transaction(|tx| existing.iter().try_for_each(|w| tx.write_checked(w, &north()).map(|_| ())))
            .expect("existing records");
    }
    together.transaction(|tx| tx.write_all_checked(&batch, &north())).expect("written together");
    one_by_one
        .transaction(|tx| batch.iter().try_for_each(|w| tx.write_checked(w, &north()).map(|_| ())))
        .expect("one by one");
    let dump = same_records(&together, &one_by_one);
    let note = |id: &str| note_of(&dump, id);
    assert_eq!(note("e-1").as_deref(), Some("changed"), "an existing record is written over");
    assert_eq!(note("n-3").as_deref(), Some("again"), "the later of a record twice in a batch");
    for invoice in ["ci-0", "ci-1", "ci-2"] {
        let lines = |db: &Db| {
            db.transaction(|tx| tx.lines::<Value>("transaction_line", "transaction_id", &RecordId::from(invoice)))
                .expect("lines")
        };
        assert_eq!(lines(&together).len(), 23 + usize::from(invoice == "ci-0"), "{invoice}'s lines by their index");
        assert_eq!(lines(&together), lines(&one_by_one));
    }
    let log = |db: &Db| {
        let mut entries: Vec<(String, String, String)> = db
            .changes_after(Seq(0), &north(), usize::MAX, usize::MAX)
            .expect("log")
            .into_iter()
            .map(|c| (c.table, c.id.to_string(), c.action.code().to_owned()))
            .collect();
        entries.sort();
        entries
    };
    assert_eq!(log(&together), log(&one_by_one), "the same log entries");
    assert_eq!(log(&together).len(), 70 + 70 + 10 + 1, "an entry per record written here (one a delete)");

    let refused = vec![
        Write::upsert("stock_line", "r-1", &stock(1, "new")),
        Write::upsert("stock_line", "r-2", &json!({"store_id": "south-clinic", "item_id": "item-1"})),
    ];
    let before = together.dump().expect("dump");
    let error = together.transaction(|tx| tx.write_all_checked(&refused, &north())).expect_err("another site's store");
    assert!(matches!(error, outpost_store::StoreError::Refused { .. }), "{error}");
    assert_eq!(together.dump().expect("dump"), before, "nothing of a refused batch is written");
}
