//! Playing a desktop (RDP) recording in the browser: `POST /api/v1/recordings/{id}/replay/browser`
//! gives a one-time link (the tickets of [`super::browser`]) to the shadow page in replay
//! mode, whose WebSocket (`GET /api/v1/recordings/{id}/replay/ws?ticket=…`) gets the recording's
//! desktop paced like the session: `replay`, `position` and `end` events as JSON text, pictures
//! as binary messages, as for live shadowing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use wardengate_api as api;
use wardengate_protocols::shadow::desktop::{picture, Picture};
use wardengate_recorder::desktop::Desktop;
use wardengate_recorder::time::clock;
use wardengate_recorder::{Event, EventKind};

use super::browser::{origin, send, text, SocketQuery};
use super::common::{bad, internal, parse_body, ApiError, Caller, RecordingId};
use super::recordings::{read_recording, recording_dir, recording_exists};
use super::state::ApiState;
use super::tickets::{Purpose, TICKET_TTL};

/// The link needs the operator's token.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/recordings/{id}/replay/browser", post(replay_link))
}

/// The WebSocket is reached with the link's ticket.
pub fn open_routes() -> Router<ApiState> {
    Router::new().route("/api/v1/recordings/{id}/replay/ws", get(replay_socket))
}

/// A one-time link to play a desktop (RDP) recording in a browser.
#[utoipa::path(
    post, operation_id = "replay_in_browser", path = "/api/v1/recordings/{id}/replay/browser", tag = "recordings",
    params(RecordingId), request_body(content = Option<api::ReplayRequest>),
    responses((status = 200, description = "a one-time link (60 s) to the gateway's page", body = api::ShadowLink), (status = 400, description = "speed out of range", body = api::ApiError), (status = 404, description = "no such recording", body = api::ApiError), (status = 409, description = "not a desktop recording", body = api::ApiError))
)]
async fn replay_link(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<api::ShadowLink>, ApiError> {
    let req: api::ReplayRequest = if body.is_empty() {
        Default::default()
    } else {
        parse_body(&body)?
    };
    let speed = req.speed.unwrap_or(1.0);
    if !(0.1..=64.0).contains(&speed) {
        return Err(bad(format!(
            "speed {speed} is out of range: 0.1 to 64 times real time"
        )));
    }
    recording_exists(&st.gw, &id).await?;
    if let Ok(r) = st.gw.registry.record(&*st.gw.store, &id).await {
        if r.protocol != api::Protocol::Rdp {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "recording {id} is of a {} session: the browser player is for desktops \
                     (RDP); play it in a terminal with `wgctl recording play {id}`",
                    r.protocol
                ),
            ));
        }
    }
    let purpose = Purpose::Replay {
        speed,
        from_ms: req.from_ms.unwrap_or(0),
    };
    let ticket = st.tickets.issue(&id, purpose, &caller)?;
    Ok(Json(api::ShadowLink {
        url: format!(
            "{}/replay/{id}#ticket={ticket}",
            origin(&headers, !st.gw.cfg().config.api.plain_http)?
        ),
        expires_in_secs: TICKET_TTL.as_secs(),
        observer: caller.name,
    }))
}

/// WebSocket of the browser player (no bearer token: the link's ticket): replay, position and end
/// events as JSON text, desktop pictures as binary messages, paced like the session.
#[utoipa::path(
    get, path = "/api/v1/recordings/{id}/replay/ws", tag = "recordings", security(()),
    params(RecordingId, SocketQuery),
    responses((status = 101, description = "switching to WebSocket"), (status = 401, description = "the ticket was used already, expired or is for something else", body = api::ApiError), (status = 422, description = "the recording cannot be read", body = api::ApiError))
)]
async fn replay_socket(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<SocketQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let ticket = q.ticket.unwrap_or_default();
    let (caller, purpose) = st.tickets.spend(&ticket, &id, true)?;
    let Purpose::Replay { speed, from_ms } = purpose else {
        return Err(internal("a shadow ticket was spent for a replay"));
    };
    let dir = recording_dir(&st.gw, &id).await?;
    let slot = ReplaySlot::take().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_REPLAYS} recordings are playing already; try again when one ends"),
        )
    })?;
    let rec = read_recording(dir, &id).await?;
    st.gw.audit(
        "recording.accessed",
        Some(&caller.name),
        Some(&id),
        json!({"by": caller.name, "what": "replay", "speed": speed, "from_ms": from_ms}),
    );
    let session = st.gw.registry.record(&*st.gw.store, &id).await.ok();
    let duration_us = rec.events.last().map_or(0, |e| e.t_us);
    let hello = api::ShadowEvent::Replay {
        recording: id.clone(),
        actor: session
            .as_ref()
            .map(|s| s.actor.clone())
            .unwrap_or_default(),
        target: session
            .as_ref()
            .map(|s| s.target.clone())
            .unwrap_or_default(),
        protocol: session
            .as_ref()
            .map(|s| s.protocol.to_string())
            .unwrap_or_default(),
        started_at: session
            .as_ref()
            .map(|s| crate::util::rfc3339(s.started_ms))
            .unwrap_or_default(),
        duration: hms(duration_us),
        speed: format!("{speed}x"),
    };
    Ok(ws.max_message_size(64 << 10).on_upgrade(move |socket| {
        play(
            socket,
            rec.events,
            hello,
            speed,
            from_ms.saturating_mul(1000),
            slot,
        )
    }))
}

