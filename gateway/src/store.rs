//! The embedded store: one SQLite database in the data directory holding sessions, the audit log,
//! pinned target host keys and the vault's ciphertexts.
//!
//! SQLite calls are short (single-row writes, indexed reads) and never on the relay's data path;
//! a `Mutex<Connection>` serialises them. WAL mode lets `wardengate vault` run beside the daemon.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::util;
use wardengate_recorder::audit::{AuditReport, Checkpoint};

pub struct Store {
    conn: Mutex<Connection>,
}

/// A session row.
#[derive(Debug, Clone, Default)]
pub struct SessionRecord {
    pub id: String,
    pub state: String,
    pub protocol: String,
    pub actor: String,
    pub client_addr: String,
    pub client_version: String,
    pub target: String,
    pub target_addr: String,
    pub account: String,
    pub account_ref: String,
    pub policy: Option<String>,
    pub pty_term: Option<String>,
    pub pty_cols: u32,
    pub pty_rows: u32,
    pub gateway: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub last_input_ms: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub end_reason: Option<String>,
    pub end_detail: Option<String>,
    pub terminated_by: Option<String>,
    /// The admission decision as JSON: the admitting policy and its settings, or the denial.
    pub decision: Option<String>,
    /// The earlier session this one continues (reconnect after a drop).
    pub linked_session: Option<String>,
    /// Open channels right now (live sessions only; not persisted).
    pub channels: u32,
    /// What a live database session is doing (`idle in transaction`); not persisted.
    pub activity: Option<String>,
    /// Earlier owners of a handed-off session, oldest first, comma-separated.
    pub previous_owners: Option<String>,
    /// Who watches the live session now (not persisted).
    pub observers: Vec<wardengate_protocols::shadow::ObserverInfo>,
    /// A pending handoff (not persisted).
    pub handoff: Option<wardengate_api::Handoff>,
    /// Where the client address is (`[geoip]`), when known.
    pub client_location: Option<String>,
    /// The cipher (and MAC) the client leg and the target leg negotiated (SSH).
    pub client_crypto: Option<String>,
    pub target_crypto: Option<String>,
    /// The relay's added latency so far (live sessions that measure it; not persisted).
    pub relay_latency: Option<wardengate_api::RelayLatency>,
}

impl SessionRecord {
    /// The record with every text that came from a client or an operator capped and made inert
    /// (escapes for control characters), as it may be stored and served.
    pub fn inert(&self) -> SessionRecord {
        use wardengate_api::text::{inert, MAX_NAME, MAX_TEXT};
        let name = |s: &str| inert(s, MAX_NAME).into_owned();
        let text = |s: &str| inert(s, MAX_TEXT).into_owned();
        SessionRecord {
            actor: name(&self.actor),
            client_version: name(&self.client_version),
            client_location: self.client_location.as_deref().map(name),
            target: name(&self.target),
            account: name(&self.account),
            pty_term: self.pty_term.as_deref().map(name),
            end_detail: self.end_detail.as_deref().map(text),
            terminated_by: self.terminated_by.as_deref().map(name),
            previous_owners: self.previous_owners.as_deref().map(text),
            activity: self.activity.as_deref().map(name),
            ..self.clone()
        }
    }
}

/// Filters of `GET /api/v1/sessions` that the store can apply.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub protocol: Option<String>,
    pub state: Option<String>,
    /// Only sessions that have not ended.
    pub live: bool,
    /// Only these targets (a tag's targets).
    pub targets_in: Option<Vec<String>>,
    /// Only sessions older than this one, in list order: (started_ms, id) of the last row of
    /// the previous page.
    pub before: Option<(u64, String)>,
    pub limit: u32,
}

/// The WHERE clause of [`SessionQuery`], over parameters ?1 .. ?8.
const SESSION_WHERE: &str = "(?1 IS NULL OR actor=?1) AND (?2 IS NULL OR target=?2) AND \
    (?3 IS NULL OR protocol=?3) AND (?4 IS NULL OR state=?4) AND \
    (?5 = 0 OR state NOT IN ('closed','denied','failed')) AND \
    (?6 IS NULL OR target IN (SELECT value FROM json_each(?6))) AND \
    (?7 IS NULL OR started_ms < ?7 OR (started_ms = ?7 AND id < ?8))";

