//! Approval requests over the API: list, approve, deny, withdraw. Any person's own token may
//! call them; who may decide is the policy's `approvers` (checked per request), never the
//! requester.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use wardengate_api as api;
use wardengate_api::text::{inert, MAX_REASON};

use super::common::{bad, parse_body, query, ApiError, Caller};
use super::state::ApiState;
use crate::config::Perm;
use crate::identity::approvals::DecideError;

pub(super) fn user_routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/approvals", get(list))
        .route("/api/v1/approvals/{id}/approve", post(approve))
        .route("/api/v1/approvals/{id}/deny", post(deny))
        .route("/api/v1/approvals/{id}/withdraw", post(withdraw))
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> ApiError {
        let code = match &e {
            DecideError::NotFound(_) => StatusCode::NOT_FOUND,
            DecideError::Forbidden(_) => StatusCode::FORBIDDEN,
            DecideError::Conflict(_) => StatusCode::CONFLICT,
            DecideError::Unavailable(_) => StatusCode::BAD_GATEWAY,
        };
        ApiError(code, e.to_string())
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ApprovalParams {
    /// Only the caller's own requests.
    mine: Option<bool>,
    /// `pending`, `approved`, `denied`, `withdrawn`, `used`.
    state: Option<String>,
}

/// Requests the caller made or may decide (operators: all), newest first.
#[utoipa::path(
    get, operation_id = "list_approvals", path = "/api/v1/approvals", tag = "identity",
    params(ApprovalParams),
    responses((status = 200, body = Vec<api::ApprovalRequest>), (status = 400, description = "unknown state", body = api::ApiError))
)]
async fn list(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ApprovalParams>, QueryRejection>,
) -> Result<Json<Vec<api::ApprovalRequest>>, ApiError> {
    let p = query(q)?;
    let mut all = st
        .gw
        .approval_list_all(
            &caller.name,
            caller.may(Perm::ApprovalDecide),
            p.mine.unwrap_or(false),
        )
        .await;
    if let Some(s) = p.state {
        let known = ["pending", "approved", "denied", "withdrawn", "used"];
        if !known.contains(&s.as_str()) {
            return Err(bad(format!(
                "state '{}' is not one of {}",
                inert(&s, 32),
                known.join(", ")
            )));
        }
        all.retain(|r| r.state.as_str() == s);
    }
    Ok(Json(all))
}

/// Approve (`yes`) or deny: the reason is required, capped and made inert.
async fn decide(
    st: &ApiState,
    caller: &Caller,
    id: &str,
    body: &Bytes,
    yes: bool,
) -> Result<Json<api::ApprovalRequest>, ApiError> {
    let req: api::ApprovalDecisionRequest = parse_body(body)?;
    let reason = inert(req.reason.as_deref().unwrap_or("").trim(), MAX_REASON).into_owned();
    if reason.is_empty() {
        let what = if yes { "approve" } else { "deny" };
        return Err(bad(format!(
            "a reason is required to {what} a request: send {{\"reason\": \"...\"}}"
        )));
    }
    Ok(Json(
        st.gw
            .approval_act_anywhere(id, &caller.name, Some(yes), &reason)
            .await?,
    ))
}

/// Approve a request (an approver who is not the requester); with `required` approvals the
/// session may start.
#[utoipa::path(
    post, operation_id = "approve", path = "/api/v1/approvals/{id}/approve", tag = "identity",
    params(("id" = String, Path, description = "the request (`req_…`)")),
    request_body = api::ApprovalDecisionRequest,
    responses((status = 200, body = api::ApprovalRequest), (status = 400, description = "no reason", body = api::ApiError), (status = 403, description = "the caller is the requester or not an approver", body = api::ApiError), (status = 404, description = "unknown request", body = api::ApiError), (status = 409, description = "decided already, or approved by the caller already", body = api::ApiError))
)]
async fn approve(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<api::ApprovalRequest>, ApiError> {
    decide(&st, &caller, &id, &body, true).await
}

/// Deny a request; the waiting session is refused with the reason.
#[utoipa::path(
    post, operation_id = "deny", path = "/api/v1/approvals/{id}/deny", tag = "identity",
    params(("id" = String, Path, description = "the request (`req_…`)")),
    request_body = api::ApprovalDecisionRequest,
    responses((status = 200, body = api::ApprovalRequest), (status = 400, description = "no reason", body = api::ApiError), (status = 403, description = "the caller is the requester or not an approver", body = api::ApiError), (status = 404, description = "unknown request", body = api::ApiError), (status = 409, description = "decided already", body = api::ApiError))
)]
async fn deny(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<api::ApprovalRequest>, ApiError> {
    decide(&st, &caller, &id, &body, false).await
}

/// The requester withdraws a waiting request.
#[utoipa::path(
    post, operation_id = "withdraw", path = "/api/v1/approvals/{id}/withdraw", tag = "identity",
    params(("id" = String, Path, description = "the request (`req_…`)")),
    responses((status = 200, body = api::ApprovalRequest), (status = 404, description = "no such request of the caller's", body = api::ApiError), (status = 409, description = "decided already", body = api::ApiError))
)]
async fn withdraw(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::ApprovalRequest>, ApiError> {
    Ok(Json(
        st.gw
            .approval_act_anywhere(&id, &caller.name, None, "")
            .await?,
    ))
}
