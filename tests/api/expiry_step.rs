//! The expiry step: a refresh or a stateful check slides the idle expiry only when that moves
//! it by at least the step (default: 1% of the idle lifetime, at least the touch interval), so
//! most of them leave the indexed `expires_at` alone and are HOT updates; a stateful check
//! still records its use (`last_used_at`, unindexed) once per touch interval; the expiry never
//! passes the absolute one. Time passes in SQL: the row's `expires_at` and `last_used_at` are
//! moved back by the time that would have gone by since the last slide.

use clap::Parser;
use latchkey::auth::AuthConfig;
use latchkey::config::{Cli, Command};
use latchkey::store::{NewSession, OwnerKey, RotatePolicy, Store};
use latchkey::SessionKind;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{spawn_app_with, AppOptions, TestDb};

#[test]
fn the_default_step_is_one_percent_of_the_idle_lifetime_at_least_the_touch_interval() {
    let default = AuthConfig::default();
    assert_eq!(default.idle_ttl_secs, 7 * 86_400);
    assert_eq!(default.expiry_step_secs(), 6048, "7 days / 100");
    let short = AuthConfig {
        idle_ttl_secs: 10,
        touch_interval_secs: 1,
        ..AuthConfig::default()
    };
    assert_eq!(
        short.expiry_step_secs(),
        1,
        "10 s / 100 is below the touch interval"
    );
    let hour = AuthConfig {
        idle_ttl_secs: 3600,
        ..AuthConfig::default()
    };
    assert_eq!(
        hour.expiry_step_secs(),
        60,
        "36 s is below the 60 s touch interval"
    );
    let month = AuthConfig {
        idle_ttl_secs: 30 * 86_400,
        touch_interval_secs: 300,
        ..AuthConfig::default()
    };
    assert_eq!(month.expiry_step_secs(), 25_920);
    for step in [0, 5, 86_400] {
        let set = AuthConfig {
            expiry_step_override_secs: Some(step),
            ..AuthConfig::default()
        };
        assert_eq!(set.expiry_step_secs(), step, "the override wins");
    }
}

/// `latchkey serve` with `args` parsed and validated in process.
fn validated(args: &[&str]) -> Result<AuthConfig, latchkey::config::InvalidSetting> {
    let cli = Cli::try_parse_from(["latchkey", "serve"].iter().chain(args)).expect("parses");
    let Command::Serve(serve) = cli.command else {
        panic!("serve")
    };
    serve.validate()?;
    Ok(AuthConfig {
        idle_ttl_secs: serve.idle_ttl_secs,
        touch_interval_secs: serve.touch_interval_secs,
        expiry_step_override_secs: serve.expiry_step_secs,
        ..AuthConfig::default()
    })
}

#[test]
fn the_step_flag_overrides_the_derivation_and_must_be_shorter_than_the_idle_lifetime() {
    assert_eq!(validated(&[]).expect("defaults").expiry_step_secs(), 6048);
    assert_eq!(
        validated(&[
            "--idle-ttl-secs",
            "10",
            "--touch-interval-secs",
            "1",
            "--grace-secs",
            "1"
        ])
        .expect("short")
        .expiry_step_secs(),
        1
    );
    for (step, idle) in [("0", "600"), ("599", "600"), ("3600", "604800")] {
        let cfg = validated(&["--expiry-step-secs", step, "--idle-ttl-secs", idle])
            .unwrap_or_else(|e| panic!("step {step}, idle {idle}: {e}"));
        assert_eq!(cfg.expiry_step_secs().to_string(), step);
    }
    for (step, idle) in [("600", "600"), ("601", "600"), ("604800", "604800")] {
        let e = validated(&["--expiry-step-secs", step, "--idle-ttl-secs", idle])
            .expect_err("a step as long as the idle lifetime");
        assert_eq!(e.flag, "expiry-step-secs");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "--expiry-step-secs: {step} must be shorter than --idle-ttl-secs ({idle}): "
            )),
            "{text}"
        );
        assert!(text.contains("would never slide"), "{text}");
    }
}

/// The idle expiry and the last use of session `sid`.
async fn stamps(pool: &PgPool, sid: Uuid) -> (OffsetDateTime, OffsetDateTime) {
    sqlx::query_as("SELECT expires_at, last_used_at FROM latchkey.sessions WHERE id = $1")
        .bind(sid)
        .fetch_one(pool)
        .await
        .expect("row")
}

