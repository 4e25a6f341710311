-- The store's tables, written once for both engines: SQLite (one gateway, in data_dir) and
-- PostgreSQL (a cluster). Only types both read the same way: TEXT, BIGINT (SQLite gives it
-- INTEGER affinity), BYTEA (NUMERIC affinity in SQLite, where a blob stays a blob). "user" is
-- quoted: it is a reserved word in PostgreSQL. IF NOT EXISTS: stores made before migrations
-- existed already have these tables.
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, state TEXT NOT NULL, protocol TEXT NOT NULL, actor TEXT NOT NULL,
  client_addr TEXT NOT NULL, client_version TEXT NOT NULL, target TEXT NOT NULL,
  target_addr TEXT NOT NULL, account TEXT NOT NULL, account_ref TEXT NOT NULL, policy TEXT,
  pty_term TEXT, pty_cols BIGINT NOT NULL DEFAULT 0, pty_rows BIGINT NOT NULL DEFAULT 0,
  gateway TEXT NOT NULL, started_ms BIGINT NOT NULL, ended_ms BIGINT, last_input_ms BIGINT,
  bytes_in BIGINT NOT NULL DEFAULT 0, bytes_out BIGINT NOT NULL DEFAULT 0,
  end_reason TEXT, end_detail TEXT, terminated_by TEXT, decision TEXT, linked_session TEXT,
  previous_owners TEXT, client_crypto TEXT, target_crypto TEXT, client_location TEXT);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_ms);
CREATE TABLE IF NOT EXISTS audit (
  seq BIGINT PRIMARY KEY, id TEXT NOT NULL, at_ms BIGINT NOT NULL, kind TEXT NOT NULL,
  actor TEXT, session_id TEXT, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_session ON audit(session_id);
CREATE TABLE IF NOT EXISTS host_keys (
  target TEXT NOT NULL, address TEXT NOT NULL, fingerprint TEXT NOT NULL, key TEXT NOT NULL,
  first_seen_ms BIGINT NOT NULL, PRIMARY KEY (target, address));
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, at_ms BIGINT NOT NULL, gateway TEXT NOT NULL,
  public_key TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS security_keys (
  id TEXT PRIMARY KEY, "user" TEXT NOT NULL, name TEXT NOT NULL, credential_id TEXT NOT NULL UNIQUE,
  aaguid TEXT, key TEXT NOT NULL, counter BIGINT NOT NULL, created_ms BIGINT NOT NULL,
  last_used_ms BIGINT);
CREATE INDEX IF NOT EXISTS security_keys_user ON security_keys("user");
CREATE TABLE IF NOT EXISTS console_sessions (
  id TEXT PRIMARY KEY, sid_hash TEXT NOT NULL UNIQUE, username TEXT NOT NULL,
  provider TEXT NOT NULL, csrf TEXT NOT NULL, created_ms BIGINT NOT NULL,
  idle_expires_ms BIGINT, lifespan_expires_ms BIGINT, source TEXT NOT NULL,
  user_agent TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions(username);
CREATE TABLE IF NOT EXISTS approval_requests (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operator_tokens (
  hash TEXT PRIMARY KEY, "user" TEXT NOT NULL, expires_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS console_queries (
  owner TEXT NOT NULL, name TEXT NOT NULL, query TEXT NOT NULL, pinned BIGINT NOT NULL,
  created_ms BIGINT NOT NULL, PRIMARY KEY (owner, name));
CREATE TABLE IF NOT EXISTS vault (
  ref TEXT PRIMARY KEY, kind TEXT NOT NULL, nonce BYTEA NOT NULL, ciphertext BYTEA NOT NULL,
  updated_ms BIGINT NOT NULL);
