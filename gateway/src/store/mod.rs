//! The store: sessions, the audit log, pinned target host keys, people's security keys and the
//! vault's ciphertexts.
//!
//! Callers see [`Store`], an async interface, so that another implementation (PostgreSQL, for
//! several gateways) can stand beside the embedded one without touching them. The embedded one,
//! [`Sqlite`], is one SQLite database in the data directory owned by a thread of its own: every
//! call is a job on that thread's queue, answered through a oneshot, so no SQLite call ever runs
//! on the async runtime's threads, and jobs run in the order they were queued (a read sees every
//! write queued before it, `*_later` writes included). WAL mode lets `wardengate vault` run
//! beside the daemon.

mod audit;
mod console;
mod keys;
mod secrets;
mod sessions;
mod sqlite;

use std::path::Path;

use anyhow::{Context, Result};
use async_trait::async_trait;
use rusqlite::Connection;
use wardengate_recorder::audit::Checkpoint;

pub use audit::{audit_hash, AuditQuery, AuditRow};
pub use console::{ConsoleSessionRow, SavedQuery};
pub use keys::SecurityKeyRow;
pub use secrets::{HostKey, VaultEntry};
pub use sessions::{SessionQuery, SessionRecord};
pub use sqlite::Sqlite;

/// What the gateway keeps. Methods ending in `_later` queue the write and return at once (for
/// callers that are not async, and for writes nobody waits on); their failures are logged.
/// Everything else answers when done.
#[async_trait]
pub trait Store: Send + Sync {
    async fn session_insert(&self, s: &SessionRecord) -> Result<()>;
    fn session_insert_later(&self, s: SessionRecord);
    /// Persist the mutable part of a session (state, live counters, end).
    async fn session_update(&self, s: &SessionRecord) -> Result<()>;
    fn session_update_later(&self, s: SessionRecord);
    async fn session_get(&self, id: &str) -> Result<Option<SessionRecord>>;
    async fn session_list(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>>;
    /// How many sessions match `q` (its cursor included, its limit not).
    async fn session_count(&self, q: &SessionQuery) -> Result<u64>;
    /// Sessions `gateway` left open when it stopped without a clean shutdown.
    async fn sessions_open_on(&self, gateway: &str) -> Result<Vec<SessionRecord>>;

    /// Append an event to the audit chain.
    fn audit_append_later(&self, e: AuditEntry);
    /// The newest events matching `q`, oldest first, and how many older ones match too.
    async fn audit_list(&self, q: AuditQuery) -> Result<(Vec<AuditRow>, u64)>;
    /// Every event in order, for export and verification.
    async fn audit_all(&self) -> Result<Vec<AuditRow>>;
    /// The newest event (the chain head).
    async fn audit_head(&self) -> Result<Option<AuditRow>>;
    async fn checkpoint_add(&self, c: &Checkpoint) -> Result<()>;
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>>;

    /// The pinned host key of `target` at `address`: (fingerprint, OpenSSH key).
    async fn hostkey_get(&self, target: &str, address: &str) -> Result<Option<(String, String)>>;
    /// Pin a target's host key on first use (a key pinned already stays).
    async fn hostkey_pin(&self, k: HostKey) -> Result<()>;
    async fn hostkey_forget(&self, target: &str) -> Result<usize>;

    /// Store (or replace) the secret under `reference`.
    async fn vault_put(&self, reference: &str, e: VaultEntry) -> Result<()>;
    async fn vault_get(&self, reference: &str) -> Result<Option<VaultEntry>>;
    /// Every secret: (reference, kind, updated at in ms).
    async fn vault_list(&self) -> Result<Vec<(String, String, u64)>>;

    /// Add a person's security key, or replace it (its counter after a use).
    async fn key_put(&self, k: SecurityKeyRow) -> Result<()>;
    /// `user`'s security keys, or everyone's.
    async fn key_list(&self, user: Option<&str>) -> Result<Vec<SecurityKeyRow>>;
    /// Remove `user`'s key `id`, or all of theirs; how many went.
    async fn key_remove(&self, user: &str, id: Option<&str>) -> Result<usize>;

    /// Add a console session, or replace it (its idle expiry moved).
    async fn console_put(&self, s: ConsoleSessionRow) -> Result<()>;
    /// The console session whose cookie secret hashes to `sid_hash`.
    async fn console_get(&self, sid_hash: &str) -> Result<Option<ConsoleSessionRow>>;
    /// `username`'s console sessions, or everyone's, oldest first.
    async fn console_list(&self, username: Option<&str>) -> Result<Vec<ConsoleSessionRow>>;
    /// Remove these console sessions; how many went.
    async fn console_remove(&self, ids: Vec<String>) -> Result<usize>;

    /// Approval requests, as JSON: kept after each change (queued), read at start, forgotten.
    fn approval_put_later(&self, id: String, body: String);
    async fn approval_all(&self) -> Result<Vec<String>>;
    fn approval_remove_later(&self, ids: Vec<String>);

    /// `wgctl login` tokens, by their sha256 (hex): kept, looked up, revoked, purged.
    async fn token_put(&self, hash: &str, user: &str, expires_ms: u64) -> Result<()>;
    async fn token_user(&self, hash: &str, now: u64) -> Result<Option<String>>;
    async fn token_remove(&self, hash: &str, now: u64) -> Result<Option<String>>;
    async fn token_purge(&self, now: u64) -> Result<usize>;

    /// An operator's saved views of the sessions list.
    async fn query_put(&self, q: SavedQuery) -> Result<()>;
    async fn query_list(&self, owner: &str) -> Result<Vec<SavedQuery>>;
    async fn query_remove(&self, owner: &str, name: &str) -> Result<bool>;

    /// Wait until everything queued so far is written.
    async fn flush(&self) -> Result<()>;
}

/// An audit event before it is chained (its sequence number, id, time and hashes are the
/// store's to give).
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub kind: String,
    pub actor: Option<String>,
    pub session: Option<String>,
    pub detail: String,
}

/// The SQLite database itself, used only on the [`Sqlite`] thread (and by tests).
pub struct Db {
    conn: Connection,
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
CREATE TABLE IF NOT EXISTS security_keys (
  id TEXT PRIMARY KEY, user TEXT NOT NULL, name TEXT NOT NULL, credential_id TEXT NOT NULL UNIQUE,
  aaguid TEXT, key TEXT NOT NULL, counter INTEGER NOT NULL, created_ms INTEGER NOT NULL,
  last_used_ms INTEGER);
CREATE INDEX IF NOT EXISTS security_keys_user ON security_keys(user);
CREATE TABLE IF NOT EXISTS console_sessions (
  id TEXT PRIMARY KEY, sid_hash TEXT NOT NULL UNIQUE, username TEXT NOT NULL,
  provider TEXT NOT NULL, csrf TEXT NOT NULL, created_ms INTEGER NOT NULL,
  idle_expires_ms INTEGER, lifespan_expires_ms INTEGER, source TEXT NOT NULL,
  user_agent TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions(username);
CREATE TABLE IF NOT EXISTS approval_requests (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operator_tokens (
  hash TEXT PRIMARY KEY, user TEXT NOT NULL, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS console_queries (
  owner TEXT NOT NULL, name TEXT NOT NULL, query TEXT NOT NULL, pinned INTEGER NOT NULL,
  created_ms INTEGER NOT NULL, PRIMARY KEY (owner, name));
CREATE TABLE IF NOT EXISTS vault (
  ref TEXT PRIMARY KEY, kind TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,
  updated_ms INTEGER NOT NULL);
";

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
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
        Ok(Db { conn })
    }
}
