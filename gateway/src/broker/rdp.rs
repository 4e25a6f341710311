//! The gateway's side of the RDP front: NT hashes for NLA, admission (shared with SSH and
//! PostgreSQL), and the front's settings with its TLS certificate.

use std::sync::Arc;

use anyhow::{Context, Result};
use wardengate_protocols::rdp::{RdpBroker, RdpPlan, RdpSettings, RdpTarget};
use wardengate_protocols::session::{ClientInfo, Denial, Login};

use super::Gateway;
use crate::config::{Loaded, RdpSection};
use crate::vault::SecretKind;

impl RdpBroker for Gateway {
    fn rdp_nt_hash(&self, user: &str) -> Option<[u8; 16]> {
        self.cfg().users.get(user).and_then(|u| u.nt_hash)
    }

    async fn admit_rdp(&self, login: &Login, client: &ClientInfo) -> Result<RdpPlan, Denial> {
        let a = self
            .admit_session(login, "nla", client, wardengate_api::Protocol::Rdp, |secret, account, target| {
                match secret.kind {
                    SecretKind::Password => Ok(secret.value),
                    SecretKind::PrivateKey => Err(format!(
                        "wardengate: the vault holds a private key for {}@{}, but a Windows account needs a password",
                        account.name, target.name
                    )),
                }
            })
            .await?;
        Ok(RdpPlan {
            admitted: a.admitted,
            link: a.link,
            target: RdpTarget {
                username: a.account.username().to_string(),
                name: a.target.name,
                address: a.target.address,
                password: a.credential,
            },
        })
    }
}

/// The front's settings: TLS from the configured certificate (generated on first start when
/// neither file exists) and its public key for CredSSP.
pub fn settings(cfg: &Loaded, section: &RdpSection) -> Result<RdpSettings> {
    let (config, chain) =
        crate::tls::server_config(cfg, &section.tls_cert_file, &section.tls_key_file, "rdp")?;
    let leaf = chain
        .first()
        .context("the RDP certificate chain is empty")?;
    let public_key = wardengate_protocols::rdp::nego::public_key(leaf.as_ref())
        .map_err(anyhow::Error::msg)
        .context("the RDP TLS certificate")?;
    Ok(RdpSettings {
        tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        public_key,
        auth_rejection_time: section.auth_rejection_time,
        connect_timeout: section.connect_timeout,
        auth_timeout: section
            .auth_timeout
            .unwrap_or(cfg.config.security.auth_timeout),
    })
}
