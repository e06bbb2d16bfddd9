//! What every scenario shares: the closed-loop driver, the pause between runs, and the
//! tables they print (throughput, latency percentiles, errors).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Barrier;

/// Lets autovacuum and the checkpointer settle between runs so one store does not pay for
/// the other's writes.
pub(crate) async fn quiesce(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT").execute(pool).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// Throughput and latency of one measured run.
pub(crate) struct Sample {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// The run with the median throughput (its own latencies with it).
pub(crate) fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    samples.swap_remove(samples.len() / 2)
}

/// Throughput and latency of one measured run; errors are counted, never dropped.
pub(crate) struct Stats {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    lat_us: Vec<u32>,
}

impl Stats {
    /// Successful operations per second.
    pub(crate) fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    /// Operations that failed.
    pub(crate) fn errors(&self) -> u64 {
        self.errors
    }
    /// The first failure's message, if any.
    pub(crate) fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }
    /// The `p` quantile of the successful operations' latency, in ms.
    pub(crate) fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.lat_us[idx.min(self.lat_us.len() - 1)]) / 1000.0
    }
    /// One row of the end-to-end table ([`header`]).
    pub(crate) fn print(&self, scenario: &str, clients: usize, variant: &str) {
        println!(
            "{:<14} {:>7} {:<12} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7}{}",
            scenario,
            clients,
            variant,
            self.rps(),
            self.pct(0.50),
            self.pct(0.99),
            self.pct(0.999),
            self.errors,
            self.first_error
                .as_deref()
                .map(|e| format!("  first error: {e}"))
                .unwrap_or_default()
        );
    }
}

/// The header of the end-to-end tables ([`Stats::print`]).
pub(crate) fn header() {
    println!(
        "{:<14} {:>7} {:<12} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "scenario", "clients", "variant", "ok/s", "p50_ms", "p99_ms", "p99.9_ms", "errors"
    );
}

/// The baseline's row (variant `raw-sql`), then the ratio row: throughput and p99 of `ours`
/// against `base`, with the goal.
pub(crate) fn raw_sql_ratio(
    scenario: &str,
    clients: usize,
    ours: &Stats,
    base: &Stats,
    goal: &str,
) {
    baseline_ratio(scenario, clients, ours, base, "raw-sql", goal);
}

/// A baseline's row (variant `variant`), then the ratio row (`ratio/<variant>`): throughput
/// and p99 of `ours` against `base`, with the goal.
pub(crate) fn baseline_ratio(
    scenario: &str,
    clients: usize,
    ours: &Stats,
    base: &Stats,
    variant: &str,
    goal: &str,
) {
    base.print(scenario, clients, variant);
    let label = if variant == "raw-sql" {
        "ratio".to_owned()
    } else {
        format!("ratio/{variant}")
    };
    let goal = if goal.is_empty() {
        String::new()
    } else {
        format!("  ({goal})")
    };
    println!(
        "{:<14} {:>7} {:<12} {:>9.2}x {:>17.2}x {:>17}{goal}",
        scenario,
        clients,
        label,
        ours.rps() / base.rps(),
        ours.pct(0.99) / base.pct(0.99),
        ""
    );
}

/// Prints `label: n ok, e errors, r/s` on stderr once a second until `done`.
fn progress(label: String, ok: Arc<AtomicU64>, err: Arc<AtomicU64>, done: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let began = Instant::now();
        let mut last = 0;
        while !done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = ok.load(Ordering::Relaxed);
            eprint!(
                "\r\x1b[K{label}: {:>4.0}s {n} ok ({}/s) {} errors",
                began.elapsed().as_secs_f64(),
                n - last,
                err.load(Ordering::Relaxed)
            );
            last = n;
        }
        eprint!("\r\x1b[K");
    });
}

/// Runs one task per state for `duration`; each call of `op` is one timed operation that
/// takes the state and hands it back (so a client can chain its tokens).
pub(crate) async fn drive<S, F, Fut>(
    label: String,
    states: Vec<S>,
    duration: Duration,
    op: F,
) -> Stats
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (S, anyhow::Result<()>)> + Send,
{
    let clients = states.len();
    let start = Arc::new(Barrier::new(clients + 1));
    let ok = Arc::new(AtomicU64::new(0));
    let err = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(clients);
    for state in states {
        let (op, start, ok, err) = (op.clone(), start.clone(), ok.clone(), err.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::<u32>::with_capacity(1 << 14);
            let mut first_error = None;
            let mut state = state;
            start.wait().await;
            let began = Instant::now();
            while began.elapsed() < duration {
                let t0 = Instant::now();
                let (next, result) = op(state).await;
                state = next;
                match result {
                    Ok(()) => {
                        lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        err.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat, first_error)
        }));
    }
    progress(label, ok.clone(), err.clone(), done.clone());
    start.wait().await;
    let began = Instant::now();
    let mut lat_us = Vec::new();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok((lat, e)) => {
                lat_us.extend(lat);
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(e) => {
                err.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert_with(|| format!("client task: {e}"));
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    lat_us.sort_unstable();
    Stats {
        ok: ok.load(Ordering::Relaxed),
        errors: err.load(Ordering::Relaxed),
        first_error,
        secs,
        lat_us,
    }
}

/// A client whose operation only reads its own state (unlike a chain of tokens, which
/// [`drive`] hands back changed).
pub(crate) trait Client: Send + Sync + 'static {
    /// One timed operation.
    fn call(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs [`Client::call`] on every client in a loop for `duration` ([`drive`]).
pub(crate) async fn drive_clients<C: Client>(
    label: &str,
    clients: Vec<C>,
    duration: Duration,
) -> Stats {
    drive(label.to_owned(), clients, duration, |c: C| async move {
        let r = c.call().await;
        (c, r)
    })
    .await
}
