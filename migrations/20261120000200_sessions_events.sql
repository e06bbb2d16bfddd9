-- The two modes a session can have. A token of one mode is never accepted in the other.
CREATE TYPE session_kind AS ENUM ('stateful', 'stateless');
COMMENT ON TYPE session_kind IS 'stateful: a cookie session checked against this table on every request. stateless: a short-lived signed access token plus a rotating refresh token.';

CREATE TABLE sessions (
    id                  uuid         NOT NULL,
    kind                session_kind NOT NULL,
    owner_key           text         NOT NULL,
    token_hash          bytea        NOT NULL,
    prev_token_hash     bytea,
    prev_valid_until    timestamptz,
    sealed_successor    bytea,
    version             bigint       NOT NULL DEFAULT 1,
    created_at          timestamptz  NOT NULL DEFAULT now(),
    last_used_at        timestamptz  NOT NULL DEFAULT now(),
    refreshed_at        timestamptz,
    expires_at          timestamptz  NOT NULL,
    absolute_expires_at timestamptz  NOT NULL,
    revoked_at          timestamptz,
    revoked_reason      text,
    user_agent          text,
    ip                  inet,
    data                jsonb        NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_owner_key_format CHECK (owner_key ~ '^(user|apikey|anon):[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
    CONSTRAINT sessions_token_hash_len CHECK (octet_length(token_hash) = 32),
    CONSTRAINT sessions_prev_token_hash_len CHECK (octet_length(prev_token_hash) = 32),
    CONSTRAINT sessions_prev_complete CHECK ((prev_token_hash IS NULL) = (prev_valid_until IS NULL)),
    CONSTRAINT sessions_version_positive CHECK (version >= 1),
    CONSTRAINT sessions_expiry_capped CHECK (expires_at <= absolute_expires_at),
    CONSTRAINT sessions_revocation_complete CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL)),
    CONSTRAINT sessions_revoked_reason_known CHECK (revoked_reason IN ('logout', 'logout_all', 'reuse_detected', 'admin', 'user_disabled', 'api_key_revoked', 'upgraded', 'deleted')),
    CONSTRAINT sessions_user_agent_len CHECK (length(user_agent) <= 512),
    CONSTRAINT sessions_data_object CHECK (jsonb_typeof(data) = 'object')
)
-- Room on each page so updates that change no indexed column (a data-only save of the
-- tower-sessions store, which keeps expires_at inside the touch interval) can be HOT updates:
-- no index entry written, no index bloat.
WITH (fillfactor = 80);

-- List and revoke everything of one owner.
CREATE INDEX sessions_owner_key_idx ON sessions (owner_key, created_at);
-- Purge of expired sessions. expires_at never passes absolute_expires_at
-- (sessions_expiry_capped), so this one index covers both expiries.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
-- Purge of revoked sessions after their retention period.
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

