//! What the soak counts while it runs (every answer by status and code, every transport
//! failure, every 5xx without `Retry-After`, every logout) and the report it prints at the
//! end, with the verdict on each promise.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::faults::FaultRecord;

/// Counters shared by every client.
pub(crate) struct Tally {
    began: Instant,
    requests: AtomicU64,
    answers: Mutex<BTreeMap<(u16, String, String), u64>>,
    transport: Mutex<BTreeMap<(&'static str, String), u64>>,
    no_retry_after: Mutex<Vec<String>>,
    logged_out: Mutex<Vec<String>>,
    failures: Mutex<Vec<Duration>>,
    acks: AtomicU64,
    ack_times: Mutex<Vec<Duration>>,
}

impl Tally {
    /// Empty counters; failure times are kept relative to `began`.
    pub(crate) fn new(began: Instant) -> Self {
        Self {
            began,
            requests: AtomicU64::new(0),
            answers: Mutex::default(),
            transport: Mutex::default(),
            no_retry_after: Mutex::default(),
            logged_out: Mutex::default(),
            failures: Mutex::default(),
            acks: AtomicU64::new(0),
            ack_times: Mutex::default(),
        }
    }

    /// One answer of `status` with problem `code` (empty on success); a 5xx without
    /// `Retry-After` is kept with `what` and the answer's code.
    pub(crate) fn answer(&self, what: &str, status: u16, code: &str, retry_after: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *lock(&self.answers)
            .entry((status, code.to_owned(), what.to_owned()))
            .or_default() += 1;
        if status >= 500 {
            self.failed();
            if !retry_after {
                lock(&self.no_retry_after).push(format!("{what}: {status} {code}"));
            }
        }
    }

    /// A request (`what`) that got no answer: `kind` is `connect`, `timeout` or `other`.
    pub(crate) fn transport(&self, what: &str, kind: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *lock(&self.transport)
            .entry((kind, what.to_owned()))
            .or_default() += 1;
        self.failed();
    }

    fn failed(&self) {
        lock(&self.failures).push(self.began.elapsed());
    }

    /// A token the client was given (an acknowledged refresh or login).
    pub(crate) fn acknowledged(&self) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        lock(&self.ack_times).push(self.began.elapsed());
    }

    /// The first token acknowledged at or after `from` (after the start).
    pub(crate) fn first_ack_since(&self, from: Duration) -> Option<Duration> {
        lock(&self.ack_times)
            .iter()
            .copied()
            .filter(|t| *t >= from)
            .min()
    }

    /// Failed requests (5xx or no answer) at or after `from`: how many, the first, the last.
    pub(crate) fn failures_since(&self, from: Duration) -> (usize, Option<(Duration, Duration)>) {
        let failures = lock(&self.failures);
        let inside: Vec<Duration> = failures.iter().copied().filter(|t| *t >= from).collect();
        let bounds = inside.iter().min().zip(inside.iter().max());
        (inside.len(), bounds.map(|(a, b)| (*a, *b)))
    }

    /// A client that followed the contract was told its session is over.
    pub(crate) fn logged_out(&self, who: String) {
        lock(&self.logged_out).push(who);
    }

    /// Requests so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed requests (5xx or no answer) between `from` and `to` after the start: how many,
    /// and the span from the first to the last.
    fn failures_between(&self, from: Duration, to: Duration) -> (usize, Duration) {
        let failures = lock(&self.failures);
        let inside: Vec<Duration> = failures
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        let span = match (inside.iter().min(), inside.iter().max()) {
            (Some(a), Some(b)) => *b - *a,
            _ => Duration::ZERO,
        };
        (inside.len(), span)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the end of the run found.
pub(crate) struct Ending {
    /// Clients whose last acknowledged token was checked.
    pub(crate) checked: usize,
    /// Of those, the ones whose token no longer works (with why).
    pub(crate) lost: Vec<String>,
    /// Clients still retrying when the run's hard deadline passed.
    pub(crate) unfinished: usize,
    /// `grace_used` events: retries whose first attempt had been applied without its answer
    /// reaching the client (each soak client refreshes one request at a time, so no other
    /// request presents a previous token).
    pub(crate) grace_used: i64,
}

/// Prints the report; true if every promise held.
pub(crate) fn print(
    header: &str,
    tally: &Tally,
    faults: &[FaultRecord],
    ending: &Ending,
    elapsed: Duration,
) -> bool {
    println!("{header}");
    let requests = tally.requests();
    println!(
        "requests: {requests} in {:.0} s ({:.0}/s), acknowledged tokens: {}",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        tally.acks.load(Ordering::Relaxed)
    );
    println!("answers by status and code (and request):");
    for ((status, code, what), n) in lock(&tally.answers).iter() {
        let code = if code.is_empty() { "-" } else { code };
        println!("  {status} {code:<16} {what:<16} {n:>9}");
    }
    for ((kind, what), n) in lock(&tally.transport).iter() {
        println!(
            "  -   {:<16} {what:<16} {n:>9}",
            format!("no answer: {kind}")
        );
    }
    println!(
        "refreshes applied whose answer was lost, then recovered by a retry (grace_used): {}",
        ending.grace_used
    );
    println!("faults:");
    println!(
        "  {:>3} {:>7} {:<18} {:>9} {:>10} {:>9} {:>15}",
        "#", "at_s", "fault", "outage_s", "recover_s", "failed", "client_outage_s"
    );
    let mut unrecovered = 0;
    for (i, f) in faults.iter().enumerate() {
        let window_end = f.at + f.outage + f.recover.unwrap_or(Duration::from_secs(60));
        let (failed, span) = tally.failures_between(f.at, window_end + Duration::from_secs(2));
        let recover = match f.recover {
            Some(r) => format!("{:.2}", r.as_secs_f64()),
            None => {
                unrecovered += 1;
                "NEVER".to_owned()
            }
        };
        println!(
            "  {:>3} {:>7.1} {:<18} {:>9.2} {:>10} {:>9} {:>15.2}",
            i + 1,
            f.at.as_secs_f64(),
            f.kind.to_string(),
            f.outage.as_secs_f64(),
            recover,
            failed,
            span.as_secs_f64()
        );
    }
    let no_retry_after = lock(&tally.no_retry_after);
    let logged_out = lock(&tally.logged_out);
    println!("promises:");
    let rows = [
        ("5xx without Retry-After", no_retry_after.len()),
        ("clients logged out", logged_out.len()),
        ("acknowledged tokens lost", ending.lost.len()),
        ("clients never answered (no recovery)", ending.unfinished),
        ("faults not recovered without restart", unrecovered),
    ];
    for (what, n) in rows {
        println!("  {what:<38} {n:>6}");
    }
    println!(
        "  (last acknowledged token checked for {} clients)",
        ending.checked
    );
    for (what, list) in [
        ("5xx without Retry-After", &*no_retry_after),
        ("logged out", &*logged_out),
        ("lost", &ending.lost),
    ] {
        for line in list.iter().take(10) {
            println!("  {what}: {line}");
        }
    }
    let kept = rows.iter().all(|(_, n)| *n == 0);
    println!(
        "verdict: {}",
        if kept {
            "every promise kept"
        } else {
            "PROMISE BROKEN"
        }
    );
    kept
}
