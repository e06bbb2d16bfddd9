//! Connecting to PostgreSQL and applying migrations; [`Pool`], the connections of the store,
//! direct or through a transaction-mode pooler.

mod pool;

pub use pool::{pooler_connect_options, Pool, Pooler};

pub mod primary;

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// Creates the database named in `url` if it does not exist yet.
///
/// # Errors
/// When the server cannot be reached or the database cannot be created.
pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
    if !Postgres::database_exists(url).await? {
        tracing::info!("creating database");
        Postgres::create_database(url).await?;
    }
    Ok(())
}

/// Pool options tuned for a request path that must fail fast (503) when the database is gone,
/// and recover by itself when it returns.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
}

/// Server-side bounds on the statements of the service's connections, so that a stuck
/// statement or a lock wait fails (503) instead of holding a request forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementTimeouts {
    /// `statement_timeout`: longest run of one statement (zero: none).
    pub statement: Duration,
    /// `lock_timeout`: longest wait for one lock (zero: none).
    pub lock: Duration,
}

impl Default for StatementTimeouts {
    fn default() -> Self {
        Self {
            statement: Duration::from_secs(5),
            lock: Duration::from_secs(2),
        }
    }
}

impl StatementTimeouts {
    /// `options` with both timeouts set at connection start-up.
    pub fn apply(&self, options: PgConnectOptions) -> PgConnectOptions {
        options.options([
            ("statement_timeout", self.statement.as_millis().to_string()),
            ("lock_timeout", self.lock.as_millis().to_string()),
        ])
    }
}

/// Connects a pool lazily-checked: the first statement reveals whether the server is up.
///
/// # Errors
/// When the URL is invalid.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections).connect_lazy(url)
}

/// The PostgreSQL schema that holds every latchkey table, type and routine, and latchkey's own
/// migration record (`latchkey._sqlx_migrations`). Statements name their objects with it, so
/// latchkey works on any pool, the application's own included, whatever its `search_path`.
pub const SCHEMA: &str = "latchkey";

/// Key of the advisory lock under which [`migrate`] creates the schema and moves an earlier
/// layout into it (the bytes of `latchkey`); the migrations then take sqlx's own lock.
const SETUP_LOCK: i64 = 0x6c61_7463_686b_6579;

/// Moves a deployment from before the schema into it; see the file's comment.
const ADOPT_LEGACY_LAYOUT: &str = include_str!("../../sql/adopt_legacy_layout.sql");

/// Applies latchkey's migrations into the schema [`SCHEMA`], creating it if needed, with their
/// own record (`latchkey._sqlx_migrations`): the application's migrations, with sqlx's
/// `_sqlx_migrations` in its own schema, apply before or after these and never collide.
///
/// A database migrated before latchkey had its schema (its tables and record in `public`) is
/// moved into it first, data and migration rows included. Safe to run from several instances
/// at once, and with the application's own pool: the migrations run on one connection of
/// their own (the pool's options, with `search_path` set to the schema and no statement
/// timeout), closed after.
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut setup = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SETUP_LOCK)
        .execute(&mut *setup)
        .await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS latchkey")
        .execute(&mut *setup)
        .await?;
    sqlx::query(ADOPT_LEGACY_LAYOUT)
        .execute(&mut *setup)
        .await?;
    setup.commit().await?;

    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("search_path", SCHEMA), ("statement_timeout", "0")]);
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let result = crate::MIGRATOR.run(&own).await;
    own.close().await;
    result
}
