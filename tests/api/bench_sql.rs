//! The benchmark's raw-SQL baselines issue the store's own statements: the read's constant is
//! the text of the store's `query_as!` literal, the rotation's two constants are what
//! `Store::rotate` runs, and they run against the migrated schema as the store's statements do.
//! `scripts/bench-expire.sh` replays the rotation with pgbench: its copy is `ROTATE_SQL` with
//! the default settings.

use latchkey::auth::AuthConfig;
use latchkey::store::{OwnerKey, Store, FIND_SESSION_SQL, ROTATE_AUDITED_SQL, ROTATE_SQL};
use sqlx::Row;

use crate::helpers::{anonymous_stateless_session, TestDb};

/// The store's source, as compiled into the library.
const SESSIONS_RS: &str = include_str!("../../src/store/sessions.rs");

/// The text with every run of whitespace made one space.
fn normalised(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first raw string literal (`r#"…"#`) after `marker` in the store's source.
fn statement_after(marker: &str) -> &'static str {
    let at = SESSIONS_RS
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in src/store/sessions.rs"));
    let rest = &SESSIONS_RS[at..];
    let open = rest.find("r#\"").expect("a raw literal after the marker") + 3;
    let close = rest[open..].find("\"#").expect("the literal's end") + open;
    &rest[open..close]
}

#[test]
fn the_exported_find_session_statement_is_the_text_of_the_stores_single_row_read() {
    assert_eq!(
        normalised(FIND_SESSION_SQL),
        normalised(statement_after("async fn find_one(")),
        "FIND_SESSION_SQL and the query_as! literal in find_one differ: change both together"
    );
}

/// The expiry benchmark's script, which pgbench replays the rotation from.
const BENCH_EXPIRE_SH: &str = include_str!("../../scripts/bench-expire.sh");

#[test]
fn the_expiry_benchmark_replays_the_stores_rotation_with_the_default_settings() {
    let cfg = AuthConfig::default();
    // The script's pgbench variables and literals for the seven parameters, highest first
    // (`$1` is a prefix of nothing else once `$10`… are absent).
    let params = [
        ("$7", cfg.expiry_step_secs().to_string()),
        ("$6", cfg.idle_ttl_secs.to_string()),
        ("$5", cfg.grace_secs.to_string()),
        ("$4", "'$sealed'".to_owned()),
        (
            "$3",
            "sha256(convert_to(clock_timestamp()::text || :n, 'UTF8'))".to_owned(),
        ),
        ("$2", ":v".to_owned()),
        ("$1", "md5('live' || :n)::uuid".to_owned()),
    ];
    let mut expected = ROTATE_SQL.replace("latchkey.sessions", "sessions");
    for (param, value) in &params {
        expected = expected.replace(param, value);
    }
    let at = BENCH_EXPIRE_SH
        .find("\nUPDATE sessions")
        .expect("the rotation in scripts/bench-expire.sh");
    let rest = &BENCH_EXPIRE_SH[at..];
    let end = rest.find(';').expect("the statement's end");
    assert_eq!(
        normalised(&rest[..end]),
        normalised(&expected),
        "scripts/bench-expire.sh no longer replays ROTATE_SQL with the default settings"
    );
}

#[tokio::test]
async fn the_exported_statements_read_and_rotate_a_session_as_the_store_does() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let id = anonymous_stateless_session(&store, [7; 32], "bench").await;

    let row = sqlx::query(FIND_SESSION_SQL)
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("the raw read");
    let stored = store
        .find_session(id)
        .await
        .expect("the store's read")
        .expect("the session");
    assert_eq!(row.get::<i64, _>("version"), stored.version);
    assert_eq!(
        row.get::<OwnerKey, _>("owner_key: OwnerKey"),
        stored.owner_key
    );
    assert_eq!(row.get::<Option<String>, _>("ip"), stored.ip);

    // The store runs these two texts itself (`Store::rotate`): with the event, then without.
    for (sql, version) in [
        (ROTATE_AUDITED_SQL, stored.version),
        (ROTATE_SQL, stored.version + 1),
    ] {
        let rotated = sqlx::query(sql)
            .bind(id)
            .bind(version)
            .bind(&[8u8 + u8::try_from(version).unwrap_or(0); 32][..])
            .bind(&[9u8; 72][..])
            .bind(30.0_f64)
            .bind(3600.0_f64)
            .bind(60.0_f64)
            .fetch_optional(&db.pool)
            .await
            .expect("the raw rotation");
        assert!(rotated.is_some(), "the raw rotation lost its swap");
    }
    let after = store
        .find_session(id)
        .await
        .expect("the store's read")
        .expect("the session");
    assert_eq!(after.version, stored.version + 2);
    assert_eq!(
        after.token_hash,
        [8u8 + u8::try_from(stored.version + 1).unwrap_or(0); 32].to_vec()
    );
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM latchkey.session_events WHERE session_id = $1 AND event::text = 'refreshed'",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .expect("events");
    assert_eq!(
        events, 1,
        "the audited rotation recorded its event, the plain one none"
    );
}
