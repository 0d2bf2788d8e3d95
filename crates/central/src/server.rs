//! The central server's HTTP API (`/api/v1/sites/{site}/push|pull|status`), its listeners, and
//! the one error answer.

use crate::auth::{Account, Refusal, Verifier};
use crate::conn::{self, Gate, Stalled, Transport};
use crate::engine::{Engine, EngineError};
use crate::web;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use model::SiteId;
use protocol::{ErrorBody, ErrorDetail, PullRequest, PushRequest, MACHINE_HEADER, PROTOCOL_VERSION, VERSION_HEADER};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use store::history::SyncRequest;
use tokio::net::TcpListener;

pub use crate::conn::{Limits, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
}

/// What every request handler shares, on every listener of one process.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    /// Site and administrator passwords, checked with bounded cost and remembered once
    /// verified (see [`crate::auth`]).
    pub(crate) verifier: Verifier,
    /// Whether cookies are marked `Secure` (the server speaks HTTPS).
    pub(crate) secure_cookies: bool,
    /// This process's sync counters, for `/metrics`.
    pub(crate) counters: crate::metrics::Counters,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serves {
    /// The sync API and the dashboard, on one address.
    Everything,
    SyncApi,
    Dashboard,
}

fn build(state: Arc<AppState>, serves: Serves) -> Router {
    let mut router = Router::new();
    if serves != Serves::Dashboard {
        router = router
            .route("/api/v1/sites/{site}/push", post(push))
            .route("/api/v1/sites/{site}/pull", post(pull))
            .route("/api/v1/sites/{site}/status", get(status));
    }
    // Counts only, never a record's contents: served without a login, on every listener; and
    // the document of every route here (keep `ROUTES` in step).
    router = router.route("/metrics", get(metrics)).route("/api/v1/openapi.json", get(openapi));
    if serves != Serves::SyncApi {
        router = router.merge(web::routes());
    }
    let missing = match serves {
        Serves::Everything => "no such endpoint; the sync API is under /api/v1/sites/{site}/, the dashboard at /",
        Serves::SyncApi => "no such endpoint; this address serves the sync API (/api/v1/sites/{site}/) only",
        Serves::Dashboard => "no such page; this address serves the dashboard (/) only",
    };
    router.fallback(move || async move { ApiError::new(StatusCode::NOT_FOUND, "not_found", missing) }).with_state(state)
}

/// Every route `build` serves, as (method, path): what `/api/v1/openapi.json` documents, checked
/// in `tests/openapi.rs` against the document and against the running server.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/sites/{site}/push"),
    ("post", "/api/v1/sites/{site}/pull"),
    ("get", "/api/v1/sites/{site}/status"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/"),
    ("get", "/api/v1/dashboard"),
    ("get", "/sites/{site}"),
    ("get", "/reports"),
    ("get", "/reports/stock"),
    ("get", "/reports/value"),
    ("get", "/reports/usage"),
    ("get", "/login"),
    ("post", "/login"),
    ("post", "/logout"),
];

/// The OpenAPI document of the sync and dashboard APIs.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn state(engine: Engine, secure_cookies: bool) -> Arc<AppState> {
    Arc::new(AppState { engine, verifier: Verifier::default(), secure_cookies, counters: Default::default() })
}

/// Builds the router of the sync API and the dashboard on one address (tests and `serve`).
pub fn router(engine: Engine) -> Router {
    build(state(engine, false), Serves::Everything)
}

/// Serves the sync API and the dashboard on an already-bound listener until the process is
/// stopped, each connection within `limits` (see [`crate::conn`]).
pub async fn serve(engine: Engine, listener: TcpListener, limits: Limits) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "central server listening");
    spawn_debt_sampler(&engine);
    let app = build(state(engine, false), Serves::Everything);
    conn::serve(listener, app, Gate::new(limits), Transport::Http).await;
    Ok(())
}

/// Serves the sync API on `sync` and the dashboard on `dashboard` (an address that need not
/// face the sites), until the process is stopped. The two share the per-address limit.
pub async fn serve_apart(
    engine: Engine,
    sync: TcpListener,
    dashboard: TcpListener,
    limits: Limits,
) -> std::io::Result<()> {
    tracing::info!(sync = %sync.local_addr()?, dashboard = %dashboard.local_addr()?, "central server listening");
    spawn_debt_sampler(&engine);
    let shared = state(engine, false);
    let gate = Gate::new(limits);
    tokio::join!(
        conn::serve(sync, build(shared.clone(), Serves::SyncApi), gate.clone(), Transport::Http),
        conn::serve(dashboard, build(shared, Serves::Dashboard), gate, Transport::Http),
    );
    Ok(())
}

