//! The central server's HTTP API (`/api/v1/sites/{site}/push|pull|status`) and dashboard.

use crate::admin::verify_password;
use crate::dashboard;
use crate::engine::{Engine, EngineError};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use blake2::{Blake2s256, Digest};
use model::SiteId;
use protocol::{ErrorBody, ErrorDetail, PullRequest, PushRequest, StatusResponse, PROTOCOL_VERSION, VERSION_HEADER};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
}

#[derive(Debug)]
struct AppState {
    engine: Engine,
    /// A fast digest of credentials already verified with argon2, so that a sync of several
    /// requests pays for argon2 once, not per request. Dropped when a password is wrong.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

/// Builds the router (tests and `serve` share it).
pub fn router(engine: Engine) -> Router {
    let state = Arc::new(AppState { engine, verified: Mutex::new(HashMap::new()) });
    Router::new()
        .route("/", get(dashboard_page))
        .route("/api/v1/dashboard", get(dashboard_json))
        .route("/api/v1/sites/{site}/push", post(push))
        .route("/api/v1/sites/{site}/pull", post(pull))
        .route("/api/v1/sites/{site}/status", get(status))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; the sync API is under /api/v1/sites/{site}/",
            )
        })
        .with_state(state)
}

/// Serves the API on an already-bound listener until the process is stopped.
pub async fn serve(engine: Engine, listener: TcpListener) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "central server listening");
    axum::serve(listener, router(engine)).await
}

/// Serves the API over HTTPS (rustls) with a PEM certificate chain and key.
#[cfg(feature = "tls")]
pub async fn serve_tls(
    engine: Engine,
    listener: std::net::TcpListener,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<()> {
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
    tracing::info!(addr = %listener.local_addr()?, "central server listening (TLS)");
    listener.set_nonblocking(true)?;
    axum_server::from_tcp_rustls(listener, config)?.serve(router(engine).into_make_service()).await
}

/// An error answer: a status, a stable code, and a message a person can act on. Logged here,
/// once, where it is handled.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{context}: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, code = self.code, message = %self.message, "request failed");
        } else {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request refused");
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::TooManyChanges(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", error.to_string())
            }
            EngineError::OutOfOrder { .. } | EngineError::BadPosition { .. } | EngineError::BadCursor(_) => {
                ApiError::bad_request(error.to_string())
            }
            EngineError::Quarantined { .. } => ApiError::new(StatusCode::FORBIDDEN, "quarantined", error.to_string()),
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
/// for its own data.
async fn authenticate(state: &Arc<AppState>, headers: &HeaderMap, path_site: &str) -> Result<SiteId, ApiError> {
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown site or wrong password");
    let (site, password) = basic_credentials(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this request needs the site's credentials (HTTP Basic)",
        )
    })?;
    let digest: [u8; 32] = Blake2s256::new()
        .chain_update(site.as_bytes())
        .chain_update([0])
        .chain_update(password.as_bytes())
        .finalize()
        .into();
    let cached = state.verified.lock().map(|cache| cache.get(&site) == Some(&digest)).unwrap_or(false);
    if !cached {
        let engine = state.engine.clone();
        let (who, pw) = (site.clone(), password.clone());
        let ok = tokio::task::spawn_blocking(move || -> Result<bool, EngineError> {
            Ok(engine.password_hash(&who)?.is_some_and(|hash| verify_password(&pw, &hash)))
        })
        .await
        .map_err(|e| ApiError::internal("checking credentials", e))??;
        if !ok {
            tracing::warn!(site = %site, "authentication failed: unknown site or wrong password");
            if let Ok(mut cache) = state.verified.lock() {
                cache.remove(&site);
            }
            return Err(unauthorized());
        }
        if let Ok(mut cache) = state.verified.lock() {
            cache.insert(site.clone(), digest);
        }
    }
    if site != path_site {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("site `{site}` may not sync as site `{path_site}`"),
        ));
    }
    Ok(SiteId(site))
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (site, password) = decoded.split_once(':')?;
    Some((site.to_owned(), password.to_owned()))
}

/// Standard base64 (RFC 4648), enough for an Authorization header; avoids a dependency.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = input.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, protocol::MAX_REQUEST_BYTES).await.map_err(|e| {
        let too_large = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if too_large {
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

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal("running a sync step", e))?
        .map_err(ApiError::from)
}

/// What every sync request does first: check the protocol version and the credentials, then
/// read and decode the body (`what` names it in the error a site sees).
async fn sync_request<T: for<'de> serde::Deserialize<'de>>(
    state: &Arc<AppState>,
    path_site: &str,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<(SiteId, T), ApiError> {
    check_version(headers)?;
    let site = authenticate(state, headers, path_site).await?;
    let body = read_body(body).await?;
    let request = protocol::decode(&body).map_err(|e| ApiError::bad_request(format!("reading {what}: {e}")))?;
    Ok((site, request))
}

async fn push(
    State(state): State<Arc<AppState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (site, request): (SiteId, PushRequest) = sync_request(&state, &site, &headers, body, "the push batch").await?;
    let engine = state.engine.clone();
    let count = request.changes.len();
    let who = site.clone();
    let response = blocking(move || engine.push(&who, request.after, &request.changes)).await?;
    tracing::info!(site = %site, changes = count, applied = response.applied, rejected = response.rejections.len(), acked = %response.acked, "push");
    Ok(encoded(&response))
}

async fn pull(
    State(state): State<Arc<AppState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (site, request): (SiteId, PullRequest) =
        sync_request(&state, &site, &headers, body, "the pull request").await?;
    let engine = state.engine.clone();
    let who = site.clone();
    let max_bytes = request.max_bytes.clamp(1024, protocol::MAX_DECODED_BYTES / 2);
    let (body, count, remaining) = blocking(move || {
        let page = engine.pull_page(&who, request.cursor, max_bytes)?;
        engine.mark_pulled(&who)?;
        Ok((page.encode(), page.changes.len(), page.remaining))
    })
    .await?;
    tracing::debug!(site = %site, changes = count, remaining, "pull");
    Ok(compressed(body))
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let site = authenticate(&state, &headers, &site).await?;
    let engine = state.engine.clone();
    let response = blocking(move || {
        Ok(StatusResponse {
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
            central: engine.central()?,
            acked: engine.acked(&site)?,
            site,
            clock: dashboard::now_rfc3339(),
        })
    })
    .await?;
    Ok(encoded(&response))
}

async fn dashboard_page(State(state): State<Arc<AppState>>) -> Result<Html<String>, ApiError> {
    let engine = state.engine.clone();
    let view = blocking(move || dashboard::view(&engine)).await?;
    Ok(Html(dashboard::render(&view)))
}

async fn dashboard_json(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let engine = state.engine.clone();
    let view = blocking(move || dashboard::view(&engine)).await?;
    Ok(Json(view).into_response())
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(base64_decode("bm9ydGg6czNjcmV0").as_deref(), Some(&b"north:s3cret"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("not base64!"), None);
    }
}
