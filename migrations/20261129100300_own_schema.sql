-- latchkey keeps to a schema of its own, `latchkey`, beside the application's tables and never
-- among them, with its own migration record (latchkey._sqlx_migrations), so the application's
-- migrations and latchkey's apply in either order and never collide on a name.
--
-- latchkey::migrate (and `latchkey migrate`) run every migration with search_path set to that
-- schema, so the earlier migrations, which name their objects unqualified, create them there;
-- a deployment from before the schema has had its objects and its migration rows moved there
-- first (sql/adopt_legacy_layout.sql, run by latchkey::migrate).
--
-- The routines name the tables unqualified. Each function now runs with the search_path it
-- was migrated under (the latchkey schema) whatever its caller's, so an application's own
-- connections can call them and fire their triggers. A procedure that commits cannot carry a
-- search_path of its own: latchkey_expire calls its batch function by its qualified name.

DO $$
DECLARE
    r record;
BEGIN
    IF current_schema() IS DISTINCT FROM 'latchkey' THEN
        RAISE EXCEPTION 'latchkey''s migrations must run with search_path = latchkey (apply them with latchkey::migrate or `latchkey migrate`), not in schema %', current_schema();
    END IF;
    FOR r IN SELECT p.oid::regprocedure AS sig
               FROM pg_proc AS p
              WHERE p.pronamespace = 'latchkey'::regnamespace AND p.prokind = 'f'
    LOOP
        EXECUTE format('ALTER ROUTINE %s SET search_path FROM CURRENT', r.sig);
    END LOOP;
END
$$;

-- The procedure of 20261120000400_expire.sql, word for word but for the batch function's
-- qualified name: pg_cron or psql call it from any search_path.
CREATE OR REPLACE PROCEDURE latchkey_expire(
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
        SELECT * INTO b FROM latchkey.latchkey_expire_batch(batch_size, retain_revoked, retain_events, true);
        expired := b.expired;
        revoked := b.revoked;
        events := b.events;
        batches := ceil(greatest(b.expired, b.revoked, b.events)::numeric / batch_size);
    ELSE
        LOOP
            started := clock_timestamp();
            IF from_start THEN
                SELECT * INTO b FROM latchkey.latchkey_expire_batch(batch_size, retain_revoked, retain_events, false,
                                                                    expired_events => expired_events);
            ELSE
                SELECT * INTO b FROM latchkey.latchkey_expire_batch(batch_size, retain_revoked, retain_events, false,
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

COMMENT ON SCHEMA latchkey IS 'latchkey''s tables, types and routines, and its own migration record (_sqlx_migrations). Every routine runs with search_path = latchkey. In psql: SET search_path = latchkey, public; to read the tables unqualified.';
