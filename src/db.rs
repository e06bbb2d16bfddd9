//! Connecting to PostgreSQL and applying migrations.

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

/// Applies the embedded migrations.
///
/// # Errors
/// When a migration fails.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    crate::MIGRATOR.run(pool).await
}
