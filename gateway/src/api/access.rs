//! Network access sessions: start one for the caller's address, list and show them, stop one
//! with a reason. Every person may call these; each keeps them to their own sessions unless
//! they hold `session.read` (see everyone's) or `session.terminate` (stop anyone's).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use wardengate_api as api;

use super::common::{parse_body, query, ApiError, Caller};
use super::state::ApiState;
use crate::access::AccessRefusal;
use crate::config::Perm;
use crate::store::AccessQuery;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/access-sessions", post(start).get(list))
        .route("/api/v1/access-sessions/{id}", get(show))
        .route("/api/v1/access-sessions/{id}/stop", post(stop))
}

/// The refusal as the API answers it: the sentence, and for a full limit the structured
/// denial (`limit`: scope, limit, current, subject), as session admission gives it.
pub(super) fn refused(r: AccessRefusal) -> Response {
    let mut body = serde_json::json!({"error": r.message});
    if let Some(l) = r.limit {
        body["limit"] = serde_json::json!(l);
    }
    if let Some((key, asked)) = r.asks {
        body[key] = *asked;
    }
    (r.status, Json(body)).into_response()
}

/// `{id}` of an access session's routes.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
struct AccessId(
    /// The access session id (`acc_…`).
    String,
);

/// Start an access session: the caller's address (the connection's, or from
/// `X-Forwarded-For` when the connection comes from one of `[api] trusted_proxies`) is allowed
/// on every network resource their policies grant, until the session expires or is stopped.
#[utoipa::path(
    post, path = "/api/v1/access-sessions", tag = "access", request_body = api::AccessStartRequest,
    responses((status = 200, description = "the session, ACTIVE, PARTIAL or FAILED, with each rule", body = api::AccessSession),
              (status = 400, description = "a duration that is not offered", body = api::ApiError),
              (status = 403, description = "not a person, no resource granted, a duration over a cap (the limit is named), or an approval or a security key asked for (`approval`: the requests to wait on; `mfa`: the link that proves presence)", body = api::ApiError),
              (status = 429, description = "access.max_sessions_per_user is reached (with `limit`)", body = api::ApiError))
)]
async fn start(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<api::AccessSession>, Response> {
    let req: api::AccessStartRequest = parse_body(&body).map_err(IntoResponse::into_response)?;
    caller
        .person(&st.gw.cfg(), "an access session")
        .map_err(IntoResponse::into_response)?;
    let trusted = crate::access::trusted(&st.gw.cfg());
    let addr = crate::access::client_address(peer, &headers, &trusted)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e).into_response())?;
    let duration = req
        .duration
        .as_deref()
        .map(|d| api::text::inert(d, 32).into_owned());
    // In a task of its own: a caller who goes away does not stop it half way (its rules would
    // be applied and never tracked).
    let gw = st.gw.clone();
    let user = caller.name.clone();
    tokio::spawn(async move { gw.access_start(&user, addr, duration.as_deref()).await })
        .await
        .map_err(|e| internal(&e))?
        .map(Json)
        .map_err(refused)
}

fn internal(e: &tokio::task::JoinError) -> Response {
    tracing::error!("an access session task failed: {e}");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; the gateway's log has the details".into(),
    )
    .into_response()
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// Only this person's sessions (needs `session.read` for anyone else's).
    user: Option<String>,
    /// Everyone's (needs `session.read`); default: the caller's own.
    #[serde(default)]
    all: bool,
    /// Only sessions that hold rules (pending, active, partial, expiring).
    #[serde(default)]
    live: bool,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<u32>,
}

