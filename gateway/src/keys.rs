//! Key material the gateway generates: its SSH host key, demo keys, the admin token.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// A fresh Ed25519 key.
pub fn generate_ed25519(comment: &str) -> Result<PrivateKey> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow!("no randomness for a key: {e}"))?;
    let kp = Ed25519Keypair::from_seed(&seed);
    PrivateKey::new(KeypairData::from(kp), comment).map_err(|e| anyhow!("cannot build key: {e}"))
}

pub fn private_openssh(key: &PrivateKey) -> Result<String> {
    Ok(key
        .to_openssh(LineEnding::LF)
        .map_err(|e| anyhow!("cannot encode key: {e}"))?
        .to_string())
}

pub fn public_openssh(key: &PrivateKey) -> Result<String> {
    key.public_key()
        .to_openssh()
        .map_err(|e| anyhow!("cannot encode public key: {e}"))
}

/// Write `key` as `path` (0600) and `path.pub`.
pub fn write_keypair(path: &Path, key: &PrivateKey) -> Result<()> {
    crate::util::write_private(path, private_openssh(key)?.as_bytes())?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    std::fs::write(&pub_path, format!("{}\n", public_openssh(key)?))
        .with_context(|| format!("cannot write {}", Path::new(&pub_path).display()))
}

/// Load the host key at `path`, generating it on first start.
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read host key {}", path.display()))?;
        return PrivateKey::from_openssh(text.trim()).map_err(|e| {
            anyhow!(
                "{} is not an unencrypted OpenSSH private key: {e}",
                path.display()
            )
        });
    }
    let key = generate_ed25519("wardengate host key")?;
    write_keypair(path, &key)?;
    tracing::info!(file = %path.display(), "generated SSH host key");
    Ok(key)
}

/// The admin token: `WARDENGATE_ADMIN_TOKEN`, else the token file (generated when missing).
pub fn load_or_create_token(path: &Path) -> Result<String> {
    if let Ok(t) = std::env::var("WARDENGATE_ADMIN_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    if path.exists() {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read admin token {}", path.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(anyhow!("admin token file {} is empty", path.display()));
        }
        return Ok(t);
    }
    let t = crate::util::new_token()?;
    crate::util::write_private(path, format!("{t}\n").as_bytes())?;
    Ok(t)
}
