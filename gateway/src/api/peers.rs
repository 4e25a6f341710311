//! The internal endpoints other gateways of the cluster call (`cluster/forward.rs` sends them).
//! Outside the token-authenticated API: each checks the request's cluster signature itself, and
//! answers every failure with the same 403 (the reason goes to the audit).

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::{ApiError, ApiState};
use crate::broker::Gateway;
use crate::cluster::forward::PeerTerminate;
use crate::cluster::sign::PEER;

/// The internal endpoints peers call. Outside the token-authenticated API: each checks the
/// request's signature itself.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/internal/v1/sessions/{id}/terminate", post(peer_terminate))
}

/// The calling peer's name, or the refusal (the same for every reason; the reason is audited).
fn check_peer(
    gw: &Gateway,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Box<Response>> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let why = match &gw.peers.key {
        None => Err("this gateway has no cluster key"),
        Some(k) => k.verify(&gw.peers.seen, "POST", uri.path(), header, body),
    };
    why.map_err(|why| {
        let peer = header(PEER).unwrap_or_default();
        gw.audit(
            "cluster.peer_refused",
            None,
            None,
            json!({"path": wardengate_api::text::inert(uri.path(), 200), "peer": wardengate_api::text::inert(&peer, wardengate_api::text::MAX_NAME), "why": why}),
        );
        Box::new(
            ApiError(
                StatusCode::FORBIDDEN,
                "not a signed request from a gateway of this cluster".into(),
            )
            .into_response(),
        )
    })
}

async fn peer_terminate(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = match check_peer(&st.gw, &uri, &headers, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let req: PeerTerminate = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError(
                StatusCode::BAD_REQUEST,
                format!("bad terminate request: {e}"),
            )
            .into_response()
        }
    };
    tracing::info!(session = %id, peer = %peer, by = %req.by, "terminating a session for a peer");
    let r = st
        .gw
        .registry
        .terminate(&*st.gw.store, &id, &req.by, &req.reason)
        .await;
    // The peer reads the session's end from the store as soon as this answers.
    if let Err(e) = st.gw.store.flush().await {
        tracing::warn!("cannot flush the store after a peer's terminate: {e:#}");
    }
    match r {
        Ok(r) => Json(json!({"id": r.id, "state": r.state.as_str()})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