/// Serves over HTTPS (rustls) with a PEM certificate chain and key: the sync API and the
/// dashboard on `listener`, or the dashboard apart on `dashboard`. The connections have the
/// limits of plain HTTP, and a TLS handshake must end within the idle time too.
#[cfg(feature = "tls")]
pub async fn serve_tls(
    engine: Engine,
    listener: std::net::TcpListener,
    dashboard: Option<std::net::TcpListener>,
    cert: &std::path::Path,
    key: &std::path::Path,
    limits: Limits,
) -> std::io::Result<()> {
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
    tracing::info!(addr = %listener.local_addr()?, "central server listening (TLS)");
    spawn_debt_sampler(&engine);
    let tls = Transport::Https(axum_server::tls_rustls::RustlsAcceptor::new(config).handshake_timeout(limits.idle));
    let shared = state(engine, true);
    let gate = Gate::new(limits);
    let serve_one = |listener: std::net::TcpListener, serves: Serves| {
        let app = build(shared.clone(), serves);
        let (gate, tls) = (gate.clone(), tls.clone());
        async move {
            listener.set_nonblocking(true)?;
            conn::serve(TcpListener::from_std(listener)?, app, gate, tls).await;
            Ok::<(), std::io::Error>(())
        }
    };
    match dashboard {
        None => serve_one(listener, Serves::Everything).await,
        Some(dashboard) => {
            tokio::try_join!(serve_one(listener, Serves::SyncApi), serve_one(dashboard, Serves::Dashboard))?;
            Ok(())
        }
    }
}

/// The address a request came from (the TCP peer; a forwarded-for header could be forged).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Peer, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())))
    }
}

/// How long a site is asked to wait when the database is busy.
const BUSY_RETRY_SECS: u64 = 5;
/// How long a client is asked to wait before trying a central server whose disk was full (the
/// `Retry-After` of a 507; a site itself tries again at its next sync).
const DISK_FULL_RETRY_SECS: u64 = 300;

/// An error answer: a status, a stable code, and a message a person can act on. Logged here,
/// once, where it is handled.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header (with 429).
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub(crate) fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{context}: {error}"))
    }
    /// 503: the database did not let the request in within its wait; the site tries again.
    pub(crate) fn busy(why: &str) -> ApiError {
        ApiError {
            retry_after: Some(BUSY_RETRY_SECS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("the central server's database is busy ({why}); try again in {BUSY_RETRY_SECS} s"),
            )
        }
    }

    /// 507: the central server's disk is full. Nothing of the request was kept and the site's
    /// changes wait on the site; somebody must free space on the server, so this is logged as
    /// an error, and the site's next sync sends them.
    pub(crate) fn disk_full(why: &str) -> ApiError {
        ApiError {
            retry_after: Some(DISK_FULL_RETRY_SECS),
            ..Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                format!(
                    "the central server's disk is full ({why}); nothing of this request was kept and this site's changes wait here; \
                     the central server's administrator must free space, and the next sync sends them"
                ),
            )
        }
    }

    /// 429: come back in `seconds`.
    pub(crate) fn too_many_requests(message: impl Into<String>, seconds: u64) -> ApiError {
        ApiError {
            retry_after: Some(seconds),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }

    /// The answer to a password that was not accepted.
    pub(crate) fn refused(refusal: &Refusal) -> ApiError {
        let seconds = refusal.retry_after_secs().unwrap_or(1);
        match refusal {
            Refusal::Wrong => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown site or wrong password"),
            Refusal::Throttled { because, .. } => Self::too_many_requests(
                format!("too many failed sign-ins {because}; try again in {seconds} s"),
                seconds,
            ),
            Refusal::Busy { .. } => Self::too_many_requests(
                format!("the central server is busy checking passwords; try again in {seconds} s"),
                seconds,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, code = self.code, message = %self.message, "request failed");
        } else if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::REQUEST_TIMEOUT {
            // A flood is logged where it starts (`auth`), and a stalled body where it stalled
            // (`conn`, once a minute per address), not once per refused request.
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "request refused");
        } else {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request refused");
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::TooManyChanges(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", error.to_string())
            }
            EngineError::OutOfOrder { .. }
            | EngineError::BadPosition { .. }
            | EngineError::BadAfter(_)
            | EngineError::BadCursor(_) => ApiError::bad_request(error.to_string()),
            EngineError::Quarantined { .. } => ApiError::new(StatusCode::FORBIDDEN, "quarantined", error.to_string()),
            EngineError::Store(store::StoreError::Busy(why)) => ApiError::busy(&why),
            EngineError::Store(store::StoreError::DiskFull(why)) => ApiError::disk_full(&why),
            EngineError::Store(e) => ApiError::internal("applying the request to the central database", e),
        }
    }
}

fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    let theirs = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok());
    match theirs {
        Some(v) if v == PROTOCOL_VERSION => Ok(()),
        Some(v) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "protocol_mismatch",
            format!("this site speaks protocol {v}, the central server speaks {PROTOCOL_VERSION}; upgrade the older of the two"),
        )),
        None => Err(ApiError::bad_request(format!("missing the `{VERSION_HEADER}` header (protocol {PROTOCOL_VERSION})"))),
    }
}

/// Checks HTTP Basic credentials against the site's stored hash, and that the site asks only
/// for its own data. The hash is read on every request (cheap), so a password changed by any
/// process is seen at once; argon2 itself runs only for credentials not verified before.
async fn authenticate(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    peer: Peer,
    path_site: &str,
) -> Result<SiteId, ApiError> {
    let (site, password) = basic_credentials(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this request needs the site's credentials (HTTP Basic)",
        )
    })?;
    let engine = state.engine.clone();
    let who = SiteId::from(site.as_str());
    let credentials = blocking(move || Ok(engine.db().site_credentials(&who)?)).await?;
    let (stored, bound, disabled_at) = match credentials {
        Some(c) => (Some(c.password_hash), c.machine, c.disabled_at),
        None => (None, None, None),
    };
    state
        .verifier
        .check(&Account::Site(site.clone()), peer.0, &password, stored)
        .await
        .map_err(|r| ApiError::refused(&r))?;
    if site != path_site {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("site `{site}` may not sync as site `{path_site}`"),
        ));
    }
    if let Some(since) = disabled_at {
        tracing::warn!(site = %site, "a disabled site tried to sync");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "site_disabled",
            format!(
                "site `{site}` is disabled on the central server since {since}: everything it synced is kept, and what it \
                 has not pushed stays on the site. An administrator enables it again with `outpost central site enable {site}`"
            ),
        ));
    }
    check_machine(state, headers, &site, bound).await?;
    Ok(SiteId(site))
}

/// A site syncs from the machine of its first sync: a copy of its database elsewhere, with its
/// credentials, is refused, so that two machines never write the same stores.
async fn check_machine(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    site: &str,
    bound: Option<String>,
) -> Result<(), ApiError> {
    let machine = headers.get(MACHINE_HEADER).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
    if machine.is_empty() || machine.len() > 128 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "machine_unknown",
            format!("this request does not say which machine it comes from (the `{MACHINE_HEADER}` header, which every Outpost site sends)"),
        ));
    }
    let bound = match bound {
        Some(bound) => Some(bound),
        None => {
            let engine = state.engine.clone();
            let (who, this) = (SiteId::from(site), machine.to_owned());
            blocking(move || Ok(engine.db().bind_machine(&who, &this)?)).await?
        }
    };
    if bound.as_deref() != Some(machine) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_machine",
            format!(
                "site `{site}` is bound to another machine; this looks like a copy of its database. A copy may not sync as the site. \
                 If the site moved to new hardware on purpose, run `outpost central site unbind {site}` on the central server"
            ),
        ));
    }
    Ok(())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (site, password) = decoded.split_once(':')?;
    Some((site.to_owned(), password.to_owned()))
}

/// Standard base64 (RFC 4648) with padding, as the Authorization header carries it.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(input).ok()
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, protocol::MAX_REQUEST_BYTES).await.map_err(|e| {
        if let Some(stalled) = cause::<Stalled>(&e) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("{stalled}; the connection is closed"),
            )
        } else if cause::<http_body_util::LengthLimitError>(&e).is_some() {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is over {} bytes; send smaller batches", protocol::MAX_REQUEST_BYTES),
            )
        } else {
            ApiError::bad_request(format!("the request body could not be read (the connection may have been cut): {e}"))
        }
    })
}

/// The first error of type `T` in the chain of `error`.
fn cause<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<T>())
}

fn encoded(value: &impl serde::Serialize) -> Response {
    compressed(protocol::encode(value))
}

fn compressed(body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    response
}

/// Runs `work` on a blocking thread, off the async workers: every database call (the database
/// is synchronous) and every CPU-heavy step (decompressing and decoding a request body).
pub(crate) async fn off_worker<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal("running a sync step", e))?
}

/// [`off_worker`] for the engine's work, whose errors answer as [`ApiError::from`] says.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    off_worker(move || work().map_err(ApiError::from)).await
}

