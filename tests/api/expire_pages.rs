//! The purge takes expired sessions page by page (migration `20261130090000_expire_by_page`):
//! a batch reads its seeds (the earliest expired sessions) without locking them and takes the
//! expired rows of their heap pages, so each page it writes is written once for all its
//! expired rows, instead of once per row as when it took the earliest rows alone.

use std::collections::{BTreeMap, BTreeSet};

use latchkey::store::{ExpireCursor, ExpirePolicy, Store};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use crate::helpers::TestDb;

const PARTITIONED_SQL: &str = include_str!("../../sql/partitioned_sessions.sql");

/// Paced by the ratio alone and without rests, with the `expired` events on.
fn policy(batch: u32) -> ExpirePolicy {
    ExpirePolicy {
        batch_size: batch,
        expired_events: true,
        target_slowdown: 0.0,
        pause_ratio: 0.0,
        ..ExpirePolicy::default()
    }
}

/// 1200 sessions, every other one expired. The expired ones expire in a different order than
/// they were written, as sessions do: consecutive expiries lie 30 expired rows (60 rows)
/// apart in the table, so the earliest ones are spread over many pages.
async fn seed_scattered(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at)
         SELECT md5('page' || i)::uuid, 'stateful', 'user:' || md5('owner' || (i % 9))::uuid,
                sha256(convert_to('page' || i, 'UTF8')),
                CASE WHEN i % 2 = 0
                     THEN now() - interval '1 day'
                          + (((i / 2) % 30) * 20 + (i / 2) / 30) * interval '1 second'
                     ELSE now() + interval '1 day' END,
                now() + interval '2 days'
         FROM generate_series(0, 1199) AS i",
    )
    .execute(pool)
    .await
    .expect("seed");
}

/// Each session's heap page, and whether it has expired.
async fn pages(pool: &PgPool) -> BTreeMap<Uuid, (i64, bool)> {
    sqlx::query_as::<_, (Uuid, i64, bool)>(
        "SELECT id, (ctid::text::point)[0]::bigint, expires_at <= now() FROM latchkey.sessions",
    )
    .fetch_all(pool)
    .await
    .expect("pages")
    .into_iter()
    .map(|(id, page, expired)| (id, (page, expired)))
    .collect()
}

/// The session ids a query returns.
async fn ids(pool: &PgPool, sql: &str) -> BTreeSet<Uuid> {
    sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .expect("ids")
        .into_iter()
        .collect()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_batch_takes_every_expired_row_of_its_pages_and_locks_no_other_row() {
    let db = TestDb::new().await;
    seed_scattered(&db.pool).await;
    let store = Store::new(db.pool.clone());
    let before = pages(&db.pool).await;
    let earliest_pages = count(
        &db.pool,
        "SELECT count(DISTINCT (ctid::text::point)[0]) FROM (
             SELECT ctid FROM latchkey.sessions WHERE expires_at <= now()
             ORDER BY expires_at LIMIT 40) AS e",
    )
    .await;
    assert!(
        earliest_pages >= 10,
        "the layout spreads the 40 earliest over {earliest_pages} pages"
    );

    let (counts, cursor) = store
        .expire_batch(&policy(40), &ExpireCursor::START)
        .await
        .expect("one batch");
    assert_eq!(counts.expired, 40, "a batch still takes batch_size rows");
    let after = pages(&db.pool).await;
    let gone: Vec<Uuid> = before
        .keys()
        .filter(|id| !after.contains_key(id))
        .copied()
        .collect();
    assert_eq!(gone.len(), 40);
    assert!(
        gone.iter().all(|id| before[id].1),
        "only expired sessions went"
    );
    let written: BTreeSet<i64> = gone.iter().map(|id| before[id].0).collect();
    assert!(
        written.len() * 3 <= usize::try_from(earliest_pages).expect("a count"),
        "40 rows from {} pages, where the 40 earliest lie on {earliest_pages}",
        written.len()
    );
    // Every page the batch wrote but the last lost all its expired rows at once.
    let still_expired: BTreeSet<i64> = after
        .values()
        .filter(|(page, expired)| *expired && written.contains(page))
        .map(|(page, _)| *page)
        .collect();
    assert!(
        still_expired.len() <= 1,
        "pages written and left with expired rows: {still_expired:?} of {written:?}"
    );
    // The seeds were read without a lock: no surviving row carries one (a row lock is a write).
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM latchkey.sessions WHERE xmax::text <> '0'"
        )
        .await,
        0,
        "a row the batch did not delete was locked"
    );
    // Every expired row before the cursor is gone.
    let resume = cursor.expired.expect("a cursor after a batch that deleted");
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM latchkey.sessions WHERE expires_at <= now() AND expires_at < $1",
    )
    .bind(resume)
    .fetch_one(&db.pool)
    .await
    .expect("behind the cursor");
    assert_eq!(behind, 0, "expired rows left behind the cursor");

    // The whole purge takes every expired session and no live one, each with one event.
    let report = store.expire(&policy(40), |_| {}).await.expect("purge");
    assert_eq!(report.expired, 560);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM latchkey.sessions WHERE expires_at <= now()"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM latchkey.sessions").await,
        600
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM latchkey.session_events WHERE event = 'expired'"
        )
        .await,
        600
    );
}

