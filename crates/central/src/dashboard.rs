//! What a person sees on the central server: every site, when it last synced (red after a
//! month), what waits for it, what was rejected, and how many records each table holds.

use crate::engine::{Engine, EngineError};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use model::{RecordId, SiteId};
use serde::Serialize;
use store::history::{DebtSample, SyncSession};

#[derive(Debug, Serialize)]
pub struct DashboardView {
    pub central: String,
    pub primary: String,
    pub generated_at: String,
    pub sites: Vec<SiteRow>,
    pub tables: Vec<(String, u64)>,
    /// The newest rejected changes that match `filter`.
    pub rejections: Vec<RejectionRow>,
    pub filter: RejectionFilter,
    /// Moves of patients to another home store that wait for the old home site to sync.
    pub moves: Vec<MoveRow>,
    /// Moves of stores to another site under way.
    pub store_moves: Vec<StoreMoveRow>,
    /// A change of primary under way: from, to, since.
    pub primary_move: Option<(String, String, String)>,
}

/// Which rejected changes the dashboard lists: of one site, of one table, or all.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RejectionFilter {
    #[serde(default, deserialize_with = "empty_is_none")]
    pub site: Option<String>,
    #[serde(default, deserialize_with = "empty_is_none")]
    pub table: Option<String>,
}

/// A form's empty field means "any".
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
}

/// How many rejected changes a page lists.
const REJECTIONS_SHOWN: usize = 100;

/// How long ago a site was last in touch, as the sites table colours it. The seeds' sync report
/// turns a site red after a month; a site that never synced is its own state, not red.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    Today,
    ThisWeek,
    ThisMonth,
    OverAMonth,
    Never,
}

impl Freshness {
    const DAY: f64 = 24.0 * 3600.0;

    /// From the seconds since the last contact (`None`: never in touch).
    pub fn of(seconds: Option<f64>) -> Freshness {
        match seconds {
            None => Freshness::Never,
            Some(s) if s < Self::DAY => Freshness::Today,
            Some(s) if s < 7.0 * Self::DAY => Freshness::ThisWeek,
            Some(s) if s <= 30.0 * Self::DAY => Freshness::ThisMonth,
            Some(_) => Freshness::OverAMonth,
        }
    }

