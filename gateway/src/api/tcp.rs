//! Brokered TCP: authorize a session (`wgctl target authorize`), cancel one (`wgctl session
//! cancel`), and close one's own when its client is done (`wgctl proxy` / `wgctl connect`
//! exiting).

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use wardengate_api as api;
use wardengate_protocols::session::Control;

use super::common::{parse_body, ApiError, Caller, SessionId};
use super::state::ApiState;
use crate::config::Perm;
use crate::registry::RegistryError;

/// What every person may call (each handler keeps them to their own sessions).
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/targets/{name}/authorize", post(authorize))
        .route("/api/v1/sessions/{id}/cancel", post(cancel))
        .route("/api/v1/sessions/{id}/close", post(close))
}

/// Authorize a TCP session to a `protocol = "tcp"` target for the caller: a `pending` session
/// and the token `wgctl proxy --authz` uses. Admission is the one every protocol goes through
/// (policies, limits, MFA, approvals).
#[utoipa::path(
    post, path = "/api/v1/targets/{name}/authorize", tag = "sessions",
    params(("name" = String, Path, description = "the tcp target")), request_body = api::AuthorizeRequest,
    responses((status = 200, description = "a pending session and its token", body = api::Authorization),
              (status = 403, description = "refused by policy, MFA or approval (the message says how to proceed)", body = api::ApiError),
              (status = 404, description = "unknown target, or not a tcp target", body = api::ApiError),
              (status = 429, description = "a concurrency limit is full", body = api::ApiError))
)]
async fn authorize(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<api::Authorization>, ApiError> {
    let req: api::AuthorizeRequest = parse_body(&body)?;
    caller.person(&st.gw.cfg(), "a TCP session")?;
    let name = api::text::inert(&name, api::text::MAX_NAME).into_owned();
    let auth = st
        .gw
        .tcp_authorize(&caller.name, &name, req.host_id.as_deref(), peer)
        .await
        .map_err(|(status, msg)| ApiError(status, msg))?;
    Ok(Json(auth))
}

/// Who may end `id` without the terminate permission: its owner.
async fn owned_or_terminator(
    st: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<crate::store::SessionRecord, ApiError> {
    let current = st.gw.registry.record(&*st.gw.store, id).await?;
    if current.actor != caller.name && !caller.may(Perm::SessionTerminate) {
        // The same answer as for a session that does not exist: others' ids are not confirmed.
        return Err(RegistryError::NotFound(id.to_string()).into());
    }
    if current.state.is_terminal() {
        return Err(RegistryError::Conflict(id.to_string(), current.state.to_string()).into());
    }
    Ok(current)
}

/// Cancel a live session: yours, or anyone's with the terminate permission. A reason is
/// required, as for terminate; a TCP session goes `canceling` while its connections close,
/// then `terminated` with reason `canceled`.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/cancel", tag = "sessions",
    params(SessionId), request_body = api::TerminateRequest,
    responses((status = 200, description = "the ended session", body = api::Session), (status = 400, description = "reason missing", body = api::ApiError), (status = 404, description = "unknown id", body = api::ApiError), (status = 409, description = "already over", body = api::ApiError), (status = 502, description = "the session runs on another gateway of the cluster, which cannot be reached", body = api::ApiError))
)]
async fn cancel(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: api::TerminateRequest = parse_body(&body)?;
    let reason = super::sessions::require_reason(req.reason, "cancel")?;
    let current = owned_or_terminator(&st, &caller, &id).await?;
    if st.gw.registry.live_record(&id).is_none()
        && !current.gateway.is_empty()
        && current.gateway != st.gw.name
    {
        // It runs on another gateway of the cluster: that one cancels it (signed, with the
        // caller's name; who may was checked here), and its answer comes back.
        let body = serde_json::to_vec(&crate::cluster::forward::PeerTerminate {
            by: caller.name.clone(),
            reason,
            evict: false,
        })
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let path = format!("/internal/v1/sessions/{id}/cancel");
        return super::routed::relay(&st, &current.gateway, &path, body).await;
    }
    cancel_here(&st, &id, &caller.name, &reason)
        .await
        .map(IntoResponse::into_response)
}

/// Cancel session `id`, which this gateway runs, for `by` (here, or a peer's caller).
pub(super) async fn cancel_here(
    st: &ApiState,
    id: &str,
    by: &str,
    reason: &str,
) -> Result<Json<api::Session>, ApiError> {
    let current = st.gw.registry.record(&*st.gw.store, id).await?;
    st.gw.audit(
        "session.canceled",
        Some(by),
        Some(id),
        json!({"by": by, "reason": reason, "actor": current.actor, "target": current.target}),
    );
    let message = format!("canceled by {by}: {reason}");
    end_here(st, id, "canceled", message).await
}

/// The session's own client is done with it (`wgctl proxy` or `wgctl connect` exiting): it ends
/// with reason `closed_by_client`.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/close", tag = "sessions",
    params(SessionId),
    responses((status = 200, description = "the ended session", body = api::Session), (status = 404, description = "unknown id, or not yours", body = api::ApiError), (status = 409, description = "already over", body = api::ApiError))
)]
async fn close(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::Session>, ApiError> {
    let current = st.gw.registry.record(&*st.gw.store, &id).await?;
    if current.actor != caller.name {
        return Err(RegistryError::NotFound(id).into());
    }
    if current.state.is_terminal() {
        return Err(RegistryError::Conflict(id, current.state.to_string()).into());
    }
    let message = format!("{}'s client closed the session", caller.name);
    end_here(&st, &id, "closed_by_client", message).await
}

/// End a session this gateway runs by rule, and answer with its final record.
async fn end_here(
    st: &ApiState,
    id: &str,
    reason: &'static str,
    message: String,
) -> Result<Json<api::Session>, ApiError> {
    if st.gw.registry.live_record(id).is_none() {
        let owner = st.gw.store.session_get(id).await.ok().flatten();
        let on = owner.map(|r| r.gateway).unwrap_or_default();
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("session {id} runs on gateway {on}: cancel it through that gateway"),
        ));
    }
    let control = Control::End { reason, message };
    let r = st.gw.registry.stop(&*st.gw.store, id, control).await?;
    Ok(Json(super::sessions::session_json(&st.gw, &r)))
}
