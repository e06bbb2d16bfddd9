//! A session's liveness: the one rule that classifies a session as active, expired or
//! revoked ([`SessionState`]), and the read behind live session streams that re-validates
//! one session ([`Store::live_status`]).
//!
//! Every Rust path that asks whether a session is live derives the answer from
//! [`SessionState::of`]: the protocol's checks (`load_checked`, the bearer check),
//! [`SessionRecord::summary`] and the re-validation of event streams. In SQL the rule is
//! written once, in the `session_overview` view (in `migrations/`), which must say the same;
//! [`Store::list_sessions`] reads its `state` column from that view.

use uuid::Uuid;

use super::{SessionRecord, Store, StoreResult};

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
            FROM latchkey.sessions WHERE id = $1
            "#,
            id,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }
}

impl Store {
    /// [`Store::live_status`] for a live stream of the session, which first marks the session
    /// as streamed (`sessions.streamed_until`, so its rotations publish `refreshed`) until
    /// `hold_secs` from now, when less than `renew_below_secs` of the mark is left. The status
    /// is read after the mark: a rotation that commits after this statement notifies, and one
    /// that committed before it shows in the version read here.
    ///
    /// A stream calls this when it opens and then on each re-validation, at most
    /// `hold_secs - renew_below_secs` apart, so the mark never lapses while it is open and
    /// lapses by itself within `hold_secs` when the instance holding it dies. The mark is
    /// written about once per `hold_secs - renew_below_secs`, however often this is called,
    /// and only on a live session.
    ///
    /// # Errors
    /// Database failures.
    pub async fn stream_status(
        &self,
        id: Uuid,
        hold_secs: f64,
        renew_below_secs: f64,
    ) -> StoreResult<Option<LiveStatus>> {
        // When the mark is written, the row is read from the UPDATE (the newest version,
        // which it has locked); otherwise from the statement's snapshot, like live_status.
        let row = sqlx::query_as!(
            LiveStatus,
            r#"
            WITH mark AS (
                UPDATE latchkey.sessions
                SET streamed_until = now() + make_interval(secs => $2)
                WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()
                  AND (streamed_until IS NULL
                       OR streamed_until < now() + make_interval(secs => $3))
                RETURNING owner_key, revoked_reason, expires_at, version
            )
            SELECT owner_key AS "owner_key!", revoked_reason,
                   expires_at <= now() AS "expired!",
                   extract(epoch FROM expires_at - now())::float8 AS "expires_in_secs!",
                   version AS "version!"
            FROM mark
            UNION ALL
            SELECT owner_key, revoked_reason, expires_at <= now(),
                   extract(epoch FROM expires_at - now())::float8, version
            FROM latchkey.sessions WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM mark)
            "#,
            id,
            hold_secs,
            renew_below_secs,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }
}

/// Where a session stands, judged on the database clock.
///
/// The rule: a revoked session is `Revoked`, whether or not it has expired since;
/// otherwise a session whose (idle or absolute) expiry has passed is `Expired`; otherwise it
/// is `Active`. In SQL: `CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <=
/// now() THEN 'expired' ELSE 'active' END`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Neither revoked nor expired: its tokens work.
    Active,
    /// Not revoked, but its expiry has passed.
    Expired,
    /// Revoked (logout, reuse, disable, …), expired or not.
    Revoked,
}

impl SessionState {
    /// The rule itself: revoked before expired, otherwise active.
    pub fn of(revoked: bool, expired: bool) -> Self {
        if revoked {
            Self::Revoked
        } else if expired {
            Self::Expired
        } else {
            Self::Active
        }
    }

    /// The lowercase name, as in the API, the CLI and `session_overview.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

super::owner::display_as_str!(SessionState);

impl SessionRecord {
    /// The state of this row ([`SessionState::of`] its `revoked_at` and `expired`).
    pub fn state(&self) -> SessionState {
        SessionState::of(self.revoked_at.is_some(), self.expired)
    }
}

impl LiveStatus {
    /// The state of this row ([`SessionState::of`] its `revoked_reason` and `expired`; the
    /// constraint `sessions_revocation_complete` sets a reason exactly when `revoked_at` is set).
    pub fn state(&self) -> SessionState {
        SessionState::of(self.revoked_reason.is_some(), self.expired)
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState;

    #[test]
    fn revoked_wins_over_expired_and_expired_over_active() {
        let all = [(false, false), (false, true), (true, false), (true, true)];
        let states: Vec<&str> = all
            .iter()
            .map(|&(revoked, expired)| SessionState::of(revoked, expired).as_str())
            .collect();
        assert_eq!(states, ["active", "expired", "revoked", "revoked"]);
    }
}
