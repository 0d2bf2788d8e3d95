//! `outpost site serve`: syncs on a schedule and serves a small local API to read and write
//! records, see the status, and sync now.

use crate::client::Client;
use crate::page::{self, LiveProgress};
use crate::status::{self, SyncState};
use crate::sync::{sync_once, Step};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use model::RecordId;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use store::{Db, StoreError, Write};
use tokio::sync::Mutex;

#[derive(Debug)]
struct LocalState {
    db: Arc<Db>,
    client: Client,
    /// One sync at a time, whether scheduled or asked for.
    syncing: Mutex<()>,
    /// What this process's syncs did, for `/metrics`.
    counters: SyncCounters,
    /// The sync under way, or how the last one ended: the site's page shows it.
    progress: std::sync::Mutex<LiveProgress>,
}

impl LocalState {
    fn progress(&self) -> std::sync::MutexGuard<'_, LiveProgress> {
        self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sync begins: the page shows it running from now on.
    fn begin(&self) {
        let mut p = self.progress();
        *p = LiveProgress {
            running: true,
            doing: "connecting".into(),
            last_outcome: p.last_outcome.take(),
            ..Default::default()
        };
    }

    fn step(&self, step: Step) {
        let mut p = self.progress();
        match step {
            Step::Connecting => p.doing = "connecting".into(),
            Step::Pushing { pushed, waiting } => {
                (p.doing, p.pushed, p.to_push) = ("pushing this site's changes".into(), pushed, waiting);
            }
            Step::Pulling { pulled, remaining } => {
                (p.doing, p.pulled, p.to_pull, p.to_push) = ("receiving".into(), pulled, remaining, 0);
            }
            Step::Retrying { attempt, of, in_secs } => {
                p.doing = format!("the link failed; attempt {attempt} of {of} in {in_secs} s");
            }
        }
    }

    fn end(&self, outcome: &Result<crate::SyncReport, String>) {
        let mut p = self.progress();
        p.running = false;
        p.last_outcome = Some(match outcome {
            Ok(r) => (
                true,
                format!(
                    "{} pushed, {} received, {} rejected, in {:.1} s",
                    r.pushed,
                    r.pulled,
                    r.rejected,
                    r.duration.as_secs_f64()
                ),
            ),
            Err(e) => (false, e.clone()),
        });
    }
}

/// This process's syncs since it started (Prometheus computes the rates).
#[derive(Debug, Default)]
struct SyncCounters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    micros: AtomicU64,
    pushed: AtomicU64,
    pulled: AtomicU64,
    rejected: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

/// Serves the local API on `listener` and syncs every `every` until the process stops.
pub async fn serve(
    db: Arc<Db>,
    client: Client,
    listener: tokio::net::TcpListener,
    every: Duration,
) -> std::io::Result<()> {
    let state = Arc::new(LocalState {
        db,
        client,
        syncing: Mutex::new(()),
        counters: SyncCounters::default(),
        progress: Default::default(),
    });
    let scheduler = state.clone();
    tokio::spawn(async move {
        loop {
            // The outcome is logged inside (the one place a sync's failure is logged); the
            // schedule goes on either way.
            let _ = run_sync(&scheduler, false).await;
            tokio::time::sleep(every).await;
        }
    });
    let app = Router::new()
        .route("/", get(get_page))
        .route("/sync-now", post(press_sync_now))
        .route("/sync-state", post(set_state))
        .route("/api/progress", get(get_progress))
        .route("/metrics", get(get_metrics))
        .route("/api/status", get(get_status))
        .route("/api/rejected", get(get_rejected))
        .route("/api/sync", post(sync_now))
        .route("/api/records/{table}/{id}", get(get_record).put(put_record).delete(delete_record))
        .with_state(state);
    tracing::info!(addr = %listener.local_addr()?, "site API listening");
    axum::serve(listener, app).await
}

