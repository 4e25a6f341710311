//! The audit log: a page of it, the whole of it for offline checking, and its verification.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use wardengate_api as api;

use super::common::{internal, query, ApiError, Caller};
use super::state::ApiState;
use crate::store::AuditQuery;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/audit/export", get(audit_export))
        .route("/api/v1/audit/verify", get(audit_verify))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditParams {
    /// Only events of this kind (`session.terminated`, ...).
    kind: Option<String>,
    /// Only events of this session.
    session: Option<String>,
    /// At most this many, the newest (default 1000).
    limit: Option<u32>,
    /// Only events older than this sequence number (the next page back).
    before: Option<i64>,
}

/// The audit log (hash-chained), oldest first, newest page by default.
#[utoipa::path(
    get, operation_id = "list_audit", path = "/api/v1/audit", tag = "audit",
    params(AuditParams),
    responses((status = 200, body = api::AuditList), (status = 400, description = "a filter that does not parse", body = api::ApiError))
)]
async fn audit(
    State(st): State<ApiState>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<api::AuditList>, ApiError> {
    let p = query(q)?;
    let (rows, older) = st
        .gw
        .store
        .audit_list(AuditQuery {
            kind: p.kind,
            session: p.session,
            before: p.before,
            limit: p.limit.unwrap_or(1000).clamp(1, 100_000),
        })
        .await
        .map_err(internal)?;
    let before = (older > 0).then(|| rows.first().map(|r| r.seq)).flatten();
    let report = st.gw.audit_report().await.map_err(internal)?;
    Ok(Json(api::AuditList {
        chain_ok: report.ok(),
        chain_message: Some(report.message),
        older,
        next_before: before,
        events: rows
            .into_iter()
            .map(|r| api::AuditEvent {
                id: r.id,
                seq: r.seq,
                at: crate::util::rfc3339(r.at_ms),
                kind: r.kind,
                actor: r.actor,
                session_id: r.session_id,
                detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
                prev_hash: r.prev_hash,
                hash: r.hash,
            })
            .collect(),
    }))
}

/// `GET /api/v1/audit/export`: the whole log as JSON lines, each checkpoint after the event it
/// signs (`wgctl audit export`, then `wgctl audit verify --file` offline).
#[utoipa::path(
    get, path = "/api/v1/audit/export", tag = "audit",
    responses((status = 200, description = "one JSON object a line: {\"type\":\"event\",...} or {\"type\":\"checkpoint\",...}", content_type = "application/x-ndjson", body = String))
)]
async fn audit_export(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    use wardengate_recorder::audit::ExportLine;
    let events = st.gw.store.audit_all().await.map_err(internal)?;
    let checkpoints = st.gw.checkpoints_all().await.map_err(internal)?;
    let body = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut checkpoints = checkpoints.into_iter().peekable();
        let mut out = String::new();
        for e in events {
            let seq = e.seq;
            out.push_str(&serde_json::to_string(&ExportLine::Event(e))?);
            out.push('\n');
            while let Some(c) = checkpoints.next_if(|c| c.seq <= seq) {
                out.push_str(&serde_json::to_string(&ExportLine::Checkpoint(c))?);
                out.push('\n');
            }
        }
        for c in checkpoints {
            out.push_str(&serde_json::to_string(&ExportLine::Checkpoint(c))?);
            out.push('\n');
        }
        Ok(out)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    st.gw
        .audit("audit.exported", Some(&caller.name), None, json!({}));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// `GET /api/v1/audit/verify`: the chain and every checkpoint checked with the gateway's key.
#[utoipa::path(
    get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "the verifier's report: ok, the number of events and checkpoints, the first bad event and why", body = Object))
)]
async fn audit_verify(
    State(st): State<ApiState>,
) -> Result<Json<wardengate_recorder::audit::AuditReport>, ApiError> {
    Ok(Json(st.gw.audit_report().await.map_err(internal)?))
}
