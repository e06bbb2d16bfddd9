//! The resurrection race on both stores: request A loads the session, a logout deletes it,
//! then A finishes and its session is saved. The stock store upserts, so the session comes
//! back under the old cookie; ours only updates a live row, so it stays gone.

use axum::http::StatusCode;
use latchkey::store::{PgSessionStore, RevokeReason, Store};
use tower_sessions::SessionStore;

use crate::helpers::TestDb;
use crate::tower_support::{call, session_app, Race};

/// Runs the interleaving on `store` and returns what the old cookie reads afterwards.
async fn logout_during_an_in_flight_request<S: SessionStore + Clone>(
    store: S,
) -> (StatusCode, String) {
    let race = Race::new();
    let app = session_app(store, None, Some(race.clone()));
    let cookie = call(&app, "POST", "/set/cart/apples", None)
        .await
        .cookie
        .expect("cookie");

    let in_flight = {
        let (app, cookie) = (app.clone(), cookie.clone());
        tokio::spawn(async move { call(&app, "POST", "/race/cart/pears", Some(&cookie)).await })
    };
    race.loaded.wait().await; // A has loaded the session
    let out = call(&app, "POST", "/flush", Some(&cookie)).await;
    assert_eq!(out.status, StatusCode::OK, "logout");
    race.proceed.wait().await; // A writes and its response saves the session
    let a = in_flight.await.expect("request A");
    assert_eq!(a.status, StatusCode::OK, "request A itself succeeds");

    let after = call(&app, "GET", "/get/cart", Some(&cookie)).await;
    (after.status, after.body)
}

#[tokio::test]
async fn a_save_after_logout_resurrects_the_session_in_the_stock_store_but_not_in_ours() {
    let db = TestDb::new().await;
    let stock = tower_sessions_sqlx_store::PostgresStore::new(db.pool.clone());
    stock.migrate().await.expect("stock schema");
    let (status, body) = logout_during_an_in_flight_request(stock).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "\"pears\""),
        "the stock store brings the logged-out session back"
    );

    let ours = PgSessionStore::new(db.pool.clone());
    let (status, body) = logout_during_an_in_flight_request(ours).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "ours keeps it gone (read {body})"
    );
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM latchkey.sessions WHERE revoked_at IS NULL AND data ? 'cart'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(live, 0, "no live row holds the cart");
    let reason: String = sqlx::query_scalar("SELECT revoked_reason FROM latchkey.sessions")
        .fetch_one(&db.pool)
        .await
        .expect("reason");
    assert_eq!(reason, "deleted");
}

#[tokio::test]
async fn a_save_after_any_revocation_does_not_bring_the_session_back() {
    let db = TestDb::new().await;
    let core = Store::new(db.pool.clone());
    let store = PgSessionStore::new(db.pool.clone());
    for reason in [
        RevokeReason::Admin,
        RevokeReason::LogoutAll,
        RevokeReason::ReuseDetected,
        RevokeReason::Logout,
    ] {
        let mut rec =
            crate::tower_conformance::record("k", "before", crate::tower_conformance::in_an_hour());
        store.create(&mut rec).await.expect("create");
        let loaded = store.load(&rec.id).await.expect("load").expect("live");
        assert!(
            core.revoke(PgSessionStore::row_id(&rec.id), reason)
                .await
                .expect("revoke"),
            "{reason:?} revokes the row"
        );
        let mut changed = loaded.clone();
        changed
            .data
            .insert("k".to_owned(), serde_json::json!("after"));
        changed.expiry_date += time::Duration::hours(5);
        store.save(&changed).await.expect("save is not an error");
        assert!(
            store.load(&rec.id).await.expect("load").is_none(),
            "{reason:?}"
        );
        let (revoked, data): (bool, serde_json::Value) = sqlx::query_as(
            "SELECT revoked_at IS NOT NULL, data FROM latchkey.sessions WHERE id = $1",
        )
        .bind(PgSessionStore::row_id(&rec.id))
        .fetch_one(&db.pool)
        .await
        .expect("row");
        assert!(revoked, "{reason:?}: still revoked");
        assert_eq!(
            data["k"], "before",
            "{reason:?}: the late save wrote nothing"
        );
    }
}

#[tokio::test]
async fn many_in_flight_saves_racing_a_delete_never_leave_a_live_row() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let mut rec =
        crate::tower_conformance::record("n", "0", crate::tower_conformance::in_an_hour());
    store.create(&mut rec).await.expect("create");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(33));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (store, barrier, mut r) = (store.clone(), barrier.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            r.data.insert("n".to_owned(), serde_json::json!(i));
            store.save(&r).await
        }));
    }
    barrier.wait().await;
    store.delete(&rec.id).await.expect("delete");
    for t in tasks {
        t.await.expect("join").expect("save");
    }
    assert!(store.load(&rec.id).await.expect("load").is_none());
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions WHERE revoked_at IS NULL")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(live, 0);
}
