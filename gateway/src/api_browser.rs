//! Shadowing a desktop (RDP) session in a browser tab.
//!
//! `POST /api/v1/sessions/{id}/shadow/browser` (an operator's token) answers with a link to the
//! gateway's shadow page, `/shadow/{id}#ticket=…`. The ticket is a one-time capability: random,
//! bound to the caller and the session, valid for [`TICKET_TTL`], and spent by the page's
//! WebSocket (`GET /api/v1/sessions/{id}/shadow/ws?ticket=…`), because a browser cannot put the
//! operator's bearer token on a WebSocket. It sits in the URL's fragment, which browsers never
//! send to a server, until the page itself uses it.
//!
//! The WebSocket is read-only: the gateway reads from it only to notice that the page left.
//! Text messages are the JSON [`api::ShadowEvent`]s of the terminal stream (attached, notices,
//! end); binary messages are the desktop's pictures (see `shadow::desktop::encode`). Policy
//! (`visible`/`covert`/`blocked`), the audit and the recording's markers are the terminal
//! shadow's ([`crate::api_live::attach`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use wardengate_api as api;
use wardengate_protocols::shadow::desktop::{picture, Picture};
use wardengate_protocols::shadow::Frame;
use wardengate_recorder::desktop::Desktop;
use wardengate_recorder::{Event, EventKind};

use crate::api::{ApiError, ApiState, Caller};
use crate::api_live::{attach, event, refuse_blocked, Watching};

/// How long a shadow link can wait to be opened.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// The most links waiting at once (older ones are dropped first).
const MAX_TICKETS: usize = 1024;

/// What a link opens.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Purpose {
    /// A live session, read-only.
    Shadow,
    /// A desktop recording, from `from_ms`, at `speed` times real time.
    Replay { speed: f64, from_ms: u64 },
}

struct Ticket {
    /// The session (shadow) or recording (replay).
    what: String,
    purpose: Purpose,
    caller: Caller,
    expires: Instant,
}

/// Shadow links not opened yet.
#[derive(Clone, Default)]
pub struct Tickets(Arc<Mutex<HashMap<String, Ticket>>>);

impl Tickets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticket>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issue(&self, what: &str, purpose: Purpose, caller: &Caller) -> Result<String, ApiError> {
        let id = crate::util::new_token().map_err(crate::api::internal)?;
        let now = Instant::now();
        let mut t = self.lock();
        t.retain(|_, v| v.expires > now);
        if t.len() >= MAX_TICKETS {
            if let Some(oldest) = t
                .iter()
                .min_by_key(|(_, v)| v.expires)
                .map(|(k, _)| k.clone())
            {
                t.remove(&oldest);
            }
        }
        t.insert(
            id.clone(),
            Ticket {
                what: what.to_string(),
                purpose,
                caller: caller.clone(),
                expires: now + TICKET_TTL,
            },
        );
        Ok(id)
    }

    /// Spend a ticket for `what` (a replay when `replay`); who it was issued to, and for what.
    fn spend(&self, ticket: &str, what: &str, replay: bool) -> Result<(Caller, Purpose), ApiError> {
        let spent = self.lock().remove(ticket);
        match spent {
            Some(t)
                if t.expires > Instant::now()
                    && t.what == what
                    && replay == matches!(t.purpose, Purpose::Replay { .. }) =>
            {
                Ok((t.caller, t.purpose))
            }
            _ => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                format!(
                    "this link was used already, has expired (links last {} s) or is for \
                     something else: ask for a new one with `wgctl {} {what} --browser`",
                    TICKET_TTL.as_secs(),
                    if replay {
                        "recording play"
                    } else {
                        "session shadow"
                    }
                ),
            )),
        }
    }
}

/// Routes that need the operator's token.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/sessions/{id}/shadow/browser", post(link))
        .route("/api/v1/recordings/{id}/replay/browser", post(replay_link))
}

/// Routes a browser reaches without a token: the page, and its WebSocket (with a ticket).
pub fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/shadow/{id}", get(page))
        .route("/replay/{id}", get(page))
        .route("/api/v1/sessions/{id}/shadow/ws", get(socket))
        .route("/api/v1/recordings/{id}/replay/ws", get(replay_socket))
}

async fn link(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<api::ShadowLink>, ApiError> {
    let w = st.gw.registry.watch(&st.gw.store, &id)?;
    refuse_blocked(&st, &caller.name, &id, &w.admitted)?;
    if w.record.protocol != "rdp" {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "session {id} is a {} session: its browser view is for desktops (RDP); watch it in \
                 a terminal with `wgctl session shadow {id}`",
                w.record.protocol
            ),
        ));
    }
    if !w.hub.has_desktop() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "session {id} began while its policy blocked shadowing, so its desktop is not \
                 kept for observers; the recording has it (`wgctl recording play {id} --browser` \
                 once it ends)"
            ),
        ));
    }
    let ticket = st.tickets.issue(&w.record.id, Purpose::Shadow, &caller)?;
    Ok(Json(api::ShadowLink {
        url: format!(
            "{}/shadow/{}#ticket={ticket}",
            origin(&headers)?,
            w.record.id
        ),
        expires_in_secs: TICKET_TTL.as_secs(),
        observer: caller.name,
    }))
}

