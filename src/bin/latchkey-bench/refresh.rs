//! `--scenario refresh`: stateless `POST /auth/refresh`, each client chaining its own tokens,
//! against the store's own statements (`find_session` + `rotate`) issued through sqlx.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use latchkey::auth::AuthConfig;
use latchkey::store::{FIND_SESSION_SQL, ROTATE_SQL};
use rand::RngCore;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{drive, header, quiesce, ratio, Stats};
use crate::service::{refresh_http, Service, POOL};

/// Size of a sealed successor (nonce + 32-byte secret + tag), for the raw rotate.
const SEALED_LEN: usize = 24 + 32 + 16;

/// Per-client state of the raw rotation loop.
pub(crate) struct RawChain {
    pub(crate) pool: PgPool,
    pub(crate) id: Uuid,
}

/// One rotation as the store makes it: the session read, then the compare-and-swap.
async fn raw_rotate(c: &RawChain, cfg: &AuthConfig) -> anyhow::Result<()> {
    let row = sqlx::query(FIND_SESSION_SQL)
        .bind(c.id)
        .fetch_optional(&c.pool)
        .await?
        .context("session vanished")?;
    let version: i64 = sqlx::Row::try_get(&row, "version")?;
    let mut hash = [0u8; 32];
    let mut sealed = [0u8; SEALED_LEN];
    rand::rng().fill_bytes(&mut hash);
    rand::rng().fill_bytes(&mut sealed);
    sqlx::query(ROTATE_SQL)
        .bind(c.id)
        .bind(version)
        .bind(&hash[..])
        .bind(&sealed[..])
        .bind(cfg.grace_secs as f64)
        .bind(cfg.idle_ttl_secs as f64)
        .fetch_optional(&c.pool)
        .await?
        .context("rotation lost its compare-and-swap")?;
    Ok(())
}

/// The raw rotation loop on the sessions `ids`, one task each.
async fn refresh_raw(svc: &Service, ids: &[Uuid], duration: Duration) -> Stats {
    let cfg = Arc::new(AuthConfig::default());
    let chains = ids
        .iter()
        .map(|&id| RawChain {
            pool: svc.pool.clone(),
            id,
        })
        .collect();
    drive(
        "refresh-raw".to_owned(),
        chains,
        duration,
        move |c: RawChain| {
            let cfg = cfg.clone();
            async move {
                let r = raw_rotate(&c, &cfg).await;
                (c, r)
            }
        },
    )
    .await
}

/// HTTP then raw, at each client count.
pub(crate) async fn run_scenario(
    svc: &Service,
    clients: &[usize],
    duration: Duration,
) -> anyhow::Result<()> {
    println!(
        "scenario=refresh seconds={} pool={POOL}",
        duration.as_secs()
    );
    header();
    for &n in clients {
        quiesce(&svc.pool).await?;
        let (ours, ids) = refresh_http(svc, n, duration, "refresh").await?;
        ours.print("refresh", n, "http");
        quiesce(&svc.pool).await?;
        let raw = refresh_raw(svc, &ids, duration).await;
        raw.print("refresh", n, "raw-sql");
        ratio("refresh", n, &ours, &raw, "goal: ok/s >= 0.6x, p99 <= 2x");
    }
    Ok(())
}
