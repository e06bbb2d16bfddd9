//! A credential dies with its user: disabling an account (CLI, SQL function, plain SQL
//! `UPDATE`) ends every session of it and of its API keys, live streams included, and no
//! login racing the disable leaves a live session behind.

use std::sync::Arc;
use std::time::Duration;

use latchkey::auth::ClientMeta;
use latchkey::store::OwnerKey;
use latchkey::SessionKind;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{run_cli, spawn_app_with, AppOptions, TestApp, Tokens, PASSWORD};

/// Runs the `latchkey` binary on the app's database: (success, stdout, stderr).
fn latchkey(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    run_cli(&app.db.url(), args, None)
}

/// Streams are closed by notifications only, never by the backstop timer, within a test.
async fn app() -> TestApp {
    let mut opts = AppOptions::default();
    opts.settings.events.revalidate_interval = Duration::from_secs(600);
    let app = spawn_app_with(opts).await;
    app.wait_listening(1).await;
    app
}

/// A minimal Server-Sent Events reader: the next named event, or `None` at the end.
struct Sse {
    res: Response,
    buf: String,
}

impl Sse {
    async fn open(app: &TestApp, cookie: Option<&str>, bearer: Option<&str>) -> Self {
        let mut req = app.client.get(app.url("/auth/events"));
        if let Some(c) = cookie {
            req = req.headers(app.cookie_headers(c));
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let res = req.send().await.expect("events request");
        assert_eq!(res.status(), StatusCode::OK, "stream refused");
        Self {
            res,
            buf: String::new(),
        }
    }

    async fn next(&mut self, deadline: Instant) -> Option<(String, Value)> {
        loop {
            while let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let name = block
                    .lines()
                    .find_map(|l| l.strip_prefix("event:"))
                    .map(|v| v.trim().to_owned());
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                if let Some(name) = name {
                    return Some((name, serde_json::from_str(&data).expect("JSON data")));
                }
            }
            match tokio::time::timeout_at(deadline, self.res.chunk()).await {
                Err(_) => panic!("the stream neither sent an event nor ended in time"),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Ok(Ok(Some(b))) => self.buf.push_str(&String::from_utf8_lossy(&b)),
            }
        }
    }

    /// Expects `revoked` with reason `user_disabled` and then the end, within two seconds.
    async fn expect_user_disabled_then_end(mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let (name, data) = self.next(deadline).await.expect("an event before the end");
        assert_eq!(name, "revoked", "{data}");
        assert_eq!(data["reason"], "user_disabled", "{data}");
        assert!(self.next(deadline).await.is_none(), "the stream ends");
    }
}