/// Moves the clock of session `sid` forward by `secs`: its idle expiry and last use `secs`
/// earlier.
async fn age(pool: &PgPool, sid: Uuid, secs: u64) {
    sqlx::query(
        "UPDATE latchkey.sessions SET expires_at = expires_at - make_interval(secs => $2),
                                      last_used_at = last_used_at - make_interval(secs => $2)
         WHERE id = $1",
    )
    .bind(sid)
    .bind(secs as f64)
    .execute(pool)
    .await
    .expect("age the session");
}

/// Whether `expires_at` of `sid` is `now() + idle` (to the second: the slide happened).
async fn slid_to_now(pool: &PgPool, sid: Uuid, idle_secs: u64) -> bool {
    sqlx::query_scalar(
        "SELECT abs(extract(epoch FROM expires_at - (now() + make_interval(secs => $2)))) < 2
         FROM latchkey.sessions WHERE id = $1",
    )
    .bind(sid)
    .bind(idle_secs as f64)
    .fetch_one(pool)
    .await
    .expect("row")
}

#[tokio::test]
async fn a_refresh_within_the_step_keeps_the_expiry_and_one_after_it_slides_it() {
    let opts = AppOptions::default();
    let (idle, step) = (
        opts.settings.auth.idle_ttl_secs,
        opts.settings.auth.expiry_step_secs(),
    );
    assert!(step > 10 * opts.settings.auth.touch_interval_secs);
    let app = spawn_app_with(opts).await;
    let pool = &app.db.pool;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();

    // Half a step later: far past the touch interval, but the expiry stays.
    age(pool, sid, step / 2).await;
    let (before, used) = stamps(pool, sid).await;
    let first = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let (after, used_after) = stamps(pool, sid).await;
    assert_eq!(
        after, before,
        "a rotation within the step leaves expires_at"
    );
    assert!(
        used_after >= used + time::Duration::seconds(step as i64 / 2 - 1),
        "last_used_at recorded: {used} -> {used_after}"
    );
    assert_eq!(app.version_of(sid).await, 2);

    // Another half step and a minute: a step since the last slide, the expiry moves.
    age(pool, sid, step / 2 + 60).await;
    let (before, _) = stamps(pool, sid).await;
    let second = app.refresh_json(&first.refresh_token()).await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    let (after, _) = stamps(pool, sid).await;
    assert!(
        after >= before + time::Duration::seconds(step as i64),
        "{before} -> {after}"
    );
    assert!(slid_to_now(pool, sid, idle).await, "slid to now + idle");
}

#[tokio::test]
async fn a_stateful_check_records_the_use_per_interval_and_slides_the_expiry_per_step() {
    let opts = AppOptions::default();
    let (idle, touch, step) = (
        opts.settings.auth.idle_ttl_secs,
        opts.settings.auth.touch_interval_secs,
        opts.settings.auth.expiry_step_secs(),
    );
    let app = spawn_app_with(opts).await;
    let pool = &app.db.pool;
    let login = app.login(SessionKind::Stateful).await;
    let sid = login.session_id();
    let check = || async {
        let who = app.whoami_cookie(&login.cookie()).await;
        assert_eq!(who.status, StatusCode::OK, "{:?}", who.body);
    };

    // Within the touch interval: nothing written.
    let start = stamps(pool, sid).await;
    check().await;
    assert_eq!(
        stamps(pool, sid).await,
        start,
        "no write within the interval"
    );

    // Past the touch interval, within the step: the use only.
    age(pool, sid, touch * 2).await;
    let (exp, used) = stamps(pool, sid).await;
    check().await;
    let (exp_after, used_after) = stamps(pool, sid).await;
    assert_eq!(exp_after, exp, "expires_at stays within the step");
    assert!(
        used_after >= used + time::Duration::seconds(2 * touch as i64 - 1),
        "last_used_at recorded: {used} -> {used_after}"
    );

    // A step since the last slide: the expiry moves too.
    age(pool, sid, step).await;
    let (exp, _) = stamps(pool, sid).await;
    check().await;
    let (exp_after, _) = stamps(pool, sid).await;
    assert!(
        exp_after >= exp + time::Duration::seconds(step as i64),
        "{exp} -> {exp_after}"
    );
    assert!(slid_to_now(pool, sid, idle).await, "slid to now + idle");

    // Near the absolute expiry: onto it, never past it, even within the step.
    sqlx::query(
        "UPDATE latchkey.sessions SET absolute_expires_at = now() + interval '1 hour',
                expires_at = now() + interval '59 minutes',
                last_used_at = now() - make_interval(secs => $2)
         WHERE id = $1",
    )
    .bind(sid)
    .bind(2.0 * touch as f64)
    .execute(pool)
    .await
    .expect("near the cap");
    for _ in 0..2 {
        check().await;
        let capped: bool = sqlx::query_scalar(
            "SELECT expires_at = absolute_expires_at FROM latchkey.sessions WHERE id = $1",
        )
        .bind(sid)
        .fetch_one(pool)
        .await
        .expect("row");
        assert!(capped, "the idle expiry slid onto the absolute one");
        age(pool, sid, 2 * touch).await;
        // `age` moved the idle expiry below the cap again: put it back on it.
        sqlx::query("UPDATE latchkey.sessions SET expires_at = absolute_expires_at WHERE id = $1")
            .bind(sid)
            .execute(pool)
            .await
            .expect("back on the cap");
    }
}

