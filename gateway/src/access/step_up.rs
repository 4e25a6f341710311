//! The security key a network policy asks for (`mfa = "webauthn"`) before an access session
//! opens anything: a proof made already (`wgctl mfa prove`, or the link of an earlier refusal),
//! or a refusal carrying the link that makes one.

use std::net::IpAddr;

use axum::http::StatusCode;
use serde_json::json;
use wardengate_policy::{MfaMode, Policy};

use super::session::{refuse, AccessRefusal};
use crate::broker::Gateway;
use crate::config::Resource;
use crate::identity::{Proof, Purpose};

impl Gateway {
    /// A proof of presence for every granting policy that asks for a key, or the refusal that
    /// says how to make one. A proof made for any policy covers them all; when several ask,
    /// the link makes such a proof, so that one touch opens the whole session.
    pub(super) async fn access_second_factor(
        &self,
        user: &str,
        grants: &[(Resource, Policy)],
        addr: IpAddr,
    ) -> Result<Option<Proof>, AccessRefusal> {
        let mut asking: Vec<&Policy> = Vec::new();
        for (_, p) in grants {
            if p.mfa != MfaMode::Off && !asking.iter().any(|a| a.name == p.name) {
                asking.push(p);
            }
        }
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
        let keys = self.store.key_list(Some(user)).await.map_err(|e| {
            tracing::error!("cannot read security keys: {e:#}");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "wardengate: internal error while checking security keys".into(),
            )
        })?;
        if keys.is_empty() {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "policy {names} requires a security key, and {user} has none enrolled; \
                     enrol one with `wgctl mfa enroll`, then start the access session again"
                ),
            ));
        }
        let purpose = Purpose::Prove {
            policy: match asking.as_slice() {
                [one] => Some(one.name.clone()),
                _ => None,
            },
        };
        let link = self
            .mfa
            .issue(user, purpose, &self.page_origin(), id.link_ttl)
            .map_err(|e| {
                tracing::error!("cannot issue a security-key link: {e}");
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "wardengate: internal error while asking for a security key".into(),
                )
            })?;
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
        refusal.mfa = Some(json!({"url": link.url, "ticket": ticket, "policy": names,
                                  "expires_in_secs": link.expires_in.as_secs()}));
        Err(refusal)
    }
}
