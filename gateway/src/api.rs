//! The REST API under `/api/v1` (axum on hyper), authenticated with the admin bearer token.
//!
//! Every error is a JSON body `{"error": "..."}` with one actionable sentence and the status code
//! that matches it: 400 for bad input (including a missing terminate reason), 401 for a missing or
//! wrong token, 404 for an unknown session, 409 for a session that is already over.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use wardengate_api as api;

use crate::broker::Gateway;
use crate::registry::{to_api, Filter, RegistryError};
use crate::store::SessionQuery;

#[derive(Clone)]
pub struct ApiState {
    pub gw: Arc<Gateway>,
    /// sha256 of the admin token; compared in constant time.
    pub token_hash: [u8; 32],
    /// Browser shadow links not opened yet.
    pub tickets: crate::api_browser::Tickets,
}

#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(api::ApiError { error: self.1 })).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(id) => {
                ApiError(StatusCode::NOT_FOUND, format!("no session {id}"))
            }
            RegistryError::Conflict(id, state) => ApiError(
                StatusCode::CONFLICT,
                format!("session {id} is already {state}"),
            ),
            RegistryError::Internal(e) => internal(e),
        }
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("api: {e}");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: {e}"),
    )
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub fn router(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/terminate", post(bulk_terminate))
        .route("/api/v1/sessions/{id}", get(get_session))
        .route("/api/v1/sessions/{id}/terminate", post(terminate))
        .merge(crate::api_live::routes())
        .merge(crate::api_browser::routes())
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/audit/export", get(audit_export))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/recordings", get(list_recordings))
        .route("/api/v1/recordings/pubkey", get(recording_pubkey))
        .route("/api/v1/recordings/{id}", get(get_recording))
        .route("/api/v1/recordings/{id}/events", get(recording_events))
        .merge(crate::api_policy::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(crate::api_browser::open_routes())
        .merge(authed)
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/openapi.json".into(),
            )
        })
        .layer(middleware::map_response(harden))
        .with_state(state)
}

/// Largest request body the API reads (axum's default limit).
const MAX_BODY: usize = 2 << 20;

/// Every response: `X-Content-Type-Options: nosniff` (a browser never guesses a type), and a
/// body that was too large answered in the API's JSON error shape.
async fn harden(r: Response) -> Response {
    let mut r = if r.status() == StatusCode::PAYLOAD_TOO_LARGE
        && !r
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is too large: the API reads at most {} MiB",
                MAX_BODY >> 20
            ),
        )
        .into_response()
    } else {
        r
    };
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Who is calling: the admin token (`admin`), or a user's personal token
/// (`users.api_token_sha256`). Operators (`users.operator`) may do what the admin may.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub operator: bool,
}

/// What a user's own (non-operator) token may do: see, hand off and accept their sessions.
fn user_may(method: &axum::http::Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/sessions") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    matches!(
        (method.as_str(), parts.as_slice()),
        ("GET", []) | ("GET", [_]) | ("POST", [_, "handoff" | "accept" | "decline"])
    )
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The one answer to a request without a valid token, whatever is wrong with it.
const BAD_TOKEN: &str =
    "missing or invalid bearer token (Authorization: Bearer <admin token or your API token>)";

