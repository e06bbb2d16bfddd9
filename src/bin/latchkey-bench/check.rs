//! `--scenario check`: stateful `GET /auth/session` with the cookie, against the store's
//! `find_session` statement issued through sqlx.

use std::time::Duration;

use anyhow::Context;
use latchkey::store::FIND_SESSION_SQL;

use crate::harness::{drive, header, quiesce, ratio};
use crate::refresh::RawChain;
use crate::service::{cookie_clients, drive_checks, Service, POOL};

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
        let ours = drive_checks("check", cs, duration).await;
        ours.print("check", n, "http");
        quiesce(&svc.pool).await?;
        let raws = ids
            .iter()
            .map(|&id| RawChain {
                pool: svc.pool.clone(),
                id,
            })
            .collect();
        let raw = drive(
            "check-raw".to_owned(),
            raws,
            duration,
            move |c: RawChain| async move {
                let r = sqlx::query(FIND_SESSION_SQL)
                    .bind(c.id)
                    .fetch_optional(&c.pool)
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|row| row.map(|_| ()).context("session vanished"));
                (c, r)
            },
        )
        .await;
        raw.print("check", n, "raw-sql");
        ratio("check", n, &ours, &raw, "goal: ok/s >= 0.6x");
    }
    Ok(())
}
