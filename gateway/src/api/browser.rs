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
//! shadow's ([`super::live::attach`]).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use wardengate_api as api;
use wardengate_protocols::shadow::Frame;

use super::common::{bad, ApiError, Caller, SessionId};
use super::live::{attach, event, refuse_blocked, Watching};
use super::routed::PeerShadow;
use super::state::ApiState;
use super::tickets::{Purpose, TICKET_TTL};

/// Routes that need the operator's token.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/sessions/{id}/shadow/browser", post(link))
}

/// Routes a browser reaches without a token: the page, and its WebSocket (with a ticket).
pub fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/shadow/{id}", get(page))
        .route("/replay/{id}", get(page))
        .route("/api/v1/sessions/{id}/shadow/ws", get(socket))
}

/// A one-time link to watch a desktop (RDP) session in a browser.
#[utoipa::path(
    post, operation_id = "shadow_in_browser", path = "/api/v1/sessions/{id}/shadow/browser", tag = "live",
    params(SessionId),
    responses((status = 200, description = "a one-time link (60 s) to the gateway's page", body = api::ShadowLink), (status = 403, description = "the session's policy blocks shadowing", body = api::ApiError), (status = 404, description = "unknown id", body = api::ApiError), (status = 409, description = "not a desktop session, or over", body = api::ApiError))
)]
async fn link(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<api::ShadowLink>, ApiError> {
    let not_desktop = |protocol: api::Protocol| {
        ApiError(
            StatusCode::CONFLICT,
            format!(
                "session {id} is a {protocol} session: its browser view is for desktops (RDP); \
                 watch it in a terminal with `wgctl session shadow {id}`"
            ),
        )
    };
    // A session another gateway runs: the link is this gateway's; its page's socket relays the
    // running gateway's stream (which checks the policy when it attaches).
    if let Some(owner) = st
        .gw
        .runs_elsewhere(&id)
        .await
        .map_err(super::common::internal)?
    {
        let s = super::routed::session_of(&st, &owner, &id).await?;
        if s.protocol != api::Protocol::Rdp {
            return Err(not_desktop(s.protocol));
        }
        return issue_link(&st, &s.id, caller, &headers);
    }
    let w = st.gw.registry.watch(&*st.gw.store, &id).await?;
    refuse_blocked(&st, &caller.name, &id, &w.admitted)?;
    if w.record.protocol != api::Protocol::Rdp {
        return Err(not_desktop(w.record.protocol));
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
    issue_link(&st, &w.record.id, caller, &headers)
}

/// A one-time link to this gateway's shadow page of session `id`.
fn issue_link(
    st: &ApiState,
    id: &str,
    caller: Caller,
    headers: &HeaderMap,
) -> Result<Json<api::ShadowLink>, ApiError> {
    let ticket = st.tickets.issue(id, Purpose::Shadow, &caller)?;
    Ok(Json(api::ShadowLink {
        url: format!(
            "{}/shadow/{id}#ticket={ticket}",
            origin(headers, !st.gw.cfg().config.api.plain_http)?,
        ),
        expires_in_secs: TICKET_TTL.as_secs(),
        observer: caller.name,
    }))
}

/// `scheme://host` as the operator reached the API (the link must work from where they are):
/// `https` when the gateway serves TLS, or a TLS-terminating proxy says so with
/// `X-Forwarded-Proto`.
pub(crate) fn origin(headers: &HeaderMap, tls: bool) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| bad("the request has no usable Host header"))?;
    let https = tls
        || headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    Ok(format!("{}://{host}", if https { "https" } else { "http" }))
}

const PAGE: &str = include_str!("shadow.html");

async fn page(Path(_id): Path<String>) -> Response {
    super::common::html_page(PAGE, "; img-src blob:")
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SocketQuery {
    /// The one-time ticket from the link's fragment.
    #[param(required = true)]
    pub(crate) ticket: Option<String>,
}

/// WebSocket of the browser shadow page (no bearer token: the link's ticket). Text messages are the
/// shadow stream's JSON events; binary messages are desktop pictures (WGD1 layout, see the README).
#[utoipa::path(
    get, operation_id = "shadow_socket", path = "/api/v1/sessions/{id}/shadow/ws", tag = "live", security(()),
    params(SessionId, SocketQuery),
    responses((status = 101, description = "switching to WebSocket"), (status = 401, description = "the ticket was used already, expired or is for something else", body = api::ApiError), (status = 403, description = "the session's policy blocks shadowing", body = api::ApiError))
)]
async fn socket(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<SocketQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let ticket = q.ticket.unwrap_or_default();
    let (caller, _) = st.tickets.spend(&ticket, &id, false)?;
    let ws = ws.max_message_size(64 << 10);
    // A session another gateway runs: its stream (which starts with its own "attached").
    if let Some(owner) = st
        .gw
        .runs_elsewhere(&id)
        .await
        .map_err(super::common::internal)?
    {
        let stream = PeerShadow::open(&st, &owner, &id, &caller.name).await?;
        return Ok(ws.on_upgrade(move |socket| pump(socket, Source::Peer(stream), None)));
    }
    let (watching, hello) = attach(&st, &caller, id).await?;
    Ok(ws.on_upgrade(move |socket| pump(socket, Source::Here(watching), Some(hello))))
}

pub(crate) fn text(ev: &api::ShadowEvent) -> Message {
    Message::Text(serde_json::to_string(ev).unwrap_or_default().into())
}

/// Where the page's messages come from: this gateway's observer (dropping it detaches), or the
/// stream of the gateway that runs the session (dropping it closes the request, and that
/// gateway detaches the observer).
enum Source {
    Here(Watching),
    Peer(PeerShadow),
}

impl Source {
    /// The next message for the page and whether it is the last; `None` when the stream ends.
    /// Desktop pictures are binary messages (the same bytes either way), other events text.
    async fn next(&mut self) -> Option<(Message, bool)> {
        use base64::Engine;
        match self {
            Source::Here(w) => {
                let f = w.next().await?;
                let end = matches!(f, Frame::End(_));
                let msg = match f {
                    Frame::Desktop { data, .. } => Message::Binary(data),
                    other => text(&event(other)),
                };
                Some((msg, end))
            }
            Source::Peer(p) => {
                let ev = p.next().await?;
                let end = matches!(ev, api::ShadowEvent::End { .. });
                let msg = match &ev {
                    api::ShadowEvent::Desktop { data, .. } => Message::Binary(
                        base64::engine::general_purpose::STANDARD
                            .decode(data)
                            .ok()?
                            .into(),
                    ),
                    other => text(other),
                };
                Some((msg, end))
            }
        }
    }
}

/// Messages to the page until the session ends or the page leaves.
async fn pump(mut socket: WebSocket, mut source: Source, hello: Option<api::ShadowEvent>) {
    if let Some(hello) = hello {
        if !send(&mut socket, text(&hello)).await {
            return;
        }
    }
    loop {
        tokio::select! {
            m = source.next() => {
                let Some((msg, end)) = m else { break };
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

    #[test]
    fn links_say_https_behind_a_tls_proxy() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "gw.corp:8080".parse().expect("header"));
        assert_eq!(
            origin(&h, false).ok().as_deref(),
            Some("http://gw.corp:8080")
        );
        h.insert("x-forwarded-proto", "https".parse().expect("header"));
        assert_eq!(
            origin(&h, false).ok().as_deref(),
            Some("https://gw.corp:8080")
        );
        assert!(origin(&HeaderMap::new(), false).is_err());
    }
}
