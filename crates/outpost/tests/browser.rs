//! The central dashboard, a report and a site's own page in a real browser (headless Chromium,
//! through `chromedriver`): the administrator signs in through the form, sees each site
//! coloured by its last contact (today, 31 days ago, never) with what waits for it, opens a
//! report and downloads its CSV; at a site on a slow link, a person presses *sync now* and
//! watches the records remaining go down until it finishes.
//! Screenshots are saved as it goes; with `UPDATE_SCREENSHOTS=1` into `docs/screenshots/`,
//! the images the README shows.

mod common;

use common::{Backend, Network};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testkit::browser::Browser;
use testkit::link::{Link, Shape};

fn screenshot_path(name: &str) -> PathBuf {
    if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots").join(name)
    } else {
        std::env::temp_dir().join(format!("outpost-screenshots-{}", std::process::id())).join(name)
    }
}

fn days_ago(days: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock").as_secs() as i64;
    protocol::rfc3339_of(now - days * 86_400).expect("a time")
}

#[test]
fn the_dashboard_a_report_and_a_sites_page_in_a_browser() {
    let Some(browser) = Browser::start("the_dashboard_a_report_and_a_sites_page_in_a_browser") else { return };
    let network = Network::new(&Backend::Sqlite, &["north", "south", "east"]);
    let central = &network.central;
    central.write("item", "item-amx", &json!({"code": "AMX", "name": "Amoxicillin 250mg"}));
    central.write("item", "item-pcm", &json!({"code": "PCM", "name": "Paracetamol 500mg"}));
    let (north, east) = (network.site("north"), network.site("east"));
    north.sync();
    east.sync();
    let stock = |store: &str, item: &str, location: &str, packs: u32, cost: f64| {
        json!({"store_id": store, "item_id": item, "location_id": location, "pack_size": 10,
               "total_number_of_packs": packs, "cost_price_per_pack": cost})
    };
    north.write("stock_line", "sl-n1", &stock("store-north", "item-amx", "shelf A", 40, 2.5));
    north.write("stock_line", "sl-n2", &stock("store-north", "item-pcm", "shelf B", 120, 0.8));
    east.write("stock_line", "sl-e1", &stock("store-east", "item-amx", "fridge", 15, 2.5));
    north.sync();
    east.sync();
    central.db.execute(&format!(
        "UPDATE site_sync SET last_pull_at = '{0}', last_push_at = '{0}' WHERE site_id = 'east'",
        days_ago(31)
    ));
    // One more item after everyone synced: it waits for north and for east.
    central.write("item", "item-ors", &json!({"code": "ORS", "name": "Oral rehydration salts"}));

    // Signing in through the form, as a person does.
    let url = central.url();
    browser.goto(&format!("{url}/"));
    let password = browser.wait_for("input[name=password]");
    browser.type_into(&password, testkit::ADMIN_PASSWORD);
    browser.click(&browser.wait_for("form button"));
    browser.wait_for("tr[data-site=north]");
    let when =
        |site: &str| browser.css(&browser.wait_for(&format!("tr[data-site={site}] td.when")), "background-color");
    assert_eq!(when("north"), "rgba(207, 236, 207, 1)", "synced today: green");
    assert_eq!(when("east"), "rgba(247, 198, 198, 1)", "31 days without contact: red");
    assert_eq!(when("south"), "rgba(228, 228, 228, 1)", "never synced: grey");
    let owed = |site: &str| browser.text(&browser.wait_for(&format!("tr[data-site={site}] td.owed")));
    assert_eq!((owed("north"), owed("east"), owed("south")), ("1".into(), "1".into(), "?".into()));
    browser.screenshot(&screenshot_path("dashboard.png"));

    // A report, and its CSV.
    browser.click(&browser.wait_for("a[href='/reports']"));
    browser.click(&browser.wait_for("a[href='/reports/value']"));
    let rows = browser.text(&browser.wait_for("table#rows"));
    assert!(rows.contains("store-north 2 1600 196"), "{rows}");
    assert!(rows.contains("store-east 1 150 37.50"), "{rows}");
    assert!(rows.contains("all 2 stores 3 1750 233.50"), "{rows}");
    browser.wait_for("svg.chart g.bar");
    browser.screenshot(&screenshot_path("report.png"));
    browser.click(&browser.wait_for("a#csv"));
    assert_eq!(
        browser.downloaded("stock-value.csv"),
        "store,store_name,batches,units,value\r\nstore-east,store-east,1,150,37.5\r\nstore-north,store-north,2,1600,196\r\n"
    );

    // A site's own page, on a slow link (96 kbit/s up): 1,500 changes wait; *sync now* pushes
    // them, and the page follows the sync, with the records remaining, to its end.
    let link = Link::start(central.addr(), Shape { up_bits_per_sec: Some(96_000), ..Shape::default() });
    north.set_central(&link.url());
    let (_serving, site_url) = north.serve();
    // `site serve` syncs once as it starts (it receives the last item then); the changes are
    // made after that sync.
    let progress = testkit::http::Http::new(&site_url);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&progress.get("/api/progress", &[]).body).contains("\"last_outcome\":[true") {
        assert!(Instant::now() < deadline, "the first scheduled sync did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    testkit::write_stock_lines(north, 1_500);
    browser.goto(&format!("{site_url}/"));
    assert_eq!(browser.text(&browser.wait_for("#waiting")), "1500");
    browser.click(&browser.wait_for("button#sync-now"));
    browser.wait_for("#progress.running");
    let (mut most_remaining, mut shot) = (0, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = browser.source();
        if page.contains("class=\"finished\"") {
            break;
        }
        let remaining =
            page.split("<span id=\"remaining\">").nth(1).and_then(|r| r.split('<').next()?.parse::<u64>().ok());
        if let Some(remaining) = remaining.filter(|&n| n > 0) {
            most_remaining = most_remaining.max(remaining);
            if !shot {
                browser.screenshot(&screenshot_path("site-syncing.png"));
                shot = true;
            }
        }
        assert!(Instant::now() < deadline, "the sync did not finish in a minute: {page}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        (1..=1_500).contains(&most_remaining),
        "the page showed the records remaining as it went: {most_remaining}"
    );
    let outcome = browser.text(&browser.wait_for("#progress.finished"));
    assert!(outcome.starts_with("Sync finished: 1500 pushed, 0 received, 0 rejected"), "{outcome}");
    assert_eq!(browser.text(&browser.wait_for("#waiting")), "0");
    browser.screenshot(&screenshot_path("site.png"));
    browser.click(&browser.wait_for("form[action='/sync-state'] button"));
    assert!(browser.source().contains("s-paused"), "paused from the page: {}", browser.source());
}
