//! Snapshots of what a person reads: `outpost rules`, `central status`, `site status`, and the
//! JSON error body of every kind of refusal. A change to any of them shows here as a diff, to
//! be reviewed on purpose; `UPDATE_EXPECT=1 cargo test -p outpost --test what_people_read`
//! accepts it.

mod common;

use common::{basic, good_headers, masked, outpost, run, Backend, Http, Network};
use expect_test::expect_file;
use serde_json::json;

#[test]
fn the_rules_as_outpost_rules_prints_them() {
    let all = run("outpost rules", outpost().arg("rules")).ok();
    expect_file!["snapshots/rules.txt"].assert_eq(&all.stdout);
    let one = run("outpost rules patient", outpost().args(["rules", "patient"])).ok();
    expect_file!["snapshots/rules_patient.txt"].assert_eq(&one.stdout);
}

#[test]
fn the_status_of_a_network_and_of_a_site() {
    let network = Network::new(&Backend::Sqlite, &["north", "south"]);
    let (north, central) = (network.site("north"), &network.central);
    north.sync();
    north.write("stock_line", "sl-1", &json!({"store_id": "store-north", "total_packs": 1}));
    let url = central.url();
    expect_file!["snapshots/site_status_waiting.txt"].assert_eq(&masked(&north.status(), &url));
    north.sync();
    expect_file!["snapshots/site_status_synced.txt"].assert_eq(&masked(&north.status(), &url));
    expect_file!["snapshots/central_status.txt"].assert_eq(&masked(&central.status(), &url));
}

#[test]
fn every_kind_of_refusal_has_one_json_body() {
    let network = Network::new(&Backend::Sqlite, &["north", "south"]);
    let north = network.site("north");
    let http = Http::new(&network.central.url());
    let push = |headers: &[(&str, &str)], body: &[u8]| http.post("north", "push", headers, body);
    let good = good_headers("north", &north.password);
    let version = protocol::PROTOCOL_VERSION.to_string();
    let wrong = basic("north", "not-the-password");
    let body = protocol::encode(&protocol::PushRequest { after: model::Seq(0), changes: Vec::new() });
    let mut seen = String::new();
    let mut show = |what: &str, answer: common::Answer| {
        seen.push_str(&format!("{what}\n  {} {}\n", answer.status, String::from_utf8_lossy(&answer.body)));
    };
    show("a wrong password", push(&[("authorization", &wrong), ("outpost-protocol", &version)], &body));
    show("another protocol", push(&[("authorization", &wrong), ("outpost-protocol", "1")], &body));
    show("no protocol", push(&[("authorization", &wrong)], &body));
    show("not zstd", push(&good.as_refs(), b"{not zstd"));
    show("malformed JSON", push(&good.as_refs(), &zstd::bulk::compress(b"{not json", 1).expect("compress")));
    show("another site's data", http.post("south", "push", &good.as_refs(), &body));
    let impossible = serde_json::json!({"after": -1, "changes": []}).to_string();
    show(
        "an impossible position",
        push(&good.as_refs(), &zstd::bulk::compress(impossible.as_bytes(), 1).expect("compress")),
    );
    show("no such endpoint", http.get("/api/v1/sites/north/nothing", &good.as_refs()));
    expect_file!["snapshots/error_bodies.txt"].assert_eq(&seen);
}
