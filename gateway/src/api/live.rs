//! Live sessions in the API: shadowing (`GET /api/v1/sessions/{id}/shadow`, a stream of
//! newline-delimited JSON [`api::ShadowEvent`]s) and ownership handoff (`handoff`, `accept`,
//! `decline`).
//!
//! A shadow stream is read-only by construction: it is a response body, there is no way to send
//! the session anything through it. Attach and detach are audited (`session.shadow.attach`,
//! `session.shadow.detach`), marked in the recording, and shown to the session's owner in-band
//! when the policy says `shadow = "visible"`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use serde_json::json;
use wardengate_api as api;
use wardengate_policy::ShadowMode;
use wardengate_protocols::session::{now_ms, Control};
use wardengate_protocols::shadow::{elapsed_hms, Frame, Observer, ObserverInfo};

use super::common::{bad, internal, parse_body, ApiError, Caller, SessionId};
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

/// Operators only.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/sessions/{id}/shadow", get(shadow))
}

fn forbidden(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, msg.into())
}

fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::CONFLICT, msg.into())
}

fn plural(n: usize) -> String {
    format!("{n} observer{}", if n == 1 { "" } else { "s" })
}

/// Detaches the observer when the stream ends (the client left, or the session ended).
pub(crate) struct Watching {
    /// Taken (and dropped) first when the stream ends, so the count after it is right.
    observer: Option<Observer>,
    st: ApiState,
    session: String,
    owner: String,
    visible: bool,
    since_ms: u64,
    first: Option<Bytes>,
    done: bool,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let Some(observer) = self.observer.take() else {
            return;
        };
        let name = observer.info().name.clone();
        let resyncs = observer.resyncs();
        drop(observer);
        let secs = now_ms().saturating_sub(self.since_ms) / 1000;
        self.st.gw.audit(
            "session.shadow.detach",
            Some(&name),
            Some(&self.session),
            json!({"observer": name, "owner": self.owner, "seconds": secs, "resyncs": resyncs}),
        );
        let (st, id, visible) = (self.st.clone(), self.session.clone(), self.visible);
        // The count is read after this observer's slot is gone.
        let hub_count = st.gw.registry.get(&id).map(|live| live.hub.clone());
        tokio::spawn(async move {
            let left = hub_count.map_or(0, |h| h.count());
            let banner = visible.then(|| {
                format!(
                    "[wardengate] {name} stopped watching this session ({} now)",
                    plural(left)
                )
            });
            st.gw
                .registry
                .control(
                    &id,
                    Control::Shadow {
                        marker: "shadow.detach",
                        detail: format!("{name} after {secs}s"),
                        banner,
                    },
                )
                .await;
        });
    }
}

fn line(ev: &api::ShadowEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub(crate) fn event(f: Frame) -> api::ShadowEvent {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    match f {
        Frame::Screen { data, cols, rows } => api::ShadowEvent::Screen {
            data: b64(&data),
            cols,
            rows,
        },
        Frame::Output(data) => api::ShadowEvent::Output { data: b64(&data) },
        Frame::Line(text) => api::ShadowEvent::Line { text },
        Frame::Notice(text) => api::ShadowEvent::Notice { text },
        Frame::End(reason) => api::ShadowEvent::End { reason },
        Frame::Desktop { whole, data } => api::ShadowEvent::Desktop {
            whole,
            data: b64(&data),
        },
    }
}

impl Watching {
    /// The next frame for this observer; `None` after the end.
    pub(crate) async fn next(&mut self) -> Option<Frame> {
        if self.done {
            return None;
        }
        let f = match self.observer.as_mut() {
            Some(o) => o.next().await,
            None => None,
        };
        let f = f.unwrap_or_else(|| Frame::End("the session ended".into()));
        self.done = matches!(f, Frame::End(_));
        Some(f)
    }
}

/// Watch a live session read-only: newline-delimited JSON events (attached, screen, output, line,
/// desktop, notice, end); attach and detach are audited.
#[utoipa::path(
    get, operation_id = "shadow_stream", path = "/api/v1/sessions/{id}/shadow", tag = "live",
    params(SessionId),
    responses((status = 200, description = "the event stream, one api::ShadowEvent a line", content_type = "application/x-ndjson", body = api::ShadowEvent), (status = 403, description = "the session's policy blocks shadowing", body = api::ApiError), (status = 404, description = "unknown id", body = api::ApiError), (status = 409, description = "the session is over", body = api::ApiError))
)]
async fn shadow(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // A session another gateway runs: that gateway attaches the observer; its stream is relayed.
    if let Some(owner) = st.gw.runs_elsewhere(&id).await.map_err(internal)? {
        let body = json!({"observer": caller.name}).to_string().into_bytes();
        let path = format!("/internal/v1/sessions/{id}/shadow");
        return super::routed::relay(&st, &owner, &path, body).await;
    }
    shadow_stream(&st, &caller, id).await
}

/// The observer's event stream of a session this gateway runs.
pub(crate) async fn shadow_stream(
    st: &ApiState,
    caller: &Caller,
    id: String,
) -> Result<Response, ApiError> {
    let (mut state, hello) = attach(st, caller, id).await?;
    state.first = Some(line(&hello));
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok::<_, std::io::Error>(first), s));
        }
        let f = s.next().await?;
        Some((Ok(line(&event(f))), s))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .map_err(internal)
}

