//! What a person sees on the central server: every site, when it last synced (red after a
//! month), what waits for it, what was rejected, and how many records each table holds.

use crate::engine::{Engine, EngineError};
use model::SiteId;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct DashboardView {
    pub central: String,
    pub primary: String,
    pub generated_at: String,
    pub sites: Vec<SiteRow>,
    pub tables: Vec<(String, u64)>,
    pub rejections: Vec<RejectionRow>,
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
    pub rejections: u64,
}

#[derive(Debug, Serialize)]
pub struct RejectionRow {
    pub site: String,
    pub seq: i64,
    pub table: String,
    pub id: String,
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
            SiteRow {
                kind: kind
                    .map_or("unknown", |k| if *k == model::SiteKind::Mobile { "mobile" } else { "desktop" })
                    .to_owned(),
                acked: row.acked.0,
                last_push_at: row.last_push_at,
                last_pull_at: row.last_pull_at,
                stale: row.stale,
                rejections: row.rejections,
                site: row.site,
            }
        })
        .collect();
    let rejections = db
        .rejections(Some(50))?
        .into_iter()
        .map(|r| RejectionRow { site: r.from, seq: r.seq.0, table: r.table, id: r.id, reason: r.reason, at: r.at })
        .collect();
    Ok(DashboardView {
        central: network.central.to_string(),
        primary: network.primary.to_string(),
        generated_at: now_rfc3339(),
        sites,
        tables: db.counts_by_table()?,
        rejections,
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The start of every page: inline style only, nothing loaded from elsewhere.
fn head(title: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.stale{{background:#fdd}}\
         .error{{color:#a00}}form.signout{{float:right}}</style></head><body>",
        escape(title)
    )
}

/// The dashboard, with a sign-out form carrying the session's CSRF token.
pub fn render(view: &DashboardView, csrf: &str) -> String {
    let mut html = head("Outpost central server");
    html += &format!(
        "<form class=signout method=post action=/logout><input type=hidden name=csrf value=\"{}\"><button>Sign out</button></form>",
        escape(csrf)
    );
    html += &format!(
        "<h1>Outpost — central server <code>{}</code></h1><p>Primary: <code>{}</code>. Generated {}.</p>",
        escape(&view.central),
        escape(&view.primary),
        escape(&view.generated_at)
    );
    html += "<h2>Sites</h2><table><tr><th>site</th><th>kind</th><th>last push</th><th>last pull</th><th>pushed up to</th><th>rejected</th></tr>";
    for s in &view.sites {
        let class = if s.stale { " class=stale" } else { "" };
        html += &format!(
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.site),
            escape(&s.kind),
            escape(s.last_push_at.as_deref().unwrap_or("never")),
            escape(s.last_pull_at.as_deref().unwrap_or("never")),
            s.acked,
            s.rejections
        );
    }
    html += "</table><h2>Rejected changes</h2><table><tr><th>site</th><th>seq</th><th>table</th><th>id</th><th>reason</th><th>at</th></tr>";
    for r in &view.rejections {
        html += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.site),
            r.seq,
            escape(&r.table),
            escape(&r.id),
            escape(&r.reason),
            escape(&r.at)
        );
    }
    html += "</table><h2>Records per table</h2><table><tr><th>table</th><th>records</th></tr>";
    for (table, count) in &view.tables {
        html += &format!("<tr><td>{}</td><td>{count}</td></tr>", escape(table));
    }
    html += "</table></body></html>";
    html
}

/// The administrator's sign-in page; `message` says why the last attempt failed.
pub fn login_page(message: Option<&str>, csrf: &str) -> String {
    let mut html = head("Outpost — sign in");
    html += "<h1>Outpost central server</h1>";
    if let Some(message) = message {
        html += &format!("<p class=error>{}</p>", escape(message));
    }
    html += &format!(
        "<p>Sign in as the administrator to see the dashboard.</p>\
         <form method=post action=/login><label>Administrator password \
         <input type=password name=password autocomplete=current-password autofocus required></label> \
         <input type=hidden name=csrf value=\"{}\"> <button>Sign in</button></form>\
         <p>Forgot the password? On the server, set a new one with \
         <code>outpost central admin set-password --data DIR</code>.</p></body></html>",
        escape(csrf)
    );
    html
}

/// What the dashboard says while no administrator has been set (a database made before there
/// were administrators): it stays closed, and says how to open it.
pub fn no_admin_page() -> String {
    head("Outpost — no administrator yet")
        + "<h1>No administrator yet</h1>\
           <p>This central server has no administrator password, so its dashboard stays closed.</p>\
           <p>On the server, set one with:</p><pre>outpost central admin set-password --data DIR</pre>\
           <p>(or <code>--database URL</code> for PostgreSQL). The password is read from a prompt, from \
           <code>--admin-password-file FILE</code>, or from <code>OUTPOST_ADMIN_PASSWORD</code>.</p>\
           <p>Then reload this page.</p></body></html>"
}

/// A form whose CSRF token does not match (posted from elsewhere, or too old).
pub fn stale_form_page() -> String {
    head("Outpost — form refused")
        + "<h1>Form refused</h1><p>This form has expired or was not sent from this server's own page, \
           so nothing was done.</p><p><a href=/login>Open the sign-in page again</a>.</p></body></html>"
}

/// Sign-ins refused for a while.
pub fn too_many_page(refusal: &crate::auth::Refusal, seconds: u64) -> String {
    let why = match refusal {
        crate::auth::Refusal::Busy { .. } => "The server is busy checking passwords.",
        _ => "Too many wrong passwords.",
    };
    head("Outpost — try again later")
        + &format!(
            "<h1>Outpost central server</h1><p class=error>{why} Try again in {seconds} s.</p>\
             <p><a href=/login>Back to the sign-in page</a>.</p></body></html>"
        )
}

pub use protocol::now_rfc3339;
