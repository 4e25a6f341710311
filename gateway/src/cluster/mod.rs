//! Several gateways on one PostgreSQL store.
//!
//! - **Leases**: every admitted session also holds a row in the store's `leases` table, counted
//!   against the four limits across all gateways under one advisory lock ([`ClusterLease`]); the
//!   gateway renews its leases with its heartbeat, every third of `[cluster] lease_ttl`.
//! - **Lost gateways**: a peer whose heartbeat is older than the TTL is declared lost by the
//!   first gateway that notices (under another lock): its leases go and its open sessions end
//!   `failed` with reason `gateway_lost` ([`Gateway::watch_cluster`]).
//! - **Routing**: an operation on a session another gateway owns is sent to that gateway's API,
//!   signed with the cluster key ([`sign`], [`forward`]).

pub mod forward;
pub mod peers;
pub mod sign;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wardengate_policy::{LimitDenial, Limits, Subject};

use crate::broker::Gateway;
use crate::store::{ClusterLease, LeaseRow};

/// Why the cluster did not grant a slot.
pub enum LeaseRefused {
    Full(LimitDenial),
    /// The store did not answer: admission fails closed.
    Unavailable(anyhow::Error),
}

impl Gateway {
    /// Count session `id` against the cluster's limits (a shared store only; the embedded store
    /// has one gateway, whose ledger is the whole count). `freed`: a session evicted for it.
    pub(crate) async fn cluster_lease(
        &self,
        id: &str,
        subject: &Subject<'_>,
        limits: &Limits,
        freed: Option<&str>,
    ) -> Result<Option<ClusterLease>, LeaseRefused> {
        if !self.store.shared() {
            return Ok(None);
        }
        let lease = LeaseRow {
            session_id: id.to_string(),
            gateway: self.name.clone(),
            actor: subject.actor.to_string(),
            target: subject.target.to_string(),
            policy: subject.policy.to_string(),
        };
        let ttl = self.cfg().config.cluster.lease_ttl;
        match self
            .store
            .lease_acquire(&lease, limits, "cluster", freed, ttl)
            .await
        {
            Ok(Ok(())) => Ok(Some(ClusterLease::new(self.store.clone(), id))),
            Ok(Err(d)) => Err(LeaseRefused::Full(d)),
            Err(e) => Err(LeaseRefused::Unavailable(e)),
        }
    }

    /// Join the cluster, then renew this gateway's heartbeat and leases every third of the TTL
    /// and declare lost the peers that stopped renewing theirs, until `stop`.
    pub async fn watch_cluster(self: Arc<Self>, api_url: String, stop: CancellationToken) {
        if !self.store.shared() {
            return;
        }
        if let Err(e) = self.store.gateway_join(&self.name, &api_url).await {
            tracing::error!("cannot join the cluster: {e:#}");
        }
        let ttl = self.cfg().config.cluster.lease_ttl;
        let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(200)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A peer is declared lost only by a gateway that has itself been renewing for a whole
        // TTL: after the database comes back, every live gateway gets a turn to renew first.
        let mut renewing_since: Option<Instant> = None;
        let mut lost_reported = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            match self.store.gateway_heartbeat(&self.name, ttl).await {
                Ok(true) => {
                    renewing_since.get_or_insert_with(Instant::now);
                    lost_reported = false;
                }
                Ok(false) => {
                    renewing_since = None;
                    if !lost_reported {
                        lost_reported = true;
                        self.declared_lost().await;
                    }
                    // Come back as a new member: the sessions it still runs hold no lease.
                    let _ = self.store.gateway_join(&self.name, &api_url).await;
                    continue;
                }
                Err(e) => {
                    if renewing_since.take().is_some() {
                        tracing::error!("cannot renew this gateway's heartbeat: {e:#}");
                    }
                    continue;
                }
            }
            if renewing_since.is_some_and(|t| t.elapsed() >= ttl) {
                for (gateway, ids) in self.reap(ttl).await {
                    tokio::spawn(self.clone().access_adopt(gateway.clone()));
                    // Off the heartbeat's loop: the object store may be slow or away, and the
                    // heartbeat must not wait for it.
                    tokio::spawn(self.clone().seal_lost_recordings(gateway, ids));
                }
            }
        }
    }

    /// Declare lost the peers that stopped renewing; their names and their sessions' ids.
    async fn reap(&self, ttl: Duration) -> Vec<(String, Vec<String>)> {
        let lost = match self.store.reap_lost(&self.name, ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot look for lost gateways: {e:#}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for l in lost {
            tracing::error!(gateway = %l.gateway, sessions = l.sessions.len(), "a gateway stopped renewing its heartbeat; its sessions are marked failed");
            self.audit(
                "gateway.lost",
                None,
                None,
                json!({"gateway": l.gateway, "noticed_by": self.name, "sessions": l.sessions.len(), "ttl_ms": ttl.as_millis() as u64}),
            );
            for s in &l.sessions {
                let mut s = s.clone();
                // A TCP session ends Boundary's way: terminated, its last state span closed.
                if s.protocol == wardengate_api::Protocol::Tcp {
                    let ended = wardengate_api::SessionState::Terminated;
                    crate::tcp::state::transition(&mut s, ended, Some("gateway_lost"));
                    if let Err(e) = self.store.session_update(&s).await {
                        tracing::warn!(session = %s.id, "cannot close a lost TCP session's states: {e:#}");
                    }
                }
                self.audit(
                    "session.end",
                    Some(&s.actor),
                    Some(&s.id),
                    json!({"reason": "gateway_lost", "state": s.state, "gateway": l.gateway, "noticed_by": self.name}),
                );
            }
            let mut ids: Vec<String> = l.sessions.iter().map(|s| s.id.clone()).collect();
            ids.extend(l.recent);
            out.push((l.gateway, ids));
        }
        out
    }

    /// A peer declared this gateway lost (it could not renew for a whole TTL): its sessions
    /// were ended in the store and their slots given to others, so it ends them here too.
    async fn declared_lost(&self) {
        self.access_let_go().await;
        let ids = self.registry.live_ids();
        tracing::error!(sessions = ids.len(), "this gateway was declared lost by a peer (it could not renew its heartbeat in time); ending its sessions");
        for id in ids {
            self.registry.end(
                &id,
                "gateway_lost",
                "wardengate: session closed: this gateway lost contact with the cluster".into(),
            );
        }
    }
}
