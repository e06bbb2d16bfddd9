-- One revocation for every path: latchkey_revoke() sets revoked_at and revoked_reason on
-- live sessions and records their audit events in one statement. The service (Store::revoke,
-- revoke_owned, revoke_owner, the tower-sessions store's delete) and the SQL functions below
-- (and through them the users_disabled_revoke_sessions trigger) only choose which sessions;
-- the row change and the events are written here and nowhere else. The NOTIFY stays with the
-- trigger sessions_notify_revoked, which follows any UPDATE that sets revoked_at.
--
-- The three older functions keep their signatures, defaults and return values (CREATE OR
-- REPLACE, so grants made on them survive).

CREATE FUNCTION latchkey_revoke(
    session_ids uuid[],
    reason text,
    clear_data boolean DEFAULT false,
    owners text[] DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE sql AS $$
    -- The sessions are found by primary key (sessions_pkey, id = ANY). Under READ COMMITTED
    -- the UPDATE re-checks revoked_at IS NULL (and the owner, when given) on the newest row
    -- version: of two concurrent revocations of a session exactly one revokes it, and a
    -- session whose owner changed meanwhile (a tower-sessions save binding another owner) is
    -- left alone.
    WITH upd AS (
        UPDATE sessions
        SET revoked_at = now(),
            revoked_reason = reason,
            data = CASE WHEN clear_data THEN '{}'::jsonb ELSE data END
        WHERE id = ANY (session_ids)
          AND revoked_at IS NULL
          AND (owners IS NULL OR owner_key = ANY (owners))
        RETURNING id, owner_key
    ), ev AS (
        -- One revoked event per session, preceded by a reuse_detected event when that is the
        -- reason; both with detail {"reason": …}.
        INSERT INTO session_events (session_id, owner_key, event, detail)
        SELECT upd.id, upd.owner_key, e.kind, jsonb_build_object('reason', reason)
        FROM upd
        CROSS JOIN (VALUES (1, 'reuse_detected'::session_event_kind),
                           (2, 'revoked'::session_event_kind)) AS e(ord, kind)
        WHERE e.kind = 'revoked'::session_event_kind OR reason = 'reuse_detected'
        ORDER BY upd.id, e.ord
    )
    SELECT id FROM upd;
$$;
COMMENT ON FUNCTION latchkey_revoke(uuid[], text, boolean, text[]) IS 'The one revocation: revokes the live sessions among session_ids (revoked_at = now(), revoked_reason = reason; data cleared to {} when clear_data), records one revoked audit event per session with detail {"reason": reason} (preceded by a reuse_detected event with the same detail when reason is reuse_detected), and returns the ids it revoked. With owners, only sessions whose owner_key is one of them. Already revoked or unknown ids are skipped. Their live streams close on every instance (trigger sessions_notify_revoked). reason must be one of sessions_revoked_reason_known. Every revocation of the service and of the functions latchkey_revoke_owner, latchkey_revoke_session and latchkey_revoke_user_sessions goes through it.';

CREATE OR REPLACE FUNCTION latchkey_revoke_owner(owner text, reason text DEFAULT 'admin') RETURNS integer
LANGUAGE sql AS $$
    SELECT count(*)::integer
    FROM latchkey_revoke(
        ARRAY(SELECT s.id FROM sessions AS s WHERE s.owner_key = owner AND s.revoked_at IS NULL),
        reason, false, ARRAY[owner]);
$$;
COMMENT ON FUNCTION latchkey_revoke_owner(text, text) IS 'Revokes every live session of one owner (e.g. SELECT latchkey_revoke_owner(''user:<uuid>'');) through latchkey_revoke, which records a revoked audit event for each; returns how many. The trigger sessions_notify_revoked closes their live streams on every instance. reason must be one of sessions_revoked_reason_known (default admin).';

CREATE OR REPLACE FUNCTION latchkey_revoke_session(session uuid, reason text DEFAULT 'admin') RETURNS boolean
LANGUAGE sql AS $$
    SELECT count(*) = 1 FROM latchkey_revoke(ARRAY[session], reason);
$$;
COMMENT ON FUNCTION latchkey_revoke_session(uuid, text) IS 'Revokes one session by id if it is live (through latchkey_revoke, which records a revoked audit event) and returns whether it did. Its live streams close on every instance (trigger sessions_notify_revoked).';

CREATE OR REPLACE FUNCTION latchkey_revoke_user_sessions(user_id uuid, reason text DEFAULT 'user_disabled')
RETURNS integer
LANGUAGE sql AS $$
    WITH o AS MATERIALIZED (
        SELECT ARRAY(
            SELECT 'user:' || user_id::text
            UNION ALL
            SELECT 'apikey:' || k.id::text FROM api_keys AS k
            WHERE k.owner_key = 'user:' || user_id::text) AS owners
    )
    SELECT count(*)::integer
    FROM o, latchkey_revoke(
        ARRAY(SELECT s.id FROM sessions AS s
              WHERE s.owner_key = ANY (o.owners) AND s.revoked_at IS NULL),
        reason, false, o.owners);
$$;
COMMENT ON FUNCTION latchkey_revoke_user_sessions(uuid, text) IS 'Revokes every live session of one user: those owned by user:<id> and those of each of its API keys (apikey:<key id>, keys with owner_key = user:<id>), through latchkey_revoke, which records a revoked audit event for each; returns how many. Their live streams close on every instance (trigger sessions_notify_revoked). Does not disable the account: new logins stay possible (see latchkey_disable_user). reason must be one of sessions_revoked_reason_known (default user_disabled).';
