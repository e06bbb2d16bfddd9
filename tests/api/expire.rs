//! `latchkey expire`, the SQL function and procedure behind it, and the `session_overview`
//! view.

use std::collections::BTreeSet;
use std::sync::Arc;

use latchkey::store::{ExpireCursor, ExpirePolicy, ExpireReport, PurgeEnd, Store};
use sqlx::{Connection, PgPool};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::helpers::TestDb;

/// How many rows of each shape [`seed`] inserts.
#[derive(Debug, Clone, Copy)]
struct Mix {
    live: i32,
    idle_expired: i32,
    absolute_expired: i32,
    revoked_old: i32,
    revoked_recent: i32,
    revoked_old_expired: i32,
    events_old: i32,
    events_recent: i32,
}

const MIX: Mix = Mix {
    live: 30,
    idle_expired: 20,
    absolute_expired: 10,
    revoked_old: 7,
    revoked_recent: 5,
    revoked_old_expired: 4,
    events_old: 25,
    events_recent: 15,
};

impl Mix {
    fn expired(&self) -> i64 {
        i64::from(self.idle_expired + self.absolute_expired + self.revoked_old_expired)
    }
    fn revoked(&self) -> i64 {
        i64::from(self.revoked_old)
    }
    fn events(&self) -> i64 {
        i64::from(self.events_old)
    }
    /// Sessions that purged without a previous 'revoked' event get an 'expired' one.
    fn expired_events_added(&self) -> i64 {
        i64::from(self.idle_expired + self.absolute_expired)
    }
}

/// Inserts sessions of every shape, with ids derived from their shape and number so two
/// databases seeded alike hold the same ids. Defaults: revoked kept 7 days, events 90 days.
async fn seed(pool: &PgPool, mix: Mix) {
    // (tag, count, expires_at, absolute_expires_at, revoked_at)
    let shapes: [(&str, i32, &str, &str, &str); 6] = [
        (
            "live",
            mix.live,
            "now() + interval '1 hour'",
            "now() + interval '30 days'",
            "NULL",
        ),
        (
            "idle",
            mix.idle_expired,
            "now() - interval '1 minute'",
            "now() + interval '20 days'",
            "NULL",
        ),
        (
            "abs",
            mix.absolute_expired,
            "now() - interval '2 days'",
            "now() - interval '2 days'",
            "NULL",
        ),
        (
            "rold",
            mix.revoked_old,
            "now() + interval '1 hour'",
            "now() + interval '30 days'",
            "now() - interval '8 days'",
        ),
        (
            "rnew",
            mix.revoked_recent,
            "now() + interval '1 hour'",
            "now() + interval '30 days'",
            "now() - interval '1 day'",
        ),
        (
            "roldexp",
            mix.revoked_old_expired,
            "now() - interval '1 hour'",
            "now() + interval '5 days'",
            "now() - interval '9 days'",
        ),
    ];
    for (tag, n, exp, abs, rev) in shapes {
        let sql = format!(
            "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at,
                                   created_at, revoked_at, revoked_reason)
             SELECT md5('{tag}' || i)::uuid,
                    CASE WHEN i % 2 = 0 THEN 'stateful' ELSE 'stateless' END::latchkey.session_kind,
                    'user:' || md5('owner' || (i % 7))::uuid,
                    sha256(convert_to('{tag}' || i, 'UTF8')),
                    {exp}, {abs}, now() - interval '40 days', {rev},
                    CASE WHEN {rev} IS NULL THEN NULL ELSE 'logout' END
             FROM generate_series(1, $1) AS i"
        );
        sqlx::query(&sql)
            .bind(n)
            .execute(pool)
            .await
            .expect("seed sessions");
    }
    for (n, age) in [(mix.events_old, "100 days"), (mix.events_recent, "10 days")] {
        sqlx::query(&format!(
            "INSERT INTO latchkey.session_events (occurred_at, session_id, owner_key, event)
             SELECT now() - interval '{age}', md5('ev' || i)::uuid,
                    'user:' || md5('owner' || (i % 7))::uuid, 'created'
             FROM generate_series(1, $1) AS i"
        ))
        .bind(n)
        .execute(pool)
        .await
        .expect("seed events");
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn session_ids(pool: &PgPool) -> BTreeSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>("SELECT id FROM latchkey.sessions")
        .fetch_all(pool)
        .await
        .expect("ids")
        .into_iter()
        .collect()
}

/// The ids that must survive a purge with the default retention.
async fn survivors(pool: &PgPool) -> BTreeSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>(
        "SELECT id FROM latchkey.sessions
         WHERE expires_at > now() AND (revoked_at IS NULL OR revoked_at >= now() - interval '7 days')",
    )
    .fetch_all(pool)
    .await
    .expect("survivors")
    .into_iter()
    .collect()
}

/// The default policy with `batch` rows per batch and the `expired` events on, so the tests
/// also check that each purged session gets exactly one; paced by the ratio alone, so the
/// batch counts are exact (the pacing by the traffic: `expire_pacing.rs`).
fn policy(batch: u32) -> ExpirePolicy {
    ExpirePolicy {
        batch_size: batch,
        expired_events: true,
        target_slowdown: 0.0,
        ..ExpirePolicy::default()
    }
}

