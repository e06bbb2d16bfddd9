//! How fast the purge may go: paced by what it costs the traffic beside it.
//!
//! After each batch the purge reads two cheap signals from PostgreSQL: a probe that stands
//! for the traffic (the mean time of a few trivial committed transactions, each assigning
//! a transaction id so its commit waits for the WAL flush, as a refresh's commit does) and
//! the WAL the server wrote while the batch ran. [`Pacer`] turns them into the next batch
//! size and the rest before it, additive increase / multiplicative decrease: when the probe
//! takes more than `target_slowdown` times its idle baseline (measured before the first
//! batch), the batch is halved and the rest doubled; otherwise the batch grows back by a
//! tenth of its configured size and the rest shrinks slowly. The rest never falls below the
//! fixed ratio of [`ExpirePolicy::pause_after`].
//!
//! With a WAL budget (`max_wal_rate`), the rest is also long enough to keep the purge's own
//! WAL under it: the server's WAL during a batch, less what the traffic wrote in as long (its
//! rate read during the rests, when the purge writes nothing).

use std::time::{Duration, Instant};

use super::expire::ExpirePolicy;
use super::Store;

/// Key of the advisory lock the probe takes in shared mode (the bytes of `lkpurge` and a
/// one). Holding it exclusively (`SELECT pg_advisory_lock(…)`) makes every probe wait, so a
/// paced purge backs off to its slowest pace until it is released.
pub const PURGE_PROBE_LOCK: i64 = 0x6c6b_7075_7267_6501;

/// Smallest batch a back-off goes down to.
pub const MIN_PACED_BATCH: u32 = 10;
/// Longest rest the pacer asks for, whatever the signals.
pub const MAX_PACED_REST: Duration = Duration::from_secs(10);
/// Largest factor a back-off stretches the rest by.
const MAX_STRETCH: f64 = 64.0;
/// How much the stretch shrinks after a batch that cost the traffic nothing.
const STRETCH_RELIEF: f64 = 0.5;
/// Baselines shorter than this count as this: a probe of 0.2 ms against 0.1 ms is noise.
const MIN_BASELINE: Duration = Duration::from_millis(1);
/// Probes of the baseline (the median is kept) and after each batch (the mean is kept).
const BASELINE_PROBES: usize = 5;
const PROBES: usize = 3;

/// What the purge read after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signals {
    /// How long the batch took.
    pub took: Duration,
    /// The probe's mean time after the batch (`None`: the probe failed or is off).
    pub probe: Option<Duration>,
    /// Bytes of WAL the server wrote while the batch ran (`None`: unknown).
    pub wal_bytes: Option<u64>,
}

/// What the pacer decided: the size of the next batch and the rest before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Rows per category of the next batch.
    pub batch: u32,
    /// Rest before it.
    pub rest: Duration,
}

/// How a purge was paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PaceStats {
    /// The probe's idle baseline (`None` when pacing by the probe was off or failed).
    pub baseline: Option<Duration>,
    /// Batches after which the pacer backed off.
    pub backoffs: u64,
    /// Smallest batch size used.
    pub smallest_batch: u32,
    /// Total time rested between batches.
    pub rested: Duration,
    /// The purge's own WAL, estimated (bytes; 0 when the WAL was not read).
    pub own_wal: u64,
}

/// The feedback controller (pure: signals in, next step out).
#[derive(Debug, Clone)]
pub struct Pacer {
    max_batch: u32,
    batch: u32,
    stretch: f64,
    pause_ratio: f64,
    target_slowdown: f64,
    max_wal_rate: u64,
    /// The traffic's WAL rate (bytes/s), read during the rests.
    traffic_rate: Option<f64>,
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
    /// A pacer for `policy`, starting at its batch size with no stretch.
    pub fn new(policy: &ExpirePolicy) -> Self {
        let max_batch = policy.batch_size.max(1);
        Self {
            max_batch,
            batch: max_batch,
            stretch: 1.0,
            pause_ratio: if policy.pause_ratio.is_finite() {
                policy.pause_ratio.clamp(0.0, 100.0)
            } else {
                0.0
            },
            target_slowdown: if policy.target_slowdown.is_finite() {
                policy.target_slowdown.max(0.0)
            } else {
                0.0
            },
            max_wal_rate: policy.max_wal_rate,
            traffic_rate: None,
            floor: *policy,
            stats: PaceStats {
                smallest_batch: max_batch,
                ..PaceStats::default()
            },
        }
    }

    /// Whether the probe is read at all (`target_slowdown` > 0).
    pub fn probes(&self) -> bool {
        self.target_slowdown > 0.0
    }