/// `HH:MM:SS` of a recording offset.
fn hms(us: u64) -> String {
    clock(Duration::from_secs(us / 1_000_000), false)
}

/// Feed the target's output up to `t_us` into `desk`, from event `i`; the next event's index.
fn feed_until(desk: &mut Desktop, events: &[Event], mut i: usize, t_us: u64) -> usize {
    while let Some(e) = events.get(i).filter(|e| e.t_us <= t_us) {
        if let EventKind::Output { data, .. } = &e.kind {
            desk.feed(data);
        }
        i += 1;
    }
    i
}

/// Where a replay is: the desktop so far, the next event, the picture the page has.
struct Replay {
    desk: Desktop,
    events: Vec<Event>,
    next: usize,
    shown: Option<Picture>,
}

impl Replay {
    /// Play up to `t_us`; what the page needs to see (pixel work: run it on the blocking pool).
    fn advance(&mut self, t_us: u64) -> Option<Bytes> {
        self.next = feed_until(&mut self.desk, &self.events, self.next, t_us);
        if self.shown.as_ref().map(|p| p.version) == Some(self.desk.version) {
            return None;
        }
        let p = picture(&self.desk)?;
        match p.since(self.shown.as_ref()) {
            Ok(m) => {
                self.shown = Some(p);
                m
            }
            Err(e) => {
                // The page keeps its picture; the next update is made against it.
                tracing::warn!("replay: a picture could not be encoded: {e}");
                None
            }
        }
    }
}

/// Replays playing now, against [`MAX_REPLAYS`] (each holds its recording in memory).
static REPLAYS: AtomicUsize = AtomicUsize::new(0);
const MAX_REPLAYS: usize = 8;

/// A replay slot; given back when dropped.
struct ReplaySlot;

impl ReplaySlot {
    fn take() -> Option<ReplaySlot> {
        let mut n = REPLAYS.load(Ordering::Acquire);
        loop {
            if n >= MAX_REPLAYS {
                return None;
            }
            match REPLAYS.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(ReplaySlot),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for ReplaySlot {
    fn drop(&mut self) {
        REPLAYS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The recording's desktop to the page, paced like the session (times `speed`): what changed,
/// every [`DESKTOP_FRAME_INTERVAL`], and where the replay is.
async fn play(
    mut socket: WebSocket,
    events: Vec<Event>,
    hello: api::ShadowEvent,
    speed: f64,
    from_us: u64,
    _slot: ReplaySlot,
) {
    use wardengate_protocols::shadow::desktop::DESKTOP_FRAME_INTERVAL;
    if !send(&mut socket, text(&hello)).await {
        return;
    }
    let end_us = events.last().map_or(0, |e| e.t_us);
    let mut state = Replay {
        desk: Desktop::new(),
        events,
        next: 0,
        shown: None,
    };
    let began = std::time::Instant::now();
    let mut tick = tokio::time::interval(DESKTOP_FRAME_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        }
        let played = (began.elapsed().as_micros() as f64 * speed) as u64;
        let now_us = from_us.saturating_add(played);
        // Decoding (up to the start offset, the first time: maybe an hour of desktop) and PNG
        // encoding run off the runtime's threads.
        let work = tokio::task::spawn_blocking(move || {
            let update = state.advance(now_us);
            (state, update)
        })
        .await;
        let Ok((back, update)) = work else {
            let _ = send(
                &mut socket,
                text(&api::ShadowEvent::End {
                    reason: "the replay failed: the recording could not be decoded".into(),
                }),
            )
            .await;
            return;
        };
        state = back;
        if let Some(m) = update {
            if !send(&mut socket, Message::Binary(m)).await {
                return;
            }
        }
        let at = api::ShadowEvent::Position {
            at: hms(now_us.min(end_us)),
        };
        if !send(&mut socket, text(&at)).await {
            return;
        }
        if state.next >= state.events.len() {
            let d = &state.desk;
            let why = match (&d.first_error, state.shown.is_some()) {
                (_, false) => "end of the recording: it holds no desktop".to_string(),
                (Some(e), true) => format!(
                    "end of the recording ({} update(s) could not be decoded, the first: {e})",
                    d.errors
                ),
                (None, true) => "end of the recording".to_string(),
            };
            let _ = send(&mut socket, text(&api::ShadowEvent::End { reason: why })).await;
            break;
        }
    }
    let _ = send(&mut socket, Message::Close(None)).await;
}
