//! What several gateways on one store share beyond the tables every store has: who is up and
//! where its API answers, and the concurrency slots of every admitted session (leases that lapse
//! unless their gateway renews them).

use std::sync::Arc;

use super::{SessionRecord, Store};

/// One admitted session's slot in the cluster's count.
#[derive(Debug, Clone)]
pub struct LeaseRow {
    pub session_id: String,
    pub gateway: String,
    pub actor: String,
    pub target: String,
    pub policy: String,
}

/// A gateway that stopped renewing its heartbeat, and its sessions, now ended `failed` with
/// reason `gateway_lost` by the peer that noticed.
#[derive(Debug, Clone)]
pub struct Lost {
    pub gateway: String,
    /// Its open sessions, ended now (`failed`, `gateway_lost`).
    pub sessions: Vec<SessionRecord>,
    /// Sessions that had ended there in the last day (the newest 1,000): their recordings may
    /// not have been sealed in the object store yet.
    pub recent: Vec<String>,
}

/// A gateway of the cluster as the store knows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayRow {
    pub name: String,
    pub api_url: String,
    /// `up` or `lost`.
    pub state: String,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
}

/// A session's slot in the cluster's count; given back (queued) when dropped, so that every exit
/// path releases it as the local ledger's lease does.
pub struct ClusterLease {
    store: Arc<dyn Store>,
    session: String,
}

impl Drop for ClusterLease {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.store
                .lease_release_later(std::mem::take(&mut self.session));
        }
    }
}

impl ClusterLease {
    /// The slot of `session`, held in `store` (already counted there).
    pub fn new(store: Arc<dyn Store>, session: &str) -> ClusterLease {
        ClusterLease {
            store,
            session: session.to_string(),
        }
    }

    /// Let go of this handle without giving the slot back: another handle of the same session
    /// (the one its registry entry holds) gives it back when the session ends.
    pub fn keep(mut self) {
        self.session.clear();
    }
}
