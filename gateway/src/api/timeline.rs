//! A session's timeline, stitched from the audit log and its recording's markers: what the
//! console shows under a session, oldest first.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::Value;
use wardengate_api as api;

use super::common::{internal, ApiError, Caller, SessionId};
use super::state::ApiState;
use crate::store::AuditQuery;

/// Operators (`session.read`).
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/sessions/{id}/timeline", get(timeline))
}

/// Most audit events read for one session (and for each approval kind).
const MAX_EVENTS: u32 = 2000;
/// Approval events are logged under their request, not the session.
const APPROVAL_KINDS: [&str; 4] = [
    "approval.approved",
    "approval.granted",
    "approval.denied",
    "approval.withdrawn",
];
/// The details worth a line, in this order.
const SAID: [&str; 14] = [
    "policy", "reason", "why", "by", "observer", "banner", "to", "request", "target", "status",
    "message", "stage", "kind", "detail",
];

/// `key=value` of the details people look for.
fn summary(kind: &str, detail: &Value) -> String {
    let mut parts = Vec::new();
    for k in SAID {
        match detail.get(k) {
            Some(Value::String(s)) if !s.is_empty() => parts.push(format!("{k}={s}")),
            Some(Value::Bool(b)) => parts.push(format!("{k}={b}")),
            Some(Value::Number(n)) => parts.push(format!("{k}={n}")),
            _ => {}
        }
    }
    let text = if parts.is_empty() {
        kind.to_string()
    } else {
        parts.join(" ")
    };
    api::text::inert(&text, 300).into_owned()
}

/// A session's timeline: policy decision, MFA challenge, approvals, shadow attach and detach,
/// handoff, idle warnings, the recording's seal, terminate; oldest first.
#[utoipa::path(
    get, operation_id = "session_timeline", path = "/api/v1/sessions/{id}/timeline", tag = "sessions",
    params(SessionId),
    responses((status = 200, body = api::Timeline), (status = 404, description = "unknown id", body = api::ApiError))
)]
async fn timeline(
    State(st): State<ApiState>,
    Extension(_caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::Timeline>, ApiError> {
    let rec = st.gw.registry.record(&*st.gw.store, &id).await?;
    let start = rec.started_ms;
    let offset = |at: u64| {
        wardengate_api::time::clock(
            std::time::Duration::from_millis(at.saturating_sub(start)),
            false,
        )
    };
    let query = |kind: Option<&str>, session: Option<&str>| AuditQuery {
        kind: kind.map(str::to_string),
        session: session.map(str::to_string),
        before: None,
        limit: MAX_EVENTS,
    };
    let parsed = |r: crate::store::AuditRow| {
        let detail: Value = serde_json::from_str(&r.detail).unwrap_or(Value::Null);
        (r, detail)
    };
    let (rows, _) = st
        .gw
        .store
        .audit_list(query(None, Some(&id)))
        .await
        .map_err(internal)?;
    let mut events: Vec<_> = rows.into_iter().map(parsed).collect();
    // The approval this session waited on or was admitted by: its events name the request.
    let request = events
        .iter()
        .rev()
        .find_map(|(_, d)| d.get("request").and_then(Value::as_str).map(str::to_string));
    if let Some(req) = request {
        for kind in APPROVAL_KINDS {
            let (rows, _) = st
                .gw
                .store
                .audit_list(query(Some(kind), None))
                .await
                .map_err(internal)?;
            events.extend(
                rows.into_iter()
                    .map(parsed)
                    .filter(|(_, d)| d.get("request").and_then(Value::as_str) == Some(&req)),
            );
        }
    }
    let mut entries: Vec<api::TimelineEntry> = events
        .into_iter()
        .map(|(r, detail)| api::TimelineEntry {
            at_ms: r.at_ms,
            offset: offset(r.at_ms),
            source: "audit".into(),
            text: summary(&r.kind, &detail),
            kind: r.kind,
            actor: r.actor,
        })
        .collect();
    // The recording's markers (read off the runtime; a recording being written is read as far
    // as it goes).
    if let Ok(Some(copy)) = st.gw.recordings.open_copy(&id).await {
        let read = tokio::task::spawn_blocking(move || wardengate_recorder::read(&copy.path))
            .await
            .map_err(internal)?;
        if let Ok(recording) = read {
            for ev in recording.events {
                if let wardengate_recorder::EventKind::Marker { kind, detail } = ev.kind {
                    let at = start + ev.t_us / 1000;
                    entries.push(api::TimelineEntry {
                        at_ms: at,
                        offset: offset(at),
                        source: "recording".into(),
                        text: api::text::inert(&detail, 300).into_owned(),
                        kind: format!("marker.{kind}"),
                        actor: None,
                    });
                }
            }
        }
    }
    entries.sort_by_key(|e| e.at_ms);
    Ok(Json(api::Timeline {
        session: id,
        entries,
    }))
}
