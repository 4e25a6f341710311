//! Operations on a session another gateway owns: sent to the owner's API as a signed request
//! ([`super::sign`]), answered by the owner's internal endpoints (`api/peers.rs`), which accept
//! nothing else.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::broker::Gateway;
use crate::registry::RegistryError;
use crate::store::SessionRecord;

/// Most of a peer's short answer read (the rest is dropped).
const MAX_ANSWER: usize = 64 << 10;
/// How long a peer may take to give a short answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of a peer's shadow request: who watches (the asking gateway checked that they may).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerShadow {
    pub observer: String,
}

/// A handoff action (offer, accept, decline) a peer's caller makes on a session this gateway
/// runs: who (the asking gateway authenticated them), with which permissions, and the body they
/// sent.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerAct {
    pub caller: String,
    pub can: Vec<String>,
    pub body: String,
}

/// The body of a peer's terminate request.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerTerminate {
    pub by: String,
    pub reason: String,
    /// Ended to make room for the actor's newer session elsewhere (`on_limit =
    /// "evict_oldest"`): reason `concurrency`, `reason` is the message the user is shown.
    #[serde(default)]
    pub evict: bool,
}

impl Gateway {
    /// Send a signed `POST` to gateway `owner`'s internal endpoint `path`: the response, whose
    /// body the caller reads (a short answer, or a stream). `deadline`: for the whole exchange.
    pub(crate) async fn post_to_peer(
        &self,
        owner: &str,
        path: &str,
        body: Vec<u8>,
        deadline: Option<Duration>,
    ) -> Result<reqwest::Response> {
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
        if let Some(d) = deadline {
            req = req.timeout(d);
        }
        for (k, v) in key.sign("POST", path, &self.name, &body)? {
            req = req.header(k, v);
        }
        req.body(body)
            .send()
            .await
            .with_context(|| format!("gateway {owner} did not answer at {url}"))
    }

    /// [`post_to_peer`](Self::post_to_peer) for a short answer: its status and (at most
    /// [`MAX_ANSWER`] of) its body, within [`PEER_TIMEOUT`].
    pub(crate) async fn to_peer(
        &self,
        owner: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut resp = self
            .post_to_peer(owner, path, body, Some(PEER_TIMEOUT))
            .await?;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut answer = Vec::new();
        while let Some(chunk) = resp.chunk().await.context("reading the peer's answer")? {
            let room = MAX_ANSWER.saturating_sub(answer.len());
            answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if answer.len() >= MAX_ANSWER {
                break;
            }
        }
        Ok((status, Bytes::from(answer)))
    }

    /// The gateway that runs live session `id`, when it is another one of the cluster.
    pub async fn runs_elsewhere(&self, id: &str) -> Result<Option<String>> {
        if !self.store.shared() || self.registry.live_record(id).is_some() {
            return Ok(None);
        }
        Ok(self
            .store
            .session_get(id)
            .await?
            .filter(|r| !r.state.is_terminal() && r.gateway != self.name)
            .map(|r| r.gateway))
    }

    /// Terminate session `id` wherever it runs: here, or on the gateway that owns it (a signed
    /// request; the owner ends it and writes its end before it answers).
    pub async fn terminate_anywhere(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<SessionRecord, RegistryError> {
        let Some(owner) = self.runs_elsewhere(id).await? else {
            return self.registry.terminate(&*self.store, id, by, reason).await;
        };
        let body = serde_json::to_vec(&PeerTerminate {
            by: by.into(),
            reason: reason.into(),
            evict: false,
        })
        .map_err(anyhow::Error::from)?;
        let path = format!("/internal/v1/sessions/{id}/terminate");
        let (status, answer) = self
            .to_peer(&owner, &path, body)
            .await
            .with_context(|| format!("cannot reach gateway {owner}, which runs session {id}"))?;
        let now = self.store.session_get(id).await?;
        match (status, now) {
            (StatusCode::OK, Some(r)) => Ok(r),
            (StatusCode::OK | StatusCode::NOT_FOUND, None) => {
                Err(RegistryError::NotFound(id.into()))
            }
            (StatusCode::CONFLICT, r) => Err(RegistryError::Conflict(
                id.into(),
                r.map_or_else(|| "over".into(), |r| r.state.to_string()),
            )),
            (s, _) => Err(RegistryError::Internal(anyhow!(
                "gateway {owner} answered {s} to terminate {id}: {}",
                String::from_utf8_lossy(&answer)
            ))),
        }
    }
}
