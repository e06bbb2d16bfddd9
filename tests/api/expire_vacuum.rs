//! `latchkey expire --vacuum-after`: autovacuum held off `sessions` by a lock while the purge
//! runs, one `VACUUM (ANALYZE)` after it, and nothing left behind by a purge that dies.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};

use crate::expire::url_of;
use crate::helpers::TestDb;

/// `n` expired sessions.
async fn seed_expired(pool: &PgPool, n: i32) {
    sqlx::query(
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at)
         SELECT md5('vac' || i)::uuid, 'stateful', 'user:' || md5('owner' || (i % 9))::uuid,
                sha256(convert_to('vac' || i, 'UTF8')), now() - interval '1 minute',
                now() + interval '2 days'
         FROM generate_series(1, $1) AS i",
    )
    .bind(n)
    .execute(pool)
    .await
    .expect("seed");
}

/// `latchkey expire` with `args`, running; stdout and stderr piped. Through the pooler when
/// the tests run behind one (`scripts/test-through-pooler.sh`): the batches through it, the
/// hold and the vacuum straight to the server (`--listen-database-url`).
fn spawn(url: &str, args: &[&str]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command.arg("expire").args(args).env("DATABASE_URL", url);
    if let Some(pooled) = crate::helpers::through_pooler(url) {
        command
            .env("DATABASE_URL", pooled)
            .env("LATCHKEY_POOLER", "transaction")
            .env("LATCHKEY_LISTEN_DATABASE_URL", url);
    }
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run latchkey")
}

/// Waits for a `latchkey expire` started by [`spawn`] to end: whether it succeeded, its
/// stdout and its stderr.
async fn finish(child: Child) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lock autovacuum needs, tried as autovacuum tries it (without waiting): whether it
/// would get the table now.
async fn autovacuum_would_get_the_table(url: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    let got = sqlx::query("LOCK TABLE latchkey.sessions IN SHARE UPDATE EXCLUSIVE MODE NOWAIT")
        .execute(&mut *tx)
        .await;
    let would = match got {
        Ok(_) => true,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => false,
        Err(e) => panic!("lock: {e}"),
    };
    // Let go at once, so the lock is not taken for the purge's.
    tx.rollback().await.expect("rollback");
    conn.close().await.expect("close");
    would
}

/// The backend holding `SHARE UPDATE EXCLUSIVE` on `sessions`: its state, whether it holds
/// back the vacuum horizon (an xmin or an xid).
async fn holder(pool: &PgPool) -> Option<(String, bool)> {
    sqlx::query_as::<_, (String, bool)>(
        "SELECT a.state, a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL
         FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE l.relation = 'latchkey.sessions'::regclass
           AND l.mode = 'ShareUpdateExclusiveLock' AND l.granted",
    )
    .fetch_optional(pool)
    .await
    .expect("pg_locks")
}

async fn remaining(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions")
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Polls `holder` every 20 ms until the purge holds the table (and has deleted something),
/// or panics after 20 s.
async fn wait_for_the_hold(pool: &PgPool, seeded: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((state, horizon)) = holder(pool).await {
            if remaining(pool).await < seeded {
                assert_eq!(state, "idle in transaction", "the hold runs no statement");
                assert!(!horizon, "the hold keeps no xmin and no xid");
                return;
            }
        }
        assert!(Instant::now() < deadline, "the purge never held the table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (vacuums, analyzes, autovacuums) of `sessions` so far.
async fn vacuum_counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT vacuum_count, analyze_count, autovacuum_count FROM pg_stat_user_tables
         WHERE relid = 'latchkey.sessions'::regclass",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_user_tables")
}

#[tokio::test]
async fn the_purge_holds_autovacuum_off_the_table_then_vacuums_it_once() {
    let db = TestDb::new().await;
    seed_expired(&db.pool, 4000).await;
    let url = url_of(&db).await;
    let before = vacuum_counts(&db.pool).await;
    // Batches of 20, resting five times each: the purge lasts seconds.
    let child = spawn(
        &url,
        &["--vacuum-after", "--batch", "20", "--pause-ratio", "5"],
    );
    wait_for_the_hold(&db.pool, 4000).await;
    assert!(
        !autovacuum_would_get_the_table(&url).await,
        "while the purge runs, autovacuum would skip sessions"
    );
    let (ok, stdout, stderr) = finish(child).await;
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("expired=4000 "), "{stdout}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("vacuumed: "))
        .unwrap_or_else(|| panic!("a vacuumed line: {stderr}"));
    assert!(
        line.contains(" cost_delay_ms=20 cost_limit=100"),
        "the default costs: {line}"
    );
    assert_eq!(remaining(&db.pool).await, 0);
    assert!(holder(&db.pool).await.is_none(), "the hold ended");
    assert!(autovacuum_would_get_the_table(&url).await);
    let after = vacuum_counts(&db.pool).await;
    assert_eq!(after.0, before.0 + 1, "one VACUUM: {before:?} → {after:?}");
    assert_eq!(
        after.1,
        before.1 + 1,
        "with ANALYZE: {before:?} → {after:?}"
    );
    // The vacuum took every deleted row: each page, empty now, is all-visible. It kept them
    // (TRUNCATE false: no ACCESS EXCLUSIVE lock in front of the traffic).
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_visibility")
        .execute(&db.pool)
        .await
        .expect("pg_visibility (contrib)");
    let (pages, visible): (i64, i64) = sqlx::query_as(
        "SELECT pg_relation_size('latchkey.sessions') / current_setting('block_size')::bigint,
                (SELECT all_visible FROM pg_visibility_map_summary('latchkey.sessions'))",
    )
    .fetch_one(&db.pool)
    .await
    .expect("visibility map");
    assert!(pages > 0, "the empty pages were kept");
    assert_eq!(visible, pages, "every page vacuumed");
    // The catalog was not touched: no storage parameter was set, even for a while.
    let options: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT reloptions FROM pg_class WHERE oid = 'latchkey.sessions'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .expect("reloptions");
    assert!(
        !options
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("autovacuum_enabled")),
        "autovacuum_enabled untouched"
    );
}

