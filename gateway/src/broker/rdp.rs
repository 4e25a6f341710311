//! The RDP front's settings with its TLS certificate.

use std::sync::Arc;

use anyhow::{Context, Result};
use wardengate_protocols::rdp::RdpSettings;

use crate::config::{Loaded, RdpSection};

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
