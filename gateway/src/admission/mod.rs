//! Admission: from an authenticated login to an admitted session, each step audited.
//!
//! Order matters: the user, target and account are resolved; a paused session of the same actor,
//! target and account is re-attached (`reconnect.mode = "resume"`, permissions re-checked);
//! otherwise the policies decide, then concurrency is counted at four levels — and only then is the
//! vault touched, so a denial at any level never reads a target account's secret.

mod evict;
mod handoff;
mod reload;
mod resolve;

pub use reload::Reloaded;
pub(crate) use resolve::{resolve, Resolved};

use serde_json::{json, Value};
use wardengate_api as api;
use wardengate_policy::{Admitted, LimitDenial, Limits, MfaMode, OnLimit, ReconnectMode};
use wardengate_protocols::session::{now_ms, ClientInfo, Denial, Login, StepUp};

use crate::broker::Gateway;
use crate::config::{Account, Loaded, Target};
use crate::identity::approvals::Gate;
use crate::store::SessionRecord;

/// What a refused person does next: connect again, or (a TCP session) authorize again.
fn again(protocol: api::Protocol) -> &'static str {
    match protocol {
        api::Protocol::Tcp => "authorize",
        _ => "connect",
    }
}

/// An admitted session before its protocol takes over.
pub(crate) struct Granted<C> {
    pub admitted: Admitted,
    pub link: wardengate_protocols::session::SessionLink,
    pub target: Target,
    pub account: Account,
    pub credential: C,
}

/// The admission decision as stored with the session and shown by `session show`.
pub fn decision_json(admitted: &Admitted, why: &str, limits: &Limits) -> Value {
    let p = admitted.settings();
    // The whole policy, as `policy list` and `policy explain` show it.
    json!({
        "admitted": true,
        "policy": p.name,
        "source": admitted.source().to_string(),
        "why": why,
        "settings": p,
        "limits": limits,
    })
}

impl Gateway {
    fn deny(
        &self,
        rec: &mut SessionRecord,
        kind: &'static str,
        message: String,
        decision: Value,
    ) -> Denial {
        rec.state = api::SessionState::Denied;
        rec.ended_ms = Some(rec.started_ms);
        rec.end_reason = Some(kind.into());
        rec.end_detail = Some(message.clone());
        rec.decision = Some(decision.to_string());
        self.store.session_insert_later(rec.clone());
        self.audit(
            "session.denied",
            Some(&rec.actor),
            Some(&rec.id),
            json!({"target": rec.target, "account": rec.account, "reason": kind, "message": message,
                   "client": rec.client_addr, "policy": rec.policy, "decision": decision}),
        );
        Denial::new(kind, message)
    }

