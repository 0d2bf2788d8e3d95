//! Property tests of what a hostile site can send the central server.
//!
//! 1. The decoder: any byte string, compressed or not, decodes to a request or to an error,
//!    never to a panic.
//! 2. The push handler, in process, over a real SQLite file: a well-formed but hostile batch
//!    from `north` (any table, id, action, document, origin, position) is answered with a refusal
//!    a site can act on (never a storage error, which the HTTP layer turns into a 500) or with a
//!    response, and afterwards nothing outside north's authority has changed: south's records are
//!    as south wrote them, and every record north's changes touched, as it was and as it is, is one
//!    `model::check_write` lets north write. The response's counts match what landed and what was
//!    kept as refused.
//!
//! Each property runs [`CASES`] cases (a second or two in all), so CI stays fast; the
//! environment variable `PROPTEST_CASES` asks for more.

use model::{
    check_write, recipients, Action, Change, ChangeRef, Network, Op, RecordId, RecordKeys, Seq, SiteId, StoreId,
};
use outpost_central::{admin, Engine, EngineError};
use proptest::prelude::*;
use protocol::{PullRequest, PushRequest, PushResponse};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use store::Db;

/// Cases per property: enough to walk the shapes below on every CI run, few enough to take
/// seconds. The environment variable `PROPTEST_CASES` overrides it for a longer hunt.
const CASES: u32 = 256;

const CENTRAL: &str = "central";
const NORTH: &str = "north";
const SOUTH: &str = "south";
const NORTH_STORE: &str = "store-north";
const SOUTH_STORE: &str = "store-south";

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES);
    // No persisted regressions: a failure is reported with its input, to be turned into a test.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// 1. The decoder
// ---------------------------------------------------------------------------------------------

/// Decodes `bytes` as both request types; the property is that this returns at all.
fn decode_both(bytes: &[u8]) {
    let _ = protocol::decode::<PushRequest>(bytes);
    let _ = protocol::decode::<PullRequest>(bytes);
}

fn compress(bytes: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(bytes, protocol::ZSTD_LEVEL).expect("compress in memory")
}

