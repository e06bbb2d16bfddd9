//! Load generator for latchkey. Creates its own scratch database, runs a scenario at each
//! requested concurrency, prints throughput and latency percentiles, and drops the database.
//!
//! ```text
//! cargo run --release --features bench --bin latchkey-bench -- \
//!     --scenario store --clients 8,32 --seconds 10
//! ```

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use latchkey::store::PgSessionStore;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Barrier;
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;

/// Benchmarks latchkey against its peers on one machine, in one run.
#[derive(Debug, Parser)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Store)]
    scenario: Scenario,
    /// Concurrent tasks (comma-separated list; one run per value).
    #[arg(long, value_delimiter = ',', default_values_t = [8_usize, 32])]
    clients: Vec<usize>,
    /// Seconds per measured operation and store.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Server to create the scratch database on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

/// The scenarios; add one here and in `main`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// tower-sessions `SessionStore`: latchkey's `PgSessionStore` against the stock
    /// `tower_sessions_sqlx_store::PostgresStore`.
    Store,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = PgConnectOptions::from_str(&args.database_url).context("DATABASE_URL")?;
    let name = format!("latchkey_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&base)
        .await
        .context("connecting")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let outcome = match args.scenario {
        Scenario::Store => store_scenario(base.clone().database(&name), &args).await,
    };
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    outcome
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `create` of a new session with a small payload.
    Create,
    /// `load` of an existing session.
    Load,
    /// `save` of an existing session whose data changed.
    Save,
    /// `save` of an unchanged session whose expiry slid by a second (`with_always_save`).
    Touch,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Load => "load",
            Self::Save => "save",
            Self::Touch => "touch",
        }
    }
}

/// Throughput and latency of one measured run.
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn store_scenario(options: PgConnectOptions, args: &Args) -> anyhow::Result<()> {
    let max = args.clients.iter().copied().max().unwrap_or(8);
    let pool = latchkey::db::pool_options(u32::try_from(max)?)
        .connect_with(options)
        .await?;
    latchkey::MIGRATOR.run(&pool).await?;
    let stock = tower_sessions_sqlx_store::PostgresStore::new(pool.clone());
    stock.migrate().await?;
    let stores: [(&str, Arc<dyn SessionStore>); 2] = [
        ("stock", Arc::new(stock)),
        ("latchkey", Arc::new(PgSessionStore::new(pool.clone()))),
    ];
    println!("scenario=store seconds={}", args.seconds);
    println!(
        "{:<7} {:>7} {:<9} {:>10} {:>8} {:>8}",
        "op", "clients", "store", "req/s", "p50_ms", "p99_ms"
    );
    for &clients in &args.clients {
        let mut seeds: HashMap<&str, Vec<Record>> = HashMap::new();
        for op in [Op::Create, Op::Load, Op::Save, Op::Touch] {
            let mut results = Vec::new();
            for (label, store) in &stores {
                quiesce(&pool).await?;
                let (sample, created) = run(
                    store.clone(),
                    op,
                    clients,
                    Duration::from_secs(args.seconds),
                    seeds.get(label).cloned().unwrap_or_default(),
                )
                .await?;
                // Create seeds the later phases; the others hand back the records as the
                // store now holds them, so the next phase starts from the stored state.
                seeds.insert(label, created);
                println!(
                    "{:<7} {:>7} {:<9} {:>10.0} {:>8.2} {:>8.2}",
                    op.name(),
                    clients,
                    label,
                    sample.rps,
                    sample.p50_ms,
                    sample.p99_ms
                );
                results.push(sample);
            }
            if let [stock, ours] = &results[..] {
                println!(
                    "{:<7} {:>7} {:<9} {:>9.2}x {:>7.2}x {:>7.2}x   (latchkey / stock; latency: stock / latchkey)",
                    op.name(),
                    clients,
                    "ratio",
                    ours.rps / stock.rps,
                    stock.p50_ms / ours.p50_ms,
                    stock.p99_ms / ours.p99_ms
                );
            }
        }
    }
    pool.close().await;
    Ok(())
}

/// Lets autovacuum and the checkpointer settle between runs so one store does not pay for
/// the other's writes.
async fn quiesce(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT").execute(pool).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

fn new_record() -> Record {
    Record {
        id: Id::default(),
        data: HashMap::from([
            ("counter".to_owned(), serde_json::json!(0)),
            (
                "user".to_owned(),
                serde_json::json!({"name": "bench", "roles": ["a", "b"]}),
            ),
        ]),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(8),
    }
}

/// Runs `op` from `clients` tasks for `duration`. Load, save and touch work on `seeds`, each
/// task on its own slice (no two tasks contend for a row). Returns the sample and the records
/// as stored afterwards (for create, the new ones).
async fn run(
    store: Arc<dyn SessionStore>,
    op: Op,
    clients: usize,
    duration: Duration,
    seeds: Vec<Record>,
) -> anyhow::Result<(Sample, Vec<Record>)> {
    let start = Arc::new(Barrier::new(clients + 1));
    let per_task = (seeds.len() / clients).max(1);
    let mut tasks = Vec::with_capacity(clients);
    for t in 0..clients {
        let mine: Vec<Record> = seeds
            .iter()
            .skip(t * per_task)
            .take(per_task)
            .cloned()
            .collect();
        if op != Op::Create && mine.is_empty() {
            anyhow::bail!("no seeded sessions for {}", op.name());
        }
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::<u32>::with_capacity(1 << 16);
            let mut created = Vec::new();
            let mut mine = mine;
            start.wait().await;
            let began = Instant::now();
            let mut i = 0usize;
            while began.elapsed() < duration {
                let t0 = Instant::now();
                match op {
                    Op::Create => {
                        let mut rec = new_record();
                        store.create(&mut rec).await?;
                        created.push(rec);
                    }
                    Op::Load => {
                        let rec = &mine[i % mine.len()];
                        if store.load(&rec.id).await?.is_none() {
                            anyhow::bail!("seeded session vanished");
                        }
                    }
                    Op::Save => {
                        let n = mine.len();
                        let rec = &mut mine[i % n];
                        rec.data.insert("counter".to_owned(), serde_json::json!(i));
                        store.save(rec).await?;
                    }
                    Op::Touch => {
                        let n = mine.len();
                        let rec = &mut mine[i % n];
                        rec.expiry_date += time::Duration::seconds(1);
                        store.save(rec).await?;
                    }
                }
                lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                i += 1;
            }
            if op != Op::Create {
                created = mine;
            }
            Ok::<_, anyhow::Error>((lat, created))
        }));
    }
    start.wait().await;
    let began = Instant::now();
    let mut all = Vec::new();
    let mut created = Vec::new();
    for task in tasks {
        let (lat, c) = task.await??;
        all.extend(lat);
        created.extend(c);
    }
    let elapsed = began.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[idx.min(all.len() - 1)]) / 1000.0
    };
    let sample = Sample {
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    };
    Ok((sample, created))
}
