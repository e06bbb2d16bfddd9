//! Autovacuum set apart during a large purge, and one gentle `VACUUM` after it.
//!
//! A purge of millions of expired sessions makes autovacuum pass over `sessions` again and
//! again (at the migrations' 2%, once per 400k rows deleted from a 20M-row table), and each
//! pass reads every index whole: on a slow disk those passes, not the purge, push the
//! traffic's tail past twice its idle value (`docs/BENCHMARKS.md`, Expiry). With
//! [`AutovacuumHold`], `latchkey expire --vacuum-after` keeps autovacuum off the table while
//! it purges and then runs one `VACUUM (ANALYZE, TRUNCATE false)` over everything it deleted,
//! throttled by [`VacuumCost`].
//!
//! The hold is a lock, not a setting: a transaction on a connection of its own holds
//! `SHARE UPDATE EXCLUSIVE` on `sessions`, which autovacuum needs and, finding it taken,
//! skips the table (an anti-wraparound pass waits for it instead). The traffic and the purge
//! take `ROW EXCLUSIVE`, which it does not block. Nothing is written to the catalog, so a
//! purge that dies leaves nothing to undo: its connection closes, the transaction aborts and
//! the lock goes with it. The transaction assigns no transaction id and holds no snapshot
//! between statements, so it does not hold back the vacuum horizon.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

/// The table the hold is on.
const SESSIONS: &str = "latchkey.sessions";

/// The cost settings of the `VACUUM` after the purge (`vacuum_cost_delay`,
/// `vacuum_cost_limit`, set on its own connection only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VacuumCost {
    /// Milliseconds the vacuum sleeps each time it has spent `limit` (0 = no throttle).
    pub delay_ms: u32,
    /// Cost units between two sleeps (1 to 10000).
    pub limit: u32,
}

impl Default for VacuumCost {
    /// 20 ms per 100 units: on a disk allowed 1,500 writes/s, one `VACUUM` after a 1M purge
    /// kept the refresh p99 within 1.3–1.5× its idle value (`docs/BENCHMARKS.md`, Expiry).
    fn default() -> Self {
        Self {
            delay_ms: 20,
            limit: 100,
        }
    }
}

/// Why autovacuum could not be set apart; nothing was purged.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The role may not `VACUUM` the table (PostgreSQL 15: only its owner, the database's
    /// owner or a superuser may), so the vacuum after the purge would do nothing.
    #[error("{role} may not VACUUM {SESSIONS}: run the purge as its owner (the role that ran the migrations), the database's owner or a superuser")]
    NotOwner {
        /// The role connected.
        role: String,
    },
    /// Another maintenance command (a `VACUUM`, `ANALYZE`, `CREATE INDEX CONCURRENTLY`, an
    /// anti-wraparound autovacuum) held the table for longer than the wait.
    #[error("{SESSIONS} stayed held by another maintenance command (VACUUM, ANALYZE, CREATE INDEX CONCURRENTLY) for {0:?}; try again when it ends")]
    Busy(Duration),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Autovacuum kept off `sessions` for as long as this lives (see the module's doc).
#[derive(Debug)]
pub struct AutovacuumHold {
    conn: PgConnection,
}

impl AutovacuumHold {
    /// Connects to `url` (straight to the server: the hold is one long transaction, and the
    /// `VACUUM` after it needs session settings) and takes the lock, waiting at most `wait`
    /// for another holder. A running autovacuum on the table is cancelled by the server after
    /// `deadlock_timeout` (1 s by default) of the wait; it logs that.
    ///
    /// # Errors
    /// [`HoldError::NotOwner`] when the role could not vacuum the table, [`HoldError::Busy`]
    /// when the wait ran out, [`HoldError::Database`] otherwise.
    pub async fn take(url: &str, wait: Duration) -> Result<Self, HoldError> {
        let mut conn = PgConnection::connect(url).await?;
        let (role, may): (String, bool) = sqlx::query_as(
            "SELECT current_user::text,
                    pg_has_role(c.relowner, 'USAGE')
                    OR pg_has_role(d.datdba, 'USAGE')
                    OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
             FROM pg_class c, pg_database d
             WHERE c.oid = $1::regclass AND d.datname = current_database()",
        )
        .bind(SESSIONS)
        .fetch_one(&mut conn)
        .await?;
        if !may {
            return Err(HoldError::NotOwner { role });
        }
        let millis = wait.as_millis().clamp(1, i32::MAX as u128);
        sqlx::raw_sql(&format!(
            "BEGIN;
             SET LOCAL lock_timeout = {millis};
             SET LOCAL statement_timeout = 0;
             SET LOCAL idle_in_transaction_session_timeout = 0;
             LOCK TABLE {SESSIONS} IN SHARE UPDATE EXCLUSIVE MODE;"
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => {
                HoldError::Busy(wait)
            }
            _ => HoldError::Database(e),
        })?;
        Ok(Self { conn })
    }

    /// Ends the hold and runs `VACUUM (ANALYZE, TRUNCATE false)` of `sessions` on the same
    /// connection at once, throttled by `cost`; returns how long the vacuum took. The
    /// connection is closed after, so its settings go with it.
    ///
    /// # Errors
    /// Database failures (the hold ends either way).
    pub async fn vacuum(mut self, cost: VacuumCost) -> Result<Duration, sqlx::Error> {
        sqlx::raw_sql("COMMIT").execute(&mut self.conn).await?;
        sqlx::raw_sql(&format!(
            "SET vacuum_cost_delay = '{}ms'; SET vacuum_cost_limit = {}",
            cost.delay_ms,
            cost.limit.clamp(1, 10_000)
        ))
        .execute(&mut self.conn)
        .await?;
        let began = Instant::now();
        // TRUNCATE false: giving the empty pages at the table's end back to the file system
        // takes an ACCESS EXCLUSIVE lock, which stops every refresh while the vacuum reads
        // those pages again (on a slow disk, seconds); new sessions fill them instead.
        sqlx::raw_sql(&format!("VACUUM (ANALYZE, TRUNCATE false) {SESSIONS}"))
            .execute(&mut self.conn)
            .await?;
        let took = began.elapsed();
        self.conn.close().await?;
        Ok(took)
    }
}
