//! Approvals in a cluster. A request lives in the memory of the gateway whose login asked for it
//! (an SSH login waits there), and in the shared store with that gateway's name. Any gateway
//! lists every gateway's requests (from the store), and a decision or a withdrawal made on one
//! that does not hold the request is sent, signed, to the one that does: its waiting login
//! continues (or is refused) at once, as when the decision is made there.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wardengate_api as api;
use wardengate_protocols::session::now_ms;

use super::approvals::{shown_to, DecideError};
use super::lock;
use super::state::Kept;
use crate::broker::Gateway;

/// A peer's admission spends an approval this gateway holds, for its session `session`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerClaim {
    pub session: String,
}

/// A peer's decision (`approve`: yes or no) or, without `approve`, a withdrawal, by `by`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerDecision {
    pub by: String,
    pub approve: Option<bool>,
    pub reason: String,
}

impl Gateway {
    /// Requests the caller made or may decide, newest first: this gateway's, and in a cluster
    /// the others' from the store.
    pub async fn approval_list_all(
        &self,
        who: &str,
        operator: bool,
        mine: bool,
    ) -> Vec<api::ApprovalRequest> {
        let mut out = self.approval_list(who, operator, mine);
        if !self.store.shared() {
            return out;
        }
        let kept = match self.store.approval_all().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("cannot read the cluster's approval requests: {e:#}");
                return out;
            }
        };
        let groups = self.groups_of(who);
        out.extend(
            kept.iter()
                .filter_map(|body| serde_json::from_str::<Kept>(body).ok())
                .filter(|k| k.gateway != self.name && !k.gateway.is_empty())
                .filter(|k| shown_to(&k.wire, &k.approval, who, &groups, operator, mine))
                .map(|k| k.wire),
        );
        out.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
        out
    }

    /// The gateway of the cluster that holds request `id`, when it is another one.
    async fn approval_holder(&self, id: &str) -> Option<String> {
        if !self.store.shared() {
            return None;
        }
        let kept = self.store.approval_all().await.ok()?;
        kept.iter()
            .filter_map(|body| serde_json::from_str::<Kept>(body).ok())
            .find(|k| k.wire.id == id)
            .map(|k| k.gateway)
            .filter(|g| g != &self.name && !g.is_empty())
    }

    /// Decide (`approve` = Some) or withdraw (None) request `id` as `who`, wherever it is held.
    pub async fn approval_act_anywhere(
        &self,
        id: &str,
        who: &str,
        approve: Option<bool>,
        reason: &str,
    ) -> Result<api::ApprovalRequest, DecideError> {
        let here = match approve {
            Some(yes) => self.approval_decide(id, who, yes, reason),
            None => self.approval_withdraw(id, who),
        };
        let Err(DecideError::NotFound(_)) = &here else {
            return here;
        };
        let Some(holder) = self.approval_holder(id).await else {
            return here;
        };
        let body = serde_json::to_vec(&PeerDecision {
            by: who.into(),
            approve,
            reason: reason.into(),
        })
        .unwrap_or_default();
        let path = format!("/internal/v1/approvals/{id}/decide");
        let (status, answer) = self.to_peer(&holder, &path, body).await.map_err(|e| {
            DecideError::Unavailable(format!(
                "gateway {holder}, which holds {id}, did not answer: {e:#}"
            ))
        })?;
        let message = || {
            serde_json::from_slice::<api::ApiError>(&answer)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("gateway {holder} answered {status}"))
        };
        match status.as_u16() {
            200 => serde_json::from_slice(&answer).map_err(|e| {
                DecideError::Unavailable(format!(
                    "gateway {holder} sent an unreadable request: {e}"
                ))
            }),
            403 => Err(DecideError::Forbidden(message())),
            404 => Err(DecideError::NotFound(id.into())),
            409 => Err(DecideError::Conflict(message())),
            _ => Err(DecideError::Unavailable(message())),
        }
    }

    /// The decision record of an approved request, as admission keeps it.
    pub(crate) fn approval_record(wire: &api::ApprovalRequest) -> Value {
        let by: Vec<&str> = wire.decisions.iter().map(|d| d.by.as_str()).collect();
        let at = wire.decisions.last().map_or(0, |d| d.at_ms);
        json!({"request": wire.id, "approved_by": by, "approved_ms": at})
    }

    /// For a login that reconnects through another gateway than the one its approval was asked
    /// on (a PostgreSQL or RDP client): an approved, unused request for the same (actor, target,
    /// account, policy) that another gateway holds, spent there for session `session`. `None`
    /// when there is none (or one here), and admission asks as usual.
    pub(crate) async fn approval_claim_elsewhere(
        &self,
        wire: (&str, &str, &str, &str),
        session: &str,
    ) -> Option<(String, Value)> {
        if !self.store.shared() {
            return None;
        }
        let (actor, target, account, policy) = wire;
        let now = now_ms();
        let same = |w: &api::ApprovalRequest| {
            w.actor == actor && w.target == target && w.account == account && w.policy == policy
        };
        let approved_here = lock(&self.approvals.0).iter().any(|r| {
            same(&r.wire)
                && r.wire.state == api::ApprovalState::Approved
                && r.valid_until_ms.is_some_and(|v| v > now)
        });
        if approved_here {
            return None;
        }
        let kept = self.store.approval_all().await.ok()?;
        let k = kept
            .iter()
            .filter_map(|body| serde_json::from_str::<Kept>(body).ok())
            .find(|k| {
                k.gateway != self.name
                    && same(&k.wire)
                    && k.wire.state == api::ApprovalState::Approved
                    && k.valid_until_ms.is_some_and(|v| v > now)
            })?;
        let body = serde_json::to_vec(&PeerClaim {
            session: session.into(),
        })
        .ok()?;
        let path = format!("/internal/v1/approvals/{}/claim", k.wire.id);
        match self.to_peer(&k.gateway, &path, body).await {
            Ok((status, answer)) if status.is_success() => {
                let wire: api::ApprovalRequest = serde_json::from_slice(&answer).ok()?;
                Some((wire.id.clone(), Self::approval_record(&wire)))
            }
            Ok((status, _)) => {
                tracing::info!(request = %k.wire.id, gateway = %k.gateway, %status, "the approval could not be claimed (spent or expired meanwhile)");
                None
            }
            Err(e) => {
                tracing::warn!(request = %k.wire.id, gateway = %k.gateway, "cannot claim the approval: {e:#}");
                None
            }
        }
    }

    /// A peer's admission spends request `id` for its session: approved, valid and unused,
    /// else `Conflict`.
    pub fn approval_claim(
        &self,
        id: &str,
        session: &str,
    ) -> Result<api::ApprovalRequest, DecideError> {
        let now = now_ms();
        let wire = {
            let mut reqs = lock(&self.approvals.0);
            let r = reqs
                .iter_mut()
                .find(|r| r.wire.id == id)
                .ok_or_else(|| DecideError::NotFound(id.into()))?;
            if r.wire.state != api::ApprovalState::Approved
                || r.valid_until_ms.is_none_or(|v| v <= now)
            {
                return Err(DecideError::Conflict(format!(
                    "{id} is {} (not an approval to use)",
                    r.wire.state.as_str()
                )));
            }
            // Spent under the same lock that checked it: two peers claiming at once get it once.
            let wire = r.wire.clone();
            r.wire.state = api::ApprovalState::Used;
            wire
        };
        self.approval_used(id, session);
        Ok(wire)
    }
}
