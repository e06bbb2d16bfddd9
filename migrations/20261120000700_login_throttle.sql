-- Login throttling shared by every instance, and the audit of failed logins.
--
-- login_throttle holds one row per (account, client address) and one per client address
-- (account = ''), counting recent failures; past a free allowance each failure blocks further
-- attempts of that key for a back-off that doubles. The service checks it before any password
-- work. login_failures records every failed login, never a password nor an email.

CREATE TABLE login_throttle (
    account         text        NOT NULL,
    ip              text        NOT NULL,
    failures        integer     NOT NULL CHECK (failures > 0),
    last_failure_at timestamptz NOT NULL,
    blocked_until   timestamptz,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (account, ip)
);

COMMENT ON TABLE login_throttle IS
    'Recent login failures per (account, client address) and per client address, with the back-off they earned. Shared by every instance; read before any password hashing. Rows past expires_at are stale and purged by latchkey expire.';
COMMENT ON COLUMN login_throttle.account IS
    'The account attempted: ''em:'' and a keyed hash (HKDF-SHA256 under the JWT secret) of the lower-cased email, the same for known and unknown emails; '''' for the per-address counter, which every failure from the address counts against (API keys included).';
COMMENT ON COLUMN login_throttle.ip IS
    'Client address as the service resolved it (X-Forwarded-For only from trusted proxies); '''' when unknown.';
COMMENT ON COLUMN login_throttle.failures IS
    'Failures since the counter last started (it restarts at 1 after expires_at).';
COMMENT ON COLUMN login_throttle.last_failure_at IS 'Time of the latest failure.';
COMMENT ON COLUMN login_throttle.blocked_until IS
    'Attempts of this key are refused (429 rate_limited) until then; NULL while within the free allowance.';
COMMENT ON COLUMN login_throttle.expires_at IS
    'The counter decays here: one window after the last failure, or one window after blocked_until when blocked (so the count survives its longest block). A successful login deletes its (account, address) row.';

CREATE INDEX login_throttle_expires_at_idx ON login_throttle (expires_at);
COMMENT ON INDEX login_throttle_expires_at_idx IS 'For the purge of stale counters.';

CREATE FUNCTION latchkey_login_failed(
    p_account text,
    p_ip text,
    p_free integer,
    p_base_secs double precision,
    p_max_secs double precision,
    p_window_secs double precision
) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    until timestamptz;
BEGIN
    INSERT INTO login_throttle AS t (account, ip, failures, last_failure_at, expires_at)
    VALUES (p_account, p_ip, 1, now(), now() + make_interval(secs => p_window_secs))
    ON CONFLICT (account, ip) DO UPDATE
        SET failures = CASE WHEN t.expires_at <= now() THEN 1 ELSE t.failures + 1 END,
            last_failure_at = now()
    RETURNING failures INTO n;
    IF n > p_free THEN
        until := now() + make_interval(secs =>
            least(p_base_secs * power(2::double precision, least(n - p_free - 1, 40)), p_max_secs));
    END IF;
    UPDATE login_throttle
       SET blocked_until = until,
           expires_at = now() + make_interval(secs => p_window_secs)
                        + coalesce(until - now(), interval '0')
     WHERE account = p_account AND ip = p_ip;
    RETURN until;
END
$$;

COMMENT ON FUNCTION latchkey_login_failed(text, text, integer, double precision, double precision, double precision) IS
    'Counts one login failure of (account, ip): restarts the counter if it had decayed; past p_free failures blocks the key for p_base_secs doubling per further failure, at most p_max_secs. Returns blocked_until (NULL while free). Atomic per key: concurrent failures all count.';

CREATE TABLE login_failures (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    account     text,
    ip          text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('password', 'api_key'))
);

COMMENT ON TABLE login_failures IS
    'Audit of failed logins, one row each (refusals by login_throttle are only counted in the metrics). Never holds a password, a key or an email in clear. Purged with the events retention by latchkey expire.';
COMMENT ON COLUMN login_failures.id IS 'Row id.';
COMMENT ON COLUMN login_failures.occurred_at IS 'When the attempt was answered.';
COMMENT ON COLUMN login_failures.account IS
    '''user:<uuid>'' when the email belongs to an account, else ''em:'' and the keyed hash of the lower-cased email (as login_throttle.account); ''apikey:<uuid>'' for a well-formed API key; NULL for a malformed key.';
COMMENT ON COLUMN login_failures.ip IS 'Client address as resolved by the service; '''' when unknown.';
COMMENT ON COLUMN login_failures.kind IS
    '''password'': wrong email or password (or disabled account); ''api_key'': unknown, revoked or malformed key. Logins refused by login_throttle are counted in the metrics, not stored here (a blocked client may send as fast as it likes).';

CREATE INDEX login_failures_occurred_at_idx ON login_failures (occurred_at);
COMMENT ON INDEX login_failures_occurred_at_idx IS 'For the purge by age and recent-failure queries.';
CREATE INDEX login_failures_ip_idx ON login_failures (ip, occurred_at);
COMMENT ON INDEX login_failures_ip_idx IS 'Failures of one client address over time.';