/// An audit row: the recorder's audit event (chain and checkpoints live there, shared with
/// `wgctl audit verify`).
pub type AuditRow = wardengate_recorder::audit::AuditEvent;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, state TEXT NOT NULL, protocol TEXT NOT NULL, actor TEXT NOT NULL,
  client_addr TEXT NOT NULL, client_version TEXT NOT NULL, target TEXT NOT NULL,
  target_addr TEXT NOT NULL, account TEXT NOT NULL, account_ref TEXT NOT NULL, policy TEXT,
  pty_term TEXT, pty_cols INTEGER NOT NULL DEFAULT 0, pty_rows INTEGER NOT NULL DEFAULT 0,
  gateway TEXT NOT NULL, started_ms INTEGER NOT NULL, ended_ms INTEGER, last_input_ms INTEGER,
  bytes_in INTEGER NOT NULL DEFAULT 0, bytes_out INTEGER NOT NULL DEFAULT 0,
  end_reason TEXT, end_detail TEXT, terminated_by TEXT, decision TEXT, linked_session TEXT,
  previous_owners TEXT, client_crypto TEXT, target_crypto TEXT, client_location TEXT);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_ms);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,
  actor TEXT, session_id TEXT, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_session ON audit(session_id);
CREATE TABLE IF NOT EXISTS host_keys (
  target TEXT NOT NULL, address TEXT NOT NULL, fingerprint TEXT NOT NULL, key TEXT NOT NULL,
  first_seen_ms INTEGER NOT NULL, PRIMARY KEY (target, address));
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, at_ms INTEGER NOT NULL, gateway TEXT NOT NULL,
  public_key TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vault (
  ref TEXT PRIMARY KEY, kind TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,
  updated_ms INTEGER NOT NULL);
";

const SESSION_COLS: &str = "id, state, protocol, actor, client_addr, client_version, target, \
    target_addr, account, account_ref, policy, pty_term, pty_cols, pty_rows, gateway, started_ms, \
    ended_ms, last_input_ms, bytes_in, bytes_out, end_reason, end_detail, terminated_by, decision, \
    linked_session, previous_owners, client_crypto, target_crypto, client_location";

/// Columns added after the first release: (name, type), added to older stores at open.
const ADDED_SESSION_COLUMNS: &[(&str, &str)] = &[
    ("decision", "TEXT"),
    ("linked_session", "TEXT"),
    ("previous_owners", "TEXT"),
    ("client_crypto", "TEXT"),
    ("target_crypto", "TEXT"),
    ("client_location", "TEXT"),
];

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        state: r.get(1)?,
        protocol: r.get(2)?,
        actor: r.get(3)?,
        client_addr: r.get(4)?,
        client_version: r.get(5)?,
        target: r.get(6)?,
        target_addr: r.get(7)?,
        account: r.get(8)?,
        account_ref: r.get(9)?,
        policy: r.get(10)?,
        pty_term: r.get(11)?,
        pty_cols: r.get(12)?,
        pty_rows: r.get(13)?,
        gateway: r.get(14)?,
        started_ms: r.get::<_, i64>(15)? as u64,
        ended_ms: r.get::<_, Option<i64>>(16)?.map(|v| v as u64),
        last_input_ms: r.get::<_, Option<i64>>(17)?.map(|v| v as u64),
        bytes_in: r.get::<_, i64>(18)? as u64,
        bytes_out: r.get::<_, i64>(19)? as u64,
        end_reason: r.get(20)?,
        end_detail: r.get(21)?,
        terminated_by: r.get(22)?,
        decision: r.get(23)?,
        linked_session: r.get(24)?,
        previous_owners: r.get(25)?,
        client_crypto: r.get(26)?,
        target_crypto: r.get(27)?,
        client_location: r.get(28)?,
        channels: 0,
        activity: None,
        observers: Vec::new(),
        handoff: None,
        relay_latency: None,
    })
}

pub use wardengate_recorder::audit::event_hash as audit_hash;

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        at_ms: r.get::<_, i64>(2)? as u64,
        kind: r.get(3)?,
        actor: r.get(4)?,
        session_id: r.get(5)?,
        detail: r.get(6)?,
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

