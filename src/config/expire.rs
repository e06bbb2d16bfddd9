//! Flags of `latchkey expire`, and the parsers of their ranges.

use clap::Args;

/// Flags of `latchkey expire`.
#[derive(Debug, Args, Clone)]
pub struct ExpireArgs {
    /// Rows per category deleted in one short transaction (1 to 100000).
    #[arg(long, env = "LATCHKEY_EXPIRE_BATCH", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::store::MAX_EXPIRE_BATCH)))]
    pub batch: u32,
    /// Count what would be purged, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Keep revoked sessions this many days after their revocation (0 to 36500).
    #[arg(long, env = "LATCHKEY_RETAIN_REVOKED_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub retain_revoked: u32,
    /// Keep audit events (session_events) this many days (0 to 36500).
    #[arg(long, env = "LATCHKEY_RETAIN_EVENTS_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub retain_events: u32,
    /// After each batch, rest this many times as long as the batch took (0 to 100; 0 = back
    /// to back). Trades purge time for the latency of the traffic running beside it.
    #[arg(long, env = "LATCHKEY_EXPIRE_PAUSE_RATIO", default_value_t = 4.0,
          value_parser = parse_pause_ratio)]
    pub pause_ratio: f64,
    /// Pace by the traffic: a probe (a random page read and a commit) runs every 40 ms beside
    /// the purge, and each one that takes more than this many times its idle tail doubles the
    /// rest after each batch, each quiet one takes back a 99th of a doubling (0 = off: the pause ratio alone; else 1 to
    /// 100). The pause ratio stays the floor.
    #[arg(long, env = "LATCHKEY_EXPIRE_TARGET_SLOWDOWN", default_value_t = 2.0,
          value_parser = parse_slowdown)]
    pub target_slowdown: f64,
    /// Rest so that the purge writes at most this many MB of WAL per second of its own (the
    /// server's WAL during its batches, less the traffic's, read during the rests; 0 = no
    /// budget).
    #[arg(long, env = "LATCHKEY_EXPIRE_MAX_WAL_RATE", default_value_t = 0.0,
          value_parser = parse_wal_rate)]
    pub max_wal_rate: f64,
    /// Also record an `expired` audit event for each purged session that was not revoked (on
    /// a large purge these events are most of the writes: about three times the WAL).
    #[arg(long, env = "LATCHKEY_EXPIRE_EXPIRED_EVENTS")]
    pub expired_events: bool,
    /// When stderr is not a terminal (cron, a log), print a progress line (rows so far, rate)
    /// every this many seconds while the purge runs. On a terminal a progress bar with the rate
    /// and the time left is drawn instead, from a count made first.
    #[arg(long, env = "LATCHKEY_EXPIRE_PROGRESS_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_secs: u64,
    /// Keep autovacuum off `sessions` while the purge runs, then run one
    /// `VACUUM (ANALYZE, TRUNCATE false)` of it throttled by --vacuum-cost-delay and
    /// --vacuum-cost-limit: for a large backlog,
    /// where autovacuum's passes over the table during the purge cost the traffic more than
    /// the purge (`docs/dba.md`, A large backlog). Autovacuum is held off by a lock on a
    /// connection of the purge's own (straight to the server: --listen-database-url behind a
    /// pooler), so a purge that dies leaves nothing set. Needs the table's owner.
    #[arg(long, env = "LATCHKEY_EXPIRE_VACUUM_AFTER")]
    pub vacuum_after: bool,
    /// Start no batch after this many seconds (0 = until nothing is left; at most 31622400,
    /// 366 days), counted from the command's start: the purge ends
    /// with what it deleted, says so on stderr and exits 0, and with --vacuum-after vacuums
    /// then; the next run goes on from the earliest expired row. For a backlog purged in
    /// pieces, and to keep --vacuum-after's hold short (`docs/dba.md`, A large backlog).
    #[arg(long, env = "LATCHKEY_EXPIRE_MAX_SECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=31_622_400))]
    pub max_seconds: u64,
    /// With --vacuum-after: the vacuum's `vacuum_cost_delay` in milliseconds (0 to 100).
    #[arg(long, env = "LATCHKEY_EXPIRE_VACUUM_COST_DELAY", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub vacuum_cost_delay: u32,
    /// With --vacuum-after: the vacuum's `vacuum_cost_limit` (1 to 10000).
    #[arg(long, env = "LATCHKEY_EXPIRE_VACUUM_COST_LIMIT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub vacuum_cost_limit: u32,
}

/// A pause ratio: a finite number from 0 to 100.
fn parse_pause_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=100.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number from 0 to 100")),
    }
}

/// A target slowdown: 0 (off) or a finite number from 1 to 100.
fn parse_slowdown(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r == 0.0 || (1.0..=100.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not 0 or a number from 1 to 100")),
    }
}

/// A WAL budget in MB/s: a finite number from 0 to 100000.
fn parse_wal_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=100_000.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number of MB/s from 0 to 100000")),
    }
}

impl ExpireArgs {
    /// The cost settings of the vacuum after the purge.
    pub fn vacuum_cost(&self) -> crate::store::VacuumCost {
        crate::store::VacuumCost {
            delay_ms: self.vacuum_cost_delay,
            limit: self.vacuum_cost_limit,
        }
    }

    /// The store policy these flags describe.
    pub fn policy(&self) -> crate::store::ExpirePolicy {
        crate::store::ExpirePolicy {
            batch_size: self.batch,
            retain_revoked_secs: f64::from(self.retain_revoked) * 86_400.0,
            retain_events_secs: f64::from(self.retain_events) * 86_400.0,
            dry_run: self.dry_run,
            pause_ratio: self.pause_ratio,
            expired_events: self.expired_events,
            target_slowdown: self.target_slowdown,
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..=1e11
            max_wal_rate: (self.max_wal_rate * 1_000_000.0) as u64,
        }
    }
}
