-- latchkey's schema with `sessions` and `session_events` hash-partitioned by session id into
-- 16 parts: a simulation of a deployment spread over several primaries (Citus distributes the
-- two tables by the same column, co-located), to check which statements stay on one part.
--
-- Run on a fresh, migrated database (nothing in the two tables yet), in one transaction:
--   psql -v ON_ERROR_STOP=1 -1 -f sql/partitioned_sessions.sql "$URL"
-- tests/api/partitioned.rs does so, then EXPLAINs the statements of the hot paths.
--
-- Each table is rebuilt under its own name with the same columns, defaults, checks, comments,
-- constraint and index names, and triggers; the view that reads `sessions` is made again on the new table.
-- `session_events` keys on (id, session_id): a unique key of a partitioned table must hold
-- its partition key.

DO $$
DECLARE
    overview     text := pg_get_viewdef('latchkey.session_overview'::regclass);
    overview_doc text := obj_description('latchkey.session_overview'::regclass, 'pg_class');
    t            record;
    defs         text[];
    def          text;
BEGIN
    SET LOCAL search_path = latchkey;
    DROP VIEW latchkey.session_overview;

    -- sessions: its primary key (id) holds the partition key as it is.
    SELECT coalesce(array_agg(pg_get_triggerdef(oid)), '{}') INTO defs
    FROM pg_trigger WHERE tgrelid = 'latchkey.sessions'::regclass AND NOT tgisinternal;
    SELECT defs || coalesce(array_agg(pg_get_indexdef(indexrelid)), '{}') INTO defs
    FROM pg_index WHERE indrelid = 'latchkey.sessions'::regclass AND NOT indisprimary;
    ALTER TABLE latchkey.sessions RENAME TO sessions_unpartitioned;
    ALTER TABLE latchkey.sessions_unpartitioned
        RENAME CONSTRAINT sessions_pkey TO sessions_unpartitioned_pkey;
    CREATE TABLE latchkey.sessions (
        LIKE latchkey.sessions_unpartitioned INCLUDING ALL EXCLUDING INDEXES,
        CONSTRAINT sessions_pkey PRIMARY KEY (id)
    ) PARTITION BY HASH (id);
    FOR i IN 0..15 LOOP
        EXECUTE format('CREATE TABLE latchkey.sessions_p%s PARTITION OF latchkey.sessions '
                       'FOR VALUES WITH (MODULUS 16, REMAINDER %s)', i, i);
    END LOOP;
    DROP TABLE latchkey.sessions_unpartitioned;
    FOREACH def IN ARRAY defs LOOP
        EXECUTE def;
    END LOOP;

    -- session_events: every index but the primary key, which gains session_id.
    SELECT coalesce(array_agg(pg_get_triggerdef(oid)), '{}') INTO defs
    FROM pg_trigger WHERE tgrelid = 'latchkey.session_events'::regclass AND NOT tgisinternal;
    SELECT defs || coalesce(array_agg(pg_get_indexdef(indexrelid)), '{}') INTO defs
    FROM pg_index
    WHERE indrelid = 'latchkey.session_events'::regclass AND NOT indisprimary;
    ALTER TABLE latchkey.session_events RENAME TO session_events_unpartitioned;
    ALTER TABLE latchkey.session_events_unpartitioned
        RENAME CONSTRAINT session_events_pkey TO session_events_unpartitioned_pkey;
    CREATE TABLE latchkey.session_events (
        LIKE latchkey.session_events_unpartitioned INCLUDING ALL EXCLUDING INDEXES,
        CONSTRAINT session_events_pkey PRIMARY KEY (id, session_id)
    ) PARTITION BY HASH (session_id);
    FOR i IN 0..15 LOOP
        EXECUTE format('CREATE TABLE latchkey.session_events_p%s PARTITION OF '
                       'latchkey.session_events FOR VALUES WITH (MODULUS 16, REMAINDER %s)', i, i);
    END LOOP;
    DROP TABLE latchkey.session_events_unpartitioned;
    FOREACH def IN ARRAY defs LOOP
        EXECUTE def;
    END LOOP;

    EXECUTE 'CREATE VIEW latchkey.session_overview AS ' || overview;
    EXECUTE format('COMMENT ON VIEW latchkey.session_overview IS %L', overview_doc);
END
$$;
