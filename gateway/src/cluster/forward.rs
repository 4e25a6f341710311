//! Operations on a session another gateway owns: sent to the owner's API as a signed request
//! ([`super::sign`]), answered by the owner's internal endpoints (`api/peers.rs`), which accept
//! nothing else.

use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::broker::Gateway;
use crate::registry::RegistryError;
use crate::store::SessionRecord;

/// Most of a peer's answer read (the rest is dropped).
const MAX_ANSWER: usize = 64 << 10;

/// The body of a peer's terminate request.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerTerminate {
    pub by: String,
    pub reason: String,
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
        // An answer is a short JSON object: read at most MAX_ANSWER of it.
        let mut resp = resp;
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
