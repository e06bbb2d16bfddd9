//! tower-sessions' own route tests (`tests/common/mod.rs` of tower-sessions 0.14.0, copied
//! unchanged into `common/`), run against `PgSessionStore`, each test on a database of its
//! own: the store is a drop-in for the stores those tests were written for.

// The copied file is kept as it is: its own style is allowed here.
#![allow(unreachable_pub, missing_docs, clippy::unwrap_used, clippy::dbg_macro)]

#[macro_use]
#[allow(dead_code)]
mod common;

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod store;

mod latchkey_store_tests {
    use axum::Router;
    use latchkey::store::PgSessionStore;
    use tower_sessions::SessionManagerLayer;

    use crate::common::build_app;
    use crate::store::Kept;

    /// The app of the route tests on `PgSessionStore`, on a fresh database.
    async fn app(max_age: Option<Duration>, domain: Option<String>) -> Router {
        let session_store = Kept::new(PgSessionStore::new).await;
        let session_manager = SessionManagerLayer::new(session_store).with_secure(true);
        build_app(session_manager, max_age, domain)
    }

    route_tests!(app);
}