/// Refuse when the session's policy blocks shadowing (audited).
pub(crate) fn refuse_blocked(
    st: &ApiState,
    observer: &str,
    id: &str,
    admitted: &wardengate_policy::Admitted,
) -> Result<(), ApiError> {
    if admitted.settings().shadow != ShadowMode::Blocked {
        return Ok(());
    }
    st.gw.audit(
        "session.shadow.refused",
        Some(observer),
        Some(id),
        json!({"observer": observer, "policy": admitted.policy(), "why": "shadow = blocked"}),
    );
    Err(forbidden(format!(
        "policy '{}' blocks shadowing of session {id} (shadow = \"blocked\")",
        admitted.policy()
    )))
}

/// Attach `caller` to session `id` as an observer: policy, audit, marker and banner. The
/// observer stays attached until the returned [`Watching`] is dropped.
pub(crate) async fn attach(
    st: &ApiState,
    caller: &Caller,
    id: String,
) -> Result<(Watching, api::ShadowEvent), ApiError> {
    let w = st.gw.registry.watch(&*st.gw.store, &id).await?;
    refuse_blocked(st, &caller.name, &id, &w.admitted)?;
    let mode = w.admitted.settings().shadow;
    let visible = mode == ShadowMode::Visible;
    let banner = if visible { "visible" } else { "covert" };
    let since_ms = now_ms();
    let observer = w
        .hub
        .attach(ObserverInfo {
            name: caller.name.clone(),
            banner: banner.into(),
            since_ms,
        })
        .await
        .map_err(|why| conflict(format!("session {id} is over: {why}")))?;
    let count = w.hub.count();
    st.gw.audit(
        "session.shadow.attach",
        Some(&caller.name),
        Some(&id),
        json!({"observer": caller.name, "banner": banner, "owner": w.record.actor,
               "target": w.record.target, "observers": count}),
    );
    let text = format!(
        "[wardengate] {} is now watching this session read-only ({})",
        caller.name,
        plural(count)
    );
    st.gw
        .registry
        .control(
            &id,
            Control::Shadow {
                marker: "shadow.attach",
                detail: format!("{} ({banner})", caller.name),
                banner: visible.then_some(text),
            },
        )
        .await;
    let hello = api::ShadowEvent::Attached {
        session: id.clone(),
        observer: caller.name.clone(),
        banner: banner.into(),
        at: elapsed_hms(w.record.started_ms),
        protocol: w.record.protocol.to_string(),
        actor: w.record.actor.clone(),
        target: w.record.target.clone(),
    };
    let state = Watching {
        observer: Some(observer),
        st: st.clone(),
        session: id,
        owner: w.record.actor.clone(),
        visible,
        since_ms,
        first: None,
        done: false,
    };
    Ok((state, hello))
}

/// Offer a live SSH session with a terminal to another user.
#[utoipa::path(
    post, operation_id = "offer_handoff", path = "/api/v1/sessions/{id}/handoff", tag = "live",
    params(SessionId), request_body = api::HandoffRequest,
    responses((status = 202, description = "the pending offer", body = api::Handoff), (status = 400, description = "to or reason missing", body = api::ApiError), (status = 403, description = "the new owner's policy does not permit the target and account", body = api::ApiError), (status = 404, description = "unknown id", body = api::ApiError), (status = 409, description = "not handable (over, no terminal, already offered)", body = api::ApiError))
)]
async fn handoff(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<api::Handoff>), ApiError> {
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
    Ok((StatusCode::ACCEPTED, Json(pending.to_api())))
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
async fn accept(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<api::Session>, ApiError> {
    let offer = offer_for(&st, &id, &caller).await?;
    let Some(p) = st.gw.registry.take_offer(&id, Some(offer.serial)) else {
        return Err(conflict(format!(
            "the handoff of session {id} was answered or expired meanwhile"
        )));
    };
    let rec = st.gw.registry.record(&*st.gw.store, &id).await?;
    let refuse = |kind: &str, why: String| {
        st.gw.audit(
            "session.handoff.refused",
            Some(&caller.name),
            Some(&id),
            json!({"from": rec.actor, "to": p.to, "why": why, "kind": kind}),
        );
        forbidden(format!("cannot take session {id} over: {why}"))
    };
    let current = st
        .gw
        .registry
        .admitted(&id)
        .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
    let checked = st
        .gw
        .registry
        .with_lease(&id, |l| {
            st.gw.handoff_admission(&rec, &caller.name, &current, l)
        })
        .ok_or_else(|| {
            RegistryError::Conflict(id.clone(), api::SessionState::Closed.to_string())
        })?;
    let (merged, lease) = checked.map_err(|(kind, why)| refuse(kind, why))?;
    if merged.recording() == wardengate_policy::RecordingMode::Required
        && !st.gw.registry.recorded(&id)
    {
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !st.gw.registry.awaits_owner(&id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = st.gw.registry.record(&*st.gw.store, &id).await.unwrap_or(r);
    Ok(Json(session_json(&st.gw, &r)))
}

/// Decline a handoff offered to you (audited).
#[utoipa::path(
    post, operation_id = "decline_handoff", path = "/api/v1/sessions/{id}/decline", tag = "live",
    params(SessionId), request_body(content = Option<api::TerminateRequest>, description = "an optional reason"),
    responses((status = 200, description = "the declined offer", body = api::Handoff), (status = 404, description = "no offer to you", body = api::ApiError))
)]
async fn decline(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<api::Handoff>, ApiError> {
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
    Ok(Json(p.to_api()))
}
