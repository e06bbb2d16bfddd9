-- The purge of expired sessions takes them page by page.
--
-- Until now a batch deleted the batch_size earliest expired sessions. Sessions expire in a
-- different order than they were written, so those rows lie on as many heap pages as there are
-- rows: a batch of 200 dirtied 200 pages, and each page came back once per expired row it
-- held. On a 1M purge of 2M rows (scripts/bench-expire.sh, the scattered order, 36 rows a page)
-- the server wrote about one heap page per row deleted (pg_stat_bgwriter: 1286 buffers written
-- a second for 1150 rows deleted a second), and logged most of them whole again after each
-- checkpoint (743 full-page images a second, 4 MB/s of WAL): the write operations and the WAL
-- that a slow disk has not got to spare, for the refreshes beside the purge.
--
-- Now a batch reads the batch_size earliest expired sessions (from the cursor on) as seeds,
-- without locking them (a row lock is a write to its page), and takes their heap pages in the
-- order of each page's earliest seed: on each page it locks the expired rows (FOR UPDATE SKIP
-- LOCKED, as before) up to what the batch has room for, so a page is dirtied once for all its
-- expired rows. A batch still deletes at most batch_size rows. When every expired row of the
-- seeds' pages is locked by another transaction (a purge beside this one), the batch takes the
-- earliest rows that are not, one by one, as before.
--
-- The cursor (expired_last, passed back as expired_from) is now where the next batch resumes:
-- the earliest seed of the page that filled the batch, or, when the batch took every page of
-- its seeds, the latest seed. Every expired row before it has been deleted, or was locked when
-- the batch went past it (the final pass from the start finds those, as before). Rows taken
-- beside the seeds may lie past the cursor: they are gone, so the next batch does not see
-- them.
--
-- A page is read by a TID range (ctid >= '(block,0)' AND ctid < '(block+1,0)': a TID Range
-- Scan, PostgreSQL 14+), restricted to the seed's own table (tableoid): on sessions
-- partitioned by id each part has its own block numbers.
--
-- The signature, the defaults, the grants and the other categories (revoked sessions, events)
-- are unchanged; the function keeps search_path = latchkey.

CREATE OR REPLACE FUNCTION latchkey_expire_batch(
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
    -- The expired sessions this batch takes (locked), its room for more, and where the next
    -- batch resumes (NULL while no seed was seen).
    chosen         uuid[] := '{}';
    page_ids       uuid[];
    room           integer := batch_size;
    resume         timestamptz;
    pg             record;
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
    -- or not: an expired session can never be used again. The seeds are read without a lock;
    -- their pages are taken in the order of their earliest seed, each page's expired rows
    -- locked (FOR UPDATE SKIP LOCKED) up to what the batch has room for.
    FOR pg IN
        SELECT s.rel, s.blk, min(s.expires_at) AS first, max(s.expires_at) AS last
        FROM (SELECT tableoid AS rel, (ctid::text::point)[0]::bigint AS blk, expires_at
              FROM sessions
              WHERE expires_at >= expired_start AND expires_at <= now()
              ORDER BY expires_at
              LIMIT batch_size) AS s
        GROUP BY s.rel, s.blk
        ORDER BY first, s.rel, s.blk
    LOOP
        SELECT coalesce(array_agg(r.id), '{}') INTO page_ids
        FROM (SELECT id FROM sessions
              WHERE ctid >= format('(%s,0)', pg.blk)::tid
                AND ctid < format('(%s,0)', pg.blk + 1)::tid
                AND tableoid = pg.rel
                AND expires_at <= now()
              ORDER BY expires_at, id
              LIMIT room
              FOR UPDATE SKIP LOCKED) AS r;
        chosen := chosen || page_ids;
        room := room - cardinality(page_ids);
        resume := greatest(resume, pg.last);
        IF room = 0 THEN
            -- Full: this page's later seeds, and the pages after it, are for the next batch.
            resume := pg.first;
            EXIT;
        END IF;
    END LOOP;

    -- resume is set once there was a seed.
    IF resume IS NOT NULL AND cardinality(chosen) = 0 THEN
        -- Every expired row of the seeds' pages is locked by another transaction (a purge
        -- beside this one): take the earliest rows that are not, one page each, as before.
        SELECT coalesce(array_agg(r.id), '{}'), max(r.expires_at) INTO chosen, resume
        FROM (SELECT id, expires_at FROM sessions
              WHERE expires_at >= expired_start AND expires_at <= now()
              ORDER BY expires_at
              LIMIT batch_size
              FOR UPDATE SKIP LOCKED) AS r;
    END IF;

    -- Delete what was locked. With expired_events, its end is recorded as an 'expired' event
    -- unless a 'revoked' event already closed it.
    WITH gone AS (
        DELETE FROM sessions
        WHERE id = ANY (chosen)
        RETURNING id, owner_key, expires_at, absolute_expires_at, revoked_at
    ), ev AS (
        INSERT INTO session_events (session_id, owner_key, event, detail)
        SELECT id, owner_key, 'expired',
               jsonb_build_object('expiry', CASE WHEN expires_at < absolute_expires_at
                                                 THEN 'idle' ELSE 'absolute' END,
                                  'expires_at', expires_at)
        FROM gone WHERE revoked_at IS NULL AND expired_events
    )
    SELECT count(*) INTO expired FROM gone;
    expired_last := CASE WHEN expired > 0 THEN resume END;

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
'Purges ONE batch (at most batch_size rows of each category) and returns how many rows went: expired = sessions with expires_at <= now() (idle or absolute expiry, revoked or not); revoked = revoked sessions with revoked_at older than retain_revoked that have not expired; events = session_events older than retain_events. Expired sessions go page by page: the batch_size earliest from the cursor on are the seeds, and the batch takes the expired sessions of their heap pages, the earliest seed''s page first, so each page is written once for all its expired rows (when all of those are locked by another transaction, the earliest unlocked rows instead). Rows are locked with FOR UPDATE SKIP LOCKED: concurrent purges never block each other nor count a row twice. Cursors: expired_last is where the next batch of expired sessions resumes (every expired row before it is gone or was locked); revoked_last and events_last are the largest revoked_at and occurred_at deleted in this batch; each is NULL when nothing of its category went. Pass them back as expired_from, revoked_from and events_from to start the next batch there (>=) instead of stepping again over the index entries of the rows already deleted. A row skipped because it was locked is behind the cursor, so a purge is complete only when a call without cursors returns three zeros. Call it repeatedly, one transaction per call (latchkey expire does), or CALL latchkey_expire(). dry_run => counts everything that would go, uncapped, whatever the cursors, and deletes nothing. expired_events => true: also record an ''expired'' audit event for each purged session that was not revoked (off by default: on a large purge the events are most of the WAL).';
