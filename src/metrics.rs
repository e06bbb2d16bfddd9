//! Prometheus metrics of the service, served at `GET /metrics` (OpenMetrics text): the
//! protocol's counters, request latencies by route, the gauges of the database pool, the live
//! streams and the password hashing queue (read when scraped), and the in-service purge's
//! rows, durations and last success.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The labels of a request: its route (the matched path pattern), method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    route: String,
    method: String,
    status: u16,
}

/// One label: the state of a pool connection (`idle`, `in_use`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    state: &'static str,
}

/// One label: the state of a password hash (`waiting` for a permit, `running`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashState {
    state: &'static str,
}

/// One label: what a purge deleted (`expired_sessions`, `revoked_sessions`, `events`,
/// `login_records`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Purged {
    kind: &'static str,
}

/// The purge's row categories, as [`Metrics::purged`] labels them: the fields of
/// [`ExpireReport`](crate::store::ExpireReport), and the login throttle rows and failures.
pub const PURGE_KINDS: [&str; 4] = [
    "expired_sessions",
    "revoked_sessions",
    "events",
    "login_records",
];

/// Purge duration buckets: 10 ms to about 45 min, quadrupling.
fn purge_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

/// Request latency buckets: 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// One label: the outcome of an operation (`rotated`, `grace`, or an error code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// One label: what failed in a login (`password`, `api_key`, `throttled`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failure {
    kind: &'static str,
}

/// One label: the session mode.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Mode {
    kind: &'static str,
}

/// The service's counters. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    refresh: Family<Outcome, Counter>,
    login: Family<Outcome, Counter>,
    issued: Family<Mode, Counter>,
    login_failures: Family<Failure, Counter>,
    requests: Family<Request, Histogram, fn() -> Histogram>,
    pool: Family<PoolState, Gauge>,
    streams: Gauge,
    hashes: Family<HashState, Gauge>,
    purge_rows: Family<Purged, Counter>,
    purge_duration: Histogram,
    purge_last_success: Gauge<f64, AtomicU64>,
    purge_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("latchkey");
        let refresh = Family::<Outcome, Counter>::default();
        let login = Family::<Outcome, Counter>::default();
        let issued = Family::<Mode, Counter>::default();
        registry.register(
            "refresh",
            "Refresh requests by outcome (rotated, grace, or the error code)",
            refresh.clone(),
        );
        registry.register(
            "login",
            "Login attempts by outcome (ok or the error code)",
            login.clone(),
        );
        registry.register(
            "sessions_issued",
            "Sessions created by mode",
            issued.clone(),
        );
        let login_failures = Family::<Failure, Counter>::default();
        registry.register(
            "login_failures",
            "Failed or refused logins by kind (password, api_key, throttled)",
            login_failures.clone(),
        );
        let requests = Family::<Request, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head by route, method and status (an event stream: to its opening)",
            requests.clone(),
        );
        let pool = Family::<PoolState, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections by state (idle, in_use), when scraped",
            pool.clone(),
        );
        let streams = Gauge::default();
        registry.register(
            "live_streams",
            "Open GET /auth/events streams of this instance, when scraped",
            streams.clone(),
        );
        let hashes = Family::<HashState, Gauge>::default();
        registry.register(
            "password_hashes",
            "Argon2 hashes and verifications by state (waiting for a permit, running), when scraped",
            hashes.clone(),
        );
        let purge_rows = Family::<Purged, Counter>::default();
        registry.register(
            "purge_rows",
            "Rows deleted by the in-service purge by kind (expired_sessions, revoked_sessions, events, login_records)",
            purge_rows.clone(),
        );
        let purge_duration = purge_histogram();
        registry.register(
            "purge_duration_seconds",
            "Duration of each successful in-service purge",
            purge_duration.clone(),
        );
        let purge_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "purge_last_success_timestamp_seconds",
            "Unix time at which the last successful in-service purge ended (0: none yet)",
            purge_last_success.clone(),
        );
        let purge_failures = Counter::default();
        registry.register(
            "purge_failures",
            "In-service purges that failed (the next interval tries again)",
            purge_failures.clone(),
        );
        // Every kind at zero from the start, so a rate over the first purge is right.
        for kind in PURGE_KINDS {
            drop(purge_rows.get_or_create(&Purged { kind }));
        }
        Self {
            registry,
            refresh,
            login,
            issued,
            login_failures,
            requests,
            pool,
            streams,
            hashes,
            purge_rows,
            purge_duration,
            purge_last_success,
            purge_failures,
        }
    }
}

impl Metrics {
    /// Counts a refresh outcome.
    pub fn refresh(&self, outcome: &'static str) {
        self.refresh.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts a login outcome.
    pub fn login(&self, outcome: &'static str) {
        self.login.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts a failed or refused login (`password`, `api_key`, `throttled`).
    pub fn login_failure(&self, kind: &'static str) {
        self.login_failures.get_or_create(&Failure { kind }).inc();
    }

    /// Failed or refused logins of one kind so far.
    pub fn login_failures(&self, kind: &'static str) -> u64 {
        self.login_failures.get_or_create(&Failure { kind }).get()
    }

    /// Counts a new session.
    pub fn issued(&self, kind: crate::SessionKind) {
        self.issued
            .get_or_create(&Mode {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Records one answered request.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&Request {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .observe(seconds);
    }

    /// Sets the gauges read at scrape time: the pool's connections, the open streams and the
    /// password hashing queue.
    pub fn observe(&self, now: &ScrapeTime) {
        let idle = i64::try_from(now.pool_idle).unwrap_or(i64::MAX);
        self.pool
            .get_or_create(&PoolState { state: "idle" })
            .set(idle);
        self.pool
            .get_or_create(&PoolState { state: "in_use" })
            .set(i64::from(now.pool_size).saturating_sub(idle).max(0));
        self.streams
            .set(i64::try_from(now.streams).unwrap_or(i64::MAX));
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.hashes
            .get_or_create(&HashState { state: "waiting" })
            .set(gauge(now.hashes.waiting));
        self.hashes
            .get_or_create(&HashState { state: "running" })
            .set(gauge(now.hashes.running));
    }

    /// Counts the rows a purge deleted, by kind (`login_records`: the login throttle rows
    /// and failures).
    pub fn purged(&self, report: &crate::store::ExpireReport, login_records: i64) {
        let rows = [report.expired, report.revoked, report.events, login_records];
        for (kind, n) in PURGE_KINDS.into_iter().zip(rows) {
            self.purge_rows
                .get_or_create(&Purged { kind })
                .inc_by(u64::try_from(n).unwrap_or(0));
        }
    }

    /// Records a purge that succeeded in `seconds`, ending now.
    pub fn purge_succeeded(&self, seconds: f64) {
        self.purge_duration.observe(seconds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.purge_last_success.set(now);
    }

    /// Counts a failed purge.
    pub fn purge_failed(&self) {
        self.purge_failures.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What [`Metrics::observe`] reads at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrapeTime {
    /// Connections of the database pool.
    pub pool_size: u32,
    /// Idle ones among them.
    pub pool_idle: usize,
    /// Open `GET /auth/events` streams.
    pub streams: usize,
    /// The password hashing queue.
    pub hashes: crate::auth::password::HashQueue,
}