/// What every sync request does first: check the protocol version and the credentials, then
/// read and decode the body (`what` names it in the error a site sees). Decoding (up to
/// [`protocol::MAX_DECODED_BYTES`] of zstd and JSON) runs off the async workers.
async fn sync_request<T: for<'de> serde::Deserialize<'de> + Send + 'static>(
    state: &Arc<AppState>,
    path_site: &str,
    headers: &HeaderMap,
    peer: Peer,
    body: Body,
    what: &'static str,
) -> Result<(SiteId, T, u64), ApiError> {
    let checked = async {
        check_version(headers)?;
        let site = authenticate(state, headers, peer, path_site).await?;
        let body = read_body(body).await?;
        let bytes = body.len() as u64;
        let request = off_worker(move || {
            protocol::decode(&body).map_err(|e| ApiError::bad_request(format!("reading {what}: {e}")))
        })
        .await?;
        Ok((site, request, bytes))
    };
    let outcome = checked.await;
    if outcome.is_err() {
        state.counters.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    outcome
}

async fn push(
    State(state): State<Arc<AppState>>,
    Path(site): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let (site, request, bytes_in): (SiteId, PushRequest, u64) =
        sync_request(&state, &site, &headers, peer, body, "the push batch").await?;
    let engine = state.engine.clone();
    let count = request.changes.len();
    let who = site.clone();
    let response = blocking(move || engine.push(&who, request.after, &request.changes)).await?;
    tracing::info!(site = %site, changes = count, applied = response.applied, rejected = response.rejections.len(), acked = %response.acked, "push");
    let body = protocol::encode(&response);
    let rejected = response.rejections.len() as u64;
    state.counters.push(started.elapsed(), count as u64, rejected, bytes_in, body.len() as u64);
    let request =
        SyncRequest { pushed: count as u64, bytes_up: bytes_in, bytes_down: body.len() as u64, ..Default::default() };
    note_sync(&state, site, request, started).await;
    Ok(compressed(body))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let shared = state.clone();
    let text = blocking(move || {
        let argon2 = shared.verifier.stats();
        crate::metrics::render(&shared.engine, &shared.counters, argon2)
    })
    .await?;
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    Ok(response)
}

async fn pull(
    State(state): State<Arc<AppState>>,
    Path(site): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let (site, request, bytes_in): (SiteId, PullRequest, u64) =
        sync_request(&state, &site, &headers, peer, body, "the pull request").await?;
    let engine = state.engine.clone();
    let who = site.clone();
    let (body, count, remaining) = blocking(move || {
        let page = engine.serve_pull(&who, request)?;
        Ok((page.encode(), page.changes.len(), page.remaining))
    })
    .await?;
    tracing::debug!(site = %site, changes = count, remaining, "pull");
    state.counters.pull(started.elapsed(), count as u64, bytes_in, body.len() as u64);
    let request =
        SyncRequest { pulled: count as u64, bytes_up: bytes_in, bytes_down: body.len() as u64, ..Default::default() };
    note_sync(&state, site, request, started).await;
    Ok(compressed(body))
}

/// Adds a served request to the site's sync history. The history is for people: a note that
/// fails is logged, and the sync goes on.
async fn note_sync(state: &Arc<AppState>, site: SiteId, request: SyncRequest, started: std::time::Instant) {
    let request =
        SyncRequest { at: crate::web::now_unix() as i64, busy_ms: started.elapsed().as_millis() as u64, ..request };
    let engine = state.engine.clone();
    let noted = blocking(move || Ok(engine.db().note_sync(&site, request)?)).await;
    if let Err(e) = noted {
        tracing::warn!(error = ?e, "could not add a request to the sync history");
    }
}

/// How often the central server samples every site's sync debt for the dashboard's trend.
pub const SAMPLE_DEBTS_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Samples every site's sync debt now and then every [`SAMPLE_DEBTS_EVERY`], until the
/// process stops (spawned by each way of serving).
fn spawn_debt_sampler(engine: &Engine) {
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_DEBTS_EVERY);
        loop {
            every.tick().await;
            let engine = engine.clone();
            let at = crate::web::now_unix() as i64;
            match blocking(move || engine.sample_debts(at)).await {
                Ok(sites) => tracing::debug!(sites, "sampled every site's sync debt"),
                Err(e) => tracing::warn!(error = ?e, "could not sample the sites' sync debt"),
            }
        }
    });
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path(site): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let site = authenticate(&state, &headers, peer, &site).await?;
    let engine = state.engine.clone();
    let response = blocking(move || engine.serve_status(&site)).await?;
    Ok(encoded(&response))
}

#[cfg(test)]
mod tests {
    use super::{base64_decode, ApiError, EngineError};
    use axum::http::StatusCode;

    #[test]
    fn a_full_disk_is_507_and_says_who_must_act() {
        let error = ApiError::from(EngineError::Store(store::StoreError::DiskFull("database or disk is full".into())));
        assert_eq!((error.status, error.code), (StatusCode::INSUFFICIENT_STORAGE, "disk_full"));
        assert_eq!(
            error.message,
            "the central server's disk is full (database or disk is full); nothing of this request was kept and this site's \
             changes wait here; the central server's administrator must free space, and the next sync sends them"
        );
        assert!(error.retry_after.is_some());
    }

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(base64_decode("bm9ydGg6czNjcmV0").as_deref(), Some(&b"north:s3cret"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("not base64!"), None);
    }
}
