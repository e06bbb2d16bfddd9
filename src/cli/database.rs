//! The database of `latchkey serve`: waiting for PostgreSQL at start, creating and migrating
//! the database, the service's pool.
//!
//! A service often starts before its database (a container beside PostgreSQL, a host booting):
//! a first connection that finds no server, or a server still starting, is tried again after a
//! back-off (0.25 s doubling to 10 s), each failure logged, for as long as `--db-wait-secs`
//! allows (by default, forever). A failure that another attempt cannot mend (a bad URL, a
//! refused password, a TLS error, a migration that does not apply) ends the start at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::db::primary::{Follower, Nodes};

use crate::config::ServeArgs;
use crate::db::{Pooler, StatementTimeouts};

use super::Target;

/// Longest a single connection attempt may take (a TCP connect to a host that drops packets
/// would otherwise wait for the kernel, minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The delays between attempts: [`Backoff::FIRST`], doubling, capped at [`Backoff::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The delay after the first failure.
    const FIRST: Duration = Duration::from_millis(250);
    /// The longest delay between two attempts.
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay before the next attempt; the one after it is twice as long, up to the cap.
    fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

/// Why one attempt to open the database failed.
#[derive(Debug)]
enum OpenError {
    /// No server yet, or one that is starting up or refusing connections for now.
    NotYet(anyhow::Error),
    /// Anything another attempt would meet again.
    Fatal(anyhow::Error),
}

/// Whether `e` says the server is not (yet) there rather than that something is wrong:
/// no TCP connection (refused, unreachable, host name not resolved yet), a connection
/// exception (SQLSTATE class 08), the server starting up or shutting down (57P01 to 57P03),
/// too many connections (53300), or another instance creating the same database at the same
/// moment (42P04). Authentication, TLS and URL errors are not.
fn not_yet(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || ["57P01", "57P02", "57P03", "53300", "42P04"].contains(&&*code)
        }),
        _ => false,
    }
}

/// Sorts a database error for the retry loop, with what was being done. Its text alone is
/// kept: sqlx's messages already quote their cause, which would otherwise print twice.
fn classify(e: sqlx::Error, doing: &'static str) -> OpenError {
    let message = anyhow::Error::msg(e.to_string()).context(doing);
    if not_yet(&e) {
        OpenError::NotYet(message)
    } else {
        OpenError::Fatal(message)
    }
}

/// The service's database, waited for as `--db-wait-secs` says: created if missing and
/// migrated (unless `--no-migrate`) on a connection of its own, then the service's pool,
/// whose connections carry the statement and lock timeouts.
///
/// # Errors
/// A failure that another attempt would not mend, at once; or the last failure once the wait
/// is over.
pub(super) async fn open_database(target: &Target, args: &ServeArgs) -> anyhow::Result<Opened> {
    let started = Instant::now();
    let bound = args.db_wait_secs.map(Duration::from_secs);
    let mut backoff = Backoff::new();
    let mut attempt: u32 = 1;
    loop {
        let e = match open_once(target, args).await {
            Ok(pool) => {
                if attempt > 1 {
                    tracing::info!(attempt, "PostgreSQL reached");
                }
                return Ok(pool);
            }
            Err(OpenError::Fatal(e)) => return Err(e),
            Err(OpenError::NotYet(e)) => e,
        };
        let waited = started.elapsed();
        let left = bound.map(|b| b.saturating_sub(waited));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(e.context(format!(
                "PostgreSQL still not reachable after {:.1}s and {attempt} attempt(s) (--db-wait-secs {})",
                waited.as_secs_f64(),
                args.db_wait_secs.unwrap_or_default(),
            )));
        }
        let delay = backoff.delay();
        let delay = left.map_or(delay, |l| delay.min(l));
        tracing::warn!(
            attempt,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = format!("{e:#}"),
            "PostgreSQL not reachable yet; trying again"
        );
        tokio::time::sleep(delay).await;
        attempt = attempt.saturating_add(1);
    }
}

/// The service's pool and, when the URL lists several hosts, the follower of the primary
/// (see `crate::db::primary`), already watching.
pub(super) type Opened = (sqlx::PgPool, Option<Arc<Follower>>);

