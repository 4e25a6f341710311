//! Access sessions across a cluster: rules on `shared` resources (a backend every gateway
//! reaches alike) count the holders of every gateway before they are removed, and the live
//! sessions of a gateway declared lost are taken over by the gateway that noticed, where every
//! rule they hold is on a shared resource; the rest are named in the audit (`access.stranded`):
//! their rules stay until their gateway is back.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;
use wardengate_api::{self as api, AccessState};

use super::book::Key;
use crate::broker::Gateway;
use crate::config::Resource;
use crate::store::AccessQuery;

/// States in which a session holds its rules (an `EXPIRING` one is letting go of them).
fn holding(s: &api::AccessSession) -> bool {
    matches!(
        s.state,
        AccessState::Pending | AccessState::Active | AccessState::Partial
    )
}

impl Gateway {
    /// Of `items` (rules `session` lets go of), those on shared resources that a live session
    /// on another gateway holds: they are released here, not removed. When the store cannot
    /// say, none (removing fails closed: a holder elsewhere applies it again at its restart).
    pub(super) async fn access_held_elsewhere(&self, items: &[(Resource, Key)]) -> HashSet<Key> {
        let mut out = HashSet::new();
        if !self.store.shared() || !items.iter().any(|(r, _)| r.shared) {
            return out;
        }
        let q = AccessQuery {
            live_only: true,
            limit: u32::MAX,
            ..Default::default()
        };
        let rows = match self.store.access_list(q).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot tell whether another gateway holds a shared rule: {e:#}");
                return out;
            }
        };
        for row in rows.iter().filter(|r| r.gateway != self.name) {
            let Ok(s) = serde_json::from_str::<api::AccessSession>(&row.body) else {
                continue;
            };
            let Ok(ip) = s.address.parse::<IpAddr>() else {
                continue;
            };
            if !holding(&s) {
                continue;
            }
            for r in s.rules.iter().filter(|r| r.state.held()) {
                let key = Key::new(&r.resource, ip);
                if items.iter().any(|(res, k)| res.shared && *k == key) {
                    out.insert(key);
                }
            }
        }
        out
    }

    /// Gateway `lost` was declared lost: take over its sessions whose every rule is on a
    /// shared resource configured here (they expire, stop and are reconciled here from now
    /// on); name the others in the audit.
    pub async fn access_adopt(self: Arc<Self>, lost: String) {
        let Some(sessions) = self.access_held_by(&lost).await else {
            return;
        };
        let cfg = self.cfg();
        let mut adopted = Vec::new();
        for mut s in sessions {
            let resources: Vec<&str> = s.rules.iter().map(|r| r.resource.as_str()).collect();
            let shared = s
                .rules
                .iter()
                .all(|r| cfg.resources.get(&r.resource).is_some_and(|x| x.shared));
            if !shared {
                self.audit(
                    "access.stranded",
                    Some(&s.user),
                    Some(&s.id),
                    json!({"gateway": lost, "noticed_by": self.name, "address": s.address,
                           "resources": resources, "expires": s.expires_at,
                           "why": "its rules are on resources only their own gateway reaches \
                                   (not shared): they stay until that gateway is back"}),
                );
                continue;
            }
            s.gateway = self.name.clone();
            // Ours in the store first: a restart of this gateway reconciles it from now on.
            if let Err(e) = self.access_keep(&s).await {
                tracing::error!(access = %s.id, "cannot take over a lost gateway's access session: {e:#}");
                continue;
            }
            self.audit(
                "access.adopted",
                Some(&s.user),
                Some(&s.id),
                json!({"from": lost, "by": self.name, "address": s.address, "resources": resources,
                       "state": s.state, "expires": s.expires_at}),
            );
            adopted.push(s);
        }
        if !adopted.is_empty() {
            let why = format!("missing when the sessions of lost gateway {lost} were taken over");
            self.access_take_back(adopted, &why).await;
        }
    }

    /// This gateway was declared lost (it could not renew its heartbeat): the sessions a peer
    /// took over meanwhile are no longer its own; it lets go of them without removing anything.
    pub async fn access_let_go(&self) {
        let ids: Vec<String> = self.access.live().keys().cloned().collect();
        for id in ids {
            let owner = match self.store.access_get(&id).await {
                Ok(Some(row)) => row.gateway,
                _ => continue,
            };
            if owner == self.name {
                continue;
            }
            let Some(s) = self.access.live().remove(&id) else {
                continue;
            };
            if let Ok(ip) = s.address.parse::<IpAddr>() {
                for r in &s.rules {
                    self.access.book.let_go(&Key::new(&r.resource, ip), &s.id);
                }
            }
            tracing::warn!(access = %id, gateway = %owner, "an access session was taken over by another gateway while this one was lost");
        }
    }
}
