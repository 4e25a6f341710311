//! The operator console: its pages and embedded assets, signing in and out, who is signed in,
//! the live stream of sessions the sessions view draws, and Kibana-shaped console-session
//! management (`GET /api/v1/console-sessions`, `POST /api/v1/console-sessions/_invalidate`).
//!
//! The pages run no inline script: their JavaScript and CSS are files embedded in the binary
//! and served from `/console/assets/`, under a Content-Security-Policy of `script-src 'self'`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::Stream;
use serde_json::json;
use wardengate_api as api;

use super::common::{bad, internal, parse_body, query, ApiError, Caller};
use super::sessions::{list_page, ListParams};
use super::state::ApiState;
use crate::identity::console::Match;
use crate::identity::cookie::{clear_cookie, set_cookie};
use crate::store::{ConsoleSessionRow, SessionQuery};

/// Pages and the sign-in steps, before anyone is signed in.
pub(super) fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/console", get(console_page))
        .route("/console/login", get(login_page))
        .route("/console/recordings", get(console_page))
        .route("/console/audit", get(console_page))
        .route("/console/approvals", get(console_page))
        .route("/console/access", get(console_page))
        .route("/console/assets/{name}", get(asset))
        .route("/api/v1/console/login", post(login))
        .route("/api/v1/console/session", post(open))
}

/// What every signed-in person may call.
pub(super) fn user_routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/console/me", get(me))
        .route("/api/v1/console/logout", post(logout))
}

/// Operators (`perms.rs` names the permission each needs).
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/console/events", get(events))
        .route("/api/v1/console-sessions", get(list))
        .route("/api/v1/console-sessions/_invalidate", post(invalidate))
}

/// A console page: the gateway's one page CSP (scripts and calls to this origin only, nothing
/// framed; inline style allowed, as xterm.js sizes its rows with a style element), and inline
/// images (`data:`).
fn page(html: &'static str) -> Response {
    super::common::html_page(html, "; img-src 'self' data:")
}

async fn console_page() -> Response {
    page(include_str!("console/console.html"))
}

async fn login_page() -> Response {
    page(include_str!("console/login.html"))
}

/// The embedded assets, by name.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
    (
        "login.js",
        "text/javascript; charset=utf-8",
        include_str!("console/login.js"),
    ),
    (
        "webauthn.js",
        "text/javascript; charset=utf-8",
        include_str!("console/webauthn.js"),
    ),
    // The scripts of the gateway's other pages (/mfa, /login, the desktop viewer): every page
    // runs under `script-src 'self'`, none has inline script.
    (
        "mfa-page.js",
        "text/javascript; charset=utf-8",
        include_str!("console/mfa-page.js"),
    ),
    (
        "wgctl-login.js",
        "text/javascript; charset=utf-8",
        include_str!("console/wgctl-login.js"),
    ),
    (
        "desktop.js",
        "text/javascript; charset=utf-8",
        include_str!("console/desktop.js"),
    ),
    // xterm.js, pinned and vendored with its licence by scripts/vendor-xterm.
    (
        "xterm.js",
        "text/javascript; charset=utf-8",
        include_str!("console/vendor/xterm.js"),
    ),
    (
        "xterm.css",
        "text/css; charset=utf-8",
        include_str!("console/vendor/xterm.css"),
    ),
    (
        "xterm.LICENSE",
        "text/plain; charset=utf-8",
        include_str!("console/vendor/xterm.LICENSE"),
    ),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => ApiError(
            StatusCode::NOT_FOUND,
            format!("no console asset '{}'", api::text::inert(&name, 64)),
        )
        .into_response(),
    }
}

fn secure(st: &ApiState) -> bool {
    st.gw.cfg().config.api.scheme() == "https"
}

