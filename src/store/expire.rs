//! The purge of expired sessions, old revoked sessions and old audit events.
//!
//! The SQL lives in one place, the function `latchkey_expire_batch()` created by the
//! migrations: each call purges one bounded batch of each category in its own short
//! transaction, picking rows with `FOR UPDATE SKIP LOCKED`. [`Store::expire`] calls it until a
//! batch comes back empty; the procedure `latchkey_expire()` does the same from SQL (pg_cron).
//! Expired sessions go page by page: a batch takes the expired rows of the heap pages of the
//! earliest ones, so each page is written once for all its expired rows (`docs/dba.md`,
//! Expiry).
//!
//! Each batch resumes where the previous one stopped ([`ExpireCursor`]), so it does not step
//! again over the index entries of the rows already deleted. A row that was locked when the
//! cursor went past it is behind the cursor: the purge ends only when a batch from the start
//! (no cursor) finds nothing, unless [`PurgeEnd::final_pass`] leaves that pass to the caller.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::pace::{PaceStats, Pacer, Signals, PROBE_EVERY};
use super::{Store, StoreResult};

/// Largest batch the SQL function accepts.
pub const MAX_EXPIRE_BATCH: u32 = 100_000;

/// What to purge and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpirePolicy {
    /// Rows per category and per batch (1..=[`MAX_EXPIRE_BATCH`]).
    pub batch_size: u32,
    /// Revoked sessions are kept this long after `revoked_at` (seconds).
    pub retain_revoked_secs: f64,
    /// Audit events are kept this long after `occurred_at` (seconds).
    pub retain_events_secs: f64,
    /// Count what would go, delete nothing.
    pub dry_run: bool,
    /// After each batch, rest this many times as long as the batch took (0 = back to back;
    /// 1 = the purge keeps its connection busy at most half the time). The rest gives the
    /// WAL writer, the checkpointer and the foreground traffic room between batches; see
    /// [`ExpirePolicy::MAX_PAUSE`].
    pub pause_ratio: f64,
    /// Also record an `expired` event in `session_events` for each purged session that had
    /// not been revoked. Off by default: on a large purge those rows and their index entries
    /// are most of the writes (about three times the WAL; `docs/BENCHMARKS.md`, Expiry).
    pub expired_events: bool,
    /// Pace by what the purge costs the traffic ([`super::pace`]): a probe standing for the
    /// traffic (a random page read and a commit) runs beside the purge, and each one that
    /// takes more than this many times its idle tail doubles the rest; `pause_ratio` stays
    /// the floor. 0 = off (the fixed ratio alone).
    pub target_slowdown: f64,
    /// Rest long enough after each batch that the purge's own WAL (the server's during the
    /// batch less the traffic's, whose rate is read during the rests) stays under this many
    /// bytes per second. 0 = no budget.
    pub max_wal_rate: u64,
}

impl ExpirePolicy {
    /// The longest rest between two batches, whatever the ratio.
    pub const MAX_PAUSE: Duration = Duration::from_secs(1);

    /// How long to rest after a batch that took `batch`.
    pub fn pause_after(&self, batch: Duration) -> Duration {
        if self.pause_ratio.is_finite() && self.pause_ratio > 0.0 {
            batch
                .mul_f64(self.pause_ratio.min(100.0))
                .min(Self::MAX_PAUSE)
        } else {
            Duration::ZERO
        }
    }
}

impl Default for ExpirePolicy {
    /// Batches of 200, revoked sessions kept 7 days, events 90 days, a rest four times as long
    /// as each batch (`pause_ratio` 4), no `expired` events: during a purge of 1M scattered
    /// rows on a 2-core machine the refresh p99 rose 1.7× its idle value, against 15× with
    /// the events and far more back to back (`docs/BENCHMARKS.md`, Expiry).
    fn default() -> Self {
        Self {
            batch_size: 200,
            retain_revoked_secs: 7.0 * 86_400.0,
            retain_events_secs: 90.0 * 86_400.0,
            dry_run: false,
            pause_ratio: 4.0,
            expired_events: false,
            target_slowdown: 2.0,
            max_wal_rate: 0,
        }
    }
}

