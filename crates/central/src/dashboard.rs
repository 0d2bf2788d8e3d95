//! What a person sees on the central server: every site, when it last synced (red after a
//! month), what waits for it, what was rejected, and how many records each table holds.

use crate::engine::{Engine, EngineError};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use model::{RecordId, SiteId};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct DashboardView {
    pub central: String,
    pub primary: String,
    pub generated_at: String,
    pub sites: Vec<SiteRow>,
    pub tables: Vec<(String, u64)>,
    pub rejections: Vec<RejectionRow>,
    /// Moves of patients to another home store that wait for the old home site to sync.
    pub moves: Vec<MoveRow>,
    /// Moves of stores to another site under way.
    pub store_moves: Vec<StoreMoveRow>,
    /// A change of primary under way: from, to, since.
    pub primary_move: Option<(String, String, String)>,
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
    pub rejections: u64,
    /// Its sync debt: changes waiting for it (from its last noted pull), and what it said it
    /// still had to push; `None` until it has pulled.
    pub owed: Option<u64>,
    pub waiting_to_push: Option<u64>,
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

pub fn view(engine: &Engine) -> Result<DashboardView, EngineError> {
    let db = engine.db();
    let network = db.network();
    let sites = db
        .site_sync_rows()?
        .into_iter()
        .map(|row| {
            let kind = network.sites.get(&SiteId::from(row.site.as_str()));
            let never_synced = row.never_synced();
            let owed = row.pulled_to.map(|at| engine.owed(&SiteId::from(row.site.as_str()), at)).transpose()?;
            Ok(SiteRow {
                owed,
                waiting_to_push: row.waiting_to_push,
                disabled_at: row.disabled_at,
                kind: kind
                    .map_or("unknown", |k| if *k == model::SiteKind::Mobile { "mobile" } else { "desktop" })
                    .to_owned(),
                acked: row.acked.0,
                last_push_at: row.last_push_at,
                last_pull_at: row.last_pull_at,
                stale: row.stale,
                never_synced,
                rejections: row.rejections,
                site: row.site,
            })
        })
        .collect::<Result<_, EngineError>>()?;
    let rejections = db
        .rejections(Some(50))?
        .into_iter()
        .map(|r| RejectionRow {
            site: r.from.to_string(),
            seq: r.seq.0,
            table: r.table,
            id: r.id,
            reason: r.reason,
            at: r.at,
        })
        .collect();
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
    })
}

/// The page's only style, inline: nothing is loaded from elsewhere.
const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}\
     td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.stale{background:#fdd}.never{background:#eee}\
     .error{color:#a00}form.signout{float:right}";

/// A whole page: `title` in the head, `body` in the body. Every value in a template is escaped
/// by `maud`; only the constant style sheet goes in as it is.
fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// The dashboard, with a sign-out form carrying the session's CSRF token.
pub fn render(view: &DashboardView, csrf: &str) -> String {
    page(
        "Outpost central server",
        html! {
            form.signout method="post" action="/logout" {
                input type="hidden" name="csrf" value=(csrf);
                button { "Sign out" }
            }
            h1 { "Outpost — central server " code { (view.central) } }
            p { "Primary: " code { (view.primary) } ". Generated " (view.generated_at) "." }
            @if let Some((from, to, since)) = &view.primary_move {
                p { "The primary is changing from " code { (from) } " to " code { (to) } " since " (since) "; it completes when " code { (from) } " next syncs and hands over." }
            }
            h2 { "Sites" }
            table {
                tr { th { "site" } th { "kind" } th { "last push" } th { "last pull" } th { "pushed up to" } th { "waiting for it" } th { "still to push" } th { "rejected" } }
                @for s in &view.sites {
                    tr class=[s.stale.then_some("stale").or(s.never_synced.then_some("never"))] {
                        td { (s.site) }
                        td { (s.kind) @if let Some(at) = &s.disabled_at { " — disabled since " (at) } }
                        td { (s.last_push_at.as_deref().unwrap_or("never")) }
                        td { (s.last_pull_at.as_deref().unwrap_or("never")) }
                        td { (s.acked) }
                        td { (s.owed.map_or_else(|| "?".to_owned(), |n| n.to_string())) }
                        td { (s.waiting_to_push.map_or_else(|| "?".to_owned(), |n| n.to_string())) }
                        td { (s.rejections) }
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
            h2 { "Rejected changes" }
            table {
                tr { th { "site" } th { "seq" } th { "table" } th { "id" } th { "reason" } th { "at" } }
                @for r in &view.rejections {
                    tr { td { (r.site) } td { (r.seq) } td { (r.table) } td { (r.id) } td { (r.reason) } td { (r.at) } }
                }
            }
            h2 { "Records per table" }
            table {
                tr { th { "table" } th { "records" } }
                @for (table, count) in &view.tables {
                    tr { td { (table) } td { (count) } }
                }
            }
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
                rejections: 0,
                owed: Some(7),
                waiting_to_push: None,
                disabled_at: Some("2026-11-30T00:00:00Z".into()),
            }],
            tables: vec![("<t>".into(), 1)],
            rejections: Vec::new(),
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
            html.contains("<tr class=\"stale\"><td>a&amp;b</td><td>desktop — disabled since 2026-11-30T00:00:00Z</td><td>never</td>"),
            "{html}"
        );
        assert!(html.contains("<td>3</td><td>7</td><td>?</td><td>0</td>"), "its sync debt is shown: {html}");
        assert!(html.contains("<td>&lt;t&gt;</td><td>1</td>"), "{html}");
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
