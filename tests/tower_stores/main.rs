//! tower-sessions-stores' route tests, copied unchanged, run against `PgSessionStore` as that
//! repository's `postgres_store_tests` runs them against the stock `PostgresStore`, each test
//! on a database of its own.
//!
//! `common/mod.rs` is `tests/common/mod.rs` of maxcountryman/tower-sessions-stores at commit
//! `b34a2f363217c0c557ee332c8847f4e2d1b5e6b4`, the commit tower-sessions-sqlx-store 0.15.0
//! (the version in `Cargo.lock`, for tower-sessions 0.14) was published from; byte for byte
//! (`copy_is_unchanged` checks its SHA-256). Its `route_tests!` names its helpers
//! `$crate::common`, as tower-sessions' own copy does, so the two live in test targets of
//! their own. `postgres_store_tests` below is upstream's module of that name
//! (`tests/test-integration.rs`) with the store swapped: `PgSessionStore` on a fresh database
//! instead of `PostgresStore` on `POSTGRES_URL`. All 11 tests pass.

// The copied file is kept as it is: its own style is allowed here.
#![allow(unreachable_pub, missing_docs, clippy::unwrap_used, clippy::dbg_macro)]

#[macro_use]
#[allow(dead_code)]
mod common;

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "../tower_suites/store.rs"]
mod store;

mod postgres_store_tests {
    use axum::Router;
    use latchkey::store::PgSessionStore;
    use tower_sessions::SessionManagerLayer;

    use crate::common::build_app;
    use crate::store::Kept;

    async fn app(max_age: Option<Duration>) -> Router {
        let session_store = Kept::new(PgSessionStore::new).await;
        let session_manager = SessionManagerLayer::new(session_store).with_secure(true);

        build_app(session_manager, max_age)
    }

    route_tests!(app);
}

#[test]
fn copy_is_unchanged() {
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(include_bytes!("common/mod.rs"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest, "db8237ce3acbebf487b5c320d817eb1d229357908bb33a686e7076d22bc15151",
        "common/mod.rs is tower-sessions-stores' tests/common/mod.rs at b34a2f36, unedited"
    );
}
