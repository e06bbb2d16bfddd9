//! The behaviours tower-sessions documents for a `SessionStore`, driven through
//! `SessionManagerLayer` as an app would, run against our store and the stock
//! `tower_sessions_sqlx_store::PostgresStore` alike (the suite is the same macro).

use std::collections::HashMap;

use axum::http::StatusCode;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::{Expiry, SessionStore};

use crate::helpers::TestDb;
use crate::tower_support::{call, session_app};

/// A record as tower-sessions builds one.
pub fn record(key: &str, value: &str, expiry_date: OffsetDateTime) -> Record {
    Record {
        id: Id::default(),
        data: HashMap::from([(key.to_owned(), serde_json::json!(value))]),
        expiry_date,
    }
}

pub fn in_an_hour() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::hours(1)
}

macro_rules! store_conformance {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn data_set_in_one_request_is_read_back_in_the_next() {
                let db = TestDb::new().await;
                let app = session_app($make(&db).await, None, None);
                let set = call(&app, "POST", "/set/colour/blue", None).await;
                assert_eq!(set.status, StatusCode::OK);
                let cookie = set.cookie.expect("a session cookie is set");
                let got = call(&app, "GET", "/get/colour", Some(&cookie)).await;
                assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "\"blue\""));
            }

            #[tokio::test]
            async fn a_second_save_replaces_the_data_under_the_same_id() {
                let db = TestDb::new().await;
                let app = session_app($make(&db).await, None, None);
                let cookie = call(&app, "POST", "/set/colour/blue", None).await.cookie.expect("cookie");
                let again = call(&app, "POST", "/set/colour/red", Some(&cookie)).await;
                assert_eq!(again.status, StatusCode::OK);
                assert_eq!(again.cookie.as_deref(), Some(cookie.as_str()), "same id");
                let got = call(&app, "GET", "/get/colour", Some(&cookie)).await;
                assert_eq!(got.body, "\"red\"");
            }

            #[tokio::test]
            async fn a_flushed_session_no_longer_loads() {
                let db = TestDb::new().await;
                let app = session_app($make(&db).await, None, None);
                let cookie = call(&app, "POST", "/set/colour/blue", None).await.cookie.expect("cookie");
                let out = call(&app, "POST", "/flush", Some(&cookie)).await;
                assert_eq!(out.status, StatusCode::OK);
                let got = call(&app, "GET", "/get/colour", Some(&cookie)).await;
                assert_eq!(got.status, StatusCode::NOT_FOUND);
            }

            #[tokio::test]
            async fn cycle_id_keeps_the_data_under_a_new_id_and_retires_the_old_one() {
                let db = TestDb::new().await;
                let app = session_app($make(&db).await, None, None);
                let old = call(&app, "POST", "/set/colour/blue", None).await.cookie.expect("cookie");
                let cycled = call(&app, "POST", "/cycle", Some(&old)).await;
                let new = cycled.cookie.expect("a new cookie");
                assert_ne!(new, old);
                assert_eq!(call(&app, "GET", "/get/colour", Some(&new)).await.body, "\"blue\"");
                let stale = call(&app, "GET", "/get/colour", Some(&old)).await;
                assert_eq!(stale.status, StatusCode::NOT_FOUND);
            }

            #[tokio::test]
            async fn an_expired_session_loads_as_nothing() {
                let db = TestDb::new().await;
                let past = OffsetDateTime::now_utc() - time::Duration::minutes(1);
                let app = session_app($make(&db).await, Some(Expiry::AtDateTime(past)), None);
                let cookie = call(&app, "POST", "/set/colour/blue", None).await.cookie.expect("cookie");
                let got = call(&app, "GET", "/get/colour", Some(&cookie)).await;
                assert_eq!(got.status, StatusCode::NOT_FOUND);

                let store = $make(&db).await;
                let mut rec = record("colour", "blue", past);
                store.create(&mut rec).await.expect("create");
                assert!(store.load(&rec.id).await.expect("load").is_none());
            }

            #[tokio::test]
            async fn an_unknown_or_malformed_cookie_starts_a_fresh_session() {
                let db = TestDb::new().await;
                let app = session_app($make(&db).await, None, None);
                let unknown = Id::default().to_string();
                for cookie in [unknown.as_str(), "not-a-session-id", ""] {
                    let got = call(&app, "GET", "/get/colour", Some(cookie)).await;
                    assert_eq!(got.status, StatusCode::NOT_FOUND, "cookie {cookie:?}");
                    let set = call(&app, "POST", "/set/colour/blue", Some(cookie)).await;
                    assert_eq!(set.status, StatusCode::OK);
                    assert_ne!(set.cookie.as_deref(), Some(cookie), "never the client's id");
                }
            }

            #[tokio::test]
            async fn create_draws_a_new_id_when_the_id_is_taken() {
                let db = TestDb::new().await;
                let store = $make(&db).await;
                let mut first = record("who", "first", in_an_hour());
                store.create(&mut first).await.expect("create first");
                let mut second = record("who", "second", in_an_hour());
                second.id = first.id;
                store.create(&mut second).await.expect("create second");
                assert_ne!(second.id, first.id);
                let a = store.load(&first.id).await.expect("load").expect("first");
                let b = store.load(&second.id).await.expect("load").expect("second");
                assert_eq!(a.data["who"], "first", "the existing session is untouched");
                assert_eq!(b.data["who"], "second");
            }

            #[tokio::test]
            async fn deleting_or_loading_a_missing_id_is_fine() {
                let db = TestDb::new().await;
                let store = $make(&db).await;
                store.delete(&Id::default()).await.expect("delete of a missing id");
                assert!(store.load(&Id::default()).await.expect("load").is_none());
                let mut rec = record("k", "v", in_an_hour());
                store.create(&mut rec).await.expect("create");
                store.delete(&rec.id).await.expect("delete");
                store.delete(&rec.id).await.expect("second delete");
                assert!(store.load(&rec.id).await.expect("load").is_none());
            }

            #[tokio::test]
            async fn a_loaded_record_keeps_its_id_data_and_expiry() {
                let db = TestDb::new().await;
                let store = $make(&db).await;
                let expiry = in_an_hour().replace_nanosecond(0).expect("whole second");
                let mut rec = record("k", "v", expiry);
                rec.data.insert("n".to_owned(), serde_json::json!({"deep": [1, 2, 3]}));
                store.create(&mut rec).await.expect("create");
                let got = store.load(&rec.id).await.expect("load").expect("present");
                assert_eq!(got.id, rec.id);
                assert_eq!(got.data, rec.data);
                assert_eq!(got.expiry_date, expiry);
            }
        }
    };
}

async fn ours(db: &TestDb) -> latchkey::store::PgSessionStore {
    latchkey::store::PgSessionStore::new(db.pool.clone())
}

async fn stock(db: &TestDb) -> tower_sessions_sqlx_store::PostgresStore {
    let store = tower_sessions_sqlx_store::PostgresStore::new(db.pool.clone());
    store.migrate().await.expect("stock store schema");
    store
}

/// Ours with statement coalescing off: one statement per call.
async fn ours_alone(db: &TestDb) -> latchkey::store::PgSessionStore {
    ours(db).await.with_coalescing(0, 1)
}

/// Ours in `--pooler transaction` mode: each statement unnamed in its own transaction, through
/// the tests' pooler when `LATCHKEY_TEST_POOLER_URL` is set.
async fn ours_pooled(db: &TestDb) -> latchkey::store::PgSessionStore {
    latchkey::store::PgSessionStore::new(crate::helpers::pooled_pool(db, 10))
}

store_conformance!(latchkey_store, ours);
store_conformance!(latchkey_store_behind_a_pooler, ours_pooled);
store_conformance!(latchkey_store_uncoalesced, ours_alone);
store_conformance!(stock_postgres_store, stock);
