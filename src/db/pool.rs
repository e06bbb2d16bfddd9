//! [`Pool`]: the connections every statement of the store runs on, directly or through a
//! transaction-mode pooler (PgBouncer 1.18 and others without protocol-level prepared
//! statements).
//!
//! A transaction-mode pooler lends a server connection for one transaction and takes it back
//! at the next idle `ReadyForQuery`. A statement prepared under a name on one server
//! connection is then missing on the next one, or, worse, already there when another client
//! prepares the same name (`prepared statement "sqlx_s_1" already exists`); and sqlx 0.8
//! prepares its statements under names even with its statement cache turned off. So in
//! [`Pooler::Transaction`] mode each statement is sent unnamed (sqlx's `persistent(false)`:
//! `Parse` into the unnamed statement, which lives until the next `Parse`) inside a
//! transaction of its own, so that its `Parse`, `Bind` and `Execute` meet the same server
//! connection:
//!
//! ```text
//! BEGIN; SET LOCAL statement_timeout = …; SET LOCAL lock_timeout = …; DEALLOCATE ALL
//!   (one round trip, simple protocol)
//! Parse (unnamed) + Describe + Sync; Bind + Execute + Sync
//! COMMIT
//! ```
//!
//! Nothing outlives the transaction: the timeouts are `SET LOCAL`; `DEALLOCATE ALL` drops the
//! named statements sqlx's own type look-ups (`SELECT $1::regtype::oid`, once per client
//! connection and type) leave on the server connection, before they can meet another
//! client's names. No session-level advisory lock, `SET` or `LISTEN` is ever sent through
//! it: the `LISTEN` of the live streams and the migrations go to the server directly.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo,
};
use sqlx::{Describe, Either, Execute, Executor, PgPool, Postgres};

use super::StatementTimeouts;

/// How latchkey's connections reach PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooler {
    /// Directly, or through a session-mode pooler: statements are prepared once per connection
    /// and cached (the fastest).
    #[default]
    None,
    /// Through a transaction-mode pooler: every statement runs unnamed in a transaction of its
    /// own (see the module's documentation).
    Transaction,
}

impl Pooler {
    /// The setting's spelling: `none` or `transaction`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Transaction => "transaction",
        }
    }
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pooler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "transaction" => Ok(Self::Transaction),
            other => Err(format!(
                "unknown pooler {other:?}: expected \"none\" or \"transaction\""
            )),
        }
    }
}

/// The connect options of a pool that goes through a transaction-mode pooler: no start-up
/// parameter PgBouncer 1.18 refuses (`extra_float_digits`; the timeouts travel as `SET LOCAL`
/// instead of `options`), and no statement cache (sqlx would cache the named statements of its
/// type look-ups, which `DEALLOCATE ALL` drops).
pub fn pooler_connect_options(options: PgConnectOptions) -> PgConnectOptions {
    options.extra_float_digits(None).statement_cache_capacity(0)
}

/// The database handle of the store: a [`PgPool`] and the way its statements must be sent.
/// Cheap to clone. It is an [`Executor`]: `query.fetch_one(&pool)` runs as [`Pooler`] says.
#[derive(Clone)]
pub struct Pool {
    pg: PgPool,
    /// `None`: direct. `Some`: the statement opening each statement's own transaction.
    begin: Option<Arc<str>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("pooler", &self.pooler())
            .field("size", &self.pg.size())
            .finish()
    }
}

impl From<PgPool> for Pool {
    fn from(pg: PgPool) -> Self {
        Self::direct(pg)
    }
}

impl Pool {
    /// Statements run on `pg` as they are: prepared once per connection and cached.
    pub fn direct(pg: PgPool) -> Self {
        Self { pg, begin: None }
    }