#[tokio::test]
async fn expire_deletes_expired_and_old_revoked_sessions_and_old_events_and_keeps_the_rest() {
    let db = TestDb::new().await;
    seed(&db.pool, MIX).await;
    let keep = survivors(&db.pool).await;
    assert_eq!(keep.len(), 35);
    let store = Store::new(db.pool.clone());

    let mut seen = Vec::new();
    let report = store
        .expire(&policy(3), |r| seen.push(*r))
        .await
        .expect("expire");

    assert_eq!(
        report,
        ExpireReport {
            expired: MIX.expired(),
            revoked: MIX.revoked(),
            events: MIX.events(),
            batches: 12, // ceil(34 / 3): three categories go in parallel
            dry_run: false,
        }
    );
    assert_eq!(seen.len(), 12, "progress sees every batch");
    assert_eq!(session_ids(&db.pool).await, keep);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM latchkey.session_events WHERE occurred_at < now() - interval '90 days'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM latchkey.session_events WHERE event = 'expired'"
        )
        .await,
        MIX.expired_events_added(),
        "each purged session that was not revoked gets an 'expired' event"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM latchkey.session_events").await,
        i64::from(MIX.events_recent) + MIX.expired_events_added()
    );

    let again = store
        .expire(&policy(3), |_| {})
        .await
        .expect("expire again");
    assert_eq!(again, ExpireReport::default(), "a second run finds nothing");
}

#[tokio::test]
async fn a_purge_past_its_deadline_starts_no_batch_and_a_distant_one_changes_nothing() {
    let db = TestDb::new().await;
    seed(&db.pool, MIX).await;
    let all = session_ids(&db.pool).await;
    let store = Store::new(db.pool.clone());
    let (report, _) = store
        .expire_paced_until(
            &policy(3),
            PurgeEnd {
                deadline: Some(std::time::Instant::now()),
                ..PurgeEnd::default()
            },
            |_| {},
        )
        .await
        .expect("expire");
    assert_eq!(
        report,
        ExpireReport::default(),
        "no batch after the deadline"
    );
    assert_eq!(session_ids(&db.pool).await, all, "nothing deleted");
    // A deadline far off changes nothing: every batch runs.
    let later = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    let (report, _) = store
        .expire_paced_until(
            &policy(3),
            PurgeEnd {
                deadline: Some(later),
                ..PurgeEnd::default()
            },
            |_| {},
        )
        .await
        .expect("expire");
    assert_eq!(report.batches, 12, "{report:?}");
    assert_eq!(session_ids(&db.pool).await, survivors(&db.pool).await);
}

#[tokio::test]
async fn dry_run_reports_what_would_go_and_deletes_nothing() {
    let db = TestDb::new().await;
    seed(&db.pool, MIX).await;
    let before = session_ids(&db.pool).await;
    let events_before = count(&db.pool, "SELECT count(*) FROM latchkey.session_events").await;
    let store = Store::new(db.pool.clone());

    let dry = ExpirePolicy {
        dry_run: true,
        ..policy(10)
    };
    let report = store.expire(&dry, |_| {}).await.expect("dry run");

    assert_eq!(
        report,
        ExpireReport {
            expired: MIX.expired(),
            revoked: MIX.revoked(),
            events: MIX.events(),
            batches: 4,
            dry_run: true,
        }
    );
    assert_eq!(session_ids(&db.pool).await, before);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM latchkey.session_events").await,
        events_before
    );

    // and the real run then removes exactly what the dry run announced
    let real = store.expire(&policy(10), |_| {}).await.expect("expire");
    assert_eq!(
        (real.expired, real.revoked, real.events, real.batches),
        (
            report.expired,
            report.revoked,
            report.events,
            report.batches
        )
    );
}

#[tokio::test]
async fn concurrent_expire_runs_delete_every_row_once_and_their_counts_add_up() {
    let db = TestDb::new().await;
    let mix = Mix {
        live: 500,
        idle_expired: 3000,
        absolute_expired: 1000,
        revoked_old: 700,
        revoked_recent: 100,
        revoked_old_expired: 300,
        events_old: 2500,
        events_recent: 100,
    };
    seed(&db.pool, mix).await;
    let keep = survivors(&db.pool).await;
    let store = Store::new(db.pool.clone());

    let runs = 8;
    let barrier = Arc::new(Barrier::new(runs));
    let mut tasks = Vec::new();
    for _ in 0..runs {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.expire(&policy(25), |_| {}).await.expect("expire")
        }));
    }
    let mut total = ExpireReport::default();
    let mut busy = 0;
    for t in tasks {
        let r = t.await.expect("task");
        busy += usize::from(r.batches > 0);
        total.expired += r.expired;
        total.revoked += r.revoked;
        total.events += r.events;
    }

    assert!(
        busy > 1,
        "the runs overlapped: {busy} of {runs} deleted something"
    );
    assert_eq!(total.expired, mix.expired());
    assert_eq!(total.revoked, mix.revoked());
    assert_eq!(total.events, mix.events());
    assert_eq!(session_ids(&db.pool).await, keep);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM latchkey.session_events WHERE event = 'expired'"
        )
        .await,
        mix.expired_events_added(),
        "no session got two 'expired' events"
    );
}

