//! `--pooler transaction`: every store operation works when each statement goes unnamed in a
//! transaction of its own, leaves no statement of latchkey prepared under a name and no
//! setting behind on the connection; the service, the CLI, the SQL procedure and functions
//! work so. Against the tests' server directly, or through a real PgBouncer in transaction
//! mode when `LATCHKEY_TEST_POOLER_URL` is set (`scripts/test-through-pooler.sh`).

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use latchkey::db::{Pool, Pooler, StatementTimeouts};
use latchkey::store::{
    Backoff, EventKind, ExpirePolicy, FailureKind, NewSession, OwnerKey, PgSessionStore,
    RevokeReason, RotatePolicy, Store, ThrottleKey,
};
use latchkey::SessionKind;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Barrier;
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;
use uuid::Uuid;

use crate::helpers::{
    decode, pooler_url, run_cli, spawn_app_with, AppOptions, TestDb, ORIGIN, PASSWORD,
};

/// The statements of latchkey (they all name its schema) that the single connection of
/// `pool` holds prepared under a name. Read with the simple protocol, which prepares nothing.
async fn named_latchkey_statements(pool: &Pool) -> Vec<String> {
    use sqlx::Row as _;
    let mut conn = pool.pg().acquire().await.expect("the pool's connection");
    sqlx::raw_sql("SELECT statement FROM pg_prepared_statements WHERE statement LIKE '%latchkey.%'")
        .fetch_all(&mut *conn)
        .await
        .expect("pg_prepared_statements")
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect()
}

/// A one-connection pool on `db`, straight to the server, without a statement cache: the
/// same connection serves every statement, so what they leave on it can be read.
fn one_connection(db: &TestDb, pooler: Pooler) -> Pool {
    let pg = latchkey::db::pool_options(1)
        .connect_lazy_with(latchkey::db::pooler_connect_options(db.options.clone()));
    Pool::new(pg, pooler, StatementTimeouts::default())
}

