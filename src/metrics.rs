//! Prometheus metrics of the service, served at `GET /metrics` (OpenMetrics text): the
//! protocol's counters, request latencies by route, and the gauges of the database pool and
//! the live streams (read when scraped).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        Self {
            registry,
            refresh,
            login,
            issued,
            login_failures,
            requests,
            pool,
            streams,
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

    /// Sets the gauges read at scrape time: the pool's connections and the open streams.
    pub fn observe(&self, pool_size: u32, pool_idle: usize, streams: usize) {
        let idle = i64::try_from(pool_idle).unwrap_or(i64::MAX);
        self.pool
            .get_or_create(&PoolState { state: "idle" })
            .set(idle);
        self.pool
            .get_or_create(&PoolState { state: "in_use" })
            .set(i64::from(pool_size).saturating_sub(idle).max(0));
        self.streams.set(i64::try_from(streams).unwrap_or(i64::MAX));
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