/// Text that is nearly a request: the tokens of the wire types in any order, with numbers at
/// the edges of every integer type, so the parser gets past the first byte and into the types.
fn json_ish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("\"after\"".to_owned()),
        Just("\"changes\"".to_owned()),
        Just("\"seq\"".to_owned()),
        Just("\"table\"".to_owned()),
        Just("\"id\"".to_owned()),
        Just("\"action\"".to_owned()),
        Just("\"upsert\"".to_owned()),
        Just("\"delete\"".to_owned()),
        Just("\"merge_into\"".to_owned()),
        Just("\"data\"".to_owned()),
        Just("\"origin\"".to_owned()),
        Just("\"cursor\"".to_owned()),
        Just("\"max_bytes\"".to_owned()),
        Just("\"log\"".to_owned()),
        Just("\"snapshot\"".to_owned()),
        Just("\"log_from\"".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just(i64::MAX.to_string()),
        Just(i64::MIN.to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("-0".to_owned()),
        Just("1e400".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z_\"\\\\]{0,12}",
    ];
    prop::collection::vec(token, 0..64).prop_map(|tokens| tokens.concat())
}

/// A well-formed push request, as text.
fn valid_push_text() -> impl Strategy<Value = String> {
    (0i64..100, prop::collection::vec((1i64..1000, "[a-z]{1,8}"), 0..4)).prop_map(|(after, changes)| {
        let changes: Vec<Value> = changes
            .into_iter()
            .map(|(seq, id)| json!({"seq": seq, "table": "stock_line", "id": id, "action": "upsert", "data": {"store_id": NORTH_STORE}, "origin": NORTH}))
            .collect();
        json!({"after": after, "changes": changes}).to_string()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn raw_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_both(&bytes);
    }

    #[test]
    fn compressed_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_both(&compress(&bytes));
    }

    #[test]
    fn compressed_json_ish_text_never_panics_the_decoder(text in json_ish()) {
        decode_both(&compress(text.as_bytes()));
        // A frame cut anywhere is a truncated body.
        let frame = compress(text.as_bytes());
        decode_both(&frame[..frame.len() / 2]);
    }

    #[test]
    fn corrupted_frames_never_panic_the_decoder(
        text in valid_push_text(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut frame = compress(text.as_bytes());
        prop_assert!(protocol::decode::<PushRequest>(&frame).is_ok(), "the uncorrupted frame decodes");
        for (at, byte) in flips {
            let at = at.index(frame.len());
            frame[at] ^= byte;
        }
        decode_both(&frame);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The push handler
// ---------------------------------------------------------------------------------------------

/// The records south (and the central server) wrote before north's hostile batches, by table
/// and id. None of them may change.
const SOUTH_OWNED: &[(&str, &str)] = &[
    ("stock_line", "sl-south"),
    ("transaction", "tr-south"),
    ("patient", "pat-south"),
    ("message", "msg-south"),
    ("item", "item-1"),
    ("barcode", "bc-1"),
    ("store", SOUTH_STORE),
    ("store_sync", "store-south@south"),
    ("site", SOUTH),
    ("name_visibility", "pat-south@store-north"),
];

/// North's own records from before the batches, so that updates (and attempts to re-key them)
/// have something to work on.
const NORTH_OWNED: &[(&str, &str)] = &[("stock_line", "sl-north"), ("patient", "pat-north"), ("message", "msg-north")];

/// A one-change batch entry, as a site's log would send it (built from JSON, as the wire does).
fn change(seq: i64, origin: &str, table: &str, id: &str, action: &Value, data: Option<&Value>) -> Change {
    let mut object = json!({"seq": seq, "table": table, "id": id, "action": action, "origin": origin});
    if let Some(data) = data {
        object["data"] = data.clone();
    }
    serde_json::from_str(&object.to_string()).expect("a change")
}

/// The network every case starts from, built once and kept as the bytes of its database file.
fn template() -> &'static [u8] {
    static TEMPLATE: OnceLock<Vec<u8>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("central.db");
        build_network(&path);
        // The last connection is closed: SQLite has checkpointed its write-ahead log.
        assert!(!dir.path().join("central.db-wal").exists(), "the template database is whole");
        std::fs::read(&path).expect("read the template database")
    })
}

fn build_network(path: &Path) {
    let db = Arc::new(Db::open(path).expect("open the central database"));
    let engine = admin::init(&db, &CENTRAL.into(), None).expect("init");
    admin::add_site(&engine, &NORTH.into(), false).expect("add north");
    admin::add_site(&engine, &SOUTH.into(), false).expect("add south");
    admin::add_store(&engine, &NORTH_STORE.into(), &NORTH.into(), false).expect("add north's store");
    admin::add_store(&engine, &SOUTH_STORE.into(), &SOUTH.into(), false).expect("add south's store");
    engine
        .write(&[
            store::Write::upsert("item", "item-1", &json!({"name": "Paracetamol 500mg"})),
            store::Write::upsert("barcode", "bc-1", &json!({"item_id": "item-1", "code": "5012345678900"})),
        ])
        .expect("central data");
    admin::show_name(&engine, &"pat-south".into(), &NORTH_STORE.into()).expect("show south's patient in north");
    let upsert = json!("upsert");
    let south = [
        change(
            1,
            SOUTH,
            "stock_line",
            "sl-south",
            &upsert,
            Some(&json!({"store_id": SOUTH_STORE, "item_id": "item-1", "quantity": 10})),
        ),
        change(
            2,
            SOUTH,
            "transaction",
            "tr-south",
            &upsert,
            Some(&json!({"store_id": SOUTH_STORE, "status": "finalised"})),
        ),
        change(3, SOUTH, "patient", "pat-south", &upsert, Some(&json!({"home_store_id": SOUTH_STORE, "name": "Ana"}))),
        change(
            4,
            SOUTH,
            "message",
            "msg-south",
            &upsert,
            Some(&json!({"sending_store_id": SOUTH_STORE, "receiving_store_id": NORTH_STORE, "body": "hello"})),
        ),
    ];
    let answer = engine.push(&SOUTH.into(), Seq(0), &south).expect("south's push");
    assert_eq!((answer.applied, answer.rejections.len()), (4, 0), "south's records go in: {answer:?}");
    let north = [
        change(
            1,
            NORTH,
            "stock_line",
            "sl-north",
            &upsert,
            Some(&json!({"store_id": NORTH_STORE, "item_id": "item-1", "quantity": 3})),
        ),
        change(2, NORTH, "patient", "pat-north", &upsert, Some(&json!({"home_store_id": NORTH_STORE, "name": "Ben"}))),
        change(
            3,
            NORTH,
            "message",
            "msg-north",
            &upsert,
            Some(&json!({"sending_store_id": NORTH_STORE, "receiving_store_id": SOUTH_STORE, "body": "hi"})),
        ),
    ];
    let answer = engine.push(&NORTH.into(), Seq(0), &north).expect("north's push");
    assert_eq!((answer.applied, answer.rejections.len()), (3, 0), "north's records go in: {answer:?}");
}

/// One case's central server: a fresh copy of the template.
struct Central {
    _dir: tempfile::TempDir,
    db: Arc<Db>,
    engine: Engine,
}

fn central() -> Central {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("central.db");
    std::fs::write(&path, template()).expect("copy the template database");
    let db = Arc::new(Db::open(&path).expect("open the copy"));
    let engine = Engine::new(db.clone());
    Central { _dir: dir, db, engine }
}

/// A live record: its document as stored, and its routing keys as stored.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    data: String,
    keys: RecordKeys,
}