/// The sign-in page's first step: name and password (the same answer whatever is wrong).
#[utoipa::path(
    post, operation_id = "console_login", path = "/api/v1/console/login", tag = "console", security(()),
    request_body = api::ConsoleLoginRequest,
    responses((status = 200, body = api::ConsoleLoginStarted), (status = 401, description = "the same answer whatever was wrong (name, password, throttled)", body = api::ApiError), (status = 503, description = "too many sign-ins waiting", body = api::ApiError))
)]
async fn login(
    State(st): State<ApiState>,
    req: axum::extract::Request,
) -> Result<Json<api::ConsoleLoginStarted>, ApiError> {
    let peer = crate::http::client(&st.gw.cfg(), &req);
    let body = axum::body::to_bytes(req.into_body(), 64 << 10)
        .await
        .map_err(|_| bad("the request body is too large"))?;
    let r: api::ConsoleLoginRequest = parse_body(&body)?;
    let started = st
        .gw
        .login_start(&peer, true)
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let ticket = st
        .gw
        .login_password(&started.user_code, &r.user, &r.password, peer)
        .await
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e))?;
    Ok(Json(api::ConsoleLoginStarted {
        grant: started.device_code,
        ticket,
        origin: st.gw.page_origin(),
    }))
}

/// The last step: the grant, once password and key passed, becomes the session cookie.
#[utoipa::path(
    post, operation_id = "console_open", path = "/api/v1/console/session", tag = "console", security(()),
    request_body = api::ConsoleOpenRequest,
    responses((status = 200, description = "signed in: `Set-Cookie: wg_console=…`", body = api::ConsoleMe), (status = 401, description = "unknown, expired or unfinished sign-in", body = api::ApiError))
)]
async fn open(State(st): State<ApiState>, req: axum::extract::Request) -> Response {
    let peer = crate::http::client(&st.gw.cfg(), &req);
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 10).await {
        Ok(b) => b,
        Err(_) => return bad("the request body is too large").into_response(),
    };
    let r: api::ConsoleOpenRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match st.gw.console_open(&r.grant, peer, &agent).await {
        Ok((row, cookie)) => {
            let me = me_of(&st, &row.username, Some(&row));
            (
                [(header::SET_COOKIE, set_cookie(&cookie, secure(&st)))],
                Json(me),
            )
                .into_response()
        }
        Err(e) => ApiError(StatusCode::UNAUTHORIZED, e).into_response(),
    }
}

fn me_of(st: &ApiState, user: &str, row: Option<&ConsoleSessionRow>) -> api::ConsoleMe {
    let cfg = st.gw.cfg();
    let can = match cfg.users.get(user) {
        Some(u) if u.operator => crate::config::Perms::all(),
        Some(u) => crate::config::perms_of(&u.name, &u.groups, &cfg.config.roles),
        None if user == "admin" => crate::config::Perms::all(),
        None => crate::config::Perms::default(),
    };
    me_with(st, user, can, row)
}

fn me_with(
    st: &ApiState,
    user: &str,
    can: crate::config::Perms,
    row: Option<&ConsoleSessionRow>,
) -> api::ConsoleMe {
    api::ConsoleMe {
        user: user.to_string(),
        can: crate::config::Perm::ALL
            .into_iter()
            .filter(|p| can.has(*p))
            .map(|p| p.name().to_string())
            .collect(),
        csrf: row.map(|r| r.csrf.clone()).unwrap_or_default(),
        console_session: row.map(|r| r.id.clone()),
        idle_expires_ms: row.and_then(|r| r.idle_expires_ms),
        lifespan_expires_ms: row.and_then(|r| r.lifespan_expires_ms),
        gateway: st.gw.name.clone(),
    }
}

/// Who the console is signed in as, what they may do, and the CSRF token.
#[utoipa::path(
    get, operation_id = "console_me", path = "/api/v1/console/me", tag = "console",
    responses((status = 200, body = api::ConsoleMe), (status = 401, description = "signed out", body = api::ApiError))
)]
async fn me(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    row: Option<Extension<ConsoleSessionRow>>,
) -> Json<api::ConsoleMe> {
    Json(me_with(
        &st,
        &caller.name,
        caller.can,
        row.as_ref().map(|r| &r.0),
    ))
}

