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
);

-- List and revoke everything of one owner.
CREATE INDEX sessions_owner_key_idx ON sessions (owner_key, created_at);
-- Purge of expired sessions. expires_at never passes absolute_expires_at
-- (sessions_expiry_capped), so this one index covers both expiries.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
-- Purge of revoked sessions after their retention period.
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

COMMENT ON TABLE sessions IS 'One row per login session, stateful (cookie) or stateless (refresh token). Holds no secret: only SHA-256 hashes of tokens. Read it through the session_overview view.';
COMMENT ON COLUMN sessions.id IS 'Server-generated random id (UUIDv4), also embedded in the token so lookups go by primary key. Never chosen by a client.';
COMMENT ON COLUMN sessions.kind IS 'stateful (cookie checked here on each request) or stateless (JWT access token + rotating refresh token). The authority on which mode a token may be used in.';
COMMENT ON COLUMN sessions.owner_key IS 'Who the session belongs to: user:<uuid>, apikey:<uuid> or anon:<uuid> (one per anonymous session, never shared).';
COMMENT ON COLUMN sessions.token_hash IS 'SHA-256 of the current token secret (32 bytes). The secret itself is never stored.';
COMMENT ON COLUMN sessions.prev_token_hash IS 'SHA-256 of the secret replaced by the last rotation. Accepted only until prev_valid_until; presented later it means the token was stolen and the session is revoked (reuse_detected).';
COMMENT ON COLUMN sessions.prev_valid_until IS 'End of the grace window for prev_token_hash: concurrent refreshes (two tabs) presenting the previous token until then get the same successor.';
COMMENT ON COLUMN sessions.sealed_successor IS 'The current secret encrypted (ChaCha20-Poly1305) under a key derived from the previous secret, so a refresh inside the grace window returns the same successor. Useless without the previous secret, which is not stored.';
COMMENT ON COLUMN sessions.version IS 'Rotation counter, raised by exactly one per rotation; every rotation is a compare-and-swap on it.';
COMMENT ON COLUMN sessions.created_at IS 'When the session was issued.';
COMMENT ON COLUMN sessions.last_used_at IS 'Last authenticated use; written at most once per touch interval (default 60 s) to spare writes.';
COMMENT ON COLUMN sessions.refreshed_at IS 'When the token was last rotated; NULL if never.';
COMMENT ON COLUMN sessions.expires_at IS 'Idle expiry: slides forward on use and refresh, never past absolute_expires_at.';
COMMENT ON COLUMN sessions.absolute_expires_at IS 'Hard cap on the session lifetime, fixed at creation.';
COMMENT ON COLUMN sessions.revoked_at IS 'When the session was revoked; NULL while it is not. A revoked session never comes back.';
COMMENT ON COLUMN sessions.revoked_reason IS 'Why: logout, logout_all, reuse_detected, admin, user_disabled, api_key_revoked, upgraded (anonymous session logged in) or deleted.';
COMMENT ON COLUMN sessions.user_agent IS 'User-Agent header at login (truncated to 512 characters).';
COMMENT ON COLUMN sessions.ip IS 'Client address at login.';
COMMENT ON COLUMN sessions.data IS 'Application session data (tower-sessions store) as a JSON object; query it with ->>.';

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
