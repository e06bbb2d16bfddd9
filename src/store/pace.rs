//! How fast the purge may go: paced by what it costs the traffic beside it.
//!
//! While a purge runs, a probe standing for the traffic ([`PROBE_SQL`]: it reads a heap page
//! of `sessions` at random, writes a WAL record and commits, as a refresh does) runs every
//! [`PROBE_EVERY`] on a connection of its own, during the batches and the rests alike. The
//! probe's idle tail is read once, from [`CALIBRATION_PROBES`] probes right after the first
//! full batch (the second slowest, about their 99th percentile, at most
//! [`MAX_TAIL_OVER_MEDIAN`] times their median, at least [`MIN_BASELINE`]); a
//! probe is *slow* when it takes more than `target_slowdown` times that. Keeping about one
//! probe in `QUIET_PER_SLOW + 1` slow then keeps the traffic's 99th percentile within about
//! `target_slowdown` times its idle one, as far as the probe stands for the traffic. (One in
//! 300 and a target of 1.5 were tried: on the unthrottled disk the purge went ten times slower,
//! and on the slow disk the goal was still missed; `docs/BENCHMARKS.md`.)
//!
//! [`Pacer`] turns the readings into a stretch on the rest after each batch, an integral
//! rule: every slow reading doubles the stretch, every quiet one takes back a
//! [`QUIET_PER_SLOW`]th of a doubling, so the stretch settles where about one probe in
//! `QUIET_PER_SLOW + 1` is slow, whatever the disk. A probe still waiting counts as a slow
//! reading for each [`PROBE_EVERY`] it has waited (what a probe every 40 ms would have seen
//! during that stall), no batch starts while one is overdue, and the rest is re-read while it
//! runs, so a stall that begins during a rest lengthens it at once. The purge starts
//! stretched ([`START_DOUBLINGS`]) and earns its pace: its first batches dirty pages that were
//! clean and log each whole page, the costliest of the purge. The batch size stays the
//! configured one: on a disk short of write operations, smaller batches would only mean more
//! commits. The rest never falls below the fixed ratio of [`ExpirePolicy::pause_after`].
//!
//! With a WAL budget (`max_wal_rate`), the rest is also long enough to keep the purge's own
//! WAL under it: the server's WAL during a batch, less what the traffic wrote in as long (its
//! rate read during the rests, when the purge writes nothing).

use std::time::{Duration, Instant};

use super::expire::ExpirePolicy;
use super::Store;

/// Key of the advisory lock the probe takes in shared mode (the bytes of `lkpurge` and a
/// one). Holding it exclusively (`SELECT pg_advisory_lock(…)`) makes the probe wait, so a
/// paced purge starts no batch until it is released, and goes on from its slowest pace.
pub const PURGE_PROBE_LOCK: i64 = 0x6c6b_7075_7267_6501;

/// The probe: a transaction that takes [`PURGE_PROBE_LOCK`] in shared mode, reads one heap
/// page of `sessions` at random (a TID scan: like a refresh, it needs a buffer for a page that
/// may not be in memory, and may have to write out a dirty one to get it) and writes a WAL
/// record (a transactional logical message, prefix `latchkey.purge_probe`, empty), so its
/// commit waits for the WAL flush, as a refresh's does. (A transaction that only assigns a
/// transaction id writes no WAL before its commit record, and PostgreSQL commits it without
/// waiting for the flush.)
const PROBE_SQL: &str = "SELECT pg_advisory_xact_lock_shared($1)::text
    || pg_logical_emit_message(true, 'latchkey.purge_probe', '')::text
    || (SELECT count(*) FROM latchkey.sessions
        WHERE ctid = (SELECT format('(%s,1)', floor(random()
            * (pg_relation_size('latchkey.sessions') / current_setting('block_size')::int)))::tid))::text";

/// How often the probe commits while a purge runs.
pub const PROBE_EVERY: Duration = Duration::from_millis(40);
/// Probes read for the idle time, [`PROBE_EVERY`] apart; the second slowest (about their
/// 99th percentile) is kept.
pub const CALIBRATION_PROBES: usize = 100;
/// Quiet readings that take back one doubling of the stretch.
pub const QUIET_PER_SLOW: u32 = 99;
/// Doublings of the rest a probing purge starts with (a stretch of 8).
pub const START_DOUBLINGS: u32 = 3;
/// Most doublings of the rest (a stretch of 64).
pub const MAX_DOUBLINGS: u32 = 6;
/// Longest rest the pacer asks for, whatever the signals.
pub const MAX_PACED_REST: Duration = Duration::from_secs(10);
/// Idle tails shorter than this count as this. A commit of a few hundred microseconds doubles
/// on any hiccup (a batch holding one of two cores); a refresh, whose tail on the same server
/// is several milliseconds, does not notice. A probe is slow at twice this at least: a stall.
pub const MIN_BASELINE: Duration = Duration::from_millis(2);
/// The idle tail is taken as at most this many times the calibration's median. Calibrating
/// takes 4 s; a stall in them (on a disk short of write operations, one WAL flush queued behind
/// the disk's budget) made the tail 6.6 ms against a median of 0.45 ms, the threshold 10 ms,
/// and the refreshes' p99 settled there, six times its idle value (`docs/BENCHMARKS.md`).
pub const MAX_TAIL_OVER_MEDIAN: u32 = 4;

