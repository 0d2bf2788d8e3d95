//! A site as a hostile client would be, and as an operator restoring a backup would be, against
//! real processes over HTTP on loopback, in one file so that none of these can come back:
//! - requests a well-behaved site never makes (malformed or truncated bodies, oversized batches,
//!   wrong credentials, another site's data, stale protocols, batches out of order) are answered
//!   with the right status and a JSON error body `{"error":{"code":…,"message":…}}`, write
//!   nothing, and leave the server answering good requests;
//! - a site never takes over another's records or speaks for another's store, a refused change
//!   does not stay on the site as if it were true, a site restored from a backup loses nothing it
//!   writes afterwards, impossible positions and cursors are refused, input has bounds, a site
//!   that floods rejections is quarantined, a copy of a site on another machine is refused, and a
//!   mobile site has one active store.
//!
//! Each on both central backends (`sqlite::…`, `postgres::…`).

mod common;

use common::{
    basic, change, count, footprint, good_headers, on_each_backend, record, rows, run, write_behind_the_checks, Answer,
    Backend, Http, Network,
};
use model::Seq;
use protocol::{Cursor, PullRequest, PushRequest, MAX_PUSH_CHANGES, MAX_REQUEST_BYTES};
use serde_json::json;
use testkit::link::{Link, Shape};

on_each_backend!(
    malformed_json_is_a_bad_request,
    a_truncated_zstd_body_is_a_bad_request,
    an_oversized_batch_is_refused_as_too_large,
    a_wrong_password_or_an_unknown_site_is_unauthorized,
    a_request_for_another_sites_data_is_forbidden,
    a_stale_protocol_version_is_a_conflict,
    a_batch_out_of_order_is_refused_whole,
    a_site_cannot_take_over_another_stores_record_by_rewriting_its_store_id,
    a_message_in_the_name_of_another_sites_store_is_refused,
    a_refused_change_is_put_back_on_the_site_and_kept_whole_in_rejected,
    a_site_restored_from_a_backup_loses_nothing_it_writes_afterwards,
    a_site_restored_from_a_backup_gets_its_records_back_with_nothing_to_push,
    a_restored_sites_new_changes_at_old_positions_are_not_taken_for_a_lost_answer,
    a_push_answer_lost_on_the_way_back_costs_nothing_even_if_the_site_edits_meanwhile,
    a_push_at_an_impossible_position_is_refused_and_changes_nothing,
    a_pull_cursor_the_server_never_handed_out_is_refused,
    ids_and_records_out_of_bounds_are_refused_on_the_site_and_on_the_central_server,
    a_site_that_floods_rejections_is_quarantined_until_an_administrator_looks,
    a_mobile_site_has_one_active_store,
    a_copy_of_a_sites_database_on_another_machine_cannot_sync_as_that_site,
);

/// A network with two sites, `north` and `south`, and a client that speaks raw HTTP to it.
struct Fixture {
    network: Network,
    http: Http,
}

impl Fixture {
    fn new(backend: &Backend) -> Fixture {
        let network = Network::new(backend, &["north", "south"]);
        let http = Http::new(&network.central.url());
        Fixture { network, http }
    }

    fn password(&self, site: &str) -> String {
        self.network.site(site).password.clone()
    }

    /// Sends a bad request: it must be refused with `status` and `code`, and change nothing;
    /// and a good push must still work afterwards.
    fn refused(&self, status: u16, code: &str, send: impl FnOnce(&Http) -> Answer) {
        let central = &self.network.central;
        let before = footprint(central);
        let answer = send(&self.http);
        assert_eq!(answer.status, status, "{}", String::from_utf8_lossy(&answer.body));
        assert_eq!(answer.error_code(), code);
        assert_eq!(answer.content_encoding, None, "an error body is plain JSON, readable by anyone");
        assert_eq!(footprint(central), before, "a refused request wrote something");
        self.still_serves();
    }

    /// A good request is answered: a pull for north (read-only) and its status.
    fn still_serves(&self) {
        let password = self.password("north");
        let pull = protocol::encode(&PullRequest {
            cursor: None,
            max_bytes: 1 << 20,
            waiting_to_push: None,
            format: Default::default(),
        });
        let answer = self.http.post("north", "pull", &good_headers("north", &password).as_refs(), &pull);
        assert!(!answer.pull_response().changes.is_empty(), "north receives its initial data");
        let status = self.http.get("/api/v1/sites/north/status", &good_headers("north", &password).as_refs());
        assert_eq!(status.status, 200);
    }
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(bytes, 3).expect("compress")
}

fn stock_line(seq: i64) -> model::Change {
    change(seq, "north", "stock_line", &format!("sl-{seq}"), &json!({"store_id": "store-north", "total_packs": seq}))
}

