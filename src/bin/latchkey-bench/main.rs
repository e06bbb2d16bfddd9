//! Load generator for latchkey. Creates its own scratch database, runs a scenario at each
//! requested concurrency, prints throughput and latency percentiles, and drops the database.
//!
//! ```text
//! cargo run --release --features bench --bin latchkey-bench -- \
//!     --scenario store --clients 8,32 --seconds 10
//! ```
//!
//! One module per scenario; `harness` drives the clients and prints the tables, `service`
//! runs the service in-process for the end-to-end scenarios.

mod bare;
mod check;
mod failover;
mod flood;
mod harness;
mod hostile;
mod hostile_wire;
mod login;
mod malformed;
mod memory;
mod pooler;
mod process;
mod refresh;
mod scale;
mod service;
mod soak;
mod store;
mod storm;

use std::str::FromStr;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use store::Op;

/// The allocator the `latchkey` binary ships with, so in-process scenarios measure it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks latchkey against its peers on one machine, in one run.
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Store)]
    pub(crate) scenario: Scenario,
    /// Concurrent tasks (comma-separated list; one run per value).
    #[arg(long, value_delimiter = ',', default_values_t = [8_usize, 32])]
    pub(crate) clients: Vec<usize>,
    /// Seconds per measured operation and store.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Store operations to measure (`store`); `create` always runs first to seed the others.
    #[arg(long, value_delimiter = ',', default_values_t = [Op::Create, Op::Load, Op::Save, Op::Touch])]
    pub(crate) ops: Vec<Op>,
    /// Measured runs per operation and store (`store`), alternating which store goes first;
    /// the median run is reported. With `refresh`: pairs of the HTTP refresh and the bare
    /// compare-and-swap, alternating which goes first, and the median of their ratios.
    #[arg(long, default_value_t = 1)]
    pub(crate) rounds: usize,
    /// Statements latchkey's store may run at once, coalescing what queues behind them
    /// (`store`; 0 = no coalescing, one statement per call). Default: the store's own.
    #[arg(long)]
    pub(crate) store_lanes: Option<usize>,
    /// Also run the rotation as it was (published, audited, the expiry moving every time)
    /// and with each of those costs taken off in turn (`refresh`).
    #[arg(long)]
    pub(crate) refresh_ladder: bool,
    /// Tabs refreshing one token at once (`refresh-storm`).
    #[arg(long, default_value_t = 20)]
    pub(crate) tabs: usize,
    /// Hostile requests `malformed` sends.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) requests: u64,
    /// Seed of `malformed`'s generator: request `i` of a seed is the same on every run.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Hostile requests of `malformed`'s warm-up storm (of another seed), before the
    /// reading the storm's is compared with.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) warm_up_requests: u64,
    /// Largest growth of the service's resident memory over `malformed`'s storm, in percent.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rss_tolerance: f64,
    /// The service binary that `memory` and `malformed` run as its own process
    /// (`latchkey serve`).
    #[arg(long, default_value = "target/release/latchkey")]
    pub(crate) server_bin: std::path::PathBuf,
    /// Length of the soak, in seconds (`soak`).
    #[arg(long, default_value_t = 180)]
    pub(crate) soak_secs: u64,
    /// Clients of the soak (`soak`).
    #[arg(long, default_value_t = 200)]
    pub(crate) soak_clients: usize,
    /// Seconds each database cut lasts (`soak`).
    #[arg(long, default_value_t = 3)]
    pub(crate) soak_cut_secs: u64,
    /// Mean pause, in ms, between two operations of a soak client (`soak`; logins pause ten
    /// times longer).
    #[arg(long, default_value_t = 200)]
    pub(crate) soak_think_ms: u64,
    /// A transaction-mode pooler in front of the server, `postgres://user@host:port`
    /// (`pooler`): the scratch database is reached through it under its own name.
    #[arg(long, env = "LATCHKEY_BENCH_POOLER_URL")]
    pub(crate) pooler_url: Option<String>,
    /// Sessions in the table for the second measurement (`scale`).
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) scale_rows: i64,
    /// Sessions in the table for the first measurement (`scale`).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) scale_base_rows: i64,
    /// Rotations whose effect on the table and its indexes `scale` reports.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) scale_rotations: u64,
    /// Expiry step of the rotations `scale` runs, in seconds: a rotation moves the indexed
    /// expiry only when that moves it by at least this much (the service's
    /// `--expiry-step-secs`). Default: the service's default step (6048 s: 1% of the 7-day
    /// idle TTL). `--scale-touch-secs` is its former name.
    #[arg(long, alias = "scale-touch-secs")]
    pub(crate) scale_step_secs: Option<u64>,
    /// Server to create the scratch database on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
}

