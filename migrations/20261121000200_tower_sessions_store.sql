-- Rows written by the tower-sessions store (latchkey::store::PgSessionStore) share the
-- sessions table with the /auth sessions; these comments tell a DBA how to read them.
COMMENT ON COLUMN sessions.id IS 'Primary key, never chosen by a client. /auth sessions: a random UUIDv4, also embedded in the token. tower-sessions store rows: the first 16 bytes of SHA-256(cookie id), so the cookie id itself is not stored.';
COMMENT ON COLUMN sessions.token_hash IS 'SHA-256 of the current token secret (/auth sessions) or of the cookie id (tower-sessions store rows), 32 bytes. The secret itself is never stored.';
COMMENT ON COLUMN sessions.version IS 'Rotation counter of /auth sessions, raised by exactly one per rotation (a compare-and-swap on it); on tower-sessions store rows, raised by one on every save that writes.';
COMMENT ON COLUMN sessions.data IS 'Application session data of the tower-sessions store as a JSON object; query it with ->> (data->>''counter''). The key latchkey.owner mirrors owner_key when the app bound an owner. Cleared when the store deletes the session.';

-- Leave room on each page so updates that change no indexed column (a data-only save of the
-- tower-sessions store, which keeps expires_at inside the touch interval) can be HOT updates:
-- no index entry written, no index bloat.
ALTER TABLE sessions SET (fillfactor = 80);
