//! Revocations of sessions by the service. Each method only chooses the sessions; the row
//! change (`revoked_at`, `revoked_reason`) and the audit events are written by the SQL function
//! `latchkey_revoke` (migration `revoke_function`), the one that `latchkey_revoke_owner`,
//! `latchkey_revoke_session`, `latchkey_revoke_user_sessions` and so the disabling of a user
//! call too. The NOTIFY follows from the trigger `sessions_notify_revoked`.
//!
//! Under READ COMMITTED the function's `UPDATE` re-checks `revoked_at IS NULL` (and the owner,
//! when one is passed) on the newest version of each row: of two concurrent revocations of a
//! session exactly one returns it, and a session whose owner changed in between (a
//! tower-sessions save binding another owner) is not revoked on behalf of the old one.

use std::net::IpAddr;

use uuid::Uuid;

use super::{OwnerKey, RevokeReason, Store, StoreResult};

impl Store {
    /// Revokes one session (if not already revoked) and records its `revoked` event; on
    /// [`RevokeReason::ReuseDetected`] a `reuse_detected` event is recorded as well (just
    /// before it, with the same detail). Returns whether this call revoked it.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke(&self, id: Uuid, reason: RevokeReason) -> StoreResult<bool> {
        self.revoke_one(id, None, reason).await
    }

    /// Revokes a session whose rotated secret came back after its grace window (reason
    /// `reuse_detected`), recording `reuse_detected` and `revoked`. The `reuse_detected` event
    /// carries the chain an investigation needs: `presented_version` (the version the reused
    /// secret belonged to), `current_version`, `rotated_at` (when the presented secret was
    /// replaced), `grace_until` (when it stopped being accepted), `login_ip` and `ip` (the
    /// presenter's address, when known). Returns whether this call revoked it.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_reused(&self, id: Uuid, presenter_ip: Option<IpAddr>) -> StoreResult<bool> {
        let reason = RevokeReason::ReuseDetected;
        let revoked = sqlx::query_scalar!(
            r#"
            SELECT r.id AS "id!"
            FROM latchkey.latchkey_revoke(ARRAY[$1::uuid], $2, false, NULL, $3) AS r(id)
            "#,
            id,
            reason as _,
            presenter_ip.map(|ip| ip.to_string()),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(revoked.is_some())
    }

    /// Revokes one session only if it belongs to `owner_key`. Returns `false` for a session
    /// that does not exist, is not theirs, or was already revoked — the caller cannot tell
    /// which, so ids cannot be probed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_owned(
        &self,
        owner_key: &OwnerKey,
        id: Uuid,
        reason: RevokeReason,
    ) -> StoreResult<bool> {
        self.revoke_one(id, Some(owner_key), reason).await
    }

    /// One session, of `owner_key` if given: whether this call revoked it. The owner is
    /// checked by the function's UPDATE itself (its `owners` argument), on the row it revokes.
    async fn revoke_one(
        &self,
        id: Uuid,
        owner_key: Option<&OwnerKey>,
        reason: RevokeReason,
    ) -> StoreResult<bool> {
        let revoked = sqlx::query_scalar!(
            r#"
            SELECT r.id AS "id!"
            FROM latchkey.latchkey_revoke(ARRAY[$1::uuid], $3, false,
                                 CASE WHEN $2::text IS NOT NULL THEN ARRAY[$2::text] END) AS r(id)
            "#,
            id,
            owner_key as _,
            reason as _,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(revoked.is_some())
    }

    /// Revokes every live session of `owner_key`. Returns the revoked ids.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_owner(
        &self,
        owner_key: &OwnerKey,
        reason: RevokeReason,
    ) -> StoreResult<Vec<Uuid>> {
        self.revoke_owner_except(owner_key, None, reason).await
    }

    /// Revokes every live session of `owner_key` except `keep` (the caller's own, when it
    /// signs out its other sessions or changes its password). Returns the revoked ids.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_owner_except(
        &self,
        owner_key: &OwnerKey,
        keep: Option<Uuid>,
        reason: RevokeReason,
    ) -> StoreResult<Vec<Uuid>> {
        // The ids through sessions_owner_key_idx; the function re-checks the owner per row.
        let ids = sqlx::query_scalar!(
            r#"
            SELECT r.id AS "id!"
            FROM latchkey.latchkey_revoke(
                ARRAY(SELECT s.id FROM latchkey.sessions AS s
                      WHERE s.owner_key = $1 AND s.revoked_at IS NULL
                        AND s.id IS DISTINCT FROM $3),
                $2, false, ARRAY[$1::text]) AS r(id)
            "#,
            owner_key as _,
            reason as _,
            keep,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}
