//! `examples/store_counter.rs`, run in-process next to the /auth service on one database.

#[path = "../../examples/store_counter.rs"]
#[allow(dead_code)]
mod store_counter;

use axum::http::StatusCode;
use latchkey::store::PgSessionStore;
use latchkey::SessionKind;

use crate::helpers::spawn_app;
use crate::tower_support::call;

#[tokio::test]
async fn the_example_counts_binds_on_login_and_is_revoked_by_logout_all() {
    let service = spawn_app().await;
    let app = store_counter::app(PgSessionStore::new(service.db.pool.clone()), false);

    let first = call(&app, "GET", "/", None).await;
    assert_eq!(first.body, "1");
    let cookie = first.cookie.expect("cookie");
    assert_eq!(call(&app, "GET", "/", Some(&cookie)).await.body, "2");
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&cookie)).await.body,
        "anonymous"
    );

    let login = call(
        &app,
        "POST",
        &format!("/login/{}", service.user.id),
        Some(&cookie),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
    let cookie_after = login.cookie.expect("a new id on login");
    assert_ne!(cookie_after, cookie, "login cycles the id");
    assert_eq!(call(&app, "GET", "/", Some(&cookie_after)).await.body, "3");
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&cookie_after)).await.body,
        service.user.owner_key()
    );
    assert_eq!(
        call(&app, "GET", "/", Some(&cookie)).await.body,
        "1",
        "old id is gone"
    );

    // `latchkey sessions list --owner user:<id>` sees it.
    let store = service.state.auth.store();
    let listed = store
        .list_sessions(Some(&service.user.owner()))
        .await
        .expect("list");
    let row = PgSessionStore::row_id(&cookie_after.parse().expect("id"));
    assert!(listed
        .iter()
        .any(|s| s.session_id == row && s.state == "active"));

    // The same user logs out everywhere through /auth: the store session ends too.
    let auth = service.login(SessionKind::Stateful).await;
    let res = service
        .client
        .post(service.url("/auth/logout-all"))
        .headers(service.cookie_headers(&auth.cookie()))
        .send()
        .await
        .expect("logout-all");
    assert!(res.status().is_success(), "{}", res.status());
    let after = call(&app, "GET", "/", Some(&cookie_after)).await;
    assert_eq!(after.body, "1", "a fresh session: the counter starts over");
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&cookie_after)).await.body,
        "anonymous"
    );

    let logout = call(&app, "POST", "/logout", after.cookie.as_deref()).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
}
