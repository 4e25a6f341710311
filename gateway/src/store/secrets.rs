//! Pinned target host keys and the vault's ciphertexts.

use anyhow::Result;
use rusqlite::{params, OptionalExtension};

use super::Db;

/// A target's SSH host key as pinned on first use.
#[derive(Debug, Clone)]
pub struct HostKey {
    pub target: String,
    /// `host:port`
    pub address: String,
    /// SHA256 fingerprint, as OpenSSH prints it.
    pub fingerprint: String,
    /// The key in OpenSSH format.
    pub key: String,
}

/// A vault row: the secret's kind, its nonce and its ciphertext.
pub struct VaultEntry {
    pub kind: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl Db {
    pub fn hostkey_get(&self, target: &str, address: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT fingerprint, key FROM host_keys WHERE target=?1 AND address=?2",
                [target, address],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn hostkey_pin(&self, k: &HostKey) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO host_keys (target, address, fingerprint, key, first_seen_ms) VALUES (?1,?2,?3,?4,?5)",
            params![k.target, k.address, k.fingerprint, k.key, wardengate_protocols::session::now_ms() as i64],
        )?;
        Ok(())
    }

    pub fn hostkey_forget(&self, target: &str) -> Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM host_keys WHERE target=?1", [target])?)
    }

    pub fn vault_put(&self, reference: &str, e: &VaultEntry) -> Result<()> {
        self.conn.execute(
            "INSERT INTO vault (ref, kind, nonce, ciphertext, updated_ms) VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT(ref) DO UPDATE SET kind=?2, nonce=?3, ciphertext=?4, updated_ms=?5",
            params![
                reference,
                e.kind,
                e.nonce,
                e.ciphertext,
                wardengate_protocols::session::now_ms() as i64
            ],
        )?;
        Ok(())
    }

    pub fn vault_get(&self, reference: &str) -> Result<Option<VaultEntry>> {
        Ok(self
            .conn
            .query_row(
                "SELECT kind, nonce, ciphertext FROM vault WHERE ref=?1",
                [reference],
                |r| {
                    Ok(VaultEntry {
                        kind: r.get(0)?,
                        nonce: r.get(1)?,
                        ciphertext: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn vault_list(&self) -> Result<Vec<(String, String, u64)>> {
        let conn = &self.conn;
        let mut stmt = conn.prepare("SELECT ref, kind, updated_ms FROM vault ORDER BY ref")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
