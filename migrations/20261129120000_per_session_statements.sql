-- The tower-sessions store's save and latchkey_revoke reach only the rows of the sessions
-- they name, one statement per session, each found by its primary key.
--
-- Both took their sessions from an array at run time (UPDATE … FROM unnest(ids), and
-- id = ANY(session_ids)). On `sessions` partitioned by id (sql/partitioned_sessions.sql, the
-- simulation of a table distributed over several primaries; docs/scaling.md), PostgreSQL
-- cannot prune by an array that is a parameter: a single save or a reuse revocation wrote one
-- part but probed all of them. A statement per session, whose id is a plain parameter
-- (ids[i], a loop variable), is pruned when its plan starts: a save or a revocation of one
-- session reaches its part alone, a batch of k sessions at most k parts
-- (tests/api/partitioned.rs). On the unpartitioned table each is the primary-key probe the
-- join made per row (tests/api/partitioned.rs checks: no sequential scan).
--
-- The signatures, grants and comments' meaning stay; both keep search_path = latchkey.

CREATE OR REPLACE FUNCTION latchkey_store_save_many(
    ids          uuid[],
    hashes       bytea[],
    session_data jsonb[],
    owners       text[],
    expiries     timestamptz[],
    touch_secs   double precision
) RETURNS bigint
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET search_path FROM CURRENT
AS $$
DECLARE
    saved    bigint := 0;
    written  bigint;
    row_id   uuid;
    row_hash bytea;
    row_data jsonb;
    row_own  text;
    row_exp  timestamptz;
BEGIN
    -- The statement a single save runs (src/store/tower.rs): only a live stateful row is
    -- updated (never one that is revoked, expired or gone, so a late save cannot resurrect a
    -- session), the expiry slides only past the touch interval, and a save that changes
    -- nothing writes nothing. The rows are locked in the order of the arrays, as the join did.
    FOR i IN 1 .. coalesce(cardinality(ids), 0) LOOP
        row_id := ids[i];
        row_hash := hashes[i];
        row_data := session_data[i];
        row_own := owners[i];
        row_exp := expiries[i];
        UPDATE sessions s
        SET data = row_data,
            owner_key = coalesce(row_own, 'anon:' || s.id::text),
            expires_at = CASE
                WHEN least(row_exp, s.absolute_expires_at) >= s.expires_at
                 AND least(row_exp, s.absolute_expires_at)
                     < s.expires_at + make_interval(secs => touch_secs)
                THEN s.expires_at
                ELSE least(row_exp, s.absolute_expires_at) END,
            last_used_at = now(),
            version = s.version + 1
        WHERE s.id = row_id AND s.token_hash = row_hash AND s.kind = 'stateful'
          AND s.revoked_at IS NULL AND s.expires_at > now()
          AND (s.data IS DISTINCT FROM row_data
               OR s.owner_key IS DISTINCT FROM coalesce(row_own, 'anon:' || s.id::text)
               OR least(row_exp, s.absolute_expires_at) < s.expires_at
               OR least(row_exp, s.absolute_expires_at)
                  >= s.expires_at + make_interval(secs => touch_secs));
        GET DIAGNOSTICS written = ROW_COUNT;
        saved := saved + written;
    END LOOP;
    RETURN saved;
END;
$$;

COMMENT ON FUNCTION latchkey_store_save_many(uuid[], bytea[], jsonb[], text[], timestamptz[], double precision) IS
'tower-sessions store: saves many sessions in one call (the i-th id, token hash, data, owner key or NULL for the session''s own anon: key, and expiry of each array), one UPDATE per session by primary key in the order of the arrays, so a call reaches only the rows (and, on a table partitioned by id, the parts) of the sessions it names. Updates live stateful rows only, never a revoked, expired or missing one; an expiry that moved forward by less than touch_secs is kept; a save that changes nothing writes nothing. Returns the number of rows written. Keeps its generic plan (plan_cache_mode) instead of planning the UPDATE at every call.';

CREATE OR REPLACE FUNCTION latchkey_revoke(
    session_ids uuid[],
    reason text,
    clear_data boolean DEFAULT false,
    owners text[] DEFAULT NULL,
    presenter_ip text DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    sid uuid;
BEGIN
    -- One statement per distinct id, in id order (so two calls lock their common rows in the
    -- same order). Under READ COMMITTED the UPDATE re-checks revoked_at IS NULL (and the
    -- owner, when given) on the newest row version: of two concurrent revocations of a
    -- session exactly one revokes it, and a session whose owner changed meanwhile (a
    -- tower-sessions save binding another owner) is left alone.
    FOR sid IN
        SELECT DISTINCT u.id FROM unnest(session_ids) AS u(id) WHERE u.id IS NOT NULL ORDER BY 1
    LOOP
        RETURN QUERY
        WITH upd AS (
            UPDATE sessions AS s
            SET revoked_at = now(),
                revoked_reason = reason,
                data = CASE WHEN clear_data THEN '{}'::jsonb ELSE s.data END
            WHERE s.id = sid
              AND s.revoked_at IS NULL
              AND (owners IS NULL OR s.owner_key = ANY (owners))
            RETURNING s.id, s.owner_key, s.version, s.refreshed_at, s.prev_valid_until, s.ip
        ), ev AS (
            -- A revoked event with detail {"reason": …}, preceded by a reuse_detected event
            -- when that is the reason, whose detail adds the chain.
            INSERT INTO session_events (session_id, owner_key, event, detail)
            SELECT upd.id, upd.owner_key, e.kind,
                   jsonb_build_object('reason', reason)
                   || CASE WHEN e.ord = 1 THEN jsonb_strip_nulls(jsonb_build_object(
                          'presented_version', upd.version - 1,
                          'current_version', upd.version,
                          'rotated_at', upd.refreshed_at,
                          'grace_until', upd.prev_valid_until,
                          'login_ip', host(upd.ip),
                          'ip', presenter_ip))
                      ELSE '{}'::jsonb END
            FROM upd
            CROSS JOIN (VALUES (1, 'reuse_detected'::session_event_kind),
                               (2, 'revoked'::session_event_kind)) AS e(ord, kind)
            WHERE e.kind = 'revoked'::session_event_kind OR reason = 'reuse_detected'
            ORDER BY e.ord
        )
        SELECT upd.id FROM upd;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION latchkey_revoke(uuid[], text, boolean, text[], text) IS 'The one revocation: revokes the live sessions among session_ids (revoked_at = now(), revoked_reason = reason; data cleared to {} when clear_data), records one revoked audit event per session with detail {"reason": reason} (preceded, when reason is reuse_detected, by a reuse_detected event whose detail adds the chain: presented_version, current_version, rotated_at, grace_until, login_ip and ip = presenter_ip, each when known), and returns the ids it revoked, in id order. With owners, only sessions whose owner_key is one of them. Already revoked, unknown, NULL or repeated ids are skipped. One statement per session by primary key, in id order, so a call reaches only the rows (and, on a table partitioned by id, the parts) of the sessions it names. Their live streams close on every instance (trigger sessions_notify_revoked). reason must be one of sessions_revoked_reason_known. Every revocation of the service and of the functions latchkey_revoke_owner, latchkey_revoke_session and latchkey_revoke_user_sessions goes through it.';
