//! `--scenario store`: the tower-sessions `SessionStore` of latchkey against the stock
//! `tower_sessions_sqlx_store::PostgresStore` and against the bare single-row statements on a
//! copy of the table ([`BareStore`]), on the same pool, op by op.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use latchkey::store::PgSessionStore;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Barrier;
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;

use crate::bare::BareStore;
use crate::harness::{median, quiesce, Sample};
use crate::Args;

/// A measured store operation (`--ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Op {
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

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs every `--ops` operation at every `--clients` count on both stores.
pub(crate) async fn run_scenario(options: PgConnectOptions, args: &Args) -> anyhow::Result<()> {
    let max = args.clients.iter().copied().max().unwrap_or(8);
    let pool = latchkey::db::pool_options(u32::try_from(max)?)
        .connect_with(options)
        .await?;
    latchkey::db::migrate(&pool).await?;
    let stock = tower_sessions_sqlx_store::PostgresStore::new(pool.clone());
    let mut ours = PgSessionStore::new(pool.clone());
    if let Some(lanes) = args.store_lanes {
        ours = ours.with_coalescing(lanes, 64);
    }
    stock.migrate().await?;
    let bare = BareStore::new(pool.clone()).await?;
    let stores: [(&str, Arc<dyn SessionStore>); 3] = [
        ("stock", Arc::new(stock)),
        ("latchkey", Arc::new(ours)),
        ("bare", Arc::new(bare)),
    ];
    println!("scenario=store seconds={}", args.seconds);
    println!(
        "{:<7} {:>7} {:<9} {:>10} {:>8} {:>8}",
        "op", "clients", "store", "req/s", "p50_ms", "p99_ms"
    );
    for &clients in &args.clients {
        let mut seeds: HashMap<&str, Vec<Record>> = HashMap::new();
        let ops = std::iter::once(Op::Create)
            .chain(args.ops.iter().copied().filter(|&op| op != Op::Create));
        for op in ops {
            // Create runs once per store (it seeds the rest); the others run `rounds` times
            // per store, alternating which store goes first so neither always pays for the
            // other's leftovers (autovacuum, dirty buffers).
            let rounds = if op == Op::Create {
                1
            } else {
                args.rounds.max(1)
            };
            let mut samples: [Vec<Sample>; 3] = [Vec::new(), Vec::new(), Vec::new()];
            for round in 0..rounds {
                let order: [usize; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
                for i in order {
                    let (label, store) = &stores[i];
                    quiesce(&pool).await?;
                    let (sample, held) = run(
                        store.clone(),
                        op,
                        clients,
                        Duration::from_secs(args.seconds),
                        seeds.get(label).cloned().unwrap_or_default(),
                    )
                    .await?;
                    // Create seeds the later phases; the others hand back the records as the
                    // store now holds them, so the next run starts from the stored state.
                    seeds.insert(label, held);
                    samples[i].push(sample);
                }
            }
            if op == Op::Create {
                // The faster store created more sessions; the later phases work on as many
                // sessions in both stores, so neither spreads its writes over more pages.
                let n = seeds.values().map(Vec::len).min().unwrap_or(0);
                seeds.values_mut().for_each(|s| s.truncate(n));
            }
            let [stock, ours, bare] = samples.map(median);
            for (label, sample) in [("stock", &stock), ("latchkey", &ours), ("bare", &bare)] {
                println!(
                    "{:<7} {:>7} {:<9} {:>10.0} {:>8.2} {:>8.2}",
                    op.name(),
                    clients,
                    label,
                    sample.rps,
                    sample.p50_ms,
                    sample.p99_ms
                );
            }
            println!(
                "{:<7} {:>7} {:<9} {:>9.2}x {:>7.2}x {:>7.2}x   (latchkey / stock; latency: stock / latchkey)",
                op.name(),
                clients,
                "ratio",
                ours.rps / stock.rps,
                stock.p50_ms / ours.p50_ms,
                stock.p99_ms / ours.p99_ms
            );
            println!(
                "{:<7} {:>7} {:<9} {:>9.2}x {:>7.2}x {:>7.2}x   (latchkey / bare single-row statements)",
                op.name(),
                clients,
                "ratio",
                ours.rps / bare.rps,
                bare.p50_ms / ours.p50_ms,
                bare.p99_ms / ours.p99_ms
            );
        }
    }
    pool.close().await;
    Ok(())
}

/// A new session with a small payload.
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
pub(crate) async fn run(
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
