-- Several gateways on one store: who is up (and where its API answers), and every admitted
-- session's concurrency slot with the time it lapses unless its gateway renews it.
CREATE TABLE IF NOT EXISTS gateways (
  name TEXT PRIMARY KEY, api_url TEXT NOT NULL, state TEXT NOT NULL,
  started_ms BIGINT NOT NULL, heartbeat_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
  session_id TEXT PRIMARY KEY, gateway TEXT NOT NULL, actor TEXT NOT NULL, target TEXT NOT NULL,
  policy TEXT NOT NULL, expires_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS leases_gateway ON leases(gateway);
CREATE INDEX IF NOT EXISTS sessions_gateway ON sessions(gateway, state);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state);
