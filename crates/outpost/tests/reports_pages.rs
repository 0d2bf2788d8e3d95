//! The seeds' three reports between real processes on each backend: two sites push stock and a
//! finalised customer invoice (which takes its stock), and the administrator reads stock on hand,
//! the value of all stock and monthly usage on the central server, as pages and as CSV files,
//! for every store and for chosen ones. Without a login, no report.

mod common;

use common::{on_each_backend, Backend, Network};
use serde_json::json;
use testkit::http::{AdminSession, Http};

on_each_backend!(the_reports_add_up_what_the_sites_pushed, a_report_needs_the_administrators_login);

fn stocked(backend: &Backend) -> Network {
    let network = Network::new(backend, &["north", "south"]);
    let central = &network.central;
    central.write("item", "amox", &json!({"code": "A1", "name": "Amoxicillin 250mg"}));
    central.write("item", "para", &json!({"code": "P1", "name": "Paracetamol, 500mg"}));
    let (north, south) = (network.site("north"), network.site("south"));
    north.sync();
    south.sync();
    let stock = |store: &str, item: &str, location: &str, packs: f64, cost: f64| {
        json!({"store_id": store, "item_id": item, "location_id": location, "batch": "B1",
               "pack_size": 10, "total_number_of_packs": packs, "cost_price_per_pack": cost})
    };
    north.write("stock_line", "sl-n1", &stock("store-north", "amox", "shelf-1", 5.0, 2.0));
    north.write("stock_line", "sl-n2", &stock("store-north", "para", "shelf-2", 1.0, 0.5));
    south.write("stock_line", "sl-s1", &stock("store-south", "amox", "fridge", 2.0, 3.0));
    // Two packs of amoxicillin leave the north store in October: its stock line goes from 5 to 3.
    let invoice = |status: &str| {
        json!({"store_id": "store-north", "type": "customer_invoice", "status": status,
               "serial_number": 1, "finalised_date": "2026-10-05"})
    };
    north.write("transaction", "ci-1", &invoice("new"));
    north.write(
        "transaction_line",
        "ci-1-1",
        &json!({"store_id": "store-north", "transaction_id": "ci-1", "item_id": "amox", "pack_size": 10,
                "number_of_packs": 2, "stock_line_id": "sl-n1"}),
    );
    north.write("transaction", "ci-1", &invoice("finalised"));
    north.sync();
    south.sync();
    network
}

/// The cells of the report table's rows (after its header), as text.
fn rows(html: &str) -> Vec<Vec<String>> {
    let table = html.split("<table id=\"rows\">").nth(1).unwrap_or_else(|| panic!("no table of rows: {html}"));
    let table = &table[..table.find("</table>").expect("the table ends")];
    table
        .split("</tr>")
        .skip(1)
        .filter(|row| row.contains("<t"))
        .map(|row| {
            row.split(['\n'])
                .collect::<String>()
                .replace("</th>", "</td>")
                .split("</td>")
                .map(text)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

/// HTML without its tags.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().replace("&amp;", "&")
}

fn the_reports_add_up_what_the_sites_pushed(backend: &Backend) {
    let network = stocked(backend);
    let admin = AdminSession::sign_in(&network.central.url());

    let (status, html) = admin.get("/reports");
    assert_eq!(status, 200, "{html}");
    for path in ["/reports/stock", "/reports/value", "/reports/usage"] {
        assert!(html.contains(&format!("href=\"{path}\"")), "the index links {path}: {html}");
    }

    let (status, html) = admin.get("/reports/stock?item=amox");
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        rows(&html),
        [
            ["store-north", "Amoxicillin 250mg (amox)", "shelf-1", "1", "30", "6"],
            ["store-south", "Amoxicillin 250mg (amox)", "fridge", "1", "20", "6"],
        ],
        "{html}"
    );
    assert!(html.contains("<svg class=\"chart\""), "a chart: {html}");
    assert!(html.contains("<title>store-north: 30</title>"), "a bar per store: {html}");
    let every = rows(&admin.get("/reports/stock").1);
    assert_eq!(every.len(), 3, "both items: {every:?}");

    let (status, html) = admin.get("/reports/value");
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        rows(&html),
        [
            vec!["store-north", "2", "40", "6.50"],
            vec!["store-south", "1", "20", "6"],
            vec!["all 2 stores", "3", "60", "12.50"]
        ]
    );
    let south = rows(&admin.get("/reports/value?store=store-south").1);
    assert_eq!(south, [vec!["store-south", "1", "20", "6"], vec!["all 1 stores", "1", "20", "6"]]);

    let (status, html) = admin.get("/reports/usage?item=amox");
    assert_eq!(status, 200, "{html}");
    assert_eq!(rows(&html), [vec!["2026-10", "store-north", "20"]]);
    let (_, html) = admin.get("/reports/usage");
    assert!(html.contains("Choose an item"), "{html}");

    let (status, [content_type, disposition], csv) = admin.download("/reports/stock?format=csv");
    assert_eq!(status, 200, "{csv}");
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(disposition, "attachment; filename=\"stock-on-hand.csv\"");
    assert_eq!(
        csv,
        "store,store_name,item,item_name,location,batches,units,value\r\n\
         store-north,store-north,amox,Amoxicillin 250mg,shelf-1,1,30,6\r\n\
         store-north,store-north,para,\"Paracetamol, 500mg\",shelf-2,1,10,0.5\r\n\
         store-south,store-south,amox,Amoxicillin 250mg,fridge,1,20,6\r\n"
    );
    let (_, _, csv) = admin.download("/reports/usage?item=amox&store=store-south&format=csv");
    assert_eq!(csv, "month,store,store_name,units\r\n", "nothing left the south store");
}

fn a_report_needs_the_administrators_login(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let http = Http::new(&network.central.url());
    for path in ["/reports", "/reports/stock", "/reports/value?format=csv", "/reports/usage?item=x"] {
        let answer = http.get(path, &[]);
        let body = String::from_utf8_lossy(&answer.body);
        assert!(body.contains("name=\"password\""), "{path} goes to the login form: {body}");
        assert!(!body.contains("store,"), "{path} answered without a login: {body}");
    }
}
