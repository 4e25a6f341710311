-- Network access sessions (EntryGuard style): who, which gateway applies their rules, whether
-- the session is live (counts against its person), whether it may still hold rules (live, or a
-- removal that failed and is tried again), and the session itself as JSON (its rules and their
-- states).
CREATE TABLE IF NOT EXISTS access_sessions (
  id TEXT PRIMARY KEY, "user" TEXT NOT NULL, gateway TEXT NOT NULL, live BIGINT NOT NULL,
  holds BIGINT NOT NULL, created_ms BIGINT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS access_sessions_holds ON access_sessions(holds, gateway);
CREATE INDEX IF NOT EXISTS access_sessions_user ON access_sessions("user", live, created_ms);