fn malformed_json_is_a_bad_request(backend: &Backend) {
    let f = Fixture::new(backend);
    let password = f.password("north");
    f.refused(400, "bad_request", |http| {
        http.post("north", "push", &good_headers("north", &password).as_refs(), &zstd(b"{not json"))
    });
    // Valid JSON of the wrong shape, and a change whose record is not an object, likewise.
    f.refused(400, "bad_request", |http| {
        http.post("north", "push", &good_headers("north", &password).as_refs(), &zstd(br#"{"changes": 7}"#))
    });
    f.refused(400, "bad_request", |http| {
        http.post("north", "pull", &good_headers("north", &password).as_refs(), &zstd(b"[1, 2, 3]"))
    });
}

fn a_truncated_zstd_body_is_a_bad_request(backend: &Backend) {
    let f = Fixture::new(backend);
    let password = f.password("north");
    let body = protocol::encode(&PushRequest { after: Seq(0), changes: (1..=200).map(stock_line).collect() });
    f.refused(400, "bad_request", |http| {
        http.post("north", "push", &good_headers("north", &password).as_refs(), &body[..body.len() / 2])
    });
    f.refused(400, "bad_request", |http| {
        http.post("north", "push", &good_headers("north", &password).as_refs(), b"definitely not zstd")
    });
}

fn an_oversized_batch_is_refused_as_too_large(backend: &Backend) {
    let f = Fixture::new(backend);
    let password = f.password("north");
    let batch = PushRequest { after: Seq(0), changes: (1..=MAX_PUSH_CHANGES as i64 + 1).map(stock_line).collect() };
    let body = protocol::encode(&batch);
    assert!(body.len() < MAX_REQUEST_BYTES, "the batch is too long, not too big");
    f.refused(413, "too_large", |http| http.post("north", "push", &good_headers("north", &password).as_refs(), &body));

    // A body over the byte limit (incompressible, so it is big on the wire too).
    let mut noise = Vec::with_capacity(MAX_REQUEST_BYTES + 4096);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while noise.len() < MAX_REQUEST_BYTES + 4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    f.refused(413, "too_large", |http| http.post("north", "push", &good_headers("north", &password).as_refs(), &noise));
}

/// Well-formed headers with these credentials.
fn with_auth(authorization: &str) -> common::Headers {
    // North's machine: these requests are refused for their credentials, not their machine.
    common::Headers(vec![
        ("authorization".into(), authorization.into()),
        ("outpost-protocol".into(), protocol::PROTOCOL_VERSION.to_string()),
        (protocol::MACHINE_HEADER.into(), common::machine("north")),
        ("content-encoding".into(), "zstd".into()),
    ])
}

fn a_wrong_password_or_an_unknown_site_is_unauthorized(backend: &Backend) {
    let f = Fixture::new(backend);
    let password = f.password("north");
    let body = protocol::encode(&PushRequest { after: Seq(0), changes: vec![stock_line(1)] });
    let wrong = basic("north", "not-the-password");
    f.refused(401, "unauthorized", |http| http.post("north", "push", &with_auth(&wrong).as_refs(), &body));
    // North's good password was used in between (see `refused`): a cached good password does
    // not let a wrong one through.
    f.refused(401, "unauthorized", |http| http.post("north", "push", &with_auth(&wrong).as_refs(), &body));
    let unknown = basic("west", &password);
    f.refused(401, "unauthorized", |http| http.post("west", "push", &with_auth(&unknown).as_refs(), &body));
    f.refused(401, "unauthorized", |http| {
        http.post("north", "pull", &with_auth("Basic !!!not-base64").as_refs(), &body)
    });
    f.refused(401, "unauthorized", |http| {
        let version = protocol::PROTOCOL_VERSION.to_string();
        http.post("north", "push", &[("outpost-protocol", version.as_str()), ("content-encoding", "zstd")], &body)
    });
}

fn a_request_for_another_sites_data_is_forbidden(backend: &Backend) {
    let f = Fixture::new(backend);
    let north = f.password("north");
    let pull = protocol::encode(&PullRequest {
        cursor: None,
        max_bytes: 1 << 20,
        waiting_to_push: None,
        format: Default::default(),
    });
    f.refused(403, "forbidden", |http| http.post("south", "pull", &good_headers("north", &north).as_refs(), &pull));
    let push = protocol::encode(&PushRequest { after: Seq(0), changes: vec![stock_line(1)] });
    f.refused(403, "forbidden", |http| http.post("south", "push", &good_headers("north", &north).as_refs(), &push));
    f.refused(403, "forbidden", |http| {
        http.get("/api/v1/sites/south/status", &good_headers("north", &north).as_refs())
    });
}

fn a_stale_protocol_version_is_a_conflict(backend: &Backend) {
    let f = Fixture::new(backend);
    let password = f.password("north");
    let body = protocol::encode(&PushRequest { after: Seq(0), changes: vec![stock_line(1)] });
    let auth = basic("north", &password);
    let (older, newer) = ((protocol::PROTOCOL_VERSION - 1).to_string(), (protocol::PROTOCOL_VERSION + 1).to_string());
    for version in ["0", older.as_str(), newer.as_str()] {
        let headers = [("authorization", auth.as_str()), ("outpost-protocol", version), ("content-encoding", "zstd")];
        f.refused(409, "protocol_mismatch", |http| http.post("north", "push", &headers, &body));
        f.refused(409, "protocol_mismatch", |http| http.post("north", "pull", &headers, &body));
    }
    // No version at all is a bad request (the server cannot tell which one to name).
    f.refused(400, "bad_request", |http| {
        http.post("north", "push", &[("authorization", auth.as_str()), ("content-encoding", "zstd")], &body)
    });
}

fn a_batch_out_of_order_is_refused_whole(backend: &Backend) {
    let f = Fixture::new(backend);
    let password = f.password("north");
    let batch = PushRequest { after: Seq(0), changes: vec![stock_line(1), stock_line(3), stock_line(2)] };
    f.refused(400, "bad_request", |http| http.push("north", &password, &batch));
    // The same changes in order go in, all of them.
    let batch = PushRequest { after: Seq(0), changes: vec![stock_line(1), stock_line(2), stock_line(3)] };
    let answer = f.http.push("north", &password, &batch).push_response();
    assert_eq!(answer.applied, 3);
}

fn rejections_of(node: &(impl common::Inspect + ?Sized), site: &str) -> Vec<(String, String, String)> {
    rows(node, "SELECT tbl, record_id, reason FROM rejection WHERE site_id = $1 ORDER BY id", &[site])
}

fn a_site_cannot_take_over_another_stores_record_by_rewriting_its_store_id(backend: &Backend) {
    let network = Network::new(backend, &["district-a", "clinic-b"]);
    let (district, clinic) = (network.site("district-a"), network.site("clinic-b"));
    let central = &network.central;
    district.sync();
    clinic.sync();
    let theirs = json!({"store_id": "store-clinic-b", "item_id": "item-1", "total_packs": 40});
    clinic.write("stock_line", "sl-cms-1", &theirs);
    clinic.sync();

    // District-a does not hold clinic-b's line; it writes one with the same id in its own store.
    let takeover = json!({"store_id": "store-district-a", "item_id": "item-1", "total_packs": 0});
    district.write("stock_line", "sl-cms-1", &takeover);
    let out = district.sync();
    assert!(out.stdout.contains("1 rejected"), "{}", out.stdout);

    assert_eq!(record(central, "stock_line", "sl-cms-1"), Some(theirs.clone()), "the record stays clinic-b's");
    let refused = rejections_of(central, "district-a");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].2.contains("store-clinic-b") && refused[0].2.contains("clinic-b"),
        "the reason names the store and its site: {}",
        refused[0].2
    );
    // The site had no right to the record, and may not see clinic-b's: it is gone there...
    assert_eq!(district.get("stock_line", "sl-cms-1"), None);
    // ...and what was typed is kept, whole, where a person can see it.
    assert!(district.rejected().contains("sl-cms-1"), "{}", district.rejected());
    let kept: Vec<(Option<String>,)> =
        rows(&district.data, "SELECT data FROM rejection WHERE record_id = 'sl-cms-1'", &[]);
    assert_eq!(kept.len(), 1);
    let kept: serde_json::Value =
        serde_json::from_str(kept[0].0.as_deref().expect("the refused version")).expect("json");
    assert_eq!(kept, takeover);

    // The real owner's next edit goes through.
    let edited = json!({"store_id": "store-clinic-b", "item_id": "item-1", "total_packs": 39});
    clinic.write("stock_line", "sl-cms-1", &edited);
    assert!(clinic.sync().stdout.contains("0 rejected"));
    assert_eq!(record(central, "stock_line", "sl-cms-1"), Some(edited));
}

