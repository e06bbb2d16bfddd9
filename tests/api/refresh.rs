//! The refresh protocol: concurrent refreshes converge, the grace window, reuse detection.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use latchkey::SessionKind;
use reqwest::StatusCode;
use tokio::sync::Barrier;

use crate::helpers::{spawn_app, spawn_app_with, AppOptions, TestApp, Tokens};

/// Fires `n` refreshes of one token at once (released by a barrier) and returns the answers.
async fn storm(app: &Arc<TestApp>, n: usize, token: &str, stateful: bool) -> Vec<Tokens> {
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (app, barrier, token) = (app.clone(), barrier.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            if stateful {
                app.refresh_cookie(&token).await
            } else {
                app.refresh_json(&token).await
            }
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_refreshes_of_one_token_all_succeed_and_converge_on_one_successor() {
    // With the per-refresh audit on, the trail shows exactly one event per generation.
    let mut opts = AppOptions::default();
    opts.settings.auth.refresh_events = true;
    let app = Arc::new(spawn_app_with(opts).await);
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let sid = login.session_id();
    let mut token = login.refresh_token();
    let mut seen = HashSet::from([token.clone()]);
    for round in 0..20 {
        let before = app.version_of(sid).await;
        let answers = storm(&app, 50, &token, false).await;
        for a in &answers {
            assert_eq!(a.status, StatusCode::OK, "round {round}: {:?}", a.body);
        }
        let successors: HashSet<String> = answers.iter().map(Tokens::refresh_token).collect();
        assert_eq!(successors.len(), 1, "round {round}: the chain forked");
        let next = successors.into_iter().next().expect("one successor");
        assert!(
            seen.insert(next.clone()),
            "round {round}: successor repeats an old token"
        );
        assert_eq!(
            app.version_of(sid).await,
            before + 1,
            "round {round}: version must rise by one"
        );
        // Every access token minted for the storm belongs to the same session.
        for a in &answers {
            let who = app.whoami_bearer(&a.access_token()).await;
            assert_eq!(who.status, StatusCode::OK);
            assert_eq!(who.body["session_id"], sid.to_string());
        }
        token = next;
    }
    assert_eq!(app.version_of(sid).await, 21);
    assert_eq!(app.events_of(sid, "refreshed").await, 20);
    assert_eq!(app.events_of(sid, "reuse_detected").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_stateful_refreshes_of_one_cookie_get_identical_set_cookie_values() {
    let app = Arc::new(spawn_app().await);
    let login = app.login(SessionKind::Stateful).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let sid = login.session_id();
    let mut cookie = login.cookie();
    for round in 0..20 {
        let before = app.version_of(sid).await;
        let answers = storm(&app, 20, &cookie, true).await;
        for a in &answers {
            assert_eq!(a.status, StatusCode::OK, "round {round}: {:?}", a.body);
        }
        let set_cookies: HashSet<String> = answers
            .iter()
            .map(|a| a.set_cookie.clone().expect("set-cookie"))
            .collect();
        assert_eq!(set_cookies.len(), 1, "round {round}: {set_cookies:?}");
        assert_eq!(app.version_of(sid).await, before + 1);
        let next = answers[0].cookie();
        assert_ne!(next, cookie);
        cookie = next;
    }
    let who = app.whoami_cookie(&cookie).await;
    assert_eq!(who.status, StatusCode::OK, "{:?}", who.body);
    assert_eq!(app.version_of(sid).await, 21);
}

#[tokio::test]
async fn the_previous_token_inside_grace_gets_the_same_successor_without_a_new_generation() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    let t0 = login.refresh_token();
    let first = app.refresh_json(&t0).await;
    assert_eq!(first.status, StatusCode::OK);
    let t1 = first.refresh_token();
    for _ in 0..3 {
        let again = app.refresh_json(&t0).await;
        assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
        assert_eq!(again.refresh_token(), t1);
    }
    assert_eq!(app.version_of(sid).await, 2);
    assert_eq!(app.events_of(sid, "grace_used").await, 3);
    // The successor itself still rotates normally.
    let second = app.refresh_json(&t1).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_ne!(second.refresh_token(), t1);
    assert_eq!(app.version_of(sid).await, 3);
}

fn with_grace(secs: u64) -> AppOptions {
    let mut opts = AppOptions::default();
    opts.settings.auth.grace_secs = secs;
    opts
}

#[tokio::test]
async fn refresh_with_a_rotated_token_after_grace_revokes_the_session() {
    let app = spawn_app_with(with_grace(1)).await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    let t0 = login.refresh_token();
    let t1 = app.refresh_json(&t0).await.refresh_token();
    assert_eq!(
        app.refresh_json(&t0).await.refresh_token(),
        t1,
        "inside grace"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let reused = app.refresh_json(&t0).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reused.code(), "token_reused");
    // The successor dies with the session.
    let successor = app.refresh_json(&t1).await;
    assert_eq!(successor.status, StatusCode::UNAUTHORIZED);
    assert_eq!(successor.code(), "session_revoked");
    assert_eq!(app.events_of(sid, "reuse_detected").await, 1);
    let reason: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM latchkey.sessions WHERE id = $1")
            .bind(sid)
            .fetch_one(&app.db.pool)
            .await
            .expect("row");
    assert_eq!(reason.as_deref(), Some("reuse_detected"));
    // Access tokens of the session stop working at the /auth endpoints too.
    let who = app.whoami_bearer(&login.access_token()).await;
    assert_eq!(who.code(), "session_revoked");
}

#[tokio::test]
async fn a_zero_grace_window_treats_the_previous_token_as_reuse_at_once() {
    let app = spawn_app_with(with_grace(0)).await;
    let login = app.login(SessionKind::Stateless).await;
    let t0 = login.refresh_token();
    let t1 = app.refresh_json(&t0).await.refresh_token();
    let reused = app.refresh_json(&t0).await;
    assert_eq!(reused.code(), "token_reused");
    assert_eq!(app.refresh_json(&t1).await.code(), "session_revoked");
}

#[tokio::test]
async fn a_stateful_cookie_rotated_out_and_presented_after_grace_revokes_the_session() {
    let app = spawn_app_with(with_grace(1)).await;
    let login = app.login(SessionKind::Stateful).await;
    let c0 = login.cookie();
    let c1 = app.refresh_cookie(&c0).await.cookie();
    // A request that left before the refresh still passes inside grace.
    assert_eq!(app.whoami_cookie(&c0).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(app.whoami_cookie(&c0).await.code(), "token_reused");
    assert_eq!(app.whoami_cookie(&c1).await.code(), "session_revoked");
    // The reuse event names the check's client and the generation the cookie belonged to.
    let detail: serde_json::Value = sqlx::query_scalar(
        "SELECT detail FROM latchkey.session_events WHERE session_id = $1 AND event = 'reuse_detected'",
    )
    .bind(login.session_id())
    .fetch_one(&app.db.pool)
    .await
    .expect("the reuse event");
    assert_eq!(detail["ip"], "127.0.0.1", "{detail}");
    assert_eq!(detail["presented_version"], 1, "{detail}");
    assert_eq!(detail["current_version"], 2, "{detail}");
}

#[tokio::test]
async fn an_unknown_secret_for_a_real_session_id_is_invalid_and_revokes_nothing() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let real = latchkey::token::SessionToken::parse(&login.refresh_token()).expect("parses");
    let forged = latchkey::token::SessionToken::new(
        SessionKind::Stateless,
        real.session_id,
        latchkey::token::Secret::from_bytes([7u8; 32]),
    );
    let answer = app.refresh_json(&forged.encode()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "invalid_token");
    let ok = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "the real owner is still logged in"
    );
}

#[tokio::test]
async fn refresh_slides_idle_expiry_but_never_past_the_absolute_expiry() {
    let mut opts = AppOptions::default();
    opts.settings.auth.idle_ttl_secs = 600;
    opts.settings.auth.absolute_ttl_secs = 900;
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    // Pretend the session is old: its hard cap is 100 s away.
    sqlx::query(
        "UPDATE latchkey.sessions SET absolute_expires_at = now() + interval '100 seconds',
                             expires_at = now() + interval '50 seconds' WHERE id = $1",
    )
    .bind(sid)
    .execute(&app.db.pool)
    .await
    .expect("age the session");
    let refreshed = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let capped: bool = sqlx::query_scalar(
        "SELECT expires_at = absolute_expires_at AND expires_at > now() + interval '90 seconds'
         FROM latchkey.sessions WHERE id = $1",
    )
    .bind(sid)
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert!(capped, "idle expiry slid to the absolute cap, not beyond");
}

#[tokio::test]
async fn an_expired_session_answers_token_expired_and_does_not_rotate() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    sqlx::query(
        "UPDATE latchkey.sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(sid)
    .execute(&app.db.pool)
    .await
    .expect("expire");
    let answer = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(answer.code(), "token_expired");
    assert_eq!(app.version_of(sid).await, 1);
}

#[tokio::test]
async fn by_default_a_rotation_records_no_event_and_a_reuse_records_the_chain() {
    let app = spawn_app_with(with_grace(0)).await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    let t0 = login.refresh_token();
    let t1 = app.refresh_json(&t0).await;
    assert_eq!(t1.status, StatusCode::OK);
    let t2 = app.refresh_json(&t1.refresh_token()).await;
    assert_eq!(t2.status, StatusCode::OK);
    assert_eq!(app.version_of(sid).await, 3);
    assert_eq!(app.events_of(sid, "refreshed").await, 0, "off by default");
    let rotated_at: bool =
        sqlx::query_scalar("SELECT refreshed_at > created_at FROM latchkey.sessions WHERE id = $1")
            .bind(sid)
            .fetch_one(&app.db.pool)
            .await
            .expect("row");
    assert!(rotated_at, "the row keeps when it was last rotated");

    // t1 was replaced by the rotation to version 3: presenting it again is reuse.
    let reused = app.refresh_json(&t1.refresh_token()).await;
    assert_eq!(reused.code(), "token_reused");
    let detail: serde_json::Value = sqlx::query_scalar(
        "SELECT detail FROM latchkey.session_events WHERE session_id = $1 AND event = 'reuse_detected'",
    )
    .bind(sid)
    .fetch_one(&app.db.pool)
    .await
    .expect("the reuse event");
    assert_eq!(detail["reason"], "reuse_detected", "{detail}");
    assert_eq!(detail["presented_version"], 2, "{detail}");
    assert_eq!(detail["current_version"], 3, "{detail}");
    assert_eq!(detail["ip"], "127.0.0.1", "{detail}");
    assert!(detail["rotated_at"].is_string(), "{detail}");
    assert!(detail["grace_until"].is_string(), "{detail}");
    assert!(detail.get("login_ip").is_some(), "{detail}");
}

#[tokio::test]
async fn with_refresh_events_on_each_rotation_records_its_version() {
    let mut opts = AppOptions::default();
    opts.settings.auth.refresh_events = true;
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    let t1 = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(t1.status, StatusCode::OK);
    assert_eq!(
        app.refresh_json(&t1.refresh_token()).await.status,
        StatusCode::OK
    );
    let versions: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT detail->'version' FROM latchkey.session_events
         WHERE session_id = $1 AND event = 'refreshed' ORDER BY id",
    )
    .bind(sid)
    .fetch_all(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(versions, [serde_json::json!(2), serde_json::json!(3)]);
}
