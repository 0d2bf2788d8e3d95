//! The central dashboard's pages between real processes on each backend, as the administrator
//! reads them: each site coloured by how long ago it was in touch (never synced is its own
//! state), its sync debt (records, size, the age of the oldest waiting change, the trend of the
//! last days), rejected changes filtered by site and table, and a site's page with its sync
//! history.

mod common;

use common::{on_each_backend, write_behind_the_checks, Backend, Network};
use serde_json::json;
use testkit::http::AdminSession;

on_each_backend!(
    each_site_is_coloured_by_its_last_contact_and_shows_its_sync_debt,
    a_sites_page_shows_its_sync_history_and_an_unknown_site_is_not_found,
    rejected_changes_are_filtered_by_site_and_table,
);

/// The `<tr>` of a site in the sites table.
fn site_row<'h>(html: &'h str, site: &str) -> &'h str {
    let start = html.find(&format!("data-site=\"{site}\"")).unwrap_or_else(|| panic!("no row for {site}: {html}"));
    let row = &html[start..];
    &row[..row.find("</tr>").unwrap_or(row.len())]
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn each_site_is_coloured_by_its_last_contact_and_shows_its_sync_debt(backend: &Backend) {
    let network = Network::new(backend, &["north", "south", "east"]);
    let central = &network.central;
    network.site("north").sync();
    network.site("east").sync();
    // east last synced 31 days ago; north today; south never.
    central.db.execute(&format!(
        "UPDATE site_sync SET last_pull_at = '{}', last_push_at = NULL WHERE site_id = 'east'",
        protocol_time(now() - 31 * 86_400)
    ));
    // Three items for every site after they pulled: north is owed three records.
    for i in 0..3 {
        central.write("item", &format!("item-{i}"), &json!({"code": format!("I{i}"), "name": format!("Medicine {i}")}));
    }
    // The hourly samples of the last days (as the server takes them), and one made now whose log
    // reaches the new items, two days ago.
    let head = common::count(central, "SELECT max(seq) FROM change_log");
    for (days_ago, owed) in [(3, 5), (2, 9), (1, 0)] {
        central.db.execute(&format!(
            "INSERT INTO debt_sample (site_id, at, owed, owed_bytes, log_seq) VALUES ('north', {}, {owed}, 0, {})",
            now() - days_ago * 86_400 - 60,
            if days_ago == 2 { head } else { 0 }
        ));
    }

    let (status, html) = AdminSession::sign_in(&central.url()).get("/");
    assert_eq!(status, 200, "{html}");
    let north = site_row(&html, "north");
    assert!(
        north.starts_with("data-site=\"north\"") && html.contains("<tr class=\"today\" data-site=\"north\">"),
        "{html}"
    );
    assert!(html.contains("<tr class=\"stale\" data-site=\"east\">"), "a month without contact is red: {html}");
    assert!(html.contains("<tr class=\"never\" data-site=\"south\">"), "never synced is its own state: {html}");
    assert!(site_row(&html, "east").contains("no sync for over a month</span> 31 days ago"), "{html}");
    assert!(site_row(&html, "south").contains("never synced</span></td><td>never</td><td>never</td>"), "{html}");
    assert!(north.contains("<td class=\"n owed\">3</td>"), "three records wait for north: {north}");
    let size = north.split("<td class=\"n owed\">3</td><td class=\"n\">").nth(1).and_then(|r| r.split(" B<").next());
    assert!(size.and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b > 60), "their size: {north}");
    assert!(north.contains("<td>2 days</td>"), "the oldest was in the log two days ago: {north}");
    assert!(north.contains("(most each day): –, –, –, 5, 9, 0, –</title>"), "the trend, day by day: {north}");
    assert!(site_row(&html, "south").contains("<td class=\"n owed\">?</td>"), "unknown until it pulls: {html}");
    network.site("north").sync();
    let (_, html) = AdminSession::sign_in(&central.url()).get("/");
    assert!(site_row(&html, "north").contains("<td class=\"n owed\">0</td>"), "{html}");
}

