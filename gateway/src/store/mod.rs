//! The embedded store: one SQLite database in the data directory holding sessions, the audit log,
//! pinned target host keys and the vault's ciphertexts.
//!
//! SQLite calls are short (single-row writes, indexed reads) and never on the relay's data path;
//! a `Mutex<Connection>` serialises them. WAL mode lets `wardengate vault` run beside the daemon.

mod audit;
mod secrets;
mod sessions;

use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use rusqlite::Connection;

pub use audit::{audit_hash, AuditRow};
pub use secrets::VaultEntry;
pub use sessions::{SessionQuery, SessionRecord};

pub struct Store {
    conn: Mutex<Connection>,
}

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
        for (name, ty) in sessions::ADDED_SESSION_COLUMNS {
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
}
