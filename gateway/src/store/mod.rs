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

mod access;
mod audit;
mod cluster;
mod cols;
mod console;
mod keys;
mod postgres;
mod secrets;
mod sessions;
mod sqlite;
#[cfg(test)]
mod upgrade_tests;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use rusqlite::Connection;
use wardengate_policy::{LimitDenial, Limits};
use wardengate_recorder::audit::Checkpoint;

pub use access::{AccessQuery, AccessRow, AccessStore};
pub use audit::{audit_hash, AuditQuery, AuditRow};
pub use cluster::{ClusterLease, GatewayRow, LeaseRow, Lost};
pub use console::{ConsoleSessionRow, SavedQuery};
pub use keys::SecurityKeyRow;
pub use postgres::Postgres;
pub use secrets::{HostKey, VaultEntry};
pub use sessions::{SessionQuery, SessionRecord};
pub use sqlite::Sqlite;

/// What the gateway keeps. Methods ending in `_later` queue the write and return at once (for
/// callers that are not async, and for writes nobody waits on); their failures are logged.
/// Everything else answers when done.
#[async_trait]
pub trait Store: AccessStore + Send + Sync {
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

    // The cluster: several gateways sharing this store. The embedded store serves one gateway,
    // whose own ledger is the whole count, so these do nothing there.

    /// Whether several gateways may share this store.
    fn shared(&self) -> bool {
        false
    }
    /// This gateway is up, and its API answers at `api_url`.
    async fn gateway_join(&self, _name: &str, _api_url: &str) -> Result<()> {
        Ok(())
    }
    /// This gateway is alive: renew its heartbeat and its leases for `ttl`. `false` when a peer
    /// has declared it lost meanwhile (its sessions were ended; it must end them too).
    async fn gateway_heartbeat(&self, _name: &str, _ttl: Duration) -> Result<bool> {
        Ok(true)
    }
    /// The gateways the store knows, in name order.
    async fn gateways(&self) -> Result<Vec<GatewayRow>> {
        Ok(Vec::new())
    }
    /// Count a session against the cluster's limits (`freed`, a session evicted to make room,
    /// no longer counts), or say which level is full.
    async fn lease_acquire(
        &self,
        _lease: &LeaseRow,
        _limits: &Limits,
        _pool: &str,
        _freed: Option<&str>,
        _ttl: Duration,
    ) -> Result<std::result::Result<(), LimitDenial>> {
        Ok(Ok(()))
    }
    /// Give a session's slot back (queued).
    fn lease_release_later(&self, _session_id: String) {}
    /// When each of `ids` ended (or started, while it runs), in one go: the order of a list of
    /// the cluster's recordings. Unknown ids are left out.
    async fn session_times(&self, ids: &[String]) -> Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        for id in ids {
            if let Some(r) = self.session_get(id).await? {
                out.insert(id.clone(), r.ended_ms.unwrap_or(r.started_ms));
            }
        }
        Ok(out)
    }
    /// The oldest session `actor` holds a slot for anywhere in the cluster (what
    /// `on_limit = "evict_oldest"` ends when the actor's limit is full on other gateways).
    async fn lease_oldest(&self, _actor: &str) -> Result<Option<String>> {
        Ok(None)
    }
    /// End the sessions and leases of every peer whose heartbeat is older than `ttl`.
    async fn reap_lost(&self, _me: &str, _ttl: Duration) -> Result<Vec<Lost>> {
        Ok(Vec::new())
    }
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

/// The migrations of both engines (`gateway/migrations`, run by refinery at open).
pub(crate) mod embedded {
    refinery::embed_migrations!("migrations");
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open store {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        embedded::migrations::runner()
            .run(&mut conn)
            .with_context(|| format!("cannot migrate store {}", path.display()))?;
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