#[tokio::test]
async fn expire_skips_rows_locked_by_another_transaction_instead_of_waiting_for_them() {
    let db = TestDb::new().await;
    seed(&db.pool, MIX).await;
    let store = Store::new(db.pool.clone());

    // Another purge (or a DBA) holds ten expired rows and one old event.
    let mut other = sqlx::PgConnection::connect_with(&db.options)
        .await
        .expect("connect");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query(
        "SELECT id FROM latchkey.sessions WHERE expires_at <= now() AND revoked_at IS NULL
         ORDER BY id LIMIT 10 FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("lock sessions");
    sqlx::query("SELECT id FROM latchkey.session_events ORDER BY occurred_at LIMIT 1 FOR UPDATE")
        .fetch_all(&mut *tx)
        .await
        .expect("lock event");

    // The guard only turns a regression (waiting on the locks) into a failure, not a hang.
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        store.expire(&policy(4), |_| {}),
    )
    .await
    .expect("expire waited for locked rows")
    .expect("expire");
    assert_eq!(first.expired, MIX.expired() - 10);
    assert_eq!(first.revoked, MIX.revoked());
    assert_eq!(first.events, MIX.events() - 1);

    tx.rollback().await.expect("rollback");
    let second = store.expire(&policy(4), |_| {}).await.expect("expire");
    assert_eq!((second.expired, second.revoked, second.events), (10, 0, 1));
}

/// Sessions and events for a purge of many batches whose keys tie across batch boundaries:
/// 1000 expired sessions on 7 shared `expires_at` values (~143 each) and 350 on distinct ones,
/// 450 old revoked sessions on 3 shared `revoked_at`, 700 old events on 4 shared
/// `occurred_at`; and what must stay (live, recently revoked, recent events). Returns
/// (expired, revoked, events) to purge.
async fn seed_ties(pool: &PgPool) -> (i64, i64, i64) {
    let sessions = [
        // (tag, count, expires_at, revoked_at)
        (
            "tie",
            1000,
            "date_trunc('second', now()) - (i % 7 + 1) * interval '1 hour'",
            "NULL",
        ),
        (
            "one",
            350,
            "date_trunc('second', now()) - i * interval '1 second'",
            "NULL",
        ),
        (
            "live",
            300,
            "date_trunc('second', now()) + (i % 3 + 1) * interval '1 hour'",
            "NULL",
        ),
        (
            "rold",
            450,
            "now() + interval '1 hour'",
            "date_trunc('second', now()) - interval '8 days' - (i % 3) * interval '1 hour'",
        ),
        (
            "rnew",
            50,
            "now() + interval '1 hour'",
            "date_trunc('second', now()) - interval '1 day'",
        ),
    ];
    for (tag, n, exp, rev) in sessions {
        sqlx::query(&format!(
            "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at,
                                   created_at, revoked_at, revoked_reason)
             SELECT md5('{tag}' || i)::uuid, 'stateful', 'user:' || md5('owner' || (i % 7))::uuid,
                    sha256(convert_to('{tag}' || i, 'UTF8')), {exp}, now() + interval '20 days',
                    now() - interval '40 days', {rev}, CASE WHEN {rev} IS NULL THEN NULL ELSE 'logout' END
             FROM generate_series(1, $1) AS i"
        ))
        .bind(n)
        .execute(pool)
        .await
        .expect("seed sessions");
    }
    for (n, at) in [
        (
            700,
            "date_trunc('second', now()) - interval '100 days' - (i % 4) * interval '1 day'",
        ),
        (100, "now() - interval '10 days'"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO latchkey.session_events (occurred_at, session_id, owner_key, event)
             SELECT {at}, md5('ev' || i)::uuid, 'user:' || md5('owner' || (i % 7))::uuid, 'created'
             FROM generate_series(1, $1) AS i"
        ))
        .bind(n)
        .execute(pool)
        .await
        .expect("seed events");
    }
    (1350, 450, 700)
}

