//! A token of one mode never works in the other, and the session is left untouched.

use latchkey::SessionKind;
use reqwest::StatusCode;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_stateful_token_sent_as_a_refresh_token_is_a_mode_mismatch_and_the_session_still_works() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateful).await;
    let sid = login.session_id();
    let cookie = login.cookie();

    let answer = app.refresh_json(&cookie).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "token_mode_mismatch");
    assert_eq!(app.version_of(sid).await, 1, "not rotated");
    assert_eq!(app.events_of(sid, "mode_mismatch").await, 1);
    assert_eq!(app.events_of(sid, "revoked").await, 0);

    // The cookie still authenticates and still refreshes in its own mode.
    assert_eq!(app.whoami_cookie(&cookie).await.status, StatusCode::OK);
    let refreshed = app.refresh_cookie(&cookie).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
}

#[tokio::test]
async fn a_stateless_refresh_token_sent_in_the_cookie_is_a_mode_mismatch_and_the_session_still_works(
) {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    let refresh = login.refresh_token();

    let answer = app.refresh_cookie(&refresh).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "token_mode_mismatch");
    let who = app.whoami_cookie(&refresh).await;
    assert_eq!(who.code(), "token_mode_mismatch");
    assert_eq!(app.version_of(sid).await, 1, "not rotated");
    assert_eq!(app.events_of(sid, "mode_mismatch").await, 2);

    let refreshed = app.refresh_json(&refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
    assert_eq!(
        app.whoami_bearer(&refreshed.access_token()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_stateful_token_as_a_bearer_access_token_is_a_mode_mismatch() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateful).await;
    let who = app.whoami_bearer(&login.cookie()).await;
    assert_eq!(who.code(), "token_mode_mismatch");
    assert_eq!(
        app.whoami_cookie(&login.cookie()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_refresh_token_is_not_an_access_token() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let who = app.whoami_bearer(&login.refresh_token()).await;
    assert_eq!(who.status, StatusCode::UNAUTHORIZED);
    assert_eq!(who.code(), "invalid_token");
}

#[tokio::test]
async fn an_access_token_in_the_cookie_is_refused() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let who = app.whoami_cookie(&login.access_token()).await;
    assert_eq!(who.status, StatusCode::UNAUTHORIZED);
    assert_eq!(who.code(), "invalid_token");
}

#[tokio::test]
async fn the_kind_column_is_the_authority_even_if_a_prefix_is_rewritten() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateful).await;
    // Same id and secret, relabelled with the stateless prefix.
    let relabelled = format!("lkr_{}", &login.cookie()[4..]);
    let answer = app.refresh_json(&relabelled).await;
    assert_eq!(answer.code(), "token_mode_mismatch");
    assert_eq!(app.version_of(login.session_id()).await, 1);
}
