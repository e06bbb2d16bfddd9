//! The faults the soak injects, when, and how long each one lasted until the instances
//! answered `/readyz` again: PostgreSQL restarted (`pg_ctl restart -m fast`), an instance
//! SIGKILLed and started again, the database connection cut at the proxy.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use latchkey::embedded::Cluster;

use super::instances::{Instance, InstanceConfig};
use super::proxy::DbProxy;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// `pg_ctl restart -m fast`: every connection closed, the server down for a moment.
    PgRestart,
    /// SIGKILL of instance `n`, then a new process on its port.
    KillInstance(usize),
    /// The proxy drops every database connection and refuses new ones for a while.
    CutDb,
    /// The primary stopped at once and its synchronous standby promoted (`failover`).
    PrimarySwitch,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PgRestart => f.write_str("pg-restart"),
            Self::KillInstance(n) => write!(f, "kill-instance-{}", instance_name(*n)),
            Self::CutDb => f.write_str("db-cut"),
            Self::PrimarySwitch => f.write_str("primary-switch"),
        }
    }
}

/// `a`, `b`, … for instance `n`.
pub(crate) fn instance_name(n: usize) -> char {
    char::from(b'a' + (n % 26) as u8)
}

/// When a fault began (after the start of the run), how long it lasted as injected, and how
/// long after its end every instance was ready again (`None`: not within a minute).
pub(crate) struct FaultRecord {
    pub(crate) kind: FaultKind,
    pub(crate) at: Duration,
    pub(crate) outage: Duration,
    pub(crate) recover: Option<Duration>,
}

/// The faults of a run of `duration`: a quiet first and last tenth (at least 3 s), and
/// between them one fault every 15 s or so, at least three, cycling through the kinds and
/// through the instances.
pub(crate) fn schedule(duration: Duration, instances: usize) -> Vec<(Duration, FaultKind)> {
    let quiet = (duration / 10).max(Duration::from_secs(3));
    let span = duration.saturating_sub(quiet * 2);
    let n = ((span.as_secs() / 15) as usize).max(3);
    let step = span / n as u32;
    (0..n)
        .map(|i| {
            let kind = match i % 3 {
                0 => FaultKind::PgRestart,
                1 => FaultKind::KillInstance((i / 3) % instances.max(1)),
                _ => FaultKind::CutDb,
            };
            (quiet + step * i as u32, kind)
        })
        .collect()
}

/// What the faults act on.
pub(crate) struct Targets<'a> {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) proxy: &'a DbProxy,
    pub(crate) instances: &'a mut [Instance],
    pub(crate) config: &'a InstanceConfig,
    pub(crate) http: &'a reqwest::Client,
    /// How long a cut lasts.
    pub(crate) cut: Duration,
}

/// Injects `kind` now (`at` after the start), waits for the recovery and records both.
pub(crate) async fn inject(
    kind: FaultKind,
    at: Duration,
    t: &mut Targets<'_>,
) -> anyhow::Result<FaultRecord> {
    eprintln!("soak: {:>6.1} s  {kind}", at.as_secs_f64());
    let began = Instant::now();
    match kind {
        FaultKind::PgRestart => {
            let cluster = t.cluster.clone();
            tokio::task::spawn_blocking(move || cluster.restart())
                .await?
                .context("pg_ctl restart")?;
        }
        FaultKind::KillInstance(n) => {
            let instance = &mut t.instances[n];
            instance.kill()?;
            instance.start(t.config, t.http).await?;
        }
        FaultKind::CutDb => {
            t.proxy.cut();
            tokio::time::sleep(t.cut).await;
            t.proxy.restore();
        }
        FaultKind::PrimarySwitch => {
            anyhow::bail!("a primary switch needs a standby: --scenario failover injects it")
        }
    }
    let outage = began.elapsed();
    let recover = recovery(t.instances, t.http).await;
    Ok(FaultRecord {
        kind,
        at,
        outage,
        recover,
    })
}

/// How long, from now, until every instance runs and answers `/readyz` 200 (`None`: not
/// within a minute).
pub(crate) async fn recovery(
    instances: &mut [Instance],
    http: &reqwest::Client,
) -> Option<Duration> {
    let ended = Instant::now();
    let mut recover = None;
    while ended.elapsed() < Duration::from_secs(60) {
        let mut all = true;
        for instance in instances.iter_mut() {
            all &= instance.alive() && instance.ready(http).await;
        }
        if all {
            recover = Some(ended.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    recover
}
