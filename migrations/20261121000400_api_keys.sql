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
