//! The listing of sessions for their owner or an operator: one statement for one owner and
//! for all, read from the DBA view `session_overview`, which is thus the single source of the
//! `state` rule in SQL (the rule of [`SessionState::of`](super::SessionState::of)).

use super::{OwnerKey, SessionSummary, Store, StoreResult};
use crate::SessionKind;

impl Store {
    /// Sessions of one owner (or all), newest first, at most 1000, without any secret
    /// material.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_sessions(
        &self,
        owner_key: Option<&OwnerKey>,
    ) -> StoreResult<Vec<SessionSummary>> {
        // One statement for both cases, whose plan stays good when PostgreSQL switches a
        // pooled connection's prepared statement to its generic plan. Measured with
        // `SET plan_cache_mode = force_generic_plan` on 200k sessions (20k owners, 10 each):
        // * `WHERE ($1 IS NULL OR owner_key = $1)`: Parallel Seq Scan of all 200k rows for
        //   one owner (filter `$1 IS NULL OR owner_key = $1`).
        // * the same UNION ALL without the inner LIMIT: one owner by sessions_owner_key_idx,
        //   but under a Gather that starts two workers for nothing (15 ms a call, not 0.7).
        // * this one: one owner reads sessions_owner_key_idx (Bitmap Index Scan) and the
        //   second branch is "never executed" (One-Time Filter: $1 IS NULL above its Gather
        //   Merge, so no worker starts), 0.7 ms a call as the former per-owner statement;
        //   all: the first branch finds nothing by the index, the second is the former
        //   statement's top-N sort over a parallel seq scan (there is no index on
        //   created_at alone). With custom plans (`auto`) both cases plan to just their branch.
        let rows = sqlx::query_as!(
            SessionSummary,
            r#"
            SELECT o.session_id AS "session_id!", o.kind AS "kind!: SessionKind",
                   o.owner_key AS "owner_key!: OwnerKey", o.created_at AS "created_at!",
                   o.last_used_at AS "last_used_at!", o.idle_expires_at AS "expires_at!",
                   o.absolute_expires_at AS "absolute_expires_at!", o.revoked_at,
                   o.revoked_reason, o.state AS "state!", o.user_agent, host(o.ip) AS ip
            FROM (SELECT * FROM latchkey.session_overview WHERE owner_key = $1
                  UNION ALL
                  SELECT * FROM (SELECT * FROM latchkey.session_overview
                                 ORDER BY created_at DESC LIMIT 1000) AS newest
                  WHERE $1::text IS NULL) AS o
            ORDER BY o.created_at DESC
            LIMIT 1000
            "#,
            owner_key as _,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