/// Sign out: the record goes, and the cookie with it.
#[utoipa::path(
    post, operation_id = "console_logout", path = "/api/v1/console/logout", tag = "console",
    responses((status = 200, description = "signed out: {\"signed_out\": user}", body = Object), (status = 400, description = "not signed in with the console's cookie", body = api::ApiError))
)]
async fn logout(State(st): State<ApiState>, row: Option<Extension<ConsoleSessionRow>>) -> Response {
    let Some(Extension(row)) = row else {
        return bad("this request is not signed in with the console's cookie").into_response();
    };
    st.gw.console_sign_out(&row).await;
    (
        [(header::SET_COOKIE, clear_cookie(secure(&st)))],
        Json(json!({ "signed_out": row.username })),
    )
        .into_response()
}

fn to_api(r: ConsoleSessionRow) -> api::ConsoleSession {
    api::ConsoleSession {
        id: r.id,
        username: r.username,
        provider: r.provider,
        created_ms: r.created_ms,
        idle_expires_ms: r.idle_expires_ms,
        lifespan_expires_ms: r.lifespan_expires_ms,
        source: r.source,
        user_agent: r.user_agent,
    }
}

/// Console sessions that have not expired, oldest first.
#[utoipa::path(
    get, operation_id = "console_sessions", path = "/api/v1/console-sessions", tag = "console",
    responses((status = 200, body = api::ConsoleSessionList))
)]
async fn list(State(st): State<ApiState>) -> Result<Json<api::ConsoleSessionList>, ApiError> {
    let rows = st.gw.console_sessions().await.map_err(internal)?;
    Ok(Json(api::ConsoleSessionList {
        sessions: rows.into_iter().map(to_api).collect(),
    }))
}