    /// The CSS class of its colour.
    pub fn class(self) -> &'static str {
        match self {
            Freshness::Today => "today",
            Freshness::ThisWeek => "week",
            Freshness::ThisMonth => "month",
            Freshness::OverAMonth => "stale",
            Freshness::Never => "never",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Freshness::Today => "synced today",
            Freshness::ThisWeek => "synced this week",
            Freshness::ThisMonth => "synced this month",
            Freshness::OverAMonth => "no sync for over a month",
            Freshness::Never => "never synced",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StoreMoveRow {
    pub store: String,
    pub from: String,
    pub to: String,
    pub leave_as: String,
    /// `pending` (waits for the old site to hand it over) or `handed_over`.
    pub status: String,
    pub requested_at: String,
}

#[derive(Debug, Serialize)]
pub struct MoveRow {
    pub patient: RecordId,
    pub from: String,
    pub to: String,
    /// The site that hands the patient over on its next sync.
    pub waits_for: String,
    pub requested_at: String,
}

#[derive(Debug, Serialize)]
pub struct SiteRow {
    pub site: String,
    pub kind: String,
    pub acked: i64,
    pub last_push_at: Option<String>,
    pub last_pull_at: Option<String>,
    /// No sync for more than a month (the seeds' sync report shows these in red).
    pub stale: bool,
    /// Added but never synced: its own state, not "stale".
    pub never_synced: bool,
    pub freshness: Freshness,
    /// Seconds since its last push or pull.
    pub seconds_since_contact: Option<u64>,
    pub rejections: u64,
    /// Rejections nobody has looked at yet; at [`crate::engine::MAX_OPEN_REJECTIONS`] the site
    /// is quarantined (its pushes are refused until an administrator looks).
    pub open_rejections: u64,
    pub quarantined: bool,
    /// Its sync debt: changes waiting for it (from its last noted pull), their size as stored,
    /// and how long the oldest of them has waited; `None` until it has pulled.
    pub owed: Option<u64>,
    pub owed_bytes: Option<u64>,
    pub oldest_waiting_secs: Option<u64>,
    /// What it said, at its last pull, it still had to push.
    pub waiting_to_push: Option<u64>,
    /// The most that waited for it on each of the last [`TREND_DAYS`] days, oldest first
    /// (`None`: no sample that day).
    pub trend: Vec<Option<u64>>,
    /// When an administrator disabled it.
    pub disabled_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RejectionRow {
    pub site: String,
    pub seq: i64,
    pub table: String,
    pub id: RecordId,
    pub reason: String,
    pub at: String,
}

/// Days of the debt trend.
pub const TREND_DAYS: usize = 7;
/// Days of a site page's sync history.
pub const HISTORY_DAYS: i64 = 30;
const DAY_SECS: i64 = 24 * 3600;

fn now_unix() -> i64 {
    crate::web::now_unix() as i64
}

fn site_row(
    engine: &Engine,
    row: store::SiteSyncRow,
    samples: &[DebtSample],
    now: i64,
) -> Result<SiteRow, EngineError> {
    let db = engine.db();
    let network = db.network();
    let site = SiteId::from(row.site.as_str());
    let never_synced = row.never_synced();
    let debt = row.pulled_to.map(|at| engine.debt(&site, at)).transpose()?;
    let oldest_waiting_secs = match debt.and_then(|d| d.oldest) {
        Some(seq) => db.logged_by(seq)?.map(|at| u64::try_from(now - at).unwrap_or(0)),
        None => None,
    };
    let last_contact = [&row.last_push_at, &row.last_pull_at].into_iter().flatten().max().cloned();
    let seconds = last_contact.as_deref().and_then(protocol::seconds_since);
    let open_rejections = db.count_open_rejections(&site)?;
    let mut trend = vec![None; TREND_DAYS];
    for sample in samples.iter().filter(|s| s.site == row.site) {
        let days_ago = (now - sample.at).div_euclid(DAY_SECS);
        if let Ok(ago) = usize::try_from(days_ago) {
            if ago < TREND_DAYS {
                let slot = &mut trend[TREND_DAYS - 1 - ago];
                *slot = Some(slot.unwrap_or(0).max(sample.owed));
            }
        }
    }
    Ok(SiteRow {
        kind: network
            .sites
            .get(&site)
            .map_or("unknown", |k| if *k == model::SiteKind::Mobile { "mobile" } else { "desktop" })
            .to_owned(),
        acked: row.acked.0,
        stale: row.stale,
        never_synced,
        freshness: if never_synced { Freshness::Never } else { Freshness::of(seconds) },
        seconds_since_contact: seconds.map(|s| s.max(0.0) as u64),
        rejections: row.rejections,
        open_rejections,
        quarantined: open_rejections >= crate::engine::MAX_OPEN_REJECTIONS,
        owed: debt.map(|d| d.changes),
        owed_bytes: debt.map(|d| d.bytes),
        oldest_waiting_secs,
        waiting_to_push: row.waiting_to_push,
        trend,
        disabled_at: row.disabled_at,
        last_push_at: row.last_push_at,
        last_pull_at: row.last_pull_at,
        site: row.site,
    })
}

fn rejection_rows(records: Vec<store::RejectionRecord>) -> Vec<RejectionRow> {
    records
        .into_iter()
        .map(|r| RejectionRow {
            site: r.from.to_string(),
            seq: r.seq.0,
            table: r.table,
            id: r.id,
            reason: r.reason,
            at: r.at,
        })
        .collect()
}

pub fn view(engine: &Engine, filter: &RejectionFilter) -> Result<DashboardView, EngineError> {
    let db = engine.db();
    let network = db.network();
    let now = now_unix();
    let samples = db.debt_samples(None, now - TREND_DAYS as i64 * DAY_SECS)?;
    let sites = db
        .site_sync_rows()?
        .into_iter()
        .map(|row| site_row(engine, row, &samples, now))
        .collect::<Result<_, EngineError>>()?;
    let rejections =
        rejection_rows(db.rejections_matching(filter.site.as_deref(), filter.table.as_deref(), REJECTIONS_SHOWN)?);
    let moves = network
        .moves
        .iter()
        .map(|(patient, found)| {
            let record = db.record("patient_move", found.id.as_str()).ok().flatten();
            let requested_at = record.as_ref().and_then(|r| r.get("requested_at")).and_then(|v| v.as_str());
            MoveRow {
                patient: patient.clone(),
                from: found.from.to_string(),
                to: found.to.to_string(),
                waits_for: network.active_site(&found.from).map_or_else(|| "?".to_owned(), SiteId::to_string),
                requested_at: requested_at.unwrap_or_default().to_owned(),
            }
        })
        .collect();
    let store_moves = network
        .store_moves
        .iter()
        .map(|(store, m)| StoreMoveRow {
            store: store.to_string(),
            from: m.from.to_string(),
            to: m.to.to_string(),
            leave_as: m.leave_as.as_str().to_owned(),
            status: m.status.as_str().to_owned(),
            requested_at: m.requested_at.clone(),
        })
        .collect();
    Ok(DashboardView {
        moves,
        store_moves,
        primary_move: network
            .primary_move
            .as_ref()
            .map(|m| (m.from.to_string(), m.to.to_string(), m.requested_at.clone())),
        central: network.central.to_string(),
        primary: network.primary.to_string(),
        generated_at: now_rfc3339(),
        sites,
        tables: db.counts_by_table()?,
        rejections,
        filter: filter.clone(),
    })
}

/// One site's page: its row of the sites table, its stores, its sync sessions of the last
/// [`HISTORY_DAYS`] days, and its rejected changes.
#[derive(Debug, Serialize)]
pub struct SiteView {
    pub site: SiteRow,
    /// Its stores and how it holds each.
    pub stores: Vec<(String, String)>,
    pub sessions: Vec<SyncSession>,
    pub rejections: Vec<RejectionRow>,
    /// The page's clock, Unix seconds.
    pub now: i64,
}

/// The page of `site`; `None` when there is no such site.
pub fn site_view(engine: &Engine, site: &str) -> Result<Option<SiteView>, EngineError> {
    let db = engine.db();
    let Some(row) = db.site_sync_rows()?.into_iter().find(|r| r.site == site) else { return Ok(None) };
    let now = now_unix();
    let id = SiteId::from(site);
    let samples = db.debt_samples(Some(&id), now - TREND_DAYS as i64 * DAY_SECS)?;
    let network = db.network();
    let stores = network
        .stores
        .keys()
        .map(|store| (store, network.sync_type(store, &id)))
        .filter(|(_, sync)| *sync != model::SyncType::None)
        .map(|(store, sync)| (store.to_string(), sync.as_str().to_owned()))
        .collect();
    Ok(Some(SiteView {
        site: site_row(engine, row, &samples, now)?,
        stores,
        sessions: db.sync_sessions(&id, now - HISTORY_DAYS * DAY_SECS)?,
        rejections: rejection_rows(db.rejections_matching(Some(site), None, REJECTIONS_SHOWN)?),
        now,
    }))
}

/// The pages' only style, inline: nothing is loaded from elsewhere. The colours of the sites
/// table go from green (synced today) to red (no sync for over a month); grey is never synced.
const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:2em}\
     td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}td.n{text-align:right}\
     tr.today td.when{background:#cfeccf}tr.week td.when{background:#e6f3c2}tr.month td.when{background:#fbe3b0}\
     tr.stale td.when{background:#f7c6c6}tr.never td.when{background:#e4e4e4}\
     .badge{display:inline-block;padding:0 .4em;border-radius:.3em;font-size:.85em}.b-today{background:#cfeccf}\
     .b-week{background:#e6f3c2}.b-month{background:#fbe3b0}.b-stale{background:#f7c6c6}.b-never{background:#e4e4e4}\
     .warn{color:#a00;font-weight:bold}.error{color:#a00}form.signout{float:right}nav a{margin-right:1em}\
     .legend span{margin-right:1em}svg text{font-size:10px;fill:#555}";

/// A whole page: `title` in the head, `body` in the body. Every value in a template is escaped
/// by `maud`; only the constant style sheet goes in as it is.
pub(crate) fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// A count of bytes as a person reads it.
pub fn bytes(n: u64) -> String {
    match n {
        n if n < 1_000 => format!("{n} B"),
        n if n < 1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        n if n < 1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n => format!("{:.1} GB", n as f64 / 1e9),
    }
}

/// A duration as a person reads it: "just now", "5 min", "3 h", "4 days".
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => "under a minute".to_owned(),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 48 * 3600 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

pub(crate) fn sign_out(csrf: &str) -> Markup {
    html! {
        form.signout method="post" action="/logout" {
            input type="hidden" name="csrf" value=(csrf);
            button { "Sign out" }
        }
    }
}

/// The debt trend: a small line over the last days (a dot where only one day has a sample).
fn sparkline(trend: &[Option<u64>]) -> Markup {
    const W: f64 = 84.0;
    const H: f64 = 20.0;
    let max = trend.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let step = W / (trend.len().max(2) - 1) as f64;
    let points: Vec<(f64, f64)> = trend
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i as f64 * step, H - 2.0 - (v as f64 / max) * (H - 4.0))))
        .collect();
    let line = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" ");
    let days = trend.iter().map(|v| v.map_or_else(|| "–".to_owned(), |n| n.to_string())).collect::<Vec<_>>().join(", ");
    html! {
        svg.trend width=(W) height=(H) viewBox={"0 0 " (W) " " (H)} role="img" {
            title { "waiting for it, the last " (trend.len()) " days (most each day): " (days) }
            line x1="0" y1=(H - 1.0) x2=(W) y2=(H - 1.0) stroke="#ddd" {}
            @if points.len() > 1 {
                polyline points=(line) fill="none" stroke="#c60" stroke-width="1.5" {}
            }
            @for (x, y) in &points {
                circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="1.8" fill="#c60" {}
            }
        }
    }
}

fn debt_cells(s: &SiteRow) -> Markup {
    html! {
        td.n.owed { (s.owed.map_or_else(|| "?".to_owned(), |n| n.to_string())) }
        td.n { (s.owed_bytes.map_or_else(|| "?".to_owned(), bytes)) }
        td { (s.oldest_waiting_secs.map_or_else(|| if s.owed == Some(0) { "—".to_owned() } else { "?".to_owned() }, age)) }
        td { (sparkline(&s.trend)) }
        td.n.to-push { (s.waiting_to_push.map_or_else(|| "?".to_owned(), |n| n.to_string())) }
    }
}

fn contact(s: &SiteRow) -> Markup {
    html! {
        span class={"badge b-" (s.freshness.class())} { (s.freshness.label()) }
        @if let Some(secs) = s.seconds_since_contact { " " (age(secs)) " ago" }
    }
}

/// The dashboard, with a sign-out form carrying the session's CSRF token.
pub fn render(view: &DashboardView, csrf: &str) -> String {
    let quarantined: Vec<&SiteRow> = view.sites.iter().filter(|s| s.quarantined).collect();
    let known_tables: Vec<&str> = view.tables.iter().map(|(t, _)| t.as_str()).collect();
    page(
        "Outpost central server",
        html! {
            (sign_out(csrf))
            h1 { "Outpost — central server " code { (view.central) } }
            nav { a href="/reports" { "Reports" } }
            p { "Primary: " code { (view.primary) } ". Generated " (view.generated_at) "." }
            @if let Some((from, to, since)) = &view.primary_move {
                p { "The primary is changing from " code { (from) } " to " code { (to) } " since " (since) "; it completes when " code { (from) } " next syncs and hands over." }
            }
            @if !quarantined.is_empty() {
                h2 { "Quarantined sites" }
                p.warn { "These sites' pushes are refused until an administrator looks at their rejected changes:" }
                ul {
                    @for s in &quarantined {
                        li { a href={"/sites/" (s.site)} { (s.site) } " — " (s.open_rejections) " rejected changes nobody has looked at. "
                             "After fixing the cause: " code { "outpost central site rejected " (s.site) " --clear" } }
                    }
                }
            }
            h2 { "Sites" }
            p.legend {
                @for f in [Freshness::Today, Freshness::ThisWeek, Freshness::ThisMonth, Freshness::OverAMonth, Freshness::Never] {
                    span class={"badge b-" (f.class())} { (f.label()) }
                }
            }
            table #sites {
                tr {
                    th { "site" } th { "kind" } th { "last contact" } th { "last push" } th { "last pull" }
                    th { "waiting for it" } th { "size" } th { "oldest waiting" } th { "trend (7 days)" } th { "still to push" } th { "rejected" }
                }
                @for s in &view.sites {
                    tr class=(s.freshness.class()) data-site=(s.site) {
                        td { a href={"/sites/" (s.site)} { (s.site) } }
                        td { (s.kind) @if let Some(at) = &s.disabled_at { " — " span.warn { "disabled" } " since " (at) } }
                        td.when { (contact(s)) }
                        td { (s.last_push_at.as_deref().unwrap_or("never")) }
                        td { (s.last_pull_at.as_deref().unwrap_or("never")) }
                        (debt_cells(s))
                        td.n { (s.rejections) @if s.quarantined { " " span.warn { "quarantined" } } }
                    }
                }
            }
            @if !view.moves.is_empty() {
                h2 { "Patient moves waiting" }
                p { "Each patient is read-only everywhere until the site of its old home store syncs and hands it over." }
                table {
                    tr { th { "patient" } th { "from" } th { "to" } th { "waits for site" } th { "since" } }
                    @for m in &view.moves {
                        tr { td { (m.patient) } td { (m.from) } td { (m.to) } td { (m.waits_for) } td { (m.requested_at) } }
                    }
                }
            }
            @if !view.store_moves.is_empty() {
                h2 { "Store moves waiting" }
                p { "A store becomes active on its new site once its old site has synced, pushed what it has and handed it over." }
                table {
                    tr { th { "store" } th { "from" } th { "to" } th { "old site keeps" } th { "stage" } th { "since" } }
                    @for m in &view.store_moves {
                        tr { td { (m.store) } td { (m.from) } td { (m.to) } td { (m.leave_as) } td { (m.status) } td { (m.requested_at) } }
                    }
                }
            }
            h2 #rejected { "Rejected changes" }
            form.filter method="get" action="/#rejected" {
                label { "site " select name="site" {
                    option value="" { "any" }
                    @for s in &view.sites {
                        option value=(s.site) selected[view.filter.site.as_deref() == Some(s.site.as_str())] { (s.site) }
                    }
                } }
                " "
                label { "table " select name="table" {
                    option value="" { "any" }
                    @for t in &known_tables {
                        option value=(t) selected[view.filter.table.as_deref() == Some(*t)] { (t) }
                    }
                } }
                " " button { "Show" }
            }
            (rejection_table(&view.rejections))
            h2 { "Records per table" }
            table {
                tr { th { "table" } th { "records" } }
                @for (table, count) in &view.tables {
                    tr { td { (table) } td.n { (count) } }
                }
            }
        },
    )
}

fn rejection_table(rejections: &[RejectionRow]) -> Markup {
    html! {
        @if rejections.is_empty() {
            p.none { "None." }
        } @else {
            table #rejections {
                tr { th { "site" } th { "seq" } th { "table" } th { "id" } th { "reason" } th { "at" } }
                @for r in rejections {
                    tr { td { (r.site) } td.n { (r.seq) } td { (r.table) } td { (r.id) } td { (r.reason) } td { (r.at) } }
                }
            }
        }
    }
}

/// A site's sync history as a chart: a bar per session, records it was sent above the line and
/// records it pushed below, over the last [`HISTORY_DAYS`] days (each bar's title says when,
/// how long, and the bytes each way).
fn history_chart(sessions: &[SyncSession], now: i64) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 180.0;
    const LEFT: f64 = 40.0;
    let mid = H / 2.0;
    let from = now - HISTORY_DAYS * DAY_SECS;
    let x = |at: i64| LEFT + (at - from).max(0) as f64 / (HISTORY_DAYS * DAY_SECS) as f64 * (W - LEFT - 4.0);
    let max = sessions.iter().map(|s| s.pulled.max(s.pushed)).max().unwrap_or(0).max(1);
    let scale = |n: u64| (n as f64 / max as f64) * (mid - 14.0);
    html! {
        svg #history width=(W) height=(H) viewBox={"0 0 " (W) " " (H)} role="img" {
            title { "sync sessions of the last " (HISTORY_DAYS) " days: records received above the line, records pushed below" }
            line x1=(LEFT) y1=(mid) x2=(W) y2=(mid) stroke="#999" {}
            text x="2" y="12" { (max) }
            text x="2" y=(mid + 3.0) { "0" }
            text x="2" y=(H - 4.0) { (max) }
            @for day in (0..=HISTORY_DAYS).step_by(5) {
                @let at = from + day * DAY_SECS;
                line x1=(format!("{:.1}", x(at))) y1=(mid - 3.0) x2=(format!("{:.1}", x(at))) y2=(mid + 3.0) stroke="#999" {}
                text x=(format!("{:.1}", x(at) - 14.0)) y=(H - 4.0 + if day == 0 { -12.0 } else { 0.0 }) { (day_label(at)) }
            }
            @for s in sessions {
                @let (bx, down, up) = (x(s.started_at), scale(s.pulled), scale(s.pushed));
                g.session {
                    title {
                        (time_label(s.started_at)) ", " (s.ended_at - s.started_at) " s, " (s.requests) " requests: "
                        (s.pulled) " records received (" (bytes(s.bytes_down)) "), "
                        (s.pushed) " pushed (" (bytes(s.bytes_up)) "), server busy " (s.busy_ms) " ms"
                    }
                    rect x=(format!("{bx:.1}")) y=(format!("{:.1}", mid - down.max(1.0))) width="3" height=(format!("{:.1}", down.max(1.0))) fill="#2a6fb0" {}
                    rect x=(format!("{bx:.1}")) y=(mid) width="3" height=(format!("{:.1}", up.max(if s.pushed > 0 { 1.0 } else { 0.0 }))) fill="#d9822b" {}
                }
            }
        }
    }
}

