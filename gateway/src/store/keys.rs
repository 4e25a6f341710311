//! People's security keys (WebAuthn credentials): what webauthn-rs needs to verify the next
//! assertion (its `SecurityKey`, sign counter included) and what people and auditors see.

use anyhow::Result;
use rusqlite::params;

use super::cols::Cols;
use super::Db;

/// One enrolled security key or passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityKeyRow {
    /// `key_…`, the id people use to remove it.
    pub id: String,
    pub user: String,
    /// What its owner called it (`YubiKey 5C`).
    pub name: String,
    /// The WebAuthn credential id, base64url.
    pub credential_id: String,
    /// The authenticator model's AAGUID, when the authenticator tells it.
    pub aaguid: Option<String>,
    /// webauthn-rs's `SecurityKey` as JSON: public key, sign counter, flags.
    pub key: String,
    /// The sign counter after the last use (also inside `key`; kept apart to be shown).
    pub counter: u32,
    pub created_ms: u64,
    pub last_used_ms: Option<u64>,
}

/// A security key from its row (id, user, name, credential_id, aaguid, key, counter,
/// created_ms, last_used_ms).
pub(super) fn key_from_row<R: Cols>(r: &R) -> Result<SecurityKeyRow, R::Err> {
    Ok(SecurityKeyRow {
        id: r.text(0)?,
        user: r.text(1)?,
        name: r.text(2)?,
        credential_id: r.text(3)?,
        aaguid: r.opt_text(4)?,
        key: r.text(5)?,
        counter: r.uint(6)? as u32,
        created_ms: r.uint(7)?,
        last_used_ms: r.opt_uint(8)?,
    })
}

impl Db {
    /// Add a key, or replace it (same id): after each use its counter moves.
    pub fn key_put(&self, k: &SecurityKeyRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO security_keys (id, user, name, credential_id, aaguid, key, counter, created_ms, last_used_ms)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)
             ON CONFLICT(id) DO UPDATE SET name=?3, key=?6, counter=?7, last_used_ms=?9",
            params![
                k.id,
                k.user,
                k.name,
                k.credential_id,
                k.aaguid,
                k.key,
                k.counter,
                k.created_ms as i64,
                k.last_used_ms.map(|m| m as i64)
            ],
        )?;
        Ok(())
    }

    /// `user`'s keys (everyone's with `None`), oldest first.
    pub fn key_list(&self, user: Option<&str>) -> Result<Vec<SecurityKeyRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, user, name, credential_id, aaguid, key, counter, created_ms, last_used_ms
             FROM security_keys WHERE ?1 IS NULL OR user = ?1 ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map([user], |r| key_from_row(r))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Remove `user`'s key `id`, or every key of theirs with `None`; how many went.
    pub fn key_remove(&self, user: &str, id: Option<&str>) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM security_keys WHERE user = ?1 AND (?2 IS NULL OR id = ?2)",
            params![user, id],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, user: &str) -> SecurityKeyRow {
        SecurityKeyRow {
            id: id.into(),
            user: user.into(),
            name: "YubiKey 5C".into(),
            credential_id: format!("cred-{id}"),
            aaguid: None,
            key: "{}".into(),
            counter: 1,
            created_ms: 1000,
            last_used_ms: None,
        }
    }

    #[test]
    fn keys_are_added_updated_listed_and_removed_per_person() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("store.db")).expect("store");
        db.key_put(&row("key_a", "alice")).expect("put");
        db.key_put(&row("key_b", "alice")).expect("put");
        db.key_put(&row("key_c", "bob")).expect("put");
        let mut used = row("key_a", "alice");
        used.counter = 7;
        used.last_used_ms = Some(2000);
        db.key_put(&used).expect("update");
        let alice = db.key_list(Some("alice")).expect("list");
        assert_eq!(alice.len(), 2);
        assert_eq!(alice[0], used);
        assert_eq!(db.key_list(None).expect("all").len(), 3);
        // Another person's key id removes nothing.
        assert_eq!(db.key_remove("bob", Some("key_a")).expect("remove"), 0);
        assert_eq!(db.key_remove("alice", Some("key_a")).expect("remove"), 1);
        assert_eq!(db.key_remove("alice", None).expect("reset"), 1);
        assert_eq!(db.key_list(None).expect("all").len(), 1);
    }
}
