//! `/metrics`: what a Prometheus server scrapes from the central server, in its text format.
//! Counts and ages only, never a record's contents, so it needs no login: how many pushes and
//! pulls this process served and how long they took, changes and bytes each way, refusals,
//! argon2 checks and how many waited for a slot, and per site what waits for it, what it still
//! has to push, how long since it last pulled and its refused changes.

use crate::admin;
use crate::engine::{Engine, EngineError};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// This process's counters since it started (Prometheus computes the rates).
#[derive(Debug, Default)]
pub struct Counters {
    pub pushes: AtomicU64,
    pub pulls: AtomicU64,
    pub push_micros: AtomicU64,
    pub pull_micros: AtomicU64,
    pub changes_pushed: AtomicU64,
    pub changes_rejected: AtomicU64,
    pub changes_pulled: AtomicU64,
    /// Request bodies received and answers sent by the sync API, compressed, as on the wire.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Requests refused (authentication, protocol, size, quarantine, …), by their answer.
    pub refused: AtomicU64,
}

impl Counters {
    pub fn push(&self, took: Duration, changes: u64, rejected: u64, bytes_in: u64, bytes_out: u64) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        self.push_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.changes_pushed.fetch_add(changes, Ordering::Relaxed);
        self.changes_rejected.fetch_add(rejected, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    pub fn pull(&self, took: Duration, changes: u64, bytes_in: u64, bytes_out: u64) {
        self.pulls.fetch_add(1, Ordering::Relaxed);
        self.pull_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.changes_pulled.fetch_add(changes, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }
}

/// What argon2 did in this process: checks run, and checks that waited for a free slot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Argon2Stats {
    pub checks: u64,
    pub waited: u64,
}

/// The whole exposition, from the counters and the database's per-site bookkeeping.
pub fn render(engine: &Engine, counters: &Counters, argon2: Argon2Stats) -> Result<String, EngineError> {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v.to_string())];
    let secs = |micros: u64| vec![(String::new(), format!("{:.6}", micros as f64 / 1e6))];
    metric("outpost_pushes_total", "counter", "Push batches served by this process.", &one(load(&counters.pushes)));
    metric("outpost_push_seconds_total", "counter", "Time spent serving pushes.", &secs(load(&counters.push_micros)));
    metric("outpost_pulls_total", "counter", "Pull pages served by this process.", &one(load(&counters.pulls)));
    metric("outpost_pull_seconds_total", "counter", "Time spent serving pulls.", &secs(load(&counters.pull_micros)));
    metric(
        "outpost_changes_pushed_total",
        "counter",
        "Changes received in pushes.",
        &one(load(&counters.changes_pushed)),
    );
    metric(
        "outpost_changes_rejected_total",
        "counter",
        "Pushed changes refused and kept for review.",
        &one(load(&counters.changes_rejected)),
    );
    metric(
        "outpost_changes_pulled_total",
        "counter",
        "Changes sent in pull pages.",
        &one(load(&counters.changes_pulled)),
    );
    metric(
        "outpost_sync_bytes_received_total",
        "counter",
        "Sync request bodies received, compressed.",
        &one(load(&counters.bytes_in)),
    );
    metric(
        "outpost_sync_bytes_sent_total",
        "counter",
        "Sync answers sent, compressed.",
        &one(load(&counters.bytes_out)),
    );
    metric(
        "outpost_requests_refused_total",
        "counter",
        "Sync requests refused with an error answer.",
        &one(load(&counters.refused)),
    );
    metric("outpost_argon2_checks_total", "counter", "Password checks that ran argon2.", &one(argon2.checks));
    metric("outpost_argon2_waits_total", "counter", "argon2 checks that waited for a free slot.", &one(argon2.waited));

    let sites = admin::list_sites(engine)?;
    let per_site = |value: &dyn Fn(&admin::SiteListing) -> Option<String>| -> Vec<(String, String)> {
        sites.iter().filter_map(|s| value(s).map(|v| (format!("{{site=\"{}\"}}", s.site), v))).collect()
    };
    metric(
        "outpost_site_owed_changes",
        "gauge",
        "Changes waiting for a site, from its last noted pull.",
        &per_site(&|s| s.owed.map(|n| n.to_string())),
    );
    metric(
        "outpost_site_waiting_to_push",
        "gauge",
        "Changes a site said at its last pull it still had to push.",
        &per_site(&|s| s.waiting_to_push.map(|n| n.to_string())),
    );
    metric(
        "outpost_site_open_rejections",
        "gauge",
        "Refused changes of a site waiting for an administrator.",
        &per_site(&|s| Some(s.open_rejections.to_string())),
    );
    metric(
        "outpost_site_disabled",
        "gauge",
        "1 when a site is disabled.",
        &per_site(&|s| Some(u8::from(s.disabled_at.is_some()).to_string())),
    );
    let age =
        |at: &Option<String>| at.as_deref().and_then(protocol::seconds_since).map(|s| format!("{:.0}", s.max(0.0)));
    metric(
        "outpost_site_last_pull_age_seconds",
        "gauge",
        "Seconds since a site last pulled (absent: never).",
        &per_site(&|s| age(&s.last_pull_at)),
    );
    metric(
        "outpost_site_last_push_age_seconds",
        "gauge",
        "Seconds since a site last pushed (absent: never).",
        &per_site(&|s| age(&s.last_push_at)),
    );
    Ok(out)
}
