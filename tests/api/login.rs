//! Login: credentials, argon2 on every path, cookies, disabled accounts, rehashing.

use latchkey::SessionKind;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{decode, spawn_app, spawn_app_with, AppOptions, PASSWORD};

#[tokio::test]
async fn unknown_email_and_wrong_password_both_answer_invalid_credentials_after_running_argon2() {
    let app = spawn_app().await;
    let hasher = app.state.auth.hasher();

    let before = hasher.verifications();
    let unknown = app
        .login_as("nobody@example.com", PASSWORD, SessionKind::Stateless)
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.code(), "invalid_credentials");
    assert_eq!(
        hasher.verifications(),
        before + 1,
        "unknown email verified against the dummy hash"
    );

    let wrong = app
        .login_as(&app.user.email, "not the password", SessionKind::Stateless)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.code(), "invalid_credentials");
    assert_eq!(hasher.verifications(), before + 2);
    assert_eq!(
        unknown.body["detail"], wrong.body["detail"],
        "indistinguishable answers"
    );

    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(sessions, 0, "no session for failed logins");
}

#[tokio::test]
async fn email_lookup_is_case_insensitive_and_emails_are_unique_regardless_of_case() {
    let app = spawn_app().await;
    let ok = app
        .login_as("ALICE@Example.com", PASSWORD, SessionKind::Stateless)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let dup = app
        .state
        .auth
        .store()
        .insert_user("Alice@EXAMPLE.com", "$argon2id$v=19$x")
        .await
        .expect_err("duplicate");
    assert!(dup.is_conflict_on(latchkey::store::EMAIL_UNIQUE), "{dup:?}");
}

#[tokio::test]
async fn a_stateless_login_returns_a_bearer_jwt_and_a_refresh_token() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 300);
    assert!(login.refresh_token().starts_with("lkr_"));
    let claims = app
        .state
        .auth
        .jwt()
        .verify(&login.access_token())
        .expect("valid jwt");
    assert_eq!(claims.sid, login.session_id());
    assert_eq!(claims.sub, app.user.owner_key());
    assert!(login.set_cookie.is_none());
}

#[tokio::test]
async fn a_stateful_login_sets_a_host_prefixed_secure_httponly_lax_cookie() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateful).await;
    assert_eq!(login.status, StatusCode::OK);
    let sc = login.set_cookie.clone().expect("set-cookie");
    assert!(sc.starts_with("__Host-latchkey=lks_"), "{sc}");
    for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Expires="] {
        assert!(sc.contains(attr), "{attr} missing in {sc}");
    }
    assert!(!sc.contains("Domain"), "__Host- cookies carry no Domain");
    assert!(login.body.get("refresh_token").is_none());
    assert!(login.body["expires_in"].as_i64().expect("expires_in") > 0);
}

#[tokio::test]
async fn cookies_drop_secure_and_the_host_prefix_only_when_explicitly_disabled() {
    let mut opts = AppOptions::default();
    opts.settings.http.cookie_secure = false;
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateful).await;
    let sc = login.set_cookie.clone().expect("set-cookie");
    assert!(sc.starts_with("latchkey=lks_"), "{sc}");
    assert!(!sc.contains("Secure"));
    assert_eq!(
        app.whoami_cookie(&login.cookie()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_disabled_user_cannot_log_in_and_loses_its_sessions() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let n = app
        .state
        .auth
        .store()
        .disable_user(&app.user.email)
        .await
        .expect("disable");
    assert_eq!(n, Some(1));
    assert_eq!(
        app.login(SessionKind::Stateless).await.code(),
        "invalid_credentials"
    );
    assert_eq!(
        app.refresh_json(&login.refresh_token()).await.code(),
        "session_revoked"
    );
}

#[tokio::test]
async fn a_hash_with_old_parameters_is_replaced_at_the_next_login() {
    let app = spawn_app().await;
    // Store a hash made with weaker parameters, as an older release would have.
    let weak = argon2::Params::new(8 * 1024, 1, 1, Some(32)).expect("params");
    let old_hasher = latchkey::auth::password::PasswordHasher::new(
        weak,
        1,
        std::sync::Arc::new(latchkey::rng::OsSecretSource),
    )
    .expect("hasher");
    let old = old_hasher
        .hash(secrecy::SecretString::from("legacy password".to_owned()))
        .await
        .expect("hash");
    assert!(old.contains("m=8192,t=1"));
    let legacy = app
        .state
        .auth
        .store()
        .insert_user("legacy@example.com", &old)
        .await
        .expect("insert");
    let login = app
        .login_as(
            "legacy@example.com",
            "legacy password",
            SessionKind::Stateless,
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let now: String = sqlx::query_scalar("SELECT password_hash FROM latchkey.users WHERE id = $1")
        .bind(legacy)
        .fetch_one(&app.db.pool)
        .await
        .expect("row");
    assert!(now.contains("m=19456,t=2,p=1"), "{now}");
    assert_ne!(now, old);
}

#[tokio::test]
async fn login_issues_server_generated_ids_and_ignores_any_client_supplied_session_id() {
    let app = spawn_app().await;
    let chosen = uuid::Uuid::new_v4();
    let res = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({ "email": app.user.email, "password": PASSWORD, "mode": "stateless", "session_id": chosen }))
        .send()
        .await
        .expect("request");
    let answer = decode(res).await;
    assert_eq!(
        answer.status.as_u16() / 100,
        4,
        "unknown fields are refused"
    );
    let login = app.login(SessionKind::Stateless).await;
    assert_ne!(login.session_id(), chosen);
}
