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

struct Ticket {
    session: String,
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

    fn issue(&self, session: &str, caller: &Caller) -> Result<String, ApiError> {
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
                session: session.to_string(),
                caller: caller.clone(),
                expires: now + TICKET_TTL,
            },
        );
        Ok(id)
    }

    /// Spend a ticket for `session`; the caller it was issued to.
    fn spend(&self, ticket: &str, session: &str) -> Result<Caller, ApiError> {
        let spent = self.lock().remove(ticket);
        match spent {
            Some(t) if t.expires > Instant::now() && t.session == session => Ok(t.caller),
            _ => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                format!(
                    "this shadow link was used already, has expired (links last {} s) or is for \
                     another session: ask for a new one with `wgctl session shadow {session} \
                     --browser`",
                    TICKET_TTL.as_secs()
                ),
            )),
        }
    }
}

/// Routes that need the operator's token.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/sessions/{id}/shadow/browser", post(link))
}

/// Routes a browser reaches without a token: the page, and its WebSocket (with a ticket).
pub fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/shadow/{id}", get(page))
        .route("/api/v1/sessions/{id}/shadow/ws", get(socket))
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
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| crate::api::bad("the request has no usable Host header"))?;
    let ticket = st.tickets.issue(&id, &caller)?;
    Ok(Json(api::ShadowLink {
        url: format!("http://{host}/shadow/{}#ticket={ticket}", w.record.id),
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
    let caller = st.tickets.spend(&ticket, &id)?;
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
    if socket.send(text(&hello)).await.is_err() {
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
                if socket.send(msg).await.is_err() || end {
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
    let _ = socket.send(Message::Close(None)).await;
}
