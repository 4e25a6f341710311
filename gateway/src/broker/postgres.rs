//! The gateway's side of the PostgreSQL front: cancel requests, and the front's settings with its
//! TLS certificate.

use std::sync::Arc;

use anyhow::Result;
use wardengate_protocols::postgres::{Capture, PgBroker, PgSettings};

use super::Gateway;
use crate::config::{Loaded, PostgresSection};

impl PgBroker for Gateway {
    fn cancel_allowed(&self, peer: std::net::IpAddr) -> bool {
        self.cancels.allow(peer)
    }

    fn cancel_unknown(&self, peer: std::net::IpAddr) {
        self.cancels.unknown(peer)
    }
}

/// The front's settings: TLS from the configured certificate, generated (self-signed, for
/// `localhost`) on first start when neither file exists.
pub fn settings(cfg: &Loaded, section: &PostgresSection) -> Result<PgSettings> {
    let (mut config, _) = crate::tls::server_config(
        cfg,
        &section.tls_cert_file,
        &section.tls_key_file,
        "postgres",
    )?;
    // PostgreSQL 17 clients offer this ALPN name with direct TLS (and with SSLRequest).
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(PgSettings {
        tls: Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        require_tls: section.require_tls,
        auth_rejection_time: section.auth_rejection_time,
        connect_timeout: section.connect_timeout,
        auth_timeout: section
            .auth_timeout
            .unwrap_or(cfg.config.security.auth_timeout),
        capture: Capture {
            max_bytes: section.capture_bytes.max(16),
            redact_params: section.redact_params,
        },
    })
}