/// What the purge read after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signals {
    /// How long the batch took.
    pub took: Duration,
    /// Bytes of WAL the server wrote while the batch ran (`None`: unknown).
    pub wal_bytes: Option<u64>,
}

/// How a purge was paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PaceStats {
    /// The probe's idle time (`None` when pacing by the probe was off, failed, or the purge
    /// ended with its first batch).
    pub baseline: Option<Duration>,
    /// Probes read after the calibration.
    pub probes: u64,
    /// Slow readings (each doubled the stretch; a probe that waited counts once for each
    /// [`PROBE_EVERY`] it waited).
    pub slow_probes: u64,
    /// Largest stretch of the rest (rounded up; 1 = never stretched past the ratio).
    pub largest_stretch: u32,
    /// Total time rested between batches.
    pub rested: Duration,
    /// The purge's own WAL, estimated (bytes; 0 when the WAL was not read).
    pub own_wal: u64,
}

/// The feedback controller (pure: readings in, rests out).
#[derive(Debug, Clone)]
pub struct Pacer {
    batch: u32,
    /// log2 of the stretch on the rest, in [`QUIET_PER_SLOW`]ths.
    level: u32,
    pause_ratio: f64,
    target_slowdown: f64,
    /// A probe slower than this is slow (`None`: not calibrated yet).
    slow_above: Option<Duration>,
    max_wal_rate: u64,
    /// The traffic's WAL rate (bytes/s), read during the rests.
    traffic_rate: Option<f64>,
    /// The last batch's time and the rest its own WAL asks for.
    last_took: Duration,
    wal_rest: Duration,
    floor: ExpirePolicy,
    stats: PaceStats,
}

/// Weight of the newest reading in the running estimate of the traffic's WAL rate.
const EWMA: f64 = 0.3;

/// Rests shorter than this tell nothing of the traffic's WAL rate.
const MIN_TRAFFIC_WINDOW: Duration = Duration::from_millis(20);

fn ewma(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| o + EWMA * (new - o))
}

impl Pacer {
    /// A pacer for `policy`: its batch size, and when it probes, the start's stretch.
    pub fn new(policy: &ExpirePolicy) -> Self {
        let target_slowdown = if policy.target_slowdown.is_finite() {
            policy.target_slowdown.max(0.0)
        } else {
            0.0
        };
        let level = if target_slowdown > 0.0 {
            START_DOUBLINGS * QUIET_PER_SLOW
        } else {
            0
        };
        Self {
            batch: policy.batch_size.max(1),
            level,
            pause_ratio: if policy.pause_ratio.is_finite() {
                policy.pause_ratio.clamp(0.0, 100.0)
            } else {
                0.0
            },
            target_slowdown,
            slow_above: None,
            max_wal_rate: policy.max_wal_rate,
            traffic_rate: None,
            last_took: Duration::ZERO,
            wal_rest: Duration::ZERO,
            floor: *policy,
            // The start's stretch counts once the probe is calibrated: it is dropped if not.
            stats: PaceStats {
                largest_stretch: 1,
                ..PaceStats::default()
            },
        }
    }

    /// Whether the probe is read at all (`target_slowdown` > 0).
    pub fn probes(&self) -> bool {
        self.target_slowdown > 0.0
    }

    /// Records the probe's idle time from `idle` readings: the second slowest (one stray
    /// reading is not the idle time), at most [`MAX_TAIL_OVER_MEDIAN`] times their median (a
    /// tail above that is a stall caught while calibrating, not the idle time). No readings
    /// leave the pacing by the ratio alone.
    pub fn calibrate(&mut self, idle: &[Duration]) {
        let mut idle = idle.to_vec();
        idle.sort_unstable();
        let median = idle.get(idle.len() / 2).copied();
        let base = idle
            .len()
            .checked_sub(2)
            .or(idle.len().checked_sub(1))
            .map(|i| idle[i])
            .zip(median)
            .map(|(tail, median)| tail.min(median * MAX_TAIL_OVER_MEDIAN));
        self.stats.baseline = base;
        self.slow_above = base
            .filter(|_| self.probes())
            .map(|b| b.max(MIN_BASELINE).mul_f64(self.target_slowdown));
        if self.slow_above.is_none() {
            // Nothing to read the traffic by: the ratio alone.
            self.level = 0;
        }
        self.note_stretch();
    }

    /// A probe slower than this is slow (`None`: not calibrated, or not probing).
    pub fn slow_above(&self) -> Option<Duration> {
        self.slow_above
    }

    /// Whether a probe that has been waiting `waiting` is already slow: no batch starts then.
    pub fn overdue(&self, waiting: Duration) -> bool {
        self.slow_above.is_some_and(|slow| waiting > slow)
    }