async fn require_token(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let ip = crate::http::peer(&req).ip();
    let refuse = || ApiError(StatusCode::UNAUTHORIZED, BAD_TOKEN.into()).into_response();
    // A source that keeps guessing tokens is refused without a check, like a wrong password.
    if !st.gw.api_throttle.allow("", ip) {
        return refuse();
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let digest: Option<[u8; 32]> = presented.map(|t| Sha256::digest(t.trim().as_bytes()).into());
    let caller = match digest {
        Some(d) if same(&d, &st.token_hash) => Some(Caller {
            name: "admin".into(),
            operator: true,
        }),
        Some(d) => {
            let cfg = st.gw.cfg();
            cfg.users
                .values()
                .filter(|u| u.api_token.is_some_and(|t| same(&t, &d)))
                .last()
                .map(|u| Caller {
                    name: u.name.clone(),
                    operator: u.operator,
                })
        }
        None => None,
    };
    let Some(caller) = caller else {
        // Only a wrong token counts as a failure: a request without one is a client that has not
        // been configured yet, not a guess.
        if presented.is_some() {
            let events = st.gw.api_throttle.record("", ip, false);
            st.gw.audit_throttle("api", events);
        } else {
            st.gw.api_throttle.abandon("", ip);
        }
        return refuse();
    };
    st.gw.api_throttle.record("", ip, true);
    if !caller.operator && !user_may(req.method(), req.uri().path()) {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{}'s token may list, hand off and accept their own sessions only; this needs an \
                 operator (users.operator = true) or the admin token",
                caller.name
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

async fn healthz(State(st): State<ApiState>) -> Json<api::Health> {
    Json(api::Health {
        status: "ok".into(),
        gateway: st.gw.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        active_sessions: st.gw.registry.live_count(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    actor: Option<String>,
    target: Option<String>,
    protocol: Option<String>,
    state: Option<String>,
    idle_gt: Option<String>,
    target_tag: Option<String>,
    limit: Option<u32>,
    /// Continue after this page (`next_cursor` of the last answer).
    cursor: Option<String>,
    /// Only sessions that have not ended.
    live: Option<bool>,
    /// Only sessions being shadowed now.
    shadowed: Option<bool>,
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

fn parse_duration_secs(s: &str) -> Result<u64, ApiError> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    humantime::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| {
            bad(format!(
                "idle_gt '{s}' is not a duration like 90s, 5m or 2h: {e}"
            ))
        })
}

async fn list_sessions(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::SessionList>, ApiError> {
    let Query(p) = q.map_err(|e| bad(format!("bad query: {}", e.body_text())))?;
    if let Some(s) = &p.state {
        if api::SessionState::parse(s).is_none() {
            return Err(bad(format!("unknown state '{s}'")));
        }
    }
    let idle_gt_secs = p.idle_gt.as_deref().map(parse_duration_secs).transpose()?;
    let shadowed = p.shadowed.unwrap_or(false);
    // A user's own token sees their sessions (the store filters them, so pages and counts are
    // theirs alone) and those offered to them (added to the first page).
    let own = (!caller.operator).then(|| caller.name.clone());
    if let (Some(me), Some(a)) = (&own, &p.actor) {
        if a != me {
            return Ok(Json(api::SessionList {
                sessions: Vec::new(),
                more: 0,
                next_cursor: None,
            }));
        }
    }
    let first_page = p.cursor.is_none();
    let filter = Filter {
        query: SessionQuery {
            actor: own.clone().or(p.actor),
            target: p.target,
            protocol: p.protocol,
            state: p.state,
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
        .list(&st.gw.store, &filter)
        .map_err(internal)?;
    if let (Some(me), true) = (&own, first_page) {
        for mut r in st.gw.registry.offered_to(me) {
            if !page.rows.iter().any(|x| x.id == r.id) {
                r.observers.retain(|o| o.banner != "covert");
                page.rows.insert(0, r);
            }
        }
    }
    Ok(Json(api::SessionList {
        sessions: page.rows.iter().map(to_api).collect(),
        more: page.more,
        next_cursor: page.next.map(|(ms, id)| format!("{ms}-{id}")),
    }))
}

/// A session with its recording summary (read from the seal, once sealed).
pub(crate) fn session_json(gw: &Gateway, r: &crate::store::SessionRecord) -> api::Session {
    let mut s = to_api(r);
    s.recording = gw.recordings.seal(&r.id).map(|seal| api::RecordingSummary {
        status: seal.status.as_str().into(),
        chunks: seal.chunks,
        events: seal.events,
        raw_bytes: seal.raw_bytes,
        final_sha256: seal.final_sha256,
    });
    s
}

async fn get_session(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::Session>, ApiError> {
    let r = st.gw.registry.record(&st.gw.store, &id)?;
    let offered = r.handoff.as_ref().is_some_and(|h| h.to == caller.name);
    if !caller.operator && r.actor != caller.name && !offered {
        return Err(RegistryError::NotFound(id).into());
    }
    let mut r = r;
    if !caller.operator {
        // A covert observer is not shown to the people being watched.
        r.observers.retain(|o| o.banner != "covert");
    }
    Ok(Json(session_json(&st.gw, &r)))
}

pub(crate) fn parse_body<T: for<'de> Deserialize<'de> + Default>(
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))
    })
}

fn require_reason(reason: Option<String>) -> Result<String, ApiError> {
    match api::text::reason(reason.as_deref()) {
        Some(r) => Ok(r),
        None => Err(bad(
            "a reason is required to terminate a session: send {\"reason\": \"...\"}",
        )),
    }
}

async fn terminate(
    State(st): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<api::Session>, ApiError> {
    let req: api::TerminateRequest = parse_body(&body)?;
    let reason = require_reason(req.reason)?;
    let by = caller.name.as_str();
    // 404/409 before auditing an action that cannot happen.
    let current = st.gw.registry.record(&st.gw.store, &id)?;
    if api::SessionState::parse(&current.state).is_some_and(|s| s.is_terminal()) {
        return Err(RegistryError::Conflict(id, current.state).into());
    }
    st.gw.audit(
        "session.terminated",
        Some(by),
        Some(&id),
        json!({"by": by, "reason": reason, "actor": current.actor, "target": current.target}),
    );
    let r = st
        .gw
        .registry
        .terminate(&st.gw.store, &id, by, &reason)
        .await?;
    Ok(Json(session_json(&st.gw, &r)))
}

async fn bulk_terminate(
    State(st): State<ApiState>,
    body: Bytes,
) -> Result<Json<api::TerminateResult>, ApiError> {
    let req: api::BulkTerminateRequest = parse_body(&body)?;
    let reason = require_reason(req.reason.clone())?;
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
            protocol: req.protocol.clone(),
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
        .list(&st.gw.store, &filter)
        .map_err(internal)?
        .rows
        .into_iter()
        .filter(|r| !api::SessionState::parse(&r.state).is_some_and(|s| s.is_terminal()))
        .map(|r| r.id)
        .collect();
    let by = "admin";
    // Terminate concurrently: each waits for its relay to confirm.
    let handles: Vec<_> = live
        .into_iter()
        .map(|id| {
            st.gw.audit(
                "session.terminated",
                Some(by),
                Some(&id),
                json!({"by": by, "reason": reason, "bulk": true}),
            );
            let gw = st.gw.clone();
            let reason = reason.clone();
            tokio::spawn(async move { gw.registry.terminate(&gw.store, &id, by, &reason).await })
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    kind: Option<String>,
    session: Option<String>,
    limit: Option<u32>,
    /// Only events older than this sequence number (the next page back).
    before: Option<i64>,
}

async fn audit(
    State(st): State<ApiState>,
    q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::AuditList>, ApiError> {
    let Query(p) = q.map_err(|e| bad(format!("bad query: {}", e.body_text())))?;
    let (rows, older) = st
        .gw
        .store
        .audit_list(
            p.kind.as_deref(),
            p.session.as_deref(),
            p.before,
            p.limit.unwrap_or(1000).clamp(1, 100_000),
        )
        .map_err(internal)?;
    let before = (older > 0).then(|| rows.first().map(|r| r.seq)).flatten();
    let gw = st.gw.clone();
    let report = tokio::task::spawn_blocking(move || gw.audit_report())
        .await
        .map_err(internal)?
        .map_err(internal)?;
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
async fn audit_export(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    use wardengate_recorder::audit::ExportLine;
    let gw = st.gw.clone();
    let body = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let events = gw.store.audit_all()?;
        let mut checkpoints = gw.checkpoints_all()?.into_iter().peekable();
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
async fn audit_verify(
    State(st): State<ApiState>,
) -> Result<Json<wardengate_recorder::audit::AuditReport>, ApiError> {
    let gw = st.gw.clone();
    let report = tokio::task::spawn_blocking(move || gw.audit_report())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(Json(report))
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

async fn recording_pubkey(State(st): State<ApiState>) -> Json<api::PublicKey> {
    Json(api::PublicKey {
        public_key: wardengate_recorder::public_key_hex(&st.gw.recordings.public_key()),
    })
}

/// Session ids are the recording directory names; refuse anything that could leave the directory.
pub(crate) fn recording_dir(gw: &Gateway, id: &str) -> Result<std::path::PathBuf, ApiError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad(format!("'{id}' is not a recording id")));
    }
    let dir = gw.recordings.path(id);
    if !dir.is_dir() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no recording {id}"),
        ));
    }
    Ok(dir)
}

fn recording_json(gw: &Gateway, id: &str, verify: bool) -> api::Recording {
    let session = gw
        .registry
        .record(&gw.store, id)
        .ok()
        .map(|r| session_json(gw, &r));
    let seal = gw
        .recordings
        .seal(id)
        .and_then(|s| serde_json::to_value(s).ok());
    let (verified, problems) = if verify {
        match wardengate_recorder::verify(
            &gw.recordings.path(id),
            Some(&gw.recordings.public_key()),
        ) {
            Ok(r) => (
                Some(r.ok()),
                r.problems.iter().map(|p| p.to_string()).collect(),
            ),
            Err(e) => (Some(false), vec![e.to_string()]),
        }
    } else {
        (None, Vec::new())
    };
    api::Recording {
        id: id.to_string(),
        session,
        seal,
        verified,
        problems,
    }
}

async fn list_recordings(
    State(st): State<ApiState>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::RecordingList>, ApiError> {
    let Query(p) = q.map_err(|e| bad(format!("bad query: {}", e.body_text())))?;
    let ids = st.gw.recordings.list();
    let limit = p.limit.unwrap_or(500).clamp(1, 10_000) as usize;
    // The cursor is the id the previous page ended with (the listing is newest first).
    let start = match &p.cursor {
        Some(c) => {
            ids.iter()
                .position(|id| id == c)
                .ok_or_else(|| bad(format!("cursor '{c}' is not a recording of this gateway")))?
                + 1
        }
        None => 0,
    };
    let filtered = p.actor.is_some() || p.target.is_some() || p.protocol.is_some();
    // Whether a recording passes the filters: its session row (one indexed lookup), never the
    // recording itself, so counting what is left of a long list stays cheap.
    let keep = |id: &str| -> bool {
        if !filtered {
            return true;
        }
        match st.gw.store.session_get(id).ok().flatten() {
            Some(s) => {
                p.actor.as_ref().is_none_or(|a| &s.actor == a)
                    && p.target.as_ref().is_none_or(|t| &s.target == t)
                    && p.protocol.as_ref().is_none_or(|pr| &s.protocol == pr)
            }
            None => false,
        }
    };
    let mut out = Vec::new();
    let mut last = None;
    let mut more = 0u64;
    for id in &ids[start.min(ids.len())..] {
        if !keep(id) {
            continue;
        }
        if out.len() < limit {
            last = Some(id.clone());
            out.push(recording_json(&st.gw, id, false));
        } else {
            more += 1;
        }
    }
    Ok(Json(api::RecordingList {
        recordings: out,
        more,
        next_cursor: (more > 0).then_some(last).flatten(),
    }))
}

async fn get_recording(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::Recording>, ApiError> {
    recording_dir(&st.gw, &id)?;
    st.gw.audit(
        "recording.accessed",
        Some(&caller.name),
        Some(&id),
        json!({"by": caller.name, "what": "show"}),
    );
    Ok(Json(recording_json(&st.gw, &id, true)))
}

/// The recording's events as JSON lines (what players and exporters consume).
async fn recording_events(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let dir = recording_dir(&st.gw, &id)?;
    st.gw.audit(
        "recording.accessed",
        Some(&caller.name),
        Some(&id),
        json!({"by": caller.name, "what": "events"}),
    );
    let rec = tokio::task::spawn_blocking(move || wardengate_recorder::read(&dir))
        .await
        .map_err(internal)?
        .map_err(|e| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("recording {id} cannot be read: {e}"),
            )
        })?;
    let mut body = String::new();
    for ev in &rec.events {
        body.push_str(&wardengate_recorder::event_json(ev).to_string());
        body.push('\n');
    }
    let mut r = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    // The seal rides along, so a player or an exporter needs one request (one audit event).
    if let Some(seal) = rec
        .seal
        .as_ref()
        .and_then(|s| serde_json::to_string(s).ok())
        .and_then(|s| axum::http::HeaderValue::from_str(&s).ok())
    {
        r.headers_mut().insert("x-wardengate-seal", seal);
    }
    Ok(r)
}
