//! Rotations are HOT updates: the indexed `expires_at` moves only once per slide interval, so
//! most rotations write no index entry. Prints the HOT share of rotations (from
//! `pg_stat_user_tables`) with the slide interval and without it (the expiry moving on every
//! rotation, as it did before).

use latchkey::store::{RotatePolicy, Store};

use crate::helpers::{anonymous_stateless_session, TestDb};

const ROTATIONS: i64 = 300;

/// Rotates one session `ROTATIONS` times with `slide_min_secs` and returns
/// `(n_tup_upd, n_tup_hot_upd)` of `sessions` afterwards.
async fn rotate_and_count(slide_min_secs: f64) -> (i64, i64) {
    let db = TestDb::new().await;
    // Its own connection, closed before reading the statistics: a backend flushes its
    // counters when it exits.
    let pool = db.one_connection().await;
    let store = Store::new(pool.clone());
    let id = anonymous_stateless_session(&store, [1; 32], "hot").await;
    let policy = RotatePolicy {
        grace_secs: 30.0,
        idle_ttl_secs: 3600.0,
        slide_min_secs,
        record_event: false,
    };
    for version in 1..=ROTATIONS {
        let hash = [(version % 251) as u8; 32];
        let rotated = store
            .rotate(id, version, &hash, &[9; 72], &policy)
            .await
            .expect("rotate");
        assert!(rotated.is_some(), "rotation {version} lost its swap");
    }
    pool.close().await;
    let mut counts = (0, 0);
    for _ in 0..50 {
        counts = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = 'latchkey' AND relname = 'sessions'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("statistics");
        if counts.0 >= ROTATIONS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // A new snapshot of the statistics on the next read.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&db.pool)
            .await
            .expect("clear snapshot");
    }
    counts
}

#[tokio::test]
async fn most_rotations_are_hot_updates_when_the_expiry_slides_once_per_interval() {
    let (upd, hot) = rotate_and_count(60.0).await;
    let (upd_every, hot_every) = rotate_and_count(0.0).await;
    let share = hot as f64 / upd as f64;
    let share_every = hot_every as f64 / upd_every as f64;
    println!(
        "HOT share of {ROTATIONS} rotations: {hot}/{upd} = {:.0}% with a 60 s slide interval; \
         {hot_every}/{upd_every} = {:.0}% with the expiry moving on every rotation",
        share * 100.0,
        share_every * 100.0
    );
    assert!(
        upd >= ROTATIONS && upd_every >= ROTATIONS,
        "statistics flushed"
    );
    assert!(share >= 0.9, "HOT share {share:.2}");
    assert!(
        share_every < 0.1,
        "HOT share {share_every:.2} when expires_at moves"
    );
}
