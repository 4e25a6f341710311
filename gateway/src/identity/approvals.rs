//! Approvals: a policy's `approval = { approvers, required, timeout, valid_for }` holds each
//! session until enough approvers say yes.
//!
//! Admission makes a request (`req_…`) for (actor, target, account, policy), or finds the one
//! already waiting. SSH shows it and waits (the person presses Ctrl-C to withdraw); PostgreSQL
//! and RDP are refused with its id, and a connection within `valid_for` after the approval is
//! admitted on it, once. Approvers decide through the API (`wgctl approval approve|deny`): nobody
//! decides on their own request, an approver must match `approvers`, and `required = 2` needs two
//! different people. A request nobody decided within `timeout` is denied (`approval_timeout`).
//! Every step is audited (`approval.requested`, `approval.approved`, `approval.granted`,
//! `approval.denied`, `approval.withdrawn`, `approval.used`).
//!
//! An SSH login that waits is a session in state `awaiting_approval` (listed like any other);
//! the login that follows the approval continues it under the same id, and a denial, timeout
//! or withdrawal ends it `denied` with that reason.
//!
//! Requests are kept in the store after each change and read back at start: a PostgreSQL or
//! RDP request still waits for its approvers across a restart, and an approved one still admits
//! within `valid_for`; an SSH login's wait does not survive it (the request is withdrawn, the
//! waiting session closed `failed` at start like any left open). The audit keeps the history.

use serde_json::{json, Value};
use tokio::sync::watch;
use wardengate_api as api;
use wardengate_policy::Approval;
use wardengate_protocols::session::now_ms;

use super::state::Request;
use super::{lock, Outcome};
use crate::broker::Gateway;
use crate::store::SessionRecord;

/// The most requests kept (decided ones are dropped first, oldest first).
const MAX_REQUESTS: usize = 4096;
/// Decided requests are kept this long for `approval list`.
const KEEP_DECIDED_MS: u64 = 24 * 3600 * 1000;

