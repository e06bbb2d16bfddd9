-- latchkey's schema, one migration per concept, each creating its tables and functions once:
--
--   20261120000100_users_api_keys.sql       users, api_keys
--   20261120000200_sessions_events.sql      sessions, session_events, session_overview
--   20261120000300_session_notify.sql       NOTIFY triggers, latchkey_revoke_owner/_session
--   20261120000400_expire.sql               latchkey_expire_batch, latchkey_expire
--   20261120000500_tower_sessions_store.sql latchkey_store_save_many/_create_many
--   20261120000600_disable_user.sql         disabling a user revokes everything it owns
--   20261120000700_login_throttle.sql       login_throttle, login_failures
--
-- Migrations are up-only and never edited once committed. From here on a change to a
-- function is a new migration with CREATE OR REPLACE and the same signature (argument types
-- and OUT columns), so grants made on it by hand survive; only a change CREATE OR REPLACE
-- cannot make (a new argument or OUT column) drops and creates the function again, and says
-- so in its header. Every table, column, view, function and trigger carries a COMMENT ON
-- written for a DBA.

-- Accounts that can log in with a password.
CREATE TABLE users (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_email_format CHECK (length(email) BETWEEN 3 AND 254 AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    CONSTRAINT users_password_hash_phc CHECK (password_hash LIKE '$argon2id$%')
);

-- One account per address, whatever its case.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

COMMENT ON TABLE users IS 'Accounts that log in with an email and a password. Sessions refer to them through owner_key = ''user:<id>''.';
COMMENT ON COLUMN users.id IS 'Random account id; appears in sessions.owner_key as user:<id>.';
COMMENT ON COLUMN users.email IS 'Login address, unique case-insensitively (index users_email_lower_key).';
COMMENT ON COLUMN users.password_hash IS 'Argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash). Not reversible; rehashed on login when the parameters change.';
COMMENT ON COLUMN users.disabled IS 'True when the account may no longer log in, with its password or with any of its API keys (latchkey user disable, latchkey_disable_user()). Setting it revokes every live session of the user and of its API keys (trigger users_disabled_revoke_sessions).';
COMMENT ON COLUMN users.created_at IS 'When the account was created.';
COMMENT ON COLUMN users.updated_at IS 'Last change to the password hash or the disabled flag.';

-- Keys for machine clients (SDKs, services). A key logs in as a stateless session owned by
-- apikey:<id>; only the SHA-256 of its secret is kept.
CREATE TABLE api_keys (
    id           uuid        NOT NULL,
    owner_key    text        NOT NULL,
    name         text,
    key_hash     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_keys_pkey PRIMARY KEY (id),
    CONSTRAINT api_keys_owner_key_format CHECK (owner_key ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
    CONSTRAINT api_keys_key_hash_len CHECK (octet_length(key_hash) = 32),
    CONSTRAINT api_keys_name_len CHECK (length(name) BETWEEN 1 AND 200)
);

CREATE INDEX api_keys_owner_key_idx ON api_keys (owner_key, created_at);

COMMENT ON TABLE api_keys IS 'API keys of machine clients. A key (lka_…, shown once) logs in as a stateless session owned by apikey:<id>. Revoking a key revokes every session it created.';
COMMENT ON COLUMN api_keys.id IS 'Random key id; embedded in the key and used as the session owner apikey:<id>.';
COMMENT ON COLUMN api_keys.owner_key IS 'The user the key acts for (user:<uuid>).';
COMMENT ON COLUMN api_keys.name IS 'Optional label given at creation (e.g. the service using it).';
COMMENT ON COLUMN api_keys.key_hash IS 'SHA-256 of the key secret (32 bytes). The key itself is never stored.';
COMMENT ON COLUMN api_keys.created_at IS 'When the key was created.';
COMMENT ON COLUMN api_keys.last_used_at IS 'Last successful login with the key.';
COMMENT ON COLUMN api_keys.revoked_at IS 'When the key was revoked; a revoked key logs in no more and its sessions are revoked.';
