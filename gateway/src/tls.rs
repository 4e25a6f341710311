//! The TLS certificates of the protocol fronts (PostgreSQL, RDP): loaded from the configured
//! files, or generated self-signed on first start when neither file exists.

use std::path::Path;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use crate::config::Loaded;

/// A server configuration for `what`'s clients (`postgres`, `rdp`: the names of the config
/// sections), and the certificate chain it presents.
pub fn server_config(
    cfg: &Loaded,
    cert_file: &Path,
    key_file: &Path,
    what: &str,
) -> Result<(rustls::ServerConfig, Vec<CertificateDer<'static>>)> {
    let cert = cfg.in_data_dir(cert_file);
    let key = cfg.in_data_dir(key_file);
    if !cert.exists() && !key.exists() {
        generate(&cert, &key, what)?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("cannot read {what}.tls_cert_file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what}.tls_cert_file {} is not PEM", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "{what}.tls_cert_file {} holds no certificate",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(&key).with_context(|| {
        format!(
            "cannot read {what}.tls_key_file {} (a PEM private key)",
            key.display()
        )
    })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain.clone(), private)
        .with_context(|| format!("the {what} TLS certificate and key do not fit together"))?;
    Ok((config, chain))
}

fn generate(cert: &Path, key: &Path, what: &str) -> Result<()> {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .with_context(|| format!("cannot generate the {what} TLS certificate"))?;
    std::fs::write(cert, c.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    crate::util::write_private(key, c.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", key.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate for {what} clients");
    Ok(())
}
