//! The purge: `latchkey expire` (cron) and the in-service sweeper of `latchkey serve`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::ExpireArgs;
use crate::db::Pooler;
use crate::metrics::Metrics;
use crate::store::{AutovacuumHold, ExpirePolicy, ExpireReport, PaceStats, PurgeEnd, Store};

use super::{open_store, Target};

/// How long `--vacuum-after` waits for another maintenance command to release `sessions`.
const HOLD_WAIT: Duration = Duration::from_secs(10);

/// `latchkey expire`: batches until nothing is left, then one summary line on stdout.
pub(super) async fn expire(target: &Target, args: &ExpireArgs) -> anyhow::Result<ExitCode> {
    let vacuum_after = args.vacuum_after && !args.dry_run;
    if vacuum_after && target.pooler != Pooler::None && target.direct == target.url {
        eprintln!(
            "error: --vacuum-after holds a transaction and sets its vacuum's costs on a connection of its own, which a transaction-mode pooler would not keep: give --listen-database-url, straight to the server"
        );
        return Ok(ExitCode::from(super::serve::EXIT_BAD_SETTING));
    }
    // Two connections: the batches, and the probe that paces them.
    let store = open_store(target, 2).await?;
    let started = Instant::now();
    // Before anything is deleted: a purge that cannot vacuum after must not hold autovacuum.
    let hold = if vacuum_after {
        Some(
            AutovacuumHold::take(&target.direct, HOLD_WAIT)
                .await
                .context("holding autovacuum off sessions")?,
        )
    } else {
        None
    };
    let mut progress = if std::io::stderr().is_terminal() && !args.dry_run {
        // What the bar runs to: the rows due now, counted as a dry run does.
        let due = store
            .expire(
                &ExpirePolicy {
                    dry_run: true,
                    ..args.policy()
                },
                |_| {},
            )
            .await
            .context("counting what the purge will delete")?;
        Progress::bar(due.expired + due.revoked + due.events)
    } else {
        Progress::lines(Duration::from_secs(args.progress_secs))
    };
    let deadline = (args.max_seconds > 0).then(|| started + Duration::from_secs(args.max_seconds));
    // With the hold, the pass from the start waits for the vacuum (see `PurgeEnd`).
    let end = PurgeEnd {
        deadline,
        final_pass: hold.is_none(),
    };
    let (mut report, pace) = store
        .expire_paced_until(&args.policy(), end, |r| progress.show(r))
        .await
        .context("expiring sessions")?;
    progress.finish();
    if report.batches > 1 {
        eprintln!("{}", pace_line(&pace));
    }
    if let Some(hold) = hold {
        let cost = args.vacuum_cost();
        let took = hold
            .vacuum(cost)
            .await
            .context("vacuuming sessions after the purge")?;
        eprintln!(
            "vacuumed: seconds={:.3} cost_delay_ms={} cost_limit={}",
            took.as_secs_f64(),
            cost.delay_ms,
            cost.limit
        );
        // The index no longer lists the deleted rows: the pass from the start reads only what
        // the batches stepped past (and what expired meanwhile), not every row gone.
        let end = PurgeEnd {
            deadline,
            final_pass: true,
        };
        let (last, _) = store
            .expire_paced_until(&args.policy(), end, |_| {})
            .await
            .context("the pass from the start after the vacuum")?;
        report.add(&last);
    }
    if deadline.is_some_and(|d| Instant::now() >= d) && !args.dry_run {
        eprintln!(
            "stopped: max_seconds={} reached; expired rows may remain for the next run",
            args.max_seconds
        );
    }
    let logins = store
        .purge_login_records(&args.policy())
        .await
        .context("purging login throttle counters and failures")?;
    let summary = Summary::new(&report, logins, started);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", summary.logfmt());
    }
    Ok(ExitCode::SUCCESS)
}

/// How the purge was paced, one logfmt line on stderr: the probe's idle tail, the probes
/// read and how many were slow, the largest stretch of the rest, the time rested and the
/// purge's own WAL (estimated, with a WAL budget).
fn pace_line(p: &PaceStats) -> String {
    format!(
        "paced: probe_baseline_ms={} probes={} slow_probes={} largest_stretch={} rested_seconds={:.3} own_wal_mb={:.1}",
        p.baseline.map_or_else(
            || "none".to_owned(),
            |b| format!("{:.3}", b.as_secs_f64() * 1e3)
        ),
        p.probes,
        p.slow_probes,
        p.largest_stretch,
        p.rested.as_secs_f64(),
        p.own_wal as f64 / 1e6,
    )
}