fn a_message_in_the_name_of_another_sites_store_is_refused(backend: &Backend) {
    let network = Network::new(backend, &["district-a", "clinic-b"]);
    let (district, clinic) = (network.site("district-a"), network.site("clinic-b"));
    district.sync();
    clinic.sync();
    let forged = json!({"sending_store_id": "store-clinic-b", "receiving_store_id": "store-district-a", "body": "send it all to me"});
    // The site itself refuses it...
    let refused =
        run("site write message", &mut district.command(&["write", "message", "msg-forged", &forged.to_string()]))
            .failed();
    assert!(refused.stderr.contains("sending_store_id"), "the error names the field: {}", refused.stderr);
    // ...and so does the central server, when an old or altered site pushes it.
    write_behind_the_checks(district, "message", "msg-forged", &forged);
    let honest =
        json!({"sending_store_id": "store-district-a", "receiving_store_id": "store-clinic-b", "body": "hello"});
    district.write("message", "msg-honest", &honest);
    let out = district.sync();
    assert!(out.stdout.contains("1 rejected"), "{}", out.stdout);
    assert_eq!(record(&network.central, "message", "msg-forged"), None);
    assert_eq!(record(&network.central, "message", "msg-honest"), Some(honest.clone()));
    clinic.sync();
    assert_eq!(clinic.get("message", "msg-forged"), None);
    assert_eq!(clinic.get("message", "msg-honest"), Some(honest));
}