/// Asserts a refusal: 401 or 403 with the given problem code.
fn refused(t: &Tokens, code: &str, what: &str) {
    assert!(
        matches!(t.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        "{what}: {} {}",
        t.status,
        t.body
    );
    assert_eq!(t.code(), code, "{what}: {}", t.body);
}

/// Every credential a user can hold, each one live: a cookie session, a stateless session,
/// an API key with a live session, and a stream on each session.
struct Held {
    cookie: String,
    stateless: Tokens,
    key: String,
    by_key: Tokens,
    streams: Vec<Sse>,
}

async fn hold_everything(app: &TestApp) -> Held {
    let cookie = app.login(SessionKind::Stateful).await.cookie();
    let stateless = app.login(SessionKind::Stateless).await;
    let (_, key) = app
        .state
        .auth
        .create_api_key(&app.user.owner(), Some("ci"))
        .await
        .expect("key");
    let by_key = app.login_api_key(&key).await;
    assert_eq!(by_key.status, StatusCode::OK, "{}", by_key.body);
    assert_eq!(
        app.whoami_bearer(&by_key.access_token()).await.status,
        StatusCode::OK
    );
    let streams = vec![
        Sse::open(app, Some(&cookie), None).await,
        Sse::open(app, None, Some(&stateless.access_token())).await,
        Sse::open(app, None, Some(&by_key.access_token())).await,
    ];
    Held {
        cookie,
        stateless,
        key,
        by_key,
        streams,
    }
}

/// After a disable: every stream got `revoked` (`user_disabled`) and ended, every credential
/// is refused, every session has its `revoked` audit event.
async fn assert_all_dead(app: &TestApp, held: Held) {
    futures::future::join_all(
        held.streams
            .into_iter()
            .map(Sse::expect_user_disabled_then_end),
    )
    .await;
    let cookie = &held.cookie;
    refused(
        &app.whoami_cookie(cookie).await,
        "session_revoked",
        "cookie check",
    );
    refused(
        &app.refresh_cookie(cookie).await,
        "session_revoked",
        "cookie refresh",
    );
    let access = held.stateless.access_token();
    refused(
        &app.whoami_bearer(&access).await,
        "session_revoked",
        "bearer check",
    );
    let refresh = held.stateless.refresh_token();
    refused(
        &app.refresh_json(&refresh).await,
        "session_revoked",
        "refresh",
    );
    let key_access = held.by_key.access_token();
    refused(
        &app.whoami_bearer(&key_access).await,
        "session_revoked",
        "key session",
    );
    let key_refresh = held.by_key.refresh_token();
    refused(
        &app.refresh_json(&key_refresh).await,
        "session_revoked",
        "key refresh",
    );
    refused(
        &app.login_api_key(&held.key).await,
        "invalid_credentials",
        "key login",
    );
    for mode in [SessionKind::Stateful, SessionKind::Stateless] {
        refused(
            &app.login(mode).await,
            "invalid_credentials",
            "password login",
        );
    }
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM latchkey.session_events
         WHERE event = 'revoked' AND detail->>'reason' = 'user_disabled'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(audited, 3, "one revoked event per session");
    assert_eq!(live_sessions(app).await, 0);
}

/// Live sessions of the test user, directly or through any of its keys.
async fn live_sessions(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM latchkey.sessions
         WHERE revoked_at IS NULL
           AND (owner_key = $1 OR owner_key IN
                (SELECT 'apikey:' || id FROM latchkey.api_keys WHERE owner_key = $1))",
    )
    .bind(app.user.owner_key())
    .fetch_one(&app.db.pool)
    .await
    .expect("live sessions")
}

#[tokio::test]
async fn disabling_a_user_with_the_cli_ends_its_sessions_api_key_sessions_and_streams() {
    let app = app().await;
    let held = hold_everything(&app).await;
    let (ok, out, err) = latchkey(&app, &["user", "disable", &app.user.email]);
    assert!(ok, "{err}");
    assert!(out.contains("revoked 3 session(s)"), "{out}");
    assert_all_dead(&app, held).await;
}

#[tokio::test]
async fn disabling_a_user_with_a_plain_sql_update_ends_its_sessions_api_key_sessions_and_streams() {
    let app = app().await;
    let held = hold_everything(&app).await;
    sqlx::query("UPDATE latchkey.users SET disabled = true WHERE id = $1")
        .bind(app.user.id)
        .execute(&app.db.pool)
        .await
        .expect("update");
    assert_all_dead(&app, held).await;
}

