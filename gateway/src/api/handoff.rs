//! Ownership handoff of a live SSH session: `handoff` (offer), `accept`, `decline`. On a session
//! another gateway of the cluster runs, each is sent to that gateway (signed, with the caller's
//! name and permissions) and done there: the offer, the session and its terminal live there, and
//! the new owner's `ssh USER:sess_…` goes to that gateway.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::json;
use wardengate_api as api;
use wardengate_policy::ShadowMode;
use wardengate_protocols::session::{now_ms, Control};

use super::common::{bad, internal, parse_body, ApiError, Caller, SessionId};
use super::live::{conflict, forbidden};
use super::sessions::session_json;
use super::state::ApiState;
use crate::config::Perm;
use crate::registry::{Pending, RegistryError};
use crate::util::rfc3339;

/// What a user's own token may call too: hand off their session, accept or decline one offered
/// to them (the handlers check whose session it is).
pub fn user_routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/sessions/{id}/handoff", post(handoff))
        .route("/api/v1/sessions/{id}/accept", post(accept))
        .route("/api/v1/sessions/{id}/decline", post(decline))
}

/// A handoff action on a session another gateway runs: sent there, its answer relayed.
async fn elsewhere(
    st: &ApiState,
    id: &str,
    action: &str,
    caller: &Caller,
    body: &[u8],
) -> Result<Option<Response>, ApiError> {
    let Some(owner) = st.gw.runs_elsewhere(id).await.map_err(internal)? else {
        return Ok(None);
    };
    let req = crate::cluster::forward::PeerAct {
        caller: caller.name.clone(),
        can: caller.can.names().into_iter().map(String::from).collect(),
        body: String::from_utf8_lossy(body).into_owned(),
    };
    let path = format!("/internal/v1/sessions/{id}/{action}");
    let body = serde_json::to_vec(&req).map_err(internal)?;
    // A short answer, within the peer client's deadline (not a stream).
    let (status, answer) = st
        .gw
        .to_peer(&owner, &path, body)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("{e:#}")))?;
    Response::builder()
        .status(status)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(answer))
        .map(Some)
        .map_err(internal)
}

/// The same action, done here for a peer's caller.
pub(super) async fn for_peer(
    st: ApiState,
    id: String,
    action: &str,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    match action {
        "handoff" => handoff_here(st, caller, id, body).await,
        "accept" => accept_here(st, caller, id).await,
        "decline" => decline_here(st, caller, id, body).await,
        other => Err(bad(format!("'{other}' is not a handoff action"))),
    }
}

/// Offer a live SSH session with a terminal to another user.
#[utoipa::path(
    post, operation_id = "offer_handoff", path = "/api/v1/sessions/{id}/handoff", tag = "live",
    params(SessionId), request_body = api::HandoffRequest,
    responses((status = 202, description = "the pending offer", body = api::Handoff), (status = 400, description = "to or reason missing", body = api::ApiError), (status = 403, description = "the new owner's policy does not permit the target and account", body = api::ApiError), (status = 404, description = "unknown id", body = api::ApiError), (status = 409, description = "not handable (over, no terminal, already offered)", body = api::ApiError))
)]
pub(super) async fn handoff(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(r) = elsewhere(&st, &id, "handoff", &caller, &body).await? {
        return Ok(r);
    }
    handoff_here(st, caller, id, body).await
}