/// A vault row: the secret's kind, its nonce and its ciphertext.
pub struct VaultEntry {
    pub kind: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open store {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("cannot initialise store {}", path.display()))?;
        let existing: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('sessions')")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (name, ty) in ADDED_SESSION_COLUMNS {
            if !existing.iter().any(|c| c == name) {
                conn.execute_batch(&format!("ALTER TABLE sessions ADD COLUMN {name} {ty}"))
                    .with_context(|| format!("cannot upgrade store {}", path.display()))?;
            }
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| anyhow!("store lock poisoned"))
    }

    pub fn session_insert(&self, s: &SessionRecord) -> Result<()> {
        let s = &s.inert();
        self.conn()?.execute(
            &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26,?27,?28,?29)"),
            params![
                s.id, s.state, s.protocol, s.actor, s.client_addr, s.client_version, s.target,
                s.target_addr, s.account, s.account_ref, s.policy, s.pty_term, s.pty_cols,
                s.pty_rows, s.gateway, s.started_ms as i64, s.ended_ms.map(|v| v as i64),
                s.last_input_ms.map(|v| v as i64), s.bytes_in as i64, s.bytes_out as i64,
                s.end_reason, s.end_detail, s.terminated_by, s.decision, s.linked_session,
                s.previous_owners, s.client_crypto, s.target_crypto, s.client_location
            ],
        ).context("cannot record session")?;
        Ok(())
    }

    /// Persist the mutable part of a session (state, live counters, end).
    pub fn session_update(&self, s: &SessionRecord) -> Result<()> {
        let s = &s.inert();
        self.conn()?.execute(
            "UPDATE sessions SET state=?2, client_version=?3, policy=?4, pty_term=?5, pty_cols=?6,
             pty_rows=?7, ended_ms=?8, last_input_ms=?9, bytes_in=?10, bytes_out=?11,
             end_reason=?12, end_detail=?13, terminated_by=?14, actor=?15, previous_owners=?16,
             decision=?17, client_crypto=?18, target_crypto=?19 WHERE id=?1",
            params![
                s.id, s.state, s.client_version, s.policy, s.pty_term, s.pty_cols, s.pty_rows,
                s.ended_ms.map(|v| v as i64), s.last_input_ms.map(|v| v as i64),
                s.bytes_in as i64, s.bytes_out as i64, s.end_reason, s.end_detail, s.terminated_by,
                s.actor, s.previous_owners, s.decision, s.client_crypto, s.target_crypto
            ],
        ).context("cannot update session")?;
        Ok(())
    }

    pub fn session_get(&self, id: &str) -> Result<Option<SessionRecord>> {
        Ok(self
            .conn()?
            .query_row(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE id=?1"),
                [id],
                session_from_row,
            )
            .optional()?)
    }

    pub fn session_list(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE {SESSION_WHERE}
             ORDER BY started_ms DESC, id DESC LIMIT ?9"
        ))?;
        let targets = q
            .targets_in
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default());
        let (before_ms, before_id) = match &q.before {
            Some((ms, id)) => (Some(*ms as i64), Some(id.clone())),
            None => (None, None),
        };
        let rows = stmt.query_map(
            params![
                q.actor,
                q.target,
                q.protocol,
                q.state,
                q.live,
                targets,
                before_ms,
                before_id,
                q.limit.max(1)
            ],
            session_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many sessions match `q` (its cursor included, its limit not).
    pub fn session_count(&self, q: &SessionQuery) -> Result<u64> {
        let targets = q
            .targets_in
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default());
        let (before_ms, before_id) = match &q.before {
            Some((ms, id)) => (Some(*ms as i64), Some(id.clone())),
            None => (None, None),
        };
        let n: i64 = self.conn()?.query_row(
            &format!("SELECT count(*) FROM sessions WHERE {SESSION_WHERE}"),
            params![q.actor, q.target, q.protocol, q.state, q.live, targets, before_ms, before_id],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Sessions this gateway left open when it stopped without a clean shutdown.
    pub fn sessions_open_on(&self, gateway: &str) -> Result<Vec<SessionRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE gateway=?1 AND state NOT IN ('closed','denied','failed')"
        ))?;
        let rows = stmt.query_map([gateway], session_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Append an audit event, chained to the previous one. Returns the stored row.
    pub fn audit_append(
        &self,
        kind: &str,
        actor: Option<&str>,
        session: Option<&str>,
        detail: &str,
    ) -> Result<AuditRow> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let (seq, prev): (i64, String) = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| -> rusqlite::Result<(i64, String)> { Ok((r.get(0)?, r.get(1)?)) },
            )
            .optional()?
            .map(|(s, h)| (s + 1, h))
            .unwrap_or((1, String::new()));
        let mut row = AuditRow {
            seq,
            id: util::new_id("evt_"),
            at_ms: wardengate_protocols::session::now_ms(),
            kind: kind.into(),
            actor: actor.map(Into::into),
            session_id: session.map(Into::into),
            detail: detail.into(),
            prev_hash: prev,
            hash: String::new(),
        };
        row.hash = audit_hash(&row.prev_hash, &row);
        tx.execute(
            "INSERT INTO audit (seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            params![
                row.seq,
                row.id,
                row.at_ms as i64,
                row.kind,
                row.actor,
                row.session_id,
                row.detail,
                row.prev_hash,
                row.hash
            ],
        )?;
        tx.commit()?;
        Ok(row)
    }

    /// The newest `limit` events (of `kind`, of `session`) older than event `before`, oldest
    /// first, and how many older ones match too.
    pub fn audit_list(
        &self,
        kind: Option<&str>,
        session: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<AuditRow>, u64)> {
        let conn = self.conn()?;
        let filter = "(?1 IS NULL OR kind=?1) AND (?2 IS NULL OR session_id=?2) AND (?3 IS NULL OR seq < ?3)";
        let mut stmt = conn.prepare(&format!(
            "SELECT seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash FROM audit
             WHERE {filter} ORDER BY seq DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(params![kind, session, before, limit.max(1)], audit_from_row)?;
        let mut v = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        v.reverse();
        let older = match v.first() {
            Some(first) => {
                let n: i64 = conn.query_row(
                    &format!("SELECT count(*) FROM audit WHERE {filter}"),
                    params![kind, session, first.seq],
                    |r| r.get(0),
                )?;
                n.max(0) as u64
            }
            None => 0,
        };
        Ok((v, older))
    }

    /// Every event in order, for export and verification.
    pub fn audit_all(&self) -> Result<Vec<AuditRow>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash FROM audit ORDER BY seq",
        )?;
        let rows = stmt.query_map([], audit_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The newest event (the chain head).
    pub fn audit_head(&self) -> Result<Option<AuditRow>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                audit_from_row,
            )
            .optional()?)
    }

    pub fn checkpoint_add(&self, c: &Checkpoint) -> Result<()> {
        self.conn()?.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (seq, hash, at_ms, gateway, public_key, signature) VALUES (?1,?2,?3,?4,?5,?6)",
            params![c.seq, c.hash, c.at_ms as i64, c.gateway, c.public_key, c.signature],
        )?;
        Ok(())
    }

    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT seq, hash, at_ms, gateway, public_key, signature FROM audit_checkpoints ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Checkpoint {
                seq: r.get(0)?,
                hash: r.get(1)?,
                at_ms: r.get::<_, i64>(2)? as u64,
                gateway: r.get(3)?,
                public_key: r.get(4)?,
                signature: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Recompute the whole chain and check every checkpoint (with `key`).
    pub fn audit_verify(
        &self,
        key: Option<&wardengate_recorder::VerifyingKey>,
    ) -> Result<AuditReport> {
        let events = self.audit_all()?;
        let checkpoints = self.checkpoints()?;
        Ok(wardengate_recorder::audit::verify(
            &events,
            &checkpoints,
            key,
        ))
    }

    pub fn hostkey_get(&self, target: &str, address: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT fingerprint, key FROM host_keys WHERE target=?1 AND address=?2",
                [target, address],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn hostkey_pin(
        &self,
        target: &str,
        address: &str,
        fingerprint: &str,
        key: &str,
    ) -> Result<()> {
        self.conn()?.execute(
            "INSERT OR IGNORE INTO host_keys (target, address, fingerprint, key, first_seen_ms) VALUES (?1,?2,?3,?4,?5)",
            params![target, address, fingerprint, key, wardengate_protocols::session::now_ms() as i64],
        )?;
        Ok(())
    }

    pub fn hostkey_forget(&self, target: &str) -> Result<usize> {
        Ok(self
            .conn()?
            .execute("DELETE FROM host_keys WHERE target=?1", [target])?)
    }

    pub fn vault_put(
        &self,
        reference: &str,
        kind: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO vault (ref, kind, nonce, ciphertext, updated_ms) VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT(ref) DO UPDATE SET kind=?2, nonce=?3, ciphertext=?4, updated_ms=?5",
            params![
                reference,
                kind,
                nonce,
                ciphertext,
                wardengate_protocols::session::now_ms() as i64
            ],
        )?;
        Ok(())
    }

    pub fn vault_get(&self, reference: &str) -> Result<Option<VaultEntry>> {
        Ok(self
            .conn()?
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
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT ref, kind, updated_ms FROM vault ORDER BY ref")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_chain_detects_edits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db.sqlite")).expect("store");
        store
            .audit_append("session.requested", Some("alice"), Some("sess_1"), "{}")
            .expect("a");
        let second = store
            .audit_append("session.start", Some("alice"), Some("sess_1"), "{}")
            .expect("b");
        let r = store.audit_verify(None).expect("verify");
        assert!(r.ok() && r.events == 2, "{r:?}");
        assert_eq!(second.prev_hash.len(), 64);
        store
            .conn()
            .expect("conn")
            .execute("UPDATE audit SET actor='mallory' WHERE seq=1", [])
            .expect("tamper");
        let r = store.audit_verify(None).expect("verify");
        assert_eq!(r.at_seq, Some(1), "{r:?}");
    }
}
