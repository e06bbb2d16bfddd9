//! The Postgres session store: every SQL statement of latchkey lives under this module.
//!
//! All hot statements address one row by primary key; rotation is a compare-and-swap on
//! `version`, so no statement needs a cross-row transaction.

mod api_keys;
pub mod coalesce;
mod expire;
mod listing;
mod live;
mod login_session;
mod owner;
mod pace;
mod revoke;
mod sessions;
mod throttle;
mod tower;
mod users;
mod vacuum;

pub use api_keys::{ApiKeyRecord, ApiKeySummary};
pub use coalesce::Coalescing;
pub use expire::{
    ExpireCounts, ExpireCursor, ExpirePolicy, ExpireReport, PurgeEnd, MAX_EXPIRE_BATCH,
};
pub use live::{LiveStatus, SessionState, SESSIONS_CHANNEL};
pub use login_session::LoginSessionStore;
pub use owner::{EventKind, OwnerKey, OwnerKeyError, RevokeReason, RevokeReasonError};
pub use pace::{
    PaceStats, Pacer, Signals, CALIBRATION_PROBES, MAX_DOUBLINGS, MAX_PACED_REST,
    MAX_TAIL_OVER_MEDIAN, MIN_BASELINE, PROBE_EVERY, PURGE_PROBE_LOCK, QUIET_PER_SLOW,
    START_DOUBLINGS,
};
#[doc(hidden)]
pub use sessions::{rotate_sql, FIND_SESSION_SQL, ROTATE_AUDITED_SQL, ROTATE_SQL};
pub use sessions::{NewSession, RotatePolicy, Rotation, SessionRecord, SessionSummary};
pub use throttle::{Backoff, FailureKind, ThrottleKey};
pub use tower::{bind_owner, bound_owner, unbind_owner, Owner, PgSessionStore, OWNER_FIELD};
pub use users::{UserRecord, UserSummary, EMAIL_UNIQUE};
pub use vacuum::{AutovacuumHold, HoldError, VacuumCost};

use std::sync::Arc;

use crate::db::Pool;
#[cfg(doc)]
use sqlx::PgPool;

/// A failure of the database, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; retrying later may work (503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A unique constraint was violated; carries the constraint name.
    #[error("constraint {0} violated")]
    Conflict(String),
    /// A new session's owner may not hold one: a disabled or unknown user, or a revoked or
    /// unknown API key. Nothing was inserted.
    #[error("the session owner is disabled or revoked")]
    OwnerInactive,
    /// Anything else: a bug or a schema mismatch.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Unavailable(e),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // 08: connection exception, 53: insufficient resources,
                // 57P0x: operator intervention (shutdown), 40001/40P01: retryable,
                // 57014/55P03: statement_timeout or lock_timeout (a stuck statement),
                // 25006: a write on a node in recovery (the primary just moved).
                if code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P0")
                    || code == "40001"
                    || code == "40P01"
                    || code == "57014"
                    || code == "55P03"
                    || code == "25006"
                {
                    Self::Unavailable(e)
                } else if code == "23505" {
                    Self::Conflict(db.constraint().unwrap_or_default().to_owned())
                } else {
                    Self::Other(e)
                }
            }
            _ => Self::Other(e),
        }
    }
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Handle on the database: cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// The coalesced [`Store::find_session`] reads, when built [`Store::with_coalescing`].
    reads: Option<Arc<coalesce::SessionReads>>,
}

impl Store {
    /// Wraps a pool whose database has been migrated with [`crate::db::migrate`]: a [`PgPool`]
    /// (direct) or a [`Pool`] (direct or through a transaction-mode pooler). Every method runs
    /// its own statement.
    pub fn new(pool: impl Into<Pool>) -> Self {
        Self {
            pool: pool.into(),
            reads: None,
        }
    }

    /// The same store with its session reads ([`Store::find_session`]) coalesced per
    /// `settings` (the service uses [`Coalescing::READS`]): reads that arrive while the
    /// running statements are busy share the next one. [`Coalescing::OFF`] removes it.
    pub fn with_coalescing(mut self, settings: Coalescing) -> Self {
        self.reads = (!settings.is_off())
            .then(|| Arc::new(coalesce::SessionReads::new(self.pool.clone(), settings)));
        self
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// One round trip to check the database answers (for `/readyz`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query_scalar!("SELECT 1 AS \"one!\"")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }
}
