//! latchkey in a database it shares with an application: every object in the schema
//! `latchkey`, its own migration record, migrations that apply before or after the
//! application's (even when both have a `users` table and a migration of the same version), a
//! database from before the schema moved over with its data, and concurrent migrators.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use latchkey::store::{OwnerKey, Store};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::PgPool;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::helpers::TestDb;

/// An application's own migrations: tables named like latchkey's (`users`, `sessions`), and a
/// first version equal to latchkey's first, which a shared record would take as applied.
fn app_migrator() -> Migrator {
    let migration = |version: i64, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed("app"),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    };
    Migrator {
        migrations: Cow::Owned(vec![
            migration(
                20261120000100,
                "CREATE TABLE users (id bigserial PRIMARY KEY, nickname text NOT NULL)",
            ),
            migration(
                20270101000000,
                "CREATE TABLE sessions (id bigserial PRIMARY KEY, user_id bigint REFERENCES users)",
            ),
        ]),
        ..Migrator::DEFAULT
    }
}

/// Versions in `schema._sqlx_migrations`, empty when there is no such table.
async fn recorded(pool: &PgPool, schema: &str) -> Vec<i64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}._sqlx_migrations"))
        .fetch_one(pool)
        .await
        .expect("query");
    if !exists {
        return Vec::new();
    }
    sqlx::query_scalar(&format!(
        "SELECT version FROM {schema}._sqlx_migrations WHERE success ORDER BY version"
    ))
    .fetch_all(pool)
    .await
    .expect("query")
}

/// The versions of every latchkey migration in `migrations/`.
async fn latchkey_versions() -> Vec<i64> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let all = Migrator::new(dir.as_path()).await.expect("ok");
    all.iter().map(|m| m.version).collect()
}

/// Names of the relations, types and routines in `schema` (their kind first).
async fn objects_in(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'relation ' || c.relname FROM pg_class AS c
          WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
         UNION ALL
         SELECT 'type ' || t.typname FROM pg_type AS t
          WHERE t.typnamespace = $1::regnamespace AND t.typtype = 'e'
         UNION ALL
         SELECT 'routine ' || p.proname FROM pg_proc AS p
          WHERE p.pronamespace = $1::regnamespace
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("query")
}

/// latchkey works on the application's plain pool: a user, a login session, a disable that
/// revokes it through the trigger (a routine run from the application's search_path).
async fn latchkey_works(pool: &PgPool) {
    let store = Store::new(pool.clone());
    let user = store
        .insert_user(&format!("{}@example.com", Uuid::new_v4()), "$argon2id$x")
        .await
        .expect("create a user through latchkey");
    let session = crate::helpers::anonymous_stateless_session(&store, [7; 32], "schema-test").await;
    sqlx::query("UPDATE latchkey.sessions SET owner_key = $1 WHERE id = $2")
        .bind(OwnerKey::User(user).to_string())
        .bind(session)
        .execute(pool)
        .await
        .expect("query");
    sqlx::query("UPDATE latchkey.users SET disabled = true WHERE id = $1")
        .bind(user)
        .execute(pool)
        .await
        .expect("the disable trigger runs from the application's search_path");
    let reason: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM latchkey.sessions WHERE id = $1")
            .bind(session)
            .fetch_one(pool)
            .await
            .expect("query");
    assert_eq!(reason.as_deref(), Some("user_disabled"));
}

#[tokio::test]
async fn a_fresh_database_gets_every_object_in_the_latchkey_schema_and_nothing_in_public() {
    let db = TestDb::new().await;
    assert_eq!(
        recorded(&db.pool, "latchkey").await,
        latchkey_versions().await
    );
    assert!(recorded(&db.pool, "public").await.is_empty());
    assert_eq!(objects_in(&db.pool, "public").await, Vec::<String>::new());
    let ours = objects_in(&db.pool, "latchkey").await;
    for expected in [
        "relation sessions",
        "relation users",
        "relation session_overview",
        "type session_kind",
        "routine latchkey_revoke",
    ] {
        assert!(ours.iter().any(|o| o == expected), "{expected} in {ours:?}");
    }
    latchkey_works(&db.pool).await;
}

