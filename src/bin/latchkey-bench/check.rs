//! `--scenario check`: stateful `GET /auth/session` with the cookie, against the store's
//! `find_session` statement issued through sqlx.

use std::time::Duration;

use crate::harness::{drive_clients, header, quiesce, raw_sql_ratio, Client};
use crate::refresh::{raw_chains, RawChain};
use crate::service::{cookie_clients, Service, POOL};

/// A raw client that only reads its session, as a stateful check does.
struct RawCheck(RawChain);

impl Client for RawCheck {
    /// One `find_session`, the statement behind a check.
    async fn call(&self) -> anyhow::Result<()> {
        self.0.find().await.map(|_| ())
    }
}

/// HTTP then raw, at each client count.
pub(crate) async fn run_scenario(
    svc: &Service,
    clients: &[usize],
    duration: Duration,
) -> anyhow::Result<()> {
    println!("scenario=check seconds={} pool={POOL}", duration.as_secs());
    header();
    for &n in clients {
        let (cs, ids) = cookie_clients(svc, n).await?;
        quiesce(&svc.pool).await?;
        let ours = drive_clients("check", cs, duration).await;
        ours.print("check", n, "http");
        quiesce(&svc.pool).await?;
        let raws = raw_chains(svc, &ids).into_iter().map(RawCheck).collect();
        let raw = drive_clients("check-raw", raws, duration).await;
        raw_sql_ratio("check", n, &ours, &raw, "goal: ok/s >= 0.6x");
    }
    Ok(())
}