/// Rows removed by one batch (or, on a dry run, everything that would go).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExpireCounts {
    /// Sessions past their idle or absolute expiry, revoked or not.
    pub expired: i64,
    /// Revoked, unexpired sessions past the revoked retention.
    pub revoked: i64,
    /// Audit events past the events retention.
    pub events: i64,
}

impl ExpireCounts {
    /// True when nothing was (or would be) removed.
    pub fn is_empty(&self) -> bool {
        self.expired == 0 && self.revoked == 0 && self.events == 0
    }
}

/// Where the next batch of each category starts (`>=`, so rows sharing the key are not lost),
/// or `None` for the start of its index. Returned by [`Store::expire_batch`]: for expired
/// sessions, where the next batch resumes (every expired row before it is gone, or was locked
/// when the batch went past it); for revoked sessions and events, the largest key the batch
/// deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireCursor {
    /// `expires_at` of expired sessions.
    pub expired: Option<OffsetDateTime>,
    /// `revoked_at` of old revoked sessions.
    pub revoked: Option<OffsetDateTime>,
    /// `occurred_at` of old events.
    pub events: Option<OffsetDateTime>,
}

impl ExpireCursor {
    /// The start of every index: a batch from here sees every row.
    pub const START: Self = Self {
        expired: None,
        revoked: None,
        events: None,
    };

    /// Moves each category that a batch deleted something in to where the batch says it
    /// resumes; the others stay where they were.
    pub fn advance(&mut self, last: &ExpireCursor) {
        self.expired = last.expired.or(self.expired);
        self.revoked = last.revoked.or(self.revoked);
        self.events = last.events.or(self.events);
    }
}

/// Totals of a whole purge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExpireReport {
    /// Sessions past their idle or absolute expiry, revoked or not.
    pub expired: i64,
    /// Revoked, unexpired sessions past the revoked retention.
    pub revoked: i64,
    /// Audit events past the events retention.
    pub events: i64,
    /// Batches that removed something (on a dry run: the batches it would take).
    pub batches: i64,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
}

/// Where a paced purge stops ([`Store::expire_paced_until`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeEnd {
    /// Start no batch after this instant (`None`: none).
    pub deadline: Option<Instant>,
    /// When the batches from the cursor come back empty, pass once more from the start of the
    /// indexes, for rows that were locked when the cursor went past them (the default). That
    /// pass reads the index entries of every row the purge deleted that no vacuum has removed
    /// yet, and visits their heap pages: `latchkey expire --vacuum-after` turns it off and
    /// runs it after its vacuum instead, when those entries are gone.
    pub final_pass: bool,
}

impl Default for PurgeEnd {
    /// No deadline, with the final pass.
    fn default() -> Self {
        Self {
            deadline: None,
            final_pass: true,
        }
    }
}

impl ExpireReport {
    /// Adds the totals of a later purge (the final pass run apart) to these.
    pub fn add(&mut self, other: &ExpireReport) {
        self.expired += other.expired;
        self.revoked += other.revoked;
        self.events += other.events;
        self.batches += other.batches;
    }
}

