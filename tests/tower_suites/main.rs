//! tower-sessions' own test suites, copied unchanged, run against `PgSessionStore`: the store
//! is a drop-in for the stores those tests were written for. Each test gets a database of its
//! own.
//!
//! All three come from tower-sessions at tag `v0.14.0` (commit
//! `b58463dc93fac49669e33f4b98af5455f0f332c2`, the version in `Cargo.lock`):
//!
//! | module | copied file | upstream source | tests |
//! |---|---|---|---|
//! | `latchkey_store_tests` | `common/mod.rs` | `tests/common/mod.rs` (the route tests) | 13 |
//! | `memory_store` | `upstream/memory_store_tests.rs` | `memory-store/src/lib.rs`, lines 61–134 (its `#[cfg(test)] mod tests`) | 5 |
//! | `service` | `upstream/service_tests.rs` | `src/service.rs`, lines 541–1011 (its `#[cfg(test)] mod tests`) | 17 |
//!
//! Each copy is byte for byte the upstream text (`copies::are_unchanged` checks their
//! SHA-256). Around each, a wrapper module gives the names the copy expects from its
//! surroundings, with `PgSessionStore` in place of the store it was written for; the
//! `MemoryStore` of the memory-store and layer tests is [`store::Lazy`], built by `Default`
//! as `MemoryStore` is. (`signed_test` and `private_test` of `src/service.rs` are behind
//! tower-sessions' `signed`/`private` features and compile out here, as they do upstream
//! without those features.)
//!
//! `PgSessionStore` with its default settings passes all of them but two layer tests, the
//! expected deviations of [`deviations::EXPECTED`]; `deviations` runs the layer tests on the
//! default store in a child process and fails unless exactly those fail, each for its
//! stated reason. In this process the layer tests run with `with_touch_interval(ZERO)`, under
//! which all 17 pass.

// The copied files are kept as they are: their own style is allowed here.
#![allow(unreachable_pub, missing_docs, clippy::unwrap_used, clippy::dbg_macro)]

#[macro_use]
#[allow(dead_code)]
mod common;

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod copies;
mod deviations;
mod store;

/// `crate::session`, as the layer tests name `Id` and `Record` inside tower-sessions.
use tower_sessions::session;

/// tower-sessions' route tests (`common/mod.rs`) on `PgSessionStore`.
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

/// The store-level tests of tower-sessions' memory store
/// (`upstream/memory_store_tests.rs`), on `PgSessionStore` with its default settings.
mod memory_store {
    use time::OffsetDateTime;
    use tower_sessions::session::Record;
    use tower_sessions::SessionStore;

    /// The store the tests know as `MemoryStore`.
    type MemoryStore = crate::store::Lazy<crate::store::Defaults>;

    include!("upstream/memory_store_tests.rs");
}

/// tower-sessions' session layer tests (`upstream/service_tests.rs`). Here, on
/// `PgSessionStore` with a touch interval of zero; in the child process of
/// [`crate::deviations`], on `PgSessionStore` with its default settings. (`signed` and
/// `private` are tower-sessions' features, not this crate's: their two tests compile out.)
#[allow(unexpected_cfgs)]
mod service {
    use http::{Request, Response};
    use tower::Service;
    use tower_cookies::cookie::SameSite;
    use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};

    /// The crate the tests import `MemoryStore` from.
    mod tower_sessions_memory_store {
        pub(crate) type MemoryStore = crate::store::Lazy<crate::deviations::LayerTestStore>;
    }

    include!("upstream/service_tests.rs");
}
