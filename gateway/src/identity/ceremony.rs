//! The two WebAuthn ceremonies the page runs: enrolment (registration) and proof (assertion),
//! each verified by webauthn-rs, each outcome audited (`mfa.enrolled`, `mfa.passed`,
//! `mfa.failed` with the reason).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wardengate_protocols::session::now_ms;
use webauthn_rs::prelude::{
    PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey, SecurityKeyAuthentication,
    SecurityKeyRegistration, Uuid, Webauthn, WebauthnError,
};

use super::{lock, Pending, Proof, Purpose, State};
use crate::broker::Gateway;
use crate::store::SecurityKeyRow;

/// Why a ceremony cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    /// The ticket is unknown, spent or expired (one text whatever the reason).
    #[error(
        "this link cannot be used: it was used already, has expired, or was never issued; ask \
         for a new one (`wgctl mfa enroll`, `wgctl mfa prove`, or connect again)"
    )]
    Ticket,
    /// The browser's answer did not verify (audited as `mfa.failed`).
    #[error("{0}")]
    Refused(String),
    /// Nothing to prove with, or bad input.
    #[error("{0}")]
    Unusable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The WebAuthn user handle of a person: stable, derived from the name.
fn user_handle(user: &str) -> Uuid {
    let d = Sha256::digest(format!("wardengate user {user}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Uuid::from_bytes(b)
}

/// The origin the browser put in its client data, for messages.
fn seen_origin(client_data_json: &[u8]) -> String {
    serde_json::from_slice::<Value>(client_data_json)
        .ok()
        .and_then(|v| v["origin"].as_str().map(String::from))
        .map(|o| o.chars().filter(|c| !c.is_control()).take(200).collect())
        .unwrap_or_else(|| "(none)".into())
}

/// The authenticator model (AAGUID) from a registration's attestation object, when it says.
fn aaguid(attestation_object: &[u8]) -> Option<String> {
    use serde_cbor_2::Value as Cbor;
    let Ok(Cbor::Map(m)) = serde_cbor_2::from_slice::<Cbor>(attestation_object) else {
        return None;
    };
    let Some(Cbor::Bytes(auth)) = m.get(&Cbor::Text("authData".into())) else {
        return None;
    };
    // rpIdHash (32), flags (1, AT = 0x40), signCount (4), then the AAGUID (16).
    let id = auth.get(37..53).filter(|_| auth[32] & 0x40 != 0)?;
    (id.iter().any(|b| *b != 0)).then(|| Uuid::from_slice(id).ok().map(|u| u.to_string()))?
}

/// The signature counter an assertion carries (authenticator data bytes 33..37).
fn presented_counter(authenticator_data: &[u8]) -> Option<u32> {
    let b = authenticator_data.get(33..37)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The counter inside webauthn-rs's stored credential.
fn stored_counter(key: &SecurityKey) -> u32 {
    serde_json::to_value(key)
        .ok()
        .and_then(|v| v["cred"]["counter"].as_u64())
        .unwrap_or(0) as u32
}

impl Gateway {
    /// The relying party as configured now.
    fn relying_party(&self) -> Result<Webauthn, CeremonyError> {
        let cfg = self.cfg();
        super::relying_party(&cfg.config.identity, self.api_port, cfg.config.api.scheme())
            .map_err(CeremonyError::Internal)
    }

    /// The origin of the gateway's pages, for links.
    pub fn page_origin(&self) -> String {
        let cfg = self.cfg();
        super::origin(&cfg.config.identity, self.api_port, cfg.config.api.scheme())
    }

    /// The page asks for the challenge of its ticket: WebAuthn options for
    /// `navigator.credentials.create` (enrol) or `.get` (prove), and what the page shows.
    pub async fn mfa_start(&self, ticket: &str) -> Result<Value, CeremonyError> {
        let (user, purpose) = {
            let p = lock(&self.mfa.pending);
            let t = p
                .get(ticket)
                .filter(|t| t.expires > std::time::Instant::now())
                .ok_or(CeremonyError::Ticket)?;
            (t.user.clone(), t.purpose.clone())
        };
        let rp = self.relying_party()?;
        let rows = self
            .store
            .key_list(Some(&user))
            .await
            .map_err(|e| CeremonyError::Internal(format!("{e:#}")))?;
        let keys: Vec<SecurityKey> = rows
            .iter()
            .filter_map(|r| serde_json::from_str(&r.key).ok())
            .collect();
        let (state, shown) = match &purpose {
            Purpose::Enroll { name } => {
                let exclude = keys.iter().map(|k| k.cred_id().clone()).collect();
                let (options, reg) = rp
                    .start_securitykey_registration(
                        user_handle(&user),
                        &user,
                        &user,
                        Some(exclude),
                        None,
                        None,
                    )
                    .map_err(|e| CeremonyError::Internal(e.to_string()))?;
                (
                    State::Register(Box::new(reg)),
                    json!({"kind": "enroll", "user": user, "name": name, "options": options}),
                )
            }
            Purpose::Prove { .. } | Purpose::SignIn { .. } => {
                let (kind, policy) = match &purpose {
                    Purpose::Prove { policy } => ("prove", policy.clone()),
                    _ => ("signin", None),
                };
                if keys.is_empty() {
                    return Err(CeremonyError::Unusable(format!(
                        "{user} has no security key enrolled: enrol one first (`wgctl mfa enroll`)"
                    )));
                }
                let (options, auth) = rp
                    .start_securitykey_authentication(&keys)
                    .map_err(|e| CeremonyError::Internal(e.to_string()))?;
                (
                    State::Assert(Box::new(auth)),
                    json!({"kind": kind, "user": user, "policy": policy, "options": options}),
                )
            }
        };
        let mut p = lock(&self.mfa.pending);
        let t = p.get_mut(ticket).ok_or(CeremonyError::Ticket)?;
        // A reloaded page starts again with a new challenge; the old one is void.
        t.state = Some(state);
        Ok(shown)
    }

    /// The page's answer: verified, stored, audited; the ticket is spent whatever the outcome.
    pub async fn mfa_finish(&self, ticket: &str, answer: Value) -> Result<String, CeremonyError> {
        let pending: Pending = {
            let mut p = lock(&self.mfa.pending);
            match p.get(ticket) {
                Some(t) if t.expires > std::time::Instant::now() && t.state.is_some() => {}
                _ => return Err(CeremonyError::Ticket),
            }
            p.remove(ticket).ok_or(CeremonyError::Ticket)?
        };
        let Pending {
            user,
            purpose,
            state,
            done,
            ..
        } = pending;
        let rp = self.relying_party()?;
        let outcome = match (purpose, state) {
            (Purpose::Enroll { name }, Some(State::Register(reg))) => {
                self.enrolled(&rp, &user, &name, answer, &reg).await
            }
            (Purpose::Prove { policy }, Some(State::Assert(auth))) => {
                self.proved(&rp, &user, Ok(policy), answer, &auth).await
            }
            (Purpose::SignIn { code }, Some(State::Assert(auth))) => {
                self.proved(&rp, &user, Err(code), answer, &auth).await
            }
            _ => Err(CeremonyError::Ticket),
        };
        let _ = done.send(Some(match &outcome {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "wardengate: access denied: the security-key check failed: {e}"
            )),
        }));
        outcome
    }

    /// Why webauthn-rs refused, in terms of the configuration and the person's keys; audited.
    fn refused(&self, user: &str, stage: &str, e: WebauthnError, detail: Value) -> CeremonyError {
        let cfg = self.cfg();
        let id = &cfg.config.identity;
        let reason = match e {
            WebauthnError::InvalidRPOrigin => format!(
                "the page's origin {} is not the gateway's ({}, [identity] origin)",
                detail["origin"].as_str().unwrap_or("?"),
                self.page_origin()
            ),
            WebauthnError::InvalidRPIDHash => format!(
                "the key answered for another relying party than '{}' ([identity] rp_id)",
                id.rp_id
            ),
            WebauthnError::CredentialPossibleCompromise => format!(
                "the key's signature counter did not move forward (stored {}, presented {}): it \
                 may be a cloned key; refused",
                detail["stored_counter"], detail["presented_counter"]
            ),
            WebauthnError::MismatchedChallenge => {
                "the answer is for another challenge (a page opened twice?); open a new link".into()
            }
            WebauthnError::UserNotPresent => "the key did not confirm a touch".into(),
            WebauthnError::UserNotVerified => "the key did not verify its user (PIN)".into(),
            other => format!("the key's answer does not verify ({other})"),
        };
        let mut d = detail;
        d["stage"] = stage.into();
        d["reason"] = reason.clone().into();
        self.audit("mfa.failed", Some(user), None, d);
        CeremonyError::Refused(reason)
    }

    async fn enrolled(
        &self,
        rp: &Webauthn,
        user: &str,
        name: &str,
        answer: Value,
        reg: &SecurityKeyRegistration,
    ) -> Result<String, CeremonyError> {
        let cred: RegisterPublicKeyCredential = serde_json::from_value(answer).map_err(|e| {
            CeremonyError::Unusable(format!("the browser's answer is not a registration: {e}"))
        })?;
        let origin = seen_origin(&cred.response.client_data_json);
        let key = rp
            .finish_securitykey_registration(&cred, reg)
            .map_err(|e| {
                self.refused(user, "enroll", e, json!({"origin": origin, "name": name}))
            })?;
        let row = SecurityKeyRow {
            id: crate::util::new_id("key_"),
            user: user.to_string(),
            name: name.to_string(),
            credential_id: URL_SAFE_NO_PAD.encode(key.cred_id()),
            aaguid: aaguid(&cred.response.attestation_object),
            key: serde_json::to_string(&key).map_err(|e| CeremonyError::Internal(e.to_string()))?,
            counter: stored_counter(&key),
            created_ms: now_ms(),
            last_used_ms: None,
        };
        self.store
            .key_put(row.clone())
            .await
            .map_err(|e| CeremonyError::Internal(format!("cannot store the key: {e:#}")))?;
        self.audit(
            "mfa.enrolled",
            Some(user),
            None,
            json!({"key": row.id, "name": name, "aaguid": row.aaguid, "credential_id": row.credential_id}),
        );
        Ok(format!(
            "security key '{name}' enrolled for {user} ({}); you can close this page",
            row.id
        ))
    }

    async fn proved(
        &self,
        rp: &Webauthn,
        user: &str,
        for_what: Result<Option<String>, String>,
        answer: Value,
        auth: &SecurityKeyAuthentication,
    ) -> Result<String, CeremonyError> {
        // A proof for sessions (a policy, or any), or the sign-in of this code.
        let (policy, sign_in) = match for_what {
            Ok(p) => (p, None),
            Err(code) => (None, Some(code)),
        };
        let cred: PublicKeyCredential = serde_json::from_value(answer).map_err(|e| {
            CeremonyError::Unusable(format!("the browser's answer is not an assertion: {e}"))
        })?;
        let origin = seen_origin(&cred.response.client_data_json);
        let rows = self
            .store
            .key_list(Some(user))
            .await
            .map_err(|e| CeremonyError::Internal(format!("{e:#}")))?;
        let presented_id = URL_SAFE_NO_PAD.encode(&*cred.raw_id);
        let row = rows.iter().find(|r| r.credential_id == presented_id);
        let detail = json!({
            "origin": origin,
            "policy": policy,
            "key": row.map(|r| r.id.clone()),
            "stored_counter": row.map(|r| r.counter),
            "presented_counter": presented_counter(&cred.response.authenticator_data),
        });
        let result = rp
            .finish_securitykey_authentication(&cred, auth)
            .map_err(|e| self.refused(user, "prove", e, detail))?;
        let row = rows
            .iter()
            .find(|r| r.credential_id == URL_SAFE_NO_PAD.encode(result.cred_id()))
            .ok_or_else(|| CeremonyError::Internal("the key was removed meanwhile".into()))?;
        let mut key: SecurityKey = serde_json::from_str(&row.key)
            .map_err(|e| CeremonyError::Internal(format!("stored key {}: {e}", row.id)))?;
        key.update_credential(&result);
        let used = SecurityKeyRow {
            key: serde_json::to_string(&key).map_err(|e| CeremonyError::Internal(e.to_string()))?,
            counter: result.counter(),
            last_used_ms: Some(now_ms()),
            ..row.clone()
        };
        // The counter must be stored before the proof counts, or a clone could replay it.
        self.store
            .key_put(used)
            .await
            .map_err(|e| CeremonyError::Internal(format!("cannot store the key: {e:#}")))?;
        if let Some(code) = &sign_in {
            self.login_proved(user, code)
                .await
                .map_err(CeremonyError::Unusable)?;
            self.audit(
                "mfa.passed",
                Some(user),
                None,
                json!({"key": row.id, "name": row.name, "for": "sign-in", "counter": result.counter()}),
            );
            return Ok(format!(
                "{user} signed in with '{}'; go back to wgctl",
                row.name
            ));
        }
        self.mfa.prove(Proof {
            user: user.to_string(),
            policy: policy.clone(),
            key: row.name.clone(),
            at_ms: now_ms(),
            spent: false,
        });
        self.audit(
            "mfa.passed",
            Some(user),
            None,
            json!({"key": row.id, "name": row.name, "policy": policy, "counter": result.counter()}),
        );
        Ok(format!(
            "{user} proved presence with '{}'; go back to your terminal or connect again",
            row.name
        ))
    }
}

/// Why no link to prove presence was given.
pub enum NoLink {
    /// The person has no security key enrolled.
    NotEnrolled,
    /// The store or the link book failed (logged): the message to answer with.
    Internal(&'static str),
}

impl crate::broker::Gateway {
    /// A one-time link for `user` to prove presence with an enrolled key, for `policy` (or any
    /// policy): what admission and access sessions hand out when a policy asks for a key.
    pub async fn presence_link(
        &self,
        user: &str,
        policy: Option<String>,
    ) -> Result<super::Link, NoLink> {
        let keys = self.store.key_list(Some(user)).await.map_err(|e| {
            tracing::error!("cannot read security keys: {e:#}");
            NoLink::Internal("wardengate: internal error while checking security keys")
        })?;
        if keys.is_empty() {
            return Err(NoLink::NotEnrolled);
        }
        let ttl = self.cfg().config.identity.link_ttl;
        self.mfa
            .issue(user, Purpose::Prove { policy }, &self.page_origin(), ttl)
            .map_err(|e| {
                tracing::error!("cannot issue a security-key link: {e}");
                NoLink::Internal("wardengate: internal error while asking for a security key")
            })
    }

    /// The policy that admits `user` to `target` (its default account): what a proof made
    /// ahead (`wgctl mfa prove --target`) is for.
    pub fn policy_for(&self, user: &str, target: &str) -> Result<String, String> {
        use wardengate_api::text::{inert, MAX_NAME};
        let cfg = self.cfg();
        let t = cfg
            .targets
            .get(target)
            .ok_or_else(|| format!("no target {}", inert(target, MAX_NAME)))?;
        let login = wardengate_protocols::session::Login {
            user: user.to_string(),
            target: target.to_string(),
            account: None,
            waiting: None,
        };
        let r = crate::admission::resolve(&cfg, &login, t.protocol)
            .map_err(|(_, m)| m.trim_start_matches("wardengate: ").to_string())?;
        wardengate_policy::decide(&cfg.policies, &r.request(t.protocol))
            .map(|a| a.policy().to_string())
            .map_err(|d| format!("no policy admits {user} to {target}: {}", d.why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_handles_are_stable_and_distinct() {
        assert_eq!(user_handle("alice"), user_handle("alice"));
        assert_ne!(user_handle("alice"), user_handle("bob"));
    }

    #[test]
    fn counters_and_origins_are_read_from_what_the_browser_sent() {
        let mut data = vec![0u8; 37];
        data[33..37].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(presented_counter(&data), Some(7));
        assert_eq!(presented_counter(&data[..30]), None);
        assert_eq!(
            seen_origin(br#"{"type":"webauthn.get","origin":"http://evil.localhost:1"}"#),
            "http://evil.localhost:1"
        );
        assert_eq!(seen_origin(b"not json"), "(none)");
    }
}