#[tokio::test]
async fn the_applications_migrations_and_latchkeys_apply_in_either_order() {
    for app_first in [true, false] {
        let db = TestDb::empty().await;
        if app_first {
            app_migrator().run(&db.pool).await.expect("app migrations");
            latchkey::db::migrate(&db.pool)
                .await
                .expect("latchkey after the app");
        } else {
            latchkey::db::migrate(&db.pool)
                .await
                .expect("latchkey first");
            app_migrator()
                .run(&db.pool)
                .await
                .expect("app after latchkey");
        }
        // Each record holds its own migrations only.
        assert_eq!(
            recorded(&db.pool, "public").await,
            vec![20261120000100, 20270101000000],
            "app_first={app_first}"
        );
        assert_eq!(
            recorded(&db.pool, "latchkey").await,
            latchkey_versions().await
        );
        // Running both again applies nothing and fails nothing.
        latchkey::db::migrate(&db.pool)
            .await
            .expect("latchkey again");
        app_migrator().run(&db.pool).await.expect("app again");

        // The app's `users` is its own; latchkey's users go to latchkey.users.
        sqlx::query("INSERT INTO users (nickname) VALUES ('app user')")
            .execute(&db.pool)
            .await
            .expect("the app's users table is the app's");
        latchkey_works(&db.pool).await;
        let app_users: i64 = sqlx::query_scalar("SELECT count(*) FROM public.users")
            .fetch_one(&db.pool)
            .await
            .expect("query");
        assert_eq!(app_users, 1, "latchkey wrote nothing into the app's users");
    }
}

#[tokio::test]
async fn a_database_from_before_the_schema_moves_over_with_its_data_and_record() {
    let db = TestDb::empty().await;
    // The earlier layout: latchkey's migrations up to the schema's, run in `public` and
    // recorded in `public._sqlx_migrations`, as versions before the schema did; beside them,
    // one migration row of the application's own.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let all = Migrator::new(dir.as_path()).await.expect("ok");
    let earlier = Migrator {
        migrations: Cow::Owned(
            all.iter()
                .filter(|m| m.version < 20261129100300)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    assert_eq!(earlier.iter().count(), 9);
    earlier.run(&db.pool).await.expect("the earlier layout");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (20300101000000, 'the application''s own', true, '\\x00', 1)",
    )
    .execute(&db.pool)
    .await
    .expect("query");
    let user: Uuid = sqlx::query_scalar(
        "INSERT INTO users (email, password_hash) VALUES ('old@example.com', '$argon2id$x')
         RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .expect("query");
    let session: Uuid = sqlx::query_scalar(
        "INSERT INTO sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at)
         VALUES (gen_random_uuid(), 'stateful', 'user:' || $1, $2, now() + interval '1 hour',
                 now() + interval '1 day')
         RETURNING id",
    )
    .bind(user)
    .bind(vec![3u8; 32])
    .fetch_one(&db.pool)
    .await
    .expect("query");

    latchkey::db::migrate(&db.pool)
        .await
        .expect("the move and the new migrations");

    assert_eq!(
        recorded(&db.pool, "latchkey").await,
        latchkey_versions().await
    );
    assert_eq!(recorded(&db.pool, "public").await, vec![20300101000000]);
    // Of latchkey's, nothing is left in public; the application's record stays.
    assert_eq!(
        objects_in(&db.pool, "public").await,
        vec!["relation _sqlx_migrations".to_owned()]
    );
    let email: String = sqlx::query_scalar("SELECT email FROM latchkey.users WHERE id = $1")
        .bind(user)
        .fetch_one(&db.pool)
        .await
        .expect("the user moved");
    assert_eq!(email, "old@example.com");
    let store = Store::new(db.pool.clone());
    let found = store
        .find_session(session)
        .await
        .expect("read the moved session")
        .expect("the moved session is live");
    assert_eq!(found.owner_key, OwnerKey::User(user));
    latchkey_works(&db.pool).await;
    // Once moved, migrating again is a no-op.
    latchkey::db::migrate(&db.pool).await.expect("again");
    assert_eq!(
        recorded(&db.pool, "latchkey").await,
        latchkey_versions().await
    );
}

#[tokio::test]
async fn many_instances_migrating_one_fresh_database_at_once_all_succeed() {
    for _ in 0..3 {
        let db = TestDb::empty().await;
        let barrier = Arc::new(Barrier::new(6));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let barrier = barrier.clone();
            let options = db.options.clone();
            tasks.push(tokio::spawn(async move {
                let pool = latchkey::db::pool_options(2)
                    .connect_with(options)
                    .await
                    .expect("query");
                barrier.wait().await;
                let result = latchkey::db::migrate(&pool).await;
                pool.close().await;
                result
            }));
        }
        for task in tasks {
            task.await
                .expect("query")
                .expect("every instance's migrate succeeds");
        }
        assert_eq!(
            recorded(&db.pool, "latchkey").await,
            latchkey_versions().await
        );
    }
}

#[tokio::test]
async fn every_function_runs_with_the_latchkey_search_path() {
    let db = TestDb::new().await;
    let unpinned: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p
          WHERE p.pronamespace = 'latchkey'::regnamespace AND p.prokind = 'f'
            AND NOT coalesce('search_path=latchkey' = ANY (p.proconfig), false)",
    )
    .fetch_all(&db.pool)
    .await
    .expect("query");
    assert_eq!(unpinned, Vec::<String>::new());
    // The procedure commits, so it cannot carry one; it runs from the application's path.
    let (expired, batches): (i64, i64) =
        sqlx::query_as("CALL latchkey.latchkey_expire(pause_ratio => 0)")
            .fetch_one(&db.pool)
            .await
            .map(|(e, _, _, b): (i64, i64, i64, i64)| (e, b))
            .expect("the procedure runs from the default search_path");
    assert_eq!((expired, batches), (0, 0));
}