COMMENT ON TABLE sessions IS 'One row per login session, stateful (cookie) or stateless (refresh token). Holds no secret: only SHA-256 hashes of tokens. Read it through the session_overview view.';
-- Rows written by the tower-sessions store (latchkey::store::PgSessionStore) share the
-- table with the /auth sessions; the comments say how to read both.
COMMENT ON COLUMN sessions.id IS 'Primary key, never chosen by a client. /auth sessions: a random UUIDv4, also embedded in the token. tower-sessions store rows: the first 16 bytes of SHA-256(cookie id), so the cookie id itself is not stored.';
COMMENT ON COLUMN sessions.kind IS 'stateful (cookie checked here on each request) or stateless (JWT access token + rotating refresh token). The authority on which mode a token may be used in.';
COMMENT ON COLUMN sessions.owner_key IS 'Who the session belongs to: user:<uuid>, apikey:<uuid> or anon:<uuid> (one per anonymous session, never shared).';
COMMENT ON COLUMN sessions.token_hash IS 'SHA-256 of the current token secret (/auth sessions) or of the cookie id (tower-sessions store rows), 32 bytes. The secret itself is never stored.';
COMMENT ON COLUMN sessions.prev_token_hash IS 'SHA-256 of the secret replaced by the last rotation. Accepted only until prev_valid_until; presented later it means the token was stolen and the session is revoked (reuse_detected).';
COMMENT ON COLUMN sessions.prev_valid_until IS 'End of the grace window for prev_token_hash: concurrent refreshes (two tabs) presenting the previous token until then get the same successor.';
COMMENT ON COLUMN sessions.sealed_successor IS 'The current secret encrypted (ChaCha20-Poly1305) under a key derived from the previous secret, so a refresh inside the grace window returns the same successor. Useless without the previous secret, which is not stored.';
COMMENT ON COLUMN sessions.version IS 'Rotation counter of /auth sessions, raised by exactly one per rotation (a compare-and-swap on it); on tower-sessions store rows, raised by one on every save that writes.';
COMMENT ON COLUMN sessions.created_at IS 'When the session was issued.';
COMMENT ON COLUMN sessions.last_used_at IS 'Last authenticated use; written at most once per touch interval (default 60 s) to spare writes.';
COMMENT ON COLUMN sessions.refreshed_at IS 'When the token was last rotated; NULL if never.';
COMMENT ON COLUMN sessions.expires_at IS 'Idle expiry: slides forward on use and refresh, never past absolute_expires_at.';
COMMENT ON COLUMN sessions.absolute_expires_at IS 'Hard cap on the session lifetime, fixed at creation.';
COMMENT ON COLUMN sessions.revoked_at IS 'When the session was revoked; NULL while it is not. A revoked session never comes back.';
COMMENT ON COLUMN sessions.revoked_reason IS 'Why: logout, logout_all, reuse_detected, admin, user_disabled, api_key_revoked, upgraded (anonymous session logged in) or deleted.';
COMMENT ON COLUMN sessions.user_agent IS 'User-Agent header at login (truncated to 512 characters).';
COMMENT ON COLUMN sessions.ip IS 'Client address at login.';
COMMENT ON COLUMN sessions.data IS 'Application session data of the tower-sessions store as a JSON object; query it with ->> (data->>''counter''). The key latchkey.owner mirrors owner_key when the app bound an owner. Cleared when the store deletes the session.';

-- Audit trail. Never holds a secret.
CREATE TYPE session_event_kind AS ENUM (
    'created', 'refreshed', 'grace_used', 'reuse_detected', 'mode_mismatch', 'revoked', 'expired'
);
COMMENT ON TYPE session_event_kind IS 'What happened to a session: created, refreshed (rotated), grace_used (previous token answered inside the grace window), reuse_detected (rotated token presented after grace), mode_mismatch (token used in the other mode), revoked, expired (purged).';

CREATE TABLE session_events (
    id          bigint             GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz        NOT NULL DEFAULT now(),
    session_id  uuid               NOT NULL,
    owner_key   text               NOT NULL,
    event       session_event_kind NOT NULL,
    detail      jsonb              NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT session_events_pkey PRIMARY KEY (id),
    CONSTRAINT session_events_detail_object CHECK (jsonb_typeof(detail) = 'object')
);

CREATE INDEX session_events_session_id_idx ON session_events (session_id, occurred_at);
CREATE INDEX session_events_owner_key_idx ON session_events (owner_key, occurred_at);
CREATE INDEX session_events_occurred_at_idx ON session_events (occurred_at);

CREATE FUNCTION session_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'session_events is append-only: rows may be inserted and purged, never changed';
END;
$$;
CREATE TRIGGER session_events_no_update BEFORE UPDATE ON session_events
    FOR EACH ROW EXECUTE FUNCTION session_events_append_only();
COMMENT ON FUNCTION session_events_append_only() IS 'Refuses UPDATE on session_events: the audit trail is append-only (old rows are only purged by latchkey expire).';

