//! The gateway's side of the PostgreSQL front: users, admission (shared with SSH, mapped to
//! SQLSTATEs), and the front's settings with its TLS certificate.

use std::sync::Arc;

use anyhow::Result;
use wardengate_protocols::postgres::{
    Capture, PgBroker, PgPlan, PgSettings, PgTarget, PgUserAuth, TargetTls,
};
use wardengate_protocols::session::{ClientInfo, Denial, Login};

use super::Gateway;
use crate::config::{Loaded, PostgresSection};
use crate::vault::SecretKind;

impl PgBroker for Gateway {
    fn cancel_allowed(&self, peer: std::net::IpAddr) -> bool {
        self.cancels.allow(peer)
    }

    fn cancel_unknown(&self, peer: std::net::IpAddr) {
        self.cancels.unknown(peer)
    }

    fn pg_user(&self, name: &str) -> Option<PgUserAuth> {
        self.cfg().users.get(name).map(|u| PgUserAuth {
            scram: u.scram.clone(),
            has_password: u.password_hash.is_some(),
        })
    }

    async fn admit_pg(
        &self,
        login: &Login,
        method: &str,
        client: &ClientInfo,
    ) -> Result<PgPlan, Denial> {
        let cfg = self.cfg();
        let a = self
            .admit_session(login, method, client, wardengate_api::Protocol::Postgres, |secret, account, target| match secret.kind {
                SecretKind::Password => Ok(secret.value),
                SecretKind::PrivateKey => Err(format!(
                    "wardengate: the vault holds a private key for {}@{}, but a PostgreSQL account needs a password",
                    account.name, target.name
                )),
            })
            .await?;
        let tls = cfg
            .pg_tls
            .get(&a.target.name)
            .cloned()
            .unwrap_or(TargetTls::Disable);
        Ok(PgPlan {
            admitted: a.admitted,
            link: a.link,
            target: PgTarget {
                username: a.account.username().to_string(),
                name: a.target.name,
                address: a.target.address,
                password: a.credential,
                database: a.target.database,
                tls,
                tls_server_name: a.target.tls_server_name,
                auth_methods: a
                    .target
                    .auth_methods
                    .unwrap_or_else(|| vec!["scram-sha-256".to_string()]),
            },
        })
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
