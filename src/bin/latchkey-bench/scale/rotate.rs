//! Many rotations, fast: the store's own rotation statement (`rotate_sql`, the service's
//! settings) from every connection of the pool in a tight loop, as pgbench would run it, on
//! live sessions drawn at random from the whole table; then the HOT share of the updates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::auth::AuthConfig;
use latchkey::store::rotate_sql;
use rand::RngCore;
use sqlx::PgPool;
use uuid::Uuid;

/// Size of a sealed successor (nonce + 32-byte secret + tag).
const SEALED_LEN: usize = 24 + 32 + 16;

/// What the statistics say about the updates of `sessions`.
#[derive(Clone, Copy)]
pub(crate) struct Updates {
    pub(crate) upd: i64,
    pub(crate) hot: i64,
    pub(crate) autovacuums: i64,
}

/// The counters of `sessions` now. A busy backend hands its counters to the statistics at
/// most once a second, an idle one within ten seconds: after a run, wait `settle`.
pub(crate) async fn updates(pool: &PgPool, settle: Duration) -> anyhow::Result<Updates> {
    tokio::time::sleep(settle).await;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await?;
    let (upd, hot, autovacuums): (i64, i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd, autovacuum_count FROM pg_stat_user_tables
         WHERE relid = 'latchkey.sessions'::regclass",
    )
    .fetch_one(pool)
    .await?;
    Ok(Updates {
        upd,
        hot,
        autovacuums,
    })
}

/// Runs `total` rotations from `tasks` connections, spread over up to `total` live sessions
/// drawn at random, with the expiry step `step` (default: the service's default step). Returns
/// (rotations done, failed, seconds).
pub(crate) async fn rotate(
    pool: &PgPool,
    total: u64,
    tasks: usize,
    step: Option<u64>,
) -> anyhow::Result<(u64, u64, f64)> {
    let picked: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, version FROM latchkey.sessions
         WHERE kind = 'stateless' AND revoked_at IS NULL AND expires_at > now() + interval '1 hour'
         ORDER BY random() LIMIT $1",
    )
    .bind(i64::try_from(total)?)
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(picked.len() >= tasks, "too few live sessions to rotate");
    let cfg = Arc::new(AuthConfig {
        expiry_step_override_secs: step,
        ..AuthConfig::default()
    });
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let per = picked.len().div_ceil(tasks);
    let began = Instant::now();
    let mut running = Vec::new();
    for hand in picked.chunks(per) {
        let mut hand = hand.to_vec();
        let (pool, cfg, done, failed) = (pool.clone(), cfg.clone(), done.clone(), failed.clone());
        running.push(tokio::spawn(async move {
            let mut i = 0;
            while done.fetch_add(1, Ordering::Relaxed) < total {
                let k = i % hand.len();
                let (id, version) = hand[k];
                let mut hash = [0u8; 32];
                let mut sealed = [0u8; SEALED_LEN];
                rand::rng().fill_bytes(&mut hash);
                rand::rng().fill_bytes(&mut sealed);
                let row = sqlx::query(rotate_sql(cfg.refresh_events))
                    .bind(id)
                    .bind(version)
                    .bind(&hash[..])
                    .bind(&sealed[..])
                    .bind(cfg.grace_secs as f64)
                    .bind(cfg.idle_ttl_secs as f64)
                    .bind(cfg.expiry_step_secs() as f64)
                    .fetch_optional(&pool)
                    .await?;
                match row {
                    Some(_) => hand[k].1 = version + 1,
                    None => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprint!(
                    "\r\x1b[Krotations: {} of {total}",
                    done.load(Ordering::Relaxed).min(total)
                );
            }
        })
    };
    for r in running {
        r.await??;
    }
    progress.abort();
    eprint!("\r\x1b[K");
    let failed = failed.load(Ordering::Relaxed);
    Ok((total - failed, failed, began.elapsed().as_secs_f64()))
}