/// The scenarios; add one here, in `main` and in `service::run_scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// tower-sessions `SessionStore`: latchkey's `PgSessionStore` against the stock
    /// `tower_sessions_sqlx_store::PostgresStore`.
    Store,
    /// Stateless `POST /auth/refresh`, each client chaining its own tokens, against the same
    /// SQL (`find_session` + `rotate`) through sqlx.
    Refresh,
    /// Stateful `GET /auth/session` with the cookie, against the `find_session` SELECT.
    Check,
    /// N tabs refresh one token at once, round after round; every answer must be 200 with
    /// one common successor.
    RefreshStorm,
    /// Stateless logins against argon2id hashes/s of the same parameters on all cores.
    Login,
    /// Refresh latency while logins saturate the hashing pool, against refresh latency idle.
    LoginFlood,
    /// Resident memory of the service binary (`--server-bin`, run as its own process) with
    /// 256 open keep-alive connections doing checks.
    Memory,
    /// Stateless refresh and stateful check over HTTP with the service's pool straight to
    /// PostgreSQL, then in `--pooler transaction` mode straight to it (the mode's own cost),
    /// then in that mode through the transaction-mode pooler at `--pooler-url`
    /// (scripts/bench-pooler.sh starts one).
    Pooler,
    /// Every scenario above, in order, each on a fresh database (`pooler` only with
    /// `--pooler-url`).
    All,
    /// The promises under faults: two `--server-bin` instances and a private PostgreSQL
    /// cluster (its own `initdb`, never the server of `DATABASE_URL`), clients following the
    /// retry contract, PostgreSQL restarts, instance kills and database cuts (`--soak-*`).
    Soak,
    /// A primary switch under load: a private primary and its synchronous standby, two
    /// `--server-bin` instances given both, refresh clients following the retry contract; the
    /// primary is stopped at once and the standby promoted (`--soak-secs`, `--soak-clients`).
    Failover,
    /// `--requests` hostile requests (raw TCP and HTTP, seeded by `--seed`) from the first
    /// `--clients` value of tasks against the service binary (`--server-bin`): no 5xx, no
    /// panic, memory within 10%, healthy after. Not part of `all`.
    Malformed,
    /// Refresh, check, login and store with `--scale-base-rows` and then `--scale-rows`
    /// sessions in the table (filled with SQL), bytes per session, and the growth and HOT
    /// share after `--scale-rotations` rotations. Not part of `all`.
    Scale,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scenario == Scenario::Soak {
        // Its own cluster: no scratch database on DATABASE_URL.
        return soak::run(&args).await;
    }
    if args.scenario == Scenario::Failover {
        return failover::run(&args).await;
    }
    let base = PgConnectOptions::from_str(&args.database_url).context("DATABASE_URL")?;
    let name = format!("latchkey_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&base)
        .await
        .context("connecting")?;
    let scenarios = if args.scenario == Scenario::All {
        vec![
            Scenario::Refresh,
            Scenario::Check,
            Scenario::RefreshStorm,
            Scenario::Login,
            Scenario::LoginFlood,
            Scenario::Memory,
            Scenario::Store,
        ]
        .into_iter()
        .chain(args.pooler_url.as_ref().map(|_| Scenario::Pooler))
        .collect()
    } else {
        vec![args.scenario]
    };
    let mut outcome = Ok(());
    for (i, scenario) in scenarios.into_iter().enumerate() {
        let name = format!("{name}_{i}");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        let options = base.clone().database(&name);
        let result = match scenario {
            Scenario::Store => store::run_scenario(options, &args).await,
            Scenario::Pooler => pooler::run_scenario(options, &name, &args).await,
            Scenario::Scale => scale::run(options, &args).await,
            other => service::run_scenario(other, options, &args).await,
        };
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        if let Err(e) = result {
            eprintln!("scenario {scenario:?} failed: {e:#}");
            outcome = Err(e);
        }
    }
    outcome
}
