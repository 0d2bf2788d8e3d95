//! Requests a well-behaved site never makes, sent with raw HTTP to a real central server
//! process: each is answered with the right status and a JSON error body
//! `{"error":{"code":…,"message":…}}`, writes nothing, and leaves the server answering good
//! requests. The central server runs on each backend (`sqlite::…`, `postgres::…`).

#[macro_use]
mod common;

use common::{basic, change, footprint, good_headers, Answer, Backend, Http, Network};
use model::Seq;
use protocol::{PullRequest, PushRequest, MAX_PUSH_CHANGES, MAX_REQUEST_BYTES};
use serde_json::json;

on_each_backend!(
    malformed_json_is_a_bad_request,
    a_truncated_zstd_body_is_a_bad_request,
    an_oversized_batch_is_refused_as_too_large,
    a_wrong_password_or_an_unknown_site_is_unauthorized,
    a_request_for_another_sites_data_is_forbidden,
    a_stale_protocol_version_is_a_conflict,
    a_batch_out_of_order_is_refused_whole,
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
        let pull = protocol::encode(&PullRequest { cursor: None, max_bytes: 1 << 20 });
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
    let pull = protocol::encode(&PullRequest { cursor: None, max_bytes: 1 << 20 });
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
