//! The seeds' three reports as pages and CSV downloads, over the collector copies the central
//! server holds of every store (`store::reports` adds them up): stock on hand per store and
//! location, the value of all stock, monthly usage of an item. Each page has a form to choose
//! the stores (none chosen: every store) and the item, a chart, the table, and the same rows as
//! CSV at the same address with `format=csv`.

use crate::dashboard::{page, sign_out};
use crate::engine::{Engine, EngineError};
use maud::{html, Markup};
use store::reports::{Scope, StockRow, UsageRow, ValueRow};

/// One of the three reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Stock,
    Value,
    Usage,
}

impl Report {
    pub const ALL: [Report; 3] = [Report::Stock, Report::Value, Report::Usage];

    pub fn path(self) -> &'static str {
        match self {
            Report::Stock => "/reports/stock",
            Report::Value => "/reports/value",
            Report::Usage => "/reports/usage",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Report::Stock => "Stock on hand",
            Report::Value => "Value of all stock on hand",
            Report::Usage => "Monthly usage of an item",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Report::Stock => "Units on hand (packs × pack size) of an item, or of every item, per store, item and location.",
            Report::Value => "What the stock on hand is worth (packs × cost price per pack), per store and in all.",
            Report::Usage => "Units of an item that left each store on finalised customer invoices, per month of their finalised date.",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Report::Stock => "stock-on-hand.csv",
            Report::Value => "stock-value.csv",
            Report::Usage => "monthly-usage.csv",
        }
    }
}

/// A report's request, from its address's query: `store` (repeated, or comma-separated;
/// none: every store), `item`, and `format=csv` for the download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub scope: Scope,
    pub csv: bool,
}

impl Request {
    pub fn parse(query: &str) -> Request {
        let mut request = Request::default();
        for (key, value) in form_pairs(query) {
            let value = value.trim();
            match key.as_str() {
                "store" => request
                    .scope
                    .stores
                    .extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)),
                "item" if !value.is_empty() => request.scope.item = Some(value.to_owned()),
                "format" => request.csv = value == "csv",
                _ => {}
            }
        }
        request.scope.stores.sort();
        request.scope.stores.dedup();
        request
    }

    /// The query that asks for the same rows (for the CSV link).
    fn query(&self) -> String {
        let mut parts: Vec<String> = self.scope.stores.iter().map(|s| format!("store={}", encode(s))).collect();
        if let Some(item) = &self.scope.item {
            parts.push(format!("item={}", encode(item)));
        }
        parts.join("&")
    }
}

/// `application/x-www-form-urlencoded` pairs, as a browser sends a GET form.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

fn encode(value: &str) -> String {
    serde_urlencoded::to_string([("", value)]).map(|s| s.trim_start_matches('=').to_owned()).unwrap_or_default()
}

/// What a report answers: a page, a CSV file, or the page saying what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Page(String),
    Csv { file_name: &'static str, body: String },
}

/// Reads and renders `report` for `request`.
pub fn answer(engine: &Engine, report: Report, request: &Request, csrf: &str) -> Result<Answer, EngineError> {
    let db = engine.db();
    let stores: Vec<String> = db.network().stores.keys().map(|s| s.as_str().to_owned()).collect();
    let (table, chart) = match report {
        Report::Stock => {
            let rows = db.stock_on_hand(&request.scope)?;
            if request.csv {
                return Ok(csv(report, stock_csv(&rows)));
            }
            (
                stock_table(&rows),
                bar_chart(
                    "units on hand per store",
                    &per_store(rows.iter().map(|r| (label(&r.store, &r.store_name), r.units))),
                ),
            )
        }
        Report::Value => {
            let rows = db.stock_value(&request.scope)?;
            if request.csv {
                return Ok(csv(report, value_csv(&rows)));
            }
            (
                value_table(&rows),
                bar_chart(
                    "value of stock on hand per store",
                    &per_store(rows.iter().map(|r| (label(&r.store, &r.store_name), r.value))),
                ),
            )
        }
        Report::Usage => {
            let Some(item) = &request.scope.item else {
                if request.csv {
                    return Ok(csv(report, usage_csv(&[])));
                }
                let missing = html! { p.warn { "Choose an item: this report is of one item." } };
                return Ok(Answer::Page(render(report, request, &stores, missing, html! {}, csrf)));
            };
            let rows = db.monthly_usage(&request.scope, item)?;
            if request.csv {
                return Ok(csv(report, usage_csv(&rows)));
            }
            (usage_table(&rows), bar_chart("units used per month, chosen stores together", &per_month(&rows)))
        }
    };
    Ok(Answer::Page(render(report, request, &stores, table, chart, csrf)))
}

fn csv(report: Report, body: String) -> Answer {
    Answer::Csv { file_name: report.file_name(), body }
}

fn label(id: &str, name: &Option<String>) -> String {
    match name {
        Some(name) if name != id => format!("{name} ({id})"),
        _ => id.to_owned(),
    }
}

