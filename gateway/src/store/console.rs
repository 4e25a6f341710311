//! The operator console's sign-in sessions (Kibana's model): the server-side half of each one.
//! The browser holds the other half, an encrypted cookie whose secret hashes to `sid_hash`;
//! either missing means signed out.

use anyhow::Result;
use rusqlite::params;

use super::cols::Cols;
use super::Db;

/// One console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSessionRow {
    /// `cs_…`, the id operators see and invalidate by.
    pub id: String,
    /// sha256 (hex) of the secret in the person's cookie.
    pub sid_hash: String,
    pub username: String,
    /// How the person proved who they are: `password` or `password+webauthn`.
    pub provider: String,
    /// The token each state-changing request carries in `X-CSRF-Token`.
    pub csrf: String,
    pub created_ms: u64,
    /// Signed out when no request came before this (`idle_timeout`; `None`: off).
    pub idle_expires_ms: Option<u64>,
    /// Signed out at this time whatever happens (`lifespan`; `None`: off).
    pub lifespan_expires_ms: Option<u64>,
    /// Where the person signed in from, and with what browser (capped).
    pub source: String,
    pub user_agent: String,
}

impl ConsoleSessionRow {
    /// Over: idle or lifespan passed.
    pub fn expired(&self, now: u64) -> Option<&'static str> {
        if self.lifespan_expires_ms.is_some_and(|t| t <= now) {
            Some("lifespan")
        } else if self.idle_expires_ms.is_some_and(|t| t <= now) {
            Some("idle_timeout")
        } else {
            None
        }
    }
}

pub(super) const CONSOLE_COLS: &str =
    "id, sid_hash, username, provider, csrf, created_ms, idle_expires_ms, \
                    lifespan_expires_ms, source, user_agent";

pub(super) fn console_from_row<R: Cols>(r: &R) -> Result<ConsoleSessionRow, R::Err> {
    Ok(ConsoleSessionRow {
        id: r.text(0)?,
        sid_hash: r.text(1)?,
        username: r.text(2)?,
        provider: r.text(3)?,
        csrf: r.text(4)?,
        created_ms: r.uint(5)?,
        idle_expires_ms: r.opt_uint(6)?,
        lifespan_expires_ms: r.opt_uint(7)?,
        source: r.text(8)?,
        user_agent: r.text(9)?,
    })
}

/// A saved view from its row (owner, name, query, pinned, created_ms).
pub(super) fn query_from_row<R: Cols>(r: &R) -> Result<SavedQuery, R::Err> {
    Ok(SavedQuery {
        owner: r.text(0)?,
        name: r.text(1)?,
        query: r.text(2)?,
        pinned: r.int(3)? != 0,
        created_ms: r.uint(4)?,
    })
}

impl Db {
    /// Add a console session, or replace it (same id: its idle expiry moved).
    pub fn console_put(&self, s: &ConsoleSessionRow) -> Result<()> {
        self.conn.execute(
            &format!("INSERT OR REPLACE INTO console_sessions ({CONSOLE_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
            params![
                s.id,
                s.sid_hash,
                s.username,
                s.provider,
                s.csrf,
                s.created_ms as i64,
                s.idle_expires_ms.map(|v| v as i64),
                s.lifespan_expires_ms.map(|v| v as i64),
                s.source,
                s.user_agent
            ],
        )?;
        Ok(())
    }

    /// The session whose cookie secret hashes to `sid_hash`.
    pub fn console_get(&self, sid_hash: &str) -> Result<Option<ConsoleSessionRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {CONSOLE_COLS} FROM console_sessions WHERE sid_hash = ?1"
        ))?;
        let mut rows = stmt.query_map([sid_hash], |r| console_from_row(r))?;
        Ok(rows.next().transpose()?)
    }

    /// `username`'s sessions (everyone's with `None`), oldest first.
    pub fn console_list(&self, username: Option<&str>) -> Result<Vec<ConsoleSessionRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {CONSOLE_COLS} FROM console_sessions WHERE ?1 IS NULL OR username = ?1 \
             ORDER BY created_ms, id"
        ))?;
        let rows = stmt.query_map([username], |r| console_from_row(r))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Remove these sessions; how many went.
    pub fn console_remove(&self, ids: &[String]) -> Result<usize> {
        let mut n = 0;
        for id in ids {
            n += self
                .conn
                .execute("DELETE FROM console_sessions WHERE id = ?1", [id])?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, user: &str, created: u64) -> ConsoleSessionRow {
        ConsoleSessionRow {
            id: id.into(),
            sid_hash: format!("hash-{id}"),
            username: user.into(),
            provider: "password+webauthn".into(),
            csrf: "c".into(),
            created_ms: created,
            idle_expires_ms: Some(created + 100),
            lifespan_expires_ms: None,
            source: "127.0.0.1".into(),
            user_agent: "test".into(),
        }
    }

    #[test]
    fn console_sessions_are_kept_found_by_hash_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db.sqlite")).expect("db");
        db.console_put(&session("cs_b", "alice", 20)).expect("put");
        db.console_put(&session("cs_a", "alice", 10)).expect("put");
        db.console_put(&session("cs_c", "bob", 30)).expect("put");
        let mut moved = session("cs_a", "alice", 10);
        moved.idle_expires_ms = Some(500);
        db.console_put(&moved).expect("slide");
        let alice = db.console_list(Some("alice")).expect("list");
        assert_eq!(
            alice.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["cs_a", "cs_b"]
        );
        assert_eq!(alice[0].idle_expires_ms, Some(500));
        assert_eq!(
            db.console_get("hash-cs_c")
                .expect("get")
                .map(|s| s.username),
            Some("bob".into())
        );
        assert_eq!(db.console_get("nope").expect("get"), None);
        assert_eq!(
            db.console_remove(&["cs_a".into(), "cs_x".into()])
                .expect("rm"),
            1
        );
        assert_eq!(db.console_list(None).expect("all").len(), 2);
        assert_eq!(moved.expired(499), None);
        assert_eq!(moved.expired(500), Some("idle_timeout"));
    }
}