impl Store {
    /// One call of `latchkey_expire_batch()`: purges at most `batch_size` rows of each
    /// category, starting at `from`, in one short transaction (or counts everything on a dry
    /// run, whatever `from`). Returns the counts and where each category resumes (`None` where
    /// nothing was deleted), to pass to [`ExpireCursor::advance`].
    ///
    /// # Errors
    /// Database failures; an invalid policy is refused by the function (`22023`).
    pub async fn expire_batch(
        &self,
        policy: &ExpirePolicy,
        from: &ExpireCursor,
    ) -> StoreResult<(ExpireCounts, ExpireCursor)> {
        let batch = i32::try_from(policy.batch_size).unwrap_or(i32::MAX);
        let row = sqlx::query!(
            r#"
            SELECT expired AS "expired!", revoked AS "revoked!", events AS "events!",
                   expired_last, revoked_last, events_last
            FROM latchkey.latchkey_expire_batch($1, make_interval(secs => $2), make_interval(secs => $3), $4,
                                       $5, $6, $7, $8)
            "#,
            batch,
            policy.retain_revoked_secs,
            policy.retain_events_secs,
            policy.dry_run,
            from.expired,
            from.revoked,
            from.events,
            policy.expired_events,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((
            ExpireCounts {
                expired: row.expired,
                revoked: row.revoked,
                events: row.events,
            },
            ExpireCursor {
                expired: row.expired_last,
                revoked: row.revoked_last,
                events: row.events_last,
            },
        ))
    }

    /// Purges until a batch comes back empty, each batch its own transaction and resuming where
    /// the previous one stopped; then makes one more pass from the start (for rows that were
    /// locked when the cursor went past them) and stops only when that pass finds nothing. On a
    /// dry run, counts once. `progress` sees the running totals after every batch that deleted
    /// something. Paced as [`Store::expire_paced`].
    ///
    /// # Errors
    /// Database failures; the totals of the batches already committed are lost to the
    /// caller but the rows stay deleted (running again is safe).
    pub async fn expire(
        &self,
        policy: &ExpirePolicy,
        progress: impl FnMut(&ExpireReport),
    ) -> StoreResult<ExpireReport> {
        Ok(self.expire_paced(policy, progress).await?.0)
    }

    /// [`Store::expire`], also returning how the purge was paced: a [`Pacer`] sets the rest
    /// after each batch from a probe committing beside the purge and from the WAL written
    /// (`docs/dba.md`, The purge's pace).
    ///
    /// # Errors
    /// As [`Store::expire`].
    pub async fn expire_paced(
        &self,
        policy: &ExpirePolicy,
        progress: impl FnMut(&ExpireReport),
    ) -> StoreResult<(ExpireReport, PaceStats)> {
        self.expire_paced_until(policy, PurgeEnd::default(), progress)
            .await
    }

    /// [`Store::expire_paced`], stopping where `end` says. With a deadline it starts no batch
    /// after it: a purge cut into pieces, each ending with what it deleted. Every batch is a
    /// transaction of its own, so a purge that stops here loses nothing, and the next one
    /// starts again from the earliest expired row. The batch under way ends first; the rest
    /// after it ends at the deadline. The probe's idle readings after the first batch (about
    /// 4 s) are not cut. Without the final pass it stops when the batches from the cursor come
    /// back empty; a later purge (its first batch is from the start) takes what they passed.
    ///
    /// # Errors
    /// As [`Store::expire`].
    pub async fn expire_paced_until(
        &self,
        policy: &ExpirePolicy,
        end: PurgeEnd,
        progress: impl FnMut(&ExpireReport),
    ) -> StoreResult<(ExpireReport, PaceStats)> {
        if policy.dry_run {
            let (c, _) = self.expire_batch(policy, &ExpireCursor::START).await?;
            let most = c.expired.max(c.revoked).max(c.events);
            let size = i64::from(policy.batch_size.max(1));
            let report = ExpireReport {
                expired: c.expired,
                revoked: c.revoked,
                events: c.events,
                batches: (most + size - 1) / size,
                dry_run: true,
            };
            return Ok((report, Pacer::new(policy).stats()));
        }
        let probe = Probe {
            pacer: Mutex::new(Pacer::new(policy)),
            in_flight: Mutex::new(None),
            calibrated: Notify::new(),
        };
        let report = if lock(&probe.pacer).probes() {
            tokio::select! {
                r = self.purge_loop(policy, end, &probe, progress) => r?,
                never = self.probe_loop(&probe) => match never {},
            }
        } else {
            self.purge_loop(policy, end, &probe, progress).await?
        };
        let stats = lock(&probe.pacer).stats();
        Ok((report, stats))
    }

    /// The batches of [`Store::expire_paced`], each followed by its rest.
    async fn purge_loop(
        &self,
        policy: &ExpirePolicy,
        end: PurgeEnd,
        probe: &Probe,
        mut progress: impl FnMut(&ExpireReport),
    ) -> StoreResult<ExpireReport> {
        let mut report = ExpireReport::default();
        let mut batch_policy = *policy;
        batch_policy.batch_size = lock(&probe.pacer).batch();
        let reads_wal = lock(&probe.pacer).reads_wal();
        let mut cursor = ExpireCursor::START;
        let mut from_start = true;
        let mut wal_after: Option<(u64, Instant)> = None;
        let deadline = end.deadline;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(report);
            }
            let from = if from_start {
                ExpireCursor::START
            } else {
                cursor
            };
            let wal_before = if reads_wal {
                self.wal_position().await
            } else {
                None
            };
            let began = Instant::now();
            if let (Some(before), Some((after, at))) = (wal_before, wal_after) {
                // Only the traffic wrote since the last batch's reading.
                lock(&probe.pacer).traffic_wal(before.saturating_sub(after), began - at);
            }
            let (c, last) = self.expire_batch(&batch_policy, &from).await?;
            if c.is_empty() {
                if from_start || !end.final_pass {
                    return Ok(report);
                }
                from_start = true;
                continue;
            }
            from_start = false;
            cursor.advance(&last);
            let took = began.elapsed();
            let wal_bytes = match wal_before {
                Some(before) => self.wal_position().await.map(|at| {
                    wal_after = Some((at, Instant::now()));
                    at.saturating_sub(before)
                }),
                None => None,
            };
            if report.batches == 0 && lock(&probe.pacer).probes() {
                if c.expired.max(c.revoked).max(c.events) >= i64::from(batch_policy.batch_size) {
                    // A full first batch: more is due, so the probe starts.
                    let idle = self.purge_calibration().await;
                    lock(&probe.pacer).calibrate(&idle);
                    probe.calibrated.notify_one();
                } else {
                    // Little is due (a sweep that finds a few rows): no probe, the ratio alone.
                    lock(&probe.pacer).calibrate(&[]);
                }
            }
            report.expired += c.expired;
            report.revoked += c.revoked;
            report.events += c.events;
            report.batches += 1;
            progress(&report);
            lock(&probe.pacer).record(Signals { took, wal_bytes });
            probe.rest(deadline).await;
        }
    }

    /// The probe of a paced purge, every [`PROBE_EVERY`] once calibrated; never returns.
    async fn probe_loop(&self, probe: &Probe) -> std::convert::Infallible {
        probe.calibrated.notified().await;
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            *lock(&probe.in_flight) = Some(Instant::now());
            let took = self.purge_probe().await;
            *lock(&probe.in_flight) = None;
            if let Some(took) = took {
                lock(&probe.pacer).probed(took);
            }
        }
    }
}

