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
COMMENT ON COLUMN users.disabled IS 'True when the account may no longer log in (latchkey user disable). Existing sessions are revoked when it is set.';
COMMENT ON COLUMN users.created_at IS 'When the account was created.';
COMMENT ON COLUMN users.updated_at IS 'Last change to the password hash or the disabled flag.';
