-- Expiry for cron and pg_cron, and a view of the sessions table for humans.
--
-- One implementation of the purge: latchkey_expire_batch() removes ONE bounded batch of each
-- category in its own short transaction; `latchkey expire` calls it in a loop, and the
-- procedure latchkey_expire() does the same from SQL (pg_cron), committing between batches.
-- Rows are picked with FOR UPDATE SKIP LOCKED, so two purges running at once never wait for
-- each other and never delete (or count) the same row twice.

CREATE FUNCTION latchkey_expire_batch(
    batch_size     integer  DEFAULT 1000,
    retain_revoked interval DEFAULT '7 days',
    retain_events  interval DEFAULT '90 days',
    dry_run        boolean  DEFAULT false,
    OUT expired    bigint,
    OUT revoked    bigint,
    OUT events     bigint
)
LANGUAGE plpgsql
VOLATILE
SET search_path FROM CURRENT
AS $$
DECLARE
    revoked_before timestamptz;
    events_before  timestamptz;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 100000 THEN
        RAISE EXCEPTION 'latchkey_expire: batch_size must be between 1 and 100000, not %', batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retain_revoked IS NULL OR retain_revoked < interval '0' THEN
        RAISE EXCEPTION 'latchkey_expire: retain_revoked must be a non-negative interval, not %', retain_revoked
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retain_events IS NULL OR retain_events < interval '0' THEN
        RAISE EXCEPTION 'latchkey_expire: retain_events must be a non-negative interval, not %', retain_events
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    revoked_before := now() - retain_revoked;
    events_before := now() - retain_events;

    IF dry_run THEN
        -- Everything that would go, uncapped; nothing is locked or deleted.
        SELECT count(*) INTO expired FROM sessions WHERE expires_at <= now();
        SELECT count(*) INTO revoked FROM sessions
        WHERE revoked_at < revoked_before AND expires_at > now();
        SELECT count(*) INTO events FROM session_events WHERE occurred_at < events_before;
        RETURN;
    END IF;

    -- Expired sessions (idle or absolute: expires_at never passes absolute_expires_at), revoked
    -- or not: an expired session can never be used again. Its end is recorded as an
    -- 'expired' event unless a 'revoked' event already closed it.
    WITH gone AS (
        DELETE FROM sessions
        WHERE id = ANY (ARRAY(SELECT id FROM sessions WHERE expires_at <= now()
                     ORDER BY expires_at LIMIT batch_size FOR UPDATE SKIP LOCKED))
        RETURNING id, owner_key, expires_at, absolute_expires_at, revoked_at
    ), ev AS (
        INSERT INTO session_events (session_id, owner_key, event, detail)
        SELECT id, owner_key, 'expired',
               jsonb_build_object('expiry', CASE WHEN expires_at < absolute_expires_at
                                                 THEN 'idle' ELSE 'absolute' END,
                                  'expires_at', expires_at)
        FROM gone WHERE revoked_at IS NULL
    )
    SELECT count(*) INTO expired FROM gone;

    -- Revoked sessions past their retention that have not expired yet (the expired ones were
    -- counted above: each row is counted once).
    WITH gone AS (
        DELETE FROM sessions
        WHERE id = ANY (ARRAY(SELECT id FROM sessions WHERE revoked_at < revoked_before AND expires_at > now()
                     ORDER BY revoked_at LIMIT batch_size FOR UPDATE SKIP LOCKED))
        RETURNING id
    )
    SELECT count(*) INTO revoked FROM gone;

    -- Audit events past their retention.
    WITH gone AS (
        DELETE FROM session_events
        WHERE id = ANY (ARRAY(SELECT id FROM session_events WHERE occurred_at < events_before
                     ORDER BY occurred_at LIMIT batch_size FOR UPDATE SKIP LOCKED))
        RETURNING id
    )
    SELECT count(*) INTO events FROM gone;
END;
$$;

COMMENT ON FUNCTION latchkey_expire_batch(integer, interval, interval, boolean) IS
'Purges ONE batch (at most batch_size rows of each category) and returns how many rows went: expired = sessions with expires_at <= now() (idle or absolute expiry, revoked or not); revoked = revoked sessions with revoked_at older than retain_revoked that have not expired; events = session_events older than retain_events. Rows are picked with FOR UPDATE SKIP LOCKED: concurrent purges never block each other nor count a row twice. Call it repeatedly, one transaction per call, until it returns three zeros (latchkey expire does), or CALL latchkey_expire(). dry_run => counts everything that would go, uncapped, and deletes nothing.';

CREATE PROCEDURE latchkey_expire(
    batch_size       integer  DEFAULT 1000,
    retain_revoked   interval DEFAULT '7 days',
    retain_events    interval DEFAULT '90 days',
    dry_run          boolean  DEFAULT false,
    INOUT expired    bigint   DEFAULT 0,
    INOUT revoked    bigint   DEFAULT 0,
    INOUT events     bigint   DEFAULT 0,
    INOUT batches    bigint   DEFAULT 0
)
LANGUAGE plpgsql
AS $$
DECLARE
    b record;
BEGIN
    expired := 0;
    revoked := 0;
    events := 0;
    batches := 0;
    IF dry_run THEN
        SELECT * INTO b FROM latchkey_expire_batch(batch_size, retain_revoked, retain_events, true);
        expired := b.expired;
        revoked := b.revoked;
        events := b.events;
        batches := ceil(greatest(b.expired, b.revoked, b.events)::numeric / batch_size);
    ELSE
        LOOP
            SELECT * INTO b FROM latchkey_expire_batch(batch_size, retain_revoked, retain_events, false);
            EXIT WHEN b.expired = 0 AND b.revoked = 0 AND b.events = 0;
            expired := expired + b.expired;
            revoked := revoked + b.revoked;
            events := events + b.events;
            batches := batches + 1;
            -- Release the locks of this batch before taking the next one.
            COMMIT;
        END LOOP;
    END IF;
    RAISE NOTICE 'expired=% revoked=% events=% batches=% dry_run=%',
        expired, revoked, events, batches, dry_run;
END;
$$;

COMMENT ON PROCEDURE latchkey_expire(integer, interval, interval, boolean, bigint, bigint, bigint, bigint) IS
'Runs latchkey_expire_batch() until nothing is left, committing after every batch so no lock is held for long; returns the totals (expired, revoked, events, batches) and raises them as a NOTICE. For pg_cron: SELECT cron.schedule(''latchkey-expire'', ''*/10 * * * *'', ''CALL latchkey_expire()''). Must be CALLed outside an explicit transaction block (it commits). The INOUT arguments are outputs; their inputs are ignored.';

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