/// `scheme://host` as the operator reached the API (the link must work from where they are):
/// `https` when a TLS-terminating proxy says so with `X-Forwarded-Proto`.
fn origin(headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| crate::api::bad("the request has no usable Host header"))?;
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    Ok(format!("{}://{host}", if https { "https" } else { "http" }))
}

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
        crate::api::parse_body(&body)?
    };
    let speed = req.speed.unwrap_or(1.0);
    if !(0.1..=64.0).contains(&speed) {
        return Err(crate::api::bad(format!(
            "speed {speed} is out of range: 0.1 to 64 times real time"
        )));
    }
    crate::api::recording_dir(&st.gw, &id)?;
    if let Ok(r) = st.gw.registry.record(&st.gw.store, &id) {
        if r.protocol != "rdp" {
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
        url: format!("{}/replay/{id}#ticket={ticket}", origin(&headers)?),
        expires_in_secs: TICKET_TTL.as_secs(),
        observer: caller.name,
    }))
}

const PAGE: &str = include_str!("shadow.html");

async fn page(Path(_id): Path<String>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 img-src blob:; connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct SocketQuery {
    ticket: Option<String>,
}

async fn socket(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<SocketQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let ticket = q.ticket.unwrap_or_default();
    let (caller, _) = st.tickets.spend(&ticket, &id, false)?;
    let (watching, hello) = attach(&st, &caller, id).await?;
    Ok(ws
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| pump(socket, watching, hello)))
}

fn text(ev: &api::ShadowEvent) -> Message {
    Message::Text(serde_json::to_string(ev).unwrap_or_default().into())
}

/// Frames to the page until the session ends or the page leaves (dropping `watching` detaches).
async fn pump(mut socket: WebSocket, mut watching: Watching, hello: api::ShadowEvent) {
    if !send(&mut socket, text(&hello)).await {
        return;
    }
    loop {
        tokio::select! {
            f = watching.next() => {
                let Some(f) = f else { break };
                let end = matches!(f, Frame::End(_));
                let msg = match f {
                    Frame::Desktop { data, .. } => Message::Binary(data),
                    other => text(&event(other)),
                };
                if !send(&mut socket, msg).await || end {
                    break;
                }
            }
            m = socket.recv() => match m {
                // The page never sends anything that matters: it is read-only.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = send(&mut socket, Message::Close(None)).await;
}

async fn replay_socket(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<SocketQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let ticket = q.ticket.unwrap_or_default();
    let (caller, purpose) = st.tickets.spend(&ticket, &id, true)?;
    let Purpose::Replay { speed, from_ms } = purpose else {
        return Err(crate::api::internal(
            "a shadow ticket was spent for a replay",
        ));
    };
    let dir = crate::api::recording_dir(&st.gw, &id)?;
    let slot = ReplaySlot::take().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_REPLAYS} recordings are playing already; try again when one ends"),
        )
    })?;
    let rec = tokio::task::spawn_blocking(move || wardengate_recorder::read(&dir))
        .await
        .map_err(crate::api::internal)?
        .map_err(|e| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("recording {id} cannot be read: {e}"),
            )
        })?;
    st.gw.audit(
        "recording.accessed",
        Some(&caller.name),
        Some(&id),
        json!({"by": caller.name, "what": "replay", "speed": speed, "from_ms": from_ms}),
    );
    let session = st.gw.registry.record(&st.gw.store, &id).ok();
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
            .map(|s| s.protocol.clone())
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
    let s = us / 1_000_000;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
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

/// How long the page may take to accept a message before it is dropped.
const SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Send one message; `false` when the page is gone or stalled.
async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_WAIT, socket.send(msg)).await,
        Ok(Ok(()))
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Caller {
        Caller {
            name: "carol".into(),
            operator: true,
        }
    }

    #[test]
    fn a_ticket_opens_one_thing_once() {
        let t = Tickets::default();
        let a = t
            .issue("sess_a", Purpose::Shadow, &admin())
            .expect("issued");
        // For another session, or as a replay: refused, and the ticket is gone.
        assert_eq!(
            t.spend(&a, "sess_b", false).err().map(|e| e.0),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert!(
            t.spend(&a, "sess_a", false).is_err(),
            "a refused ticket is spent"
        );
        let b = t
            .issue("sess_a", Purpose::Shadow, &admin())
            .expect("issued");
        assert!(
            t.spend(&b, "sess_a", true).is_err(),
            "a shadow ticket is not a replay's"
        );
        let c = t
            .issue("sess_a", Purpose::Shadow, &admin())
            .expect("issued");
        let (who, what) = t.spend(&c, "sess_a", false).expect("spent");
        assert_eq!((who.name.as_str(), what), ("carol", Purpose::Shadow));
        let err = t.spend(&c, "sess_a", false).expect_err("used already");
        assert!(
            err.1.contains("wgctl session shadow sess_a --browser"),
            "{}",
            err.1
        );
        let r = t
            .issue(
                "sess_a",
                Purpose::Replay {
                    speed: 4.0,
                    from_ms: 0,
                },
                &admin(),
            )
            .expect("issued");
        let (_, what) = t.spend(&r, "sess_a", true).expect("spent");
        assert_eq!(
            what,
            Purpose::Replay {
                speed: 4.0,
                from_ms: 0
            }
        );
    }

    #[test]
    fn an_expired_ticket_opens_nothing() {
        let t = Tickets::default();
        let a = t
            .issue("sess_a", Purpose::Shadow, &admin())
            .expect("issued");
        t.lock().get_mut(&a).expect("kept").expires = Instant::now();
        assert!(t.spend(&a, "sess_a", false).is_err());
    }

    #[test]
    fn links_say_https_behind_a_tls_proxy() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "gw.corp:8080".parse().expect("header"));
        assert_eq!(origin(&h).ok().as_deref(), Some("http://gw.corp:8080"));
        h.insert("x-forwarded-proto", "https".parse().expect("header"));
        assert_eq!(origin(&h).ok().as_deref(), Some("https://gw.corp:8080"));
        assert!(origin(&HeaderMap::new()).is_err());
    }
}