async fn handoff_here(
    st: ApiState,
    caller: Caller,
    id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: api::HandoffRequest = parse_body(&body)?;
    let to = api::text::inert(req.to.trim(), api::text::MAX_NAME).into_owned();
    if to.is_empty() {
        return Err(bad(
            "say who takes the session over: send {\"to\": \"dan\", \"reason\": \"...\"}",
        ));
    }
    let reason = match api::text::reason(req.reason.as_deref()) {
        Some(r) => r,
        None => return Err(bad(
            "a reason is required to hand off a session: send {\"to\": ..., \"reason\": \"...\"}",
        )),
    };
    let rec = st.gw.registry.record(&*st.gw.store, &id).await?;
    if !caller.may(Perm::SessionHandoff) && rec.actor != caller.name {
        return Err(RegistryError::NotFound(id).into());
    }
    if rec.state.is_terminal() {
        return Err(RegistryError::Conflict(id, rec.state.to_string()).into());
    }
    if rec.protocol != api::Protocol::Ssh || rec.pty_term.is_none() {
        return Err(conflict(format!(
            "session {id} has no terminal to hand over: handoff is for interactive SSH sessions \
             (a {} session without a pty cannot change hands; the new owner opens their own)",
            rec.protocol
        )));
    }
    if to == rec.actor {
        return Err(bad(format!("session {id} already belongs to {to}")));
    }
    let current = st
        .gw
        .registry
        .admitted(&id)
        .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
    // Checked now so a handoff that could never be accepted is refused at once.
    if let Err((_, why)) = st.gw.handoff_admission(&rec, &to, &current, None) {
        return Err(forbidden(format!(
            "cannot hand session {id} to {to}: {why}"
        )));
    }
    let window = st.gw.cfg().config.api.handoff_window;
    let now = now_ms();
    let pending = Pending {
        serial: now,
        to: to.clone(),
        by: caller.name.clone(),
        reason: reason.clone(),
        requested_ms: now,
        expires_ms: now + window.as_millis() as u64,
    };
    st.gw
        .registry
        .offer(&*st.gw.store, &id, pending.clone())
        .await?;
    st.gw.audit(
        "session.handoff.requested",
        Some(&caller.name),
        Some(&id),
        json!({"from": rec.actor, "to": to, "by": caller.name, "reason": reason,
               "expires_at": rfc3339(pending.expires_ms)}),
    );
    let note = format!(
        "[wardengate] {} offered this session to {to} ({reason}); it changes hands if {to} \
         accepts before {}",
        caller.name,
        rfc3339(pending.expires_ms)
    );
    st.gw.registry.control(&id, Control::Notice(note)).await;
    // Unanswered within the window: nothing changes, and the log says so.
    let (gw, sid, serial) = (st.gw.clone(), id.clone(), pending.serial);
    tokio::spawn(async move {
        tokio::time::sleep(window).await;
        if let Some(p) = gw.registry.take_offer(&sid, Some(serial)) {
            gw.audit(
                "session.handoff.expired",
                Some(&p.to),
                Some(&sid),
                json!({"to": p.to, "by": p.by, "reason": p.reason}),
            );
            let text = format!(
                "[wardengate] the handoff to {} expired; nothing changed",
                p.to
            );
            gw.registry.control(&sid, Control::Notice(text)).await;
        }
    });
    Ok((StatusCode::ACCEPTED, Json(pending.to_api())).into_response())
}

/// The offer of session `id` to `caller`, or why there is none.
async fn offer_for(st: &ApiState, id: &str, caller: &Caller) -> Result<Pending, ApiError> {
    let rec = st.gw.registry.record(&*st.gw.store, id).await?;
    match st.gw.registry.offer_of(id) {
        Some(p) if p.to == caller.name => Ok(p),
        Some(_) | None if !caller.may(Perm::SessionHandoff) && rec.actor != caller.name => {
            Err(RegistryError::NotFound(id.into()).into())
        }
        _ => Err(conflict(format!(
            "session {id} is not being handed off to {}",
            caller.name
        ))),
    }
}

/// Accept a handoff offered to you: ownership moves under the stricter of the two policies.
#[utoipa::path(
    post, operation_id = "accept_handoff", path = "/api/v1/sessions/{id}/accept", tag = "live",
    params(SessionId),
    responses((status = 200, description = "the session, now yours", body = api::Session), (status = 404, description = "no offer to you", body = api::ApiError), (status = 409, description = "expired, or the session is over", body = api::ApiError))
)]
pub(super) async fn accept(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(r) = elsewhere(&st, &id, "accept", &caller, b"{}").await? {
        return Ok(r);
    }
    accept_here(st, caller, id).await
}

async fn accept_here(st: ApiState, caller: Caller, id: String) -> Result<Response, ApiError> {
    let offer = offer_for(&st, &id, &caller).await?;
    let Some(p) = st.gw.registry.take_offer(&id, Some(offer.serial)) else {
        return Err(conflict(format!(
            "the handoff of session {id} was answered or expired meanwhile"
        )));
    };
    let rec = st.gw.registry.record(&*st.gw.store, &id).await?;
    // The cluster counts the session under its new owner first (their limits may be full on
    // other gateways); if the handoff then fails here, the count goes back to the old owner.
    st.gw
        .handoff_cluster_lease(&rec, &caller.name)
        .await
        .map_err(|why| refusal(&st, &caller, &rec, "limit", why))?;
    let done = accept_counted(&st, &caller, &id, &rec, p).await;
    if done.is_err() {
        if let Err(e) = st.gw.handoff_cluster_lease_back(&rec).await {
            tracing::warn!(session = %id, "cannot count the session under {} again: {e}", rec.actor);
        }
    }
    done
}

/// Why `caller` cannot take session `rec` over (audited).
fn refusal(
    st: &ApiState,
    caller: &Caller,
    rec: &crate::store::SessionRecord,
    kind: &str,
    why: String,
) -> ApiError {
    st.gw.audit(
        "session.handoff.refused",
        Some(&caller.name),
        Some(&rec.id),
        json!({"from": rec.actor, "to": caller.name, "why": why, "kind": kind}),
    );
    forbidden(format!("cannot take session {} over: {why}", rec.id))
}