fn a_refused_change_is_put_back_on_the_site_and_kept_whole_in_rejected(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let item = json!({"code": "PCM", "name": "Paracetamol 500mg"});
    network.central.write("item", "item-pcm", &item);
    north.sync();
    let renamed = json!({"code": "PCM", "name": "renamed on north"});
    write_behind_the_checks(north, "item", "item-pcm", &renamed);
    assert_eq!(north.get("item", "item-pcm"), Some(renamed.clone()));
    let out = north.sync();
    assert!(out.stdout.contains("1 rejected"), "{}", out.stdout);

    assert_eq!(north.get("item", "item-pcm"), Some(item.clone()), "the site shows what is true again");
    let kept: Vec<(String, Option<String>, String)> =
        rows(&north.data, "SELECT record_id, data, reason FROM rejection WHERE tbl = 'item'", &[]);
    assert_eq!(kept.len(), 1);
    let data: serde_json::Value = serde_json::from_str(kept[0].1.as_deref().expect("kept")).expect("json");
    assert_eq!(data, renamed, "the refused version is kept whole");
    assert!(
        kept[0].2.contains("Items are central data (table `item`): only the primary server (`central`) may edit them"),
        "{}",
        kept[0].2
    );
    // Putting it back is not a change of the site's own: nothing waits to be pushed.
    assert!(north.status().contains("waiting to push:   0 change(s)"), "{}", north.status());
    assert!(north.sync().stdout.contains("pushed 0 (0 rejected)"));
    assert_eq!(north.get("item", "item-pcm"), Some(item));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the data directory") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
    }
}

fn north_line(n: i64) -> serde_json::Value {
    json!({"store_id": "store-north", "item_id": format!("item-{n}"), "total_packs": n})
}

/// north pushes `sl-1` and is backed up; then `since` is written and pushed; then the disk fails
/// and the backup is put back.
fn restored_after(network: &Network, since: &[(&str, i64)]) {
    let north = network.site("north");
    north.sync();
    north.write("stock_line", "sl-1", &north_line(1));
    north.sync();
    let backup = network.root.path().join("north-backup");
    copy_dir(&north.data, &backup);
    for (id, n) in since {
        north.write("stock_line", id, &north_line(*n));
    }
    north.sync();
    std::fs::remove_dir_all(&north.data).expect("remove the data directory");
    copy_dir(&backup, &north.data);
}

/// Found by the simulator (`outpost-sim`, seed 100623): a site put back from its backup numbers
/// its new changes as the ones it had pushed since the backup. When the answer to their push was
/// lost, the site asked the central server what it held, saw its own positions acknowledged,
/// took them for this push, and never sent its new changes. The digest of the batch now tells.
fn a_restored_sites_new_changes_at_old_positions_are_not_taken_for_a_lost_answer(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    restored_after(&network, &[("sl-2", 2)]);
    let line = north_line;
    // Written at the position sl-2 had: the same positions, another change.
    north.write("stock_line", "sl-3", &line(3));
    // The answer to the push is cut on its way back; the sync asks, then goes on.
    let link = Link::start(network.central.addr(), Shape::default());
    north.set_central(&link.url());
    link.cut_after_down_bytes(1);
    north.sync();
    assert_eq!(
        record(&network.central, "stock_line", "sl-3"),
        Some(line(3)),
        "the new change reached the central server"
    );
    for (id, n) in [("sl-1", 1), ("sl-2", 2), ("sl-3", 3)] {
        assert_eq!(north.get("stock_line", id), Some(line(n)), "the restored site has {id}");
    }
    assert!(north.status().contains("restored from a backup"), "{}", north.status());
}