fn day_label(at: i64) -> String {
    jiff::Timestamp::from_second(at).map(|t| t.strftime("%b %d").to_string()).unwrap_or_default()
}

fn time_label(at: i64) -> String {
    jiff::Timestamp::from_second(at).map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

/// One site's page: its state, its stores, its sync history (a chart and a table), its
/// rejected changes.
pub fn render_site(view: &SiteView, csrf: &str) -> String {
    let s = &view.site;
    page(
        &format!("Outpost — site {}", s.site),
        html! {
            (sign_out(csrf))
            nav { a href="/" { "← all sites" } }
            h1 { "Site " code { (s.site) } " (" (s.kind) ")" }
            p.state { (contact(s))
                @if let Some(at) = &s.disabled_at { ". " span.warn { "Disabled since " (at) } ": its sync requests are refused; it keeps its data." }
                @if s.quarantined { ". " span.warn { "Quarantined" } ": " (s.open_rejections) " rejected changes wait for an administrator." }
            }
            table.debt {
                tr { th { "waiting for it" } th { "size" } th { "oldest waiting" } th { "trend (7 days)" } th { "still to push" } th { "pushed up to" } }
                tr { (debt_cells(s)) td.n { (s.acked) } }
            }
            h2 { "Stores" }
            @if view.stores.is_empty() { p { "None." } } @else {
                table { tr { th { "store" } th { "held as" } }
                    @for (store, sync) in &view.stores { tr { td { (store) } td { (sync) } } }
                }
            }
            h2 { "Sync history (last " (HISTORY_DAYS) " days)" }
            p.legend { span style="color:#2a6fb0" { "■ records received" } span style="color:#d9822b" { "■ records pushed" } }
            (history_chart(&view.sessions, view.now))
            @if view.sessions.is_empty() { p { "No sync in the last " (HISTORY_DAYS) " days." } } @else {
                table #sessions {
                    tr { th { "started" } th { "took" } th { "requests" } th { "received" } th { "bytes down" } th { "pushed" } th { "bytes up" } }
                    @for x in view.sessions.iter().rev() {
                        tr { td { (time_label(x.started_at)) } td.n { (x.ended_at - x.started_at) " s" } td.n { (x.requests) }
                             td.n { (x.pulled) } td.n { (bytes(x.bytes_down)) } td.n { (x.pushed) } td.n { (bytes(x.bytes_up)) } }
                    }
                }
            }
            h2 { "Rejected changes" }
            (rejection_table(&view.rejections))
        },
    )
}

