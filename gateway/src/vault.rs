//! The credential vault: target secrets encrypted at rest with XChaCha20-Poly1305.
//!
//! The 32-byte key comes from `WARDENGATE_VAULT_KEY` (hex) or the key file (hex), never from the
//! store. Each secret has its own random 192-bit nonce, and the secret's reference is bound as
//! associated data, so a ciphertext copied to another reference fails to decrypt. Plaintext leaves
//! this module only as a [`Secret`], whose `Debug` is redacted; nothing here logs a secret.

use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::store::Store;

/// What kind of secret a reference holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    Password,
    PrivateKey,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::PrivateKey => "private_key",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "password" => Ok(SecretKind::Password),
            "private_key" => Ok(SecretKind::PrivateKey),
            other => bail!("unknown secret kind '{other}' in the vault"),
        }
    }
}

/// A decrypted secret. Never printed.
pub struct Secret {
    pub kind: SecretKind,
    pub value: String,
}

impl Secret {
    /// No secret: what a target that injects none (TCP) is admitted with.
    pub fn none() -> Secret {
        Secret {
            kind: SecretKind::Password,
            value: String::new(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, <redacted>)", self.kind.as_str())
    }
}

pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault(<key redacted>)")
    }
}

impl Vault {
    /// Load the key from `WARDENGATE_VAULT_KEY` or `key_file`; create the file (mode 0600) when
    /// neither exists and `create` is set.
    pub fn open(key_file: &Path, create: bool) -> Result<Vault> {
        const WHAT: &str = "vault key";
        let key = if let Ok(hex_key) = std::env::var("WARDENGATE_VAULT_KEY") {
            crate::util::parse_key(&hex_key, "WARDENGATE_VAULT_KEY", WHAT)?
        } else if key_file.exists() || create {
            // A new key is logged as generated: back it up, secrets cannot be read without it.
            crate::util::key_file(key_file, WHAT)?
        } else {
            bail!(
                "no vault key: set WARDENGATE_VAULT_KEY or create {} (64 hex characters)",
                key_file.display()
            );
        };
        Ok(Vault {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    pub async fn put(
        &self,
        store: &dyn Store,
        reference: &str,
        kind: SecretKind,
        value: &str,
    ) -> Result<()> {
        if reference.is_empty() {
            bail!("a vault reference must not be empty");
        }
        if kind == SecretKind::PrivateKey {
            russh::keys::PrivateKey::from_openssh(value.trim())
                .map_err(|e| anyhow!("not an unencrypted OpenSSH private key: {e}"))?;
        }
        let mut nonce = [0u8; 24];
        getrandom::getrandom(&mut nonce).map_err(|e| anyhow!("no randomness for a nonce: {e}"))?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: reference.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("encryption failed"))?;
        store
            .vault_put(
                reference,
                crate::store::VaultEntry {
                    kind: kind.as_str().to_string(),
                    nonce: nonce.to_vec(),
                    ciphertext,
                },
            )
            .await
    }

    pub async fn get(&self, store: &dyn Store, reference: &str) -> Result<Secret> {
        let crate::store::VaultEntry {
            kind,
            nonce,
            ciphertext,
        } = store
            .vault_get(reference)
            .await?
            .ok_or_else(|| anyhow!("no secret stored under '{reference}'"))?;
        if nonce.len() != 24 {
            bail!(
                "vault entry '{reference}' is corrupt (nonce length {})",
                nonce.len()
            );
        }
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: reference.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow!("vault entry '{reference}' cannot be decrypted with this vault key")
            })?;
        Ok(Secret {
            kind: SecretKind::parse(&kind)?,
            value: String::from_utf8(plain)
                .map_err(|_| anyhow!("vault entry '{reference}' is not text"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_binding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Sqlite::open(&dir.path().join("db.sqlite")).expect("store");
        let vault = Vault::open(&dir.path().join("vault.key"), true).expect("vault");
        vault
            .put(&store, "web/root", SecretKind::Password, "hunter2")
            .await
            .expect("put");
        let s = vault.get(&store, "web/root").await.expect("get");
        assert_eq!(s.value, "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        // Stored ciphertext does not contain the plaintext.
        let entry = store
            .vault_get("web/root")
            .await
            .expect("row")
            .expect("some");
        assert!(!entry.ciphertext.windows(7).any(|w| w == b"hunter2"));
        // Another key cannot read it.
        let other = Vault::open(&dir.path().join("other.key"), true).expect("vault2");
        assert!(other.get(&store, "web/root").await.is_err());
        assert!(vault.get(&store, "missing").await.is_err());
    }
}