async fn run_sync(state: &Arc<LocalState>, asked: bool) -> Result<crate::SyncReport, String> {
    let _one_at_a_time = state.syncing.lock().await;
    let (db, client, live) = (state.db.clone(), state.client.clone(), state.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        if !asked {
            match status::sync_state(&db) {
                Ok(SyncState::Active) => {}
                Ok(_) => return Err(Skipped),
                Err(e) => return Ok(Err(format!("reading whether sync is paused: {e}"))),
            }
        }
        live.begin();
        let mut log = |step: Step, _: u64, _: u64| {
            tracing::debug!(?step, "sync progress");
            live.step(step);
        };
        Ok(sync_once(&db, &client, &mut log).map_err(|e| e.to_string()))
    })
    .await
    .unwrap_or_else(|e| Ok(Err(e.to_string())));
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(Skipped) => return Err("sync is paused or disabled".to_owned()),
    };
    state.end(&outcome);
    let counters = &state.counters;
    match &outcome {
        Ok(report) => {
            tracing::info!(pushed = report.pushed, pulled = report.pulled, rejected = report.rejected, "synced");
            counters.succeeded.fetch_add(1, Ordering::Relaxed);
            counters.micros.fetch_add(report.duration.as_micros() as u64, Ordering::Relaxed);
            counters.pushed.fetch_add(report.pushed, Ordering::Relaxed);
            counters.pulled.fetch_add(report.pulled, Ordering::Relaxed);
            counters.rejected.fetch_add(report.rejected, Ordering::Relaxed);
            counters.bytes_sent.fetch_add(report.bytes_sent, Ordering::Relaxed);
            counters.bytes_received.fetch_add(report.bytes_received, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, "sync did not complete");
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    outcome
}

/// A scheduled sync that did not run: sync is paused or disabled.
struct Skipped;

/// The site's page (see [`crate::page`]).
async fn get_page(State(state): State<Arc<LocalState>>) -> Result<Response, LocalError> {
    let (status, rejected) = with_db(&state, |db| Ok((status::status(db)?, status::rejected(db)?))).await?;
    let age = status.last_sync_at.as_deref().and_then(protocol::seconds_since).map(|s| s.max(0.0) as u64);
    let progress = state.progress().clone();
    Ok(html(StatusCode::OK, page::render(&status, &progress, &rejected, age)))
}

async fn get_progress(State(state): State<Arc<LocalState>>) -> Json<LiveProgress> {
    Json(state.progress().clone())
}

/// The page's *sync now*: the sync runs on, the browser goes back to the page, which shows its
/// progress until it ends.
async fn press_sync_now(State(state): State<Arc<LocalState>>, headers: HeaderMap) -> Response {
    if let Some(refused) = cross_site(&headers) {
        return refused;
    }
    if !state.progress().running {
        state.begin();
        let state = state.clone();
        tokio::spawn(async move {
            let _ = run_sync(&state, true).await;
        });
    }
    back_to_the_page()
}

#[derive(serde::Deserialize)]
struct StateForm {
    state: String,
}

/// The page's pause, resume, disable and enable.
async fn set_state(State(state): State<Arc<LocalState>>, headers: HeaderMap, Form(form): Form<StateForm>) -> Response {
    if let Some(refused) = cross_site(&headers) {
        return refused;
    }
    let to = match form.state.as_str() {
        "active" => SyncState::Active,
        "paused" => SyncState::Paused,
        "disabled" => SyncState::Disabled,
        other => {
            return html(
                StatusCode::BAD_REQUEST,
                page::refused(&format!("`{other}` is not a sync state (active, paused or disabled)")),
            )
        }
    };
    match with_db(&state, move |db| Ok(status::set_sync_state(db, to)?)).await {
        Ok(()) => {
            tracing::info!(state = %to, "sync state set from the site's page");
            back_to_the_page()
        }
        Err(LocalError(code, message)) => html(code, page::refused(&message)),
    }
}

/// A form sent from another site's page (which a browser says in `Sec-Fetch-Site` or
/// `Origin`) is refused: a page elsewhere must not sync, pause or disable this site.
fn cross_site(headers: &HeaderMap) -> Option<Response> {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let same_site = match (fetch_site, header(header::ORIGIN), header(header::HOST)) {
        (Some(site), _, _) if site != "same-origin" && site != "none" => false,
        (_, Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, at)| at == host),
        (_, Some(_), None) => false,
        _ => true,
    };
    (!same_site).then(|| {
        tracing::warn!(?fetch_site, "refused a form sent from another site's page");
        html(StatusCode::FORBIDDEN, page::refused("This form came from another site's page; use the site's own page."))
    })
}

fn back_to_the_page() -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/"));
    response
}

