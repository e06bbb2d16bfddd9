//! The store under test, as the copied suites get it: `PgSessionStore` on a database of the
//! test's own, dropped when the test has ended.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use latchkey::store::PgSessionStore;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;
use tower_sessions::SessionStore;

use crate::helpers::TestDb;

thread_local! {
    /// The databases of the test running on this thread. libtest runs each test on a thread
    /// of its own and joins it, so they are dropped when the test has ended, before the
    /// process exits.
    static TEST_DATABASES: RefCell<Vec<TestDb>> = const { RefCell::new(Vec::new()) };
}

/// `PgSessionStore` on a database of the test's own, which lives until the test has ended.
///
/// Not any earlier: the copied tests drop their store (`ServiceExt::oneshot` consumes the
/// service that holds it) before their last assertions, and dropping a database takes
/// `DROP DATABASE … WITH (FORCE)`, tenths of a second on a loaded machine, which
/// `expiry_at_date_time_test` would count between the cookie it checks and its own clock.
#[derive(Clone)]
pub struct Kept {
    store: PgSessionStore,
}

impl Kept {
    /// The store `make` builds on a fresh, migrated database.
    pub async fn new(make: fn(PgPool) -> PgSessionStore) -> Self {
        let db = TestDb::new().await;
        let store = make(db.pool.clone());
        TEST_DATABASES.with(|dbs| dbs.borrow_mut().push(db));
        Self { store }
    }
}

impl fmt::Debug for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// How a [`Lazy`] store is built.
pub trait Settings: Send + Sync + 'static {
    /// The store on `pool`.
    fn store(pool: PgPool) -> PgSessionStore;
}

/// `PgSessionStore::new`, nothing changed.
#[derive(Debug)]
pub struct Defaults;

impl Settings for Defaults {
    fn store(pool: PgPool) -> PgSessionStore {
        PgSessionStore::new(pool)
    }
}

/// A [`Kept`] store made by `Default`, as `MemoryStore::default()` is (no `.await`): its
/// database is created on first use and shared by the store's clones.
pub struct Lazy<S> {
    kept: Arc<OnceCell<Kept>>,
    settings: PhantomData<fn() -> S>,
}

impl<S: Settings> Lazy<S> {
    async fn kept(&self) -> &Kept {
        self.kept.get_or_init(|| Kept::new(S::store)).await
    }
}

impl<S> Default for Lazy<S> {
    fn default() -> Self {
        Self {
            kept: Arc::new(OnceCell::new()),
            settings: PhantomData,
        }
    }
}

impl<S> Clone for Lazy<S> {
    fn clone(&self) -> Self {
        Self {
            kept: Arc::clone(&self.kept),
            settings: PhantomData,
        }
    }
}

impl<S> fmt::Debug for Lazy<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lazy").field(&self.kept.get()).finish()
    }
}

#[async_trait]
impl<S: Settings> SessionStore for Lazy<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.kept().await.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.kept().await.save(record).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.kept().await.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.kept().await.delete(id).await
    }
}