/// What the batches and the probe of one purge share.
struct Probe {
    pacer: Mutex<Pacer>,
    /// When the probe under way began.
    in_flight: Mutex<Option<Instant>>,
    /// Woken once the idle time is read: the probe starts.
    calibrated: Notify,
}

impl Probe {
    /// Rests after a batch: at least as long as the pacer asks, re-read every [`PROBE_EVERY`]
    /// (a stall during the rest lengthens it), and on until no probe is overdue; never past
    /// `deadline`.
    async fn rest(&self, deadline: Option<Instant>) {
        let from = Instant::now();
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let waiting = lock(&self.in_flight).map(|t| t.elapsed());
            let (rest, overdue) = {
                let p = lock(&self.pacer);
                (p.rest(), waiting.is_some_and(|w| p.overdue(w)))
            };
            let rested = from.elapsed();
            if rested >= rest && !overdue {
                break;
            }
            let nap = if overdue {
                PROBE_EVERY
            } else {
                (rest - rested).min(PROBE_EVERY)
            };
            tokio::time::sleep(nap).await;
        }
        lock(&self.pacer).rested(from.elapsed());
    }
}

/// A mutex's guard, poisoned or not (nothing panics while holding these).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ratio(pause_ratio: f64) -> ExpirePolicy {
        ExpirePolicy {
            pause_ratio,
            ..ExpirePolicy::default()
        }
    }

    #[test]
    fn the_pause_is_the_batch_time_times_the_ratio_capped_at_one_second() {
        let batch = Duration::from_millis(20);
        assert_eq!(with_ratio(1.0).pause_after(batch), batch);
        assert_eq!(
            with_ratio(2.5).pause_after(batch),
            Duration::from_millis(50)
        );
        assert_eq!(with_ratio(0.0).pause_after(batch), Duration::ZERO);
        assert_eq!(
            with_ratio(100.0).pause_after(Duration::from_millis(200)),
            ExpirePolicy::MAX_PAUSE
        );
        for nonsense in [f64::NAN, f64::INFINITY, -1.0] {
            assert_eq!(with_ratio(nonsense).pause_after(batch), Duration::ZERO);
        }
    }
}
