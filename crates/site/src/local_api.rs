//! `outpost site serve`: syncs on a schedule and serves a small local API to read and write
//! records, see the status, and sync now.

use crate::client::Client;
use crate::status::{self, SyncState};
use crate::sync::{sync_once, Step};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use model::RecordId;
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
}

/// Serves the local API on `listener` and syncs every `every` until the process stops.
pub async fn serve(
    db: Arc<Db>,
    client: Client,
    listener: tokio::net::TcpListener,
    every: Duration,
) -> std::io::Result<()> {
    let state = Arc::new(LocalState { db, client, syncing: Mutex::new(()) });
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
    let (db, client) = (state.db.clone(), state.client.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        if !asked {
            match status::sync_state(&db) {
                Ok(SyncState::Active) => {}
                Ok(_) => return Err("sync is paused or disabled".to_owned()),
                Err(e) => return Err(format!("reading whether sync is paused: {e}")),
            }
        }
        let mut log = |step: Step, _: u64, _: u64| tracing::debug!(?step, "sync progress");
        sync_once(&db, &client, &mut log).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match &outcome {
        Ok(report) => {
            tracing::info!(pushed = report.pushed, pulled = report.pulled, rejected = report.rejected, "synced")
        }
        Err(e) => tracing::warn!(error = %e, "sync did not complete"),
    }
    outcome
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
