//! Asking the gateway that runs a session (another one of the cluster) for what only it knows:
//! signed requests to its internal endpoints (`api/peers.rs` answers them there), their answers
//! handed to this gateway's client.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;

use super::{ApiError, ApiState};

/// Ask gateway `owner` (signed) and hand its answer to the client as it comes: status, type and
/// body, streamed (an observer's events), without a deadline of its own.
pub(crate) async fn relay(
    st: &ApiState,
    owner: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Response, ApiError> {
    let resp = st
        .gw
        .post_to_peer(owner, path, body, None)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("{e:#}")))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    // Chunk by chunk; an error ends the stream (the client sees the answer cut short).
    let stream = futures_util::stream::unfold(Some(resp), |r| async move {
        let mut r = r?;
        match r.chunk().await {
            Ok(Some(c)) => Some((Ok::<_, std::io::Error>(c), Some(r))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    Response::builder()
        .status(status)
        .header(axum::http::header::CONTENT_TYPE, kind)
        .header(axum::http::header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Session `id` as gateway `owner`, which runs it, shows it now.
pub(crate) async fn session_of(
    st: &ApiState,
    owner: &str,
    id: &str,
) -> Result<wardengate_api::Session, ApiError> {
    let path = format!("/internal/v1/sessions/{id}");
    let (status, body) = st
        .gw
        .to_peer(owner, &path, b"{}".to_vec())
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("{e:#}")))?;
    if status != StatusCode::OK {
        return Err(peer_error(owner, status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_GATEWAY,
            format!("gateway {owner} sent an unreadable session: {e}"),
        )
    })
}

/// A peer's refusal as this gateway's: its status and its message.
fn peer_error(owner: &str, status: StatusCode, body: &[u8]) -> ApiError {
    let msg = serde_json::from_slice::<wardengate_api::ApiError>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("gateway {owner} answered {status}"));
    ApiError(status, msg)
}

/// The longest line of a peer's shadow stream (a whole desktop picture, base64).
const MAX_LINE: usize = 32 << 20;

/// A shadow stream from the gateway that runs the session, one event at a time.
pub(crate) struct PeerShadow {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
}

impl PeerShadow {
    /// Attach `observer` at gateway `owner` (it checks the policy and audits); its refusal is
    /// this gateway's answer.
    pub(crate) async fn open(
        st: &ApiState,
        owner: &str,
        id: &str,
        observer: &str,
    ) -> Result<PeerShadow, ApiError> {
        let body = serde_json::json!({ "observer": observer })
            .to_string()
            .into_bytes();
        let path = format!("/internal/v1/sessions/{id}/shadow");
        let resp = st
            .gw
            .post_to_peer(owner, &path, body, None)
            .await
            .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("{e:#}")))?;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if status != StatusCode::OK {
            // An error is a short JSON answer: read at most 64 KiB of it.
            let mut resp = resp;
            let mut body = Vec::new();
            while body.len() < 64 << 10 {
                match resp.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c),
                    _ => break,
                }
            }
            body.truncate(64 << 10);
            return Err(peer_error(owner, status, &body));
        }
        Ok(PeerShadow {
            resp,
            buf: Vec::new(),
            scanned: 0,
        })
    }

    /// The next event; `None` when the stream ends, is cut, or sends something unreadable.
    pub(crate) async fn next(&mut self) -> Option<wardengate_api::ShadowEvent> {
        loop {
            if let Some(k) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let i = self.scanned + k;
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                self.scanned = 0;
                return serde_json::from_slice(&line[..i]).ok();
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE {
                return None;
            }
            match self.resp.chunk().await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c),
                _ => return None,
            }
        }
    }
}
