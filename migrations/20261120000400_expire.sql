-- Expiry for cron and pg_cron.
--
-- One implementation of the purge: latchkey_expire_batch() removes ONE bounded batch of each
-- category in its own short transaction; `latchkey expire` calls it in a loop, and the
-- procedure latchkey_expire() does the same from SQL (pg_cron), committing between batches.
-- Rows are picked with FOR UPDATE SKIP LOCKED, so two purges running at once never wait for
-- each other and never delete (or count) the same row twice.
--
-- Each batch resumes where the previous one stopped (a keyset cursor per category): it
-- returns, per category, the largest key it deleted, and the next call passes it back, so the
-- search starts there with `>=` (rows sharing the key are not lost; the deleted ones are
-- invisible) instead of stepping again over the index entries of every row already deleted
-- (they stay in the index until vacuum: without the cursor a large purge is quadratic). A row
-- that another transaction held locked (SKIP LOCKED) when the cursor passed it is behind the
-- cursor, so a purge is only finished when a batch WITHOUT cursors deletes nothing: after the
-- cursor passes come back empty, latchkey_expire() and `latchkey expire` make one more pass
-- from the start, and resume with cursors if it found something.
--
-- Batches are small (200) and each is followed by a rest (pause_ratio, default 4 times as
-- long as the batch took): expired rows lie scattered among live ones, each deleted row
-- dirties its own page (and, the first time after a checkpoint, logs the whole page), and the
-- refreshes committing beside the purge wait behind that WAL and those page writes.
--
-- The 'expired' audit event of each purged session is opt-in (expired_events => true,
-- latchkey expire --expired-events): on a purge of 1M expired sessions those rows and their
-- four index entries were most of the work, 963 MB of WAL against 289 MB without them
-- (scripts/bench-expire.sh, docs/BENCHMARKS.md).

CREATE FUNCTION latchkey_expire_batch(
    batch_size     integer     DEFAULT 200,
    retain_revoked interval    DEFAULT '7 days',
    retain_events  interval    DEFAULT '90 days',
    dry_run        boolean     DEFAULT false,
    expired_from   timestamptz DEFAULT NULL,
    revoked_from   timestamptz DEFAULT NULL,
    events_from    timestamptz DEFAULT NULL,
    expired_events boolean     DEFAULT false,
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
    -- or not: an expired session can never be used again. With expired_events, its end is
    -- recorded as an 'expired' event unless a 'revoked' event already closed it.
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
        FROM gone WHERE revoked_at IS NULL AND expired_events
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

COMMENT ON FUNCTION latchkey_expire_batch(integer, interval, interval, boolean, timestamptz, timestamptz, timestamptz, boolean) IS
'Purges ONE batch (at most batch_size rows of each category) and returns how many rows went: expired = sessions with expires_at <= now() (idle or absolute expiry, revoked or not); revoked = revoked sessions with revoked_at older than retain_revoked that have not expired; events = session_events older than retain_events. Rows are picked with FOR UPDATE SKIP LOCKED: concurrent purges never block each other nor count a row twice. Cursors: expired_last, revoked_last and events_last are the largest expires_at, revoked_at and occurred_at deleted in this batch (NULL when none); pass them back as expired_from, revoked_from and events_from to start the next batch there (>=) instead of stepping again over the index entries of the rows already deleted. A row skipped because it was locked is behind the cursor, so a purge is complete only when a call without cursors returns three zeros. Call it repeatedly, one transaction per call (latchkey expire does), or CALL latchkey_expire(). dry_run => counts everything that would go, uncapped, whatever the cursors, and deletes nothing. expired_events => true: also record an ''expired'' audit event for each purged session that was not revoked (off by default: on a large purge the events are most of the WAL).';

CREATE PROCEDURE latchkey_expire(
    batch_size       integer  DEFAULT 200,
    retain_revoked   interval DEFAULT '7 days',
    retain_events    interval DEFAULT '90 days',
    dry_run          boolean  DEFAULT false,
    pause_ratio      double precision DEFAULT 4,
    expired_events   boolean  DEFAULT false,
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
    started      timestamptz;
BEGIN
    IF pause_ratio IS NULL OR NOT (pause_ratio BETWEEN 0 AND 100) THEN
        RAISE EXCEPTION 'pause_ratio must be from 0 to 100, got %', pause_ratio
            USING ERRCODE = '22023';
    END IF;
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
            started := clock_timestamp();
            IF from_start THEN
                SELECT * INTO b FROM latchkey_expire_batch(batch_size, retain_revoked, retain_events, false,
                                                           expired_events => expired_events);
            ELSE
                SELECT * INTO b FROM latchkey_expire_batch(batch_size, retain_revoked, retain_events, false,
                                                           expired_from, revoked_from, events_from,
                                                           expired_events);
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
            -- Rest pause_ratio times as long as the batch took (at most 1 s), so the traffic
            -- beside the purge gets the WAL, the disk and the CPU between batches.
            IF pause_ratio > 0 THEN
                PERFORM pg_sleep(least(1.0, pause_ratio
                                 * extract(epoch FROM clock_timestamp() - started)::double precision));
            END IF;
        END LOOP;
    END IF;
    RAISE NOTICE 'expired=% revoked=% events=% batches=% dry_run=%',
        expired, revoked, events, batches, dry_run;
END;
$$;

COMMENT ON PROCEDURE latchkey_expire(integer, interval, interval, boolean, double precision, boolean, bigint, bigint, bigint, bigint) IS
'Runs latchkey_expire_batch() until nothing is left, committing after every batch so no lock is held for long, each batch resuming where the previous one stopped (its cursors); when a batch comes back empty it makes one more pass from the start (for rows that were locked when the cursors went past them) and only stops when that pass finds nothing. After each batch it rests pause_ratio times as long as the batch took (at most 1 s; 0 = back to back), so the purge leaves room for the traffic beside it. expired_events => true also records an ''expired'' audit event for each purged session. Returns the totals (expired, revoked, events, batches) and raises them as a NOTICE. For pg_cron: SELECT cron.schedule(''latchkey-expire'', ''*/10 * * * *'', ''CALL latchkey_expire()''). Must be CALLed outside an explicit transaction block (it commits). The INOUT arguments are outputs; their inputs are ignored.';
