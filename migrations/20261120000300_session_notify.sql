-- Live session streams: every change that ends a session or rotates its token is published
-- from the database itself with NOTIFY on the channel latchkey_sessions, so each service
-- instance (LISTEN) closes or updates its streams whoever made the change: the API, the CLI,
-- reuse detection, or a DBA with psql. Payloads carry ids and reasons, never a secret.

CREATE FUNCTION latchkey_notify_session_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('latchkey_sessions', json_build_object(
            'event', 'revoked',
            'id', OLD.id,
            'owner_key', OLD.owner_key,
            'reason', CASE WHEN OLD.expires_at <= now() THEN 'expired' ELSE 'deleted' END
        )::text);
        RETURN OLD;
    ELSIF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM pg_notify('latchkey_sessions', json_build_object(
            'event', 'revoked',
            'id', NEW.id,
            'owner_key', NEW.owner_key,
            'reason', NEW.revoked_reason
        )::text);
    ELSIF NEW.version <> OLD.version THEN
        PERFORM pg_notify('latchkey_sessions', json_build_object(
            'event', 'refreshed',
            'id', NEW.id,
            'owner_key', NEW.owner_key,
            'version', NEW.version
        )::text);
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION latchkey_notify_session_change() IS 'Trigger function: publishes on NOTIFY channel latchkey_sessions a JSON object {event, id, owner_key, reason|version} when a session is revoked (revoked_at set), deleted (reason expired or deleted) or rotated (version raised). Never includes a token or hash.';

CREATE TRIGGER sessions_notify_revoked
    AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION latchkey_notify_session_change();
COMMENT ON TRIGGER sessions_notify_revoked ON sessions IS 'Publishes a revocation (NOTIFY latchkey_sessions, event revoked) so every instance closes the session''s live streams within a second, whoever revoked it (API, CLI, reuse detection, SQL).';

CREATE TRIGGER sessions_notify_refreshed
    AFTER UPDATE OF version ON sessions
    FOR EACH ROW
    WHEN (NEW.version <> OLD.version AND NEW.token_hash <> OLD.token_hash AND NEW.revoked_at IS NULL)
    EXECUTE FUNCTION latchkey_notify_session_change();
COMMENT ON TRIGGER sessions_notify_refreshed ON sessions IS 'Publishes a token rotation (NOTIFY latchkey_sessions, event refreshed, with the new version and no token) to the session''s live streams. A version bump that keeps the token (a tower-sessions data save) publishes nothing.';

CREATE TRIGGER sessions_notify_deleted
    AFTER DELETE ON sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())
    EXECUTE FUNCTION latchkey_notify_session_change();
COMMENT ON TRIGGER sessions_notify_deleted ON sessions IS 'Publishes the deletion of a live session (deleted by hand or through the tower-sessions store) so its live streams end too. Purging expired rows publishes nothing: their streams already ended at expiry, and a purge of a million rows must not flood every listener.';

-- The documented way for an operator to log an owner out everywhere from SQL.
CREATE FUNCTION latchkey_revoke_owner(owner text, reason text DEFAULT 'admin') RETURNS integer
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE sessions SET revoked_at = now(), revoked_reason = reason
        WHERE owner_key = owner AND revoked_at IS NULL
        RETURNING id, owner_key
    ), ev AS (
        INSERT INTO session_events (session_id, owner_key, event, detail)
        SELECT id, owner_key, 'revoked', jsonb_build_object('reason', reason) FROM upd
    )
    SELECT count(*)::integer FROM upd;
$$;
COMMENT ON FUNCTION latchkey_revoke_owner(text, text) IS 'Revokes every live session of one owner (e.g. SELECT latchkey_revoke_owner(''user:<uuid>'');), records a revoked audit event for each and returns how many. The trigger sessions_notify_revoked closes their live streams on every instance. reason must be one of sessions_revoked_reason_known (default admin).';

CREATE FUNCTION latchkey_revoke_session(session uuid, reason text DEFAULT 'admin') RETURNS boolean
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE sessions SET revoked_at = now(), revoked_reason = reason
        WHERE id = session AND revoked_at IS NULL
        RETURNING id, owner_key
    ), ev AS (
        INSERT INTO session_events (session_id, owner_key, event, detail)
        SELECT id, owner_key, 'revoked', jsonb_build_object('reason', reason) FROM upd
    )
    SELECT count(*) = 1 FROM upd;
$$;
COMMENT ON FUNCTION latchkey_revoke_session(uuid, text) IS 'Revokes one session by id if it is live, records a revoked audit event and returns whether it did. Its live streams close on every instance (trigger sessions_notify_revoked).';
