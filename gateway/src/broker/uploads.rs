//! The gateway's side of recordings in object storage: the uploader task over the spool
//! (`recording/spool.rs`), its last pass at shutdown, and sealing a lost peer's recordings from
//! what reached the bucket. Outages and recoveries are audited here.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wardengate_protocols::session::now_ms;

use super::Gateway;

impl Gateway {
    /// The uploader: a pass whenever a recorder closes a chunk or a seal, and every few
    /// seconds; while the store fails, passes back off (up to 15 s) and the spool grows.
    /// Outages and recoveries are audited once each.
    pub async fn upload_recordings(self: Arc<Self>, stop: CancellationToken) {
        let Some(spool) = self.recordings.spool.clone() else {
            return;
        };
        let mut backoff = Duration::from_secs(1);
        let mut down_since: Option<u64> = None;
        loop {
            let wait = match spool.pass().await {
                Ok(_) => {
                    if let Some(since) = down_since.take() {
                        tracing::info!(bucket = %spool.bucket.url(), "the object store answers again; the spool is uploading");
                        self.audit("recording.store_resumed", None, None, json!({"bucket": spool.bucket.url(), "down_ms": now_ms().saturating_sub(since), "spool_bytes": spool.used()}));
                    }
                    backoff = Duration::from_secs(1);
                    Duration::from_secs(5)
                }
                Err(e) => {
                    if down_since.is_none() {
                        down_since = Some(now_ms());
                        tracing::error!(bucket = %spool.bucket.url(), "cannot upload recordings; they wait in the spool: {e}");
                        self.audit("recording.store_unavailable", None, None, json!({"bucket": spool.bucket.url(), "error": wardengate_api::text::inert(&e, 500), "spool_bytes": spool.used()}));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                    backoff
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                // While the store fails, a closed chunk does not cut the back-off short.
                _ = spool.woken(), if down_since.is_none() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// At shutdown: one last pass (bounded), so what was sealed is in the bucket.
    pub async fn upload_last(&self, grace: Duration) {
        if let Some(spool) = &self.recordings.spool {
            match tokio::time::timeout(grace, spool.pass()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("recordings left in the spool ({e}); they are uploaded at the next start"),
                Err(_) => tracing::warn!("uploading recordings took longer than {grace:?}; the rest is uploaded at the next start"),
            }
        }
    }

    /// Seal the recordings of a lost gateway's sessions from what reached the bucket. A
    /// recording that cannot be sealed now (the object store is away) is tried again, backing
    /// off to every 5 minutes, for as long as this gateway runs.
    pub(crate) async fn seal_lost_recordings(self: Arc<Self>, gateway: String, ids: Vec<String>) {
        let Some(spool) = self.recordings.spool.clone() else {
            return;
        };
        let mut left = ids;
        let mut wait = Duration::from_secs(2);
        while !left.is_empty() {
            let mut again = Vec::new();
            for id in left {
                match spool.seal_lost(&id, self.recordings.key()).await {
                    Ok(Some(seal)) => self.audit(
                        "recording.recovered",
                        None,
                        Some(&id),
                        json!({"status": "truncated", "chunks": seal.chunks, "events": seal.events, "raw_bytes": seal.raw_bytes, "gateway": gateway, "sealed_by": self.name}),
                    ),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(session = %id, "cannot seal the recording of a lost gateway's session yet: {e:#}");
                        again.push(id);
                    }
                }
            }
            left = again;
            if !left.is_empty() {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(300));
            }
        }
    }
}
