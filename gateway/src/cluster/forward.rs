//! Operations on a session another gateway owns: sent to the owner's API as a signed request
//! ([`super::sign`]), answered by the owner's internal endpoints, which accept nothing else.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::sign::{ClusterKey, Nonces};
use crate::api::{ApiError, ApiState};
use crate::broker::Gateway;
use crate::registry::RegistryError;
use crate::store::SessionRecord;

/// How long a peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// What this gateway needs to talk to its peers and to check them.
pub struct Peers {
    pub key: Option<ClusterKey>,
    pub seen: Nonces,
    http: reqwest::Client,
}

impl Peers {
    /// No cluster: internal endpoints refuse everything.
    pub fn none() -> Peers {
        Peers {
            key: None,
            seen: Nonces::default(),
            http: reqwest::Client::new(),
        }
    }

    pub fn new(key: Option<ClusterKey>, ca_file: Option<&Path>) -> Result<Peers> {
        let mut http = reqwest::Client::builder().timeout(PEER_TIMEOUT);
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read [cluster] ca_file {}", ca.display()))?;
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).with_context(
                || {
                    format!(
                        "[cluster] ca_file {} is not a PEM certificate",
                        ca.display()
                    )
                },
            )?);
        }
        Ok(Peers {
            key,
            seen: Nonces::default(),
            http: http.build().context("cannot build the peer client")?,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PeerTerminate {
    by: String,
    reason: String,
}

impl Gateway {
    /// Send a signed `POST` to gateway `owner`'s internal endpoint `path`; its status and body.
    async fn to_peer(&self, owner: &str, path: &str, body: Vec<u8>) -> Result<(StatusCode, Bytes)> {
        let key = self.peers.key.as_ref().ok_or_else(|| {
            anyhow!("this gateway has no cluster key ([cluster] key_file; `wardengate cluster init`), so it cannot reach gateway {owner}")
        })?;
        let gateways = self.store.gateways().await?;
        let peer = gateways
            .iter()
            .find(|g| g.name == owner)
            .ok_or_else(|| anyhow!("gateway {owner} is not a member of the cluster"))?;
        if peer.state != "up" {
            return Err(anyhow!("gateway {owner} is {}", peer.state));
        }
        let url = format!("{}{path}", peer.api_url.trim_end_matches('/'));
        let mut req = self
            .peers
            .http
            .post(&url)
            .header("content-type", "application/json");
        for (k, v) in key.sign("POST", path, &self.name, &body)? {
            req = req.header(k, v);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .with_context(|| format!("gateway {owner} did not answer at {url}"))?;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let bytes = resp.bytes().await.context("reading the peer's answer")?;
        Ok((status, bytes))
    }

    /// Terminate session `id` wherever it runs: here, or on the gateway that owns it (a signed
    /// request; the owner ends it and writes its end before it answers).
    pub async fn terminate_anywhere(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<SessionRecord, RegistryError> {
        if self.registry.live_record(id).is_some() || !self.store.shared() {
            return self.registry.terminate(&*self.store, id, by, reason).await;
        }
        let rec = self
            .store
            .session_get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.into()))?;
        if rec.state.is_terminal() {
            return Err(RegistryError::Conflict(id.into(), rec.state.to_string()));
        }
        if rec.gateway == self.name {
            return self.registry.terminate(&*self.store, id, by, reason).await;
        }
        let body = serde_json::to_vec(&PeerTerminate {
            by: by.into(),
            reason: reason.into(),
        })
        .map_err(anyhow::Error::from)?;
        let path = format!("/internal/v1/sessions/{id}/terminate");
        let (status, answer) =
            self.to_peer(&rec.gateway, &path, body)
                .await
                .with_context(|| {
                    format!(
                        "cannot reach gateway {}, which runs session {id}",
                        rec.gateway
                    )
                })?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(RegistryError::NotFound(id.into())),
            StatusCode::CONFLICT => {
                let state = self
                    .store
                    .session_get(id)
                    .await?
                    .map(|r| r.state.to_string());
                return Err(RegistryError::Conflict(
                    id.into(),
                    state.unwrap_or_else(|| "over".into()),
                ));
            }
            s => {
                return Err(RegistryError::Internal(anyhow!(
                    "gateway {} answered {s} to terminate {id}: {}",
                    rec.gateway,
                    String::from_utf8_lossy(&answer)
                )))
            }
        }
        Ok(self.store.session_get(id).await?.unwrap_or(rec))
    }
}

/// The internal endpoints peers call. Outside the token-authenticated API: each checks the
/// request's signature itself.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/internal/v1/sessions/{id}/terminate", post(peer_terminate))
}

/// The calling peer's name, or the refusal (the same for every reason; the reason is audited).
fn check_peer(
    gw: &Gateway,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Box<Response>> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let why = match &gw.peers.key {
        None => Err("this gateway has no cluster key"),
        Some(k) => k.verify(&gw.peers.seen, "POST", uri.path(), header, body),
    };
    why.map_err(|why| {
        let peer = header(super::sign::PEER).unwrap_or_default();
        gw.audit(
            "cluster.peer_refused",
            None,
            None,
            json!({"path": wardengate_api::text::inert(uri.path(), 200), "peer": wardengate_api::text::inert(&peer, wardengate_api::text::MAX_NAME), "why": why}),
        );
        Box::new(
            ApiError(
                StatusCode::FORBIDDEN,
                "not a signed request from a gateway of this cluster".into(),
            )
            .into_response(),
        )
    })
}

async fn peer_terminate(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = match check_peer(&st.gw, &uri, &headers, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let req: PeerTerminate = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError(
                StatusCode::BAD_REQUEST,
                format!("bad terminate request: {e}"),
            )
            .into_response()
        }
    };
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
    match r {
        Ok(r) => Json(json!({"id": r.id, "state": r.state.as_str()})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
