//! Handoff admission: whether a user may own a session handed to them (their policy, their
//! limits, the stricter settings that then apply), and the takeover login `ssh USER:sess_…`.

use serde_json::json;
use wardengate_policy::Admitted;
use wardengate_protocols::session::{ClientInfo, Denial, Login};
use wardengate_protocols::ssh::Admission;

use super::resolve::{resolve, Resolved};
use crate::broker::Gateway;
use crate::store::SessionRecord;

/// The new owner's concurrency slot, and the decision record (JSON) that then describes the
/// session.
pub type NewSlot = (wardengate_policy::Lease, String);

impl Gateway {
    /// Whether `to` may own session `rec` (a handoff): their policy for its target, account and
    /// protocol, their limits, and the settings that then apply (the stricter of `current` and
    /// theirs). Takes their concurrency slot when `lease` is given. `Err` is `(kind, message)`.
    pub fn handoff_admission(
        &self,
        rec: &SessionRecord,
        to: &str,
        current: &Admitted,
        lease: Option<&wardengate_policy::Lease>,
    ) -> Result<(Admitted, Option<NewSlot>), (&'static str, String)> {
        let cfg = self.cfg();
        let (r, theirs) = policy_of(&cfg, rec, to)?;
        let merged = current.stricter(&theirs);
        let Some(old) = lease else {
            return Ok((merged, None));
        };
        // Counted under the new owner's own policy and its limits, as their own session would
        // be (the merged name is not a policy anyone's limits refer to).
        let limits = cfg.limits(r.user, r.target, theirs.settings());
        let subject = r.subject(theirs.policy(), &self.name);
        let new = self
            .ledger
            .transfer(old, &rec.id, subject, &limits)
            .map_err(|d| ("limit", d.to_string()))?;
        // What `session show` reports from now on: the settings that govern the session.
        let why = format!(
            "handed to {to}: the stricter of '{}' and '{}'",
            current.policy(),
            theirs.policy()
        );
        let decision = super::decision_json(&merged, &why, &limits).to_string();
        Ok((merged, Some((new, decision))))
    }

    /// Count session `rec` under its new owner `to` in the cluster's leases (a shared store
    /// only), within their limits, as their own session would be; a refusal leaves the old
    /// owner's count as it was.
    pub(crate) async fn handoff_cluster_lease(
        &self,
        rec: &SessionRecord,
        to: &str,
    ) -> Result<(), String> {
        if !self.store.shared() {
            return Ok(());
        }
        // A session that ended meanwhile has given its slot back: never count it again.
        if self.registry.live_record(&rec.id).is_none() {
            return Err("the session is over".into());
        }
        let cfg = self.cfg();
        let (r, theirs) = policy_of(&cfg, rec, to).map_err(|(_, msg)| msg)?;
        let limits = cfg.limits(r.user, r.target, theirs.settings());
        self.recount(rec, &r.subject(theirs.policy(), &self.name), &limits)
            .await
    }

    /// The handoff did not happen after all: the session counts again exactly as it did (its
    /// old owner, target and policy), without a limit check.
    pub(crate) async fn handoff_cluster_lease_back(
        &self,
        rec: &SessionRecord,
    ) -> Result<(), String> {
        if !self.store.shared() || self.registry.live_record(&rec.id).is_none() {
            return Ok(());
        }
        let subject = wardengate_policy::Subject {
            actor: &rec.actor,
            target: &rec.target,
            policy: rec.policy.as_deref().unwrap_or_default(),
            pool: &self.name,
        };
        self.recount(rec, &subject, &wardengate_policy::Limits::default())
            .await
    }

    /// Replace the session's own lease (not counted twice) with one for `subject`.
    async fn recount(
        &self,
        rec: &SessionRecord,
        subject: &wardengate_policy::Subject<'_>,
        limits: &wardengate_policy::Limits,
    ) -> Result<(), String> {
        match self
            .cluster_lease(&rec.id, subject, limits, Some(&rec.id))
            .await
        {
            // The slot stays the session's (released when it ends, as before).
            Ok(lease) => {
                if let Some(l) = lease {
                    l.keep();
                }
                Ok(())
            }
            Err(crate::cluster::LeaseRefused::Full(d)) => Err(d.to_string()),
            Err(crate::cluster::LeaseRefused::Unavailable(e)) => Err(format!(
                "the gateway cannot reach its session store ({e:#})"
            )),
        }
    }

    /// `ssh USER:sess_…@gateway`: take over the session handed to USER, if it waits for them
    /// and their policy still allows it.
    pub(crate) fn takeover(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> Result<Admission, Denial> {
        let id = &login.target;
        let ticket = self.registry.take_session_ticket(id, &login.user);
        // Still permitted now (a policy reload since the accept counts).
        let still = ticket.as_ref().map(|t| {
            let rec = self.registry.live_record(id);
            match rec {
                Some(r) => self
                    .handoff_admission(&r, &login.user, t.admitted(), None)
                    .map(|_| ())
                    .map_err(|(_, why)| why),
                None => Err("the session is over".into()),
            }
        });
        if let (Some(t), Some(Err(why))) = (ticket.clone(), still) {
            self.registry.untake_session_ticket(id, t);
            let msg = format!("wardengate: cannot take session {id} over: {why}");
            self.audit(
                "session.handoff.takeover_refused",
                Some(&login.user),
                Some(id),
                json!({"client": client.addr.to_string(), "message": msg}),
            );
            return Err(Denial::new("takeover_refused", msg));
        }
        match ticket {
            Some(t) => {
                self.audit(
                    "session.handoff.takeover",
                    Some(&login.user),
                    Some(id),
                    json!({"client": client.addr.to_string(), "auth_method": method}),
                );
                Ok(Admission::Resume(t))
            }
            None => {
                let msg = format!(
                    "wardengate: session {id} is not waiting for {}: only the user it was \
                     handed off to can take it over, after `wgctl session accept {id}` and \
                     within the handoff window",
                    login.user
                );
                self.audit(
                    "session.handoff.takeover_refused",
                    Some(&login.user),
                    Some(id),
                    json!({"client": client.addr.to_string(), "message": msg}),
                );
                Err(Denial::new("takeover_refused", msg))
            }
        }
    }
}

/// What `to` would be admitted under to own session `rec`: their resolved request and policy
/// decision. `Err` is `(kind, message)`.
fn policy_of<'c>(
    cfg: &'c crate::config::Loaded,
    rec: &SessionRecord,
    to: &str,
) -> Result<(Resolved<'c>, Admitted), (&'static str, String)> {
    let login = Login {
        user: to.to_string(),
        target: rec.target.clone(),
        account: Some(rec.account.clone()),
        waiting: None,
    };
    let r = resolve(cfg, &login, rec.protocol)
        .map_err(|(kind, msg)| (kind, msg.trim_start_matches("wardengate: ").to_string()))?;
    let theirs = wardengate_policy::decide(&cfg.policies, &r.request(rec.protocol))
        .map_err(|d| ("no_permission", d.to_string()))?;
    Ok((r, theirs))
}
