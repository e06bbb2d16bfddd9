//! Prometheus counters of the protocol, served at `GET /metrics` (OpenMetrics text).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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
        Self {
            registry,
            refresh,
            login,
            issued,
            login_failures,
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

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
