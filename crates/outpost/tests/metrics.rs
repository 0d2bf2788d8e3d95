//! `/metrics` on a real central server process, on each backend: counts a Prometheus server can
//! scrape without a login, that move with what the sites do and hold no record's contents.

mod common;

use common::{basic, on_each_backend, Backend, Http, Network};
use serde_json::json;

on_each_backend!(the_metrics_count_what_the_sites_did_and_show_no_record, a_site_serves_its_own_metrics);

fn a_site_serves_its_own_metrics(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    north.sync();
    north.write("stock_line", "sl-1", &json!({"store_id": "store-north", "item_id": "i", "note": "Secret note"}));
    let (_serving, url) = north.serve();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let get = |path: &str| {
        agent
            .get(format!("{url}{path}"))
            .call()
            .expect("the site answers")
            .body_mut()
            .read_to_string()
            .unwrap_or_default()
    };
    let synced = agent.post(format!("{url}/api/sync")).send_empty().expect("sync now");
    assert_eq!(synced.status().as_u16(), 200);
    let text = get("/metrics");
    assert!(sample(&text, "outpost_site_syncs_total") >= 1.0, "{text}");
    assert!(
        sample(&text, "outpost_site_changes_pushed_total") >= 1.0,
        "the scheduled or asked sync pushed sl-1: {text}"
    );
    assert_eq!(sample(&text, "outpost_site_waiting_to_push"), 0.0, "{text}");
    assert!(sample(&text, "outpost_site_records") >= 1.0, "{text}");
    assert_eq!(sample(&text, "outpost_site_sync_active"), 1.0, "{text}");
    assert!(sample(&text, "outpost_site_last_sync_age_seconds") < 600.0, "{text}");
    assert!(sample(&text, "outpost_site_bytes_sent_total") > 0.0, "{text}");
    assert!(!text.contains("Secret note") && !text.contains("sl-1"), "no record's contents: {text}");
}

/// The value of one sample (`name` with its labels, as it is written).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample `{name}` in:\n{text}"))
}

fn the_metrics_count_what_the_sites_did_and_show_no_record(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let north = network.site("north");
    let http = Http::new(&network.central.url());
    let before = http.get("/metrics", &[]);
    assert_eq!(before.status, 200, "no login needed");
    let before = String::from_utf8_lossy(&before.body).into_owned();
    assert!(before.contains("# TYPE outpost_pushes_total counter"), "{before}");

    north.sync();
    for i in 0..3 {
        north.write(
            "stock_line",
            &format!("sl-{i}"),
            &json!({"store_id": "store-north", "item_id": "i", "note": "Secret note"}),
        );
    }
    north.sync();
    let wrong = http.post(
        "north",
        "push",
        &[
            ("authorization", &basic("north", "not-the-password")),
            ("outpost-protocol", &protocol::PROTOCOL_VERSION.to_string()),
        ],
        b"",
    );
    assert_eq!(wrong.status, 401);

    let after = String::from_utf8_lossy(&http.get("/metrics", &[]).body).into_owned();
    assert!(sample(&after, "outpost_pushes_total") >= sample(&before, "outpost_pushes_total") + 1.0, "{after}");
    assert!(sample(&after, "outpost_changes_pushed_total") >= 3.0, "{after}");
    assert!(sample(&after, "outpost_pulls_total") >= 2.0, "{after}");
    assert!(
        sample(&after, "outpost_sync_bytes_received_total") > 0.0
            && sample(&after, "outpost_sync_bytes_sent_total") > 0.0
    );
    assert!(sample(&after, "outpost_requests_refused_total") >= 1.0, "the wrong password is counted: {after}");
    assert!(sample(&after, "outpost_argon2_checks_total") >= 2.0, "{after}");
    assert_eq!(sample(&after, "outpost_site_owed_changes{site=\"north\"}"), 0.0);
    assert_eq!(sample(&after, "outpost_site_waiting_to_push{site=\"north\"}"), 0.0);
    assert_eq!(sample(&after, "outpost_site_open_rejections{site=\"north\"}"), 0.0);
    assert!(sample(&after, "outpost_site_last_pull_age_seconds{site=\"north\"}") < 600.0);
    assert!(!after.contains("outpost_site_last_pull_age_seconds{site=\"south\"}"), "south never pulled: {after}");
    assert!(!after.contains("Secret note") && !after.contains("sl-1"), "no record's contents: {after}");
}
