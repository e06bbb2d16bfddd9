//! `--scenario pooler`: what going through a transaction-mode pooler costs. The same service,
//! in one run, three ways: its pool straight to PostgreSQL (statements prepared once per
//! connection); `--pooler transaction` straight to PostgreSQL (each statement unnamed, in a
//! transaction of its own: the mode's own cost); and that mode through the pooler at
//! `--pooler-url`. Stateless refresh and stateful check over HTTP at each client count; then
//! the session read alone (`FIND_SESSION_SQL`) on a direct pool of the same size, prepared and
//! cached, unnamed (`persistent(false)`), and unnamed in a transaction of its own (the mode).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use latchkey::db::{pooler_connect_options, Pool, Pooler, StatementTimeouts};
use latchkey::store::FIND_SESSION_SQL;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::harness::{drive_clients, header, Client};
use crate::service::{cookie_clients, refresh_http, Service, POOL};
use crate::Args;

/// Each way to the database, in the order they run.
fn variants(
    direct: &PgConnectOptions,
    pooled: &PgConnectOptions,
) -> [(&'static str, PgConnectOptions, Pooler); 3] {
    [
        ("direct", direct.clone(), Pooler::None),
        (
            "unnamed-tx",
            pooler_connect_options(direct.clone()),
            Pooler::Transaction,
        ),
        (
            "pgbouncer",
            pooler_connect_options(pooled.clone()),
            Pooler::Transaction,
        ),
    ]
}

/// Refresh then check, each variant in turn, at each client count, on the database `name`.
pub(crate) async fn run_scenario(
    options: PgConnectOptions,
    name: &str,
    args: &Args,
) -> anyhow::Result<()> {
    let pooler = args
        .pooler_url
        .as_deref()
        .context("--scenario pooler needs --pooler-url (scripts/bench-pooler.sh starts one)")?;
    let pooled = PgConnectOptions::from_str(pooler)
        .context("--pooler-url")?
        .database(name);
    let (server, _) = args
        .database_url
        .rsplit_once('/')
        .context("DATABASE_URL names no database")?;
    let direct_url = format!("{server}/{name}");
    let duration = Duration::from_secs(args.seconds);
    println!(
        "scenario=pooler seconds={} pool={POOL} pooler={pooler}",
        duration.as_secs()
    );
    header();
    for &n in &args.clients {
        for (label, options, mode) in variants(&options, &pooled) {
            let svc = Service::start_with(options, mode, Some(direct_url.clone())).await?;
            let (refresh, _) = refresh_http(&svc, n, duration, "refresh").await?;
            refresh.print("refresh", n, label);
            let (clients, _) = cookie_clients(&svc, n).await?;
            let check = drive_clients("check", clients, duration).await;
            check.print("check", n, label);
            svc.pool.close().await;
            svc.stop();
        }
    }
    statement_cost(&options, &direct_url, &args.clients, duration).await
}

/// One session read, as sent by each way.
struct Read {
    pool: Pool,
    id: Uuid,
    persistent: bool,
}

impl Client for Read {
    async fn call(&self) -> anyhow::Result<()> {
        sqlx::query(FIND_SESSION_SQL)
            .bind(self.id)
            .persistent(self.persistent)
            .fetch_optional(&self.pool)
            .await?
            .context("the session is gone")?;
        Ok(())
    }
}

/// The session read alone, straight to the server, at each client count: prepared and cached
/// (the default), unnamed (`persistent(false)`: parse and describe every time), and unnamed in
/// a transaction of its own (`--pooler transaction`).
async fn statement_cost(
    options: &PgConnectOptions,
    direct_url: &str,
    clients: &[usize],
    duration: Duration,
) -> anyhow::Result<()> {
    let svc =
        Service::start_with(options.clone(), Pooler::None, Some(direct_url.to_owned())).await?;
    let cached = Pool::direct(latchkey::db::pool_options(POOL).connect_lazy_with(options.clone()));
    let unnamed_options = pooler_connect_options(options.clone());
    let unnamed = Pool::direct(latchkey::db::pool_options(POOL).connect_lazy_with(unnamed_options));
    let in_tx = Pool::transaction_pooled(unnamed.pg().clone(), StatementTimeouts::default());
    for &n in clients {
        let (_, ids) = cookie_clients(&svc, n).await?;
        for (label, pool, persistent) in [
            ("prepared", &cached, true),
            ("unnamed", &unnamed, false),
            ("unnamed-tx", &in_tx, true),
        ] {
            let reads = ids
                .iter()
                .map(|&id| Read {
                    pool: pool.clone(),
                    id,
                    persistent,
                })
                .collect();
            drive_clients("read", reads, duration)
                .await
                .print("read-sql", n, label);
        }
    }
    svc.pool.close().await;
    svc.stop();
    Ok(())
}