/// A page that loads nothing from elsewhere, may not be framed, and is not cached.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `/metrics` for Prometheus: this process's syncs and the site's queue, counts only (no
/// record's contents), so no login, on the site's local address.
async fn get_metrics(State(state): State<Arc<LocalState>>) -> Result<Response, LocalError> {
    let status = with_db(&state, |db| Ok(status::status(db)?)).await?;
    let c = &state.counters;
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    metric("outpost_site_syncs_total", "counter", "Syncs that completed.", load(&c.succeeded).to_string());
    metric("outpost_site_sync_failures_total", "counter", "Syncs that did not complete.", load(&c.failed).to_string());
    metric(
        "outpost_site_sync_seconds_total",
        "counter",
        "Time spent in completed syncs.",
        format!("{:.6}", load(&c.micros) as f64 / 1e6),
    );
    metric("outpost_site_changes_pushed_total", "counter", "Changes pushed.", load(&c.pushed).to_string());
    metric("outpost_site_changes_pulled_total", "counter", "Changes pulled.", load(&c.pulled).to_string());
    metric(
        "outpost_site_changes_rejected_total",
        "counter",
        "Pushed changes the central server refused.",
        load(&c.rejected).to_string(),
    );
    metric("outpost_site_bytes_sent_total", "counter", "Bytes sent by syncs.", load(&c.bytes_sent).to_string());
    metric(
        "outpost_site_bytes_received_total",
        "counter",
        "Bytes received by syncs.",
        load(&c.bytes_received).to_string(),
    );
    metric(
        "outpost_site_waiting_to_push",
        "gauge",
        "Changes waiting to be pushed.",
        status.waiting_to_push.to_string(),
    );
    metric("outpost_site_rejected_changes", "gauge", "Refused changes kept for review.", status.rejected.to_string());
    metric("outpost_site_records", "gauge", "Records held.", status.records.to_string());
    metric(
        "outpost_site_sync_active",
        "gauge",
        "1 when sync is on (not paused or disabled).",
        u8::from(status.state == SyncState::Active).to_string(),
    );
    if let Some(age) = status.last_sync_at.as_deref().and_then(protocol::seconds_since) {
        metric(
            "outpost_site_last_sync_age_seconds",
            "gauge",
            "Seconds since the last good sync.",
            format!("{:.0}", age.max(0.0)),
        );
    }
    let mut response = out.into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/plain; version=0.0.4"));
    Ok(response)
}

struct LocalError(StatusCode, String);

impl IntoResponse for LocalError {
    fn into_response(self) -> Response {
        let code = if self.0 == StatusCode::FORBIDDEN {
            "forbidden"
        } else if self.0.is_client_error() {
            "bad_request"
        } else {
            "internal"
        };
        (self.0, Json(serde_json::json!({"error": {"code": code, "message": self.1}}))).into_response()
    }
}

impl From<StoreError> for LocalError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::Refused { .. } => StatusCode::FORBIDDEN,
            StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        LocalError(status, e.to_string())
    }
}

/// Runs `work` on the site's database on a blocking thread: the database is synchronous, and an
/// async handler must not hold a tokio worker while it waits on SQLite.
async fn with_db<T: Send + 'static>(
    state: &LocalState,
    work: impl FnOnce(&Db) -> Result<T, LocalError> + Send + 'static,
) -> Result<T, LocalError> {
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || work(&db))
        .await
        .map_err(|e| LocalError(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the site's database: {e}")))?
}

async fn get_status(State(state): State<Arc<LocalState>>) -> Result<Json<status::SiteStatus>, LocalError> {
    Ok(Json(with_db(&state, |db| Ok(status::status(db)?)).await?))
}

async fn get_rejected(State(state): State<Arc<LocalState>>) -> Result<Json<Vec<status::RejectedChange>>, LocalError> {
    Ok(Json(with_db(&state, |db| Ok(status::rejected(db)?)).await?))
}

async fn sync_now(State(state): State<Arc<LocalState>>) -> Response {
    match run_sync(&state, true).await {
        Ok(report) => {
            Json(serde_json::json!({"pushed": report.pushed, "pulled": report.pulled, "rejected": report.rejected}))
                .into_response()
        }
        Err(message) => LocalError(StatusCode::BAD_GATEWAY, message).into_response(),
    }
}

async fn get_record(
    State(state): State<Arc<LocalState>>,
    Path((table, id)): Path<(String, String)>,
) -> Result<Response, LocalError> {
    let (t, i) = (table.clone(), id.clone());
    match with_db(&state, move |db| Ok(db.record(&t, &i)?)).await? {
        Some(doc) => Ok(Json(doc).into_response()),
        None => Err(LocalError(StatusCode::NOT_FOUND, format!("no `{table}` record `{id}` on this site"))),
    }
}

async fn put_record(
    State(state): State<Arc<LocalState>>,
    Path((table, id)): Path<(String, String)>,
    Json(doc): Json<serde_json::Value>,
) -> Result<StatusCode, LocalError> {
    with_db(&state, move |db| Ok(db.write(&[Write::upsert(&table, RecordId(id), &doc)])?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_record(
    State(state): State<Arc<LocalState>>,
    Path((table, id)): Path<(String, String)>,
) -> Result<StatusCode, LocalError> {
    with_db(&state, move |db| Ok(db.write(&[Write::delete(&table, RecordId(id))])?)).await?;
    Ok(StatusCode::NO_CONTENT)
}