/// What the properties compare before and after a push.
#[derive(Debug, Clone, PartialEq)]
struct State {
    records: BTreeMap<(String, String), Row>,
    last_seq: Seq,
    rejections: u64,
    acked: Seq,
    /// The home store of each patient, as the network has it (it decides who may edit one).
    home_stores: BTreeMap<RecordId, StoreId>,
}

fn state(central: &Central) -> State {
    let dump = central.db.dump().expect("dump the records");
    let records = central
        .db
        .transaction(|tx| {
            let mut records = BTreeMap::new();
            for (table, id, data) in dump {
                let keys = tx.stored_keys(&table, &id)?.unwrap_or_default();
                records.insert((table, id), Row { data, keys });
            }
            Ok(records)
        })
        .expect("read the records' keys");
    State {
        records,
        last_seq: central.db.last_seq().expect("last seq"),
        rejections: central.db.count_rejections().expect("count rejections"),
        acked: central.engine.acked(&NORTH.into()).expect("north's acked"),
        home_stores: central.db.network().home_stores.clone(),
    }
}

/// The keys stored with a record, live or deleted.
fn stored_keys(central: &Central, table: &str, id: &str) -> RecordKeys {
    central.db.transaction(|tx| tx.stored_keys(table, id)).expect("stored keys").unwrap_or_default()
}

// --- Generators -------------------------------------------------------------------------------

/// Any store a document may name: north's, south's, one that does not exist, or not a store.
fn store_value() -> BoxedStrategy<Value> {
    prop_oneof![
        10 => Just(json!(NORTH_STORE)),
        5 => Just(json!(SOUTH_STORE)),
        1 => Just(json!("store-nowhere")),
        1 => Just(json!("")),
        1 => Just(json!(7)),
        1 => Just(Value::Null),
        1 => Just(json!({"id": SOUTH_STORE})),
        1 => "[ -~]{0,12}".prop_map(Value::String),
    ]
    .boxed()
}

/// A name or patient a document may name.
fn name_value() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!("pat-south")),
        Just(json!("pat-north")),
        Just(json!("pat-new")),
        Just(json!("")),
        Just(json!(false)),
    ]
    .boxed()
}

/// A leaf of a document.
fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
    ]
    .boxed()
}

/// `inner` wrapped in `depth` arrays or objects.
fn nest(inner: Value, depth: usize, in_objects: bool) -> Value {
    (0..depth).fold(inner, |v, _| if in_objects { json!({"n": v}) } else { json!([v]) })
}

