//! Listing, showing and terminating sessions.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use wardengate_api as api;

use super::common::{bad, internal, parse_body, query, ApiError, Caller, SessionId};
use super::state::ApiState;
use crate::broker::Gateway;
use crate::config::Perm;
use crate::registry::{to_api, Filter, RegistryError};
use crate::store::SessionQuery;

/// What a user's own token may call too: their sessions (the handlers show them only theirs).
pub(super) fn user_routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/{id}", get(get_session))
}

/// Operators only.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/sessions/terminate", post(bulk_terminate))
        .route("/api/v1/sessions/{id}/terminate", post(terminate))
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    pub(super) actor: Option<String>,
    pub(super) target: Option<String>,
    /// `ssh`, `postgres` or `rdp`.
    pub(super) protocol: Option<String>,
    /// One state (`active`, `paused`, `closed`, ...).
    pub(super) state: Option<String>,
    /// Only sessions under this policy.
    pub(super) policy: Option<String>,
    /// Only sessions idle longer than this (`90s`, `5m`, `2h`, or seconds).
    pub(super) idle_gt: Option<String>,
    /// `key=value`: only sessions to targets with this tag.
    pub(super) target_tag: Option<String>,
    /// At most this many (default 100).
    pub(super) limit: Option<u32>,
    /// Continue after this page (`next_cursor` of the last answer).
    pub(super) cursor: Option<String>,
    /// Only sessions that have not ended.
    pub(super) live: Option<bool>,
    /// Only sessions being shadowed now.
    pub(super) shadowed: Option<bool>,
}

/// A session list cursor, `STARTED_MS-ID` as `next_cursor` gives it.
fn parse_cursor(c: &str) -> Result<(u64, String), ApiError> {
    c.split_once('-')
        .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_string())))
        .filter(|(_, id)| id.starts_with("sess_"))
        .ok_or_else(|| {
            bad(format!(
                "cursor '{c}' is not one this API gave (next_cursor)"
            ))
        })
}

/// A `protocol` parameter: one of ours, or a clear refusal.
pub(super) fn protocol_param(s: &str) -> Result<api::Protocol, ApiError> {
    api::Protocol::parse(s).ok_or_else(|| {
        let known: Vec<&str> = api::Protocol::ALL.iter().map(|p| p.as_str()).collect();
        bad(format!(
            "unknown protocol '{s}' (one of: {})",
            known.join(", ")
        ))
    })
}

fn parse_duration_secs(s: &str) -> Result<u64, ApiError> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    wardengate_policy::duration::parse(s)
        .map(|d| d.as_secs())
        .map_err(|e| bad(format!("idle_gt: {e}")))
}

