//! The SSH side of the contract: a user's keys, admission, target host-key pinning, and a
//! session's pause and resume.

use russh::keys::{HashAlg, PublicKey};
use serde_json::json;
use wardengate_protocols::ssh::{ClientInfo, ResumeTicket, SshBroker};

use super::Gateway;
use crate::store::HostKey;

impl SshBroker for Gateway {
    async fn check_host_key(
        &self,
        target: &str,
        address: &str,
        key: &PublicKey,
    ) -> Result<(), String> {
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        let openssh = key.to_openssh().unwrap_or_default();
        match self.store.hostkey_get(target, address).await {
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
                    .hostkey_pin(HostKey {
                        target: target.to_string(),
                        address: address.to_string(),
                        fingerprint: fp.clone(),
                        key: openssh,
                    })
                    .await
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
        if let Some(r) = self.registry.pause(&*self.store, session, ticket) {
            self.audit(
                "session.paused",
                Some(&r.actor),
                Some(session),
                json!({"target": r.target, "policy": r.policy, "resume_within": grace.to_string()}),
            );
        }
    }

    fn resumed(&self, session: &str, client: &ClientInfo) {
        if let Some(r) = self.registry.resume(&*self.store, session) {
            self.audit(
                "session.resumed",
                Some(&r.actor),
                Some(session),
                json!({"target": r.target, "client": client.addr.to_string()}),
            );
        }
    }
}
