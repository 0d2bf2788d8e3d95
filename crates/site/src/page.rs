//! The site's own page, served by `outpost site serve` on its local address: what waits to be
//! pushed, the last good sync, the last error in plain words, a *sync now* button with live
//! progress (records remaining, as the seeds' manual sync button), pause, resume and disable,
//! and the rejected changes. Plain HTML with an inline style and no script: while a sync runs
//! the page reloads itself every second, so it works in any browser the site has.

use crate::status::{RejectedChange, SiteStatus, SyncState};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;

/// What the sync under way (or the last one) is doing, for the page and `/api/progress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LiveProgress {
    /// A sync is running now.
    pub running: bool,
    /// What it is doing, in words ("pushing", "receiving", "waiting to retry", …).
    pub doing: String,
    pub pushed: u64,
    /// Changes of this site still to push.
    pub to_push: u64,
    pub pulled: u64,
    /// Records the central server still holds for this site, about.
    pub to_pull: u64,
    /// How the last finished sync ended, in words, and whether it went well.
    pub last_outcome: Option<(bool, String)>,
}

impl LiveProgress {
    /// Records still to go, either way (the seeds' "records remaining").
    pub fn remaining(&self) -> u64 {
        self.to_push + self.to_pull
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}\
     table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
     td.n{text-align:right}.ok{color:#186a18}.error{color:#a00}.warn{color:#a00;font-weight:bold}\
     .state{display:inline-block;padding:0 .5em;border-radius:.3em}.s-active{background:#cfeccf}\
     .s-paused{background:#fbe3b0}.s-disabled{background:#f7c6c6}form{display:inline-block;margin-right:.5em}\
     button{font-size:1em;padding:.3em .8em}#progress{border:1px solid #2a6fb0;padding:.5em 1em;margin:1em 0}\
     progress{width:20em}";

/// The page; `age_of_last_sync` is the seconds since the last good sync, when there was one.
pub fn render(
    status: &SiteStatus,
    progress: &LiveProgress,
    rejected: &[RejectedChange],
    age_of_last_sync: Option<u64>,
) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if progress.running { meta http-equiv="refresh" content="1"; }
                title { "Outpost — site " (status.site) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Outpost — site " code { (status.site) } }
                p { "Syncs with " code { (status.central_url) } ". Sync is "
                    span class={"state s-" (status.state)} { (status.state) } "." }
                @if let Some(notice) = &status.notice { p.warn { (notice) } }
                @for moving in &status.store_moves { p.warn { (moving) } }
                table.summary {
                    tr { th { "waiting to push" } td.n #waiting { (status.waiting_to_push) } }
                    tr { th { "last good sync" } td #last-sync { (last_sync(status, age_of_last_sync)) } }
                    tr { th { "last error" } td #last-error {
                        @match &status.last_error { Some(e) => span.error { (e) }, None => "none" } } }
                    tr { th { "records held" } td.n { (status.records) } }
                }
                (progress_box(progress))
                (controls(status.state, progress.running))
                h2 { "Rejected changes" }
                (rejected_table(rejected))
            }
        }
    }
    .into_string()
}

fn last_sync(status: &SiteStatus, age: Option<u64>) -> Markup {
    html! {
        @match (&status.last_sync_at, age) {
            (Some(at), Some(age)) => { (at) " (" (ago(age)) ")" }
            (Some(at), None) => { (at) }
            (None, _) if status.initialised => { "never" }
            (None, _) => { "never: this site has not received its data yet" }
        }
    }
}

/// A duration in the past as a person reads it.
pub fn ago(seconds: u64) -> String {
    match seconds {
        s if s < 60 => "under a minute ago".to_owned(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 48 * 3600 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

fn progress_box(p: &LiveProgress) -> Markup {
    let done = p.pushed + p.pulled;
    html! {
        @if p.running {
            div #progress .running {
                strong { "Syncing: " (p.doing) }
                p { progress max=(done + p.remaining()) value=(done) {} " " span #remaining { (p.remaining()) } " records remaining" }
                p { (p.pushed) " pushed, " (p.to_push) " still to push; " (p.pulled) " received, about " (p.to_pull) " still to receive." }
            }
        } @else if let Some((good, outcome)) = &p.last_outcome {
            div #progress .finished {
                @if *good { span.ok { "Sync finished: " (outcome) } } @else { span.error { "Sync did not complete: " (outcome) } }
            }
        }
    }
}

fn controls(state: SyncState, running: bool) -> Markup {
    html! {
        p.controls {
            form method="post" action="/sync-now" {
                button #sync-now disabled[running || state == SyncState::Disabled] { "Sync now" }
            }
            @for (to, label) in [(SyncState::Paused, "Pause"), (SyncState::Active, "Resume"), (SyncState::Disabled, "Disable")] {
                @if to != state && !(to == SyncState::Paused && state == SyncState::Disabled) {
                    form method="post" action="/sync-state" {
                        input type="hidden" name="state" value=(to);
                        button { (if to == SyncState::Active && state == SyncState::Disabled { "Enable" } else { label }) }
                    }
                }
            }
        }
        p { small { "Paused: scheduled syncs wait, a sync asked for here still runs. Disabled: no sync at all until enabled." } }
    }
}

fn rejected_table(rejected: &[RejectedChange]) -> Markup {
    html! {
        @if rejected.is_empty() { p { "None." } } @else {
            table #rejected {
                tr { th { "when" } th { "table" } th { "record" } th { "reason" } }
                @for r in rejected { tr { td { (r.at) } td { (r.table) } td { code { (r.id) } } td { (r.reason) } } }
            }
        }
    }
}

/// A short page for a refused form (sent from another site's page, or an unknown state).
pub fn refused(message: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" { head { meta charset="utf-8"; title { "Outpost — refused" } style { (PreEscaped(STYLE)) } }
            body { h1 { "Refused" } p.error { (message) } p { a href="/" { "Back to the site's page" } } } }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: SyncState) -> SiteStatus {
        SiteStatus {
            site: "north".into(),
            central_url: "http://central:8080".into(),
            state,
            waiting_to_push: 3,
            last_sync_at: Some("2026-12-02T10:00:00.000Z".into()),
            last_error: Some("the central server could not be reached <timeout>".into()),
            rejected: 0,
            initialised: true,
            records: 12,
            notice: None,
            store_moves: vec![],
        }
    }

    #[test]
    fn a_running_sync_reloads_the_page_and_shows_what_remains() {
        let running = LiveProgress {
            running: true,
            doing: "receiving".into(),
            pushed: 3,
            pulled: 40,
            to_pull: 60,
            ..Default::default()
        };
        let html = render(&status(SyncState::Active), &running, &[], Some(120));
        assert!(html.contains(r#"<meta http-equiv="refresh" content="1">"#), "{html}");
        assert!(html.contains(r#"<span id="remaining">60</span> records remaining"#), "{html}");
        assert!(html.contains(r#"<button id="sync-now" disabled>"#), "one sync at a time: {html}");
        assert!(html.contains("(2 min ago)"), "{html}");
        assert!(html.contains("&lt;timeout&gt;"), "escaped: {html}");
        let idle = render(&status(SyncState::Active), &LiveProgress::default(), &[], None);
        assert!(!idle.contains("refresh") && idle.contains(r#"<button id="sync-now">"#), "{idle}");
    }

    #[test]
    fn the_buttons_follow_the_sync_state() {
        let buttons = |state| {
            let html = render(&status(state), &LiveProgress::default(), &[], None);
            ["Pause", "Resume", "Enable", "Disable"]
                .into_iter()
                .filter(|b| html.contains(&format!("<button>{b}</button>")))
                .collect::<Vec<_>>()
        };
        assert_eq!(buttons(SyncState::Active), ["Pause", "Disable"]);
        assert_eq!(buttons(SyncState::Paused), ["Resume", "Disable"]);
        assert_eq!(buttons(SyncState::Disabled), ["Enable"]);
        let disabled = render(&status(SyncState::Disabled), &LiveProgress::default(), &[], None);
        assert!(disabled.contains(r#"<button id="sync-now" disabled>"#), "{disabled}");
    }
}
