//! The gateway's implementation of the protocol contract: identities, admission, vault lookup,
//! host-key pinning and the session lifecycle, each step audited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use russh::keys::{HashAlg, PublicKey};
use serde_json::json;
use wardengate_policy::{Ledger, ReconnectMode};
use wardengate_protocols::error::TargetError;
use wardengate_protocols::session::{now_ms, Lifecycle, Outcome, Verdict};
use wardengate_protocols::ssh::{Admission, ClientInfo, Login, ResumeTicket, SshBroker, UserAuth};

use crate::config::Loaded;
use crate::registry::Registry;
use crate::store::Store;
use crate::vault::Vault;

/// Everything a running gateway owns.
pub struct Gateway {
    pub name: String,
    /// The configuration; replaced whole by a reload (live sessions keep what admitted them).
    cfg: RwLock<Arc<Loaded>>,
    pub store: Store,
    pub vault: Vault,
    pub registry: Registry,
    pub recordings: crate::recording::Recordings,
    pub ledger: Arc<Ledger>,
    /// The bounded pool of password checks.
    pub passwords: crate::guard::PasswordChecker,
    /// Failed-login accounting per source and user (SSH, PostgreSQL, RDP).
    pub throttle: crate::guard::Throttle,
    /// The same for API tokens, kept apart: users failing to log in from an operator's network
    /// must not lock the operators out of the API, nor the other way round.
    pub api_throttle: crate::guard::Throttle,
    /// Where clients connect from (`[geoip] database`), when configured.
    pub geoip: Option<crate::geoip::GeoIp>,
    /// PostgreSQL cancel requests per source.
    pub cancels: crate::guard::CancelGuard,
    /// When the audit chain head is signed next.
    pub(crate) checkpoints: crate::audit::Checkpoints,
    /// Sessions that ended by a dropped connection, by (actor, target): a reconnect within the
    /// policy's grace is linked to them.
    pub(crate) drops: Mutex<HashMap<(String, String), (String, u64)>>,
}

impl Gateway {
    pub fn new(
        cfg: Loaded,
        store: Store,
        vault: Vault,
        recordings: crate::recording::Recordings,
    ) -> Gateway {
        let sec = &cfg.config.security;
        let passwords =
            crate::guard::PasswordChecker::start(sec.password_checks, sec.password_queue_timeout);
        let throttle = crate::guard::Throttle::new(sec);
        let api_throttle = crate::guard::Throttle::new(sec);
        let checkpoints = crate::audit::Checkpoints::new(
            cfg.config.audit.checkpoint_every,
            recordings.dir.join("audit-checkpoints.jsonl"),
            crate::audit::merged(
                store.checkpoints().unwrap_or_default(),
                crate::audit::read_file(&recordings.dir.join("audit-checkpoints.jsonl")),
            )
            .last()
            .map_or(0, |c| c.seq),
        );
        Gateway {
            geoip: None,
            cancels: crate::guard::CancelGuard::new(sec.cancel_requests_per_second),
            checkpoints,
            passwords,
            throttle,
            api_throttle,
            name: cfg.config.gateway.name.clone(),
            cfg: RwLock::new(Arc::new(cfg)),
            store,
            vault,
            registry: Registry::new(),
            recordings,
            ledger: Ledger::new(),
            drops: Mutex::new(HashMap::new()),
        }
    }