    /// Records a probe that took `took`.
    pub fn probed(&mut self, took: Duration) {
        let Some(slow) = self.slow_above else { return };
        self.stats.probes += 1;
        if took > slow {
            // A probe that waited stands for all those that would have run meanwhile.
            let readings =
                u32::try_from(took.as_nanos() / PROBE_EVERY.as_nanos() + 1).unwrap_or(u32::MAX);
            self.stats.slow_probes = self.stats.slow_probes.saturating_add(u64::from(readings));
            self.level = readings
                .saturating_mul(QUIET_PER_SLOW)
                .saturating_add(self.level)
                .min(MAX_DOUBLINGS * QUIET_PER_SLOW);
        } else {
            self.level = self.level.saturating_sub(1);
        }
        tracing::trace!(
            ms = took.as_secs_f64() * 1e3,
            slow = took > slow,
            stretch = self.stretch(),
            "purge probe"
        );
        self.note_stretch();
    }

    fn note_stretch(&mut self) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 1..=64
        let s = self.stretch().ceil() as u32;
        self.stats.largest_stretch = self.stats.largest_stretch.max(s);
    }

    /// The stretch on the rest now (1 = the ratio alone).
    pub fn stretch(&self) -> f64 {
        (f64::from(self.level) / f64::from(QUIET_PER_SLOW)).exp2()
    }

    /// Whether the WAL is read around each batch (there is a WAL budget).
    pub fn reads_wal(&self) -> bool {
        self.max_wal_rate > 0
    }

    /// Records the WAL the server wrote while no batch ran (`bytes` over `over`): the
    /// traffic's rate, subtracted from what the server writes during a batch.
    pub fn traffic_wal(&mut self, bytes: u64, over: Duration) {
        if over >= MIN_TRAFFIC_WINDOW {
            #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
            let rate = bytes as f64 / over.as_secs_f64();
            self.traffic_rate = Some(ewma(self.traffic_rate, rate));
        }
    }

    /// The batch size.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// What the pacing did so far.
    pub fn stats(&self) -> PaceStats {
        self.stats
    }

    /// Records a batch that produced `s`; [`Pacer::rest`] is then the rest after it.
    pub fn record(&mut self, s: Signals) {
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
        let own = s.wal_bytes.map(|bytes| {
            let traffic = self.traffic_rate.unwrap_or(0.0) * s.took.as_secs_f64();
            (bytes as f64 - traffic).max(0.0)
        });
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative
        let own_bytes = own.map_or(0, |own| own as u64);
        self.stats.own_wal += own_bytes;
        self.wal_rest = match own {
            #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
            Some(own) if self.max_wal_rate > 0 => {
                Duration::from_secs_f64(own / self.max_wal_rate as f64).saturating_sub(s.took)
            }
            _ => Duration::ZERO,
        };
        self.last_took = s.took;
    }

    /// The rest after the last batch at the current stretch: the longest of the fixed
    /// ratio's, the stretched one and the WAL budget's, at most [`MAX_PACED_REST`].
    pub fn rest(&self) -> Duration {
        let floor = self.floor.pause_after(self.last_took);
        let stretched = if self.level > 0 {
            self.last_took
                .mul_f64(self.pause_ratio.max(1.0) * self.stretch())
        } else {
            Duration::ZERO
        };
        floor.max(stretched).max(self.wal_rest).min(MAX_PACED_REST)
    }

    /// Records time rested.
    pub fn rested(&mut self, d: Duration) {
        self.stats.rested += d;
    }
}

impl Store {
    /// One probe ([`PROBE_SQL`]): its time, or `None` if it failed. The time includes any wait for a connection of
    /// the pool, which is why the purge's pools have two: one for the batches, one for it.
    pub async fn purge_probe(&self) -> Option<Duration> {
        let began = Instant::now();
        let r = sqlx::query_scalar::<_, String>(PROBE_SQL)
            .bind(PURGE_PROBE_LOCK)
            .fetch_one(&self.pool)
            .await;
        match r {
            Ok(_) => Some(began.elapsed()),
            Err(e) => {
                tracing::debug!(error = %e, "purge probe failed; pacing by the ratio alone");
                None
            }
        }
    }

    /// The server's WAL position in bytes, or `None` where it cannot be read (a standby).
    pub async fn wal_position(&self) -> Option<u64> {
        let r =
            sqlx::query_scalar::<_, String>("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::text")
                .fetch_one(&self.pool)
                .await;
        match r {
            Ok(s) => s.split('.').next().and_then(|b| b.parse().ok()),
            Err(e) => {
                tracing::debug!(error = %e, "WAL position unreadable; no WAL budget");
                None
            }
        }
    }

    /// The probe's idle readings: [`CALIBRATION_PROBES`] probes a little apart, after one
    /// that may open a connection. Empty if any fails.
    pub(super) async fn purge_calibration(&self) -> Vec<Duration> {
        if self.purge_probe().await.is_none() {
            return Vec::new();
        }
        let mut times = Vec::with_capacity(CALIBRATION_PROBES);
        for _ in 0..CALIBRATION_PROBES {
            tokio::time::sleep(PROBE_EVERY).await;
            match self.purge_probe().await {
                Some(t) => times.push(t),
                None => return Vec::new(),
            }
        }
        times
    }
}

#[cfg(test)]
#[path = "pace_tests.rs"]
mod tests;
