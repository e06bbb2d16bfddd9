-- Expiry: a rest between batches.
--
-- Measured on 1M expired among 1M live sessions, the expired rows scattered over the table:
-- each deleted row dirties its own page (and, the first time after a checkpoint, logs the whole
-- page), and the refreshes committing beside the purge wait behind that WAL and those page
-- writes. Back to back, batches of 1000 raised the refresh p99 about 40 times; smaller batches
-- with a rest four times as long as each batch keep it near 2.5 times its idle value. The
-- procedure gets the rest (pause_ratio) and the smaller default batch, like latchkey expire
-- (--batch 200 --pause-ratio 4).

DROP PROCEDURE latchkey_expire(integer, interval, interval, boolean, bigint, bigint, bigint, bigint);

CREATE PROCEDURE latchkey_expire(
    batch_size       integer  DEFAULT 200,
    retain_revoked   interval DEFAULT '7 days',
    retain_events    interval DEFAULT '90 days',
    dry_run          boolean  DEFAULT false,
    pause_ratio      double precision DEFAULT 4,
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

COMMENT ON PROCEDURE latchkey_expire(integer, interval, interval, boolean, double precision, bigint, bigint, bigint, bigint) IS
'Runs latchkey_expire_batch() until nothing is left, committing after every batch so no lock is held for long, each batch resuming where the previous one stopped (its cursors); when a batch comes back empty it makes one more pass from the start (for rows that were locked when the cursors went past them) and only stops when that pass finds nothing. After each batch it rests pause_ratio times as long as the batch took (at most 1 s; 0 = back to back), so the purge leaves room for the traffic beside it. Returns the totals (expired, revoked, events, batches) and raises them as a NOTICE. For pg_cron: SELECT cron.schedule(''latchkey-expire'', ''*/10 * * * *'', ''CALL latchkey_expire()''). Must be CALLed outside an explicit transaction block (it commits). The INOUT arguments are outputs; their inputs are ignored.';