#[tokio::test]
async fn enabling_a_user_brings_back_its_logins_but_not_its_old_sessions() {
    let app = app().await;
    let held = hold_everything(&app).await;
    let (ok, _, err) = latchkey(&app, &["user", "disable", &app.user.email]);
    assert!(ok, "{err}");
    let (ok, out, err) = latchkey(&app, &["user", "enable", &app.user.email]);
    assert!(ok, "{err}");
    assert!(out.contains("enabled"), "{out}");

    assert_eq!(
        app.login(SessionKind::Stateless).await.status,
        StatusCode::OK
    );
    assert_eq!(app.login_api_key(&held.key).await.status, StatusCode::OK);
    let old = [
        app.whoami_cookie(&held.cookie).await,
        app.refresh_json(&held.stateless.refresh_token()).await,
        app.refresh_json(&held.by_key.refresh_token()).await,
        app.whoami_bearer(&held.by_key.access_token()).await,
    ];
    for t in &old {
        refused(t, "session_revoked", "an old session after enable");
    }

    let (ok, _, err) = latchkey(&app, &["user", "enable", "nobody@example.com"]);
    assert!(!ok && err.contains("no account"), "{err}");
    let (disabled, enabled): (Option<i32>, bool) = sqlx::query_as(
        "SELECT latchkey.latchkey_disable_user('nobody@example.com'), \
                latchkey.latchkey_enable_user('nobody@example.com')",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("functions");
    assert_eq!((disabled, enabled), (None, false));
}

/// Logins in flight when the disable commits, password and API key, over many rounds.
#[tokio::test]
async fn no_login_racing_a_disable_leaves_a_live_session_of_the_user() {
    const PASSWORD_LOGINS: usize = 6;
    const KEY_LOGINS: usize = 16;
    const ROUNDS: u64 = 12;
    let app = app().await;
    let (_, key) = app.create_api_key().await;
    let (mut issued, mut denied) = (0, 0);
    for round in 0..ROUNDS {
        sqlx::query("UPDATE latchkey.users SET disabled = false WHERE id = $1")
            .bind(app.user.id)
            .execute(&app.db.pool)
            .await
            .expect("enable");
        let barrier = Arc::new(Barrier::new(PASSWORD_LOGINS + KEY_LOGINS + 1));
        let mut logins = Vec::new();
        for i in 0..PASSWORD_LOGINS + KEY_LOGINS {
            let (auth, barrier) = (app.state.auth.clone(), barrier.clone());
            let (email, key) = (app.user.email.clone(), key.clone());
            logins.push(tokio::spawn(async move {
                barrier.wait().await;
                // Each login from its own address: the throttle's bound on concurrent checks
                // of one address is not what this test races.
                let meta = ClientMeta {
                    ip: Some(format!("192.0.2.{}", i + 1)),
                    ..ClientMeta::default()
                };
                if i < PASSWORD_LOGINS {
                    let pw = SecretString::from(PASSWORD.to_owned());
                    let mode = [SessionKind::Stateful, SessionKind::Stateless][i % 2];
                    auth.login_password(&email, pw, mode, &meta, None).await
                } else {
                    auth.login_api_key(&key, &meta).await
                }
            }));
        }
        let (pool, email, b) = (app.db.pool.clone(), app.user.email.clone(), barrier);
        let disable = tokio::spawn(async move {
            b.wait().await;
            // Land at varying points of the logins: before, inside and after their checks.
            tokio::time::sleep(Duration::from_millis(round * 9 % 50)).await;
            let sql = if round % 2 == 0 {
                "SELECT latchkey.latchkey_disable_user($1)"
            } else {
                "UPDATE latchkey.users SET disabled = true WHERE email = $1"
            };
            sqlx::query(sql)
                .bind(email)
                .execute(&pool)
                .await
                .expect("disable");
        });
        for login in logins {
            match login.await.expect("login task") {
                Ok(_) => issued += 1,
                Err(latchkey::auth::AuthError::InvalidCredentials) => denied += 1,
                Err(e) => panic!("unexpected login error: {e}"),
            }
        }
        disable.await.expect("disable task");
        assert_eq!(live_sessions(&app).await, 0, "round {round}");
    }
    assert!(
        issued > 0 && denied > 0,
        "issued {issued}, refused {denied}"
    );
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM latchkey.sessions WHERE revoked_reason = 'user_disabled'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("revoked");
    assert_eq!(
        revoked, issued,
        "every issued session was revoked by a disable"
    );
}

#[tokio::test]
async fn a_refused_insert_for_a_disabled_user_or_a_revoked_key_creates_nothing() {
    let app = app().await;
    let (key_id, _) = app.create_api_key().await;
    let auth = &app.state.auth;
    let spec = latchkey::auth::IssueSpec {
        absolute_ttl_secs: 3600,
        data: json!({}),
        event_detail: json!({}),
    };
    let meta = ClientMeta::default();
    let stateless = SessionKind::Stateless;
    let nobody = OwnerKey::User(Uuid::new_v4());
    let unknown = auth.issue(&nobody, stateless, &meta, &spec).await;
    assert!(matches!(
        unknown,
        Err(latchkey::auth::AuthError::InvalidCredentials)
    ));
    app.state
        .auth
        .store()
        .revoke_api_key(key_id)
        .await
        .expect("revoke");
    let by_revoked_key = auth
        .issue(&OwnerKey::ApiKey(key_id), stateless, &meta, &spec)
        .await;
    assert!(matches!(
        by_revoked_key,
        Err(latchkey::auth::AuthError::InvalidCredentials)
    ));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}