/// A document: usually an object with routing keys set to anything, sometimes deeply nested,
/// sometimes not an object at all, rarely larger than a record may be.
fn document() -> BoxedStrategy<Value> {
    let routing = (
        prop::option::weighted(0.8, store_value()),
        prop::option::weighted(0.3, store_value()),
        prop::option::weighted(0.4, store_value()),
        prop::option::weighted(0.3, store_value()),
        prop::option::weighted(0.4, store_value()),
        prop::option::weighted(0.3, name_value()),
        prop::option::weighted(0.2, name_value()),
    );
    let extra = prop::collection::vec(("[a-z_]{1,10}", leaf()), 0..4);
    let object = (routing, extra, prop::option::weighted(0.15, (0usize..40, any::<bool>()))).prop_map(
        |((store, other, sending, receiving, home, patient, name), extra, nested)| {
            let mut doc = Map::new();
            for (key, value) in extra {
                doc.insert(key, value);
            }
            let fields = [
                ("store_id", store),
                ("other_store_id", other),
                ("sending_store_id", sending),
                ("receiving_store_id", receiving),
                ("home_store_id", home),
                ("patient_id", patient),
                ("name_id", name),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    doc.insert(key.to_owned(), value);
                }
            }
            if let Some((depth, in_objects)) = nested {
                doc.insert("nested".to_owned(), nest(json!(1), depth, in_objects));
            }
            Value::Object(doc)
        },
    );
    prop_oneof![
        20 => object,
        1 => leaf(),
        1 => prop::collection::vec(store_value(), 0..3).prop_map(Value::Array),
        1 => (30usize..40).prop_map(|depth| nest(json!({"store_id": NORTH_STORE}), depth, false)),
        1 => Just(json!({"store_id": NORTH_STORE, "blob": "x".repeat(model::limits::MAX_RECORD_BYTES)})),
    ]
    .boxed()
}

/// A table: a synced one (the usual targets of a takeover first), or one that is not.
fn table() -> BoxedStrategy<String> {
    let known = prop::sample::select(vec![
        "stock_line",
        "stock_line",
        "transaction",
        "message",
        "message",
        "patient",
        "patient",
        "item",
        "barcode",
        "store",
        "store_sync",
        "name_visibility",
        "site",
        "location",
        "prescription",
        "option",
    ]);
    prop_oneof![
        40 => known.prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just("stock_line\0".to_owned()),
        1 => Just("record".to_owned()),
        1 => Just("x".repeat(10_000)),
        1 => "[ -~]{1,20}",
    ]
    .boxed()
}

/// A record id: one of the records that exist (south's first), a new one, or one no record may
/// have (empty, too long, with control characters).
fn id() -> BoxedStrategy<String> {
    let existing = prop::sample::select(SOUTH_OWNED.iter().chain(NORTH_OWNED).map(|(_, id)| *id).collect::<Vec<_>>());
    let invalid = prop::sample::select(vec![
        String::new(),
        "x".repeat(model::limits::MAX_ID_BYTES + 1),
        "y".repeat(20_000),
        "sl\0south".to_owned(),
        "line\nbreak".to_owned(),
        "del\u{7f}".to_owned(),
    ]);
    prop_oneof![
        12 => existing.prop_map(str::to_owned),
        8 => "[a-z]{1,3}-[0-9]{1,2}",
        1 => Just("é😀 ünïcode".to_owned()),
        1 => Just("z".repeat(model::limits::MAX_ID_BYTES)),
        3 => invalid,
    ]
    .boxed()
}

/// An action, as JSON: mostly upserts, with deletes and merges into any record.
fn action() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => Just(json!("upsert")),
        2 => Just(json!("delete")),
        2 => id().prop_map(|into| json!({"merge_into": into})),
    ]
    .boxed()
}

/// Whose change a batch entry says it is: north's mostly, else another site's or nobody's.
fn origin() -> BoxedStrategy<String> {
    prop_oneof![
        24 => Just(NORTH.to_owned()),
        1 => Just(SOUTH.to_owned()),
        1 => Just(CENTRAL.to_owned()),
        1 => Just(String::new()),
        1 => Just("north\0".to_owned()),
    ]
    .boxed()
}

/// One entry of a batch, before it is given its position.
#[derive(Debug, Clone)]
struct Entry {
    table: String,
    id: String,
    action: Value,
    data: Option<Value>,
    origin: String,
}

/// A batch entry: half of them anything at all, half what north may write (records in its own
/// store, its own patients, messages from its store), so that the hostile ones find records of
/// north's to re-key and the counts are tested on changes that go in.
fn entry() -> BoxedStrategy<Entry> {
    let hostile = (table(), id(), action(), prop::option::weighted(0.95, document()), origin())
        .prop_map(|(table, id, action, data, origin)| Entry { table, id, action, data, origin });
    prop_oneof![hostile, own_entry()].boxed()
}