/// A named view of the sessions list an operator saved (the console's filters, as a query
/// string), possibly pinned above the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedQuery {
    pub owner: String,
    pub name: String,
    /// `protocol=ssh&target_tag=env%3Dprod`.
    pub query: String,
    pub pinned: bool,
    pub created_ms: u64,
}

impl Db {
    /// Save (or replace) `owner`'s query `name`.
    pub fn query_put(&self, q: &SavedQuery) -> Result<()> {
        self.conn.execute(
            "INSERT INTO console_queries (owner, name, query, pinned, created_ms) VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT(owner, name) DO UPDATE SET query=?3, pinned=?4",
            params![q.owner, q.name, q.query, q.pinned, q.created_ms as i64],
        )?;
        Ok(())
    }

    /// `owner`'s saved queries, pinned first, then by name.
    pub fn query_list(&self, owner: &str) -> Result<Vec<SavedQuery>> {
        let mut stmt = self.conn.prepare(
            "SELECT owner, name, query, pinned, created_ms FROM console_queries WHERE owner = ?1
             ORDER BY pinned DESC, name",
        )?;
        let rows = stmt.query_map([owner], |r| query_from_row(r))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Remove `owner`'s query `name`; whether it was there.
    pub fn query_remove(&self, owner: &str, name: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM console_queries WHERE owner = ?1 AND name = ?2",
            params![owner, name],
        )? > 0)
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn saved_queries_belong_to_their_owner_pinned_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db.sqlite")).expect("db");
        let q = |owner: &str, name: &str, pinned| SavedQuery {
            owner: owner.into(),
            name: name.into(),
            query: "protocol=ssh".into(),
            pinned,
            created_ms: 1,
        };
        db.query_put(&q("alice", "b-view", false)).expect("put");
        db.query_put(&q("alice", "a-view", false)).expect("put");
        db.query_put(&q("bob", "b-view", true)).expect("put");
        db.query_put(&q("alice", "b-view", true)).expect("pin");
        let names: Vec<String> = db
            .query_list("alice")
            .expect("list")
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(names, ["b-view", "a-view"]);
        assert!(db.query_remove("alice", "a-view").expect("rm"));
        assert!(!db.query_remove("alice", "a-view").expect("rm again"));
        assert_eq!(db.query_list("bob").expect("bob").len(), 1);
    }
}

impl Db {
    /// Keep a `wgctl login` token (its sha256, hex): it outlives a restart until it expires.
    pub fn token_put(&self, hash: &str, user: &str, expires_ms: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO operator_tokens (hash, user, expires_ms) VALUES (?1,?2,?3)",
            params![hash, user, expires_ms as i64],
        )?;
        Ok(())
    }

    /// The person a token hash belongs to, if it has not expired at `now`.
    pub fn token_user(&self, hash: &str, now: u64) -> Result<Option<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT user FROM operator_tokens WHERE hash = ?1 AND expires_ms > ?2")?;
        let mut rows = stmt.query_map(params![hash, now as i64], |r| r.get(0))?;
        Ok(rows.next().transpose()?)
    }

    /// Revoke a token; its person when it was there and valid at `now`.
    pub fn token_remove(&self, hash: &str, now: u64) -> Result<Option<String>> {
        let user = self.token_user(hash, now)?;
        self.conn
            .execute("DELETE FROM operator_tokens WHERE hash = ?1", [hash])?;
        Ok(user)
    }

    /// Forget the tokens that expired; how many.
    pub fn token_purge(&self, now: u64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM operator_tokens WHERE expires_ms <= ?1",
            [now as i64],
        )?)
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_hold_until_they_expire_or_are_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db.sqlite")).expect("db");
        db.token_put("h1", "alice", 100).expect("put");
        db.token_put("h2", "bob", 50).expect("put");
        assert_eq!(db.token_user("h1", 99).expect("get"), Some("alice".into()));
        assert_eq!(db.token_user("h1", 100).expect("get"), None, "expired");
        assert_eq!(db.token_remove("h1", 10).expect("rm"), Some("alice".into()));
        assert_eq!(db.token_user("h1", 10).expect("get"), None, "revoked");
        assert_eq!(db.token_purge(60).expect("purge"), 1);
        assert_eq!(db.token_user("h2", 10).expect("get"), None);
    }
}

impl Db {
    /// Keep an approval request (its JSON), or replace it.
    pub fn approval_put(&self, id: &str, body: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO approval_requests (id, body) VALUES (?1, ?2)",
            params![id, body],
        )?;
        Ok(())
    }

    /// Every approval request kept (their JSON).
    pub fn approval_all(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT body FROM approval_requests")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Forget these approval requests.
    pub fn approval_remove(&self, ids: &[String]) -> Result<()> {
        for id in ids {
            self.conn
                .execute("DELETE FROM approval_requests WHERE id = ?1", [id])?;
        }
        Ok(())
    }
}
