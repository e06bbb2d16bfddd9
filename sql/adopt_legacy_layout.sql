-- Moves a deployment made before latchkey had a schema of its own into the schema `latchkey`:
-- its tables (with their indexes, constraints, sequences and triggers), view, types and
-- routines, and its rows of the migration record, which go to latchkey._sqlx_migrations. The
-- application's own migration rows stay where they are; a record left empty is dropped.
--
-- latchkey::migrate runs this (one statement, so all or nothing) after creating the schema and
-- before the migrations, under its lock. It does nothing when latchkey._sqlx_migrations exists
-- already (the move is done, or the deployment started in the schema) or when no schema holds
-- latchkey's migration record (a fresh database).
DO $$
DECLARE
    -- The migrations of that earlier layout: every one before 20261129100300_own_schema.
    earlier  bigint[] := ARRAY[20261120000100, 20261120000200, 20261120000300, 20261120000400,
                               20261120000500, 20261120000600, 20261120000700, 20261129100100,
                               20261129100200];
    legacy   name;
    recorded bigint;
    t        text;
    r        record;
BEGIN
    IF to_regclass('latchkey._sqlx_migrations') IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT n.nspname INTO legacy
      FROM pg_namespace AS n
     WHERE n.nspname <> 'latchkey'
       AND to_regclass(format('%I._sqlx_migrations', n.nspname)) IS NOT NULL
       AND to_regclass(format('%I.sessions', n.nspname)) IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_proc AS p
                    WHERE p.pronamespace = n.oid AND p.proname = 'latchkey_revoke')
     ORDER BY n.nspname = 'public' DESC, n.nspname
     LIMIT 1;
    IF legacy IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('SELECT count(*) FROM %I._sqlx_migrations WHERE version = ANY ($1) AND success',
                   legacy)
       INTO recorded USING earlier;
    IF recorded = 0 THEN
        RETURN;
    END IF;

    RAISE NOTICE 'latchkey: moving its tables, types, routines and migration record from schema % to schema latchkey', legacy;
    FOREACH t IN ARRAY ARRAY['users', 'api_keys', 'sessions', 'session_events', 'login_throttle',
                             'login_failures'] LOOP
        EXECUTE format('ALTER TABLE %I.%I SET SCHEMA latchkey', legacy, t);
    END LOOP;
    EXECUTE format('ALTER VIEW %I.session_overview SET SCHEMA latchkey', legacy);
    FOREACH t IN ARRAY ARRAY['session_kind', 'session_event_kind'] LOOP
        EXECUTE format('ALTER TYPE %I.%I SET SCHEMA latchkey', legacy, t);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS sig
               FROM pg_proc AS p
              WHERE p.pronamespace = legacy::regnamespace
                AND (p.proname LIKE 'latchkey\_%' OR p.proname = 'session_events_append_only')
    LOOP
        EXECUTE format('ALTER ROUTINE %s SET SCHEMA latchkey', r.sig);
    END LOOP;

    EXECUTE format('CREATE TABLE latchkey._sqlx_migrations (LIKE %I._sqlx_migrations INCLUDING ALL)',
                   legacy);
    EXECUTE format('WITH moved AS (DELETE FROM %I._sqlx_migrations WHERE version = ANY ($1) RETURNING *)
                    INSERT INTO latchkey._sqlx_migrations SELECT * FROM moved', legacy)
      USING earlier;
    EXECUTE format('SELECT count(*) FROM %I._sqlx_migrations', legacy) INTO recorded;
    IF recorded = 0 THEN
        EXECUTE format('DROP TABLE %I._sqlx_migrations', legacy);
    END IF;
END
$$;