    /// The current configuration.
    pub fn cfg(&self) -> Arc<Loaded> {
        self.cfg
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn set_cfg(&self, cfg: Loaded) {
        let mut w = self.cfg.write().unwrap_or_else(|p| p.into_inner());
        *w = Arc::new(cfg);
    }

    /// Target names carrying `key=value`.
    pub fn targets_with_tag(&self, tag: &str) -> Vec<String> {
        let (k, v) = tag.split_once('=').unwrap_or((tag, ""));
        self.cfg()
            .targets
            .values()
            .filter(|t| t.tags.get(k).is_some_and(|tv| tv == v))
            .map(|t| t.name.clone())
            .collect()
    }

    /// Sessions a previous run left open (crash, kill -9) are marked failed at start.
    pub fn recover(&self) {
        match self.store.sessions_open_on(&self.name) {
            Ok(rows) => {
                for mut r in rows {
                    r.state = "failed".into();
                    r.ended_ms = Some(wardengate_protocols::session::now_ms());
                    r.end_reason = Some("gateway_restart".into());
                    r.end_detail = Some("the gateway stopped while the session was open".into());
                    if self.store.session_update(&r).is_ok() {
                        self.audit(
                            "session.end",
                            Some(&r.actor),
                            Some(&r.id),
                            json!({"reason": "gateway_restart", "state": "failed"}),
                        );
                    }
                }
            }
            Err(e) => tracing::error!("cannot recover sessions: {e:#}"),
        }
    }
}

impl Gateway {
    /// Summarise cancel-request floods (one warning and one audit event per source and sweep).
    pub fn audit_cancels(&self) {
        for f in self.cancels.sweep() {
            tracing::warn!(source = %f.source, dropped = f.dropped, unknown = f.unknown, "PostgreSQL cancel requests beyond the rate limit or with unknown keys (key guessing?)");
            self.audit(
                "postgres.cancel_flood",
                None,
                None,
                json!({"source": f.source.to_string(), "dropped": f.dropped, "unknown": f.unknown}),
            );
        }
    }

    /// Audit the bursts of failed logins (`on`: `login` or `api`) the throttle reports.
    pub fn audit_throttle(&self, on: &str, events: Vec<crate::guard::ThrottleEvent>) {
        for e in events {
            tracing::warn!(kind = e.kind, on, scope = e.scope, user = ?e.user, source = ?e.source, failures = e.failures, refused = e.refused, "failed logins");
            self.audit(
                e.kind,
                e.user.as_deref(),
                None,
                json!({"on": on, "scope": e.scope, "user": e.user, "source": e.source.map(|s| s.to_string()), "failures": e.failures, "refused": e.refused, "wait_s": e.wait_s}),
            );
        }
    }
}

impl Lifecycle for Gateway {
    async fn check_password(
        &self,
        user: &str,
        password: &str,
        client: &ClientInfo,
        usable: bool,
    ) -> Verdict {
        let ip = client.addr.ip();
        if !self.throttle.allow(user, ip) {
            return Verdict::Refused;
        }
        let phc = usable
            .then(|| {
                self.cfg()
                    .users
                    .get(user)
                    .and_then(|u| u.password_hash.clone())
            })
            .flatten();
        match self.passwords.verify(phc, password).await {
            Ok(ok) => {
                self.attempt_result(user, client, ok);
                if ok {
                    Verdict::Ok
                } else {
                    Verdict::Wrong
                }
            }
            Err(_) => {
                self.throttle.abandon(user, ip);
                tracing::warn!(%ip, "password check refused: every check was busy for password_queue_timeout");
                Verdict::Refused
            }
        }
    }

    fn attempt_allowed(&self, user: &str, client: &ClientInfo) -> bool {
        self.throttle.allow(user, client.addr.ip())
    }

    fn attempt_abandoned(&self, user: &str, client: &ClientInfo) {
        self.throttle.abandon(user, client.addr.ip());
    }

    fn attempt_result(&self, user: &str, client: &ClientInfo, ok: bool) {
        let events = self.throttle.record(user, client.addr.ip(), ok);
        self.audit_throttle("login", events);
    }

    fn refused(&self, login: &str, client: &ClientInfo, kind: &str, message: &str) {
        use wardengate_api::text::{inert, MAX_NAME};
        // A login is a name: cut where names are cut, before anything is stored.
        let login = inert(login, MAX_NAME);
        let user = login.split([':', '#']).next().unwrap_or(&login);
        self.audit(
            "auth.failed",
            Some(user),
            None,
            json!({"login": login, "reason": kind, "message": message, "client": client.addr.to_string()}),
        );
    }

    fn opened(&self, session: &str) {
        if let Some(r) = self.registry.activate(&self.store, session) {
            self.audit(
                "session.start",
                Some(&r.actor),
                Some(session),
                json!({"protocol": r.protocol, "target": r.target, "target_addr": r.target_addr, "account": r.account, "client": r.client_addr, "client_version": r.client_version, "client_crypto": r.client_crypto, "target_crypto": r.target_crypto}),
            );
        }
    }