COMMENT ON TABLE session_events IS 'Append-only audit trail of sessions (no secrets). Rows outlive their session; latchkey expire purges them after the retention period.';
COMMENT ON COLUMN session_events.id IS 'Monotonic event number.';
COMMENT ON COLUMN session_events.occurred_at IS 'When it happened (database clock).';
COMMENT ON COLUMN session_events.session_id IS 'The session concerned (no foreign key: events outlive purged sessions).';
COMMENT ON COLUMN session_events.owner_key IS 'Owner of the session at the time of the event.';
COMMENT ON COLUMN session_events.event IS 'What happened; see the session_event_kind type.';
COMMENT ON COLUMN session_events.detail IS 'Non-secret context as JSON: reason, version, presented mode, linked session id.';

-- Sessions for humans: no token hash, no sealed successor, no session data values.
CREATE VIEW session_overview AS
SELECT s.id                                               AS session_id,
       s.kind,
       s.owner_key,
       split_part(s.owner_key, ':', 1)                    AS owner_type,
       CASE WHEN s.revoked_at IS NOT NULL THEN 'revoked'
            WHEN s.expires_at <= now() THEN 'expired'
            ELSE 'active' END                             AS state,
       s.created_at,
       date_trunc('second', now() - s.created_at)         AS age,
       s.last_used_at,
       date_trunc('second', now() - s.last_used_at)       AS idle_for,
       s.expires_at                                       AS idle_expires_at,
       s.absolute_expires_at,
       s.refreshed_at,
       s.version - 1                                      AS rotations,
       coalesce(s.prev_valid_until > now(), false)        AS in_grace,
       s.revoked_at,
       s.revoked_reason,
       s.user_agent,
       s.ip,
       ARRAY(SELECT k FROM jsonb_object_keys(s.data) AS k ORDER BY k) AS data_keys
FROM sessions AS s;

COMMENT ON VIEW session_overview IS 'The sessions table for humans: one row per session with its state and lifetimes, and nothing secret (no token hash, no sealed successor, only the keys of the session data). Grant SELECT on this view, not on sessions, to people who only need to look.';
COMMENT ON COLUMN session_overview.session_id IS 'Session id (sessions.id).';
COMMENT ON COLUMN session_overview.kind IS 'stateful (cookie) or stateless (JWT access token + refresh token).';
COMMENT ON COLUMN session_overview.owner_key IS 'Owner: user:<uuid>, apikey:<uuid> or anon:<uuid>.';
COMMENT ON COLUMN session_overview.owner_type IS 'The part of owner_key before the colon: user, apikey or anon.';
COMMENT ON COLUMN session_overview.state IS 'revoked (revoked_at set), expired (idle or absolute expiry passed, not yet purged) or active.';
COMMENT ON COLUMN session_overview.created_at IS 'When the session was issued.';
COMMENT ON COLUMN session_overview.age IS 'now() - created_at, to the second.';
COMMENT ON COLUMN session_overview.last_used_at IS 'Last authenticated use (written at most once per touch interval).';
COMMENT ON COLUMN session_overview.idle_for IS 'now() - last_used_at, to the second.';
COMMENT ON COLUMN session_overview.idle_expires_at IS 'Idle (sliding) expiry, sessions.expires_at; never later than absolute_expires_at.';
COMMENT ON COLUMN session_overview.absolute_expires_at IS 'Hard end of the session, fixed at creation.';
COMMENT ON COLUMN session_overview.refreshed_at IS 'Last token rotation; NULL if never rotated.';
COMMENT ON COLUMN session_overview.rotations IS 'How many times the token was rotated (version - 1).';
COMMENT ON COLUMN session_overview.in_grace IS 'True while the previous token is still honoured (grace window after a rotation).';
COMMENT ON COLUMN session_overview.revoked_at IS 'When the session was revoked; NULL if it was not.';
COMMENT ON COLUMN session_overview.revoked_reason IS 'logout, logout_all, reuse_detected, admin, user_disabled, api_key_revoked, upgraded or deleted.';
COMMENT ON COLUMN session_overview.user_agent IS 'User-Agent at login.';
COMMENT ON COLUMN session_overview.ip IS 'Client address at login.';
COMMENT ON COLUMN session_overview.data_keys IS 'Top-level keys of the session data, sorted; the values are not shown.';