#[tokio::test]
async fn a_purge_killed_while_it_holds_autovacuum_off_leaves_the_table_free() {
    let db = TestDb::new().await;
    seed_expired(&db.pool, 4000).await;
    let url = url_of(&db).await;
    let mut child = spawn(
        &url,
        &["--vacuum-after", "--batch", "10", "--pause-ratio", "20"],
    );
    wait_for_the_hold(&db.pool, 4000).await;
    assert!(!autovacuum_would_get_the_table(&url).await);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let left = remaining(&db.pool).await;
    assert!(left > 0, "killed midway: {left} of 4000 left");
    // The server sees the connection close at once: the hold goes with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !autovacuum_would_get_the_table(&url).await {
        assert!(
            Instant::now() < deadline,
            "the killed purge's hold outlived it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(holder(&db.pool).await.is_none());
    let (vacuums, _, _) = vacuum_counts(&db.pool).await;
    assert_eq!(vacuums, 0, "it never got to its vacuum");
}

#[tokio::test]
async fn a_role_that_may_not_vacuum_the_table_is_refused_before_anything_is_purged() {
    let db = TestDb::new().await;
    seed_expired(&db.pool, 100).await;
    let role = format!("lk_not_owner_{}", uuid::Uuid::new_v4().simple());
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await
        .expect("name");
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA latchkey TO {role}"),
        format!("GRANT SELECT, DELETE, UPDATE ON ALL TABLES IN SCHEMA latchkey TO {role}"),
        format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA latchkey TO {role}"),
    ] {
        sqlx::query(&sql).execute(&db.pool).await.expect(&sql);
    }
    let url =
        crate::helpers::server()
            .url_of(&name)
            .replacen("://postgres@", &format!("://{role}@"), 1);
    assert!(url.contains(&role), "the tests' URL names postgres: {url}");
    let out =
        tokio::task::spawn_blocking(move || spawn(&url, &["--vacuum-after"]).wait_with_output())
            .await
            .expect("join")
            .expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for sql in [
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA latchkey FROM {role}"),
        format!("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA latchkey FROM {role}"),
        format!("REVOKE ALL ON SCHEMA latchkey FROM {role}"),
        format!("DROP ROLE {role}"),
    ] {
        sqlx::query(&sql).execute(&db.pool).await.expect(&sql);
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{role} may not VACUUM latchkey.sessions")),
        "{stderr}"
    );
    assert_eq!(remaining(&db.pool).await, 100, "nothing purged");
}

#[tokio::test]
async fn behind_a_transaction_pooler_without_a_direct_url_it_is_refused() {
    let db = TestDb::new().await;
    seed_expired(&db.pool, 10).await;
    let url = url_of(&db).await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["--pooler", "transaction", "expire", "--vacuum-after"])
            .env("DATABASE_URL", url)
            .output()
            .expect("run latchkey")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("give --listen-database-url"), "{stderr}");
    assert_eq!(remaining(&db.pool).await, 10, "nothing purged");
}

#[tokio::test]
async fn another_maintenance_command_on_the_table_makes_it_wait_then_give_up_untouched() {
    let db = TestDb::new().await;
    seed_expired(&db.pool, 10).await;
    let url = url_of(&db).await;
    // A maintenance command (as CREATE INDEX CONCURRENTLY or a VACUUM would) holds the table.
    let mut other = PgConnection::connect(&url).await.expect("connect");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("LOCK TABLE latchkey.sessions IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("lock");
    let began = Instant::now();
    let u = url.clone();
    let out =
        tokio::task::spawn_blocking(move || spawn(&u, &["--vacuum-after"]).wait_with_output())
            .await
            .expect("join")
            .expect("wait");
    let waited = began.elapsed();
    tx.rollback().await.expect("rollback");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("held by another maintenance command"),
        "{stderr}"
    );
    assert!(waited >= Duration::from_secs(10), "it waited: {waited:?}");
    assert_eq!(remaining(&db.pool).await, 10, "nothing purged");
}