/// Sums of `(store, amount)` per store, in the order the stores first appear.
fn per_store(rows: impl Iterator<Item = (String, f64)>) -> Vec<(String, f64)> {
    let mut sums: Vec<(String, f64)> = Vec::new();
    for (store, amount) in rows {
        match sums.last_mut() {
            Some((last, sum)) if *last == store => *sum += amount,
            _ => sums.push((store, amount)),
        }
    }
    sums
}

fn per_month(rows: &[UsageRow]) -> Vec<(String, f64)> {
    per_store(rows.iter().map(|r| (r.month.clone(), r.units)))
}

/// A number as the tables show it: whole numbers without decimals, else two.
pub fn amount(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

/// A horizontal bar per row, longest to the chart's width; each bar's title gives its figure.
fn bar_chart(title: &str, bars: &[(String, f64)]) -> Markup {
    const W: f64 = 720.0;
    const LABEL: f64 = 260.0;
    const ROW: f64 = 18.0;
    let shown = &bars[..bars.len().min(60)];
    let max = shown.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE);
    let h = ROW * shown.len() as f64 + 4.0;
    html! {
        @if shown.is_empty() { p { "Nothing to show." } } @else {
            svg.chart width=(W) height=(h) viewBox={"0 0 " (W) " " (h)} role="img" {
                title { (title) }
                @for (i, (name, value)) in shown.iter().enumerate() {
                    @let y = i as f64 * ROW + 2.0;
                    @let width = (value.max(0.0) / max) * (W - LABEL - 80.0);
                    g.bar {
                        title { (name) ": " (amount(*value)) }
                        text x="2" y=(format!("{:.1}", y + 12.0)) { (truncate(name, 42)) }
                        rect x=(LABEL) y=(format!("{y:.1}")) width=(format!("{:.1}", width.max(1.0))) height=(ROW - 4.0) fill="#2a6fb0" {}
                        text x=(format!("{:.1}", LABEL + width + 4.0)) y=(format!("{:.1}", y + 12.0)) { (amount(*value)) }
                    }
                }
            }
            @if bars.len() > shown.len() { p { "The chart shows the first " (shown.len()) " of " (bars.len()) "; the table and the CSV have them all." } }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

fn render(report: Report, request: &Request, stores: &[String], table: Markup, chart: Markup, csrf: &str) -> String {
    let query = request.query();
    let csv_href = if query.is_empty() {
        format!("{}?format=csv", report.path())
    } else {
        format!("{}?{query}&format=csv", report.path())
    };
    page(
        &format!("Outpost — {}", report.title()),
        html! {
            (sign_out(csrf))
            (nav(Some(report)))
            h1 { (report.title()) }
            p { (report.what()) " From the central server's copy of every store, as of its last sync." }
            form.scope method="get" action=(report.path()) {
                label { "Stores (none chosen: every store) "
                    select name="store" multiple size=(stores.len().clamp(2, 8)) {
                        @for store in stores {
                            option value=(store) selected[request.scope.stores.contains(store)] { (store) }
                        }
                    }
                }
                " "
                @if report != Report::Value {
                    label { "Item " input type="text" name="item" value=(request.scope.item.as_deref().unwrap_or_default())
                        placeholder=(if report == Report::Stock { "every item" } else { "item id" }); }
                    " "
                }
                button { "Show" }
            }
            p { a #csv href=(csv_href) download=(report.file_name()) { "Download CSV" } }
            (chart)
            (table)
        },
    )
}

/// The reports' navigation: back to the dashboard, and each report.
fn nav(current: Option<Report>) -> Markup {
    html! {
        nav {
            a href="/" { "← all sites" }
            @for report in Report::ALL {
                @if Some(report) == current { strong { (report.title()) } " " } @else { a href=(report.path()) { (report.title()) } }
            }
        }
    }
}

/// The list of reports.
pub fn index(csrf: &str) -> String {
    page(
        "Outpost — reports",
        html! {
            (sign_out(csrf))
            (nav(None))
            h1 { "Reports" }
            ul {
                @for report in Report::ALL {
                    li { a href=(report.path()) { (report.title()) } " — " (report.what()) }
                }
            }
        },
    )
}

/// Rows a page shows at most: every item of a national network is hundreds of thousands of
/// rows, which a browser cannot show; the CSV has them all.
pub const ROWS_SHOWN: usize = 1_000;

fn more_in_the_csv(rows: usize) -> Markup {
    html! {
        @if rows > ROWS_SHOWN {
            p.more { "The first " (ROWS_SHOWN) " of " (rows) " rows; choose an item or stores to see fewer, or download the CSV, which has them all." }
        }
    }
}

fn stock_table(rows: &[StockRow]) -> Markup {
    html! {
        @if rows.is_empty() { p { "No stock lines in these stores." } } @else {
            (more_in_the_csv(rows.len()))
            table #rows {
                tr { th { "store" } th { "item" } th { "location" } th { "batches" } th { "units" } th { "value" } }
                @for r in rows.iter().take(ROWS_SHOWN) {
                    tr {
                        td { (label(&r.store, &r.store_name)) }
                        td { a href={"/reports/usage?item=" (encode(&r.item)) "&store=" (encode(&r.store))} { (label(&r.item, &r.item_name)) } }
                        td { (r.location.as_deref().unwrap_or("—")) }
                        td.n { (r.lines) } td.n { (amount(r.units)) } td.n { (amount(r.value)) }
                    }
                }
            }
        }
    }
}

fn value_table(rows: &[ValueRow]) -> Markup {
    let (lines, units, value) = rows.iter().fold((0, 0.0, 0.0), |(l, u, v), r| (l + r.lines, u + r.units, v + r.value));
    html! {
        @if rows.is_empty() { p { "No stock lines in these stores." } } @else {
            table #rows {
                tr { th { "store" } th { "batches" } th { "units" } th { "value" } }
                @for r in rows {
                    tr { td { (label(&r.store, &r.store_name)) } td.n { (r.lines) } td.n { (amount(r.units)) } td.n { (amount(r.value)) } }
                }
                tr.total { th { "all " (rows.len()) " stores" } th.n { (lines) } th.n { (amount(units)) } th.n { (amount(value)) } }
            }
        }
    }
}

fn usage_table(rows: &[UsageRow]) -> Markup {
    html! {
        @if rows.is_empty() { p { "Nothing of this item left these stores on a finalised customer invoice." } } @else {
            (more_in_the_csv(rows.len()))
            table #rows {
                tr { th { "month" } th { "store" } th { "units" } }
                @for r in rows.iter().take(ROWS_SHOWN) { tr { td { (r.month) } td { (label(&r.store, &r.store_name)) } td.n { (amount(r.units)) } } }
            }
        }
    }
}

/// One CSV field: quoted when it must be, and a text a spreadsheet would take for a formula
/// (`=`, `+`, `-`, `@` first, and not a number) prefixed with `'`, so that opening the file
/// runs nothing.
fn field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err();
    let s = if formula { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv_lines(header: &str, rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut out = format!("{header}\r\n");
    for row in rows {
        out.push_str(&row.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

fn stock_csv(rows: &[StockRow]) -> String {
    csv_lines(
        "store,store_name,item,item_name,location,batches,units,value",
        rows.iter().map(|r| {
            vec![
                r.store.clone(),
                r.store_name.clone().unwrap_or_default(),
                r.item.clone(),
                r.item_name.clone().unwrap_or_default(),
                r.location.clone().unwrap_or_default(),
                r.lines.to_string(),
                r.units.to_string(),
                r.value.to_string(),
            ]
        }),
    )
}

fn value_csv(rows: &[ValueRow]) -> String {
    csv_lines(
        "store,store_name,batches,units,value",
        rows.iter().map(|r| {
            vec![
                r.store.clone(),
                r.store_name.clone().unwrap_or_default(),
                r.lines.to_string(),
                r.units.to_string(),
                r.value.to_string(),
            ]
        }),
    )
}

fn usage_csv(rows: &[UsageRow]) -> String {
    csv_lines(
        "month,store,store_name,units",
        rows.iter().map(|r| {
            vec![r.month.clone(), r.store.clone(), r.store_name.clone().unwrap_or_default(), r.units.to_string()]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_repeated_and_comma_separated_stores() {
        let request = Request::parse("store=b&store=a%2Cc&item=amox+250&format=csv&other=1");
        assert_eq!(request.scope.stores, ["a", "b", "c"]);
        assert_eq!(request.scope.item.as_deref(), Some("amox 250"));
        assert!(request.csv);
        assert_eq!(request.query(), "store=a&store=b&store=c&item=amox+250");
        let everything = Request::parse("item=&store=");
        assert_eq!(everything, Request::default());
        assert_eq!(Request::parse("%zz=&&="), Request::default());
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(field("North, upper"), "\"North, upper\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!((field("-3"), field("-cmd")), ("-3".into(), "'-cmd".into()));
        assert_eq!(field("plain"), "plain");
    }

    #[test]
    fn a_page_shows_the_first_rows_and_says_the_csv_has_them_all() {
        let row = |i: usize| StockRow {
            store: "s".into(),
            store_name: None,
            item: format!("item-{i:05}"),
            item_name: None,
            location: None,
            lines: 1,
            units: 1.0,
            value: 0.0,
        };
        let rows: Vec<StockRow> = (0..ROWS_SHOWN + 5).map(row).collect();
        let html = stock_table(&rows).into_string();
        assert_eq!(html.matches("<tr>").count(), ROWS_SHOWN + 1, "a header and the first rows");
        assert!(html.contains(&format!("The first {ROWS_SHOWN} of {} rows", ROWS_SHOWN + 5)), "{}", &html[..300]);
        let few = stock_table(&rows[..3]).into_string();
        assert!(!few.contains("The first"), "{few}");
    }

    #[test]
    fn amounts_and_sums_per_store() {
        assert_eq!((amount(40.0), amount(8.5), amount(0.126)), ("40".into(), "8.50".into(), "0.13".into()));
        let sums = per_store([("a".to_owned(), 1.0), ("a".to_owned(), 2.0), ("b".to_owned(), 4.0)].into_iter());
        assert_eq!(sums, [("a".to_owned(), 3.0), ("b".to_owned(), 4.0)]);
    }
}