    /// The session a reconnect within the grace continues, if the actor's last session to this
    /// target ended by a dropped connection: its id, and when it dropped.
    fn linked(&self, actor: &str, target: &str) -> Option<(String, u64)> {
        let mut d = self.drops.lock().ok()?;
        let key = (actor.to_string(), target.to_string());
        match d.get(&key) {
            Some(x) if x.until > now_ms() => Some((x.session.clone(), x.at)),
            Some(_) => {
                d.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Admission for any protocol: resolve, decide, count, read the vault (turned into the
    /// protocol's credential by `credential`), register. Every step is audited; a refusal at any
    /// step leaves a `denied` session record.
    pub(crate) async fn admit_session<C>(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
        protocol: api::Protocol,
        credential: impl FnOnce(crate::vault::Secret, &Account, &Target) -> Result<C, String>,
    ) -> Result<Granted<C>, Denial> {
        let cfg = self.cfg();
        let resolved = resolve(&cfg, login, protocol);
        let mut rec = SessionRecord {
            actor: login.user.clone(),
            client_addr: client.addr.to_string(),
            client_location: self.geoip.as_ref().and_then(|g| g.locate(client.addr.ip())),
            client_version: client.version.clone(),
            target: login.target.clone(),
            account: login.account.clone().unwrap_or_default(),
            ..SessionRecord::requested(
                // After a step-up wait the login comes back as the same session.
                login
                    .waiting
                    .clone()
                    .unwrap_or_else(|| crate::util::new_id("sess_")),
                protocol,
                &self.name,
            )
        };
        self.audit(
            "session.requested",
            Some(&login.user),
            Some(&rec.id),
            json!({"target": login.target, "account": login.account, "client": rec.client_addr, "client_location": rec.client_location, "auth_method": method}),
        );
        let r = resolved.map_err(|(kind, msg)| {
            self.deny(
                &mut rec,
                kind,
                msg,
                json!({"admitted": false, "reason": kind}),
            )
        })?;
        rec.target_addr = r.target.address.clone();
        rec.account = r.account.name.clone();
        rec.account_ref = r.account.secret.clone();
        if r.target.protocol != protocol {
            let how = match r.target.protocol {
                api::Protocol::Postgres => format!("connect with a PostgreSQL client, e.g. psql \"host=GATEWAY user={}#{} dbname=...\"", r.user.name, r.target.name),
                api::Protocol::Rdp => format!("connect with an RDP client, e.g. xfreerdp /v:GATEWAY /u:{}:{}", r.user.name, r.target.name),
                api::Protocol::Ssh => format!("connect with ssh {}:{}@GATEWAY", r.user.name, r.target.name),
                api::Protocol::Tcp => format!("connect with wgctl connect {} -- CLIENT ARGS (or wgctl target authorize {})", r.target.name, r.target.name),
                // Refused in the configuration: no target has it.
                api::Protocol::Network => "start an access session with wgctl access start".to_string(),
            };
            let msg = format!(
                "wardengate: target {} is a {} target, not {protocol}; {how}",
                r.target.name, r.target.protocol
            );
            let d = json!({"admitted": false, "reason": "wrong_protocol"});
            return Err(self.deny(&mut rec, "wrong_protocol", msg, d));
        }
        let req = r.request(protocol);
        let ex = wardengate_policy::explain(&cfg.policies, &req);
        let admitted = wardengate_policy::decide(&cfg.policies, &req).map_err(|d| {
            let msg = format!("wardengate: access denied: {d}");
            let decision = json!({"admitted": false, "reason": "no_permission", "why": d.why});
            self.deny(&mut rec, "no_permission", msg, decision)
        })?;
        rec.policy = Some(admitted.policy().to_string());
        let why = ex
            .verdicts
            .iter()
            .find(|v| v.policy == admitted.policy())
            .map(|v| v.why.clone())
            .unwrap_or_default();
        let login = (
            rec.actor.as_str(),
            rec.target.as_str(),
            rec.account.as_str(),
            admitted.policy(),
        );
        let claimed = match admitted.settings().approval.is_some() {
            true => self.approval_claim_elsewhere(login, &rec.id).await,
            false => None,
        };
        let approval = match admitted.settings().approval.clone() {
            None => None,
            Some(_) if claimed.is_some() => claimed,
            Some(a) => match self.approval_gate(
                &rec.actor,
                &rec.target,
                &rec.account,
                admitted.policy(),
                protocol,
                &a,
            ) {
                Gate::Approved(id, record) => Some((id, record)),
                Gate::Waiting(req, done, new) => {
                    return Err(self.await_approval(&mut rec, req, done, new, &a, protocol))
                }
            },
        };
        let linked = self.linked(&rec.actor, &rec.target);
        let proof = self
            .second_factor(&mut rec, &admitted, protocol, linked.as_ref().map(|l| l.1))
            .await?;
        // A full recording spool refuses before any slot is taken (an evicted session then
        // never loses its slot for a session that cannot start).
        if admitted.recording().records() {
            if let Some(spool) = &self.recordings.spool {
                spool.check_room().map_err(|e| {
                    let msg = format!(
                        "wardengate: policy '{}' requires this session to be recorded, but {e}; \
                         the session is refused",
                        admitted.policy()
                    );
                    let d = json!({"admitted": false, "reason": "recording_unavailable", "policy": admitted.policy()});
                    self.deny(&mut rec, "recording_unavailable", msg, d)
                })?;
            }
        }
        let limits = cfg.limits(r.user, r.target, admitted.settings());
        let subject = r.subject(admitted.policy(), &self.name);
        let granted = self
            .ledger
            .acquire(&rec.id, subject, &limits)
            .map_err(|d| self.deny_limit(&mut rec, &d, &limits))?;
        let evicted = granted.evicted.clone();
        let mut evicted_elsewhere = None;
        let cluster_lease = match self
            .cluster_lease(&rec.id, &subject, &limits, evicted.as_deref())
            .await
        {
            // The actor's oldest session runs on another gateway: with evict_oldest it makes
            // room, as one here would.
            Err(crate::cluster::LeaseRefused::Full(d))
                if d.scope == wardengate_policy::Scope::Actor
                    && limits.on_actor_limit == OnLimit::EvictOldest
                    && evicted.is_none() =>
            {
                match self.store.lease_oldest(&rec.actor).await {
                    Ok(Some(victim)) => {
                        let r = self
                            .cluster_lease(&rec.id, &subject, &limits, Some(&victim))
                            .await;
                        if r.is_ok() {
                            evicted_elsewhere = Some(victim);
                        }
                        r
                    }
                    _ => Err(crate::cluster::LeaseRefused::Full(d)),
                }
            }
            other => other,
        }
        .map_err(|refused| match refused {
                crate::cluster::LeaseRefused::Full(d) => self.deny_limit(&mut rec, &d, &limits),
                crate::cluster::LeaseRefused::Unavailable(e) => {
                    tracing::error!(session = %rec.id, "cannot count the session in the cluster: {e:#}");
                    let d = json!({"admitted": false, "reason": "store_unavailable", "policy": rec.policy});
                    self.deny(
                        &mut rec,
                        "store_unavailable",
                        "wardengate: the gateway cannot reach its session store, so no new session \
                         can start; sessions already running go on. Try again in a moment"
                            .into(),
                        d,
                    )
                }
            })?;
        // A TCP target's client brings its own credentials: no secret is read.
        let secret = match protocol {
            api::Protocol::Tcp => crate::vault::Secret::none(),
            _ => self.secret(&mut rec, r.account, r.target).await?,
        };
        let credential = credential(secret, r.account, r.target).map_err(|msg| {
            let d = json!({"admitted": false, "reason": "credential_unavailable", "policy": rec.policy});
            self.deny(&mut rec, "credential_unavailable", msg, d)
        })?;
        rec.linked_session = linked.map(|l| l.0);
        let mut decision = decision_json(&admitted, &why, &limits);
        if let Some(p) = &proof {
            decision["mfa"] = crate::identity::decision(p, rec.started_ms);
        }
        if let Some((_, record)) = &approval {
            decision["approval"] = record.clone();
        }
        rec.decision = Some(decision.to_string());
        rec.state = api::SessionState::Approved;
        let control = crate::registry::control_channel();
        let recording = match admitted.recording() {
            wardengate_policy::RecordingMode::Off => None,
            mode => Some(
                self.recordings
                    .start(
                        &rec.id,
                        control.0.clone(),
                        mode == wardengate_policy::RecordingMode::Metadata,
                    )
                    .map_err(|e| {
                        tracing::error!(session = %rec.id, "cannot start recording: {e:#}");
                        let msg = format!(
                            "wardengate: policy '{}' requires this session to be recorded, but the \
                             recording cannot be written ({e:#}); the session is refused",
                            admitted.policy()
                        );
                        let d = json!({"admitted": false, "reason": "recording_unavailable", "policy": admitted.policy()});
                        self.deny(&mut rec, "recording_unavailable", msg, d)
                    })?,
            ),
        };
        let link = self
            .registry
            .insert(
                &*self.store,
                rec.clone(),
                crate::registry::NewSession {
                    control,
                    recording,
                    lease: granted.lease,
                    cluster_lease,
                    admitted: admitted.clone(),
                },
            )
            .await
            .map_err(|e| {
                tracing::error!("cannot register session: {e:#}");
                Denial::new(
                    "internal",
                    "wardengate: internal error while registering the session",
                )
            })?;
        self.audit(
            "session.approved",
            Some(&rec.actor),
            Some(&rec.id),
            json!({"target": rec.target, "account": rec.account, "policy": rec.policy,
                   "source": admitted.source().to_string(), "linked_session": rec.linked_session}),
        );
        if let Some(victim) = &evicted {
            self.evict(victim, &rec, &limits);
        }
        if let Some(victim) = &evicted_elsewhere {
            self.evict_elsewhere(victim, &rec, &limits).await;
        }
        if let Some((id, _)) = &approval {
            self.approval_used(id, &rec.id);
        }
        Ok(Granted {
            admitted,
            link,
            target: r.target.clone(),
            account: r.account.clone(),
            credential,
        })
    }

    /// The second factor the policy asks for (`mfa = "webauthn"`): a proof made already, or a
    /// link to make one — shown by SSH, which waits (nothing is recorded as denied yet), and
    /// given in the refusal by protocols that cannot wait.
    async fn second_factor(
        &self,
        rec: &mut SessionRecord,
        admitted: &Admitted,
        protocol: api::Protocol,
        dropped_at: Option<u64>,
    ) -> Result<Option<crate::identity::Proof>, Denial> {
        let p = admitted.settings();
        if p.mfa == MfaMode::Off {
            return Ok(None);
        }
        let cfg = self.cfg();
        let id = &cfg.config.identity;
        // `reauth` after a dropped connection: a proof made since the drop, whatever
        // mfa_max_age says.
        let fresh = dropped_at.filter(|_| p.reconnect.mode == ReconnectMode::Reauth);
        let max_age = p.mfa_max_age.get();
        if let Some(proof) = self
            .mfa
            .take(&rec.actor, &p.name, max_age, fresh, id.proof_valid_for)
        {
            return Ok(Some(proof));
        }
        let decision = json!({"admitted": false, "reason": "mfa_required", "policy": p.name});
        let link = match self.presence_link(&rec.actor, Some(p.name.clone())).await {
            Ok(link) => link,
            Err(crate::identity::NoLink::Internal(msg)) => {
                return Err(Denial::new("internal", msg))
            }
            Err(crate::identity::NoLink::NotEnrolled) => {
                let msg = format!(
                    "wardengate: access denied: policy {} requires a security key, and {} has \
                     none enrolled; enrol one with `wgctl mfa enroll`, then connect again",
                    p.name, rec.actor
                );
                return Err(self.deny(rec, "mfa_not_enrolled", msg, decision));
            }
        };
        self.audit(
            "mfa.challenged",
            Some(&rec.actor),
            Some(&rec.id),
            json!({"policy": p.name, "target": rec.target, "fresh": fresh.is_some(), "protocol": protocol}),
        );
        let within = wardengate_recorder::time::human(link.expires_in);
        if protocol == api::Protocol::Ssh {
            let prompt = format!(
                "Security key required by policy {}: open {} within {within} and touch your key",
                p.name, link.url
            );
            let mut d = Denial::new("mfa_required", prompt.clone());
            d.step_up = Some(Box::new(StepUp {
                prompt,
                done: link.done,
                within: link.expires_in,
                late: format!(
                    "wardengate: access denied: no security key was presented within {within}"
                ),
                session: Some(rec.id.clone()),
            }));
            return Err(d);
        }
        let msg = format!(
            "wardengate: MFA required by policy {}: open {} within {within} and touch your key, \
             then {} again (or run `wgctl mfa prove --target {}` first)",
            p.name,
            link.url,
            again(protocol),
            rec.target
        );
        Err(self.deny(rec, "mfa_required", msg, decision))
    }

    /// The session waits for approval: SSH shows the request and waits on it (nothing recorded
    /// as denied); PostgreSQL and RDP are refused with its id.
    fn await_approval(
        &self,
        rec: &mut SessionRecord,
        req: api::ApprovalRequest,
        done: tokio::sync::watch::Receiver<crate::identity::Outcome>,
        new: bool,
        approval: &wardengate_policy::Approval,
        protocol: api::Protocol,
    ) -> Denial {
        if new {
            self.audit(
                "approval.requested",
                Some(&rec.actor),
                Some(&rec.id),
                json!({"request": req.id, "target": req.target, "account": req.account,
                       "policy": req.policy, "approvers": req.approvers, "required": req.required,
                       "protocol": protocol}),
            );
            self.announce_approval(&req);
        }
        if protocol == api::Protocol::Ssh {
            let prompt = Self::approval_prompt(&req);
            let left = req.expires_ms.saturating_sub(now_ms());
            let mut d = Denial::new("approval_required", prompt.clone());
            d.step_up = Some(Box::new(StepUp {
                prompt,
                done,
                within: std::time::Duration::from_millis(left + 2000),
                late: format!(
                    "wardengate: access denied: approval {} was not given in time (approval_timeout)",
                    req.id
                ),
                session: Some(rec.id.clone()),
            }));
            // The wait is a session the operators see (`awaiting_approval`) until the request
            // is decided; the login that follows continues it under the same id.
            rec.state = api::SessionState::AwaitingApproval;
            rec.policy = Some(req.policy.clone());
            rec.decision = Some(
                json!({"admitted": false, "reason": "approval_required", "policy": req.policy,
                       "request": req.id})
                .to_string(),
            );
            self.store.session_insert_later(rec.clone());
            self.approval_waits(&req.id, rec.clone());
            return d;
        }
        let msg = format!(
            "wardengate: policy {} needs approval: request {} waits for {} (`wgctl approval approve {}`); {} again once it is approved, within {}",
            req.policy,
            req.id,
            req.approvers.join(", "),
            req.id,
            again(protocol),
            approval.valid_for
        );
        let decision = json!({"admitted": false, "reason": "approval_required",
                              "policy": req.policy, "request": req.id});
        self.deny(rec, "approval_required", msg, decision)
    }

    /// A paused session of this actor, target and account that the policies still let them
    /// resume.
    pub(crate) fn resume_ticket(
        &self,
        cfg: &Loaded,
        r: &Resolved<'_>,
    ) -> Option<wardengate_protocols::ssh::ResumeTicket> {
        let ticket = self
            .registry
            .take_ticket(&r.user.name, &r.target.name, &r.account.name)?;
        // Permissions are evaluated again on re-attach.
        match wardengate_policy::decide(&cfg.policies, &r.request(api::Protocol::Ssh)) {
            Ok(a) if a.settings().reconnect.mode == ReconnectMode::Resume => Some(ticket),
            other => {
                let why = match other {
                    Ok(a) => format!("policy {} no longer allows resuming", a.policy()),
                    Err(d) => d.why,
                };
                self.audit(
                    "session.resume_refused",
                    Some(&r.user.name),
                    Some(ticket.session_id()),
                    json!({"why": why}),
                );
                // The paused session waits out its grace; this connection starts afresh.
                None
            }
        }
    }

    fn deny_limit(&self, rec: &mut SessionRecord, d: &LimitDenial, limits: &Limits) -> Denial {
        let setting = match d.scope {
            wardengate_policy::Scope::Actor => "max_sessions_per_user",
            wardengate_policy::Scope::Target => "max_sessions_per_target",
            wardengate_policy::Scope::Policy => "concurrency.max",
            wardengate_policy::Scope::Pool => "gateway.max_active",
        };
        let msg = format!("wardengate: {d} ({setting}); try again when a session ends");
        let decision = json!({"admitted": false, "reason": "concurrency", "policy": rec.policy,
                              "limit": d, "on_limit": limits.on_actor_limit});
        let mut denied = self.deny(rec, "concurrency", msg, decision);
        denied.limit = Some(d.clone());
        denied
    }

    /// The account's secret from the vault.
    async fn secret(
        &self,
        rec: &mut SessionRecord,
        account: &Account,
        target: &Target,
    ) -> Result<crate::vault::Secret, Denial> {
        let got = self.vault.get(&*self.store, &account.secret).await;
        got.map_err(|e| {
            tracing::error!(account_ref = %account.secret, "vault lookup failed: {e:#}");
            let msg = format!(
                "wardengate: the credential for {}@{} is not available ({e}); ask an administrator",
                account.name, target.name
            );
            let d = json!({"admitted": false, "reason": "credential_unavailable", "policy": rec.policy});
            self.deny(rec, "credential_unavailable", msg, d)
        })
    }
}