#[tokio::test]
async fn a_purge_bounded_in_time_keeps_what_it_deleted_vacuums_and_the_next_run_goes_on() {
    let db = TestDb::new().await;
    seed_expired(&db.pool, 4000).await;
    let url = url_of(&db).await;
    let before = vacuum_counts(&db.pool).await;
    // Batches of 10, each followed by a rest 100 times as long (at most 1 s), no probe: the
    // whole purge would take 40 s and more; bounded to 2 s.
    let began = Instant::now();
    let child = spawn(
        &url,
        &[
            "--vacuum-after",
            "--batch",
            "10",
            "--pause-ratio",
            "100",
            "--target-slowdown",
            "0",
            "--max-seconds",
            "2",
        ],
    );
    let (ok, stdout, stderr) = finish(child).await;
    let took = began.elapsed();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("stopped: max_seconds=2 reached"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(30), "bounded: {took:?}");
    let expired: i64 = stdout
        .strip_prefix("expired=")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a summary line: {stdout}"));
    assert!(expired > 0 && expired < 4000, "stopped midway: {stdout}");
    assert_eq!(
        remaining(&db.pool).await,
        4000 - expired,
        "what it said it deleted"
    );
    // It still vacuumed, and let go of the table.
    assert!(stderr.contains("vacuumed: "), "{stderr}");
    let after = vacuum_counts(&db.pool).await;
    assert_eq!(after.0, before.0 + 1, "one VACUUM: {before:?} → {after:?}");
    assert!(holder(&db.pool).await.is_none(), "the hold ended");
    // The next run, unbounded, takes the rest.
    let (ok, _, stderr) = finish(spawn(&url, &["--batch", "1000", "--target-slowdown", "0"])).await;
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("stopped:"), "{stderr}");
    assert_eq!(remaining(&db.pool).await, 0);
}

#[tokio::test]
async fn a_row_locked_while_the_batches_pass_it_is_purged_by_the_pass_after_the_vacuum() {
    let db = TestDb::new().await;
    // The earliest to expire, alone among live sessions on its heap page (a batch takes the
    // expired rows of its seeds' pages: this one only a pass from the start reaches once the
    // cursor is past it), then 4000 more.
    sqlx::query(
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at)
         SELECT md5('page' || i)::uuid, 'stateful', 'user:' || md5('owner')::uuid,
                sha256(convert_to('page' || i, 'UTF8')),
                now() + CASE WHEN i = 0 THEN interval '-1 hour' ELSE interval '1 day' END,
                now() + interval '2 days'
         FROM generate_series(0, 300) AS i",
    )
    .execute(&db.pool)
    .await
    .expect("seed the page");
    seed_expired(&db.pool, 4000).await;
    let expired = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM latchkey.sessions WHERE expires_at <= now()",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    let url = url_of(&db).await;
    // Held by another transaction when the purge starts: the first batch skips it.
    let mut holder = PgConnection::connect(&url).await.expect("connect");
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM latchkey.sessions WHERE id = md5('page0')::uuid FOR UPDATE")
        .execute(&mut *tx)
        .await
        .expect("lock one row");
    let child = spawn(
        &url,
        &["--vacuum-after", "--batch", "20", "--pause-ratio", "5"],
    );
    wait_for_the_hold(&db.pool, 4301).await;
    // Released behind the cursor while the batches go on (4000 rows, 20 a batch: seconds).
    tx.rollback().await.expect("release the row");
    // Queued behind the hold for the lock the vacuum needs: granted when the batches end and
    // the hold lets go, before the vacuum, which then waits for this transaction.
    let mut between = PgConnection::connect(&url).await.expect("connect");
    let mut tx = between.begin().await.expect("begin");
    sqlx::query("LOCK TABLE latchkey.sessions IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("the lock after the hold");
    assert_eq!(
        expired(db.pool.clone()).await,
        1,
        "no pass from the start before the vacuum: the row behind the cursor is still there"
    );
    tx.rollback().await.expect("let the vacuum go");
    let (ok, stdout, stderr) = finish(child).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("vacuumed: "), "{stderr}");
    assert!(stdout.starts_with("expired=4001 "), "{stdout}");
    assert_eq!(
        expired(db.pool.clone()).await,
        0,
        "the pass from the start after the vacuum took it"
    );
    assert_eq!(remaining(&db.pool).await, 300, "the live sessions stay");
}
