//! Recordings: the list, one with its verification, its events, and the key that signs them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;
use wardengate_api as api;

use super::common::{bad, internal, query, ApiError, Caller, RecordingId};
use super::sessions::{session_json, ListParams};
use super::state::ApiState;
use crate::broker::Gateway;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/recordings", get(list_recordings))
        .route("/api/v1/recordings/pubkey", get(recording_pubkey))
        .route("/api/v1/recordings/{id}", get(get_recording))
        .route("/api/v1/recordings/{id}/events", get(recording_events))
}

/// The recording public key (hex), for offline verification.
#[utoipa::path(
    get, path = "/api/v1/recordings/pubkey", tag = "recordings",
    responses((status = 200, body = api::PublicKey))
)]
async fn recording_pubkey(State(st): State<ApiState>) -> Json<api::PublicKey> {
    Json(api::PublicKey {
        public_key: wardengate_recorder::public_key_hex(&st.gw.recordings.public_key()),
    })
}

/// Read a whole recording off the runtime's threads; a recording that cannot be read is a 422
/// that says why.
pub(crate) async fn read_recording(
    copy: crate::recording::RecordingCopy,
    id: &str,
) -> Result<wardengate_recorder::Recording, ApiError> {
    tokio::task::spawn_blocking(move || wardengate_recorder::read(&copy.path))
        .await
        .map_err(internal)?
        .map_err(|e| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("recording {id} cannot be read: {e}"),
            )
        })
}

/// Session ids are the recording names; anything that could leave the directory (or the
/// bucket prefix) is refused.
fn valid_id(id: &str) -> Result<(), ApiError> {
    if wardengate_recorder::bucket::valid_session(id) {
        return Ok(());
    }
    Err(bad(format!(
        "'{}' is not a recording id",
        wardengate_api::text::inert(id, 80)
    )))
}

/// The object store could not be read: the caller is told that much; its error (endpoint, its
/// answer) goes to the log.
fn unavailable(id: &str, e: anyhow::Error) -> ApiError {
    tracing::error!(recording = %id, "{e:#}");
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "recording {id} is in the object store, which cannot be read now; try again in a \
             moment (the gateway's log says why)"
        ),
    )
}

fn not_found(id: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no recording {id}"))
}

/// The recording to read: here, or fetched from the object store.
pub(crate) async fn recording_dir(
    gw: &Gateway,
    id: &str,
) -> Result<crate::recording::RecordingCopy, ApiError> {
    valid_id(id)?;
    gw.recordings
        .open_copy(id)
        .await
        .map_err(|e| unavailable(id, e))?
        .ok_or_else(|| not_found(id))
}

/// That the recording exists, here or in the object store, without reading it.
pub(crate) async fn recording_exists(gw: &Gateway, id: &str) -> Result<(), ApiError> {
    valid_id(id)?;
    match gw.recordings.exists(id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(not_found(id)),
        Err(e) => Err(unavailable(id, e)),
    }
}

async fn recording_json(
    gw: &Gateway,
    id: &str,
    verify: Option<crate::recording::RecordingCopy>,
) -> api::Recording {
    let session = gw
        .registry
        .record(&*gw.store, id)
        .await
        .ok()
        .map(|r| session_json(gw, &r));
    let seal = gw
        .recordings
        .seal_anywhere(id)
        .await
        .and_then(|s| serde_json::to_value(s).ok());
    let (verified, problems) = if let Some(copy) = verify {
        let key = gw.recordings.public_key();
        let report = tokio::task::spawn_blocking(move || {
            wardengate_recorder::verify(&copy.path, Some(&key))
        })
        .await
        .unwrap_or_else(|e| Err(wardengate_recorder::Error::Format(e.to_string())));
        match report {
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

/// List recordings, newest first.
#[utoipa::path(
    get, path = "/api/v1/recordings", tag = "recordings",
    params(
        ("actor" = Option<String>, Query), ("target" = Option<String>, Query),
        ("protocol" = Option<String>, Query, description = "ssh, postgres or rdp"),
        ("limit" = Option<u32>, Query, description = "at most this many (default 500)"),
        ("cursor" = Option<String>, Query, description = "continue after this page (`next_cursor`)"),
    ),
    responses((status = 200, body = api::RecordingList), (status = 400, description = "a filter or cursor that does not parse", body = api::ApiError))
)]
async fn list_recordings(
    State(st): State<ApiState>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<api::RecordingList>, ApiError> {
    let p = query(q)?;
    let ids = st.gw.recordings.list(&*st.gw.store).await;
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
    let keep = |s: Option<crate::store::SessionRecord>| -> bool {
        match s {
            Some(s) => {
                p.actor.as_ref().is_none_or(|a| &s.actor == a)
                    && p.target.as_ref().is_none_or(|t| &s.target == t)
                    && p.protocol
                        .as_ref()
                        .is_none_or(|pr| s.protocol.as_str() == pr)
            }
            None => false,
        }
    };
    let mut out = Vec::new();
    let mut last = None;
    let mut more = 0u64;
    for id in &ids[start.min(ids.len())..] {
        if filtered && !keep(st.gw.store.session_get(id).await.ok().flatten()) {
            continue;
        }
        if out.len() < limit {
            last = Some(id.clone());
            out.push(recording_json(&st.gw, id, None).await);
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

/// A recording's seal and its verification with this gateway's key.
#[utoipa::path(
    get, path = "/api/v1/recordings/{id}", tag = "recordings",
    params(RecordingId),
    responses((status = 200, body = api::Recording), (status = 404, description = "no such recording", body = api::ApiError))
)]
async fn get_recording(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::Recording>, ApiError> {
    let copy = recording_dir(&st.gw, &id).await?;
    st.gw.audit(
        "recording.accessed",
        Some(&caller.name),
        Some(&id),
        json!({"by": caller.name, "what": "show"}),
    );
    Ok(Json(recording_json(&st.gw, &id, Some(copy)).await))
}

/// The recording's events as JSON lines (what players and exporters consume).
#[utoipa::path(
    get, path = "/api/v1/recordings/{id}/events", tag = "recordings",
    params(RecordingId),
    responses((status = 200, description = "one event a line", content_type = "application/x-ndjson", body = String), (status = 404, description = "no such recording", body = api::ApiError), (status = 422, description = "the recording cannot be read", body = api::ApiError))
)]
async fn recording_events(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let dir = recording_dir(&st.gw, &id).await?;
    st.gw.audit(
        "recording.accessed",
        Some(&caller.name),
        Some(&id),
        json!({"by": caller.name, "what": "events"}),
    );
    let rec = read_recording(dir, &id).await?;
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