/// What admission learns.
pub enum Gate {
    /// An approval that admits this session: its id, and the decision's record.
    Approved(String, Value),
    /// Waiting: the request (new or already open) and its answer.
    Waiting(api::ApprovalRequest, watch::Receiver<Outcome>, bool),
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval request {0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// In a cluster: the gateway that holds the request did not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// Whether `who` (in `groups`) sees request `wire`: their own, and (unless `mine`) those they
/// may decide, or all for an operator.
pub(crate) fn shown_to(
    wire: &api::ApprovalRequest,
    approval: &Approval,
    who: &str,
    groups: &[String],
    operator: bool,
    mine: bool,
) -> bool {
    wire.actor == who || (!mine && (operator || approval.may_approve(who, groups)))
}

fn human_ms(ms: u64) -> String {
    wardengate_recorder::time::human(std::time::Duration::from_millis(ms))
}

impl Gateway {
    /// The approval this admission needs: one granted and unused, or the request to wait on.
    pub(crate) fn approval_gate(
        &self,
        actor: &str,
        target: &str,
        account: &str,
        policy: &str,
        protocol: api::Protocol,
        approval: &Approval,
    ) -> Gate {
        let now = now_ms();
        let mut reqs = lock(&self.approvals.0);
        let same = |r: &Request| {
            r.wire.actor == actor
                && r.wire.target == target
                && r.wire.account == account
                && r.wire.policy == policy
        };
        if let Some(r) = reqs.iter().find(|r| {
            same(r)
                && r.wire.state == api::ApprovalState::Approved
                && r.valid_until_ms.is_some_and(|v| v > now)
        }) {
            return Gate::Approved(r.wire.id.clone(), Self::approval_record(&r.wire));
        }
        if let Some(r) = reqs
            .iter()
            .find(|r| same(r) && r.wire.state == api::ApprovalState::Pending)
        {
            return Gate::Waiting(r.wire.clone(), r.done.subscribe(), false);
        }
        if reqs.len() >= MAX_REQUESTS {
            let oldest = reqs
                .iter()
                .position(|r| r.wire.state != api::ApprovalState::Pending)
                .unwrap_or(0);
            let gone = reqs.remove(oldest);
            self.store.approval_remove_later(vec![gone.wire.id]);
        }
        let (tx, rx) = watch::channel(None);
        let wire = api::ApprovalRequest {
            id: crate::util::new_id("req_"),
            actor: actor.into(),
            target: target.into(),
            account: account.into(),
            policy: policy.into(),
            protocol,
            state: api::ApprovalState::Pending,
            approvers: approval.approvers.clone(),
            required: approval.required,
            decisions: Vec::new(),
            created_ms: now,
            expires_ms: now + approval.timeout.get().as_millis() as u64,
            reason: None,
        };
        reqs.push(Request {
            wire: wire.clone(),
            approval: approval.clone(),
            expires_ms: wire.expires_ms,
            valid_until_ms: None,
            waited: protocol == api::Protocol::Ssh,
            done: tx,
            rows: Vec::new(),
        });
        if let Some(r) = reqs.last() {
            self.store
                .approval_put_later(r.wire.id.clone(), r.kept(&self.name));
        }
        Gate::Waiting(wire, rx, true)
    }

    /// An SSH login waits on request `id` as session `row` (`awaiting_approval`).
    pub(crate) fn approval_waits(&self, id: &str, row: SessionRecord) {
        let mut reqs = lock(&self.approvals.0);
        if let Some(r) = reqs.iter_mut().find(|r| r.wire.id == id) {
            r.rows.retain(|x| x.id != row.id);
            r.rows.push(row);
        }
    }

    /// The sessions that waited on a request that will not admit them end `denied`, with the
    /// request's reason.
    fn end_waiting(&self, rows: Vec<SessionRecord>, reason: &str, detail: &str) {
        let now = now_ms();
        for mut rec in rows {
            rec.state = api::SessionState::Denied;
            rec.ended_ms = Some(now);
            rec.end_reason = Some(reason.into());
            rec.end_detail = Some(detail.into());
            self.store.session_update_later(rec);
        }
    }

    /// Admission went through on an approved request: it is spent.
    pub(crate) fn approval_used(&self, id: &str, session: &str) {
        let mut reqs = lock(&self.approvals.0);
        if let Some(r) = reqs.iter_mut().find(|r| r.wire.id == id) {
            r.wire.state = api::ApprovalState::Used;
            self.store
                .approval_put_later(r.wire.id.clone(), r.kept(&self.name));
            r.rows.retain(|x| x.id != session);
            let others = std::mem::take(&mut r.rows);
            let actor = r.wire.actor.clone();
            drop(reqs);
            // Two logins waited on one request; the approval admits one of them.
            self.end_waiting(
                others,
                "approval_used",
                &format!("approval {id} admitted another session ({session})"),
            );
            self.audit(
                "approval.used",
                Some(&actor),
                Some(session),
                json!({"request": id}),
            );
        }
    }

    /// The groups `who` is a member of (none for the admin token).
    pub(crate) fn groups_of(&self, who: &str) -> Vec<String> {
        self.cfg()
            .users
            .get(who)
            .map(|u| u.groups.clone())
            .unwrap_or_default()
    }

    /// Announce a new request to `[approvals] webhook_url`, in the background: up to four
    /// tries (1 s, 2 s, 4 s apart), each failure logged; nothing waits for it.
    pub(crate) fn announce_approval(&self, r: &api::ApprovalRequest) {
        let Some(url) = self.cfg().config.approvals.webhook_url.clone() else {
            return;
        };
        let body = json!({
            "request": r.id, "actor": r.actor, "target": r.target, "account": r.account,
            "policy": r.policy, "protocol": r.protocol, "approvers": r.approvers,
            "required": r.required, "expires_ms": r.expires_ms,
            "approve": format!("wgctl approval approve {} --reason \"...\"", r.id),
            "list": format!("{}/api/v1/approvals", self.page_origin()),
        });
        let id = r.id.clone();
        tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(request = %id, "approval webhook: no HTTP client: {e}");
                    return;
                }
            };
            for attempt in 0..4u32 {
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_secs(1 << (attempt - 1))).await;
                }
                match client.post(&url).json(&body).send().await {
                    Ok(resp) if resp.status().is_success() => return,
                    Ok(resp) => {
                        tracing::warn!(request = %id, attempt, status = %resp.status(), "approval webhook refused")
                    }
                    Err(e) => {
                        tracing::warn!(request = %id, attempt, "approval webhook failed: {e}")
                    }
                }
            }
            tracing::error!(request = %id, "approval webhook: gave up after 4 tries");
        });
    }

    /// The prompt SSH shows while it waits.
    pub(crate) fn approval_prompt(r: &api::ApprovalRequest) -> String {
        format!(
            "waiting for approval {} (approvers: {}); Ctrl-C to withdraw",
            r.id,
            r.approvers
                .iter()
                .map(|a| a.strip_prefix("group:").unwrap_or(a))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Requests, newest first: `who` sees their own and those they may decide (operators:
    /// all); `mine` only their own.
    pub fn approval_list(
        &self,
        who: &str,
        operator: bool,
        mine: bool,
    ) -> Vec<api::ApprovalRequest> {
        let groups = self.groups_of(who);
        let reqs = lock(&self.approvals.0);
        let mut out: Vec<api::ApprovalRequest> = reqs
            .iter()
            .filter(|r| shown_to(&r.wire, &r.approval, who, &groups, operator, mine))
            .map(|r| r.wire.clone())
            .collect();
        out.reverse();
        out
    }

    /// `who` approves (`yes`) or denies request `id`.
    pub fn approval_decide(
        &self,
        id: &str,
        who: &str,
        yes: bool,
        reason: &str,
    ) -> Result<api::ApprovalRequest, DecideError> {
        let groups = self.groups_of(who);
        let now = now_ms();
        let mut reqs = lock(&self.approvals.0);
        let r = reqs
            .iter_mut()
            .find(|r| r.wire.id == id)
            .ok_or_else(|| DecideError::NotFound(id.into()))?;
        if r.wire.actor == who {
            return Err(DecideError::Forbidden(format!(
                "{who} asked for {id}: nobody decides on their own request"
            )));
        }
        if !r.approval.may_approve(who, &groups) {
            return Err(DecideError::Forbidden(format!(
                "{who} is not an approver of {id} (approvers: {})",
                r.approval.approvers.join(", ")
            )));
        }
        if r.wire.state != api::ApprovalState::Pending {
            return Err(DecideError::Conflict(format!(
                "{id} is {} already",
                r.wire.state.as_str()
            )));
        }
        if r.wire.decisions.iter().any(|d| d.by == who) {
            return Err(DecideError::Conflict(format!(
                "{who} approved {id} already; it needs {} different approvers",
                r.wire.required
            )));
        }
        r.wire.decisions.push(api::ApprovalDecision {
            by: who.into(),
            approved: yes,
            reason: reason.into(),
            at_ms: now,
        });
        let detail = json!({"request": id, "by": who, "reason": reason, "target": r.wire.target,
                            "policy": r.wire.policy});
        let actor = r.wire.actor.clone();
        let (kind, outcome) = if !yes {
            r.wire.state = api::ApprovalState::Denied;
            r.wire.reason = Some(format!("denied by {who}: {reason}"));
            (
                "approval.denied",
                Some(Err(format!(
                    "wardengate: access denied: approval {id} was denied by {who}: {reason}"
                ))),
            )
        } else if r.wire.decisions.len() as u32 >= r.wire.required {
            r.wire.state = api::ApprovalState::Approved;
            r.valid_until_ms = Some(now + r.approval.valid_for.get().as_millis() as u64);
            ("approval.granted", Some(Ok(())))
        } else {
            ("approval.approved", None)
        };
        self.store
            .approval_put_later(r.wire.id.clone(), r.kept(&self.name));
        let denied = matches!(outcome, Some(Err(_)));
        let rows = if denied {
            std::mem::take(&mut r.rows)
        } else {
            Vec::new()
        };
        if let Some(o) = outcome {
            let _ = r.done.send(Some(o));
        }
        let wire = r.wire.clone();
        drop(reqs);
        self.end_waiting(
            rows,
            "approval_denied",
            wire.reason.as_deref().unwrap_or("denied"),
        );
        self.audit(kind, Some(&actor), None, detail);
        Ok(wire)
    }

    /// The requester withdraws a waiting request.
    pub fn approval_withdraw(
        &self,
        id: &str,
        who: &str,
    ) -> Result<api::ApprovalRequest, DecideError> {
        let mut reqs = lock(&self.approvals.0);
        let r = reqs
            .iter_mut()
            .find(|r| r.wire.id == id && r.wire.actor == who)
            .ok_or_else(|| DecideError::NotFound(id.into()))?;
        if r.wire.state != api::ApprovalState::Pending {
            return Err(DecideError::Conflict(format!(
                "{id} is {} already",
                r.wire.state.as_str()
            )));
        }
        r.wire.state = api::ApprovalState::Withdrawn;
        r.wire.reason = Some("withdrawn by the requester".into());
        let _ = r
            .done
            .send(Some(Err("wardengate: approval withdrawn".into())));
        let rows = std::mem::take(&mut r.rows);
        self.store
            .approval_put_later(r.wire.id.clone(), r.kept(&self.name));
        let wire = r.wire.clone();
        drop(reqs);
        self.end_waiting(rows, "approval_withdrawn", "withdrawn by the requester");
        self.audit(
            "approval.withdrawn",
            Some(who),
            None,
            json!({"request": id}),
        );
        Ok(wire)
    }

    /// The requests the store kept, at start: undecided ones of PostgreSQL and RDP wait on (their
    /// people connect again once approved), an approved one not used yet still admits within its
    /// `valid_for`; an SSH login's wait did not survive the restart, so its request is withdrawn.
    pub async fn load_approvals(&self) {
        let kept = match self.store.approval_all().await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!("cannot read the approval requests kept: {e:#}");
                return;
            }
        };
        let mut loaded = Vec::new();
        for body in kept {
            let Ok(k) = serde_json::from_str::<super::state::Kept>(&body) else {
                tracing::warn!("an approval request in the store does not parse; skipped");
                continue;
            };
            let (done, _) = watch::channel(None);
            let mut r = Request {
                wire: k.wire,
                approval: k.approval,
                expires_ms: k.expires_ms,
                valid_until_ms: k.valid_until_ms,
                waited: k.waited,
                done,
                rows: Vec::new(),
            };
            if r.waited && r.wire.state == api::ApprovalState::Pending {
                r.wire.state = api::ApprovalState::Withdrawn;
                r.wire.reason = Some("the gateway restarted while the ssh login waited".into());
                self.store
                    .approval_put_later(r.wire.id.clone(), r.kept(&self.name));
            }
            loaded.push(r);
        }
        loaded.sort_by_key(|r| r.wire.created_ms);
        let n = loaded.len();
        lock(&self.approvals.0).extend(loaded);
        if n > 0 {
            tracing::info!(requests = n, "approval requests loaded from the store");
        }
    }

    /// Deny what waited too long (`approval_timeout`), withdraw what its SSH login gave up on,
    /// forget old decided requests. Run every second.
    pub fn expire_approvals(&self) {
        let now = now_ms();
        let mut ended = Vec::new();
        let mut rows = Vec::new();
        {
            let mut reqs = lock(&self.approvals.0);
            for r in reqs
                .iter_mut()
                .filter(|r| r.wire.state == api::ApprovalState::Pending)
            {
                if r.expires_ms <= now {
                    r.wire.state = api::ApprovalState::Denied;
                    r.wire.reason = Some("approval_timeout".into());
                    let waited = human_ms(r.approval.timeout.get().as_millis() as u64);
                    let _ = r.done.send(Some(Err(format!(
                        "wardengate: access denied: approval {} was not given within {waited} \
                         (approval_timeout)",
                        r.wire.id
                    ))));
                    ended.push(("approval.denied", r.wire.clone(), "approval_timeout"));
                    rows.push((std::mem::take(&mut r.rows), "approval_timeout"));
                    self.store
                        .approval_put_later(r.wire.id.clone(), r.kept(&self.name));
                } else if r.waited && r.done.receiver_count() == 0 {
                    r.wire.state = api::ApprovalState::Withdrawn;
                    r.wire.reason = Some("the requester's ssh ended (Ctrl-C)".into());
                    ended.push(("approval.withdrawn", r.wire.clone(), "client_left"));
                    rows.push((std::mem::take(&mut r.rows), "approval_withdrawn"));
                    self.store
                        .approval_put_later(r.wire.id.clone(), r.kept(&self.name));
                }
            }
            // Approved, and nobody came back for it in time.
            for r in reqs.iter_mut().filter(|r| {
                r.wire.state == api::ApprovalState::Approved
                    && r.valid_until_ms.is_some_and(|v| v <= now)
                    && !r.rows.is_empty()
            }) {
                rows.push((std::mem::take(&mut r.rows), "approval_unused"));
            }
            let mut forgotten = Vec::new();
            reqs.retain(|r| {
                let keep = r.wire.state == api::ApprovalState::Pending
                    || now.saturating_sub(r.wire.created_ms) < KEEP_DECIDED_MS;
                if !keep {
                    forgotten.push(r.wire.id.clone());
                }
                keep
            });
            if !forgotten.is_empty() {
                self.store.approval_remove_later(forgotten);
            }
        }
        for (rows, why) in rows {
            self.end_waiting(rows, why, why);
        }
        for (kind, r, why) in ended {
            self.audit(
                kind,
                Some(&r.actor),
                None,
                json!({"request": r.id, "reason": why, "target": r.target, "policy": r.policy}),
            );
        }
    }
}
