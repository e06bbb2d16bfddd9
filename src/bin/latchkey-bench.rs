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

/// The allocator the `latchkey` binary ships with, so in-process scenarios measure it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Store operations to measure (`store`); `create` always runs first to seed the others.
    #[arg(long, value_delimiter = ',', default_values_t = [Op::Create, Op::Load, Op::Save, Op::Touch])]
    ops: Vec<Op>,
    /// Measured runs per operation and store (`store`), alternating which store goes first;
    /// the median run is reported.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Statements latchkey's store may run at once, coalescing what queues behind them
    /// (`store`; 0 = no coalescing, one statement per call). Default: the store's own.
    #[arg(long)]
    store_lanes: Option<usize>,
    /// Tabs refreshing one token at once (`refresh-storm`).
    #[arg(long, default_value_t = 20)]
    tabs: usize,
    /// The service binary that `memory` runs as its own process (`latchkey serve`).
    #[arg(long, default_value = "target/release/latchkey")]
    server_bin: std::path::PathBuf,
    /// Server to create the scratch database on.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

/// The scenarios; add one here and in `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
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
            Scenario::Store => store_scenario(options, &args).await,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The run with the median throughput (its own latencies with it).
fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    samples.swap_remove(samples.len() / 2)
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
    let mut ours = PgSessionStore::new(pool.clone());
    if let Some(lanes) = args.store_lanes {
        ours = ours.with_coalescing(lanes, 64);
    }
    stock.migrate().await?;
    let stores: [(&str, Arc<dyn SessionStore>); 2] =
        [("stock", Arc::new(stock)), ("latchkey", Arc::new(ours))];
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
            let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
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
            let [stock, ours] = samples.map(median);
            for (label, sample) in [("stock", &stock), ("latchkey", &ours)] {
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

/// The end-to-end scenarios: the service in-process on 127.0.0.1:0 (for `memory`, the service
/// binary as its own process), a reqwest load generator, and the raw-SQL or argon2 baselines
/// measured in the same run.
mod service {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use latchkey::app::{Application, Settings};
    use latchkey::auth::AuthConfig;
    use rand::RngCore;
    use secrecy::SecretString;
    use serde_json::{json, Value};
    use sqlx::postgres::PgConnectOptions;
    use sqlx::PgPool;
    use tokio::sync::{oneshot, Barrier};
    use uuid::Uuid;

    use super::{Args, Scenario};

    const EMAIL: &str = "bench@example.com";
    const PASSWORD: &str = "correct horse battery staple";
    /// Database connections of the service and of the raw baseline (the service default).
    const POOL: u32 = 16;
    /// Size of a sealed successor (nonce + 32-byte secret + tag), for the raw rotate.
    const SEALED_LEN: usize = 24 + 32 + 16;

    /// The `find_session` statement of `src/store/sessions.rs`, verbatim.
    const FIND_SESSION: &str = r#"
            SELECT id, kind AS "kind: SessionKind", owner_key, token_hash, prev_token_hash,
                   sealed_successor, version, created_at, expires_at, absolute_expires_at,
                   revoked_at, revoked_reason,
                   coalesce(prev_valid_until > now(), false) AS "in_grace!",
                   expires_at <= now() AS "expired!",
                   last_used_at <= now() - make_interval(secs => $2) AS "touch_due!"
            FROM sessions WHERE id = $1
            "#;

    /// The `rotate` statement of `src/store/sessions.rs`, verbatim.
    const ROTATE: &str = r#"
            WITH upd AS (
                UPDATE sessions
                SET prev_token_hash = token_hash,
                    prev_valid_until = now() + make_interval(secs => $5),
                    token_hash = $3,
                    sealed_successor = $4,
                    version = version + 1,
                    refreshed_at = now(),
                    last_used_at = now(),
                    expires_at = least(now() + make_interval(secs => $6), absolute_expires_at)
                WHERE id = $1 AND version = $2 AND revoked_at IS NULL AND expires_at > now()
                RETURNING id, owner_key, version, expires_at, absolute_expires_at
            ), ev AS (
                INSERT INTO session_events (session_id, owner_key, event, detail)
                SELECT id, owner_key, 'refreshed', jsonb_build_object('version', version)
                FROM upd
            )
            SELECT owner_key, version, expires_at, absolute_expires_at FROM upd
            "#;

    /// The service running in this process, with its user.
    struct Service {
        base: String,
        client: reqwest::Client,
        pool: PgPool,
        stop: Option<oneshot::Sender<()>>,
    }

    impl Service {
        async fn start(options: PgConnectOptions) -> anyhow::Result<Self> {
            let pool = latchkey::db::pool_options(POOL)
                .connect_with(options)
                .await
                .context("connecting the scratch database")?;
            latchkey::MIGRATOR.run(&pool).await?;
            let settings = Settings::local(
                "127.0.0.1:0".parse()?,
                SecretString::from("bench-secret-bench-secret-bench-secret!"),
            );
            let app = Application::build(settings, pool.clone()).await?;
            let addr: SocketAddr = app.local_addr()?;
            let state = app.state().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(app.run_until(async move {
                let _ = stopped.await;
            }));
            let hash = state
                .auth
                .hasher()
                .hash(SecretString::from(PASSWORD.to_owned()))
                .await
                .map_err(|e| anyhow::anyhow!("hash: {e}"))?;
            state
                .auth
                .store()
                .insert_user(EMAIL, &hash)
                .await
                .map_err(|e| anyhow::anyhow!("insert user: {e}"))?;
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(1024)
                .build()?;
            Ok(Self {
                base: format!("http://{addr}"),
                client,
                pool,
                stop: Some(stop),
            })
        }

        fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    /// One login's answer: the JSON body and the cookie value, if any.
    struct Login {
        body: Value,
        cookie: Option<String>,
    }

    async fn login(client: &reqwest::Client, base: &str, mode: &str) -> anyhow::Result<Login> {
        let res = client
            .post(format!("{base}/auth/login"))
            .json(&json!({ "email": EMAIL, "password": PASSWORD, "mode": mode }))
            .send()
            .await?;
        let status = res.status();
        let cookie = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .map(str::to_owned);
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status != reqwest::StatusCode::OK {
            anyhow::bail!("login answered {status}: {body}");
        }
        Ok(Login { body, cookie })
    }

    fn field(body: &Value, name: &str) -> anyhow::Result<String> {
        body[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {name} in {body}"))
    }

    /// `POST /auth/refresh` with a JSON token; the successor on 200.
    async fn refresh(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<String> {
        let res = client
            .post(format!("{base}/auth/refresh"))
            .json(&json!({ "refresh_token": token }))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status != reqwest::StatusCode::OK {
            anyhow::bail!("refresh answered {status}: {body}");
        }
        field(&body, "refresh_token")
    }

    /// Throughput and latency of one measured run; errors are counted, never dropped.
    struct Stats {
        ok: u64,
        errors: u64,
        first_error: Option<String>,
        secs: f64,
        lat_us: Vec<u32>,
    }

    impl Stats {
        fn rps(&self) -> f64 {
            self.ok as f64 / self.secs
        }
        fn pct(&self, p: f64) -> f64 {
            if self.lat_us.is_empty() {
                return f64::NAN;
            }
            let idx = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
            f64::from(self.lat_us[idx.min(self.lat_us.len() - 1)]) / 1000.0
        }
        fn print(&self, scenario: &str, clients: usize, variant: &str) {
            println!(
                "{:<14} {:>7} {:<12} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>7}{}",
                scenario,
                clients,
                variant,
                self.rps(),
                self.pct(0.50),
                self.pct(0.99),
                self.pct(0.999),
                self.errors,
                self.first_error
                    .as_deref()
                    .map(|e| format!("  first error: {e}"))
                    .unwrap_or_default()
            );
        }
    }

    fn header() {
        println!(
            "{:<14} {:>7} {:<12} {:>10} {:>8} {:>8} {:>8} {:>7}",
            "scenario", "clients", "variant", "ok/s", "p50_ms", "p99_ms", "p99.9_ms", "errors"
        );
    }

    fn ratio(scenario: &str, clients: usize, ours: &Stats, base: &Stats, goal: &str) {
        println!(
            "{:<14} {:>7} {:<12} {:>9.2}x {:>17.2}x {:>17}  ({goal})",
            scenario,
            clients,
            "ratio",
            ours.rps() / base.rps(),
            ours.pct(0.99) / base.pct(0.99),
            ""
        );
    }

    /// Prints `label: n ok, e errors, r/s` on stderr once a second until `done`.
    fn progress(label: String, ok: Arc<AtomicU64>, err: Arc<AtomicU64>, done: Arc<AtomicBool>) {
        tokio::spawn(async move {
            let began = Instant::now();
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = ok.load(Ordering::Relaxed);
                eprint!(
                    "\r\x1b[K{label}: {:>4.0}s {n} ok ({}/s) {} errors",
                    began.elapsed().as_secs_f64(),
                    n - last,
                    err.load(Ordering::Relaxed)
                );
                last = n;
            }
            eprint!("\r\x1b[K");
        });
    }

    /// Runs one task per state for `duration`; each call of `op` is one timed operation that
    /// takes the state and hands it back (so a client can chain its tokens).
    async fn drive<S, F, Fut>(label: String, states: Vec<S>, duration: Duration, op: F) -> Stats
    where
        S: Send + 'static,
        F: Fn(S) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = (S, anyhow::Result<()>)> + Send,
    {
        let clients = states.len();
        let start = Arc::new(Barrier::new(clients + 1));
        let ok = Arc::new(AtomicU64::new(0));
        let err = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(clients);
        for state in states {
            let (op, start, ok, err) = (op.clone(), start.clone(), ok.clone(), err.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::<u32>::with_capacity(1 << 14);
                let mut first_error = None;
                let mut state = state;
                start.wait().await;
                let began = Instant::now();
                while began.elapsed() < duration {
                    let t0 = Instant::now();
                    let (next, result) = op(state).await;
                    state = next;
                    match result {
                        Ok(()) => {
                            lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            err.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                (lat, first_error)
            }));
        }
        progress(label, ok.clone(), err.clone(), done.clone());
        start.wait().await;
        let began = Instant::now();
        let mut lat_us = Vec::new();
        let mut first_error = None;
        for task in tasks {
            match task.await {
                Ok((lat, e)) => {
                    lat_us.extend(lat);
                    if first_error.is_none() {
                        first_error = e;
                    }
                }
                Err(e) => {
                    err.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert_with(|| format!("client task: {e}"));
                }
            }
        }
        let secs = began.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        lat_us.sort_unstable();
        Stats {
            ok: ok.load(Ordering::Relaxed),
            errors: err.load(Ordering::Relaxed),
            first_error,
            secs,
            lat_us,
        }
    }

    /// Dispatches an end-to-end scenario.
    pub(super) async fn run_scenario(
        scenario: Scenario,
        options: PgConnectOptions,
        args: &Args,
    ) -> anyhow::Result<()> {
        let duration = Duration::from_secs(args.seconds);
        if scenario == Scenario::Memory {
            // The service as its own process, so its memory is measured without the client's.
            return memory::run(&args.server_bin, &options, duration).await;
        }
        let svc = Service::start(options).await?;
        let result = match scenario {
            Scenario::Refresh => refresh_scenario(&svc, &args.clients, duration).await,
            Scenario::Check => check_scenario(&svc, &args.clients, duration).await,
            Scenario::RefreshStorm => storm_scenario(&svc, args.tabs, duration).await,
            Scenario::Login => login_scenario(&svc, &args.clients, duration).await,
            Scenario::LoginFlood => flood_scenario(&svc, duration).await,
            Scenario::Memory | Scenario::Store | Scenario::All => Ok(()),
        };
        svc.pool.close().await;
        svc.stop();
        result
    }

    /// Per-client state of the HTTP refresh loop.
    struct Chain {
        client: reqwest::Client,
        base: String,
        token: String,
        session_id: Uuid,
    }

    async fn refresh_http(
        svc: &Service,
        clients: usize,
        duration: Duration,
        label: &str,
    ) -> anyhow::Result<(Stats, Vec<Uuid>)> {
        let mut chains = Vec::with_capacity(clients);
        for _ in 0..clients {
            let l = login(&svc.client, &svc.base, "stateless").await?;
            chains.push(Chain {
                client: svc.client.clone(),
                base: svc.base.clone(),
                token: field(&l.body, "refresh_token")?,
                session_id: Uuid::parse_str(&field(&l.body, "session_id")?)?,
            });
        }
        let ids = chains.iter().map(|c| c.session_id).collect();
        let stats = drive(
            label.to_owned(),
            chains,
            duration,
            |mut c: Chain| async move {
                match refresh(&c.client, &c.base, &c.token).await {
                    Ok(next) => {
                        c.token = next;
                        (c, Ok(()))
                    }
                    Err(e) => {
                        // The chain is broken: count it, then start a new one so the run goes on.
                        if let Ok(l) = login(&c.client, &c.base, "stateless").await {
                            if let Ok(t) = field(&l.body, "refresh_token") {
                                c.token = t;
                            }
                        }
                        (c, Err(e))
                    }
                }
            },
        )
        .await;
        Ok((stats, ids))
    }

    /// Per-client state of the raw rotation loop.
    struct RawChain {
        pool: PgPool,
        id: Uuid,
    }

    async fn raw_rotate(c: &RawChain, cfg: &AuthConfig) -> anyhow::Result<()> {
        let row = sqlx::query(FIND_SESSION)
            .bind(c.id)
            .bind(cfg.touch_interval_secs as f64)
            .fetch_optional(&c.pool)
            .await?
            .context("session vanished")?;
        let version: i64 = sqlx::Row::try_get(&row, "version")?;
        let mut hash = [0u8; 32];
        let mut sealed = [0u8; SEALED_LEN];
        rand::rng().fill_bytes(&mut hash);
        rand::rng().fill_bytes(&mut sealed);
        sqlx::query(ROTATE)
            .bind(c.id)
            .bind(version)
            .bind(&hash[..])
            .bind(&sealed[..])
            .bind(cfg.grace_secs as f64)
            .bind(cfg.idle_ttl_secs as f64)
            .fetch_optional(&c.pool)
            .await?
            .context("rotation lost its compare-and-swap")?;
        Ok(())
    }

    async fn refresh_raw(svc: &Service, ids: &[Uuid], duration: Duration) -> Stats {
        let cfg = Arc::new(AuthConfig::default());
        let chains = ids
            .iter()
            .map(|&id| RawChain {
                pool: svc.pool.clone(),
                id,
            })
            .collect();
        drive(
            "refresh-raw".to_owned(),
            chains,
            duration,
            move |c: RawChain| {
                let cfg = cfg.clone();
                async move {
                    let r = raw_rotate(&c, &cfg).await;
                    (c, r)
                }
            },
        )
        .await
    }

    async fn refresh_scenario(
        svc: &Service,
        clients: &[usize],
        duration: Duration,
    ) -> anyhow::Result<()> {
        println!(
            "scenario=refresh seconds={} pool={POOL}",
            duration.as_secs()
        );
        header();
        for &n in clients {
            super::quiesce(&svc.pool).await?;
            let (ours, ids) = refresh_http(svc, n, duration, "refresh").await?;
            ours.print("refresh", n, "http");
            super::quiesce(&svc.pool).await?;
            let raw = refresh_raw(svc, &ids, duration).await;
            raw.print("refresh", n, "raw-sql");
            ratio("refresh", n, &ours, &raw, "goal: ok/s >= 0.6x, p99 <= 2x");
        }
        Ok(())
    }

    /// Per-client state of the cookie check loop.
    struct CookieClient {
        client: reqwest::Client,
        url: String,
        cookie: String,
    }

    /// Every client checks its session in a loop for `duration`.
    async fn drive_checks(label: &str, clients: Vec<CookieClient>, duration: Duration) -> Stats {
        drive(
            label.to_owned(),
            clients,
            duration,
            |c: CookieClient| async move {
                let r = check_once(&c).await;
                (c, r)
            },
        )
        .await
    }

    async fn check_once(c: &CookieClient) -> anyhow::Result<()> {
        let res = c
            .client
            .get(&c.url)
            .header("cookie", &c.cookie)
            .send()
            .await?;
        let status = res.status();
        let body = res.bytes().await?;
        if status != reqwest::StatusCode::OK {
            anyhow::bail!(
                "session check answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    async fn cookie_clients(
        svc: &Service,
        n: usize,
    ) -> anyhow::Result<(Vec<CookieClient>, Vec<Uuid>)> {
        let mut out = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let l = login(&svc.client, &svc.base, "stateful").await?;
            out.push(CookieClient {
                client: svc.client.clone(),
                url: format!("{}/auth/session", svc.base),
                cookie: l.cookie.context("stateful login set no cookie")?,
            });
            ids.push(Uuid::parse_str(&field(&l.body, "session_id")?)?);
        }
        Ok((out, ids))
    }

    async fn check_scenario(
        svc: &Service,
        clients: &[usize],
        duration: Duration,
    ) -> anyhow::Result<()> {
        println!("scenario=check seconds={} pool={POOL}", duration.as_secs());
        header();
        for &n in clients {
            let (cs, ids) = cookie_clients(svc, n).await?;
            super::quiesce(&svc.pool).await?;
            let ours = drive_checks("check", cs, duration).await;
            ours.print("check", n, "http");
            super::quiesce(&svc.pool).await?;
            let touch = AuthConfig::default().touch_interval_secs as f64;
            let raws = ids
                .iter()
                .map(|&id| RawChain {
                    pool: svc.pool.clone(),
                    id,
                })
                .collect();
            let raw = drive(
                "check-raw".to_owned(),
                raws,
                duration,
                move |c: RawChain| async move {
                    let r = sqlx::query(FIND_SESSION)
                        .bind(c.id)
                        .bind(touch)
                        .fetch_optional(&c.pool)
                        .await
                        .map_err(anyhow::Error::from)
                        .and_then(|row| row.map(|_| ()).context("session vanished"));
                    (c, r)
                },
            )
            .await;
            raw.print("check", n, "raw-sql");
            ratio("check", n, &ours, &raw, "goal: ok/s >= 0.6x");
        }
        Ok(())
    }

    async fn storm_scenario(svc: &Service, tabs: usize, duration: Duration) -> anyhow::Result<()> {
        println!(
            "scenario=refresh-storm seconds={} tabs={tabs}",
            duration.as_secs()
        );
        let l = login(&svc.client, &svc.base, "stateless").await?;
        let mut token = field(&l.body, "refresh_token")?;
        let (mut rounds, mut forks, mut errors, mut answers) = (0u64, 0u64, 0u64, 0u64);
        let mut round_ms = Vec::new();
        let mut first_error: Option<String> = None;
        let began = Instant::now();
        let mut last_print = Instant::now();
        while began.elapsed() < duration {
            let t0 = Instant::now();
            let barrier = Arc::new(Barrier::new(tabs));
            let mut tasks = Vec::with_capacity(tabs);
            for _ in 0..tabs {
                let (client, base, tok, barrier) = (
                    svc.client.clone(),
                    svc.base.clone(),
                    token.clone(),
                    barrier.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    refresh(&client, &base, &tok).await
                }));
            }
            let mut successors = std::collections::BTreeSet::new();
            for t in tasks {
                answers += 1;
                match t.await.map_err(anyhow::Error::from).and_then(|r| r) {
                    Ok(next) => {
                        successors.insert(next);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            if successors.len() > 1 {
                forks += 1;
            }
            round_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            rounds += 1;
            match successors.into_iter().next() {
                Some(next) => token = next,
                None => {
                    let l = login(&svc.client, &svc.base, "stateless").await?;
                    token = field(&l.body, "refresh_token")?;
                }
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                eprint!("\r\x1b[Krefresh-storm: {rounds} rounds, {errors} errors, {forks} forks");
                last_print = Instant::now();
            }
        }
        eprint!("\r\x1b[K");
        let secs = began.elapsed().as_secs_f64();
        round_ms.sort_by(f64::total_cmp);
        let pct = |p: f64| round_ms[((round_ms.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "refresh-storm tabs={tabs} rounds={rounds} rounds/s={:.1} answers={answers} \
             round_p50_ms={:.2} round_p99_ms={:.2} errors={errors} forks={forks}{}",
            rounds as f64 / secs,
            pct(0.5),
            pct(0.99),
            first_error
                .map(|e| format!(" first error: {e}"))
                .unwrap_or_default()
        );
        Ok(())
    }

    /// argon2id hashes/s of the service's parameters on every core, computed here.
    async fn argon2_baseline(duration: Duration) -> anyhow::Result<(f64, usize)> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let params = latchkey::auth::password::owasp_params();
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        let began = Instant::now();
        for _ in 0..threads {
            let (params, stop, count) = (params.clone(), stop.clone(), count.clone());
            handles.push(tokio::task::spawn_blocking(move || {
                use argon2::PasswordHasher as _;
                let a = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let salt = *b"bench-salt-16byt";
                while !stop.load(Ordering::Relaxed) {
                    a.hash_password_with_salt(PASSWORD.as_bytes(), &salt)
                        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.await??;
        }
        Ok((
            count.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64(),
            threads,
        ))
    }

    struct LoginClient {
        client: reqwest::Client,
        base: String,
    }

    async fn logins(svc: &Service, n: usize, duration: Duration, label: &str) -> Stats {
        let cs = (0..n)
            .map(|_| LoginClient {
                client: svc.client.clone(),
                base: svc.base.clone(),
            })
            .collect();
        drive(
            label.to_owned(),
            cs,
            duration,
            |c: LoginClient| async move {
                let r = login(&c.client, &c.base, "stateless").await.map(|_| ());
                (c, r)
            },
        )
        .await
    }

    async fn login_scenario(
        svc: &Service,
        clients: &[usize],
        duration: Duration,
    ) -> anyhow::Result<()> {
        println!("scenario=login seconds={}", duration.as_secs());
        header();
        let (hps, threads) = argon2_baseline(duration).await?;
        for &n in clients {
            let ours = logins(svc, n, duration, "login").await;
            ours.print("login", n, "http");
            println!(
                "{:<14} {:>7} {:<12} {:>10.1}   (argon2id m=19456 t=2 p=1 on {threads} threads)",
                "login", n, "argon2-only", hps
            );
            println!(
                "{:<14} {:>7} {:<12} {:>9.2}x   (goal: >= 0.9x)",
                "login",
                n,
                "ratio",
                ours.rps() / hps
            );
        }
        Ok(())
    }

    async fn flood_scenario(svc: &Service, duration: Duration) -> anyhow::Result<()> {
        const REFRESHERS: usize = 8;
        const LOGINS: usize = 32;
        println!(
            "scenario=login-flood seconds={} refreshers={REFRESHERS} login-clients={LOGINS}",
            duration.as_secs()
        );
        header();
        super::quiesce(&svc.pool).await?;
        let (idle, _) = refresh_http(svc, REFRESHERS, duration, "refresh idle").await?;
        idle.print("login-flood", REFRESHERS, "refresh-idle");
        super::quiesce(&svc.pool).await?;
        // Set up the refresh chains first so their logins do not queue behind the flood.
        let (flooded, flood) = {
            let flood_svc_client = svc.client.clone();
            let base = svc.base.clone();
            let cs: Vec<LoginClient> = (0..LOGINS)
                .map(|_| LoginClient {
                    client: flood_svc_client.clone(),
                    base: base.clone(),
                })
                .collect();
            let mut chains = Vec::with_capacity(REFRESHERS);
            for _ in 0..REFRESHERS {
                let l = login(&svc.client, &svc.base, "stateless").await?;
                chains.push(Chain {
                    client: svc.client.clone(),
                    base: svc.base.clone(),
                    token: field(&l.body, "refresh_token")?,
                    session_id: Uuid::nil(),
                });
            }
            let flood_task = tokio::spawn(drive(
                "login flood".to_owned(),
                cs,
                duration + Duration::from_secs(1),
                |c: LoginClient| async move {
                    let r = login(&c.client, &c.base, "stateless").await.map(|_| ());
                    (c, r)
                },
            ));
            // Let the hashing pool fill up before measuring.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let flooded = drive(
                "refresh flooded".to_owned(),
                chains,
                duration,
                |mut c: Chain| async move {
                    match refresh(&c.client, &c.base, &c.token).await {
                        Ok(next) => {
                            c.token = next;
                            (c, Ok(()))
                        }
                        Err(e) => (c, Err(e)),
                    }
                },
            )
            .await;
            (flooded, flood_task.await?)
        };
        flooded.print("login-flood", REFRESHERS, "refresh-flood");
        flood.print("login-flood", LOGINS, "logins");
        println!(
            "{:<14} {:>7} {:<12} {:>28.2}x  (p99 flooded / idle; goal: <= 2x)",
            "login-flood",
            REFRESHERS,
            "ratio",
            flooded.pct(0.99) / idle.pct(0.99)
        );
        Ok(())
    }

    /// `--scenario memory`: the service binary as a child process on the scratch database,
    /// its `/proc/<pid>/status` read before, during and after 256 keep-alive connections.
    mod memory {
        use std::io::{BufRead, BufReader, Write};
        use std::path::{Path, PathBuf};
        use std::process::{Child, Command, Stdio};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        use anyhow::{bail, Context};
        use sqlx::postgres::PgConnectOptions;
        use sqlx::ConnectOptions;

        use super::{drive_checks, login, CookieClient, EMAIL, PASSWORD};

        /// Keep-alive connections held open for the whole run.
        const CONNS: usize = 256;
        /// Sessions the connections share; each login is one argon2 verification in the service.
        const SESSIONS: usize = 16;
        /// The goal: the service's resident memory at 256 connections.
        const GOAL_KIB: u64 = 64 * 1024;
        /// A fixed access-token key, so the service does not warn about a random one.
        const JWT_SECRET: &str = "bench-secret-bench-secret-bench-secret!";

        /// Memory of one process: `/proc/<pid>/status` (KiB), its threads and open descriptors.
        #[derive(Debug, Clone, Copy, Default)]
        struct Usage {
            rss: u64,
            hwm: u64,
            anon: u64,
            file: u64,
            threads: u64,
            fds: u64,
        }

        impl Usage {
            fn read(pid: u32) -> anyhow::Result<Self> {
                let path = format!("/proc/{pid}/status");
                let status = std::fs::read_to_string(&path).with_context(|| path.clone())?;
                let value = |name: &str| -> anyhow::Result<u64> {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .and_then(|rest| rest.split_whitespace().next())
                        .with_context(|| format!("no {name} in {path}"))?
                        .parse()
                        .with_context(|| format!("{name} in {path}"))
                };
                Ok(Self {
                    rss: value("VmRSS:")?,
                    hwm: value("VmHWM:")?,
                    anon: value("RssAnon:")?,
                    file: value("RssFile:")?,
                    threads: value("Threads:")?,
                    fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
                })
            }

            /// The larger of each figure (for the peak over the samples).
            fn max(self, other: Self) -> Self {
                Self {
                    rss: self.rss.max(other.rss),
                    hwm: self.hwm.max(other.hwm),
                    anon: self.anon.max(other.anon),
                    file: self.file.max(other.file),
                    threads: self.threads.max(other.threads),
                    fds: self.fds.max(other.fds),
                }
            }

            fn header() {
                println!(
                    "{:<8} {:<10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5}",
                    "scenario",
                    "phase",
                    "rss_kib",
                    "hwm_kib",
                    "anon_kib",
                    "file_kib",
                    "threads",
                    "fds"
                );
            }

            fn print(&self, phase: &str) {
                println!(
                    "{:<8} {:<10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5}",
                    "memory",
                    phase,
                    self.rss,
                    self.hwm,
                    self.anon,
                    self.file,
                    self.threads,
                    self.fds
                );
            }
        }

        /// `latchkey serve` as a child process; killed if dropped while still running.
        struct Server {
            child: Child,
            base: String,
        }

        impl Server {
            /// Starts `bin serve` on a port the kernel picks, reads the address from its log
            /// and waits for `/readyz`.
            async fn start(
                bin: &Path,
                url: &str,
                client: &reqwest::Client,
            ) -> anyhow::Result<Self> {
                let mut child = Command::new(bin)
                    .args(["serve", "--bind", "127.0.0.1:0"])
                    .env("DATABASE_URL", url)
                    .env("LATCHKEY_JWT_SECRET", JWT_SECRET)
                    .env("NO_COLOR", "1")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .with_context(|| {
                        format!(
                            "starting {} (build it with `cargo build --release --bin latchkey` \
                             or pass --server-bin)",
                            bin.display()
                        )
                    })?;
                let stderr = child.stderr.take().context("the service's stderr")?;
                let mut server = Self {
                    child,
                    base: String::new(),
                };
                // Echo the service's log, and hand over the address it announces.
                let (tx, rx) = tokio::sync::oneshot::channel::<String>();
                std::thread::spawn(move || {
                    let mut tx = Some(tx);
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        eprintln!("latchkey serve: {line}");
                        let addr = line
                            .contains("latchkey listening")
                            .then(|| line.split("addr=").nth(1))
                            .flatten()
                            .and_then(|rest| rest.split_whitespace().next());
                        if let Some(addr) = addr {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(addr.to_owned());
                            }
                        }
                    }
                });
                let addr = tokio::time::timeout(Duration::from_secs(60), rx)
                    .await
                    .context("latchkey serve did not announce its address within 60 s")?
                    .context("latchkey serve exited before listening (its log is above)")?;
                server.base = format!("http://{addr}");
                let began = Instant::now();
                loop {
                    match client.get(format!("{}/readyz", server.base)).send().await {
                        Ok(r) if r.status().is_success() => return Ok(server),
                        _ if began.elapsed() > Duration::from_secs(30) => {
                            bail!("{}/readyz did not answer 200 within 30 s", server.base)
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }

            fn pid(&self) -> u32 {
                self.child.id()
            }

            /// SIGTERM, then waits for the drain; an unclean exit is an error.
            async fn stop(mut self) -> anyhow::Result<()> {
                let pid = self.pid().to_string();
                let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
                if !sent.success() {
                    bail!("kill -TERM {pid} failed");
                }
                let began = Instant::now();
                loop {
                    if let Some(status) = self.child.try_wait()? {
                        if !status.success() {
                            bail!("latchkey serve exited with {status}");
                        }
                        return Ok(());
                    }
                    if began.elapsed() > Duration::from_secs(30) {
                        bail!("latchkey serve still running 30 s after SIGTERM");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }

        impl Drop for Server {
            fn drop(&mut self) {
                if matches!(self.child.try_wait(), Ok(None)) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                }
            }
        }

        /// `latchkey user add`, as an operator creates the account.
        fn add_user(bin: &Path, url: &str) -> anyhow::Result<()> {
            let mut add = Command::new(bin)
                .args(["user", "add", "--email", EMAIL, "--password-stdin"])
                .env("DATABASE_URL", url)
                .env("NO_COLOR", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .context("starting latchkey user add")?;
            add.stdin
                .take()
                .context("stdin of latchkey user add")?
                .write_all(format!("{PASSWORD}\n").as_bytes())?;
            let status = add.wait()?;
            if !status.success() {
                bail!("latchkey user add exited with {status}");
            }
            Ok(())
        }

        /// Starts the service, logs in, holds [`CONNS`] connections doing checks for
        /// `duration` and prints the service's memory before, at the peak and after.
        pub(super) async fn run(
            bin: &Path,
            options: &PgConnectOptions,
            duration: Duration,
        ) -> anyhow::Result<()> {
            let url = options.to_url_lossy().to_string();
            let setup = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let server = Server::start(bin, &url, &setup).await?;
            let pid = server.pid();
            let idle = Usage::read(pid)?;
            {
                let (bin, url) = (PathBuf::from(bin), url.clone());
                tokio::task::spawn_blocking(move || add_user(&bin, &url)).await??;
            }
            let mut cookies = Vec::with_capacity(SESSIONS);
            for _ in 0..SESSIONS {
                let l = login(&setup, &server.base, "stateful").await?;
                cookies.push(l.cookie.context("stateful login set no cookie")?);
            }
            // Its idle keep-alive connection is not one of the 256.
            drop(setup);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = Usage::read(pid)?;

            let done = Arc::new(AtomicBool::new(false));
            let sampler = {
                let done = done.clone();
                tokio::spawn(async move {
                    let mut peak = Usage::default();
                    while !done.load(Ordering::Relaxed) {
                        if let Ok(u) = Usage::read(pid) {
                            peak = peak.max(u);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    peak
                })
            };
            // One client per connection: each keeps its own connection open for the run.
            let clients = (0..CONNS)
                .map(|i| {
                    Ok(CookieClient {
                        client: reqwest::Client::builder()
                            .pool_max_idle_per_host(1)
                            .build()?,
                        url: format!("{}/auth/session", server.base),
                        cookie: cookies[i % SESSIONS].clone(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let stats = drive_checks("memory", clients, duration).await;
            done.store(true, Ordering::Relaxed);
            let peak = sampler.await?;
            // Let the service see the connections close before the last reading.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = Usage::read(pid)?;
            server.stop().await?;

            // The service inherits this environment; glibc's malloc settings change the result.
            let malloc_env: Vec<String> = std::env::vars()
                .filter(|(k, _)| k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "scenario=memory seconds={} connections={CONNS} sessions={SESSIONS} server={} \
                 malloc_env={}",
                duration.as_secs(),
                bin.display(),
                if malloc_env.is_empty() {
                    "none".to_owned()
                } else {
                    malloc_env.join(",")
                }
            );
            Usage::header();
            idle.print("idle");
            before.print("logged-in");
            peak.print("peak");
            after.print("after");
            super::header();
            stats.print("memory", CONNS, "check");
            let verdict = if peak.rss <= GOAL_KIB {
                format!(
                    "met, {:.1} MiB to spare",
                    (GOAL_KIB - peak.rss) as f64 / 1024.0
                )
            } else {
                format!(
                    "NOT met, {:.1} MiB over",
                    (peak.rss - GOAL_KIB) as f64 / 1024.0
                )
            };
            println!(
                "memory service peak VmRSS {:.1} MiB, {} more descriptors than before the \
                 connections (peak: each column's maximum over samples every 100 ms); \
                 goal <= 64 MiB at {CONNS} connections: {verdict}",
                peak.rss as f64 / 1024.0,
                peak.fds.saturating_sub(before.fds)
            );
            Ok(())
        }
    }
}
