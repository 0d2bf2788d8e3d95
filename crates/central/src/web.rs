//! The dashboard over HTTP, behind the administrator's login: `GET /` and
//! `GET /api/v1/dashboard` need a session; `GET|POST /login` opens one, `POST /logout` ends it.
//!
//! Every request reads the administrator's credentials from the database (see
//! [`crate::admin::admin_auth`]), so that a new password or a logout on any server process holds
//! on all of them. Sessions are signed cookies ([`crate::session`]); every form carries a CSRF
//! token, checked on POST. HTML routes redirect to `/login`; the JSON route answers with the one
//! JSON error body.

use crate::admin::{self, AdminAuth};
use crate::auth::{Account, Refusal};
use crate::dashboard;
use crate::engine::EngineError;
use crate::reports;
use crate::server::{blocking, off_worker, ApiError, AppState, Peer};
use crate::session::{self, SESSION_SECS};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use std::sync::Arc;

const SESSION_COOKIE: &str = "outpost_session";
/// Before login: a random nonce, to which the login form's CSRF token is tied.
const LOGIN_COOKIE: &str = "outpost_login";
const LOGIN_COOKIE_SECS: u64 = 60 * 60;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(page))
        .route("/api/v1/dashboard", get(json))
        .route("/sites/{site}", get(site_page))
        .route("/reports", get(reports_index))
        .route("/reports/stock", get(|s, h, q| report(s, h, q, reports::Report::Stock)))
        .route("/reports/value", get(|s, h, q| report(s, h, q, reports::Report::Value)))
        .route("/reports/usage", get(|s, h, q| report(s, h, q, reports::Report::Usage)))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

/// Who is asking, as far as the dashboard is concerned.
enum Visitor {
    /// No administrator has been set: nobody may see the dashboard.
    NoAdmin,
    Anonymous(AdminAuth),
    Admin {
        auth: AdminAuth,
        session: String,
    },
}