/// The figures of one purge: the summary line of `latchkey expire` (logfmt, or JSON with
/// `--json`), the same as the sweeper's log line and metrics
/// (`latchkey_purge_rows_total{kind}`, `latchkey_purge_duration_seconds`,
/// `latchkey_purge_last_success_timestamp_seconds`).
#[derive(Debug, Clone, Serialize)]
struct Summary {
    /// Sessions past their expiry.
    expired: i64,
    /// Revoked sessions past their retention.
    revoked: i64,
    /// Audit events past their retention.
    events: i64,
    /// Batches that deleted something.
    batches: i64,
    /// Milliseconds the purge took.
    ms: u64,
    /// Login throttle rows and failures.
    logins: i64,
    /// Seconds the purge took.
    seconds: f64,
    /// When it ended (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    finished_at: OffsetDateTime,
    /// Whether nothing was deleted (only counted).
    dry_run: bool,
}

impl Summary {
    fn new(report: &ExpireReport, logins: i64, started: Instant) -> Self {
        let took = started.elapsed();
        Self {
            expired: report.expired,
            revoked: report.revoked,
            events: report.events,
            batches: report.batches,
            ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            logins,
            seconds: took.as_secs_f64(),
            finished_at: OffsetDateTime::now_utc(),
            dry_run: report.dry_run,
        }
    }

    /// One logfmt line; no value needs quoting.
    fn logfmt(&self) -> String {
        format!(
            "expired={} revoked={} events={} batches={} ms={} logins={} seconds={:.3} finished_at={} dry_run={}",
            self.expired,
            self.revoked,
            self.events,
            self.batches,
            self.ms,
            self.logins,
            self.seconds,
            self.finished_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            self.dry_run,
        )
    }
}

/// How a running purge shows itself on stderr: on a terminal, a bar with the rows deleted of
/// those counted first, the rate and the time left (indicatif); otherwise one line every
/// interval with the rows so far and the rate, so a log under cron shows it moving.
enum Progress {
    Bar(ProgressBar),
    Lines {
        every: Duration,
        last: Instant,
        started: Instant,
    },
}

impl Progress {
    fn bar(due: i64) -> Self {
        let bar = ProgressBar::new(u64::try_from(due).unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "expiring {wide_bar} {human_pos}/{human_len} rows, {per_sec}, {eta} left · {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self::Bar(bar)
    }

    fn lines(every: Duration) -> Self {
        let now = Instant::now();
        Self::Lines {
            every,
            last: now,
            started: now,
        }
    }

    fn show(&mut self, r: &ExpireReport) {
        let rows = u64::try_from(r.expired + r.revoked + r.events).unwrap_or(0);
        match self {
            Self::Bar(bar) => {
                // Rows that expired since the count make the purge longer than counted.
                if bar.length().is_some_and(|len| rows > len) {
                    bar.set_length(rows);
                }
                bar.set_position(rows);
                bar.set_message(format!(
                    "expired={} revoked={} events={} batches={}",
                    r.expired, r.revoked, r.events, r.batches
                ));
            }
            Self::Lines {
                every,
                last,
                started,
            } => {
                if last.elapsed() < *every {
                    return;
                }
                *last = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                #[allow(clippy::cast_precision_loss)] // a rate for humans
                let rate = rows as f64 / secs.max(0.001);
                eprintln!(
                    "expiring: expired={} revoked={} events={} batches={} rows={rows} seconds={secs:.0} rows_per_sec={rate:.0}",
                    r.expired, r.revoked, r.events, r.batches
                );
            }
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// The optional background purge of `latchkey serve`: the same batches as `latchkey expire`,
/// every `every_secs`, recorded in `metrics`; a failure is logged and counted, and the next
/// interval tries again.
pub(super) fn spawn_sweeper(store: Store, metrics: Arc<Metrics>, every_secs: u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(every_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep(&store, &metrics).await;
        }
    });
}

/// One purge of the sweeper.
async fn sweep(store: &Store, metrics: &Metrics) {
    let started = Instant::now();
    let policy = ExpirePolicy::default();
    let (report, pace) = match store.expire_paced(&policy, |_| {}).await {
        Ok(done) => done,
        Err(e) => {
            metrics.purge_failed();
            tracing::warn!(error = %e, "sweeper failed; retrying at the next interval");
            return;
        }
    };
    let logins = match store.purge_login_records(&policy).await {
        Ok(rows) => rows,
        Err(e) => {
            metrics.purged(&report, 0);
            metrics.purge_failed();
            tracing::warn!(error = %e, "sweeper failed to purge login records; retrying at the next interval");
            return;
        }
    };
    let s = Summary::new(&report, logins, started);
    metrics.purged(&report, logins);
    metrics.purge_succeeded(s.seconds);
    if s.batches > 0 || s.logins > 0 {
        tracing::info!(
            expired = s.expired,
            revoked = s.revoked,
            events = s.events,
            batches = s.batches,
            ms = s.ms,
            logins = s.logins,
            slow_probes = pace.slow_probes,
            largest_stretch = pace.largest_stretch,
            rested_ms = u64::try_from(pace.rested.as_millis()).unwrap_or(u64::MAX),
            "sweeper purged"
        );
    }
}
