-- A disabled user keeps nothing: disabling an account revokes every live session it owns
-- directly (user:<id>) and every live session of its API keys (apikey:<key id> of the keys
-- whose owner_key is user:<id>), reason user_disabled, whoever disables it: the CLI, the
-- function latchkey_disable_user(), or a DBA's plain UPDATE users SET disabled = true (the
-- trigger below). Each revocation records its revoked audit event and, through the trigger
-- sessions_notify_revoked, closes the session's live streams on every instance.
--
-- New sessions of a user or of an API key are inserted by the application with a FOR SHARE
-- lock on the user row (and on the key row), and only when the user is not disabled and the
-- key not revoked. A disable takes the user row's exclusive lock, so it waits for a login
-- that passed that check to commit and then revokes its session too, or the login waits for
-- the disable and inserts nothing.

CREATE FUNCTION latchkey_revoke_user_sessions(user_id uuid, reason text DEFAULT 'user_disabled')
RETURNS integer
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE sessions SET revoked_at = now(), revoked_reason = reason
        WHERE owner_key = ANY (ARRAY(
                  SELECT 'user:' || user_id::text
                  UNION ALL
                  SELECT 'apikey:' || k.id::text FROM api_keys AS k
                  WHERE k.owner_key = 'user:' || user_id::text))
          AND revoked_at IS NULL
        RETURNING id, owner_key
    ), ev AS (
        INSERT INTO session_events (session_id, owner_key, event, detail)
        SELECT id, owner_key, 'revoked', jsonb_build_object('reason', reason) FROM upd
    )
    SELECT count(*)::integer FROM upd;
$$;
COMMENT ON FUNCTION latchkey_revoke_user_sessions(uuid, text) IS 'Revokes every live session of one user: those owned by user:<id> and those of each of its API keys (apikey:<key id>, keys with owner_key = user:<id>), records a revoked audit event for each and returns how many. Their live streams close on every instance (trigger sessions_notify_revoked). Does not disable the account: new logins stay possible (see latchkey_disable_user). reason must be one of sessions_revoked_reason_known (default user_disabled).';

CREATE FUNCTION latchkey_user_disabled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM latchkey_revoke_user_sessions(NEW.id, 'user_disabled');
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION latchkey_user_disabled() IS 'Trigger function of users_disabled_revoke_sessions: revokes every live session of the user and of its API keys (latchkey_revoke_user_sessions, reason user_disabled).';

CREATE TRIGGER users_disabled_revoke_sessions
    AFTER UPDATE OF disabled ON users
    FOR EACH ROW
    WHEN (NEW.disabled)
    EXECUTE FUNCTION latchkey_user_disabled();
COMMENT ON TRIGGER users_disabled_revoke_sessions ON users IS 'Whenever disabled is set to true (latchkey user disable, latchkey_disable_user(), or a plain UPDATE users SET disabled = true), revokes every live session of the user and of its API keys, reason user_disabled, with their revoked audit events; their live streams close on every instance. Setting it again sweeps again (finds nothing new).';

CREATE FUNCTION latchkey_disable_user(user_email text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    uid uuid;
    revoked integer;
BEGIN
    SELECT u.id INTO uid FROM users AS u WHERE lower(u.email) = lower(user_email) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    revoked := latchkey_revoke_user_sessions(uid, 'user_disabled');
    UPDATE users SET disabled = true, updated_at = now() WHERE id = uid;
    RETURN revoked;
END;
$$;
COMMENT ON FUNCTION latchkey_disable_user(text) IS 'Disables the account with this email (case-insensitive) and revokes every live session of it and of its API keys (reason user_disabled); returns how many sessions were revoked, NULL when there is no such account. Password and API-key logins are refused until latchkey_enable_user. What latchkey user disable runs.';

CREATE FUNCTION latchkey_enable_user(user_email text) RETURNS boolean
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE users SET disabled = false, updated_at = now()
        WHERE lower(email) = lower(user_email)
        RETURNING id
    )
    SELECT count(*) > 0 FROM upd;
$$;
COMMENT ON FUNCTION latchkey_enable_user(text) IS 'Enables the account with this email (case-insensitive) again: password logins and logins with its unrevoked API keys work again; sessions revoked while it was disabled stay revoked. Returns false when there is no such account. What latchkey user enable runs.';
