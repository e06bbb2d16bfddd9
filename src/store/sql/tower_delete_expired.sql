-- One batch of ExpiredDeletion for the tower-sessions store: expired stateful rows, oldest
-- first, through sessions_expires_at_idx; rows locked by another purge are skipped, so two
-- purges at once neither block each other nor count a row twice.
WITH doomed AS (
    SELECT id
    FROM sessions
    WHERE expires_at <= now() AND kind = 'stateful'
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), del AS (
    DELETE FROM sessions
    WHERE id = ANY (ARRAY(SELECT id FROM doomed))
    RETURNING id, owner_key
), ev AS (
    INSERT INTO session_events (session_id, owner_key, event, detail)
    SELECT id, owner_key, 'expired', '{"by": "tower_sessions_store"}'::jsonb
    FROM del
)
SELECT count(*) AS "deleted!" FROM del
