//! The gateway's implementation of the protocol contract: identities, admission, vault lookup,
//! host-key pinning and the session lifecycle, each step audited.

use std::sync::Arc;

use russh::keys::{HashAlg, PublicKey};
use serde_json::json;
use wardengate_protocols::session::Outcome;
use wardengate_protocols::ssh::{ClientInfo, Credential, Login, SshBroker, TargetPlan, UserAuth};

use crate::config::Loaded;
use crate::registry::Registry;
use crate::store::{SessionRecord, Store};
use crate::vault::{SecretKind, Vault};

/// Everything a running gateway owns.
pub struct Gateway {
    pub name: String,
    pub cfg: Loaded,
    pub store: Store,
    pub vault: Vault,
    pub registry: Registry,
    pub recordings: crate::recording::Recordings,
}

impl Gateway {
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
        self.cfg
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

    fn deny(&self, rec: &mut SessionRecord, kind: &str, message: String) -> String {
        rec.state = "denied".into();
        rec.ended_ms = Some(rec.started_ms);
        rec.end_reason = Some(kind.into());
        rec.end_detail = Some(message.clone());
        if let Err(e) = self.store.session_insert(rec) {
            tracing::error!("cannot record denied session: {e:#}");
        }
        self.audit(
            "session.denied",
            Some(&rec.actor),
            Some(&rec.id),
            json!({"target": rec.target, "account": rec.account, "reason": kind, "message": message, "client": rec.client_addr}),
        );
        message
    }

    fn admit_sync(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> Result<TargetPlan, String> {
        let mut rec = SessionRecord {
            id: crate::util::new_id("sess_"),
            state: "requested".into(),
            protocol: "ssh".into(),
            actor: login.user.clone(),
            client_addr: client.addr.to_string(),
            client_version: client.version.clone(),
            target: login.target.clone(),
            account: login.account.clone().unwrap_or_default(),
            gateway: self.name.clone(),
            started_ms: wardengate_protocols::session::now_ms(),
            ..Default::default()
        };
        self.audit(
            "session.requested",
            Some(&login.user),
            Some(&rec.id),
            json!({"target": login.target, "account": login.account, "client": rec.client_addr, "auth_method": method}),
        );
        let user = self.cfg.users.get(&login.user).ok_or_else(|| {
            let msg = format!("wardengate: unknown user '{}'", login.user);
            self.deny(&mut rec, "unknown_user", msg)
        })?;
        let Some(target) = self.cfg.targets.get(&login.target) else {
            let mut names: Vec<&str> = self.cfg.targets.keys().map(String::as_str).collect();
            names.sort_unstable();
            let msg = format!(
                "wardengate: unknown target '{}' (known targets: {})",
                login.target,
                names.join(", ")
            );
            return Err(self.deny(&mut rec, "unknown_target", msg));
        };
        rec.target_addr = target.address.clone();
        let account = match &login.account {
            Some(name) => target
                .accounts
                .iter()
                .find(|a| &a.name == name)
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        target.accounts.iter().map(|a| a.name.as_str()).collect();
                    let msg = format!(
                        "wardengate: target {} has no account '{name}' (accounts: {})",
                        target.name,
                        names.join(", ")
                    );
                    self.deny(&mut rec, "unknown_account", msg)
                })?,
            None if target.accounts.len() == 1 => &target.accounts[0],
            None => {
                let names: Vec<&str> = target.accounts.iter().map(|a| a.name.as_str()).collect();
                let msg = format!(
                    "wardengate: target {} has several accounts ({}); connect as {}:{}:ACCOUNT",
                    target.name,
                    names.join(", "),
                    login.user,
                    target.name
                );
                return Err(self.deny(&mut rec, "account_required", msg));
            }
        };
        rec.account = account.name.clone();
        rec.account_ref = account.secret.clone();
        let tags: Vec<(String, String)> = target
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let req = wardengate_policy::Request {
            user: &user.name,
            groups: &user.groups,
            target: &target.name,
            target_tags: &tags,
            protocol: "ssh",
            account: &account.name,
        };
        let admitted = wardengate_policy::decide(&self.cfg.config.policies, &req).map_err(|d| {
            let msg = format!("wardengate: access denied: {d}");
            self.deny(&mut rec, "no_permission", msg)
        })?;
        rec.policy = Some(admitted.policy().to_string());
        let secret = self.vault.get(&self.store, &account.secret).map_err(|e| {
            tracing::error!(account_ref = %account.secret, "vault lookup failed: {e:#}");
            let msg = format!(
                "wardengate: the credential for {}@{} is not available ({e}); ask an administrator",
                account.name, target.name
            );
            self.deny(&mut rec, "credential_unavailable", msg)
        })?;
        let credential = match secret.kind {
            SecretKind::Password => Credential::Password(secret.value),
            SecretKind::PrivateKey => {
                let key =
                    russh::keys::PrivateKey::from_openssh(secret.value.trim()).map_err(|e| {
                        let msg = format!(
                            "wardengate: the vault key for {}@{} is unreadable: {e}",
                            account.name, target.name
                        );
                        self.deny(&mut rec, "credential_unavailable", msg)
                    })?;
                Credential::PrivateKey(Arc::new(key))
            }
        };
        rec.state = "approved".into();
        let control = crate::registry::control_channel();
        let recording = match admitted.recording() {
            wardengate_policy::RecordingMode::Off => None,
            wardengate_policy::RecordingMode::Required => Some(
                self.recordings
                    .start(&rec.id, control.0.clone())
                    .map_err(|e| {
                        tracing::error!(session = %rec.id, "cannot start recording: {e:#}");
                        let msg = format!(
                            "wardengate: policy '{}' requires this session to be recorded, but the \
                             recording cannot be written ({e:#}); the session is refused",
                            admitted.policy()
                        );
                        self.deny(&mut rec, "recording_unavailable", msg)
                    })?,
            ),
        };
        let link = self
            .registry
            .insert(&self.store, rec.clone(), control, recording)
            .map_err(|e| {
                tracing::error!("cannot register session: {e:#}");
                "wardengate: internal error while registering the session".to_string()
            })?;
        self.audit(
            "session.approved",
            Some(&rec.actor),
            Some(&rec.id),
            json!({"target": rec.target, "account": rec.account, "policy": rec.policy}),
        );
        Ok(TargetPlan {
            admitted,
            link,
            target: target.name.clone(),
            address: target.address.clone(),
            username: account.username().to_string(),
            credential,
        })
    }
}

impl SshBroker for Gateway {
    fn user(&self, name: &str) -> Option<UserAuth> {
        self.cfg.users.get(name).map(|u| UserAuth {
            keys: u.keys.clone(),
            has_password: u.password_hash.is_some(),
        })
    }

    async fn verify_password(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self
            .cfg
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

    async fn admit(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> Result<TargetPlan, String> {
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

    fn opened(&self, session: &str) {
        if let Some(r) = self.registry.activate(&self.store, session) {
            self.audit(
                "session.start",
                Some(&r.actor),
                Some(session),
                json!({"target": r.target, "target_addr": r.target_addr, "account": r.account, "client": r.client_addr, "client_version": r.client_version}),
            );
        }
    }

    fn ended(&self, session: &str, outcome: Outcome) {
        if let Some(r) = self.registry.finish(&self.store, session, &outcome) {
            self.audit(
                "session.end",
                Some(&r.actor),
                Some(session),
                json!({"state": r.state, "reason": r.end_reason, "detail": r.end_detail, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out}),
            );
        }
    }
}
