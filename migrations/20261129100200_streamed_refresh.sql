-- A rotation publishes `refreshed` only when the session has a live stream open somewhere.
--
-- A transaction that NOTIFYs takes a cluster-wide lock at commit and holds it until its
-- commit record is flushed, so refreshing transactions that each notified could not share a
-- WAL flush: the notification alone cost 1.45-1.7x on every refresh, although almost no
-- session has a stream open. Streams now say that they listen: each stream sets
-- sessions.streamed_until when it opens and renews it while it stays open (on its periodic
-- re-validation), and the trigger's WHEN reads it. A stream on an instance that died stops
-- renewing it and the flag lapses by itself. Revocations and deletions keep notifying always.
--
-- This migration changes the signature of latchkey_revoke (a new argument, presenter_ip):
-- it drops and creates the function again, so grants made on it by hand must be made again.

ALTER TABLE sessions ADD COLUMN streamed_until timestamptz;
COMMENT ON COLUMN sessions.streamed_until IS 'Until when a live event stream (GET /auth/events) of this session is known to be open on some instance; set by the stream when it opens and renewed while it stays open, so it lapses by itself when the instance holding the stream dies. A rotation publishes refreshed (NOTIFY) only while it is in the future. NULL: no stream was ever opened. Not indexed, so renewing it is a HOT update.';

CREATE OR REPLACE TRIGGER sessions_notify_refreshed
    AFTER UPDATE OF version ON sessions
    FOR EACH ROW
    WHEN (NEW.version <> OLD.version AND NEW.token_hash <> OLD.token_hash AND NEW.revoked_at IS NULL
          AND NEW.streamed_until > now())
    EXECUTE FUNCTION latchkey_notify_session_change();
COMMENT ON TRIGGER sessions_notify_refreshed ON sessions IS 'Publishes a token rotation (NOTIFY latchkey_sessions, event refreshed, with the new version and no token) to the session''s live streams, only while one is open (streamed_until in the future): a NOTIFY serialises the commits of the transactions that send it, so rotations of sessions nobody streams publish nothing. A version bump that keeps the token (a tower-sessions data save) publishes nothing.';

-- The chain a reuse investigation needs, now that a rotation records no event by default:
-- the reuse_detected event carries the version the reused secret belonged to, the current
-- version, when that secret was replaced and until when it was accepted, the login address
-- and the presenter's. The presenter's address is a new argument, so the function is dropped
-- and created again: grants made on latchkey_revoke by hand must be made again.
DROP FUNCTION latchkey_revoke(uuid[], text, boolean, text[]);
CREATE FUNCTION latchkey_revoke(
    session_ids uuid[],
    reason text,
    clear_data boolean DEFAULT false,
    owners text[] DEFAULT NULL,
    presenter_ip text DEFAULT NULL
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
        RETURNING id, owner_key, version, refreshed_at, prev_valid_until, ip
    ), ev AS (
        -- One revoked event per session with detail {"reason": …}, preceded by a
        -- reuse_detected event when that is the reason, whose detail adds the chain.
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
        ORDER BY upd.id, e.ord
    )
    SELECT id FROM upd;
$$;
COMMENT ON FUNCTION latchkey_revoke(uuid[], text, boolean, text[], text) IS 'The one revocation: revokes the live sessions among session_ids (revoked_at = now(), revoked_reason = reason; data cleared to {} when clear_data), records one revoked audit event per session with detail {"reason": reason} (preceded, when reason is reuse_detected, by a reuse_detected event whose detail adds the chain: presented_version, current_version, rotated_at, grace_until, login_ip and ip = presenter_ip, each when known), and returns the ids it revoked. With owners, only sessions whose owner_key is one of them. Already revoked or unknown ids are skipped. Their live streams close on every instance (trigger sessions_notify_revoked). reason must be one of sessions_revoked_reason_known. Every revocation of the service and of the functions latchkey_revoke_owner, latchkey_revoke_session and latchkey_revoke_user_sessions goes through it.';
