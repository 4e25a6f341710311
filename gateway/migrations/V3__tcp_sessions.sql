-- A brokered TCP session's host, connection limit, expiration and state history (JSON).
ALTER TABLE sessions ADD COLUMN tcp TEXT;