fn protocol_time(at: i64) -> String {
    // The form the server writes: 2026-12-01T15:09:05.000Z.
    let days = at.div_euclid(86_400);
    let secs = at.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Days since 1970-01-01 as a date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn a_sites_page_shows_its_sync_history_and_an_unknown_site_is_not_found(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let (central, north) = (&network.central, network.site("north"));
    north.sync();
    north.write(
        "stock_line",
        "sl-1",
        &json!({"store_id": "store-north", "item_id": "i", "total_number_of_packs": 1.0}),
    );
    north.write(
        "stock_line",
        "sl-2",
        &json!({"store_id": "store-north", "item_id": "i", "total_number_of_packs": 2.0}),
    );
    north.sync();

    let admin = AdminSession::sign_in(&central.url());
    let (status, html) = admin.get("/sites/north");
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<h1>Site <code>north</code> (desktop)</h1>"), "{html}");
    assert!(html.contains("<tr><td>store-north</td><td>active</td></tr>"), "its stores: {html}");
    // Both syncs were within two minutes: one session, its push of two changes among its requests.
    let sessions = html.split("<table id=\"sessions\">").nth(1).expect("a sessions table");
    let rows: Vec<&str> = sessions.split("</table>").next().unwrap_or_default().split("<tr><td>").skip(1).collect();
    assert_eq!(rows.len(), 1, "{sessions}");
    let cells: Vec<&str> = rows[0].split("</td>").collect();
    let number = |cell: &str| cell.rsplit('>').next().unwrap_or_default().trim().to_owned();
    assert!(number(cells[2]).parse::<u64>().is_ok_and(|n| n >= 2), "requests: {}", rows[0]);
    assert!(number(cells[3]).parse::<u64>().is_ok_and(|n| n > 0), "records received: {}", rows[0]);
    assert_eq!(number(cells[5]), "2", "records pushed: {}", rows[0]);
    assert_eq!(html.matches("<g class=\"session\">").count(), 1, "a bar in the chart: {html}");
    assert!(html.contains("<svg id=\"history\""), "{html}");

    let (status, html) = admin.get("/sites/nowhere");
    assert_eq!(status, 404);
    assert!(html.contains("No site <code>nowhere</code>"), "{html}");
    let (status, _) = AdminSession::sign_in(&central.url()).get("/sites/north");
    assert_eq!(status, 200);
}

fn rejected_changes_are_filtered_by_site_and_table(backend: &Backend) {
    let network = Network::new(backend, &["north", "south"]);
    let (central, north, south) = (&network.central, network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    write_behind_the_checks(north, "item", "item-north", &json!({"code": "N", "name": "made on north"}));
    write_behind_the_checks(south, "item", "item-south", &json!({"code": "S", "name": "made on south"}));
    north.sync();
    south.sync();
    let admin = AdminSession::sign_in(&central.url());
    let rejections = |query: &str| {
        let (status, html) = admin.get(&format!("/{query}"));
        assert_eq!(status, 200, "{html}");
        let table = html
            .split("<h2 id=\"rejected\">")
            .nth(1)
            .expect("the rejections")
            .split("<h2>")
            .next()
            .unwrap_or_default()
            .to_owned();
        ["item-north", "item-south"]
            .into_iter()
            .filter(|id| table.contains(&format!("<td>{id}</td>")))
            .collect::<Vec<_>>()
    };
    assert_eq!(rejections(""), vec!["item-north", "item-south"]);
    assert_eq!(rejections("?site=north&table="), vec!["item-north"]);
    assert_eq!(rejections("?site=south&table=item"), vec!["item-south"]);
    assert!(rejections("?site=&table=stock_line").is_empty());
    let (_, html) = admin.get("/?site=south&table=item");
    assert!(html.contains("<option value=\"south\" selected>south</option>"), "the form keeps the filter: {html}");
}
