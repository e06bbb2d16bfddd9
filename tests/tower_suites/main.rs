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

mod latchkey_store_tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use axum::Router;
    use latchkey::store::PgSessionStore;
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store;
    use tower_sessions::{SessionManagerLayer, SessionStore};

    use crate::common::build_app;
    use crate::helpers::TestDb;

    /// `PgSessionStore` holding its test database: the database lives as long as any clone of
    /// the store (the last request's save included) and is dropped after it.
    #[derive(Clone)]
    struct Kept {
        store: PgSessionStore,
        _db: Arc<TestDb>,
    }

    impl std::fmt::Debug for Kept {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Kept").field("store", &self.store).finish()
        }
    }

    #[async_trait]
    impl SessionStore for Kept {
        async fn create(&self, record: &mut Record) -> session_store::Result<()> {
            self.store.create(record).await
        }

        async fn save(&self, record: &Record) -> session_store::Result<()> {
            self.store.save(record).await
        }

        async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
            self.store.load(id).await
        }

        async fn delete(&self, id: &Id) -> session_store::Result<()> {
            self.store.delete(id).await
        }
    }

    /// The app of the route tests on `PgSessionStore`, on a fresh database.
    async fn app(max_age: Option<Duration>, domain: Option<String>) -> Router {
        let db = TestDb::new().await;
        let session_store = Kept {
            store: PgSessionStore::new(db.pool.clone()),
            _db: Arc::new(db),
        };
        let session_manager = SessionManagerLayer::new(session_store).with_secure(true);
        build_app(session_manager, max_age, domain)
    }

    route_tests!(app);
}