/// A site page asked for a site that does not exist (or no longer does).
pub fn no_such_site_page(site: &str, csrf: &str) -> String {
    page(
        "Outpost — no such site",
        html! {
            (sign_out(csrf))
            nav { a href="/" { "← all sites" } }
            h1 { "No site " code { (site) } }
            p { "This central server has no site of that name. " code { "outpost central site list" } " lists them." }
        },
    )
}

/// The administrator's sign-in page; `message` says why the last attempt failed.
pub fn login_page(message: Option<&str>, csrf: &str) -> String {
    page(
        "Outpost — sign in",
        html! {
            h1 { "Outpost central server" }
            @if let Some(message) = message {
                p.error { (message) }
            }
            p { "Sign in as the administrator to see the dashboard." }
            form method="post" action="/login" {
                label {
                    "Administrator password "
                    input type="password" name="password" autocomplete="current-password" autofocus required;
                }
                " "
                input type="hidden" name="csrf" value=(csrf);
                " "
                button { "Sign in" }
            }
            p {
                "Forgot the password? On the server, set a new one with "
                code { "outpost central admin set-password --data DIR" } "."
            }
        },
    )
}

/// What the dashboard says while no administrator has been set (a database made before there
/// were administrators): it stays closed, and says how to open it.
pub fn no_admin_page() -> String {
    page(
        "Outpost — no administrator yet",
        html! {
            h1 { "No administrator yet" }
            p { "This central server has no administrator password, so its dashboard stays closed." }
            p { "On the server, set one with:" }
            pre { "outpost central admin set-password --data DIR" }
            p {
                "(or " code { "--database URL" } " for PostgreSQL). The password is read from a prompt, from "
                code { "--admin-password-file FILE" } ", or from " code { "OUTPOST_ADMIN_PASSWORD" } "."
            }
            p { "Then reload this page." }
        },
    )
}

