//! The listings of sessions and of API keys are one statement each for one owner and for all.
//! Under the generic plan a pooled connection ends up with, one owner still reads the owner
//! index and never runs the branch that scans the table for all owners.

use latchkey::store::{OwnerKey, Store};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::TestDb;

/// The statement of `.sqlx/` whose text contains every one of `parts`.
fn compiled(parts: &[&str]) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/.sqlx");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect(".sqlx") {
        let path = entry.expect("entry").path();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let query = v["query"].as_str().expect("query").to_owned();
        if parts.iter().all(|p| query.contains(p)) {
            found.push(query);
        }
    }
    assert_eq!(found.len(), 1, "one statement with {parts:?}: {found:#?}");
    found.remove(0)
}

/// `EXPLAIN (ANALYZE)` of the generic plan of `sql` run with `arg`.
async fn generic_run(conn: &mut PgConnection, sql: &str, arg: Option<&str>) -> String {
    sqlx::query(&format!("PREPARE listing AS {sql}"))
        .execute(&mut *conn)
        .await
        .expect("prepare");
    let arg = arg.map_or("NULL".to_owned(), |a| format!("'{a}'"));
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE listing({arg})"
    ))
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    sqlx::query("DEALLOCATE listing")
        .execute(&mut *conn)
        .await
        .expect("deallocate");
    plan.join("\n")
}

/// Every sequential scan of the plan was never executed, and no parallel worker started.
fn scans_nothing(plan: &str) -> bool {
    plan.lines()
        .filter(|l| l.contains("Seq Scan on"))
        .all(|l| l.contains("(never executed)"))
        && !plan
            .lines()
            .any(|l| l.contains("Workers Launched:") && !l.contains("Workers Launched: 0"))
}

#[tokio::test]
async fn one_owner_reads_the_owner_index_under_the_generic_plan_and_all_owners_the_newest() {
    let db = TestDb::new().await;
    let mut conn = PgConnection::connect_with(&db.options)
        .await
        .expect("connect");
    // 50k sessions and 50k keys over 5k users (10 each), then 1001 keys of one more user.
    for sql in [
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at,
                               created_at)
         SELECT gen_random_uuid(), 'stateless', 'user:' || md5((i % 5000)::text)::uuid,
                sha256(convert_to('t' || i, 'UTF8')), now() + interval '1 hour',
                now() + interval '1 hour', now() - i * interval '1 second'
         FROM generate_series(1, 50000) AS i",
        "INSERT INTO latchkey.api_keys (id, owner_key, key_hash, created_at)
         SELECT gen_random_uuid(), 'user:' || md5((i % 5000)::text)::uuid,
                sha256(convert_to('k' || i, 'UTF8')), now() - i * interval '1 second'
         FROM generate_series(1, 50000) AS i",
        "INSERT INTO latchkey.api_keys (id, owner_key, key_hash)
         SELECT gen_random_uuid(), 'user:' || md5('many')::uuid, sha256(convert_to('m' || i, 'UTF8'))
         FROM generate_series(1, 1001) AS i",
        "ANALYZE latchkey.sessions, latchkey.api_keys",
        "SET plan_cache_mode = force_generic_plan",
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect(sql);
    }
    let owner: String = sqlx::query_scalar("SELECT 'user:' || md5('7')::uuid::text")
        .fetch_one(&mut conn)
        .await
        .expect("owner");

    for (parts, index) in [
        (
            [
                "FROM latchkey.session_overview WHERE owner_key = $1",
                "UNION ALL",
            ],
            "sessions_owner_key_idx",
        ),
        (
            ["FROM latchkey.api_keys WHERE owner_key = $1", "UNION ALL"],
            "api_keys_owner_key_idx",
        ),
    ] {
        let sql = compiled(&parts);
        let one = generic_run(&mut conn, &sql, Some(&owner)).await;
        assert!(one.contains(index), "{one}");
        assert!(one.contains("One-Time Filter: ($1 IS NULL)"), "{one}");
        assert!(scans_nothing(&one), "{one}");
        let all = generic_run(&mut conn, &sql, None).await;
        assert!(all.contains("actual rows=1000 loops=1"), "{all}");
    }

    // What the store returns through the same statements.
    let store = Store::new(db.pool.clone());
    let owner: OwnerKey = owner.parse().expect("owner key");
    let mine = store.list_sessions(Some(&owner)).await.expect("list");
    assert_eq!(mine.len(), 10);
    assert!(mine
        .iter()
        .all(|s| s.owner_key == owner && s.state == "active"));
    assert!(mine.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    let all = store.list_sessions(None).await.expect("list all");
    assert_eq!(all.len(), 1000, "at most 1000");
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    let newest: Uuid =
        sqlx::query_scalar("SELECT id FROM latchkey.sessions ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .expect("newest");
    assert_eq!(all[0].session_id, newest);

    let keys = store.list_api_keys(Some(&owner)).await.expect("keys");
    assert_eq!(keys.len(), 10);
    let many: OwnerKey =
        sqlx::query_scalar::<_, String>("SELECT 'user:' || md5('many')::uuid::text")
            .fetch_one(&db.pool)
            .await
            .expect("many")
            .parse()
            .expect("owner key");
    let every = store.list_api_keys(Some(&many)).await.expect("keys of one");
    assert_eq!(
        every.len(),
        1001,
        "every key of one owner, as before: no limit"
    );
    let all_keys = store.list_api_keys(None).await.expect("all keys");
    assert_eq!(all_keys.len(), 1000, "the newest 1000 of all");
    assert!(all_keys
        .windows(2)
        .all(|w| w[0].created_at >= w[1].created_at));
}