/// A live session created through `store` with the idle and absolute lifetimes of `cfg`.
async fn session(store: &Store, cfg: &AuthConfig) -> Uuid {
    let id = Uuid::new_v4();
    store
        .create_session(&NewSession {
            id,
            kind: SessionKind::Stateful,
            owner_key: OwnerKey::Anonymous(Uuid::new_v4()),
            token_hash: [3; 32],
            idle_ttl_secs: cfg.idle_ttl_secs as f64,
            absolute_ttl_secs: cfg.absolute_ttl_secs as f64,
            user_agent: None,
            ip: None,
            data: json!({}),
            event_detail: json!({}),
        })
        .await
        .expect("create");
    id
}

/// What a write through the store did.
#[derive(Debug, PartialEq)]
struct Written {
    /// `n_tup_upd` and `n_tup_hot_upd` of `sessions` for the write alone.
    updates: i64,
    hot: i64,
    /// Whether it moved `expires_at`, `last_used_at`.
    expiry_moved: bool,
    use_recorded: bool,
}

#[derive(Clone, Copy)]
enum Write {
    Rotate,
    Touch,
}

/// In a fresh database: a session with the default lifetimes, aged by `aged_secs`, then one
/// rotation or touch with the default settings (the service's). The statistics are read once
/// the store's one connection has closed (a backend flushes its counters when it exits); the
/// ageing is one update that moves the index key, not HOT.
async fn write_after(aged_secs: u64, write: Write) -> Written {
    let cfg = AuthConfig::default();
    let db = TestDb::new().await;
    let pool = db.one_connection().await;
    let store = Store::new(pool.clone());
    let sid = session(&store, &cfg).await;
    age(&pool, sid, aged_secs).await;
    let before = stamps(&pool, sid).await;
    match write {
        Write::Rotate => {
            let policy = RotatePolicy {
                grace_secs: cfg.grace_secs as f64,
                idle_ttl_secs: cfg.idle_ttl_secs as f64,
                slide_min_secs: cfg.expiry_step_secs() as f64,
                record_event: false,
            };
            let rotated = store
                .rotate(sid, 1, &[4; 32], &[5; 72], &policy)
                .await
                .expect("rotate");
            assert!(rotated.is_some(), "the swap wins");
        }
        Write::Touch => {
            let touched = store
                .touch(
                    sid,
                    cfg.idle_ttl_secs as f64,
                    cfg.touch_interval_secs as f64,
                    cfg.expiry_step_secs() as f64,
                )
                .await
                .expect("touch");
            assert!(touched.is_some(), "a touch is due after {aged_secs} s");
        }
    }
    let after = stamps(&pool, sid).await;
    pool.close().await;
    let mut counts: (i64, i64) = (0, 0);
    for _ in 0..100 {
        counts = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
             WHERE schemaname = 'latchkey' AND relname = 'sessions'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("statistics");
        if counts.0 >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&db.pool)
            .await
            .expect("clear snapshot");
    }
    // The ageing moves the indexed expires_at: never HOT; any HOT update is the write's.
    assert_eq!(counts.0, 2, "the ageing and the write, flushed");
    Written {
        updates: counts.0 - 1,
        hot: counts.1,
        expiry_moved: after.0 != before.0,
        use_recorded: after.1 > before.1,
    }
}

#[tokio::test]
async fn writes_within_the_step_are_hot_and_after_it_move_the_expiry() {
    let cfg = AuthConfig::default();
    let (touch, step) = (cfg.touch_interval_secs, cfg.expiry_step_secs());
    for write in [Write::Rotate, Write::Touch] {
        // Past the touch interval (the old least slide), within the step.
        for aged in [touch * 2, step - touch] {
            assert_eq!(
                write_after(aged, write).await,
                Written {
                    updates: 1,
                    hot: 1,
                    expiry_moved: false,
                    use_recorded: true
                }
            );
        }
        // A step and more since the last slide.
        assert_eq!(
            write_after(step + 1, write).await,
            Written {
                updates: 1,
                hot: 0,
                expiry_moved: true,
                use_recorded: true
            }
        );
    }
}
