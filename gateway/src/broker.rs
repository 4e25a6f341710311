//! The gateway's implementation of the protocol contract: identities, admission, vault lookup,
//! host-key pinning and the session lifecycle, each step audited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use russh::keys::{HashAlg, PublicKey};
use serde_json::json;
use wardengate_policy::{Ledger, ReconnectMode};
use wardengate_protocols::session::{now_ms, Lifecycle, Outcome};
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
        Gateway {
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

    /// Append to the audit log. An audit failure is logged loudly but never crashes a session.
    pub fn audit(
        &self,
        kind: &str,
        actor: Option<&str>,
        session: Option<&str>,
        detail: serde_json::Value,
    ) {
        if let Err(e) = self
            .store
            .audit_append(kind, actor, session, &detail.to_string())
        {
            tracing::error!(kind, "cannot append audit event: {e:#}");
        }
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

impl Lifecycle for Gateway {
    async fn verify_password(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self
            .cfg()
            .users
            .get(user)
            .and_then(|u| u.password_hash.clone())
        else {
            return false;
        };
        let password = password.to_string();
        tokio::task::spawn_blocking(move || crate::passwords::verify(&hash, &password))
            .await
            .unwrap_or(false)
    }

    fn refused(&self, login: &str, client: &ClientInfo, kind: &str, message: &str) {
        let user = login.split(':').next().unwrap_or(login);
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
                json!({"protocol": r.protocol, "target": r.target, "target_addr": r.target_addr, "account": r.account, "client": r.client_addr, "client_version": r.client_version}),
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