    /// Statements run unnamed, each in its own transaction that sets `timeouts` with
    /// `SET LOCAL` (zero: none), on a pool with `pg`'s pool settings and its connect options
    /// made [`pooler_connect_options`]: a statement cache would keep the names of sqlx's type
    /// look-ups, which no longer exist on the next server connection. Must be called inside a
    /// Tokio runtime.
    pub fn transaction_pooled(pg: PgPool, timeouts: StatementTimeouts) -> Self {
        let options = pg.connect_options().as_ref().clone();
        if options.get_options().is_some() {
            tracing::warn!("the pool's connect options carry start-up `options`, which a transaction-mode pooler such as PgBouncer 1.18 refuses");
        }
        let pg = pg
            .options()
            .clone()
            .connect_lazy_with(pooler_connect_options(options));
        let mut begin = String::from("BEGIN");
        for (name, value) in [
            ("statement_timeout", timeouts.statement),
            ("lock_timeout", timeouts.lock),
        ] {
            begin.push_str(&format!("; SET LOCAL {name} = {}", value.as_millis()));
        }
        begin.push_str("; DEALLOCATE ALL");
        Self {
            pg,
            begin: Some(begin.into()),
        }
    }

    /// `pg` as `pooler` says, with `timeouts` in [`Pooler::Transaction`] mode.
    pub fn new(pg: PgPool, pooler: Pooler, timeouts: StatementTimeouts) -> Self {
        match pooler {
            Pooler::None => Self::direct(pg),
            Pooler::Transaction => Self::transaction_pooled(pg, timeouts),
        }
    }

    /// How the statements are sent.
    pub fn pooler(&self) -> Pooler {
        if self.begin.is_some() {
            Pooler::Transaction
        } else {
            Pooler::None
        }
    }

    /// The sqlx pool underneath (its size, its connect options). A statement run on it
    /// directly bypasses the [`Pooler`] mode.
    pub fn pg(&self) -> &PgPool {
        &self.pg
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pg.close().await;
    }

    /// Runs `query` unnamed in a transaction of its own opened with `begin`; the rows and
    /// results, once committed.
    async fn in_transaction<'q, E>(
        pg: PgPool,
        begin: Arc<str>,
        query: E,
    ) -> Result<Vec<Either<PgQueryResult, PgRow>>, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let mut tx = pg.begin_with(begin.to_string()).await?;
        let items: Vec<_> = {
            let results = (&mut *tx).fetch_many(Unnamed(query));
            results.try_collect().await?
        };
        tx.commit().await?;
        Ok(items)
    }
}

impl<'p> Executor<'p> for &'_ Pool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let Some(begin) = self.begin.clone() else {
            return self.pg.fetch_many(query);
        };
        let pg = self.pg.clone();
        stream::once(Pool::in_transaction(pg, begin, query))
            .flat_map(|result| match result {
                Ok(items) => stream::iter(items.into_iter().map(Ok)).boxed(),
                Err(e) => stream::once(async { Err(e) }).boxed(),
            })
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let Some(begin) = self.begin.clone() else {
            return self.pg.fetch_optional(query);
        };
        let pg = self.pg.clone();
        Box::pin(async move {
            let mut tx = pg.begin_with(begin.to_string()).await?;
            let row = (&mut *tx).fetch_optional(Unnamed(query)).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>> {
        // Describes the statement; in transaction mode the name it is prepared under is
        // dropped by the next transaction's `DEALLOCATE ALL`, and what is kept is only its
        // metadata, which an unnamed `Parse` reuses.
        self.pg.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>> {
        self.pg.describe(sql)
    }
}

/// A query sent unnamed: sqlx's `persistent(false)` for any [`Execute`], the `query!` family
/// included.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(&self) -> &'q str {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, sqlx::error::BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_pooler_setting_reads_its_two_spellings_and_refuses_others() {
        assert_eq!("none".parse(), Ok(Pooler::None));
        assert_eq!("transaction".parse(), Ok(Pooler::Transaction));
        assert!("session".parse::<Pooler>().is_err());
        assert_eq!(Pooler::Transaction.to_string(), "transaction");
    }

    #[tokio::test]
    async fn each_transaction_sets_its_timeouts_locally_and_drops_leftover_names() {
        let pg = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        let timeouts = StatementTimeouts {
            statement: Duration::from_secs(5),
            lock: Duration::from_millis(2500),
        };
        let pool = Pool::transaction_pooled(pg, timeouts);
        assert_eq!(pool.pooler(), Pooler::Transaction);
        assert_eq!(
            pool.begin.as_deref(),
            Some(
                "BEGIN; SET LOCAL statement_timeout = 5000; SET LOCAL lock_timeout = 2500; \
                 DEALLOCATE ALL"
            )
        );
    }
}
