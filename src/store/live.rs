//! Reads behind live session streams: the re-validation of one session.

use uuid::Uuid;

use super::{Store, StoreResult};

/// The NOTIFY channel on which the database publishes session changes (see the migration
/// `session_notify`): a JSON object `{event, id, owner_key, reason | version}`.
pub const SESSIONS_CHANNEL: &str = "latchkey_sessions";

/// Whether a session may keep streaming, judged on the database clock.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveStatus {
    /// Owner of the session.
    pub owner_key: String,
    /// Why it was revoked, if it was.
    pub revoked_reason: Option<String>,
    /// `expires_at <= now()` (the idle expiry never passes the absolute one).
    pub expired: bool,
    /// Seconds until the session expires (negative once expired).
    pub expires_in_secs: f64,
    /// Rotation counter.
    pub version: i64,
}

impl Store {
    /// The liveness of one session, or `None` when the row no longer exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn live_status(&self, id: Uuid) -> StoreResult<Option<LiveStatus>> {
        let row = sqlx::query_as!(
            LiveStatus,
            r#"
            SELECT owner_key, revoked_reason,
                   expires_at <= now() AS "expired!",
                   extract(epoch FROM expires_at - now())::float8 AS "expires_in_secs!",
                   version
            FROM sessions WHERE id = $1
            "#,
            id,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }
}