/// Found by the simulator (`outpost-sim`, seed 27): a site put back from its backup that wrote
/// nothing since did not learn it was restored (only a push could tell it), so the records it
/// had pushed after the backup never came back to it.
fn a_site_restored_from_a_backup_gets_its_records_back_with_nothing_to_push(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    restored_after(&network, &[("sl-2", 2), ("sl-1", 10)]);
    let line = north_line;
    north.sync();
    for (id, n) in [("sl-1", 10), ("sl-2", 2)] {
        assert_eq!(north.get("stock_line", id), Some(line(n)), "the restored site has {id} as it pushed it");
    }
    let status = north.status();
    assert!(status.contains("restored from a backup"), "the site says what happened: {status}");
    north.write("stock_line", "sl-3", &line(3));
    assert!(north.sync().stdout.contains("pushed 1"), "and goes on pushing");
    assert_eq!(record(&network.central, "stock_line", "sl-3"), Some(line(3)));
}

fn a_site_restored_from_a_backup_loses_nothing_it_writes_afterwards(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    north.sync();
    let line = |n: i64| json!({"store_id": "store-north", "item_id": format!("item-{n}"), "total_packs": n});
    north.write("stock_line", "sl-1", &line(1));
    north.sync();

    let backup = network.root.path().join("north-backup");
    copy_dir(&north.data, &backup);
    // After the backup: more work, pushed and acknowledged.
    north.write("stock_line", "sl-2", &line(2));
    north.write("stock_line", "sl-3", &line(3));
    north.write("stock_line", "sl-1", &line(10));
    north.sync();
    assert_eq!(count(central, "SELECT count(*) FROM record WHERE tbl = 'stock_line'"), 3);

    // The disk fails; the backup is put back; the pharmacist goes on working.
    std::fs::remove_dir_all(&north.data).expect("remove the data directory");
    copy_dir(&backup, &north.data);
    north.write("stock_line", "sl-4", &line(4));
    north.write("stock_line", "sl-5", &line(5));
    let out = north.sync();
    assert!(out.stdout.contains("pushed 2"), "the new changes are pushed: {}", out.stdout);

    for (id, n) in [("sl-1", 10), ("sl-2", 2), ("sl-3", 3), ("sl-4", 4), ("sl-5", 5)] {
        assert_eq!(record(central, "stock_line", id), Some(line(n)), "the central server has {id}");
        assert_eq!(north.get("stock_line", id), Some(line(n)), "the restored site has {id} again");
    }
    let status = north.status();
    assert!(status.contains("restored from a backup"), "the site says what happened: {status}");
    assert!(status.contains("waiting to push:   0 change(s)"), "{status}");
    assert!(status.contains("last error:        none"), "{status}");
    // And the next change after that goes through too.
    north.write("stock_line", "sl-6", &line(6));
    assert!(north.sync().stdout.contains("pushed 1"));
    assert_eq!(record(central, "stock_line", "sl-6"), Some(line(6)));
}