#[tokio::test]
async fn when_every_row_of_the_seeds_pages_is_locked_the_batch_takes_the_earliest_unlocked_ones() {
    let db = TestDb::new().await;
    // Expiry rising with the row's place: the earliest expired sessions fill the first page.
    sqlx::query(
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at)
         SELECT md5('held' || i)::uuid, 'stateless', 'user:' || md5('owner')::uuid,
                sha256(convert_to('held' || i, 'UTF8')),
                now() - interval '1 day' + i * interval '1 second', now() + interval '2 days'
         FROM generate_series(1, 200) AS i",
    )
    .execute(&db.pool)
    .await
    .expect("seed");
    let store = Store::new(db.pool.clone());

    // Another transaction (a purge beside this one) holds every row of the first page.
    let mut other = sqlx::PgConnection::connect_with(&db.options)
        .await
        .expect("connect");
    let mut tx = other.begin().await.expect("begin");
    let held: BTreeSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM latchkey.sessions WHERE ctid < '(1,0)'::tid FOR UPDATE")
            .fetch_all(&mut *tx)
            .await
            .expect("lock the first page")
            .into_iter()
            .collect();
    assert!(held.len() >= 10, "the first page holds {} rows", held.len());

    let batch = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        store.expire_batch(&policy(10), &ExpireCursor::START),
    )
    .await
    .expect("the batch waited for locked rows")
    .expect("one batch");
    assert_eq!(
        batch.0.expired, 10,
        "the batch took the earliest rows no one held"
    );
    let left = ids(&db.pool, "SELECT id FROM latchkey.sessions").await;
    assert!(held.is_subset(&left), "a held row was deleted");

    tx.rollback().await.expect("release");
    let report = store.expire(&policy(10), |_| {}).await.expect("purge");
    assert_eq!(report.expired, 190);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM latchkey.sessions").await,
        0
    );
}

#[tokio::test]
async fn on_sessions_partitioned_by_id_the_purge_takes_the_expired_rows_and_only_them() {
    let db = TestDb::new().await;
    sqlx::raw_sql(PARTITIONED_SQL)
        .execute(&db.pool)
        .await
        .expect("sql/partitioned_sessions.sql");
    seed_scattered(&db.pool).await;
    let live = ids(
        &db.pool,
        "SELECT id FROM latchkey.sessions WHERE expires_at > now()",
    )
    .await;
    assert_eq!(live.len(), 600);

    // Each part numbers its pages from 0: a batch reads the pages of its seeds' own parts.
    let report = Store::new(db.pool.clone())
        .expire(&policy(25), |_| {})
        .await
        .expect("purge");
    assert_eq!(report.expired, 600);
    let left = ids(&db.pool, "SELECT id FROM latchkey.sessions").await;
    assert_eq!(left, live, "exactly the live sessions stay");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM latchkey.session_events WHERE event = 'expired'"
        )
        .await,
        600,
        "one event per purged session"
    );
}
