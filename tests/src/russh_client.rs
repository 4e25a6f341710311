//! A minimal russh client for tests and `wg-bench`: what the OpenSSH CLI cannot do on demand
//! (send a window change without a terminal, a keepalive now, one byte and time its echo).

use std::sync::Arc;

use anyhow::{bail, Result};
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};

pub struct AcceptAnyHostKey;

impl client::Handler for AcceptAnyHostKey {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true) // loopback hosts we started ourselves
    }
}

/// Connect to 127.0.0.1:`port` and authenticate `user` with `key`.
pub async fn connect(
    port: u16,
    user: &str,
    key: Arc<PrivateKey>,
) -> Result<Handle<AcceptAnyHostKey>> {
    let cfg = Arc::new(client::Config {
        nodelay: true,
        ..Default::default()
    });
    let mut h = client::connect(cfg, ("127.0.0.1", port), AcceptAnyHostKey).await?;
    let ok = h
        .authenticate_publickey(user.to_string(), PrivateKeyWithHashAlg::new(key, None))
        .await?;
    if !ok.success() {
        bail!("authentication failed for {user}");
    }
    Ok(h)
}

pub fn load_key(path: &std::path::Path) -> Result<Arc<PrivateKey>> {
    let text = std::fs::read_to_string(path)?;
    Ok(Arc::new(PrivateKey::from_openssh(text.trim())?))
}
