//! The internal endpoints other gateways of the cluster call (`cluster/forward.rs` sends them).
//! Outside the token-authenticated API: [`require_peer`] checks each request's cluster signature
//! and answers every failure with the same 403. A source that keeps failing is throttled like
//! one guessing API tokens (the same per-source accounting), so the reasons that reach the audit
//! (`cluster.peer_refused`) are a few per burst, and the bursts are summarised.

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::json;
use wardengate_api::text::{inert, MAX_NAME};

use super::common::parse_body;
use super::{ApiError, ApiState};
use crate::cluster::forward::{PeerAct, PeerShadow, PeerTerminate};
use crate::cluster::sign::PEER;
use crate::identity::approvals_cluster::{PeerClaim, PeerDecision};

/// The one answer to a request no peer signed, whatever is wrong with it.
const REFUSED: &str = "not a signed request from a gateway of this cluster";
/// Largest body a peer sends (a terminate request is a few hundred bytes).
const MAX_PEER_BODY: usize = 64 << 10;

/// The gateway that signed the request (set by [`require_peer`]).
#[derive(Clone)]
struct Peer(String);

/// The internal endpoints peers call, each behind [`require_peer`].
pub fn routes(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/internal/v1/sessions/{id}/terminate", post(peer_terminate))
        .route("/internal/v1/sessions/{id}/shadow", post(peer_shadow))
        .route("/internal/v1/sessions/{id}", post(peer_session))
        .route("/internal/v1/sessions/{id}/{action}", post(peer_act))
        .route("/internal/v1/sessions/{id}/cancel", post(peer_cancel))
        .route(
            "/internal/v1/access-sessions/{id}/stop",
            post(peer_access_stop),
        )
        .route("/internal/v1/approvals/{id}/decide", post(peer_decide))
        .route("/internal/v1/approvals/{id}/claim", post(peer_claim))
        .route_layer(middleware::from_fn_with_state(state, require_peer))
}

/// Admit a request only when a gateway of this cluster signed it (method, path, time, nonce,
/// body); the signer's name goes to the handler.
async fn require_peer(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let ip = crate::http::peer(&req).ip();
    let refuse = || ApiError(StatusCode::FORBIDDEN, REFUSED.into()).into_response();
    if !st.gw.api_throttle.allow("", ip) {
        return refuse();
    }
    let (parts, body) = req.into_parts();
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let verdict = match axum::body::to_bytes(body, MAX_PEER_BODY).await {
        Err(_) => Err("body too large or cut short"),
        Ok(body) => match &st.gw.peers.key {
            None => Err("this gateway has no cluster key"),
            Some(k) => k
                .verify(
                    &st.gw.peers.seen,
                    parts.method.as_str(),
                    parts.uri.path(),
                    header,
                    &body,
                )
                .map(|peer| (peer, body)),
        },
    };
    match verdict {
        Ok((peer, body)) => {
            st.gw.api_throttle.record("", ip, true);
            let mut req = Request::from_parts(parts, Body::from(body));
            req.extensions_mut().insert(Peer(peer));
            next.run(req).await
        }
        Err(why) => {
            st.gw.audit(
                "cluster.peer_refused",
                None,
                None,
                json!({"source": ip.to_string(), "path": inert(parts.uri.path(), 200),
                       "peer": inert(&header(PEER).unwrap_or_default(), MAX_NAME), "why": why}),
            );
            let events = st.gw.api_throttle.record("", ip, false);
            st.gw.audit_throttle("api", events);
            refuse()
        }
    }
}

async fn peer_terminate(
    State(st): State<ApiState>,
    Extension(Peer(peer)): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PeerTerminate = parse_body(&body)?;
    if req.evict {
        // The actor opened a newer session on the peer: this one makes room.
        tracing::info!(session = %id, peer = %peer, "evicting a session for a peer");
        let message = inert(&req.reason, 500).into_owned();
        let delivered = st.gw.registry.end(&id, "concurrency", message);
        st.gw.audit(
            "session.evicted",
            None,
            Some(&id),
            json!({"reason": "concurrency", "by_gateway": peer, "delivered": delivered}),
        );
        return Ok(Json(json!({"id": id, "delivered": delivered})).into_response());
    }
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
    let r = r?;
    Ok(Json(json!({"id": r.id, "state": r.state.as_str()})).into_response())
}

