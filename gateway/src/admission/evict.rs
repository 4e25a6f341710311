//! `on_limit = "evict_oldest"`: the actor's oldest session makes room for a new one, here or
//! on the gateway of the cluster that runs it.

use serde_json::json;
use wardengate_policy::{Limits, OnLimit};

use crate::broker::Gateway;
use crate::store::SessionRecord;

impl Gateway {
    /// The actor's oldest session made room for `rec` (`on_limit = "evict_oldest"`).
    pub(super) fn evict(&self, victim: &str, rec: &SessionRecord, limits: &Limits) {
        debug_assert_eq!(limits.on_actor_limit, OnLimit::EvictOldest);
        let delivered = self
            .registry
            .end(victim, "concurrency", eviction_message(rec, limits));
        self.audit(
            "session.evicted",
            Some(&rec.actor),
            Some(victim),
            json!({"reason": "concurrency", "by_session": rec.id, "delivered": delivered}),
        );
    }

    /// The actor's oldest session in the cluster made room: ended here when this gateway runs
    /// it (its own ledger was not full, the cluster was), else by the gateway that runs it (a
    /// signed request; that gateway audits it too).
    pub(super) async fn evict_elsewhere(&self, victim: &str, rec: &SessionRecord, limits: &Limits) {
        if self.registry.live_record(victim).is_some() {
            return self.evict(victim, rec, limits);
        }
        let sent = match self.runs_elsewhere(victim).await {
            Ok(Some(owner)) => {
                let body = crate::cluster::forward::PeerTerminate {
                    by: "wardengate".into(),
                    reason: eviction_message(rec, limits),
                    evict: true,
                };
                let path = format!("/internal/v1/sessions/{victim}/terminate");
                match serde_json::to_vec(&body) {
                    Ok(b) => self
                        .to_peer(&owner, &path, b)
                        .await
                        .map(|(s, _)| s.is_success()),
                    Err(e) => Err(e.into()),
                }
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        if let Err(e) = &sent {
            tracing::warn!(session = %victim, "cannot evict a session another gateway runs: {e:#}");
        }
        self.audit(
            "session.evicted",
            Some(&rec.actor),
            Some(victim),
            json!({"reason": "concurrency", "by_session": rec.id, "elsewhere": true,
                   "delivered": sent.unwrap_or(false)}),
        );
    }
}

/// What a user is told when their oldest session makes room for `rec`.
fn eviction_message(rec: &SessionRecord, limits: &Limits) -> String {
    format!(
        "wardengate: session closed: {} opened a newer session and may hold at most {} \
         (max_sessions_per_user, on_limit = evict_oldest)",
        rec.actor,
        limits.actor.unwrap_or(0)
    )
}
