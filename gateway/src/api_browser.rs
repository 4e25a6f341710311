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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use wardengate_api as api;
use wardengate_protocols::shadow::Frame;

use crate::api::{ApiError, ApiState, Caller};
use crate::api_live::{attach, event, refuse_blocked, Watching};

/// How long a shadow link can wait to be opened.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// The most links waiting at once (older ones are dropped first).
const MAX_TICKETS: usize = 1024;

/// What a link opens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Purpose {
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

    pub(crate) fn issue(
        &self,
        what: &str,
        purpose: Purpose,
        caller: &Caller,
    ) -> Result<String, ApiError> {
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
    pub(crate) fn spend(
        &self,
        ticket: &str,
        what: &str,
        replay: bool,
    ) -> Result<(Caller, Purpose), ApiError> {
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
        .route(
            "/api/v1/recordings/{id}/replay/browser",
            post(crate::api_replay::replay_link),
        )
}

/// Routes a browser reaches without a token: the page, and its WebSocket (with a ticket).
pub fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/shadow/{id}", get(page))
        .route("/replay/{id}", get(page))
        .route("/api/v1/sessions/{id}/shadow/ws", get(socket))
        .route(
            "/api/v1/recordings/{id}/replay/ws",
            get(crate::api_replay::replay_socket),
        )
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
pub(crate) fn origin(headers: &HeaderMap) -> Result<String, ApiError> {
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
pub(crate) struct SocketQuery {
    pub(crate) ticket: Option<String>,
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

pub(crate) fn text(ev: &api::ShadowEvent) -> Message {
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

/// How long the page may take to accept a message before it is dropped.
const SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Send one message; `false` when the page is gone or stalled.
pub(crate) async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_WAIT, socket.send(msg)).await,
        Ok(Ok(()))
    )
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