#[tokio::test]
async fn latchkey_works_from_a_search_path_that_includes_its_schema() {
    // A DBA's `ALTER ROLE … SET search_path = latchkey, public` for the service's own role:
    // the enum columns are then seen under their unqualified names.
    let db = TestDb::new().await;
    let pool = latchkey::db::pool_options(2)
        .connect_with(
            db.options
                .clone()
                .options([("search_path", "latchkey,public")]),
        )
        .await
        .expect("query");
    let store = Store::new(pool.clone());
    let id = crate::helpers::anonymous_stateless_session(&store, [9; 32], "search-path").await;
    let found = store.find_session(id).await.expect("decode").expect("live");
    assert_eq!(found.kind, latchkey::SessionKind::Stateless);
    let kind: String = sqlx::query_scalar("SELECT pg_typeof(kind)::text FROM sessions LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(
        kind, "session_kind",
        "the type is seen unqualified on this pool"
    );
    // A checked decode (not the macros' unchecked one) accepts the unqualified name too.
    let decoded: latchkey::SessionKind =
        sqlx::query_scalar("SELECT kind FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("a checked decode of the enum");
    assert_eq!(decoded, latchkey::SessionKind::Stateless);
    latchkey_works(&pool).await;
}

#[tokio::test]
async fn sessions_carries_its_own_autovacuum_settings_and_keeps_its_fillfactor() {
    let db = TestDb::new().await;
    let options: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(reloptions) FROM pg_class WHERE oid = 'latchkey.sessions'::regclass ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("reloptions");
    assert_eq!(
        options,
        [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_cost_delay=20",
            "autovacuum_vacuum_insert_scale_factor=0.02",
            "autovacuum_vacuum_scale_factor=0.02",
            "fillfactor=80",
        ],
        "sessions' storage parameters"
    );
    // The other tables keep the server's settings.
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class
          WHERE relnamespace = 'latchkey'::regnamespace AND relkind = 'r'
            AND relname <> 'sessions'
            AND EXISTS (SELECT 1 FROM unnest(reloptions) AS o WHERE o LIKE 'autovacuum%')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("others");
    assert_eq!(others, 0);
}