#[tokio::test]
async fn each_batch_resumes_at_the_cursor_and_the_cursor_passes_alone_reach_every_row() {
    let db = TestDb::new().await;
    let (expired, revoked, events) = seed_ties(&db.pool).await;
    let keep = survivors(&db.pool).await;
    assert_eq!(keep.len(), 350);
    let store = Store::new(db.pool.clone());
    let batch = policy(100);

    // A batch starts at its cursor: past every key, it finds nothing although rows are due.
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let past_all = ExpireCursor {
        expired: Some(later),
        revoked: Some(later),
        events: Some(later),
    };
    let (c, last) = store.expire_batch(&batch, &past_all).await.expect("batch");
    assert!(c.is_empty(), "{c:?}");
    assert_eq!(last, ExpireCursor::START, "nothing deleted, no key");

    // Cursor passes only, as `expire` runs them: every batch full until its category runs out,
    // nothing left below a cursor, and no row lost on a key shared across a batch boundary.
    let mut cursor = ExpireCursor::START;
    let mut got = Vec::new();
    loop {
        let (c, last) = store.expire_batch(&batch, &cursor).await.expect("batch");
        if c.is_empty() {
            break;
        }
        if let Some(at) = last.expired {
            let below: i64 =
                sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions WHERE expires_at < $1")
                    .bind(at)
                    .fetch_one(&db.pool)
                    .await
                    .expect("count");
            assert_eq!(below, 0, "an expired row was left below the cursor");
        }
        cursor.advance(&last);
        got.push((c.expired, c.revoked, c.events));
    }
    let sizes = |n: i64| -> Vec<i64> {
        (0..14)
            .map(|k| (n - 100 * k).clamp(0, 100))
            .collect::<Vec<_>>()
    };
    let (e, r, v): (Vec<i64>, Vec<i64>, Vec<i64>) = (
        got.iter().map(|g| g.0).collect(),
        got.iter().map(|g| g.1).collect(),
        got.iter().map(|g| g.2).collect(),
    );
    assert_eq!(e, sizes(expired), "expired per batch");
    assert_eq!(r, sizes(revoked), "revoked per batch");
    assert_eq!(v, sizes(events), "events per batch");

    // A pass from the start finds nothing the cursors missed.
    let (rest, _) = store
        .expire_batch(&batch, &ExpireCursor::START)
        .await
        .expect("batch");
    assert!(rest.is_empty(), "left behind the cursors: {rest:?}");
    assert_eq!(session_ids(&db.pool).await, keep);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM latchkey.session_events WHERE occurred_at < now() - interval '90 days'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM latchkey.session_events").await,
        100 + 1350,
        "recent events kept, one 'expired' event per purged session"
    );
}

#[tokio::test]
async fn expire_and_the_procedure_purge_many_batches_with_shared_keys_exactly() {
    let (by_store, by_sql) = tokio::join!(TestDb::new(), TestDb::new());
    let want = seed_ties(&by_store.pool).await;
    seed_ties(&by_sql.pool).await;
    let keep = survivors(&by_store.pool).await;

    let report = Store::new(by_store.pool.clone())
        .expire(&policy(100), |_| {})
        .await
        .expect("expire");
    assert_eq!((report.expired, report.revoked, report.events), want);
    assert_eq!(
        report.batches, 14,
        "ceil(1350 / 100): no batch wasted on ties"
    );
    assert_eq!(session_ids(&by_store.pool).await, keep);

    let (expired, revoked, events, batches): (i64, i64, i64, i64) =
        sqlx::query_as("CALL latchkey.latchkey_expire(batch_size => 100, expired_events => true)")
            .fetch_one(&by_sql.pool)
            .await
            .expect("call latchkey_expire");
    assert_eq!((expired, revoked, events), want);
    assert_eq!(batches, 14);
    assert_eq!(session_ids(&by_sql.pool).await, keep);
    for db in [&by_store, &by_sql] {
        assert_eq!(
            count(&db.pool, "SELECT count(*) FROM latchkey.session_events").await,
            100 + 1350
        );
    }
}

/// How a purge is started in [`a_row_locked_while_the_cursor_passes_it_is_purged_by_the_final_pass`].
#[derive(Debug, Clone, Copy)]
enum Purger {
    Store,
    Procedure,
    /// [`Store::expire_paced_until`] without its final pass ([`PurgeEnd::final_pass`]).
    StoreWithoutFinalPass,
}

