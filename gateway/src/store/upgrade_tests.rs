//! A store made before migrations existed (the schema the embedded store created up to the
//! cluster work) opens, migrates in place, and keeps its rows and its audit chain.

use super::Db;

/// The schema as the store created it before `gateway/migrations` (kept verbatim).
const BEFORE_MIGRATIONS: &str = "
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

#[test]
fn a_store_from_before_migrations_is_migrated_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wardengate.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(BEFORE_MIGRATIONS)
            .expect("the old schema");
        conn.execute_batch(
            "INSERT INTO sessions (id, state, protocol, actor, client_addr, client_version, target,
               target_addr, account, account_ref, gateway, started_ms)
             VALUES ('sess_old', 'closed', 'ssh', 'alice', '127.0.0.1:1', 'SSH-2.0-x', 'web',
               '10.0.0.1:22', 'root', 'web/root', 'gw-1', 1000);
             INSERT INTO security_keys (id, user, name, credential_id, key, counter, created_ms)
             VALUES ('key_a', 'alice', 'YubiKey', 'cred-a', '{}', 1, 1);",
        )
        .expect("old rows");
    }
    let db = Db::open(&path).expect("the old store opens and migrates");
    let first = db
        .audit_append("session.requested", Some("alice"), Some("sess_old"), "{}")
        .expect("append");
    assert_eq!(first.seq, 1);
    assert_eq!(
        db.session_get("sess_old").expect("get").map(|s| s.actor),
        Some("alice".into())
    );
    assert_eq!(db.key_list(Some("alice")).expect("keys").len(), 1);
    drop(db);
    // A second open finds nothing to do, and the chain goes on.
    let db = Db::open(&path).expect("reopen");
    let second = db
        .audit_append("session.end", Some("alice"), Some("sess_old"), "{}")
        .expect("append");
    assert_eq!(second.prev_hash, first.hash);
    let applied: i64 = db
        .conn
        .query_row("SELECT count(*) FROM refinery_schema_history", [], |r| {
            r.get(0)
        })
        .expect("history");
    assert_eq!(applied, 4, "every migration recorded once");
}