/// A push that must be refused with 400 and change nothing.
fn assert_bad_push(http: &Http, site: &common::Site, central: &common::Central, batch: &PushRequest, why: &str) {
    let before = footprint(central);
    let answer = http.push(&site.name, &site.password, batch);
    assert_eq!(answer.status, 400, "{why}: {}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.error_code(), "bad_request");
    assert_eq!(footprint(central), before, "{why}: a refused push wrote something");
}

fn a_push_at_an_impossible_position_is_refused_and_changes_nothing(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    north.sync();
    let http = Http::new(&central.url());
    let at = |seq: i64| {
        let mut c = stock_line(1);
        c.seq = Seq(seq);
        c
    };
    assert_bad_push(&http, north, central, &PushRequest { after: Seq(0), changes: vec![at(i64::MAX)] }, "i64::MAX");
    assert_bad_push(&http, north, central, &PushRequest { after: Seq(0), changes: vec![at(-5)] }, "negative");
    assert_bad_push(&http, north, central, &PushRequest { after: Seq(0), changes: vec![at(0)] }, "zero");
    assert_bad_push(&http, north, central, &PushRequest { after: Seq(-1), changes: vec![at(1)] }, "negative after");
    assert_bad_push(&http, north, central, &PushRequest { after: Seq(5), changes: vec![at(3)] }, "below after");
    // A batch that does not follow what was acknowledged applies nothing, and says so.
    let ahead = http.push(&north.name, &north.password, &PushRequest { after: Seq(7), changes: vec![at(8)] });
    let ahead = ahead.push_response();
    assert!(ahead.out_of_step && ahead.applied == 0 && ahead.acked == Seq(0), "{ahead:?}");
    // The site syncs on as if nothing happened.
    north.write("stock_line", "sl-real", &json!({"store_id": "store-north", "total_packs": 1}));
    assert!(north.sync().stdout.contains("pushed 1 (0 rejected)"));
    assert!(count(central, "SELECT acked_seq FROM site_sync WHERE site_id = 'north'") > 0);
}

fn a_pull_cursor_the_server_never_handed_out_is_refused(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    north.sync();
    let http = Http::new(&network.central.url());
    let pull = |cursor: Cursor| {
        let body = protocol::encode(&PullRequest {
            cursor: Some(cursor),
            max_bytes: 1 << 20,
            waiting_to_push: None,
            format: Default::default(),
        });
        http.post("north", "pull", &common::good_headers("north", &north.password).as_refs(), &body)
    };
    for (cursor, why) in [
        (Cursor::Log { after: Seq(-1), after_xid: 0 }, "negative"),
        (Cursor::Log { after: Seq(0), after_xid: -3 }, "negative transaction"),
        (Cursor::Log { after: Seq(i64::MAX - 1), after_xid: i64::MAX - 1 }, "past the end"),
        (
            Cursor::Snapshot { after: None, log_from: Seq(-1), log_from_xid: 0, scanned: 0, total: 0 },
            "negative snapshot",
        ),
        (
            Cursor::Snapshot { after: None, log_from: Seq(0), log_from_xid: 0, scanned: 10, total: 1 },
            "scanned more than there is",
        ),
    ] {
        let answer = pull(cursor);
        assert_eq!(answer.status, 400, "{why}: {}", String::from_utf8_lossy(&answer.body));
        let message = String::from_utf8_lossy(&answer.body).to_string();
        assert!(message.contains("reset-cursor"), "{why}: the error says what to do: {message}");
    }
    // The cursor the server did hand out still works.
    assert!(north.sync().stdout.contains("pulled 0"));
}

fn ids_and_records_out_of_bounds_are_refused_on_the_site_and_on_the_central_server(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    north.sync();
    let doc = json!({"store_id": "store-north", "total_packs": 1});
    let deep = format!("{{\"store_id\":\"store-north\",\"x\":{}1{}}}", "[".repeat(5_000), "]".repeat(5_000));

    // On the site: refused before anything is written.
    for (id, data, what) in [("", doc.to_string(), "an empty id"), ("sl-deep", deep.clone(), "5,000 levels deep")] {
        let out = run("site write", &mut north.command(&["write", "stock_line", id, &data])).failed();
        assert!(out.stderr.contains("error:"), "{what}: {}", out.stderr);
    }
    assert!(north.status().contains("waiting to push:   0 change(s)"));

    // On the central server, from a site that skips its checks: refused, kept, nothing stored.
    let http = Http::new(&central.url());
    let long_id = "x".repeat(10_000_000 / 10);
    let deep_change = {
        let text = json!({"seq": 4, "table": "stock_line", "id": "sl-deep", "action": "upsert", "origin": "north"})
            .to_string();
        // Spliced in as text: a JSON value this deep cannot be built by serde_json itself.
        let text = format!("{},\"data\":{deep}}}", &text[..text.len() - 1]);
        serde_json::from_str::<model::Change>(&text).ok()
    };
    let mut changes = vec![
        change(1, "north", "stock_line", "", &doc),
        change(2, "north", "stock_line", "sl-\u{0}nul", &doc),
        change(3, "north", "stock_line", &long_id, &doc),
    ];
    changes.extend(deep_change);
    changes.push(change(5, "north", "stock_line", "sl-fine", &doc));
    let answer = http.push("north", &north.password, &PushRequest { after: Seq(0), changes }).push_response();
    assert_eq!(answer.applied, 1, "{answer:?}");
    assert!(answer.rejections.len() >= 3, "{answer:?}");
    for rejection in &answer.rejections {
        assert!(
            rejection.reason.contains("id") || rejection.reason.contains("deep"),
            "the reason says what is wrong: {}",
            rejection.reason
        );
    }
    assert_eq!(count(central, "SELECT count(*) FROM record WHERE tbl = 'stock_line'"), 1);
    assert_eq!(record(central, "stock_line", "sl-fine"), Some(doc));
    assert_eq!(
        count(central, "SELECT count(*) FROM rejection WHERE length(record_id) > 300"),
        0,
        "an id too long to store is not stored in a rejection either"
    );
}

fn a_site_that_floods_rejections_is_quarantined_until_an_administrator_looks(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    north.sync();
    let http = Http::new(&central.url());
    let max = central::engine::MAX_OPEN_REJECTIONS as i64;
    // Items are not north's to write: every one is refused.
    let flood: Vec<_> = (1..=max + 500).map(|i| change(i, "north", "item", &format!("i-{i}"), &json!({}))).collect();
    let first = http.push("north", &north.password, &PushRequest { after: Seq(0), changes: flood }).push_response();
    assert_eq!(first.acked, Seq(max), "the batch stops at the limit: the rest waits on the site");
    assert_eq!(count(central, "SELECT count(*) FROM rejection WHERE site_id = 'north'"), max);

    let next = http.push(
        "north",
        &north.password,
        &PushRequest { after: Seq(max), changes: vec![change(max + 1, "north", "item", "i-x", &json!({}))] },
    );
    assert_eq!(next.status, 403, "{}", String::from_utf8_lossy(&next.body));
    assert_eq!(next.error_code(), "quarantined");
    assert!(String::from_utf8_lossy(&next.body).contains("outpost central site rejected north"));

    let listed = central.admin("central site rejected", &["site", "rejected", "north"]).stdout;
    assert!(listed.contains("quarantined") && listed.contains("i-1"), "{listed}");
    let cleared = central.admin("central site rejected --clear", &["site", "rejected", "north", "--clear"]).stdout;
    assert!(cleared.contains(&format!("{max} refused change(s)")), "{cleared}");
    assert_eq!(
        count(central, "SELECT count(*) FROM rejection WHERE site_id = 'north'"),
        max,
        "nothing kept is dropped"
    );
    let after =
        http.push("north", &north.password, &PushRequest { after: Seq(max), changes: vec![stock_line(max + 1)] });
    assert_eq!(after.push_response().applied, 1, "the site is accepted again");
}

fn a_mobile_site_has_one_active_store(backend: &Backend) {
    let network = Network::new(backend, &[]);
    let central = &network.central;
    central.admin("central site add", &["site", "add", "tablet", "--mobile"]);
    central.add_store("tablet-store", "tablet");
    let second = run(
        "central store add",
        common::outpost().args(["central", "store", "add", "second", "--active-on", "tablet"]).args(central.db.args()),
    )
    .failed();
    assert!(
        second.stderr.contains("a mobile site has one active store") && second.stderr.contains("tablet-store"),
        "{}",
        second.stderr
    );
    central.admin("central site add", &["site", "add", "desk"]);
    central.add_store("desk-store", "desk");
    let moved = run(
        "central store move",
        common::outpost().args(["central", "store", "move", "desk-store", "--to", "tablet"]).args(central.db.args()),
    )
    .failed();
    assert!(moved.stderr.contains("a mobile site has one active store"), "{}", moved.stderr);
    assert_eq!(record(central, "store", "second"), None, "nothing of the refused command was written");
    central.add_store("desk-store-2", "desk");
    let network_view = central.db.open().network();
    assert_eq!(network_view.active_stores(&model::SiteId::from("desk")).len(), 2);
    assert_eq!(network_view.active_stores(&model::SiteId::from("tablet")).len(), 1);

    // Store visibility is symmetric: showing the tablet's store in the desk's shows both ways.
    central.admin("central show-name", &["show-name", "tablet-store", "desk-store"]);
    let visible = |name: &str, store: &str| {
        network_view_now(central)
            .name_visibility
            .get(&model::RecordId::from(name))
            .is_some_and(|s| s.contains(&model::StoreId::from(store)))
    };
    assert!(visible("tablet-store", "desk-store") && visible("desk-store", "tablet-store"));
    // A customer is not a store: only the one way.
    central.admin("central show-name", &["show-name", "village-clinic", "desk-store"]);
    assert!(visible("village-clinic", "desk-store") && !visible("desk-store", "village-clinic"));
}

fn network_view_now(central: &common::Central) -> model::Network {
    model::Network::clone(&central.db.open().network())
}

fn a_copy_of_a_sites_database_on_another_machine_cannot_sync_as_that_site(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    north.sync();
    let copy = common::Site { data: network.root.path().join("north-copy"), ..north.clone() };
    copy_dir(&north.data, &copy.data);
    let elsewhere = network.root.path().join("another-machine-id");
    std::fs::write(&elsewhere, "another machine").expect("another machine's identity");
    let sync_elsewhere = |site: &common::Site| {
        run("site sync (another machine)", site.command(&["sync"]).env("OUTPOST_MACHINE_ID_FILE", &elsewhere))
    };

    let refused = sync_elsewhere(&copy).failed();
    assert!(
        refused.stderr.contains("bound to another machine")
            && refused.stderr.contains("outpost central site unbind north"),
        "the error names the cause and the way out: {}",
        refused.stderr
    );
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    // The site on its own machine goes on; a backup restored there is not refused (see above).
    north.write("stock_line", "sl-1", &json!({"store_id": "store-north", "total_packs": 1}));
    assert!(north.sync().stdout.contains("pushed 1"));

    // Moved to new hardware on purpose: the administrator unbinds, the new machine binds.
    let out = network.central.admin("central site unbind", &["site", "unbind", "north"]).stdout;
    assert!(out.contains("no longer bound"), "{out}");
    sync_elsewhere(&copy).ok();
    let old_machine = north.try_sync().failed();
    assert!(old_machine.stderr.contains("bound to another machine"), "{}", old_machine.stderr);
}

fn a_push_answer_lost_on_the_way_back_costs_nothing_even_if_the_site_edits_meanwhile(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    north.sync();
    let line = |n: i64| json!({"store_id": "store-north", "item_id": format!("item-{n}"), "total_packs": n});
    for n in 1..=3 {
        north.write("stock_line", &format!("sl-{n}"), &line(n));
    }
    let proxy = common::Proxy::start(central.addr());
    north.set_central(&proxy.url());
    proxy.set(common::Cut::Responses(50));
    north.try_sync_once().failed();
    assert_eq!(count(central, "SELECT count(*) FROM record WHERE tbl = 'stock_line'"), 3, "the push went in");

    // Before the next sync, a pharmacist edits a line of that batch: the batch sent again is
    // not the same, yet it is no restore either.
    north.write("stock_line", "sl-2", &line(20));
    proxy.set(common::Cut::Never);
    let out = north.sync();
    assert!(out.stdout.contains("pushed 1 (0 rejected), pulled 0"), "only the edit travels: {}", out.stdout);
    for (id, n) in [("sl-1", 1), ("sl-2", 20), ("sl-3", 3)] {
        assert_eq!(record(central, "stock_line", id), Some(line(n)));
    }
    assert!(!north.status().contains("restored"), "{}", north.status());
    assert_eq!(
        count(central, "SELECT count(*) FROM change_log WHERE tbl = 'stock_line' AND origin_site = 'north'"),
        3,
        "one log entry per record"
    );
}

/// What a person reads about a refused change, a refused command and a restore, to the letter.
#[test]
fn what_a_person_reads_about_refused_and_restored_changes() {
    let network = Network::new(&Backend::Sqlite, &["north", "south"]);
    let (north, south) = (network.site("north"), network.site("south"));
    let central = &network.central;
    let url = central.url();
    north.sync();
    south.sync();
    south.write("stock_line", "sl-s", &json!({"store_id": "store-south", "total_packs": 1}));
    south.sync();
    north.write("stock_line", "sl-s", &json!({"store_id": "store-north", "total_packs": 0}));
    north.sync();
    let reason = "writing `stock_line` record `sl-s` was refused: Stock and replenishments are store data (table \
                  `stock_line`): only site `south` may edit them, not site `north` (the record's `store_id` is \
                  `store-south`, which is active there); write it in a store of this site, or on the site where \
                  `store-south` is active";
    assert_eq!(
        common::masked(&north.rejected(), &url),
        format!("<time>  stock_line `sl-s` (change 1 from north): {reason}\n")
    );
    assert_eq!(
        common::masked(&central.admin("central site rejected", &["site", "rejected", "north"]).stdout, &url),
        format!(
            "<time>  stock_line `sl-s` (change 1): {reason}\n\
             1 refused change(s) of `north` wait for an administrator; `--clear` marks them as looked at (they are kept)\n"
        )
    );

    central.admin("central site add", &["site", "add", "tab", "--mobile"]);
    central.add_store("tab-1", "tab");
    let second = run(
        "central store add",
        common::outpost().args(["central", "store", "add", "tab-2", "--active-on", "tab"]).args(central.db.args()),
    )
    .failed();
    assert_eq!(
        second.stderr,
        "error: writing `store_sync` record `tab-2@tab` was refused: store `tab-2` cannot be active on mobile site \
         `tab`: a mobile site has one active store, and `tab-1` is active there; move `tab-1` first or use another site\n"
    );

    let backup = network.root.path().join("backup");
    copy_dir(&north.data, &backup);
    north.write("stock_line", "sl-n1", &json!({"store_id": "store-north", "total_packs": 1}));
    north.sync();
    std::fs::remove_dir_all(&north.data).expect("remove the data directory");
    copy_dir(&backup, &north.data);
    north.write("stock_line", "sl-n2", &json!({"store_id": "store-north", "total_packs": 2}));
    north.sync();
    assert_eq!(
        common::masked(&north.status(), &url),
        "site:              north
central server:    http://<central>
sync:              active
waiting to push:   0 change(s)
last good sync:    <time>
last error:        none
rejected changes:  1 (see `outpost site rejected`)
initialised:       yes
records held:      13
notice:            <time>: the central server holds this site's changes up to 2, but this database knew of only 1 pushed: \
it was restored from a backup. 1 change(s) written since were renumbered after 2 and pushed; this site's records are \
fetched again from the central server
"
    );
}
