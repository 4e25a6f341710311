//! The console's saved views: an operator's named filters of the sessions list, pinned or not,
//! kept in the store (`console_queries`). Every person may keep their own.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Extension, Json, Router};
use serde_json::json;
use wardengate_api as api;

use super::common::{bad, internal, parse_body, ApiError, Caller};
use super::state::ApiState;

/// What every signed-in person may call (their own views only).
pub(super) fn user_routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/console/queries", get(queries))
        .route("/api/v1/console/queries/{name}", put(save_query))
        .route("/api/v1/console/queries/{name}", delete(remove_query))
}

/// The filters a saved query may hold (the sessions view's).
const QUERY_KEYS: [&str; 7] = [
    "target_tag",
    "protocol",
    "policy",
    "actor",
    "state",
    "idle_gt",
    "shadowed",
];
const MAX_QUERIES: usize = 50;
const MAX_QUERY_NAME: usize = 64;
const MAX_QUERY: usize = 512;

/// `{name}` of a saved query, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(names("name"), parameter_in = Path)]
#[allow(dead_code)]
struct QueryName(
    /// The saved query's name (1 to 64 printable characters).
    String,
);

fn query_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_QUERY_NAME || n.chars().any(char::is_control) {
        return Err(bad(format!(
            "a saved query's name is 1 to {MAX_QUERY_NAME} printable characters"
        )));
    }
    Ok(n.to_string())
}

/// The caller's saved views of the sessions list, pinned first.
#[utoipa::path(
    get, operation_id = "console_queries", path = "/api/v1/console/queries", tag = "console",
    responses((status = 200, body = Vec<api::SavedQuery>))
)]
async fn queries(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<api::SavedQuery>>, ApiError> {
    let rows = st
        .gw
        .store
        .query_list(&caller.name)
        .await
        .map_err(internal)?;
    Ok(Json(
        rows.into_iter()
            .map(|q| api::SavedQuery {
                name: q.name,
                query: q.query,
                pinned: q.pinned,
            })
            .collect(),
    ))
}

/// Save (or replace, or pin) a view of the sessions list under a name.
#[utoipa::path(
    put, operation_id = "console_save_query", path = "/api/v1/console/queries/{name}", tag = "console",
    params(QueryName),
    request_body = api::SavedQueryRequest,
    responses((status = 200, body = api::SavedQuery), (status = 400, description = "a name or filter that is not allowed, or too many saved", body = api::ApiError))
)]
async fn save_query(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<api::SavedQuery>, ApiError> {
    let name = query_name(&name)?;
    let r: api::SavedQueryRequest = parse_body(&body)?;
    if r.query.len() > MAX_QUERY {
        return Err(bad(format!("a saved query is at most {MAX_QUERY} bytes")));
    }
    for (k, _) in form_urlencoded::parse(r.query.as_bytes()) {
        if !QUERY_KEYS.contains(&k.as_ref()) {
            return Err(bad(format!(
                "'{}' is not a filter of the sessions view (one of {})",
                api::text::inert(&k, 32),
                QUERY_KEYS.join(", ")
            )));
        }
    }
    let mine = st
        .gw
        .store
        .query_list(&caller.name)
        .await
        .map_err(internal)?;
    if mine.len() >= MAX_QUERIES && !mine.iter().any(|q| q.name == name) {
        return Err(bad(format!(
            "{} has {MAX_QUERIES} saved queries already; remove one first",
            caller.name
        )));
    }
    st.gw
        .store
        .query_put(crate::store::SavedQuery {
            owner: caller.name.clone(),
            name: name.clone(),
            query: r.query.clone(),
            pinned: r.pinned,
            created_ms: wardengate_protocols::session::now_ms(),
        })
        .await
        .map_err(internal)?;
    Ok(Json(api::SavedQuery {
        name,
        query: r.query,
        pinned: r.pinned,
    }))
}

/// Remove a saved query.
#[utoipa::path(
    delete, operation_id = "console_remove_query", path = "/api/v1/console/queries/{name}", tag = "console",
    params(QueryName),
    responses((status = 200, description = "removed: {\"removed\": name}", body = Object), (status = 404, description = "no such saved query", body = api::ApiError))
)]
async fn remove_query(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = query_name(&name)?;
    match st
        .gw
        .store
        .query_remove(&caller.name, &name)
        .await
        .map_err(internal)?
    {
        true => Ok(Json(json!({ "removed": name }))),
        false => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no saved query '{}'",
                api::text::inert(&name, MAX_QUERY_NAME)
            ),
        )),
    }
}
