//! The gateway's side of the PostgreSQL front: users, admission (shared with SSH, mapped to
//! SQLSTATEs), and the front's settings with its TLS certificate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_rustls::rustls;
use wardengate_protocols::postgres::{
    Capture, PgBroker, PgPlan, PgSettings, PgTarget, PgUserAuth, Refusal, TargetTls,
};
use wardengate_protocols::session::{ClientInfo, Login};

use crate::broker::Gateway;
use crate::config::{Loaded, PostgresSection};
use crate::vault::SecretKind;

impl PgBroker for Gateway {
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
    ) -> Result<PgPlan, Refusal> {
        let cfg = self.cfg();
        let a = self
            .admit_session(login, method, client, "postgres", |secret, account, target| match secret.kind {
                SecretKind::Password => Ok(secret.value),
                SecretKind::PrivateKey => Err(format!(
                    "wardengate: the vault holds a private key for {}@{}, but a PostgreSQL account needs a password",
                    account.name, target.name
                )),
            })
            .map_err(|d| Refusal {
                code: match d.kind {
                    "concurrency" => "53300",
                    "credential_unavailable" | "recording_unavailable" | "internal" => "58000",
                    _ => "28000",
                },
                detail: d.limit.map(|l| l.to_string()),
                message: d.message,
            })?;
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
    let cert = crate::server::in_data_dir(cfg, &section.tls_cert_file);
    let key = crate::server::in_data_dir(cfg, &section.tls_key_file);
    if !cert.exists() && !key.exists() {
        generate_certificate(&cert, &key)?;
    }
    let acceptor = acceptor(&cert, &key)?;
    Ok(PgSettings {
        tls: Some(acceptor),
        require_tls: section.require_tls,
        auth_rejection_time: section.auth_rejection_time,
        connect_timeout: section.connect_timeout,
        auth_timeout: section.auth_timeout,
        capture: Capture {
            max_bytes: section.capture_bytes.max(16),
            redact_params: section.redact_params,
        },
    })
}

fn generate_certificate(cert: &Path, key: &Path) -> Result<()> {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .context("cannot generate the PostgreSQL TLS certificate")?;
    std::fs::write(cert, c.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    crate::util::write_private(key, c.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", key.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate for PostgreSQL clients");
    Ok(())
}

fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read postgres.tls_cert_file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("postgres.tls_cert_file {} is not PEM", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read postgres.tls_key_file {} (a PEM private key)",
            key.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the PostgreSQL TLS certificate and key do not fit together")?;
    // PostgreSQL 17 clients offer this ALPN name with direct TLS (and with SSLRequest).
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
