//! The subcommands: `serve`, `migrate`, `user`, `sessions`, `apikey`, `expire`,
//! `healthcheck`; one file per command group, the connection helpers they share here.

mod apikey;
mod database;
mod expire;
mod healthcheck;
mod serve;
mod sessions;
mod user;

use std::process::ExitCode;

use anyhow::Context;

use sqlx::postgres::PgConnectOptions;

use crate::config::{Cli, Command};
use crate::db::{Pool, Pooler, StatementTimeouts};
use crate::store::Store;

/// Runs one command; the exit code is what the process returns.
///
/// # Errors
/// Any failure, printed by `main` as `error: …` with exit status 1.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        // It needs no database.
        Command::Healthcheck(args) => return healthcheck::healthcheck(args).await,
        // Before the database: a bad setting must not wait for a cluster to start.
        Command::Serve(args) => {
            if let Err(e) = args.validate() {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(serve::EXIT_BAD_SETTING));
            }
        }
        _ => {}
    }
    let database = crate::embedded::Database::open(
        cli.database_url.as_deref(),
        cli.data_dir.as_deref(),
        crate::config::DEFAULT_DATABASE_URL,
    )
    .await?;
    let target = Target {
        url: database.url().to_owned(),
        pooler: cli.pooler,
        direct: cli
            .listen_database_url
            .clone()
            .unwrap_or_else(|| database.url().to_owned()),
    };
    let result = command(&target, cli.command).await;
    database.release().await;
    result
}

/// Where the commands connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `DATABASE_URL` (or the local default, or the embedded cluster's).
    pub(crate) url: String,
    /// How `url` reaches the server.
    pub(crate) pooler: Pooler,
    /// Straight to the server, for the migrations and the `LISTEN` of the live streams:
    /// `--listen-database-url`, by default `url`.
    pub(crate) direct: String,
}

impl Target {
    /// Options for a pool on `url` as [`Target::pooler`] says.
    ///
    /// # Errors
    /// When the URL does not parse.
    pub(crate) fn options(&self) -> anyhow::Result<PgConnectOptions> {
        let options = self
            .url
            .parse::<PgConnectOptions>()
            .context("parsing the database URL")?;
        Ok(match self.pooler {
            Pooler::None => options,
            Pooler::Transaction => crate::db::pooler_connect_options(options),
        })
    }

    /// `pg` as the store's [`Pool`], with `timeouts` set per transaction behind a pooler.
    pub(crate) fn pool(&self, pg: sqlx::PgPool, timeouts: StatementTimeouts) -> Pool {
        Pool::new(pg, self.pooler, timeouts)
    }
}

/// Runs one command on the database of `target`. With several hosts in its URL, `serve`
/// follows the primary (`crate::db::primary`); the other commands run once on the node
/// writable now.
async fn command(target: &Target, command: Command) -> anyhow::Result<ExitCode> {
    let resolved;
    let target = if matches!(command, Command::Serve(_)) {
        target
    } else {
        let url = crate::db::primary::primary_url(&target.url)
            .await
            .context("looking for the primary")?;
        let direct = if target.direct == target.url {
            url.clone()
        } else {
            crate::db::primary::primary_url(&target.direct)
                .await
                .context("looking for the primary")?
        };
        resolved = Target {
            url,
            pooler: target.pooler,
            direct,
        };
        &resolved
    };
    match command {
        Command::Serve(args) => serve::serve(target, args).await,
        Command::Migrate => {
            let pool = open(&target.direct, 2, true).await?;
            crate::db::migrate(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::User(cmd) => user::user(target, cmd).await,
        Command::Sessions(cmd) => sessions::sessions(target, cmd).await,
        Command::Apikey(cmd) => apikey::apikey(target, cmd).await,
        Command::Expire(args) => expire::expire(target, &args).await,
        Command::Healthcheck(args) => healthcheck::healthcheck(&args).await,
    }
}

/// A pool of `max` connections straight to `url`; with `create`, the database is created
/// first if missing.
async fn open(url: &str, max: u32, create: bool) -> anyhow::Result<sqlx::PgPool> {
    if create {
        crate::db::ensure_database(url)
            .await
            .context("connecting to PostgreSQL")?;
    }
    let pool = crate::db::pool_options(max)
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    Ok(pool)
}

/// A store on a pool of `max` connections to an existing database, for the admin commands:
/// untimed, as they always ran, through the pooler when there is one.
async fn open_store(target: &Target, max: u32) -> anyhow::Result<Store> {
    let pg = crate::db::pool_options(max)
        .connect_with(target.options()?)
        .await
        .context("connecting to PostgreSQL")?;
    let untimed = StatementTimeouts {
        statement: std::time::Duration::ZERO,
        lock: std::time::Duration::ZERO,
    };
    Ok(Store::new(target.pool(pg, untimed)))
}

/// How the listings show a time (UTC).
const LISTED_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