/// A change north may make.
fn own_entry() -> BoxedStrategy<Entry> {
    let id = prop_oneof![
        "n-[0-9]{1,2}",
        prop::sample::select(NORTH_OWNED.iter().map(|(_, id)| id.to_string()).collect::<Vec<_>>()),
    ];
    let store = prop::sample::select(vec![NORTH_STORE, SOUTH_STORE]);
    let upsert = json!("upsert");
    (0usize..6, id, store, leaf(), prop::bool::weighted(0.1))
        .prop_map(move |(kind, id, other, extra, delete)| {
            let (table, id, data) = match kind {
                0 => ("stock_line", id, json!({"store_id": NORTH_STORE, "item_id": "item-1", "note": extra})),
                1 => ("transaction", id, json!({"store_id": NORTH_STORE, "other_store_id": other, "note": extra})),
                2 => ("location", id, json!({"store_id": NORTH_STORE, "code": extra})),
                3 => (
                    "message",
                    id,
                    json!({"sending_store_id": NORTH_STORE, "receiving_store_id": other, "body": extra}),
                ),
                4 => ("patient", id, json!({"home_store_id": NORTH_STORE, "name": extra})),
                _ => (
                    "name_visibility",
                    format!("pat-north@{other}"),
                    json!({"name_id": "pat-north", "store_id": other}),
                ),
            };
            let action = if delete { json!("delete") } else { upsert.clone() };
            Entry { table: table.to_owned(), id, action, data: Some(data), origin: NORTH.to_owned() }
        })
        .boxed()
}

/// The position a batch says it follows.
#[derive(Debug, Clone)]
enum After {
    /// What the central server acknowledged: the batch is applied.
    Acked,
    /// Off by some amount: behind (a restored site) or ahead.
    Off(i64),
    /// Anything at all.
    Raw(i64),
}

fn after() -> BoxedStrategy<After> {
    prop_oneof![
        12 => Just(After::Acked),
        2 => (-3i64..4).prop_map(After::Off),
        1 => prop::sample::select(vec![-1, 0, i64::MIN, i64::MAX, protocol::MAX_SEQ, protocol::MAX_SEQ + 1])
            .prop_map(After::Raw),
        1 => any::<i64>().prop_map(After::Raw),
    ]
    .boxed()
}

/// The positions of a batch's entries.
#[derive(Debug, Clone)]
enum Positions {
    /// Increasing from `after` by this step: what an honest site sends.
    Step(i64),
    /// Increasing by one, the last at the highest position a log may reach.
    EndAtMax,
    /// Anything: decreasing, repeated, negative, huge.
    Raw(Vec<i64>),
}

fn positions() -> BoxedStrategy<Positions> {
    let edge = prop_oneof![
        Just(0i64),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(protocol::MAX_SEQ),
        Just(protocol::MAX_SEQ + 1),
        0i64..20,
        any::<i64>(),
    ];
    prop_oneof![
        16 => prop_oneof![4 => Just(1i64), 1 => 2i64..1000].prop_map(Positions::Step),
        1 => Just(Positions::EndAtMax),
        2 => prop::collection::vec(edge, 1..6).prop_map(Positions::Raw),
    ]
    .boxed()
}

/// One push: its position, its entries, or the previous push sent again.
#[derive(Debug, Clone)]
enum Push {
    Batch {
        after: After,
        positions: Positions,
        entries: Vec<Entry>,
    },
    /// The previous push again, byte for byte (its answer was lost).
    Again,
}

fn push() -> BoxedStrategy<Push> {
    prop_oneof![
        6 => (after(), positions(), prop::collection::vec(entry(), 0..10))
            .prop_map(|(after, positions, entries)| Push::Batch { after, positions, entries }),
        1 => Just(Push::Again),
    ]
    .boxed()
}

/// The batch a push sends, given what the central server acknowledged.
fn batch(acked: Seq, after: &After, positions: &Positions, entries: &[Entry]) -> (Seq, Vec<Change>) {
    let after = match after {
        After::Acked => acked.0,
        After::Off(off) => acked.0.saturating_add(*off),
        After::Raw(raw) => *raw,
    };
    let last = entries.len().saturating_sub(1);
    let changes = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let seq = match positions {
                Positions::Step(step) => after.saturating_add(step.saturating_mul(i as i64 + 1)),
                Positions::EndAtMax if i == last => protocol::MAX_SEQ,
                Positions::EndAtMax => after.saturating_add(i as i64 + 1),
                Positions::Raw(raw) => raw[i % raw.len()],
            };
            change(seq, &e.origin, &e.table, &e.id, &e.action, e.data.as_ref())
        })
        .collect();
    (Seq(after), changes)
}

