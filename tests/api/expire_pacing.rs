//! The purge paced by what it costs the traffic: against real PostgreSQL, a probe made slow
//! by a lock held on it makes the purge back off, and the purge still completes; the lock held
//! for good pauses it; a WAL budget rests by the purge's own WAL.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use latchkey::store::{ExpirePolicy, PaceStats, Store, MAX_DOUBLINGS, PURGE_PROBE_LOCK};
use sqlx::{Connection, PgPool};

use crate::helpers::TestDb;

/// Expired sessions to purge.
const ROWS: i64 = 1000;

async fn seed_expired(pool: &PgPool, rows: i64) {
    sqlx::query(
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at)
         SELECT gen_random_uuid(), 'stateful', 'user:' || gen_random_uuid(),
                sha256(convert_to('exp' || i, 'UTF8')), now() - interval '1 day', now() + interval '1 day'
         FROM generate_series(1, $1) AS i",
    )
    .bind(rows)
    .execute(pool)
    .await
    .expect("seed");
}

async fn sessions_left(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions")
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Ten batches of 100, each followed by a rest of at least four times its time (32 times at
/// the start's stretch of 8): the purge lasts long enough for its probe, every 40 ms, to
/// meet the lock.
fn paced() -> ExpirePolicy {
    ExpirePolicy {
        batch_size: 100,
        pause_ratio: 4.0,
        target_slowdown: 1.5,
        ..ExpirePolicy::default()
    }
}

/// Purges with `paced()`; once the first batch is done and `slow_probe`, a task holds the
/// probe's advisory lock 100 ms in every 102 until the purge ends.
async fn purge(db: &TestDb, slow_probe: bool) -> (i64, PaceStats) {
    let store = Store::new(db.pool.clone());
    let batches = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let locker = {
        let (batches, done, url) = (batches.clone(), done.clone(), db.url());
        tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            while batches.load(Ordering::SeqCst) == 0 && !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let mut held = 0;
            while slow_probe && !done.load(Ordering::SeqCst) {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(PURGE_PROBE_LOCK)
                    .execute(&mut conn)
                    .await
                    .expect("lock");
                tokio::time::sleep(Duration::from_millis(100)).await;
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(PURGE_PROBE_LOCK)
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
                held += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            held
        })
    };
    let purged = tokio::time::timeout(
        Duration::from_secs(120),
        store.expire_paced(&paced(), |r| batches.store(r.batches, Ordering::SeqCst)),
    )
    .await
    .expect("the purge ends while its probe is slowed")
    .expect("purge");
    done.store(true, Ordering::SeqCst);
    let held = locker.await.expect("locker");
    assert_eq!(
        slow_probe,
        held > 0,
        "the lock was held while the purge ran"
    );
    (purged.0.expired, purged.1)
}

#[tokio::test]
async fn a_slowed_probe_makes_the_purge_back_off_and_it_still_completes() {
    let quiet_db = TestDb::new().await;
    let slowed_db = TestDb::new().await;
    seed_expired(&quiet_db.pool, ROWS).await;
    seed_expired(&slowed_db.pool, ROWS).await;

    let (expired, quiet) = purge(&quiet_db, false).await;
    assert_eq!(expired, ROWS);
    assert_eq!(sessions_left(&quiet_db.pool).await, 0);
    let (expired, slowed) = purge(&slowed_db, true).await;
    assert_eq!(expired, ROWS, "every row purged despite the slow probe");
    assert_eq!(sessions_left(&slowed_db.pool).await, 0);

    assert!(quiet.baseline.is_some() && slowed.baseline.is_some());
    // Held 100 ms in 102, nearly every probe waits far past 1.5× an idle time of a few
    // milliseconds: the rest stretches to its cap.
    assert!(slowed.slow_probes >= 4, "slow readings: {slowed:?}");
    assert_eq!(slowed.largest_stretch, 1 << MAX_DOUBLINGS, "{slowed:?}");
    assert!(
        slowed.slow_probes > quiet.slow_probes && slowed.rested > quiet.rested,
        "slowed {slowed:?} against quiet {quiet:?}"
    );
}

#[tokio::test]
async fn the_probe_lock_held_pauses_the_purge_until_it_is_released() {
    let rows = 1000;
    let db = TestDb::new().await;
    seed_expired(&db.pool, rows).await;
    let mut holder = hold_probe_lock(&db).await;
    let store = Store::new(db.pool.clone());
    let batches = Arc::new(AtomicI64::new(0));
    let purge = {
        let batches = batches.clone();
        tokio::spawn(async move {
            store
                .expire_paced(&paced(), move |r| {
                    batches.store(r.batches, Ordering::SeqCst)
                })
                .await
        })
    };
    // The first batch runs; then the probe, reading its idle time, waits on the lock, and
    // no batch starts while it does. (Counted on the lock holder's connection.)
    let count = "SELECT count(*) FROM latchkey.sessions";
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let left: i64 = sqlx::query_scalar(count)
            .fetch_one(&mut holder)
            .await
            .expect("count");
        assert_eq!(left, rows - 100, "paused after its first batch");
    }
    assert!(batches.load(Ordering::SeqCst) <= 1);
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PURGE_PROBE_LOCK)
        .execute(&mut holder)
        .await
        .expect("unlock");
    let (report, stats) = tokio::time::timeout(Duration::from_secs(60), purge)
        .await
        .expect("the purge goes on once the lock is released")
        .expect("task")
        .expect("purge");
    assert_eq!(report.expired, rows);
    assert_eq!(sessions_left(&db.pool).await, 0);
    assert!(stats.baseline.is_some(), "{stats:?}");
}

