//! `wgctl login` over the API: the device flow's three open calls (start, poll, and the page's
//! password step; the key step is the `/mfa` page's ceremony), the `/login` page, and logout.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use wardengate_api as api;

use super::common::{bad, parse_body, ApiError};
use super::state::ApiState;
use crate::identity::login::Poll;

pub(super) fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/login", get(page))
        .route("/api/v1/login/device", post(device))
        .route("/api/v1/login/poll", post(poll))
        .route("/api/v1/login/password", post(password))
}

pub(super) fn user_routes() -> Router<ApiState> {
    Router::new().route("/api/v1/logout", post(logout))
}

/// Start a sign-in: a code for the person, a secret for wgctl to poll with.
#[utoipa::path(
    post, operation_id = "login_device", path = "/api/v1/login/device", tag = "identity", security(()),
    responses((status = 200, body = api::LoginStarted), (status = 503, description = "too many sign-ins waiting", body = api::ApiError))
)]
async fn device(
    State(st): State<ApiState>,
    req: axum::extract::Request,
) -> Result<Json<api::LoginStarted>, ApiError> {
    let peer = crate::http::client(&st.gw.cfg(), &req);
    let s = st
        .gw
        .login_start(&peer, false)
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(api::LoginStarted {
        url: format!("{}/login#code={}", st.gw.page_origin(), s.user_code),
        device_code: s.device_code,
        user_code: s.user_code,
        expires_in_secs: s.expires_in.as_secs(),
        interval_secs: 2,
    }))
}

/// wgctl polls: `pending` until the person signed in, then the token, once.
#[utoipa::path(
    post, operation_id = "login_poll", path = "/api/v1/login/poll", tag = "identity", security(()),
    request_body = api::LoginPollRequest,
    responses((status = 200, body = api::LoginPoll), (status = 404, description = "unknown or expired sign-in", body = api::ApiError))
)]
async fn poll(State(st): State<ApiState>, body: Bytes) -> Result<Json<api::LoginPoll>, ApiError> {
    let req: api::LoginPollRequest = parse_body(&body)?;
    match st.gw.login_poll(&req.device_code) {
        Poll::Waiting => Ok(Json(api::LoginPoll {
            status: "pending".into(),
            user: None,
            token: None,
            expires_ms: None,
        })),
        Poll::Token {
            user,
            token,
            expires_ms,
        } => Ok(Json(api::LoginPoll {
            status: "ok".into(),
            user: Some(user),
            token: Some(token),
            expires_ms: Some(expires_ms),
        })),
        Poll::Unknown => Err(ApiError(
            StatusCode::NOT_FOUND,
            "this sign-in is unknown or has expired; run wgctl login again".into(),
        )),
    }
}

/// The page's first step: code, name, password; answers the security-key ticket.
#[utoipa::path(
    post, operation_id = "login_password", path = "/api/v1/login/password", tag = "identity", security(()),
    request_body = api::LoginPasswordRequest,
    responses((status = 200, body = api::LoginTicket), (status = 401, description = "the same answer whatever was wrong (code, name, password, throttled)", body = api::ApiError))
)]
async fn password(
    State(st): State<ApiState>,
    req: axum::extract::Request,
) -> Result<Json<api::LoginTicket>, ApiError> {
    let peer = crate::http::client(&st.gw.cfg(), &req);
    let body = axum::body::to_bytes(req.into_body(), 64 << 10)
        .await
        .map_err(|_| bad("the request body is too large"))?;
    let r: api::LoginPasswordRequest = parse_body(&body)?;
    let ticket = st
        .gw
        .login_password(&r.code, &r.user, &r.password, peer)
        .await
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e))?
        .unwrap_or_default();
    Ok(Json(api::LoginTicket { ticket }))
}

/// Revoke the token this request carries (a `wgctl login` token).
#[utoipa::path(
    post, operation_id = "logout", path = "/api/v1/logout", tag = "identity",
    responses((status = 200, description = "revoked: {\"signed_out\": user}", body = Object), (status = 400, description = "not a wgctl login token", body = api::ApiError))
)]
async fn logout(
    State(st): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match st.gw.token_revoke(token).await {
        Some(user) => {
            st.gw
                .audit("login.revoked", Some(&user), None, serde_json::json!({}));
            Ok(Json(serde_json::json!({ "signed_out": user })))
        }
        None => Err(bad(
            "this is not a wgctl login token (API tokens in the configuration are removed there)",
        )),
    }
}

const PAGE: &str = include_str!("login.html");

async fn page() -> Response {
    super::common::html_page(PAGE, "")
}
