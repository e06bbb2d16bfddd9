-- The batched purge resumes where the previous batch stopped (a keyset cursor per category).
--
-- Until now every batch searched from the start of its index (expires_at, revoked_at,
-- occurred_at), so it first stepped over the index entries of every row the earlier batches of
-- the same purge had deleted (they stay in the index until vacuum): the work of batch k grew
-- with k, and a large purge was quadratic. Each batch now also returns, per category, the
-- largest key it deleted, and the next call passes it back: the search starts there with
-- `>=` (rows sharing the key are not lost; the deleted ones are invisible).
--
-- A row that another transaction held locked (SKIP LOCKED) when the cursor passed it is behind
-- the cursor. So a purge is only finished when a batch WITHOUT cursors deletes nothing: after
-- the cursor passes come back empty, latchkey_expire() and `latchkey expire` make one more
-- pass from the start, and resume with cursors if it found something.
--
-- The function gets new OUT columns, which CREATE OR REPLACE cannot do: it is dropped and
-- created again (GRANT or REVOKE EXECUTE made on it by hand must be made again).

DROP FUNCTION latchkey_expire_batch(integer, interval, interval, boolean);

CREATE FUNCTION latchkey_expire_batch(
    batch_size     integer     DEFAULT 1000,
    retain_revoked interval    DEFAULT '7 days',
    retain_events  interval    DEFAULT '90 days',
    dry_run        boolean     DEFAULT false,
    expired_from   timestamptz DEFAULT NULL,
    revoked_from   timestamptz DEFAULT NULL,
    events_from    timestamptz DEFAULT NULL,
    OUT expired      bigint,
    OUT revoked      bigint,
    OUT events       bigint,
    OUT expired_last timestamptz,
    OUT revoked_last timestamptz,
    OUT events_last  timestamptz
)
LANGUAGE plpgsql
VOLATILE
SET search_path FROM CURRENT
AS $$
DECLARE
    revoked_before timestamptz;
    events_before  timestamptz;
    expired_start  timestamptz := coalesce(expired_from, '-infinity');
    revoked_start  timestamptz := coalesce(revoked_from, '-infinity');
    events_start   timestamptz := coalesce(events_from, '-infinity');
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
        -- Everything that would go, uncapped and whatever the cursors; nothing is locked or
        -- deleted.
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
        WHERE id = ANY (ARRAY(SELECT id FROM sessions WHERE expires_at >= expired_start AND expires_at <= now()
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
    SELECT count(*), max(expires_at) INTO expired, expired_last FROM gone;

    -- Revoked sessions past their retention that have not expired yet (the expired ones were
    -- counted above: each row is counted once).
    WITH gone AS (
        DELETE FROM sessions
        WHERE id = ANY (ARRAY(SELECT id FROM sessions WHERE revoked_at >= revoked_start AND revoked_at < revoked_before
                     AND expires_at > now() ORDER BY revoked_at LIMIT batch_size FOR UPDATE SKIP LOCKED))
        RETURNING id, revoked_at
    )
    SELECT count(*), max(revoked_at) INTO revoked, revoked_last FROM gone;

    -- Audit events past their retention.
    WITH gone AS (
        DELETE FROM session_events
        WHERE id = ANY (ARRAY(SELECT id FROM session_events WHERE occurred_at >= events_start AND occurred_at < events_before
                     ORDER BY occurred_at LIMIT batch_size FOR UPDATE SKIP LOCKED))
        RETURNING id, occurred_at
    )
    SELECT count(*), max(occurred_at) INTO events, events_last FROM gone;
END;
$$;

COMMENT ON FUNCTION latchkey_expire_batch(integer, interval, interval, boolean, timestamptz, timestamptz, timestamptz) IS
'Purges ONE batch (at most batch_size rows of each category) and returns how many rows went: expired = sessions with expires_at <= now() (idle or absolute expiry, revoked or not); revoked = revoked sessions with revoked_at older than retain_revoked that have not expired; events = session_events older than retain_events. Rows are picked with FOR UPDATE SKIP LOCKED: concurrent purges never block each other nor count a row twice. Cursors: expired_last, revoked_last and events_last are the largest expires_at, revoked_at and occurred_at deleted in this batch (NULL when none); pass them back as expired_from, revoked_from and events_from to start the next batch there (>=) instead of stepping again over the index entries of the rows already deleted. A row skipped because it was locked is behind the cursor, so a purge is complete only when a call without cursors returns three zeros. Call it repeatedly, one transaction per call (latchkey expire does), or CALL latchkey_expire(). dry_run => counts everything that would go, uncapped, whatever the cursors, and deletes nothing.';

CREATE OR REPLACE PROCEDURE latchkey_expire(
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
    -- Where each category resumes; NULL = from the start of its index.
    expired_from timestamptz;
    revoked_from timestamptz;
    events_from  timestamptz;
    from_start   boolean := true;
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
            IF from_start THEN
                SELECT * INTO b FROM latchkey_expire_batch(batch_size, retain_revoked, retain_events, false);
            ELSE
                SELECT * INTO b FROM latchkey_expire_batch(batch_size, retain_revoked, retain_events, false,
                                                           expired_from, revoked_from, events_from);
            END IF;
            IF b.expired = 0 AND b.revoked = 0 AND b.events = 0 THEN
                -- Done only when a pass from the start finds nothing: rows that were locked when
                -- the cursors went past them are behind the cursors.
                EXIT WHEN from_start;
                from_start := true;
                CONTINUE;
            END IF;
            from_start := false;
            expired_from := coalesce(b.expired_last, expired_from);
            revoked_from := coalesce(b.revoked_last, revoked_from);
            events_from := coalesce(b.events_last, events_from);
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
'Runs latchkey_expire_batch() until nothing is left, committing after every batch so no lock is held for long, each batch resuming where the previous one stopped (its cursors); when a batch comes back empty it makes one more pass from the start (for rows that were locked when the cursors went past them) and only stops when that pass finds nothing. Returns the totals (expired, revoked, events, batches) and raises them as a NOTICE. For pg_cron: SELECT cron.schedule(''latchkey-expire'', ''*/10 * * * *'', ''CALL latchkey_expire()''). Must be CALLed outside an explicit transaction block (it commits). The INOUT arguments are outputs; their inputs are ignored.';