/// Invalidate console sessions: `{"match": "all"}`, or `{"match": "query", "query":
/// {"username": "bob"}}`.
#[utoipa::path(
    post, operation_id = "console_invalidate", path = "/api/v1/console-sessions/_invalidate", tag = "console",
    request_body = api::ConsoleInvalidateRequest,
    responses((status = 200, body = api::ConsoleInvalidated), (status = 400, description = "a match that is not all or query", body = api::ApiError))
)]
async fn invalidate(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<api::ConsoleInvalidated>, ApiError> {
    let r: api::ConsoleInvalidateRequest = parse_body(&body)?;
    let m = match (r.match_.as_str(), r.query) {
        ("all", None) => Match::All,
        ("query", Some(api::ConsoleSessionQuery { username: Some(u) })) if !u.trim().is_empty() => {
            Match::Username(u.trim().to_string())
        }
        ("query", _) => {
            return Err(bad(
                "match \"query\" needs \"query\": {\"username\": \"NAME\"}",
            ))
        }
        ("all", Some(_)) => return Err(bad("match \"all\" takes no \"query\"")),
        (other, _) => {
            return Err(bad(format!(
                "match '{}' is not \"all\" or \"query\"",
                api::text::inert(other, 32)
            )))
        }
    };
    let why = api::text::reason(r.reason.as_deref()).unwrap_or_default();
    let total = st
        .gw
        .console_invalidate(&m, &caller.name, &why)
        .await
        .map_err(internal)?;
    Ok(Json(api::ConsoleInvalidated { total }))
}

/// The Live strip's counts.
async fn strip(st: &ApiState) -> serde_json::Value {
    let now = wardengate_protocols::session::now_ms();
    let (mut active, mut idle, mut shadowed) = (0u64, 0u64, 0u64);
    for id in st.gw.registry.live_ids() {
        if let Some(r) = st.gw.registry.live_record(&id) {
            if r.state == api::SessionState::Active {
                active += 1;
            }
            if crate::registry::idle_secs(&r, now) > 600 {
                idle += 1;
            }
            if !r.observers.is_empty() {
                shadowed += 1;
            }
        }
    }
    let awaiting = st
        .gw
        .store
        .session_count(&SessionQuery {
            state: Some(api::SessionState::AwaitingApproval),
            live: true,
            ..SessionQuery::default()
        })
        .await
        .unwrap_or(0);
    json!({"active": active, "awaiting_approval": awaiting, "idle_10m": idle, "shadowed": shadowed})
}

/// How often the stream looks for changes.
const TICK: Duration = Duration::from_millis(300);
/// Views kept for the streams showing them (older ones are dropped).
const MAX_VIEWS: usize = 256;

/// One page of the live stream: the sessions `caller` may see under `params`, and the Live strip.
/// Computed at most once a tick for every stream showing the same view (same visibility, same
/// filters), so ten operators on the default view cost what one does.
async fn view(
    st: &ApiState,
    caller: &Caller,
    params: &ListParams,
) -> Result<std::sync::Arc<String>, ApiError> {
    let who = match caller.may(crate::config::Perm::SessionRead) {
        true => "*".to_string(),
        false => caller.name.clone(),
    };
    let key = format!("{who}|{params:?}");
    let fresh = TICK.saturating_sub(Duration::from_millis(50));
    let slot = {
        let mut views = crate::registry::lock(&st.views.0);
        if views.len() >= MAX_VIEWS && !views.contains_key(&key) {
            // Views nobody is computing or holding (only the map refers to them) go first.
            views.retain(|_, v| std::sync::Arc::strong_count(v) > 1);
        }
        views.entry(key).or_default().clone()
    };
    let mut page = slot.lock().await;
    if let Some((at, body)) = page.as_ref() {
        if at.elapsed() < fresh {
            return Ok(body.clone());
        }
    }
    let mut list = list_page(st, caller, params.clone()).await?;
    // Idle time grows every second: the page works it out from the last input, so that an
    // unchanged list is not sent again.
    for s in &mut list.sessions {
        s.idle_secs = 0;
    }
    let body = std::sync::Arc::new(json!({"list": list, "strip": strip(st).await}).to_string());
    *page = Some((std::time::Instant::now(), body.clone()));
    Ok(body)
}

/// The sessions view, live: a `sessions` event (the list, with the same filters as
/// `GET /api/v1/sessions`, and the Live strip) each time what it would show changes. Ends when
/// the console session does (signed out, invalidated, expired). `idle_secs` is 0 in it: idle
/// time is now minus `last_input_at` (or `started_at`).
#[utoipa::path(
    get, operation_id = "console_events", path = "/api/v1/console/events", tag = "console",
    params(ListParams),
    responses((status = 200, description = "text/event-stream of `sessions` events: {\"list\": SessionList, \"strip\": {active, awaiting_approval, idle_10m, shadowed}}"))
)]
async fn events(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    row: Option<Extension<ConsoleSessionRow>>,
    headers: HeaderMap,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = query(q)?;
    // A bad filter is refused now, not after the stream began.
    list_page(&st, &caller, params.clone()).await?;
    struct Live {
        st: ApiState,
        caller: Caller,
        params: ListParams,
        cookie: Option<String>,
        last: String,
        ticks: u64,
        over: bool,
    }
    let live = Live {
        st,
        caller,
        params,
        // Only a stream opened with the console's cookie ends with its console session.
        cookie: row.and(crate::identity::cookie::cookie_of(&headers)),
        last: String::new(),
        ticks: 0,
        over: false,
    };
    let stream = futures_util::stream::unfold(live, |mut l| async move {
        if l.over {
            return None;
        }
        loop {
            if l.ticks > 0 {
                tokio::time::sleep(TICK).await;
            }
            l.ticks += 1;
            if l.ticks % 16 == 1 {
                if let Some(c) = &l.cookie {
                    if l.st.gw.console_session(c, false).await.is_none() {
                        l.over = true;
                        let e = Event::default().event("signed_out").data("{}");
                        return Some((Ok(e), l));
                    }
                }
            }
            let body = match view(&l.st, &l.caller, &l.params).await {
                Ok(body) => body,
                Err(e) => {
                    l.over = true;
                    let e = Event::default()
                        .event("error")
                        .data(json!({ "error": e.1 }).to_string());
                    return Some((Ok(e), l));
                }
            };
            if *body != l.last {
                l.last = body.to_string();
                return Some((
                    Ok(Event::default().event("sessions").data(body.as_str())),
                    l,
                ));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