// --- The properties -----------------------------------------------------------------------------

/// The records that must never change, as they stood in the template.
fn untouchable(start: &State) -> BTreeMap<(String, String), Row> {
    let mut rows: BTreeMap<_, _> = SOUTH_OWNED
        .iter()
        .map(|(t, i)| {
            let key = (t.to_string(), i.to_string());
            let row = start.records.get(&key).unwrap_or_else(|| panic!("the template has {t}/{i}")).clone();
            (key, row)
        })
        .collect();
    // And every record of south's store, whatever its table.
    let south = Some(StoreId::from(SOUTH_STORE));
    rows.extend(start.records.iter().filter(|(_, r)| r.keys.store == south).map(|(k, r)| (k.clone(), r.clone())));
    rows
}

/// Checks one push's answer against what changed in the database.
fn check_push(
    central: &Central,
    before: &State,
    after_state: &State,
    sent: (Seq, &[Change]),
    answer: &Result<PushResponse, EngineError>,
    previous: Option<&PushResponse>,
) -> Result<(), TestCaseError> {
    let (after, changes) = sent;
    let unchanged = |why: &str| -> Result<(), TestCaseError> {
        prop_assert_eq!(before, after_state, "{}: nothing may change", why);
        Ok(())
    };
    match answer {
        Err(EngineError::Store(e)) => {
            prop_assert!(false, "a storage error (a 500) for a well-formed batch: {e}");
        }
        Err(refused) => unchanged(&format!("refused ({refused})"))?,
        Ok(answer) if answer.out_of_step => {
            prop_assert_eq!(answer.applied, 0);
            prop_assert!(answer.rejections.is_empty());
            prop_assert_eq!(answer.acked, before.acked);
            prop_assert_ne!(after, before.acked, "a batch that follows the acknowledged position is applied");
            unchanged("out of step")?;
        }
        Ok(answer) if after != before.acked => {
            // The last batch again: answered as before, nothing applied twice.
            prop_assert_eq!(answer.applied, 0, "a batch sent again is not applied again");
            prop_assert_eq!(answer.acked, before.acked);
            // The same refusals; each with the record as it stands now (the first answer sent
            // it as it stood at that change, before the rest of the batch).
            let refusals = |r: &[protocol::Rejection]| -> Vec<(Seq, String, String, String)> {
                r.iter().map(|r| (r.seq, r.table.clone(), r.id.to_string(), r.reason.clone())).collect()
            };
            if let Some(previous) = previous {
                prop_assert_eq!(
                    refusals(&answer.rejections),
                    refusals(&previous.rejections),
                    "a batch sent again is answered again"
                );
            }
            for rejection in &answer.rejections {
                check_central_version(central, rejection)?;
            }
            unchanged("sent again")?;
        }
        Ok(answer) => {
            prop_assert!(
                before.rejections < outpost_central::engine::MAX_OPEN_REJECTIONS,
                "the cases never reach quarantine"
            );
            let reached = changes.last().map_or(after, |c| c.seq);
            prop_assert_eq!(answer.acked, reached, "every change of the batch is applied or rejected");
            prop_assert_eq!(after_state.acked, answer.acked, "the server remembers what it acknowledged");
            prop_assert_eq!(
                answer.applied as usize + answer.rejections.len(),
                changes.len(),
                "each change is applied or rejected"
            );
            prop_assert_eq!(
                after_state.last_seq.0 - before.last_seq.0,
                answer.applied as i64,
                "`applied` is the number of changes the central log took"
            );
            prop_assert_eq!(
                after_state.rejections - before.rejections,
                answer.rejections.len() as u64,
                "every refused change is kept"
            );
            let kept = central.db.rejections(None).expect("the kept rejections");
            let seqs: BTreeSet<Seq> = changes.iter().map(|c| c.seq).collect();
            let mut answered = BTreeSet::new();
            for rejection in &answer.rejections {
                prop_assert!(seqs.contains(&rejection.seq), "a rejection of a change of the batch: {rejection:?}");
                prop_assert!(answered.insert(rejection.seq), "one rejection per change: {rejection:?}");
                prop_assert!(
                    kept.iter().any(|k| k.from.to_string() == NORTH
                        && k.seq == rejection.seq
                        && k.table == rejection.table
                        && k.id == rejection.id
                        && k.reason == rejection.reason),
                    "a refused change is kept as answered: {rejection:?}"
                );
                prop_assert!(
                    rejection.id.as_str().len() < 2 * model::limits::MAX_ID_BYTES
                        && rejection.table.len() < 2 * model::limits::MAX_ID_BYTES,
                    "what is kept of an id or a table from the wire is bounded"
                );
                // A later change of the batch to the same record makes what was sent back older
                // than what is stored now.
                let later =
                    changes.iter().any(|c| c.seq > rejection.seq && c.table == rejection.table && c.id == rejection.id);
                if !later {
                    check_central_version(central, rejection)?;
                }
            }
        }
    }
    Ok(())
}