/// A connection of its own holding the probe's lock exclusively: a probe waits until it is
/// released or the connection ends.
async fn hold_probe_lock(db: &TestDb) -> sqlx::PgConnection {
    let mut holder = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PURGE_PROBE_LOCK)
        .execute(&mut holder)
        .await
        .expect("lock");
    holder
}

/// Purges 50 expired sessions with `policy` while the probe's lock is held the whole time: a
/// purge that read a probe would wait for ever, so this one must read none.
async fn purge_50_without_a_probe(policy: &ExpirePolicy) -> PaceStats {
    let db = TestDb::new().await;
    seed_expired(&db.pool, 50).await;
    let _holder = hold_probe_lock(&db).await;
    let store = Store::new(db.pool.clone());
    let (report, stats) =
        tokio::time::timeout(Duration::from_secs(30), store.expire_paced(policy, |_| {}))
            .await
            .expect("no probe to wait on")
            .expect("purge");
    assert_eq!(report.expired, 50);
    assert_eq!(stats.baseline, None);
    assert_eq!(stats.probes, 0);
    assert_eq!(stats.slow_probes, 0);
    stats
}

#[tokio::test]
async fn a_purge_whose_first_batch_is_not_full_runs_no_probe() {
    // Batches of 100: the first finds the 50 rows.
    let stats = purge_50_without_a_probe(&paced()).await;
    assert_eq!(stats.largest_stretch, 1, "the ratio alone: {stats:?}");
}

#[tokio::test]
async fn with_the_pacing_off_the_probe_is_not_read() {
    // Batches of 20: full, but no probe to start.
    purge_50_without_a_probe(&ExpirePolicy {
        batch_size: 20,
        target_slowdown: 0.0,
        ..ExpirePolicy::default()
    })
    .await;
}

/// The server's WAL position in bytes.
async fn wal_position(pool: &PgPool) -> u64 {
    let at: String = sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::text")
        .fetch_one(pool)
        .await
        .expect("wal position");
    at.split('.')
        .next()
        .and_then(|b| b.parse().ok())
        .expect("bytes")
}

#[tokio::test]
async fn a_wal_budget_rests_by_the_purges_own_wal() {
    let db = TestDb::new().await;
    seed_expired(&db.pool, ROWS).await;
    let store = Store::new(db.pool.clone());
    // No ratio and no probe: only the WAL budget (100 kB/s) can make the purge rest.
    let policy = ExpirePolicy {
        batch_size: 50,
        pause_ratio: 0.0,
        target_slowdown: 0.0,
        max_wal_rate: 100_000,
        ..ExpirePolicy::default()
    };
    let before = wal_position(&db.pool).await;
    let (report, stats) = store.expire_paced(&policy, |_| {}).await.expect("purge");
    let server = wal_position(&db.pool).await - before;
    assert_eq!(report.expired, ROWS);
    assert_eq!(sessions_left(&db.pool).await, 0);
    // Deleting 300 rows writes WAL; the estimate of the purge's own never exceeds what the
    // server wrote meanwhile (other tests' traffic included), and it made the purge rest.
    assert!(
        stats.own_wal > 0 && stats.own_wal <= server,
        "{stats:?}, server {server}"
    );
    assert!(stats.rested > Duration::ZERO, "{stats:?}");
}