/// 40 expired sessions with distinct `expires_at`, purged in batches of 50. The first one is
/// held `FOR UPDATE` by another transaction when the purge starts, so the first batch skips it
/// and takes the other 39 (it has room to spare, so its cursor goes past the last of them); a
/// trigger then stops the purge inside that batch (on the second row, behind an advisory lock
/// the test holds) until the test has released the first row. By then the cursor is past it:
/// only a pass from the start can still purge it.
async fn purge_with_a_row_released_behind_the_cursor(purger: Purger) {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at)
         SELECT md5('gone' || i)::uuid, 'stateful', 'user:' || md5('owner')::uuid,
                sha256(convert_to('gone' || i, 'UTF8')), now() - (100 - i) * interval '1 minute',
                now() + interval '1 day'
         FROM generate_series(1, 40) AS i",
    )
    .execute(&db.pool)
    .await
    .expect("seed");
    let locked: Uuid = sqlx::query_scalar("SELECT md5('gone1')::uuid")
        .fetch_one(&db.pool)
        .await
        .expect("id");
    sqlx::query(
        "CREATE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN OLD; END $$",
    )
    .execute(&db.pool)
    .await
    .expect("gate function");
    sqlx::query(
        "CREATE TRIGGER test_gate BEFORE DELETE ON latchkey.sessions FOR EACH ROW
         WHEN (OLD.id = md5('gone2')::uuid) EXECUTE FUNCTION test_gate()",
    )
    .execute(&db.pool)
    .await
    .expect("gate trigger");

    let mut gate = sqlx::PgConnection::connect_with(&db.options)
        .await
        .expect("connect");
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut gate)
        .await
        .expect("close the gate");
    let mut holder = sqlx::PgConnection::connect_with(&db.options)
        .await
        .expect("connect");
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query("SELECT id FROM latchkey.sessions WHERE id = $1 FOR UPDATE")
        .bind(locked)
        .fetch_one(&mut *tx)
        .await
        .expect("lock the first row");

    let pool = db.pool.clone();
    let purge = tokio::spawn(async move {
        match purger {
            Purger::Store => {
                let r = Store::new(pool)
                    .expire(&policy(50), |_| {})
                    .await
                    .expect("expire");
                (r.expired, r.batches)
            }
            Purger::StoreWithoutFinalPass => {
                let end = PurgeEnd {
                    final_pass: false,
                    ..PurgeEnd::default()
                };
                let (r, _) = Store::new(pool)
                    .expire_paced_until(&policy(50), end, |_| {})
                    .await
                    .expect("expire");
                (r.expired, r.batches)
            }
            Purger::Procedure => {
                let (expired, _, _, batches): (i64, i64, i64, i64) =
                    sqlx::query_as("CALL latchkey.latchkey_expire(batch_size => 50)")
                        .fetch_one(&pool)
                        .await
                        .expect("call latchkey_expire");
                (expired, batches)
            }
        }
    });

    // Wait until the first batch is held at the gate (it has already skipped the locked row).
    let waiting = "SELECT count(*) FROM pg_locks
                   WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count(&db.pool, waiting).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the purge never reached the gate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tx.rollback().await.expect("release the first row");
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut gate)
        .await
        .expect("open the gate");

    let (expired, batches) = tokio::time::timeout(std::time::Duration::from_secs(60), purge)
        .await
        .expect("purge finished")
        .expect("task");
    if let Purger::StoreWithoutFinalPass = purger {
        // The batches stopped at the cursor's end: the row behind it is left to the next purge.
        assert_eq!((expired, batches), (39, 1), "{purger:?}");
        let left: Uuid = sqlx::query_scalar("SELECT id FROM latchkey.sessions")
            .fetch_one(&db.pool)
            .await
            .expect("the row behind the cursor is still there");
        assert_eq!(left, locked);
        let next = Store::new(db.pool.clone())
            .expire(&policy(50), |_| {})
            .await
            .expect("the next purge");
        assert_eq!(
            (next.expired, next.batches),
            (1, 1),
            "it starts from the start"
        );
    } else {
        assert_eq!(expired, 40, "{purger:?}");
        assert_eq!(
            batches, 2,
            "{purger:?}: 1 cursor batch + the one from the start"
        );
    }
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM latchkey.sessions").await,
        0,
        "{purger:?}: the row released behind the cursor was not purged"
    );
}

#[tokio::test]
async fn a_row_locked_while_the_cursor_passes_it_is_purged_by_the_final_pass() {
    purge_with_a_row_released_behind_the_cursor(Purger::Store).await;
    purge_with_a_row_released_behind_the_cursor(Purger::Procedure).await;
}

#[tokio::test]
async fn without_the_final_pass_the_purge_leaves_the_row_behind_the_cursor_to_the_next() {
    purge_with_a_row_released_behind_the_cursor(Purger::StoreWithoutFinalPass).await;
}

/// `postgres://…/<database>` for the CLI, on the tests' server.
pub(crate) async fn url_of(db: &TestDb) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await
        .expect("name");
    crate::helpers::server().url_of(&name)
}

