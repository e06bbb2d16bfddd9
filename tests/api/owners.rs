//! Sessions belong to their owner: anonymous sessions each get their own owner and token,
//! API-key clients cannot reach each other's sessions, whatever ids they send.

use std::time::Duration;

use latchkey::SessionKind;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{decode, spawn_app, spawn_app_with, AppOptions, TestApp, Tokens, PASSWORD};

async fn anonymous(app: &TestApp, mode: &str) -> Tokens {
    let res = app
        .client
        .post(app.url("/auth/anonymous"))
        .json(&json!({ "mode": mode }))
        .send()
        .await
        .expect("anonymous");
    decode(res).await
}

async fn event_count(app: &TestApp, sid: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM latchkey.session_events WHERE session_id = $1")
        .bind(sid)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_client_with_another_api_key_cannot_take_over_a_session_by_sending_its_id_anywhere() {
    let app = spawn_app().await;
    let bob = app.add_user("bob@example.com", PASSWORD).await;
    let (_, key_a) = app
        .state
        .auth
        .create_api_key(&app.user.owner(), Some("sdk-a"))
        .await
        .expect("key a");
    let (_, key_b) = app
        .state
        .auth
        .create_api_key(&bob.owner(), Some("sdk-b"))
        .await
        .expect("key b");
    let a = app.login_api_key(&key_a).await;
    let b = app.login_api_key(&key_b).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(b.status, StatusCode::OK);
    let a_sid = a.session_id();
    let a_events = event_count(&app, a_sid).await;

    // Path: revoke A's session with B's credentials.
    let res = app
        .client
        .delete(app.url(&format!("/auth/sessions/{a_sid}")))
        .bearer_auth(b.access_token())
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // Headers and query: B asks about A's session and only ever sees its own.
    let res = app
        .client
        .get(app.url(&format!("/auth/session?session_id={a_sid}&sid={a_sid}")))
        .bearer_auth(b.access_token())
        .header("x-session-id", a_sid.to_string())
        .header("session-id", a_sid.to_string())
        .send()
        .await
        .expect("session");
    let who = decode(res).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.body["session_id"], b.session_id().to_string());
    let res = app
        .client
        .get(app.url(&format!("/auth/sessions?session_id={a_sid}&owner=apikey")))
        .bearer_auth(b.access_token())
        .send()
        .await
        .expect("sessions");
    let listed = decode(res).await;
    let ids: Vec<String> = listed.body["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["session_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, vec![b.session_id().to_string()]);
    // Bodies: a session id next to B's own valid credentials is refused.
    let res = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&json!({ "refresh_token": b.refresh_token(), "session_id": a_sid }))
        .send()
        .await
        .expect("refresh");
    assert!(res.status().is_client_error());
    let res = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({ "api_key": key_b, "session_id": a_sid }))
        .send()
        .await
        .expect("login");
    assert!(res.status().is_client_error());
    // Cookies and tokens: A's id alone, or with B's secret, is not a credential.
    let b_secret = latchkey::token::SessionToken::parse(&b.refresh_token())
        .expect("parse")
        .secret;
    let forged =
        latchkey::token::SessionToken::new(SessionKind::Stateless, a_sid, b_secret).encode();
    assert_eq!(app.refresh_json(&forged).await.code(), "invalid_token");
    assert_eq!(
        app.whoami_cookie(&a_sid.to_string()).await.code(),
        "invalid_token"
    );
    let res = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(b.access_token())
        .header("x-session-id", a_sid.to_string())
        .send()
        .await
        .expect("logout");
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "B logs itself out, nobody else"
    );

    // A sees nothing change and keeps working.
    assert_eq!(app.version_of(a_sid).await, 1);
    assert_eq!(event_count(&app, a_sid).await, a_events);
    assert_eq!(
        app.whoami_bearer(&a.access_token()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.refresh_json(&a.refresh_token()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.refresh_json(&b.refresh_token()).await.code(),
        "session_revoked"
    );
}

#[tokio::test]
async fn two_anonymous_sessions_have_different_owners_and_an_id_without_its_secret_gets_nothing() {
    let app = spawn_app().await;
    let one = anonymous(&app, "stateless").await;
    let two = anonymous(&app, "stateful").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(two.status, StatusCode::OK);
    let owner1 = app.whoami_bearer(&one.access_token()).await.body["owner_key"].clone();
    let owner2 = app.whoami_cookie(&two.cookie()).await.body["owner_key"].clone();
    assert!(owner1.as_str().is_some_and(|o| o.starts_with("anon:")));
    assert!(owner2.as_str().is_some_and(|o| o.starts_with("anon:")));
    assert_ne!(owner1, owner2);

    // Knowing the session id is not enough, and guessing revokes nothing.
    let guessed = latchkey::token::SessionToken::new(
        SessionKind::Stateful,
        two.session_id(),
        latchkey::token::Secret::from_bytes([1u8; 32]),
    );
    assert_eq!(
        app.whoami_cookie(&guessed.encode()).await.code(),
        "invalid_token"
    );
    assert_eq!(
        app.refresh_cookie(&guessed.encode()).await.code(),
        "invalid_token"
    );
    assert_eq!(
        app.whoami_cookie(&two.cookie()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn logging_in_from_an_anonymous_session_issues_a_new_session_and_revokes_the_anonymous_one() {
    let app = spawn_app().await;
    let anon = anonymous(&app, "stateful").await;
    let anon_sid = anon.session_id();
    sqlx::query("UPDATE latchkey.sessions SET data = '{\"cart\": [1, 2]}' WHERE id = $1")
        .bind(anon_sid)
        .execute(&app.db.pool)
        .await
        .expect("data");
    let res = app
        .client
        .post(app.url("/auth/login"))
        .headers(app.cookie_headers(&anon.cookie()))
        .json(&json!({ "email": app.user.email, "password": PASSWORD, "mode": "stateful", "carry_data": true }))
        .send()
        .await
        .expect("login");
    let login = decode(res).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    assert_ne!(login.session_id(), anon_sid, "new id: no fixation");
    assert_ne!(login.cookie(), anon.cookie());
    assert_eq!(
        app.whoami_cookie(&anon.cookie()).await.code(),
        "session_revoked"
    );
    assert_eq!(
        app.refresh_cookie(&anon.cookie()).await.code(),
        "session_revoked"
    );
    let who = app.whoami_cookie(&login.cookie()).await;
    assert_eq!(who.body["owner_key"], app.user.owner_key());
    let (data, link): (serde_json::Value, Option<String>) = sqlx::query_as(
        "SELECT s.data, e.detail->>'upgraded_from' FROM latchkey.sessions s
         JOIN latchkey.session_events e ON e.session_id = s.id AND e.event = 'created'
         WHERE s.id = $1",
    )
    .bind(login.session_id())
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert_eq!(data, json!({"cart": [1, 2]}));
    assert_eq!(link, Some(anon_sid.to_string()));
    let reason: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM latchkey.sessions WHERE id = $1")
            .bind(anon_sid)
            .fetch_one(&app.db.pool)
            .await
            .expect("row");
    assert_eq!(reason.as_deref(), Some("upgraded"));
}

#[tokio::test]
async fn a_stateless_anonymous_session_is_upgraded_through_its_bearer_token_without_carrying_data_by_default(
) {
    let app = spawn_app().await;
    let anon = anonymous(&app, "stateless").await;
    sqlx::query("UPDATE latchkey.sessions SET data = '{\"k\": 1}' WHERE id = $1")
        .bind(anon.session_id())
        .execute(&app.db.pool)
        .await
        .expect("data");
    let res = app
        .client
        .post(app.url("/auth/login"))
        .bearer_auth(anon.access_token())
        .json(&json!({ "email": app.user.email, "password": PASSWORD, "mode": "stateless" }))
        .send()
        .await
        .expect("login");
    let login = decode(res).await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(
        app.refresh_json(&anon.refresh_token()).await.code(),
        "session_revoked"
    );
    let data: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM latchkey.sessions WHERE id = $1")
            .bind(login.session_id())
            .fetch_one(&app.db.pool)
            .await
            .expect("row");
    assert_eq!(data, json!({}));
}

#[tokio::test]
async fn the_anonymous_ttl_is_enforced_on_refresh_and_on_session_checks() {
    let mut opts = AppOptions::default();
    opts.settings.auth.anon_ttl_secs = 1;
    let app = spawn_app_with(opts).await;
    let stateless = anonymous(&app, "stateless").await;
    let stateful = anonymous(&app, "stateful").await;
    let lifetime: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM absolute_expires_at - created_at)::float8 FROM latchkey.sessions WHERE id = $1",
    )
    .bind(stateless.session_id())
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert!(
        (lifetime - 1.0).abs() < 0.01,
        "anonymous lifetime {lifetime}"
    );
    // A user login keeps the long TTL.
    let user = app.login(SessionKind::Stateless).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        app.refresh_json(&stateless.refresh_token()).await.code(),
        "token_expired"
    );
    assert_eq!(
        app.whoami_bearer(&stateless.access_token()).await.code(),
        "token_expired"
    );
    assert_eq!(
        app.whoami_cookie(&stateful.cookie()).await.code(),
        "token_expired"
    );
    assert_eq!(
        app.refresh_cookie(&stateful.cookie()).await.code(),
        "token_expired"
    );
    assert_eq!(
        app.refresh_json(&user.refresh_token()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoking_an_api_key_revokes_its_sessions_and_its_logins() {
    let app = spawn_app().await;
    let (key_id, key) = app.create_api_key().await;
    let s1 = app.login_api_key(&key).await;
    let s2 = app.login_api_key(&key).await;
    let who = app.whoami_bearer(&s1.access_token()).await;
    assert_eq!(who.body["owner_key"], format!("apikey:{key_id}"));
    let n = app
        .state
        .auth
        .store()
        .revoke_api_key(key_id)
        .await
        .expect("revoke");
    assert_eq!(n, Some(2));
    assert_eq!(
        app.refresh_json(&s1.refresh_token()).await.code(),
        "session_revoked"
    );
    assert_eq!(
        app.refresh_json(&s2.refresh_token()).await.code(),
        "session_revoked"
    );
    assert_eq!(app.login_api_key(&key).await.code(), "invalid_credentials");
}

#[tokio::test]
async fn api_keys_are_stateless_only_and_a_wrong_key_is_invalid_credentials() {
    let app = spawn_app().await;
    let (_, key) = app.create_api_key().await;
    let res = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({ "api_key": key, "mode": "stateful" }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let mut wrong = key.clone();
    wrong.replace_range(10..12, if &key[10..12] == "AA" { "BB" } else { "AA" });
    assert_eq!(
        app.login_api_key(&wrong).await.code(),
        "invalid_credentials"
    );
    assert_eq!(
        app.login_api_key("lka_short").await.code(),
        "invalid_credentials"
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM latchkey.api_keys WHERE key_hash IS NOT NULL")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(stored, 1);
}