    /// Records the probe's idle baseline.
    pub fn set_baseline(&mut self, baseline: Option<Duration>) {
        self.stats.baseline = baseline;
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

    /// The current batch size.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// What the pacing did so far.
    pub fn stats(&self) -> PaceStats {
        self.stats
    }

    /// The next step after a batch that produced `s`.
    pub fn next(&mut self, s: Signals) -> Step {
        let congested = match (self.stats.baseline, s.probe) {
            (Some(base), Some(probe)) if self.probes() => {
                probe.as_secs_f64() > base.max(MIN_BASELINE).as_secs_f64() * self.target_slowdown
            }
            _ => false,
        };
        if congested {
            self.batch = (self.batch / 2).max(MIN_PACED_BATCH.min(self.max_batch));
            self.stretch = (self.stretch * 2.0).min(MAX_STRETCH);
            self.stats.backoffs += 1;
        } else {
            self.batch = self
                .batch
                .saturating_add((self.max_batch / 10).max(1))
                .min(self.max_batch);
            self.stretch = (self.stretch - STRETCH_RELIEF).max(1.0);
        }
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
        let own = s.wal_bytes.map(|bytes| {
            let traffic = self.traffic_rate.unwrap_or(0.0) * s.took.as_secs_f64();
            (bytes as f64 - traffic).max(0.0)
        });
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative
        let own_bytes = own.map_or(0, |own| own as u64);
        self.stats.own_wal += own_bytes;
        self.stats.smallest_batch = self.stats.smallest_batch.min(self.batch);
        let floor = self.floor.pause_after(s.took);
        let stretched = if self.stretch > 1.0 {
            s.took.mul_f64(self.pause_ratio.max(1.0) * self.stretch)
        } else {
            Duration::ZERO
        };
        let wal = match own {
            #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
            Some(own) if self.max_wal_rate > 0 => {
                Duration::from_secs_f64(own / self.max_wal_rate as f64).saturating_sub(s.took)
            }
            _ => Duration::ZERO,
        };
        let rest = floor.max(stretched).max(wal).min(MAX_PACED_REST);
        self.stats.rested += rest;
        Step {
            batch: self.batch,
            rest,
        }
    }
}

/// The mean of some durations: one slow commit in three moves it, as a tail does the traffic's.
fn mean(v: &[Duration]) -> Option<Duration> {
    let n = u32::try_from(v.len()).ok().filter(|n| *n > 0)?;
    Some(v.iter().sum::<Duration>() / n)
}

impl Store {
    /// One reading of the probe: the mean time of `n` trivial committed transactions, each
    /// taking [`PURGE_PROBE_LOCK`] in shared mode and assigning a transaction id, so its
    /// commit waits for the WAL flush as the traffic's do. `None` if any fails.
    pub async fn purge_probe(&self, n: usize) -> Option<Duration> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let began = Instant::now();
            let r = sqlx::query_scalar::<_, String>(
                "SELECT pg_advisory_xact_lock_shared($1)::text || pg_current_xact_id()::text",
            )
            .bind(PURGE_PROBE_LOCK)
            .fetch_one(&self.pool)
            .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "purge probe failed; pacing by the ratio alone");
                return None;
            }
            times.push(began.elapsed());
        }
        mean(&times)
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

    /// The probe's idle baseline, read before the first batch: the median of a few probes
    /// after one that may open a connection.
    pub(super) async fn purge_baseline(&self) -> Option<Duration> {
        self.purge_probe(1).await?;
        let mut times = Vec::with_capacity(BASELINE_PROBES);
        for _ in 0..BASELINE_PROBES {
            times.push(self.purge_probe(1).await?);
        }
        times.sort_unstable();
        times.get(BASELINE_PROBES / 2).copied()
    }

    /// The signals after a batch that began at `began` with the WAL at `wal_before`, and the
    /// WAL position read after it (with when it was read).
    pub(super) async fn purge_signals(
        &self,
        pacer: &Pacer,
        began: Instant,
        wal_before: Option<u64>,
    ) -> (Signals, Option<(u64, Instant)>) {
        let took = began.elapsed();
        let after = match wal_before {
            Some(_) => self.wal_position().await.map(|at| (at, Instant::now())),
            None => None,
        };
        let wal_bytes = match (wal_before, after) {
            (Some(before), Some((at, _))) => Some(at.saturating_sub(before)),
            _ => None,
        };
        let probe = if pacer.probes() {
            self.purge_probe(PROBES).await
        } else {
            None
        };
        (
            Signals {
                took,
                probe,
                wal_bytes,
            },
            after,
        )
    }
}

#[cfg(test)]
#[path = "pace_tests.rs"]
mod tests;