async fn visitor(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Visitor, ApiError> {
    let engine = state.engine.clone();
    let auth = blocking(move || admin::admin_auth(engine.db()).map_err(EngineError::from)).await?;
    let Some(auth) = auth else { return Ok(Visitor::NoAdmin) };
    let session = cookie(headers, SESSION_COOKIE).and_then(|c| auth.key.open(&auth.binding(), c, now_unix()));
    Ok(match session {
        Some(session) => Visitor::Admin { auth, session },
        None => Visitor::Anonymous(auth),
    })
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|h| session::cookie(h, name))
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An HTML page that loads nothing from elsewhere, may not be framed, and is not cached.
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

fn redirect(to: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A cookie only this site's own pages send back, never readable by scripts.
fn set_cookie(response: &mut Response, name: &str, value: &str, max_age: u64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn no_admin() -> Response {
    html(StatusCode::SERVICE_UNAVAILABLE, dashboard::no_admin_page())
}

async fn page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(filter): Query<dashboard::RejectionFilter>,
) -> Result<Response, ApiError> {
    let csrf = match admin_only(&state, &headers).await? {
        Ok(csrf) => csrf,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let engine = state.engine.clone();
    let view = blocking(move || dashboard::view(&engine, &filter)).await?;
    Ok(html(StatusCode::OK, dashboard::render(&view, &csrf)))
}

/// The CSRF token of the administrator's session, or the answer to anyone else: the way to the
/// login form, or the page saying there is no administrator yet.
async fn admin_only(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Result<String, Response>, ApiError> {
    Ok(match visitor(state, headers).await? {
        Visitor::NoAdmin => Err(no_admin()),
        Visitor::Anonymous(_) => Err(redirect("/login")),
        Visitor::Admin { auth, session } => Ok(auth.key.csrf("session", &session)),
    })
}

async fn site_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(site): Path<String>,
) -> Result<Response, ApiError> {
    let csrf = match admin_only(&state, &headers).await? {
        Ok(csrf) => csrf,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let engine = state.engine.clone();
    let wanted = site.clone();
    let view = blocking(move || dashboard::site_view(&engine, &wanted)).await?;
    Ok(match view {
        Some(view) => html(StatusCode::OK, dashboard::render_site(&view, &csrf)),
        None => html(StatusCode::NOT_FOUND, dashboard::no_such_site_page(&site, &csrf)),
    })
}

async fn reports_index(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    Ok(match admin_only(&state, &headers).await? {
        Ok(csrf) => html(StatusCode::OK, reports::index(&csrf)),
        Err(elsewhere) => elsewhere,
    })
}

/// A report as a page, or as a CSV download with `format=csv`.
async fn report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    report: reports::Report,
) -> Result<Response, ApiError> {
    let csrf = match admin_only(&state, &headers).await? {
        Ok(csrf) => csrf,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let request = reports::Request::parse(query.as_deref().unwrap_or_default());
    let engine = state.engine.clone();
    let answer = blocking(move || reports::answer(&engine, report, &request, &csrf)).await?;
    Ok(match answer {
        reports::Answer::Page(body) => html(StatusCode::OK, body),
        reports::Answer::Csv { file_name, body } => {
            let mut response = body.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
    })
}

async fn json(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(filter): Query<dashboard::RejectionFilter>,
) -> Result<Response, ApiError> {
    match visitor(&state, &headers).await? {
        Visitor::NoAdmin => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_administrator",
            "this central server has no administrator yet; set one with `outpost central admin set-password`",
        )),
        Visitor::Anonymous(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the dashboard needs the administrator's session; sign in at /login first",
        )),
        Visitor::Admin { .. } => {
            let engine = state.engine.clone();
            let view = blocking(move || dashboard::view(&engine, &filter)).await?;
            Ok(Json(view).into_response())
        }
    }
}

/// The login form's nonce: the one the browser has, or a new one.
fn login_nonce(headers: &HeaderMap) -> Result<(String, bool), ApiError> {
    match cookie(headers, LOGIN_COOKIE).filter(|n| n.len() == 32 && session::from_hex(n).is_some()) {
        Some(nonce) => Ok((nonce.to_owned(), false)),
        None => {
            let bytes = admin::random_bytes::<16>().map_err(|e| ApiError::internal("opening the login form", e))?;
            Ok((session::to_hex(&bytes), true))
        }
    }
}

fn login_page(
    state: &AppState,
    auth: &AdminAuth,
    headers: &HeaderMap,
    status: StatusCode,
    message: Option<&str>,
) -> Result<Response, ApiError> {
    let (nonce, new) = login_nonce(headers)?;
    let mut response = html(status, dashboard::login_page(message, &auth.key.csrf("login", &nonce)));
    if new {
        set_cookie(&mut response, LOGIN_COOKIE, &nonce, LOGIN_COOKIE_SECS, state.secure_cookies);
    }
    Ok(response)
}

async fn login_form(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    match visitor(&state, &headers).await? {
        Visitor::NoAdmin => Ok(no_admin()),
        Visitor::Admin { .. } => Ok(redirect("/")),
        Visitor::Anonymous(auth) => login_page(&state, &auth, &headers, StatusCode::OK, None),
    }
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let auth = match visitor(&state, &headers).await? {
        Visitor::NoAdmin => return Ok(no_admin()),
        Visitor::Anonymous(auth) | Visitor::Admin { auth, .. } => auth,
    };
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !auth.key.csrf_ok("login", nonce, &form.csrf) {
        return Ok(html(StatusCode::FORBIDDEN, dashboard::stale_form_page()));
    }
    let checked = state.verifier.check(&Account::Admin, peer.0, &form.password, Some(auth.hash.clone())).await;
    match checked {
        Ok(()) => {
            let id = admin::random_bytes::<16>().map_err(|e| ApiError::internal("opening a session", e))?;
            tracing::info!(from = ?peer.0, "the administrator signed in");
            let mut response = redirect("/");
            set_cookie(
                &mut response,
                SESSION_COOKIE,
                &auth.key.issue(&auth.binding(), id, now_unix()),
                SESSION_SECS,
                state.secure_cookies,
            );
            set_cookie(&mut response, LOGIN_COOKIE, "", 0, state.secure_cookies);
            Ok(response)
        }
        Err(Refusal::Wrong) => login_page(&state, &auth, &headers, StatusCode::UNAUTHORIZED, Some("Wrong password.")),
        Err(refusal) => {
            let seconds = refusal.retry_after_secs().unwrap_or(1);
            let mut response = html(StatusCode::TOO_MANY_REQUESTS, dashboard::too_many_page(&refusal, seconds));
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            Ok(response)
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    match visitor(&state, &headers).await? {
        Visitor::NoAdmin => Ok(no_admin()),
        Visitor::Anonymous(_) => Ok(redirect("/login")),
        Visitor::Admin { auth, session } => {
            if !auth.key.csrf_ok("session", &session, &form.csrf) {
                return Ok(html(StatusCode::FORBIDDEN, dashboard::stale_form_page()));
            }
            let db = state.engine.db().clone();
            off_worker(move || admin::end_sessions(&db).map_err(|e| ApiError::internal("signing out", e))).await?;
            tracing::info!("the administrator signed out; every session ended");
            let mut response = redirect("/login");
            set_cookie(&mut response, SESSION_COOKIE, "", 0, state.secure_cookies);
            Ok(response)
        }
    }
}