/// A form whose CSRF token does not match (posted from elsewhere, or too old).
pub fn stale_form_page() -> String {
    page(
        "Outpost — form refused",
        html! {
            h1 { "Form refused" }
            p { "This form has expired or was not sent from this server's own page, so nothing was done." }
            p { a href="/login" { "Open the sign-in page again" } "." }
        },
    )
}

/// Sign-ins refused for a while.
pub fn too_many_page(refusal: &crate::auth::Refusal, seconds: u64) -> String {
    let why = match refusal {
        crate::auth::Refusal::Busy { .. } => "The server is busy checking passwords.",
        _ => "Too many wrong passwords.",
    };
    page(
        "Outpost — try again later",
        html! {
            h1 { "Outpost central server" }
            p.error { (why) " Try again in " (seconds) " s." }
            p { a href="/login" { "Back to the sign-in page" } "." }
        },
    )
}

pub use protocol::now_rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_goes_from_today_to_over_a_month_and_never_is_its_own() {
        let day = 86_400.0;
        assert_eq!(Freshness::of(None), Freshness::Never);
        assert_eq!(Freshness::of(Some(60.0)), Freshness::Today);
        assert_eq!(Freshness::of(Some(2.0 * day)), Freshness::ThisWeek);
        assert_eq!(Freshness::of(Some(8.0 * day)), Freshness::ThisMonth);
        assert_eq!(Freshness::of(Some(30.0 * day)), Freshness::ThisMonth, "red after a month, not on its last day");
        assert_eq!(Freshness::of(Some(31.0 * day)), Freshness::OverAMonth);
        assert_eq!((bytes(999), bytes(2_500), bytes(3_400_000)), ("999 B".into(), "2.5 kB".into(), "3.4 MB".into()));
        assert_eq!(
            (age(30), age(600), age(7_200), age(5 * 86_400)),
            ("under a minute".into(), "10 min".into(), "2 h".into(), "5 days".into())
        );
    }

    #[test]
    fn a_stale_site_is_marked_and_every_value_is_escaped() {
        let view = DashboardView {
            central: "central".into(),
            primary: "central".into(),
            generated_at: "2026-12-01T15:09:05Z".into(),
            sites: vec![SiteRow {
                site: "a&b".into(),
                kind: "desktop".into(),
                acked: 3,
                last_push_at: None,
                last_pull_at: Some("2026-10-01T00:00:00.000Z".into()),
                stale: true,
                never_synced: false,
                freshness: Freshness::OverAMonth,
                seconds_since_contact: Some(61 * 86_400),
                rejections: 0,
                open_rejections: 0,
                quarantined: false,
                owed: Some(7),
                owed_bytes: Some(2_500),
                oldest_waiting_secs: Some(3 * 86_400),
                waiting_to_push: None,
                trend: vec![None, None, Some(2), Some(4), None, Some(7), Some(7)],
                disabled_at: Some("2026-11-30T00:00:00Z".into()),
            }],
            tables: vec![("<t>".into(), 1)],
            rejections: Vec::new(),
            filter: RejectionFilter::default(),
            moves: vec![MoveRow {
                patient: RecordId::from("p<1>"),
                from: "north-dispensary".into(),
                to: "south-dispensary".into(),
                waits_for: "north".into(),
                requested_at: "2026-12-01T15:00:00Z".into(),
            }],
            primary_move: None,
            store_moves: vec![StoreMoveRow {
                store: "s<1>".into(),
                from: "north".into(),
                to: "south".into(),
                leave_as: "collector".into(),
                status: "pending".into(),
                requested_at: "2026-12-01T15:00:00Z".into(),
            }],
        };
        let html = render(&view, "to\"ken");
        assert!(
            html.contains("<tr class=\"stale\" data-site=\"a&amp;b\"><td><a href=\"/sites/a&amp;b\">a&amp;b</a></td><td>desktop — <span class=\"warn\">disabled</span> since 2026-11-30T00:00:00Z</td>"),
            "{html}"
        );
        assert!(
            html.contains(
                "<td class=\"when\"><span class=\"badge b-stale\">no sync for over a month</span> 61 days ago</td>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<td class=\"n owed\">7</td><td class=\"n\">2.5 kB</td><td>3 days</td>"),
            "its sync debt is shown: {html}"
        );
        assert!(html.contains("(most each day): –, –, 2, 4, –, 7, 7</title>"), "the trend, day by day: {html}");
        assert!(html.contains("<td>&lt;t&gt;</td><td class=\"n\">1</td>"), "{html}");
        assert!(html.contains("<h2>Patient moves waiting</h2>"), "a pending move is shown: {html}");
        assert!(
            html.contains("<td>s&lt;1&gt;</td><td>north</td><td>south</td><td>collector</td><td>pending</td>"),
            "a pending store move is shown: {html}"
        );
        assert!(
            html.contains("<td>p&lt;1&gt;</td><td>north-dispensary</td><td>south-dispensary</td><td>north</td>"),
            "{html}"
        );
        assert!(html.contains("name=\"csrf\" value=\"to&quot;ken\""), "{html}");
        assert!(login_page(Some("<b>"), "x").contains("<p class=\"error\">&lt;b&gt;</p>"));
    }
}