/// A refused change is answered with the record only when north may hold it, and then as the
/// central server holds it (for a record the rest of the batch left alone).
fn check_central_version(central: &Central, rejection: &protocol::Rejection) -> Result<(), TestCaseError> {
    let Some(version) = &rejection.central_version else { return Ok(()) };
    let stored = central.db.record(&rejection.table, rejection.id.as_str()).expect("read the record");
    let sent: Value = serde_json::from_str(version).expect("a central version is JSON");
    prop_assert_eq!(Some(&sent), stored.as_ref(), "the central version is the record as stored: {:?}", rejection);
    let keys = stored_keys(central, &rejection.table, rejection.id.as_str());
    let network = central.db.network();
    let change = ChangeRef { table: &rejection.table, op: &Op::Update, keys: &keys };
    let north = SiteId::from(NORTH);
    let may_hold = recipients(model::registry(), &network, &change).is_ok_and(|a| a.includes(&network, &north))
        || check_write(model::registry(), &network, &change, &north).is_ok();
    prop_assert!(may_hold, "north is sent back only what it may hold: {:?}", rejection);
    Ok(())
}

/// Whatever north sent, nothing outside its authority changed.
fn check_authority(
    central: &Central,
    untouchable: &BTreeMap<(String, String), Row>,
    before: &State,
    network_before: &Network,
    after: &State,
) -> Result<(), TestCaseError> {
    for (key, row) in untouchable {
        prop_assert_eq!(
            after.records.get(key),
            Some(row),
            "{}/{} is as south or the central server wrote it",
            key.0,
            key.1
        );
    }
    // A record of south's store that south did not write is one north had authority for (a
    // visibility of its own patient in south's store): checked below when it was written.
    let south = Some(StoreId::from(SOUTH_STORE));
    let north = SiteId::from(NORTH);
    let by_north: BTreeSet<(String, String)> = central
        .db
        .changes_after(Seq(0), &north, usize::MAX, usize::MAX)
        .expect("north's log")
        .into_iter()
        .map(|c| (c.table, c.id.0))
        .collect();
    for (key, row) in after.records.iter().filter(|(_, r)| r.keys.store == south) {
        prop_assert!(
            untouchable.contains_key(key) || by_north.contains(key),
            "a record in south's store that neither south nor north wrote: {key:?} {row:?}"
        );
    }
    for other in [SOUTH, CENTRAL] {
        let logged = central.db.changes_after(before.last_seq, &other.into(), usize::MAX, usize::MAX).expect("log");
        prop_assert!(logged.is_empty(), "north's push logged a change as {other}'s: {logged:?}");
    }
    let logged = central.db.changes_after(before.last_seq, &north, usize::MAX, usize::MAX).expect("north's log");
    let logged: BTreeMap<(String, String), &Change> =
        logged.iter().map(|c| ((c.table.clone(), c.id.0.clone()), c)).collect();
    let touched: BTreeSet<&(String, String)> = before.records.keys().chain(after.records.keys()).collect();
    for key in touched {
        if before.records.get(key) != after.records.get(key) {
            prop_assert!(logged.contains_key(key), "{key:?} changed without a change of north's in the log");
        }
    }
    // A change does not move a patient (that is done on the central server): each keeps its
    // home store unless north deleted it.
    for (patient, home) in &before.home_stores {
        let key = ("patient".to_owned(), patient.0.clone());
        let kept = after.home_stores.get(patient) == Some(home) || !after.records.contains_key(&key);
        prop_assert!(
            kept,
            "patient {patient} was homed in {home}, and after north's push is in {:?}",
            after.home_stores.get(patient)
        );
    }
    // Each change of north's that went in is one north may make: checked against the network as
    // it stood before the batch or as it stands after it (a batch may create a patient, then its
    // visibility), as the record stands now and as it stood before.
    let network = central.db.network();
    let registry = model::registry();
    for ((table, id), change) in &logged {
        let key = (table.clone(), id.clone());
        let was = before.records.get(&key);
        let op = match &change.action {
            Action::Upsert if was.is_some() => Op::Update,
            Action::Upsert => Op::Create,
            Action::Delete => Op::Delete,
            Action::MergeInto(into) => Op::MergeInto(into.clone()),
        };
        if was.is_none() && !after.records.contains_key(&key) {
            // Created and deleted within the batch: nothing of it stands, before or after.
            continue;
        }
        let keys = stored_keys(central, table, id);
        let now = ChangeRef { table, op: &op, keys: &keys };
        let allowed = check_write(registry, network_before, &now, &north)
            .or_else(|_| check_write(registry, &network, &now, &north));
        prop_assert!(allowed.is_ok(), "north wrote {table}/{id} as it now stands ({op:?}, {keys:?}): {allowed:?}");
        if let Some(was) = was {
            let then = ChangeRef { table, op: &op, keys: &was.keys };
            let allowed = check_write(registry, network_before, &then, &north);
            prop_assert!(allowed.is_ok(), "north wrote {table}/{id} as it stood ({op:?}, {:?}): {allowed:?}", was.keys);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hostile_batches_stay_within_the_pushing_sites_authority(pushes in prop::collection::vec(push(), 1..5)) {
        let central = central();
        let start = state(&central);
        let untouchable = untouchable(&start);
        let north = SiteId::from(NORTH);
        let mut previous: Option<Sent> = None;
        for push in &pushes {
            let before = state(&central);
            let network_before = central.db.network();
            let (after, changes) = match (push, &previous) {
                (Push::Batch { after, positions, entries }, _) => batch(before.acked, after, positions, entries),
                (Push::Again, Some(sent)) => (sent.after, sent.changes.clone()),
                (Push::Again, None) => continue,
            };
            let answer = central.engine.push(&north, after, &changes);
            let after_state = state(&central);
            let last = previous.as_ref().and_then(|sent| sent.answer.as_ref());
            check_push(&central, &before, &after_state, (after, &changes), &answer, last)?;
            check_authority(&central, &untouchable, &before, &network_before, &after_state)?;
            // Only an applied batch is the one a resend is compared with.
            let applied = answer.ok().filter(|a| !a.out_of_step && after == before.acked);
            if applied.is_some() || previous.is_none() {
                previous = Some(Sent { after, changes, answer: applied });
            }
        }
    }
}

/// The last batch pushed, to send again, with its answer if it was applied.
#[derive(Debug)]
struct Sent {
    after: Seq,
    changes: Vec<Change>,
    answer: Option<PushResponse>,
}

/// Found by the property above: north may edit the patient it homes, but its upsert saying
/// another home store (or none) must not move the patient there (it did, once).
#[test]
fn a_pushed_patient_upsert_does_not_move_the_patient() {
    let central = central();
    let north = SiteId::from(NORTH);
    let acked = central.engine.acked(&north).expect("acked");
    for (i, data) in [json!({"home_store_id": SOUTH_STORE, "name": "Ben"}), json!({"name": "Ben"})].iter().enumerate() {
        let seq = acked.0 + 1 + i as i64;
        let moved = change(seq, NORTH, "patient", "pat-north", &json!("upsert"), Some(data));
        let answer = central.engine.push(&north, Seq(seq - 1), &[moved]).expect("a push");
        let home = central.db.network().home_stores.get(&RecordId::from("pat-north")).cloned();
        assert_eq!(
            home,
            Some(StoreId::from(NORTH_STORE)),
            "north's upsert {data} moved its patient (answer: {answer:?})"
        );
    }
}