/// List sessions, newest first (a user's own token: only theirs).
#[utoipa::path(
    get, path = "/api/v1/sessions", tag = "sessions",
    params(ListParams),
    responses((status = 200, body = api::SessionList), (status = 400, description = "a filter that does not parse", body = api::ApiError), (status = 401, description = "missing or invalid token", body = api::ApiError))
)]
async fn list_sessions(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<api::SessionList>, ApiError> {
    list_page(&st, &caller, query(q)?).await.map(Json)
}

/// One page of the sessions `caller` may see that match `p` (the list endpoint, and the
/// console's live stream).
pub(super) async fn list_page(
    st: &ApiState,
    caller: &Caller,
    p: ListParams,
) -> Result<api::SessionList, ApiError> {
    let state = p
        .state
        .as_deref()
        .map(|s| api::SessionState::parse(s).ok_or_else(|| bad(format!("unknown state '{s}'"))))
        .transpose()?;
    let protocol = p.protocol.as_deref().map(protocol_param).transpose()?;
    let idle_gt_secs = p.idle_gt.as_deref().map(parse_duration_secs).transpose()?;
    let shadowed = p.shadowed.unwrap_or(false);
    // A user's own token sees their sessions (the store filters them, so pages and counts are
    // theirs alone) and those offered to them (added to the first page).
    let own = (!caller.may(Perm::SessionRead)).then(|| caller.name.clone());
    if let (Some(me), Some(a)) = (&own, &p.actor) {
        if a != me {
            return Ok(api::SessionList {
                sessions: Vec::new(),
                more: 0,
                next_cursor: None,
            });
        }
    }
    let first_page = p.cursor.is_none();
    let filter = Filter {
        query: SessionQuery {
            actor: own.clone().or(p.actor),
            target: p.target,
            protocol,
            state,
            policy: p.policy,
            // Idle and shadowed sessions are live ones.
            live: p.live.unwrap_or(false) || idle_gt_secs.is_some() || shadowed,
            targets_in: p.target_tag.as_deref().map(|t| st.gw.targets_with_tag(t)),
            before: p.cursor.as_deref().map(parse_cursor).transpose()?,
            limit: p.limit.unwrap_or(500).clamp(1, 10_000),
        },
        idle_gt_secs,
        shadowed,
        visible_to: own.clone(),
    };
    let mut page = st
        .gw
        .registry
        .list(&*st.gw.store, &filter)
        .await
        .map_err(internal)?;
    if let (Some(me), true) = (&own, first_page) {
        for mut r in st.gw.registry.offered_to(me) {
            if !page.rows.iter().any(|x| x.id == r.id) {
                r.observers.retain(|o| o.banner != "covert");
                page.rows.insert(0, r);
            }
        }
    }
    Ok(api::SessionList {
        sessions: page.rows.iter().map(to_api).collect(),
        more: page.more,
        next_cursor: page.next.map(|(ms, id)| format!("{ms}-{id}")),
    })
}

/// A session with its recording summary (read from the seal, once sealed).
pub(crate) fn session_json(gw: &Gateway, r: &crate::store::SessionRecord) -> api::Session {
    let mut s = to_api(r);
    s.recording = gw
        .recordings
        .seal(&r.id)
        .map(|seal| recording_summary(&seal));
    s
}

fn recording_summary(seal: &wardengate_recorder::Seal) -> api::RecordingSummary {
    api::RecordingSummary {
        status: seal.status.as_str().into(),
        chunks: seal.chunks,
        events: seal.events,
        raw_bytes: seal.raw_bytes,
        final_sha256: seal.final_sha256.clone(),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ShowParams {
    /// `text`: the session as `wgctl session show` prints it (text/plain).
    format: Option<String>,
}

/// One session (a user's own token: theirs, or one offered to them); `?format=text` as
/// `wgctl session show` prints it.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(SessionId, ShowParams),
    responses((status = 200, body = api::Session), (status = 404, description = "unknown id", body = api::ApiError))
)]
async fn get_session(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<ShowParams>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let text = match query(q)?.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(f) => return Err(bad(format!("format '{f}' is not json or text"))),
    };
    // Live details (observers, channels, counters) are the running gateway's: ask it when it is
    // another one of the cluster.
    let owner = st.gw.runs_elsewhere(&id).await.map_err(internal)?;
    let live = match &owner {
        Some(owner) => match super::routed::session_of(&st, owner, &id).await {
            Ok(s) => Some(s),
            // A gateway that does not answer (it may be dying): the store's record says what
            // is known.
            Err(ApiError(axum::http::StatusCode::BAD_GATEWAY, why)) => {
                tracing::warn!(session = %id, "showing the stored record: {why}");
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let mut s = match live {
        Some(s) => s,
        None => session_json(&st.gw, &st.gw.registry.record(&*st.gw.store, &id).await?),
    };
    if s.recording.is_none() && s.state.is_terminal() {
        // Another gateway's recording (or one a peer sealed): its seal is in the bucket.
        s.recording = st
            .gw
            .recordings
            .seal_anywhere(&id)
            .await
            .map(|seal| recording_summary(&seal));
    }
    let offered = s.handoff.as_ref().is_some_and(|h| h.to == caller.name);
    if !caller.may(Perm::SessionRead) && s.actor != caller.name && !offered {
        return Err(RegistryError::NotFound(id).into());
    }
    if !caller.may(Perm::SessionRead) {
        // A covert observer is not shown to the people being watched.
        s.observers.retain(|o| o.banner != "covert");
    }
    Ok(match text {
        true => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            api::table::session(&s),
        )
            .into_response(),
        false => Json(s).into_response(),
    })
}

/// The reason an ending asks for (`verb`: terminate, cancel), capped and made inert.
pub(super) fn require_reason(reason: Option<String>, verb: &str) -> Result<String, ApiError> {
    api::text::reason(reason.as_deref()).ok_or_else(|| {
        bad(format!(
            "a reason is required to {verb} a session: send {{\"reason\": \"...\"}}"
        ))
    })
}

/// Terminate a live session; the user sees the reason.
#[utoipa::path(
    post, operation_id = "terminate_session", path = "/api/v1/sessions/{id}/terminate", tag = "sessions",
    params(SessionId), request_body = api::TerminateRequest,
    responses((status = 200, description = "the closed session", body = api::Session), (status = 400, description = "reason missing", body = api::ApiError), (status = 404, description = "unknown id", body = api::ApiError), (status = 409, description = "already over", body = api::ApiError))
)]
async fn terminate(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<api::Session>, ApiError> {
    let req: api::TerminateRequest = parse_body(&body)?;
    let reason = require_reason(req.reason, "terminate")?;
    let by = caller.name.as_str();
    // 404/409 before auditing an action that cannot happen.
    let current = st.gw.registry.record(&*st.gw.store, &id).await?;
    if current.state.is_terminal() {
        return Err(RegistryError::Conflict(id, current.state.to_string()).into());
    }
    st.gw.audit(
        "session.terminated",
        Some(by),
        Some(&id),
        json!({"by": by, "reason": reason, "actor": current.actor, "target": current.target}),
    );
    let r = st.gw.terminate_anywhere(&id, by, &reason).await?;
    Ok(Json(session_json(&st.gw, &r)))
}

/// Terminate every live session matching the selectors.
#[utoipa::path(
    post, path = "/api/v1/sessions/terminate", tag = "sessions",
    request_body = api::BulkTerminateRequest,
    responses((status = 200, description = "the terminated sessions", body = api::TerminateResult), (status = 400, description = "reason or selector missing", body = api::ApiError))
)]
async fn bulk_terminate(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Json<api::TerminateResult>, ApiError> {
    let req: api::BulkTerminateRequest = parse_body(&body)?;
    let reason = require_reason(req.reason.clone(), "terminate")?;
    if req.actor.is_none()
        && req.target_tag.is_none()
        && req.target.is_none()
        && req.protocol.is_none()
    {
        return Err(bad(
            "bulk terminate needs at least one selector: actor, target, target_tag or protocol",
        ));
    }
    if let Some(tag) = &req.target_tag {
        if !tag.contains('=') {
            return Err(bad(format!("target_tag '{tag}' must be key=value")));
        }
    }
    let filter = Filter {
        query: SessionQuery {
            actor: req.actor.clone(),
            target: req.target.clone(),
            protocol: req.protocol.as_deref().map(protocol_param).transpose()?,
            live: true,
            targets_in: req.target_tag.as_deref().map(|t| st.gw.targets_with_tag(t)),
            limit: 100_000,
            ..Default::default()
        },
        idle_gt_secs: None,
        shadowed: false,
        visible_to: None,
    };
    let live: Vec<String> = st
        .gw
        .registry
        .list(&*st.gw.store, &filter)
        .await
        .map_err(internal)?
        .rows
        .into_iter()
        .filter(|r| !r.state.is_terminal())
        .map(|r| r.id)
        .collect();
    // Who asked: the audit and each session's `terminated_by` name them.
    let by = caller.name.clone();
    // Terminate concurrently: each waits for its relay to confirm.
    let handles: Vec<_> = live
        .into_iter()
        .map(|id| {
            st.gw.audit(
                "session.terminated",
                Some(&by),
                Some(&id),
                json!({"by": by, "reason": reason, "bulk": true}),
            );
            let gw = st.gw.clone();
            let (reason, by) = (reason.clone(), by.clone());
            tokio::spawn(async move { gw.terminate_anywhere(&id, &by, &reason).await })
        })
        .collect();
    let mut done = Vec::new();
    for h in handles {
        match h.await.map_err(internal)? {
            Ok(r) => done.push(session_json(&st.gw, &r)),
            Err(RegistryError::Conflict(..)) | Err(RegistryError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(api::TerminateResult { terminated: done }))
}