/// One attempt: find the primary (several hosts), create and migrate (straight to the server:
/// `target.direct`), then open the service's pool (on `target.url`, through the pooler if
/// there is one).
async fn open_once(target: &Target, args: &ServeArgs) -> Result<Opened, OpenError> {
    let follower = find_primary(&target.url).await?;
    if follower.is_some() && (target.pooler != Pooler::None || target.direct != target.url) {
        return Err(OpenError::Fatal(anyhow::anyhow!(
            "several hosts in the database URL work only straight to the servers: without --pooler transaction and --listen-database-url"
        )));
    }
    let primary_url = follower.as_ref().map(|f| f.current_url());
    let direct = primary_url.as_deref().unwrap_or(target.direct.as_str());
    match tokio::time::timeout(CONNECT_TIMEOUT, crate::db::ensure_database(direct)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(classify(e, "connecting to PostgreSQL")),
        Err(_) => {
            return Err(OpenError::NotYet(anyhow::anyhow!(
                "connecting to PostgreSQL: no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
    }
    // Migrations (DDL, maybe on a big table) run on a connection of their own, untimed.
    let setup = crate::db::pool_options(1)
        .connect(direct)
        .await
        .map_err(|e| classify(e, "connecting to PostgreSQL"))?;
    if !args.no_migrate {
        let migrated = crate::db::migrate(&setup).await;
        setup.close().await;
        match migrated {
            Ok(()) => {}
            Err(sqlx::migrate::MigrateError::Execute(e)) if not_yet(&e) => {
                return Err(classify(e, "applying migrations"))
            }
            Err(e) => {
                return Err(OpenError::Fatal(
                    anyhow::Error::new(e).context("applying migrations"),
                ))
            }
        }
    } else {
        setup.close().await;
    }
    let options = match &primary_url {
        Some(url) => url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .context("parsing the database URL")
            .map_err(OpenError::Fatal)?,
        None => target.options().map_err(OpenError::Fatal)?,
    };
    // Through a transaction-mode pooler the timeouts are set by each transaction instead.
    let options = match target.pooler {
        Pooler::None => statement_timeouts(args).apply(options),
        Pooler::Transaction => options,
    };
    let pool_options = crate::db::pool_options(args.max_connections);
    let pool_options = match &follower {
        Some(f) => f.guard(pool_options),
        None => pool_options,
    };
    let pool = pool_options
        .connect_with(options)
        .await
        .map_err(|e| classify(e, "connecting to PostgreSQL"))?;
    if let Some(f) = &follower {
        let timeouts = statement_timeouts(args);
        f.follow(&pool, move |node| timeouts.apply(node));
        f.spawn();
    }
    Ok((pool, follower))
}

/// With several hosts in `url`, the follower of the one that is writable; a node in recovery
/// or unreachable is worth another attempt (a switch under way).
async fn find_primary(url: &str) -> Result<Option<Arc<Follower>>, OpenError> {
    let nodes = Nodes::parse(url)
        .context("parsing the database URL")
        .map_err(OpenError::Fatal)?;
    if !nodes.is_several() {
        return Ok(None);
    }
    match nodes.find_primary().await {
        Ok(i) => Ok(Some(Follower::new(nodes, i))),
        Err(e @ sqlx::Error::Protocol(_)) => Err(OpenError::NotYet(
            anyhow::Error::msg(e.to_string()).context("looking for the primary"),
        )),
        Err(e) => Err(classify(e, "looking for the primary")),
    }
}

/// The statement and lock timeouts of the service's connections, from the flags.
pub(super) fn statement_timeouts(args: &ServeArgs) -> StatementTimeouts {
    StatementTimeouts {
        statement: Duration::from_millis(args.statement_timeout_ms.into()),
        lock: Duration::from_millis(args.lock_timeout_ms.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_a_quarter_second_up_to_ten_seconds() {
        let mut b = Backoff::new();
        let delays: Vec<u128> = (0..9).map(|_| b.delay().as_millis()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
        );
    }

    #[test]
    fn only_a_missing_or_starting_server_is_worth_another_attempt() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(not_yet(&sqlx::Error::Io(refused)));
        assert!(not_yet(&sqlx::Error::PoolTimedOut));
        assert!(!not_yet(&sqlx::Error::Configuration("bad url".into())));
        assert!(!not_yet(&sqlx::Error::Tls("unknown issuer".into())));
        assert!(!not_yet(&sqlx::Error::RowNotFound));
    }
}
