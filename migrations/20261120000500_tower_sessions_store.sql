-- tower-sessions store: the multi-row save and create are functions whose plans are kept.
--
-- PgSessionStore gathers concurrent saves into one UPDATE … FROM unnest(arrays). Sent as a
-- prepared statement, PostgreSQL plans it again at every run: its generic plan estimates 10
-- rows for the unnest and always looks dearer than a custom plan for the actual few, so the
-- plan cache never keeps it. Planning is then a third of the statement's CPU: pgbench, 4 rows
-- per statement, 2 clients, commits not waiting for the WAL flush (to see the CPU alone):
-- 5,801 statements/s planned each time, 8,549 with the generic plan, 8,182 through this
-- function (docs/BENCHMARKS.md). PL/pgSQL keeps a statement's plan for the session, and the
-- function's own plan_cache_mode setting makes it the generic one: a nested loop over the
-- rows with a primary-key probe each (the same plan a custom one picks).
--
-- The statement is the one a single save runs (src/store/tower.rs, save_one), over arrays:
-- only a live stateful row is updated (never one that is revoked, expired or gone, so a
-- late save cannot resurrect a session), the expiry slides only past the touch interval,
-- and a save that changes nothing writes nothing.

CREATE FUNCTION latchkey_store_save_many(
    ids          uuid[],
    hashes       bytea[],
    session_data jsonb[],
    owners       text[],
    expiries     timestamptz[],
    touch_secs   double precision
) RETURNS bigint
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    saved bigint;
BEGIN
    UPDATE sessions s
    SET data = r.data,
        owner_key = coalesce(r.owner, 'anon:' || s.id::text),
        expires_at = CASE
            WHEN least(r.expiry, s.absolute_expires_at) >= s.expires_at
             AND least(r.expiry, s.absolute_expires_at)
                 < s.expires_at + make_interval(secs => touch_secs)
            THEN s.expires_at
            ELSE least(r.expiry, s.absolute_expires_at) END,
        last_used_at = now(),
        version = s.version + 1
    FROM unnest(ids, hashes, session_data, owners, expiries) AS r(id, hash, data, owner, expiry)
    WHERE s.id = r.id AND s.token_hash = r.hash AND s.kind = 'stateful'
      AND s.revoked_at IS NULL AND s.expires_at > now()
      AND (s.data IS DISTINCT FROM r.data
           OR s.owner_key IS DISTINCT FROM coalesce(r.owner, 'anon:' || s.id::text)
           OR least(r.expiry, s.absolute_expires_at) < s.expires_at
           OR least(r.expiry, s.absolute_expires_at)
              >= s.expires_at + make_interval(secs => touch_secs));
    GET DIAGNOSTICS saved = ROW_COUNT;
    RETURN saved;
END;
$$;

COMMENT ON FUNCTION latchkey_store_save_many(uuid[], bytea[], jsonb[], text[], timestamptz[], double precision) IS
'tower-sessions store: saves many sessions in one statement (the i-th id, token hash, data, owner key or NULL for the session''s own anon: key, and expiry of each array). Updates live stateful rows only, never a revoked, expired or missing one; an expiry that moved forward by less than touch_secs is kept; a save that changes nothing writes nothing. Returns the number of rows written. Keeps its generic plan (plan_cache_mode) instead of planning the UPDATE at every call.';

-- The multi-row create, for the same reason: INSERT … SELECT FROM unnest(arrays) was planned
-- at every run too. One INSERT … ON CONFLICT DO NOTHING as in insert_one (src/store/tower.rs):
-- a row whose id is taken is skipped, atomically, and the caller draws a new id.
CREATE FUNCTION latchkey_store_create_many(
    ids          uuid[],
    hashes       bytea[],
    session_data jsonb[],
    owners       text[],
    expiries     timestamptz[],
    ttl_secs     double precision
) RETURNS uuid[]
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    inserted uuid[];
BEGIN
    WITH ins AS (
        INSERT INTO sessions (id, kind, owner_key, token_hash, expires_at,
                              absolute_expires_at, data)
        SELECT r.id, 'stateful', coalesce(r.owner, 'anon:' || r.id::text), r.hash,
               least(r.expiry, cap.at), cap.at, r.data
        FROM unnest(ids, hashes, session_data, owners, expiries)
                 AS r(id, hash, data, owner, expiry),
             (SELECT now() + make_interval(secs => ttl_secs) AS at) AS cap
        ON CONFLICT ON CONSTRAINT sessions_pkey DO NOTHING
        RETURNING id
    )
    SELECT coalesce(array_agg(id), '{}') INTO inserted FROM ins;
    RETURN inserted;
END;
$$;

COMMENT ON FUNCTION latchkey_store_create_many(uuid[], bytea[], jsonb[], text[], timestamptz[], double precision) IS
'tower-sessions store: creates many sessions in one statement (the i-th id, token hash, data, owner key or NULL for the session''s own anon: key, and expiry of each array; the absolute expiry is now() + ttl_secs). A row whose id is taken is skipped (ON CONFLICT DO NOTHING). Returns the ids inserted. Keeps its generic plan (plan_cache_mode) instead of planning the INSERT at every call.';
