//! Snapshots of what a person reads: `outpost rules`, `central status`, `site status`, the
//! JSON error body of every kind of refusal, the refusal of a database from a newer release,
//! the administration commands (sites, store moves, seed files, the primary), and the central
//! server's dashboard page. A change to any of them shows here as a diff, to
//! be reviewed on purpose; `UPDATE_EXPECT=1 cargo test -p outpost --test what_people_read`
//! accepts it.

mod common;

use common::{basic, good_headers, masked, outpost, run, write_behind_the_checks, Backend, Http, Network};
use expect_test::expect_file;
use serde_json::json;
use testkit::http::{csrf_of, AdminSession};

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
    central.admin("central site disable", &["site", "disable", "south"]);
    let listed = central.admin("central site list", &["site", "list"]).stdout;
    expect_file!["snapshots/central_site_list.txt"].assert_eq(&masked(&listed, &url));
    let refused = central.try_admin("remove a site with an active store", &["site", "remove", "north"]).failed();
    expect_file!["snapshots/central_site_remove_refused.txt"].assert_eq(&refused.stderr);
}

#[test]
fn the_administration_commands_say_what_they_did() {
    let network = Network::new(&Backend::Sqlite, &["north", "south"]);
    let (central, north, south) = (&network.central, network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    let url = central.url();
    let root = network.root.path().to_string_lossy().into_owned();
    let mut seen = String::new();
    let mut show = |command: &str, out: &common::Run| {
        let text = if out.success() { &out.stdout } else { &out.stderr };
        let text = masked(text, &url).replace(&root, "{root}");
        seen.push_str(&format!("$ outpost {command}\n{text}\n"));
    };
    let admin = |args: &[&str]| central.try_admin("an administration command", args);
    show(
        "central store move store-north --to south --leave-as collector",
        &admin(&["store", "move", "store-north", "--to", "south", "--leave-as", "collector"]),
    );
    show("central store list", &admin(&["store", "list"]));
    show("central status", &admin(&["status"]));
    south.sync();
    show("site status (south)", &run("site status", &mut south.command(&["status"])));
    show("central store move store-north --to south", &admin(&["store", "move", "store-north", "--to", "south"]));
    north.sync();
    show("central store list (after north synced)", &admin(&["store", "list"]));
    show(
        "central store sync-type store-south north active",
        &admin(&["store", "sync-type", "store-south", "north", "active"]),
    );
    let file = format!("{root}/east.seed");
    admin(&["site", "add", "east"]);
    let exported = admin(&["site", "export", "east", "--out", &file, "--central-url", &url]);
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or_default().to_string();
    let exported = common::Run { stdout: exported.stdout.replace(&size, "{bytes}"), ..exported };
    show("central site export east --out {root}/east.seed --central-url http://<central>", &exported);
    let data = format!("{root}/east");
    show(
        "site import {root}/east.seed --data {root}/east",
        &run("site import", outpost().args(["site", "import", &file, "--data", &data])),
    );
    show(
        "site import {root}/east.seed --data {root}/east (again)",
        &run("site import", outpost().args(["site", "import", &file, "--data", &data])),
    );
    show("central set-primary north", &admin(&["set-primary", "north"]));
    show("central set-primary central", &admin(&["set-primary", "central"]));
    show("central status", &admin(&["status"]));
    expect_file!["snapshots/administration.txt"].assert_eq(&seen);
}

#[test]
fn a_database_from_a_newer_release_is_refused_in_words() {
    let network = Network::new(&Backend::Sqlite, &["north"]);
    let north = network.site("north");
    let file = north.data.join("outpost.sqlite");
    let conn = rusqlite::Connection::open(&file).expect("open the site's database");
    let newer = store::SCHEMA_VERSION + 1;
    conn.pragma_update(None, "user_version", newer).expect("as a newer release would leave it");
    drop(conn);
    let data = north.data.to_string_lossy().into_owned();
    let refused = run("outpost site status", outpost().args(["site", "status", "--data", &data])).failed();
    expect_file!["snapshots/newer_database.txt"].assert_eq(&refused.stderr.replace(&data, "{data}"));
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
    network.central.admin("central site disable", &["site", "disable", "north"]);
    show("a disabled site", push(&good.as_refs(), &body));
    expect_file!["snapshots/error_bodies.txt"].assert_eq(&masked(&seen, &network.central.url()));
}

#[test]
fn the_dashboard_as_the_administrator_reads_it() {
    let network = Network::new(&Backend::Sqlite, &["north", "south"]);
    let (north, south) = (network.site("north"), network.site("south"));
    let item = json!({"code": "PCM", "name": "Paracetamol 500mg", "unit_id": "unit-tab"});
    network.central.write("item", "item-pcm", &item);
    north.sync();
    south.sync();
    north.write("stock_line", "sl-1", &json!({"store_id": "store-north", "item_id": "item-pcm", "total_packs": 10}));
    // A change the central server refuses (a site may not write items), under an id that
    // shows the page escapes what it shows.
    let hostile = r#"<script>alert("&")</script>"#;
    write_behind_the_checks(north, "item", hostile, &json!({"code": "X", "name": "made on north"}));
    north.sync();
    let html = dashboard_page(&network.central.url());
    assert!(
        !html.contains(hostile) && html.contains("&lt;script&gt;alert(&quot;&amp;&quot;)&lt;/script&gt;"),
        "{html}"
    );
    expect_file!["snapshots/dashboard.html"].assert_eq(&readable(&html));
}

#[test]
fn a_report_as_the_administrator_reads_it() {
    let network = Network::new(&Backend::Sqlite, &["north"]);
    let north = network.site("north");
    network.central.write("item", "item-pcm", &json!({"code": "PCM", "name": "Paracetamol 500mg"}));
    network.central.write("item", "item-ors", &json!({"code": "ORS", "name": "Oral rehydration salts"}));
    north.sync();
    for (id, item, location, packs) in [
        ("sl-1", "item-pcm", "shelf-1", 12),
        ("sl-2", "item-pcm", "shelf-1", 3),
        ("sl-3", "item-ors", "store room", 40),
    ] {
        let line = json!({"store_id": "store-north", "item_id": item, "location_id": location, "pack_size": 100,
                          "total_number_of_packs": packs, "cost_price_per_pack": 4.25});
        north.write("stock_line", id, &line);
    }
    north.sync();
    let (status, html) = AdminSession::sign_in(&network.central.url()).get("/reports/stock");
    assert_eq!(status, 200, "{html}");
    expect_file!["snapshots/report_stock.html"].assert_eq(&readable(&html));
}

#[test]
fn a_sites_own_page_as_a_person_there_reads_it() {
    let network = Network::new(&Backend::Sqlite, &["north"]);
    let north = network.site("north");
    let (_serving, url) = north.serve();
    let page = testkit::http::Http::new(&url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let html = loop {
        let html = String::from_utf8_lossy(&page.get("/", &[]).body).into_owned();
        if html.contains("Sync finished") || std::time::Instant::now() > deadline {
            break html;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let html = html.replace(&network.central.url(), "{central}");
    let html =
        html.split(", in ").next().unwrap_or_default().to_owned() + html.split(" s</span>").nth(1).unwrap_or_default();
    expect_file!["snapshots/site_page.html"].assert_eq(&readable(&html));
}

/// Signs in as the administrator and reads `/`.
fn dashboard_page(url: &str) -> String {
    let (status, html) = AdminSession::sign_in(url).get("/");
    assert_eq!(status, 200);
    html
}

/// The page with a line per block (the HTML itself has none), and what changes from run to run
/// (times, the CSRF token) masked.
fn readable(html: &str) -> String {
    let mut text = html.to_owned();
    if let Some(csrf) = csrf_of(html) {
        text = text.replace(csrf, "{csrf}");
    }
    for tag in ["<head", "<style", "<body", "<form", "<h1", "<h2", "<p", "<table", "<tr", "</table", "</body"] {
        text = text.replace(tag, &format!("\n{tag}"));
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let b = rest.as_bytes();
        let is_time = b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':';
        match rest.find('Z').filter(|&z| is_time && z < 30) {
            Some(z) => {
                out.push_str("{time}");
                rest = &rest[z + 1..];
            }
            None => {
                out.push_str(&rest[..1]);
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out.push('\n');
    out
}