/// The rest of an accept, once the cluster counts the session under its new owner.
async fn accept_counted(
    st: &ApiState,
    caller: &Caller,
    id: &str,
    rec: &crate::store::SessionRecord,
    p: Pending,
) -> Result<Response, ApiError> {
    let id = id.to_string();
    let refuse = |kind: &str, why: String| refusal(st, caller, rec, kind, why);
    let current = st
        .gw
        .registry
        .admitted(&id)
        .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
    let checked = st
        .gw
        .registry
        .with_lease(&id, |l| {
            st.gw.handoff_admission(rec, &caller.name, &current, l)
        })
        .ok_or_else(|| {
            RegistryError::Conflict(id.clone(), api::SessionState::Closed.to_string())
        })?;
    let (merged, lease) = checked.map_err(|(kind, why)| refuse(kind, why))?;
    if merged.recording().records() && !st.gw.registry.recorded(&id) {
        return Err(refuse(
            "recording",
            format!(
                "policy '{}' requires recording, and this session is not recorded; open a new \
                 session instead",
                merged.policy()
            ),
        ));
    }
    let Some((lease, decision)) = lease else {
        return Err(refuse("internal", "the session holds no slot".into()));
    };
    let from = rec.actor.clone();
    let r = st
        .gw
        .registry
        .transfer(
            &*st.gw.store,
            &id,
            &caller.name,
            (merged.clone(), decision),
            lease,
        )
        .await?;
    st.gw.audit(
        "session.handoff.accepted",
        Some(&caller.name),
        Some(&id),
        json!({"from": from, "to": caller.name, "by": p.by, "reason": p.reason,
               "policy": merged.policy()}),
    );
    let window = st.gw.cfg().config.api.handoff_window;
    if merged.settings().shadow == ShadowMode::Blocked {
        // Whoever watched under the old policy stops now.
        if let Ok(w) = st.gw.registry.watch(&*st.gw.store, &id).await {
            w.hub.dismiss(&format!(
                "the session changed hands and its policy '{}' blocks shadowing",
                merged.policy()
            ));
        }
    }
    let delivered = st
        .gw
        .registry
        .control(
            &id,
            Control::Handoff {
                from,
                to: caller.name.clone(),
                reason: p.reason.clone(),
                admitted: merged,
                window,
            },
        )
        .await;
    if !delivered {
        return Err(conflict(format!(
            "session {id} ended before it could change hands"
        )));
    }
    // Answer once the session waits for the new owner, so their `ssh` finds it ready.
    // (Shorter than a peer's deadline for this answer, 10 s, when the accept came through one.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while !st.gw.registry.awaits_owner(&id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = st.gw.registry.record(&*st.gw.store, &id).await.unwrap_or(r);
    Ok(Json(session_json(&st.gw, &r)).into_response())
}

/// Decline a handoff offered to you (audited).
#[utoipa::path(
    post, operation_id = "decline_handoff", path = "/api/v1/sessions/{id}/decline", tag = "live",
    params(SessionId), request_body(content = Option<api::TerminateRequest>, description = "an optional reason"),
    responses((status = 200, description = "the declined offer", body = api::Handoff), (status = 404, description = "no offer to you", body = api::ApiError))
)]
pub(super) async fn decline(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(r) = elsewhere(&st, &id, "decline", &caller, &body).await? {
        return Ok(r);
    }
    decline_here(st, caller, id, body).await
}

async fn decline_here(
    st: ApiState,
    caller: Caller,
    id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: api::TerminateRequest = parse_body(&body)?;
    let offer = match st.gw.registry.offer_of(&id) {
        // The owner or an operator may withdraw an offer; the addressee may decline it.
        Some(p) if p.to == caller.name || caller.may(Perm::SessionHandoff) => p,
        Some(p) if st.gw.registry.record(&*st.gw.store, &id).await?.actor == caller.name => p,
        _ => offer_for(&st, &id, &caller).await?,
    };
    let Some(p) = st.gw.registry.take_offer(&id, Some(offer.serial)) else {
        return Err(conflict(format!(
            "the handoff of session {id} was answered or expired meanwhile"
        )));
    };
    let reason = api::text::reason(req.reason.as_deref()).unwrap_or_default();
    st.gw.audit(
        "session.handoff.declined",
        Some(&caller.name),
        Some(&id),
        json!({"to": p.to, "by": caller.name, "reason": reason}),
    );
    let why = if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    };
    let text = if caller.name == p.to {
        format!(
            "[wardengate] {} declined the handoff{why}; nothing changed",
            p.to
        )
    } else {
        format!(
            "[wardengate] {} withdrew the handoff to {}{why}; nothing changed",
            caller.name, p.to
        )
    };
    st.gw.registry.control(&id, Control::Notice(text)).await;
    Ok(Json(p.to_api()).into_response())
}
