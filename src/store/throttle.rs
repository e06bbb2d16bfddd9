//! Statements on `login_throttle` (failure counters with back-off) and `login_failures` (the
//! audit of failed logins). The policy (which keys, how many free failures) is the caller's.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{ExpirePolicy, Store, StoreResult};

/// One throttle counter to bump: its key and how many failures it allows before back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey {
    /// `login_throttle.account`: an account key, or `""` for the per-address counter.
    pub account: String,
    /// Failures allowed before the back-off starts.
    pub free: u32,
}

/// The back-off applied past the free failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Block after the first failure past the allowance (seconds); doubles with each further.
    pub base_secs: f64,
    /// Longest block (seconds).
    pub max_secs: f64,
    /// A counter restarts when this long has passed since its last failure and its block ended.
    pub window_secs: f64,
}

/// What failed, as recorded in `login_failures.kind` and labelled in
/// `latchkey_login_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Wrong email or password, or a disabled account.
    Password,
    /// Unknown, revoked or malformed API key.
    ApiKey,
    /// Refused by the throttle before any check: counted in the metrics only, never stored.
    Throttled,
}

impl FailureKind {
    /// The stored (and metrics label) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::ApiKey => "api_key",
            Self::Throttled => "throttled",
        }
    }
}

impl Store {
    /// Seconds until the latest `blocked_until` among the counters of `ip` named by
    /// `accounts`, or `None` when none of them is blocked now.
    ///
    /// # Errors
    /// Database failures.
    pub async fn throttle_blocked_for(
        &self,
        ip: &str,
        accounts: &[String],
    ) -> StoreResult<Option<f64>> {
        Ok(sqlx::query_scalar!(
            r#"
            SELECT max(EXTRACT(EPOCH FROM blocked_until - now()))::float8
            FROM latchkey.login_throttle
            WHERE ip = $1 AND account = ANY($2) AND blocked_until > now()
            "#,
            ip,
            accounts,
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Counts one failure against each key of `ip` (atomically per key, see the SQL function
    /// `latchkey_login_failed`) and records it in `login_failures`, in one statement.
    ///
    /// # Errors
    /// Database failures.
    pub async fn throttle_failed(
        &self,
        ip: &str,
        keys: &[ThrottleKey],
        backoff: &Backoff,
        audit_account: Option<&str>,
        kind: FailureKind,
    ) -> StoreResult<()> {
        let accounts: Vec<String> = keys.iter().map(|k| k.account.clone()).collect();
        let free: Vec<i32> = keys
            .iter()
            .map(|k| i32::try_from(k.free).unwrap_or(i32::MAX))
            .collect();
        sqlx::query_scalar!(
            r#"
            WITH audit AS (
                INSERT INTO latchkey.login_failures (account, ip, kind) VALUES ($6, $1, $7)
            )
            SELECT latchkey.latchkey_login_failed(k.account, $1, k.free, $4, $5, $8)
            FROM unnest($2::text[], $3::int[]) AS k(account, free)
            "#,
            ip,
            &accounts,
            &free,
            backoff.base_secs,
            backoff.max_secs,
            audit_account,
            kind.as_str(),
            backoff.window_secs,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the counter of `account` at `ip` (after a successful login).
    ///
    /// # Errors
    /// Database failures.
    pub async fn throttle_clear(&self, ip: &str, account: &str) -> StoreResult<()> {
        sqlx::query!(
            "DELETE FROM latchkey.login_throttle WHERE account = $1 AND ip = $2",
            account,
            ip
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes up to `batch` stale throttle counters and up to `batch` audited failures
    /// older than `before`; returns how many of each. Callers repeat until both are below
    /// `batch`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn purge_login_batch(
        &self,
        before: OffsetDateTime,
        batch: i64,
    ) -> StoreResult<(i64, i64)> {
        let row = sqlx::query!(
            r#"
            WITH counters AS (
                DELETE FROM latchkey.login_throttle t
                USING (SELECT account, ip FROM latchkey.login_throttle
                       WHERE expires_at <= now() ORDER BY expires_at LIMIT $2
                       FOR UPDATE SKIP LOCKED) old
                WHERE t.account = old.account AND t.ip = old.ip
                RETURNING 1
            ), failures AS (
                DELETE FROM latchkey.login_failures f
                USING (SELECT id FROM latchkey.login_failures
                       WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2
                       FOR UPDATE SKIP LOCKED) old
                WHERE f.id = old.id
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM counters) AS "counters!",
                   (SELECT count(*) FROM failures) AS "failures!"
            "#,
            before,
            batch,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.counters, row.failures))
    }

    /// The purge `latchkey expire` runs beside the sessions': stale throttle counters and
    /// audited login failures older than the events retention, in batches of the policy's
    /// size with its rests. Returns the rows removed (on a dry run: the rows that would go).
    ///
    /// # Errors
    /// Database failures (the batches already committed stay deleted).
    pub async fn purge_login_records(&self, policy: &ExpirePolicy) -> StoreResult<i64> {
        let retain = Duration::try_from_secs_f64(policy.retain_events_secs).unwrap_or_default();
        let before = OffsetDateTime::now_utc() - retain;
        if policy.dry_run {
            return Ok(sqlx::query_scalar!(
                r#"
                SELECT (SELECT count(*) FROM latchkey.login_throttle WHERE expires_at <= now())
                     + (SELECT count(*) FROM latchkey.login_failures WHERE occurred_at < $1) AS "n!"
                "#,
                before
            )
            .fetch_one(&self.pool)
            .await?);
        }
        let batch = i64::from(policy.batch_size.max(1));
        let mut total = 0;
        loop {
            let began = Instant::now();
            let (counters, failures) = self.purge_login_batch(before, batch).await?;
            total += counters + failures;
            if counters < batch && failures < batch {
                return Ok(total);
            }
            let pause = policy.pause_after(began.elapsed());
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
}
