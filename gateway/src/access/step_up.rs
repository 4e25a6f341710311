//! What a network policy asks for before an access session opens anything: an approval
//! (`approval = { approvers = [...] }`: a request per policy, for the person, the resources and
//! the address; refused until it is approved, spent when the session starts) and a security key
//! (`mfa = "webauthn"`: a proof made already, `wgctl mfa prove` or the link of an earlier
//! refusal, or a refusal carrying the link that makes one).

use std::net::IpAddr;

use axum::http::StatusCode;
use serde_json::{json, Value};
use wardengate_api as api;
use wardengate_policy::{MfaMode, Policy};

use super::refusal::{refuse, AccessRefusal};
use crate::broker::Gateway;
use crate::config::Resource;
use crate::identity::approvals::Gate;
use crate::identity::{NoLink, Proof};

/// The session's approvals as it shows them: `req_… (approved by carol)`, `; `-separated.
pub(super) fn approvals_shown(approved: &[(String, Value)]) -> Option<String> {
    let shown: Vec<String> = approved
        .iter()
        .map(|(id, record)| {
            let by: Vec<&str> = record["approved_by"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("{id} (approved by {})", by.join(", "))
        })
        .collect();
    (!shown.is_empty()).then(|| shown.join("; "))
}

/// The distinct policies among `grants` that `asks`.
fn policies_asking(grants: &[(Resource, Policy)], asks: impl Fn(&Policy) -> bool) -> Vec<&Policy> {
    let mut out: Vec<&Policy> = Vec::new();
    for (_, p) in grants {
        if asks(p) && !out.iter().any(|a| a.name == p.name) {
            out.push(p);
        }
    }
    out
}

impl Gateway {
    /// An approved request for every granting policy that asks for approval (claimed from
    /// another gateway of the cluster when it holds it), or the refusal naming the requests to
    /// wait on (made now, or already open). A request is for the person, the policy's resources
    /// in this session and the address: an approval for one address lets no other in.
    pub(super) async fn access_approvals(
        &self,
        user: &str,
        grants: &[(Resource, Policy)],
        addr: IpAddr,
        session: &str,
    ) -> Result<Vec<(String, Value)>, AccessRefusal> {
        let address = addr.to_string();
        let mut approved = Vec::new();
        let mut waiting = Vec::new();
        for p in policies_asking(grants, |p| p.approval.is_some()) {
            let Some(approval) = &p.approval else {
                continue;
            };
            let mut resources: Vec<&str> = grants
                .iter()
                .filter(|(_, g)| g.name == p.name)
                .map(|(r, _)| r.name.as_str())
                .collect();
            resources.sort_unstable();
            let target = resources.join(", ");
            let wire = (user, target.as_str(), address.as_str(), p.name.as_str());
            if let Some(claimed) = self.approval_claim_elsewhere(wire, session).await {
                approved.push(claimed);
                continue;
            }
            let proto = api::Protocol::Network;
            match self.approval_gate(user, &target, &address, &p.name, proto, approval) {
                Gate::Approved(id, record) => approved.push((id, record)),
                Gate::Waiting(req, _, new) => {
                    if new {
                        self.audit(
                            "approval.requested",
                            Some(user),
                            None,
                            json!({"request": req.id, "target": req.target, "account": req.account,
                                   "policy": req.policy, "approvers": req.approvers,
                                   "required": req.required, "protocol": proto}),
                        );
                        self.announce_approval(&req);
                    }
                    waiting.push((req, approval.valid_for));
                }
            }
        }
        if waiting.is_empty() {
            return Ok(approved);
        }
        let said: Vec<String> = waiting
            .iter()
            .map(|(r, valid_for)| {
                format!(
                    "policy {} needs approval: request {} waits for {} (`wgctl approval approve \
                     {}`); start the access session again once it is approved, within {valid_for}",
                    r.policy,
                    r.id,
                    r.approvers.join(", "),
                    r.id
                )
            })
            .collect();
        let mut refusal = refuse(
            StatusCode::FORBIDDEN,
            format!("wardengate: {}", said.join("; ")),
        );
        let requests = waiting
            .iter()
            .map(|(r, _)| json!({"request": r.id, "policy": r.policy, "approvers": r.approvers}))
            .collect();
        refusal.asks = Some(("approval", Box::new(Value::Array(requests))));
        Err(refusal)
    }

    /// A proof of presence for every granting policy that asks for a key, or the refusal that
    /// says how to make one. A proof made for any policy covers them all; when several ask,
    /// the link makes such a proof, so that one touch opens the whole session.
    pub(super) async fn access_second_factor(
        &self,
        user: &str,
        grants: &[(Resource, Policy)],
        addr: IpAddr,
    ) -> Result<Option<Proof>, AccessRefusal> {
        let asking = policies_asking(grants, |p| p.mfa != MfaMode::Off);
        if asking.is_empty() {
            return Ok(None);
        }
        let cfg = self.cfg();
        let id = &cfg.config.identity;
        let mut first: Option<Proof> = None;
        let mut missing = Vec::new();
        for p in &asking {
            if first.as_ref().is_some_and(|f| f.policy.is_none()) {
                break;
            }
            match self
                .mfa
                .take(user, &p.name, p.mfa_max_age.get(), None, id.proof_valid_for)
            {
                Some(proof) => {
                    first.get_or_insert(proof);
                }
                None => missing.push(p.name.as_str()),
            }
        }
        if missing.is_empty() {
            return Ok(first);
        }
        let names = asking
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let policy = match asking.as_slice() {
            [one] => Some(one.name.clone()),
            _ => None,
        };
        let link = match self.presence_link(user, policy).await {
            Ok(link) => link,
            Err(NoLink::Internal(msg)) => {
                return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, msg.into()))
            }
            Err(NoLink::NotEnrolled) => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "policy {names} requires a security key, and {user} has none enrolled; \
                         enrol one with `wgctl mfa enroll`, then start the access session again"
                    ),
                ))
            }
        };
        self.audit(
            "mfa.challenged",
            Some(user),
            None,
            json!({"policy": names, "protocol": "network", "address": addr.to_string(),
                   "missing": missing}),
        );
        let within = wardengate_recorder::time::human(link.expires_in);
        let ticket = link.url.rsplit("#ticket=").next().unwrap_or_default();
        let mut refusal = refuse(
            StatusCode::FORBIDDEN,
            format!(
                "MFA required by policy {names}: open {} within {within} and touch your key, \
                 then start the access session again (or run `wgctl mfa prove` first)",
                link.url
            ),
        );
        let link = json!({"url": link.url, "ticket": ticket, "policy": names,
                          "expires_in_secs": link.expires_in.as_secs()});
        refusal.asks = Some(("mfa", Box::new(link)));
        Err(refusal)
    }
}
