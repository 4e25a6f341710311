-- Network access sessions (EntryGuard style): who, which gateway applies their rules, whether
-- they still hold rules, and the session itself as JSON (its rules and their states).
CREATE TABLE IF NOT EXISTS access_sessions (
  id TEXT PRIMARY KEY, "user" TEXT NOT NULL, gateway TEXT NOT NULL, live BIGINT NOT NULL,
  created_ms BIGINT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS access_sessions_live ON access_sessions(live, gateway);
CREATE INDEX IF NOT EXISTS access_sessions_user ON access_sessions("user", created_ms);
