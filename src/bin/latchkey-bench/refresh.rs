//! `--scenario refresh`: stateless `POST /auth/refresh`, each client chaining its own tokens,
//! against the store's own statements (`find_session` + `rotate`) issued through sqlx.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use latchkey::auth::AuthConfig;
use latchkey::store::{FIND_SESSION_SQL, ROTATE_SQL};
use rand::RngCore;
use sqlx::postgres::PgRow;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{drive_clients, header, quiesce, raw_sql_ratio, Client};
use crate::service::{refresh_http, Service, POOL};

/// Size of a sealed successor (nonce + 32-byte secret + tag), for the raw rotate.
const SEALED_LEN: usize = 24 + 32 + 16;

/// Per-client state of the raw loops: the session, and the pool and settings to read and
/// rotate it with.
pub(crate) struct RawChain {
    pub(crate) pool: PgPool,
    pub(crate) id: Uuid,
    pub(crate) cfg: Arc<AuthConfig>,
}

/// One raw client per session of `ids`, on the service's pool with the default settings.
pub(crate) fn raw_chains(svc: &Service, ids: &[Uuid]) -> Vec<RawChain> {
    let cfg = Arc::new(AuthConfig::default());
    ids.iter()
        .map(|&id| RawChain {
            pool: svc.pool.clone(),
            id,
            cfg: cfg.clone(),
        })
        .collect()
}

impl RawChain {
    /// The session read as the store makes it (`find_session`).
    pub(crate) async fn find(&self) -> anyhow::Result<PgRow> {
        sqlx::query(FIND_SESSION_SQL)
            .bind(self.id)
            .fetch_optional(&self.pool)
            .await?
            .context("session vanished")
    }
}

impl Client for RawChain {
    /// One rotation as the store makes it: the session read, then the compare-and-swap.
    async fn call(&self) -> anyhow::Result<()> {
        let row = self.find().await?;
        let version: i64 = sqlx::Row::try_get(&row, "version")?;
        let mut hash = [0u8; 32];
        let mut sealed = [0u8; SEALED_LEN];
        rand::rng().fill_bytes(&mut hash);
        rand::rng().fill_bytes(&mut sealed);
        sqlx::query(ROTATE_SQL)
            .bind(self.id)
            .bind(version)
            .bind(&hash[..])
            .bind(&sealed[..])
            .bind(self.cfg.grace_secs as f64)
            .bind(self.cfg.idle_ttl_secs as f64)
            .fetch_optional(&self.pool)
            .await?
            .context("rotation lost its compare-and-swap")?;
        Ok(())
    }
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
        let raw = drive_clients("refresh-raw", raw_chains(svc, &ids), duration).await;
        raw_sql_ratio("refresh", n, &ours, &raw, "goal: ok/s >= 0.6x, p99 <= 2x");
    }
    Ok(())
}