/// Runs each store operation on `store` and, after each, asserts that no statement of
/// latchkey is left prepared under a name on its connection. Returns how many operations ran.
async fn every_operation_leaves_no_named_statement(store: &Store, pool: &Pool) -> usize {
    let mut ran = 0;
    macro_rules! op {
        ($what:literal, $e:expr) => {{
            let out = $e.await.expect($what);
            let named = named_latchkey_statements(pool).await;
            assert!(
                named.is_empty(),
                "{} left named statements: {named:?}",
                $what
            );
            ran += 1;
            out
        }};
    }
    op!("ping", store.ping());
    let user = op!(
        "insert_user",
        store.insert_user("pooled@example.com", "$argon2id$x")
    );
    op!("find_user", store.find_user(user));
    op!(
        "find_user_by_email",
        store.find_user_by_email("pooled@example.com")
    );
    op!(
        "update_password_hash",
        store.update_password_hash(user, "$argon2id$y")
    );
    op!("list_users", store.list_users());
    op!("user_exists", store.user_exists(user));
    let owner = OwnerKey::User(user);
    let key = Uuid::new_v4();
    op!(
        "insert_api_key",
        store.insert_api_key(key, &owner, Some("ci"), &[7; 32])
    );
    op!("find_api_key", store.find_api_key(key));
    op!("touch_api_key", store.touch_api_key(key));
    op!("list_api_keys", store.list_api_keys(Some(&owner)));
    let id = Uuid::new_v4();
    let new = |id, kind| NewSession {
        id,
        kind,
        owner_key: owner,
        token_hash: [1; 32],
        idle_ttl_secs: 3600.0,
        absolute_ttl_secs: 86_400.0,
        user_agent: Some("pooler".to_owned()),
        ip: Some("10.0.0.1".to_owned()),
        data: json!({}),
        event_detail: json!({}),
    };
    op!(
        "create_session",
        store.create_session(&new(id, SessionKind::Stateless))
    );
    let found = op!("find_session", store.find_session(id)).expect("the session");
    let policy = RotatePolicy {
        grace_secs: 30.0,
        idle_ttl_secs: 3600.0,
        slide_min_secs: 60.0,
        record_event: true,
    };
    let rotated = op!(
        "rotate",
        store.rotate(id, found.version, &[2; 32], b"sealed", &policy)
    );
    assert_eq!(rotated.expect("the CAS wins").version, found.version + 1);
    op!("touch", store.touch(id, 3600.0, 0.0, 0.0));
    op!(
        "record_event",
        store.record_event(id, &owner, EventKind::ModeMismatch, json!({}))
    );
    op!("session_data", store.session_data(id));
    op!("live_status", store.live_status(id));
    op!("stream_status", store.stream_status(id, 30.0, 10.0));
    op!("list_sessions", store.list_sessions(Some(&owner)));
    let stateful = Uuid::new_v4();
    op!(
        "create_session",
        store.create_session(&new(stateful, SessionKind::Stateful))
    );
    op!("login_data", store.login_data(stateful, &owner));
    op!(
        "end_session",
        store.end_session(stateful, &owner, RevokeReason::Logout)
    );
    op!(
        "revoke_owned",
        store.revoke_owned(&owner, id, RevokeReason::Admin)
    );
    op!("revoke", store.revoke(id, RevokeReason::Admin));
    let ip: IpAddr = "10.0.0.2".parse().expect("ip");
    op!("revoke_reused", store.revoke_reused(id, Some(ip)));
    op!(
        "revoke_owner_except",
        store.revoke_owner_except(&owner, None, RevokeReason::LogoutAll)
    );
    op!(
        "revoke_owner",
        store.revoke_owner(&owner, RevokeReason::Admin)
    );
    let keys = [ThrottleKey {
        account: "pooled@example.com".to_owned(),
        free: 0,
    }];
    let backoff = Backoff {
        base_secs: 1.0,
        max_secs: 10.0,
        window_secs: 60.0,
    };
    op!(
        "throttle_failed",
        store.throttle_failed(
            "10.0.0.3",
            &keys,
            &backoff,
            Some("pooled@example.com"),
            FailureKind::Password
        )
    );
    let accounts = ["pooled@example.com".to_owned()];
    op!(
        "throttle_blocked_for",
        store.throttle_blocked_for("10.0.0.3", &accounts)
    );
    op!(
        "throttle_clear",
        store.throttle_clear("10.0.0.3", "pooled@example.com")
    );
    op!(
        "purge_login_records",
        store.purge_login_records(&ExpirePolicy::default())
    );
    op!("expire", store.expire(&ExpirePolicy::default(), |_| {}));
    op!("revoke_api_key", store.revoke_api_key(key));
    op!(
        "set_password",
        store.set_password("pooled@example.com", "$argon2id$z", RevokeReason::Admin)
    );
    op!("disable_user", store.disable_user("pooled@example.com"));
    op!("enable_user", store.enable_user("pooled@example.com"));

    let tower = PgSessionStore::new(pool.clone());
    let mut record = Record {
        id: Id::default(),
        data: [("k".to_owned(), json!("v"))].into(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    op!("tower create", tower.create(&mut record));
    record.data.insert("k".to_owned(), json!("w"));
    op!("tower save", tower.save(&record));
    let loaded = op!("tower load", tower.load(&record.id));
    assert_eq!(loaded.expect("loaded").data["k"], json!("w"));
    op!("tower delete", tower.delete(&record.id));
    op!("tower purge_expired", tower.purge_expired());
    ran
}

#[tokio::test]
async fn in_pooler_mode_every_store_operation_works_and_none_stays_prepared_under_a_name() {
    let db = TestDb::new().await;
    let pool = one_connection(&db, Pooler::Transaction);
    let store = Store::new(pool.clone());
    let ran = every_operation_leaves_no_named_statement(&store, &pool).await;
    assert!(ran >= 40, "{ran} operations");
}

#[tokio::test]
async fn the_named_statement_check_sees_those_of_the_direct_mode() {
    // The control: without the pooler mode, sqlx prepares latchkey's statements under names
    // even with its statement cache off, and the check above sees them.
    let db = TestDb::new().await;
    let pool = one_connection(&db, Pooler::None);
    let store = Store::new(pool.clone());
    store.ping().await.expect("ping");
    store.list_users().await.expect("list");
    let named = named_latchkey_statements(&pool).await;
    assert!(!named.is_empty(), "the direct mode names its statements");
}

#[tokio::test]
async fn each_transaction_sets_the_timeouts_locally_and_leaves_no_setting_behind() {
    let db = TestDb::new().await;
    let pg = latchkey::db::pool_options(1)
        .connect_lazy_with(latchkey::db::pooler_connect_options(db.options.clone()));
    let timeouts = StatementTimeouts {
        statement: Duration::from_millis(300),
        lock: Duration::from_millis(200),
    };
    let pool = Pool::transaction_pooled(pg, timeouts);
    let inside: (String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')",
    )
    .fetch_one(&pool)
    .await
    .expect("settings inside");
    assert_eq!(inside, ("300ms".to_owned(), "200ms".to_owned()));
    let slow = sqlx::query("SELECT pg_sleep(2)").execute(&pool).await;
    let code = match slow {
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        other => panic!("a statement past the timeout must fail: {other:?}"),
    };
    assert_eq!(code.as_deref(), Some("57014"), "statement_timeout");
    // Outside a transaction of the pool the session keeps the server's defaults.
    let mut conn = pool.pg().acquire().await.expect("connection");
    let after: Vec<sqlx::postgres::PgRow> = sqlx::raw_sql("SHOW statement_timeout")
        .fetch_all(&mut *conn)
        .await
        .expect("show");
    use sqlx::Row as _;
    assert_eq!(after[0].get::<String, _>(0), "0");
}

/// Options of a connection to `db` through the pooler if there is one, else direct.
fn pooler_or_direct(db: &TestDb) -> PgConnectOptions {
    match pooler_url() {
        Some(url) => PgConnectOptions::from_str(url)
            .expect("LATCHKEY_TEST_POOLER_URL parses")
            .database(db.options.get_database().expect("a database")),
        None => db.options.clone(),
    }
}

#[tokio::test]
async fn the_service_in_pooler_mode_converges_racing_refreshes_and_revokes() {
    let mut opts = AppOptions::default();
    if pooler_url().is_none() {
        // Pooler mode against the server itself (the helpers route through a real pooler
        // when there is one).
        opts.settings.pooler = Pooler::Transaction;
    }
    let app = spawn_app_with(opts).await;
    assert_eq!(app.state.auth.store().pool().pooler(), Pooler::Transaction);
    let res = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"email": app.user.email, "password": PASSWORD, "mode": "stateless"}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::OK);
    let tokens = decode(res).await;
    const RACERS: usize = 16;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let (client, url, token, barrier) = (
            app.client.clone(),
            app.url("/auth/refresh"),
            tokens.refresh_token(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let res = client
                .post(url)
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .expect("refresh");
            let status = res.status();
            let body: serde_json::Value = res.json().await.expect("a JSON answer");
            (status, body)
        }));
    }
    let mut successors = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
        successors.insert(body["refresh_token"].as_str().expect("a token").to_owned());
    }
    assert_eq!(successors.len(), 1, "every racer got the same successor");
    let version: i64 = sqlx::query_scalar("SELECT version FROM latchkey.sessions WHERE id = $1")
        .bind(tokens.session_id())
        .fetch_one(&app.db.pool)
        .await
        .expect("version");
    assert_eq!(version, 2, "one rotation");
    let res = app
        .client
        .post(app.url("/auth/logout"))
        .header("origin", ORIGIN)
        .bearer_auth(tokens.access_token())
        .send()
        .await
        .expect("logout");
    assert!(res.status().is_success(), "{}", res.status());
    let again = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": successors.into_iter().next()}))
        .send()
        .await
        .expect("refresh after logout");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_cli_adds_users_one_after_another_in_pooler_mode() {
    // Through a transaction-mode pooler, sqlx's named statements made the second command
    // fail with `prepared statement "sqlx_s_1" already exists`.
    let db = TestDb::new().await;
    let url = db.url();
    for n in 0..3 {
        let email = format!("cli{n}@example.com");
        let (ok, out, err) = run_cli(
            &url,
            &[
                "--pooler",
                "transaction",
                "user",
                "add",
                "--email",
                &email,
                "--password-stdin",
            ],
            Some("a long enough password for the cli\n"),
        );
        assert!(ok, "user add {n}: {out} {err}");
    }
    let (ok, out, err) = run_cli(&url, &["--pooler", "transaction", "expire"], None);
    assert!(ok, "expire: {out} {err}");
    assert!(out.starts_with("expired="), "{out}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey.users")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(users, 3);
}