/// A peer's caller cancels a TCP session this gateway runs (the asking gateway checked that they
/// may): the same audit, end and answer as here.
async fn peer_cancel(
    State(st): State<ApiState>,
    Extension(Peer(peer)): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<wardengate_api::Session>, ApiError> {
    let req: PeerTerminate = parse_body(&body)?;
    tracing::info!(session = %id, peer = %peer, by = %req.by, "canceling a session for a peer");
    let by = inert(&req.by, MAX_NAME).into_owned();
    let reason = inert(&req.reason, 500).into_owned();
    super::tcp::cancel_here(&st, &id, &by, &reason).await
}

/// A peer's caller stops an access session whose rules this gateway applied (the asking
/// gateway checked that they may): the same stop, audit and answer as here.
async fn peer_access_stop(
    State(st): State<ApiState>,
    Extension(Peer(peer)): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let req: PeerTerminate = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    tracing::info!(access = %id, peer = %peer, by = %req.by, "stopping an access session for a peer");
    let by = inert(&req.by, MAX_NAME).into_owned();
    let reason = inert(&req.reason, 500).into_owned();
    let gw = st.gw.clone();
    match tokio::spawn(async move { gw.access_stop(&id, &by, &reason).await }).await {
        Ok(Ok(s)) => Json(s).into_response(),
        Ok(Err(r)) => super::access::refused(r),
        Err(e) => {
            tracing::error!("an access stop for a peer failed: {e}");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()).into_response()
        }
    }
}

/// A peer's operator watches a session this gateway runs: the same stream, attach and audit as
/// `GET /api/v1/sessions/{id}/shadow` here (the asking gateway checked the permission).
async fn peer_shadow(
    State(st): State<ApiState>,
    Extension(Peer(peer)): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PeerShadow = parse_body(&body)?;
    tracing::info!(session = %id, peer = %peer, observer = %req.observer, "a peer's operator watches a session");
    let observer = super::Caller::all(&inert(&req.observer, MAX_NAME));
    super::live::shadow_stream(&st, &observer, id).await
}

/// A handoff action (offer, accept, decline) by a peer's caller, with the permissions the peer
/// gives them: done here as if they had asked here.
async fn peer_act(
    State(st): State<ApiState>,
    Extension(Peer(peer)): Extension<Peer>,
    UrlPath((id, action)): UrlPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PeerAct = parse_body(&body)?;
    let name = inert(&req.caller, MAX_NAME).into_owned();
    tracing::info!(session = %id, peer = %peer, caller = %name, action = %inert(&action, 40), "a handoff action from a peer");
    let can = req
        .can
        .iter()
        .filter_map(|n| crate::config::Perm::parse(n))
        .fold(crate::config::Perms::default(), |c, p| c.with(p));
    let caller = super::Caller { name, can };
    super::handoff::for_peer(st, id, &action, caller, Bytes::from(req.body)).await
}

/// A live session this gateway runs, as `GET /api/v1/sessions/{id}` shows it here (the asking
/// gateway applies the caller's permissions).
async fn peer_session(
    State(st): State<ApiState>,
    Extension(Peer(_)): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<wardengate_api::Session>, ApiError> {
    let r = st.gw.registry.record(&*st.gw.store, &id).await?;
    Ok(Json(super::sessions::session_json(&st.gw, &r)))
}

/// A decision (or the requester's withdrawal) made on a peer about a request this gateway holds:
/// the same checks (approver, not one's own, once) as here, by the person named.
async fn peer_decide(
    State(st): State<ApiState>,
    Extension(Peer(peer)): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<wardengate_api::ApprovalRequest>, ApiError> {
    let d: PeerDecision = parse_body(&body)?;
    tracing::info!(request = %id, peer = %peer, by = %d.by, "a decision made on a peer");
    let done = match d.approve {
        Some(yes) => st.gw.approval_decide(&id, &d.by, yes, &d.reason),
        None => st.gw.approval_withdraw(&id, &d.by),
    };
    Ok(Json(done?))
}

/// A peer admits a login on an approval this gateway holds: spent here, once.
async fn peer_claim(
    State(st): State<ApiState>,
    Extension(Peer(peer)): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<wardengate_api::ApprovalRequest>, ApiError> {
    let c: PeerClaim = parse_body(&body)?;
    tracing::info!(request = %id, peer = %peer, session = %c.session, "a peer spends an approval");
    Ok(Json(st.gw.approval_claim(&id, &c.session)?))
}
