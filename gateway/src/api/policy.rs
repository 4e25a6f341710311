//! Policy endpoints: list the loaded policies, reload them, and explain a decision.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::common::{bad, query, ApiError};
use super::state::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/policies", get(list))
        .route("/api/v1/policies/reload", post(reload))
        .route("/api/v1/policies/explain", get(explain))
}

/// Every loaded policy, in load order, with where it was defined.
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
async fn reload(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    match st.gw.reload("api") {
        Ok(r) => Ok(Json(json!(r))),
        Err(e) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload failed; the previous policies stay in force: {e:#}"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainParams {
    actor: Option<String>,
    target: Option<String>,
    protocol: Option<String>,
    account: Option<String>,
}

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