    fn notice(&self, session: &str, kind: &str, detail: serde_json::Value) {
        let actor = self
            .registry
            .record(&self.store, session)
            .ok()
            .map(|r| r.actor);
        self.audit(kind, actor.as_deref(), Some(session), detail);
    }

    fn ended(&self, session: &str, outcome: Outcome) {
        if let Outcome::TargetFailed(TargetError::SecretRejected {
            target,
            account,
            detail,
        }) = &outcome
        {
            // Someone changed the account's secret on the target (through a session, or
            // directly): every session through the gateway now fails, and whoever changed it can
            // log in around the gateway. The operators must hear of it.
            let r = self.registry.record(&self.store, session).ok();
            tracing::error!(%target, %account, "the target rejected the vault's secret: {detail}");
            self.audit(
                "vault.secret_rejected",
                r.as_ref().map(|r| r.actor.as_str()),
                Some(session),
                json!({"target": target, "account": account, "account_ref": r.as_ref().map(|r| r.account_ref.clone()), "detail": detail}),
            );
        }
        if let Some((r, admitted)) = self.registry.finish(&self.store, session, &outcome) {
            let reconnect = admitted.settings().reconnect;
            if matches!(outcome, Outcome::ClientDropped(_))
                && reconnect.mode != ReconnectMode::Strict
            {
                if let Ok(mut d) = self.drops.lock() {
                    let until = now_ms() + reconnect.grace.get().as_millis() as u64;
                    d.retain(|_, (_, u)| *u > now_ms());
                    d.insert((r.actor.clone(), r.target.clone()), (r.id.clone(), until));
                }
            }
            self.audit(
                "session.end",
                Some(&r.actor),
                Some(session),
                json!({"state": r.state, "reason": r.end_reason, "detail": r.end_detail, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out, "policy": r.policy}),
            );
        }
    }
}

impl SshBroker for Gateway {
    fn user(&self, name: &str) -> Option<UserAuth> {
        self.cfg().users.get(name).map(|u| UserAuth {
            keys: u.keys.clone(),
            has_password: u.password_hash.is_some(),
        })
    }

    async fn admit(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> Result<Admission, String> {
        self.admit_sync(login, method, client)
    }

    async fn check_host_key(
        &self,
        target: &str,
        address: &str,
        key: &PublicKey,
    ) -> Result<(), String> {
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        let openssh = key.to_openssh().unwrap_or_default();
        match self.store.hostkey_get(target, address) {
            Ok(Some((pinned_fp, pinned))) if pinned == openssh => {
                let _ = pinned_fp;
                Ok(())
            }
            Ok(Some((pinned_fp, _))) => {
                self.audit(
                    "target.hostkey_mismatch",
                    None,
                    None,
                    json!({"target": target, "address": address, "pinned": pinned_fp, "presented": fp}),
                );
                Err(format!(
                    "host key of target {target} ({address}) does not match the pinned key: pinned {pinned_fp}, \
                     presented {fp}. If the target was re-keyed on purpose, an administrator runs \
                     `wardengate hostkey forget {target}`"
                ))
            }
            Ok(None) => {
                self.store
                    .hostkey_pin(target, address, &fp, &openssh)
                    .map_err(|e| format!("cannot pin the host key of {target}: {e}"))?;
                self.audit(
                    "target.hostkey_pinned",
                    None,
                    None,
                    json!({"target": target, "address": address, "fingerprint": fp}),
                );
                Ok(())
            }
            Err(e) => Err(format!("cannot read the pinned host key of {target}: {e}")),
        }
    }

    fn paused(&self, session: &str, ticket: ResumeTicket) {
        let grace = ticket.admitted().settings().reconnect.grace;
        if let Some(r) = self.registry.pause(&self.store, session, ticket) {
            self.audit(
                "session.paused",
                Some(&r.actor),
                Some(session),
                json!({"target": r.target, "policy": r.policy, "resume_within": grace.to_string()}),
            );
        }
    }

    fn resumed(&self, session: &str, client: &ClientInfo) {
        if let Some(r) = self.registry.resume(&self.store, session) {
            self.audit(
                "session.resumed",
                Some(&r.actor),
                Some(session),
                json!({"target": r.target, "client": client.addr.to_string()}),
            );
        }
    }
}
