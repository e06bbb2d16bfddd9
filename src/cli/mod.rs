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

use crate::config::{Cli, Command};
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
    let result = command(database.url(), cli.command).await;
    database.release().await;
    result
}

/// Runs one command on the database at `url`. With several hosts in it, `serve` follows the
/// primary (`crate::db::primary`); the other commands run once on the node writable now.
async fn command(url: &str, command: Command) -> anyhow::Result<ExitCode> {
    let primary;
    let url = if matches!(command, Command::Serve(_)) {
        url
    } else {
        primary = crate::db::primary::primary_url(url)
            .await
            .context("looking for the primary")?;
        &primary
    };
    match command {
        Command::Serve(args) => serve::serve(url, args).await,
        Command::Migrate => {
            let pool = open(url, 2, true).await?;
            crate::db::migrate(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::User(cmd) => user::user(url, cmd).await,
        Command::Sessions(cmd) => sessions::sessions(url, cmd).await,
        Command::Apikey(cmd) => apikey::apikey(url, cmd).await,
        Command::Expire(args) => expire::expire(url, &args).await,
        Command::Healthcheck(args) => healthcheck::healthcheck(&args).await,
    }
}

/// A pool of `max` connections; with `create`, the database is created first if missing.
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

/// A store on a pool of `max` connections to an existing database, for the admin commands.
async fn open_store(url: &str, max: u32) -> anyhow::Result<Store> {
    Ok(Store::new(open(url, max, false).await?))
}

/// How the listings show a time (UTC).
const LISTED_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
