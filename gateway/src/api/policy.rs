//! Policy endpoints: list the loaded policies, reload them, and explain a decision.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use wardengate_api as api;

use super::common::{bad, query, ApiError};
use super::state::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/policies", get(list))
        .route("/api/v1/policies/reload", post(reload))
        .route("/api/v1/policies/explain", get(explain))
}

/// Every loaded policy, in load order, with where it was defined.
#[utoipa::path(
    get, operation_id = "list_policies", path = "/api/v1/policies", tag = "policies",
    responses((status = 200, description = "the policies in load order, each with its source (file:line)", body = Object))
)]
async fn list(State(st): State<ApiState>) -> Json<Value> {
    let cfg = st.gw.cfg();
    let policies: Vec<Value> = cfg
        .policies
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(&*e.policy).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("source".into(), json!(e.source.to_string()));
            }
            v
        })
        .collect();
    Json(json!({ "policies": policies }))
}

/// Re-read the configuration and policy files; 422 with the reason when they do not load (the
/// policies in force stay).
#[utoipa::path(
    post, operation_id = "reload_policies", path = "/api/v1/policies/reload", tag = "policies",
    responses((status = 200, description = "reloaded: the policy names, and settings that need a restart", body = Object), (status = 422, description = "the files do not load; the previous policies stay (the error says file, line, key)", body = api::ApiError))
)]
async fn reload(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    match st.gw.reload("api") {
        Ok(r) => Ok(Json(json!(r))),
        Err(e) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload failed; the previous policies stay in force: {e:#}"),
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ExplainParams {
    actor: Option<String>,
    target: Option<String>,
    protocol: Option<String>,
    account: Option<String>,
}

/// Which policy admits an actor to a target and why: every policy's verdict, the limits and the
/// current counts.
#[utoipa::path(
    get, operation_id = "explain_policies", path = "/api/v1/policies/explain", tag = "policies",
    params(ExplainParams),
    responses((status = 200, body = Object), (status = 400, description = "unknown actor, target, account or protocol", body = api::ApiError))
)]
async fn explain(
    State(st): State<ApiState>,
    q: Result<Query<ExplainParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(q)?;
    let (Some(actor), Some(target)) = (p.actor, p.target) else {
        return Err(bad(
            "explain needs actor and target (and protocol, default ssh)",
        ));
    };
    let protocol = p.protocol.unwrap_or_else(|| "ssh".into());
    st.gw
        .explain(&actor, &target, &protocol, p.account.as_deref())
        .map(Json)
        .map_err(bad)
}