#[tokio::test]
async fn the_purge_procedure_and_the_sql_functions_run_through_the_pooler() {
    // As a DBA or pg_cron would call them on a pooler's address: one statement each, outside
    // any transaction of the caller (a procedure that commits cannot run inside one).
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let user = store
        .insert_user("sql@example.com", "$argon2id$x")
        .await
        .expect("user");
    let session = crate::helpers::anonymous_stateless_session(&store, [3; 32], "sql").await;
    let mut conn = sqlx::PgConnection::connect_with(&latchkey::db::pooler_connect_options(
        pooler_or_direct(&db),
    ))
    .await
    .expect("connect through the pooler");
    use sqlx::Connection as _;
    for statement in [
        "CALL latchkey.latchkey_expire()".to_owned(),
        format!("SELECT latchkey.latchkey_revoke_session('{session}')"),
        format!("SELECT latchkey.latchkey_revoke_owner('user:{user}')"),
        format!("SELECT latchkey.latchkey_revoke_user_sessions('{user}')"),
        "SELECT latchkey.latchkey_disable_user('sql@example.com')".to_owned(),
        "SELECT latchkey.latchkey_enable_user('sql@example.com')".to_owned(),
        "SELECT * FROM latchkey.latchkey_expire_batch()".to_owned(),
        "CALL latchkey.latchkey_expire()".to_owned(),
    ] {
        sqlx::raw_sql(&statement)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let revoked: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM latchkey.sessions WHERE id = $1")
            .bind(session)
            .fetch_one(&db.pool)
            .await
            .expect("the session");
    assert_eq!(revoked.as_deref(), Some("admin"));
    conn.close().await.ok();
}
