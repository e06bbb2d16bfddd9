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
mod flood;
mod harness;
mod hostile;
mod hostile_wire;
mod login;
mod malformed;
mod memory;
mod process;
mod refresh;
mod service;
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
    /// the median run is reported.
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
    /// The service binary that `memory` and `malformed` run as its own process
    /// (`latchkey serve`).
    #[arg(long, default_value = "target/release/latchkey")]
    pub(crate) server_bin: std::path::PathBuf,
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
    /// Every scenario above, in order, each on a fresh database.
    All,
    /// `--requests` hostile requests (raw TCP and HTTP, seeded by `--seed`) from the first
    /// `--clients` value of tasks against the service binary (`--server-bin`): no 5xx, no
    /// panic, memory within 10%, healthy after. Not part of `all`.
    Malformed,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