/// Runs the `latchkey` binary; returns (exit code, stdout, stderr).
async fn cli(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(&args)
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run latchkey");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn the_sql_procedure_and_the_cli_agree_on_the_same_data() {
    let (by_sql, by_cli) = tokio::join!(TestDb::new(), TestDb::new());
    seed(&by_sql.pool, MIX).await;
    seed(&by_cli.pool, MIX).await;
    assert_eq!(
        session_ids(&by_sql.pool).await,
        session_ids(&by_cli.pool).await
    );

    // pg_cron's way: one CALL, committing between batches.
    let (expired, revoked, events, batches): (i64, i64, i64, i64) =
        sqlx::query_as("CALL latchkey.latchkey_expire(batch_size => 5, expired_events => true)")
            .fetch_one(&by_sql.pool)
            .await
            .expect("call latchkey_expire");

    // cron's way: the binary.
    let url = url_of(&by_cli).await;
    let (code, out, err) = cli(
        &url,
        &["expire", "--batch", "5", "--expired-events", "--json"],
    )
    .await;
    assert_eq!(code, Some(0), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {out}");
    let json: serde_json::Value = serde_json::from_str(lines[0]).expect("json summary");

    assert_eq!(json["expired"], expired);
    assert_eq!(json["revoked"], revoked);
    assert_eq!(json["events"], events);
    assert_eq!(json["batches"], batches);
    assert_eq!(json["dry_run"], false);
    assert!(json["ms"].is_u64());
    assert_eq!(
        (expired, revoked, events),
        (MIX.expired(), MIX.revoked(), MIX.events())
    );
    assert_eq!(
        session_ids(&by_sql.pool).await,
        session_ids(&by_cli.pool).await
    );
    for pool in [&by_sql.pool, &by_cli.pool] {
        assert_eq!(
            count(pool, "SELECT count(*) FROM latchkey.session_events").await,
            i64::from(MIX.events_recent) + MIX.expired_events_added(),
            "recent events kept, one 'expired' event per purged session not revoked"
        );
    }
}

#[tokio::test]
async fn by_default_the_procedure_and_the_cli_purge_the_same_rows_and_record_no_expired_event() {
    let (by_sql, by_cli) = tokio::join!(TestDb::new(), TestDb::new());
    seed(&by_sql.pool, MIX).await;
    seed(&by_cli.pool, MIX).await;
    let keep = survivors(&by_sql.pool).await;

    let (expired, revoked, events, _): (i64, i64, i64, i64) =
        sqlx::query_as("CALL latchkey.latchkey_expire(batch_size => 5)")
            .fetch_one(&by_sql.pool)
            .await
            .expect("call latchkey_expire");
    assert_eq!(
        (expired, revoked, events),
        (MIX.expired(), MIX.revoked(), MIX.events())
    );

    let url = url_of(&by_cli).await;
    let (code, out, err) = cli(&url, &["expire", "--batch", "5", "--json"]).await;
    assert_eq!(code, Some(0), "stderr: {err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("json summary");
    assert_eq!(
        (
            json["expired"].clone(),
            json["revoked"].clone(),
            json["events"].clone()
        ),
        (expired.into(), revoked.into(), events.into())
    );

    for pool in [&by_sql.pool, &by_cli.pool] {
        assert_eq!(session_ids(pool).await, keep);
        assert_eq!(
            count(
                pool,
                "SELECT count(*) FROM latchkey.session_events WHERE event = 'expired'"
            )
            .await,
            0,
            "no 'expired' event was recorded"
        );
        assert_eq!(
            count(pool, "SELECT count(*) FROM latchkey.session_events").await,
            i64::from(MIX.events_recent),
            "only the recent events are left"
        );
    }
}

#[tokio::test]
async fn the_cli_prints_a_summary_line_and_its_dry_run_deletes_nothing() {
    let db = TestDb::new().await;
    seed(&db.pool, MIX).await;
    let before = session_ids(&db.pool).await;
    let url = url_of(&db).await;

    let (code, out, err) = cli(&url, &["expire", "--dry-run", "--batch", "10"]).await;
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(
        out.starts_with("expired=34 revoked=7 events=25 batches=4 ms="),
        "summary: {out}"
    );
    assert!(out.trim_end().ends_with("dry_run=true"), "summary: {out}");
    assert_eq!(out.lines().count(), 1);
    assert_eq!(session_ids(&db.pool).await, before);

    let (code, out, _) = cli(
        &url,
        &["expire", "--retain-revoked", "0", "--retain-events", "0"],
    )
    .await;
    assert_eq!(code, Some(0));
    // Retention 0: every revoked session goes, and every event older than the batch that
    // looks at it (the 40 seeded; the purge records no 'expired' event by default).
    assert!(
        out.starts_with("expired=34 revoked=12 events=40 batches=1 ms="),
        "summary: {out}"
    );
}

#[tokio::test]
async fn the_cli_fails_with_a_clear_message_on_bad_flags_or_an_unreachable_database() {
    let db = TestDb::new().await;
    let url = url_of(&db).await;

    let (code, _, err) = cli(&url, &["expire", "--batch", "0"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("--batch"), "stderr: {err}");

    let (code, _, err) = cli(&url, &["expire", "--retain-events", "forever"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("--retain-events"), "stderr: {err}");

    for ratio in ["--pause-ratio=-1", "--pause-ratio=101", "--pause-ratio=NaN"] {
        let (code, _, err) = cli(&url, &["expire", ratio]).await;
        assert_eq!(code, Some(2), "{ratio}");
        assert!(err.contains("--pause-ratio"), "stderr: {err}");
    }

    for bound in [
        "--max-seconds=-1",
        "--max-seconds=31622401",
        "--max-seconds=18446744073709551615",
    ] {
        let (code, _, err) = cli(&url, &["expire", bound]).await;
        assert_eq!(code, Some(2), "{bound}");
        assert!(err.contains("--max-seconds"), "stderr: {err}");
    }

    let (code, out, err) = cli("postgres://postgres@127.0.0.1:1/nowhere", &["expire"]).await;
    assert_eq!(code, Some(1));
    assert!(out.is_empty(), "no summary on failure: {out}");
    assert!(
        err.contains("error: connecting to PostgreSQL"),
        "stderr: {err}"
    );
}

#[tokio::test]
async fn the_sql_function_and_procedure_refuse_bad_arguments() {
    let db = TestDb::new().await;
    for bad in [
        "SELECT * FROM latchkey.latchkey_expire_batch(0)",
        "CALL latchkey.latchkey_expire(pause_ratio => -1)",
        "CALL latchkey.latchkey_expire(pause_ratio => 101)",
        "CALL latchkey.latchkey_expire(pause_ratio => 'NaN')",
    ] {
        let err = sqlx::query(bad)
            .execute(&db.pool)
            .await
            .expect_err("refused");
        let db_err = err.as_database_error().expect("database error");
        assert_eq!(db_err.code().as_deref(), Some("22023"), "{bad}");
    }
}

#[tokio::test]
async fn session_overview_shows_each_state_and_no_secret() {
    let db = TestDb::new().await;
    seed(&db.pool, MIX).await;
    sqlx::query("UPDATE latchkey.sessions SET data = '{\"cart\": \"secret-value\", \"theme\": 1}'")
        .execute(&db.pool)
        .await
        .expect("data");

    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM latchkey.session_overview GROUP BY state ORDER BY state",
    )
    .fetch_all(&db.pool)
    .await
    .expect("states");
    assert_eq!(
        states,
        vec![
            ("active".to_owned(), i64::from(MIX.live)),
            (
                "expired".to_owned(),
                i64::from(MIX.idle_expired + MIX.absolute_expired)
            ),
            (
                "revoked".to_owned(),
                i64::from(MIX.revoked_old + MIX.revoked_recent + MIX.revoked_old_expired)
            ),
        ]
    );

    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute
         WHERE attrelid = 'latchkey.session_overview'::regclass AND attnum > 0",
    )
    .fetch_all(&db.pool)
    .await
    .expect("columns");
    for secret in ["token_hash", "prev_token_hash", "sealed_successor", "data"] {
        assert!(!columns.iter().any(|c| c == secret), "{secret} is exposed");
    }
    let row = sqlx::query_scalar::<_, String>(
        "SELECT row_to_json(o)::text FROM latchkey.session_overview o LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("row");
    assert!(!row.contains("secret-value"), "data values leak: {row}");
    assert!(
        row.contains("[\"cart\",\"theme\"]"),
        "data keys shown: {row}"
    );
}

#[tokio::test]
async fn every_table_view_column_and_function_of_the_schema_has_a_comment() {
    let db = TestDb::new().await;
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname || coalesce('.' || a.attname, '')
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'latchkey'
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relkind IN ('r', 'v') AND c.relname NOT LIKE '\\_sqlx%'
           AND (a.attnum IS NULL AND obj_description(c.oid, 'pg_class') IS NULL
                OR a.attnum IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL)
         UNION ALL
         SELECT c.relname FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'latchkey'
         WHERE c.relkind IN ('r', 'v') AND c.relname NOT LIKE '\\_sqlx%'
           AND obj_description(c.oid, 'pg_class') IS NULL
         UNION ALL
         SELECT p.proname::text FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'latchkey'
         WHERE obj_description(p.oid, 'pg_proc') IS NULL",
    )
    .fetch_all(&db.pool)
    .await
    .expect("catalog");
    assert!(missing.is_empty(), "without COMMENT ON: {missing:?}");
}

/// `key=value` pairs of a logfmt line without quoted values, in order.
fn logfmt_pairs(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {pair:?} in {line:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn the_summary_line_is_logfmt_and_carries_the_same_figures_as_its_json_form() {
    let (as_text, as_json) = tokio::join!(TestDb::new(), TestDb::new());
    seed(&as_text.pool, MIX).await;
    seed(&as_json.pool, MIX).await;
    let began = time::OffsetDateTime::now_utc();

    let (code, out, err) = cli(&url_of(&as_text).await, &["expire", "--batch", "5"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    let pairs = logfmt_pairs(out.trim_end());
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let expected_keys = [
        "expired",
        "revoked",
        "events",
        "batches",
        "ms",
        "logins",
        "seconds",
        "finished_at",
        "dry_run",
    ];
    assert_eq!(keys, expected_keys, "{out}");
    let text: std::collections::HashMap<_, _> = pairs.into_iter().collect();

    let (code, out, err) = cli(
        &url_of(&as_json).await,
        &["expire", "--batch", "5", "--json"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let json_keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted_keys = expected_keys.to_vec();
    sorted_keys.sort_unstable();
    let mut json_sorted = json_keys.clone();
    json_sorted.sort_unstable();
    assert_eq!(json_sorted, sorted_keys, "the same figures: {out}");

    // The rows: what the seed put there, the same in both forms.
    for (key, rows) in [
        ("expired", MIX.expired()),
        ("revoked", MIX.revoked()),
        ("events", MIX.events()),
    ] {
        assert_eq!(text[key], rows.to_string(), "{key}");
        assert_eq!(json[key], rows, "{key}");
    }
    assert_eq!(text["batches"], json["batches"].to_string());
    assert_eq!(text["logins"], json["logins"].to_string());
    assert_eq!(
        (text["dry_run"].as_str(), &json["dry_run"]),
        ("false", &false.into())
    );
    // The timings agree with each other within each form, and the end is now.
    for (ms, seconds) in [
        (
            text["ms"].parse::<f64>().expect("ms"),
            text["seconds"].parse::<f64>().expect("seconds"),
        ),
        (
            json["ms"].as_f64().expect("ms"),
            json["seconds"].as_f64().expect("seconds"),
        ),
    ] {
        assert!(
            (ms / 1000.0 - seconds).abs() < 0.002,
            "{ms} ms vs {seconds} s"
        );
    }
    for finished in [
        text["finished_at"].clone(),
        json["finished_at"].as_str().expect("string").to_owned(),
    ] {
        let at =
            time::OffsetDateTime::parse(&finished, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{finished}: {e}"));
        assert!(at >= began - time::Duration::seconds(1), "{finished}");
        assert!(at <= time::OffsetDateTime::now_utc(), "{finished}");
    }
}

/// The value of the sample `name` (with its labels, exactly) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

// Two workers: the test blocks one reading the service's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_exports_its_rows_duration_and_last_success_on_metrics() {
    let db = TestDb::new().await;
    seed(&db.pool, MIX).await;
    let began = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    // One sweep at start, the next an hour later: the figures below are that one sweep's.
    let (mut child, rx) = crate::helpers::spawn_serve(
        &url_of(&db).await,
        &crate::helpers::random_jwt_secret(),
        &[
            "--sweep-interval-secs",
            "3600",
            "--metrics-bind",
            "127.0.0.1:0",
        ],
    );
    let mut seen = Vec::new();
    let mut metrics = None;
    let mut swept = false;
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) {
        if line.contains("metrics listening") {
            metrics = line
                .split("addr=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned);
        }
        swept |= line.contains("sweeper purged");
        seen.push(line);
        if swept && metrics.is_some() {
            break;
        }
    }
    let metrics = metrics.unwrap_or_else(|| panic!("no metrics listener: {seen:?}"));
    assert!(swept, "no sweep logged: {seen:?}");
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let _ = child.kill();
    let _ = child.wait();

    for (kind, rows) in [
        ("expired_sessions", MIX.expired()),
        ("revoked_sessions", MIX.revoked()),
        ("events", MIX.events()),
        ("login_records", 0),
    ] {
        let name = format!("latchkey_purge_rows_total{{kind=\"{kind}\"}}");
        assert_eq!(
            sample(&text, &name),
            Some(rows as f64),
            "{name} in:\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "latchkey_purge_duration_seconds_count"),
        Some(1.0),
        "{text}"
    );
    let took = sample(&text, "latchkey_purge_duration_seconds_sum").expect("sum");
    assert!(took > 0.0 && took < 60.0, "{took}");
    let last = sample(&text, "latchkey_purge_last_success_timestamp_seconds").expect("last");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(last >= began && last <= now, "{began} <= {last} <= {now}");
    assert_eq!(sample(&text, "latchkey_purge_failures_total"), Some(0.0));
    // And the rows are gone.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM latchkey.sessions").await,
        i64::from(MIX.live + MIX.revoked_recent)
    );
}

/// Enough expired sessions that a purge in batches of 20 with a rest as long as each batch
/// runs for a few seconds.
const LONG: Mix = Mix {
    live: 10,
    idle_expired: 8000,
    absolute_expired: 0,
    revoked_old: 0,
    revoked_recent: 0,
    revoked_old_expired: 0,
    events_old: 0,
    events_recent: 0,
};

#[tokio::test]
async fn a_long_purge_off_a_terminal_logs_its_rows_and_rate_every_interval() {
    let db = TestDb::new().await;
    seed(&db.pool, LONG).await;
    let (code, out, err) = cli(
        &url_of(&db).await,
        &[
            "expire",
            "--batch",
            "20",
            // Rests three times each batch: over two seconds, so at least one line at 1 s
            // even on a fast, idle machine.
            "--pause-ratio",
            "3",
            "--progress-secs",
            "1",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("expiring: "))
        .collect();
    assert!(!lines.is_empty(), "progress lines on stderr: {err}");
    let mut last_rows = 0;
    for line in &lines {
        let pairs: std::collections::HashMap<_, _> =
            logfmt_pairs(line.trim_start_matches("expiring: "))
                .into_iter()
                .collect();
        let rows: i64 = pairs["rows"].parse().expect("rows");
        let rate: f64 = pairs["rows_per_sec"].parse().expect("rate");
        // The last batch's line may say 8000: the purge still makes its closing passes.
        assert!(rows > last_rows && rows <= 8000, "{line}");
        assert!(rate > 0.0, "{line}");
        last_rows = rows;
    }
    let first = lines[0];
    assert!(
        !first.contains("rows=8000 "),
        "a line while the purge ran: {err}"
    );
    assert!(out.starts_with("expired=8000 "), "{out}");
}

#[tokio::test]
async fn a_long_purge_on_a_terminal_draws_a_bar_with_the_rate_and_the_time_left() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("`script` (util-linux) gives the purge a terminal; install util-linux");
    }
    let db = TestDb::new().await;
    seed(&db.pool, LONG).await;
    let url = url_of(&db).await;
    let out = tokio::task::spawn_blocking(move || {
        // `script` runs the command on a pseudo-terminal, as a person at a shell would.
        std::process::Command::new("script")
            .args(["-qec"])
            .arg(format!(
                "{} expire --batch 20 --pause-ratio 1",
                env!("CARGO_BIN_EXE_latchkey")
            ))
            .arg("/dev/null")
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run script")
    })
    .await
    .expect("join");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("/8,000 rows, "),
        "the bar counts to what is due: {screen}"
    );
    assert!(
        screen.contains(" left · expired="),
        "the time left: {screen}"
    );
    assert!(
        !screen.contains("expiring: "),
        "no log lines on a terminal: {screen}"
    );
    assert!(screen.contains("expired=8000 "), "the summary: {screen}");
}
