//! Live sessions in the API: shadowing (`GET /api/v1/sessions/{id}/shadow`, a stream of
//! newline-delimited JSON [`api::ShadowEvent`]s). Ownership handoff is `handoff.rs`.
//!
//! A shadow stream is read-only by construction: it is a response body, there is no way to send
//! the session anything through it. Attach and detach are audited (`session.shadow.attach`,
//! `session.shadow.detach`), marked in the recording, and shown to the session's owner in-band
//! when the policy says `shadow = "visible"`.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine;
use serde_json::json;
use wardengate_api as api;
use wardengate_policy::ShadowMode;
use wardengate_protocols::session::{now_ms, Control};
use wardengate_protocols::shadow::{elapsed_hms, Frame, Observer, ObserverInfo};

use super::common::{internal, ApiError, Caller, SessionId};
use super::state::ApiState;

/// Operators only.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/sessions/{id}/shadow", get(shadow))
}

pub(super) fn forbidden(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, msg.into())
}

pub(super) fn conflict(msg: impl Into<String>) -> ApiError {
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
    if w.record.protocol == wardengate_api::Protocol::Tcp {
        return Err(conflict(format!(
            "session {id} is a TCP session: its bytes are the client's own protocol, with nothing \
             to watch live; its recording shows the transcript (`wgctl recording play {id}`)"
        )));
    }
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