/// Access sessions, newest first: the caller's, or with `session.read` anyone's.
#[utoipa::path(
    get, path = "/api/v1/access-sessions", tag = "access", params(ListParams),
    responses((status = 200, body = api::AccessList), (status = 403, description = "another person's without session.read", body = api::ApiError))
)]
async fn list(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<api::AccessList>, ApiError> {
    let p = query(q)?;
    let user = match (&p.user, p.all) {
        (Some(u), _) => Some(api::text::inert(u, api::text::MAX_NAME).into_owned()),
        (None, true) => None,
        (None, false) => Some(caller.name.clone()),
    };
    if user.as_deref() != Some(caller.name.as_str()) && !caller.may(Perm::SessionRead) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "seeing other people's access sessions needs the session.read permission".into(),
        ));
    }
    let sessions = st
        .gw
        .access_list(AccessQuery {
            user,
            live_only: p.live,
            limit: p.limit.unwrap_or(100).clamp(1, 1000),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the store: {e:#}"),
            )
        })?;
    // What the caller may start: within the deployment's cap and their policies'.
    let (offered, default) = st.gw.access_offer(&caller.name);
    Ok(Json(api::AccessList {
        sessions,
        durations: offered.into_iter().map(crate::config::shown).collect(),
        default_duration: default.map(crate::config::shown).unwrap_or_default(),
    }))
}

/// The session the caller may see: their own, or anyone's with `perm`; else the same 404 as
/// for an id that does not exist.
async fn visible(
    st: &ApiState,
    caller: &Caller,
    id: &str,
    perm: Perm,
) -> Result<api::AccessSession, ApiError> {
    let id = api::text::inert(id, 64).into_owned();
    let missing = || ApiError(StatusCode::NOT_FOUND, format!("no access session {id}"));
    let s = st
        .gw
        .access_get(&id)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the store: {e:#}"),
            )
        })?
        .ok_or_else(missing)?;
    if s.user != caller.name && !caller.may(perm) {
        return Err(missing());
    }
    Ok(s)
}

/// One access session with each rule's state.
#[utoipa::path(
    get, path = "/api/v1/access-sessions/{id}", tag = "access", params(AccessId),
    responses((status = 200, body = api::AccessSession), (status = 404, description = "unknown id, or not yours", body = api::ApiError))
)]
async fn show(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::AccessSession>, ApiError> {
    visible(&st, &caller, &id, Perm::SessionRead)
        .await
        .map(Json)
}

/// Stop a live access session now (a reason is required): its rules are removed, or released
/// where another live session from the same address still holds them; it ends `CANCELLED`.
#[utoipa::path(
    post, path = "/api/v1/access-sessions/{id}/stop", tag = "access", params(AccessId), request_body = api::TerminateRequest,
    responses((status = 200, description = "the cancelled session", body = api::AccessSession),
              (status = 400, description = "reason missing", body = api::ApiError),
              (status = 404, description = "unknown id, or not yours", body = api::ApiError),
              (status = 409, description = "already over (a session another gateway of the cluster applied is stopped there, and its answer comes back)", body = api::ApiError))
)]
async fn stop(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Response> {
    let req: api::TerminateRequest = parse_body(&body).map_err(IntoResponse::into_response)?;
    let reason =
        super::sessions::require_reason(req.reason, "stop").map_err(IntoResponse::into_response)?;
    let s = visible(&st, &caller, &id, Perm::SessionTerminate)
        .await
        .map_err(IntoResponse::into_response)?;
    if !s.state.is_live() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("access session {} is already {}", s.id, s.state),
        )
        .into_response());
    }
    if s.gateway != st.gw.name {
        // Its rules are that gateway's to remove: the stop goes there (signed, with the
        // caller's name; the permission was checked here), and its answer comes back.
        let body = serde_json::to_vec(&crate::cluster::forward::PeerTerminate {
            by: caller.name.clone(),
            reason,
            evict: false,
        })
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?;
        let path = format!("/internal/v1/access-sessions/{}/stop", s.id);
        return super::routed::relay(&st, &s.gateway, &path, body)
            .await
            .map_err(IntoResponse::into_response);
    }
    let gw = st.gw.clone();
    let by = caller.name.clone();
    tokio::spawn(async move { gw.access_stop(&s.id, &by, &reason).await })
        .await
        .map_err(|e| internal(&e))?
        .map(|done| Json(done).into_response())
        .map_err(refused)
}
