//! `--scenario soak`: the promises under faults. A private PostgreSQL cluster (made with
//! `initdb`, run with `pg_ctl`, in a temporary directory: no other server is touched), two
//! `latchkey serve` processes on one database reached through a TCP proxy the soak controls,
//! and many clients following the retry contract, while PostgreSQL is restarted, an instance
//! is SIGKILLed and started again, and the database connection is cut for a few seconds.
//! At the end every client's last acknowledged token must still work; the report counts the
//! answers, the 5xx without `Retry-After`, the logouts, the lost tokens, and each fault's
//! outage and recovery. A broken promise fails the run (exit 1).
//!
//! `clients` runs the clients, `faults` injects the faults, `report` counts and prints,
//! `instances` runs the service processes, `proxy` stands between them and the database.

pub(crate) mod clients;
pub(crate) mod faults;
pub(crate) mod instances;
mod proxy;
pub(crate) mod report;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use latchkey::embedded::{Cluster, ClusterOptions};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use crate::Args;
use clients::{ClientEnd, Ctx, Kind};
use instances::{Instance, InstanceConfig};
use report::{Ending, Tally};

/// The database the instances share in the private cluster.
pub(crate) const DATABASE: &str = "latchkey";
/// Instances of the service.
pub(crate) const INSTANCES: usize = 2;

/// [`INSTANCES`] service processes on one database, started, with the HTTP client that
/// reaches them and the context their clients share: what the soak and the primary switch
/// both run against.
pub(crate) struct Fleet {
    /// How the instances were started (to start one again).
    pub(crate) config: InstanceConfig,
    /// The client of the requests (no redirects, a large idle pool).
    pub(crate) http: reqwest::Client,
    /// The running instances.
    pub(crate) instances: Vec<Instance>,
    /// The clients' shared context; `stop` ends them.
    pub(crate) ctx: Ctx,
    /// Where the clients count their answers.
    pub(crate) tally: Arc<Tally>,
    /// Sending `true` stops the clients.
    pub(crate) stop: watch::Sender<bool>,
    /// When the run began (the instances are up).
    pub(crate) began: Instant,
}

impl Fleet {
    /// Starts the instances on `database_url`, logging into `dir`, for a run of `duration`
    /// (the clients give up a minute after it).
    pub(crate) async fn start(
        args: &Args,
        database_url: String,
        dir: &Path,
        duration: Duration,
    ) -> anyhow::Result<Self> {
        let config = InstanceConfig {
            bin: args.server_bin.clone(),
            database_url,
            jwt_secret: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
            log_dir: dir.to_owned(),
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1024)
            .build()?;
        let mut instances = Vec::new();
        for n in 0..INSTANCES {
            let mut instance = Instance::new(faults::instance_name(n))?;
            instance.start(&config, &http).await?;
            instances.push(instance);
        }
        let (stop, stop_rx) = watch::channel(false);
        let began = Instant::now();
        let tally = Arc::new(Tally::new(began));
        let ctx = Ctx {
            http: http.clone(),
            streams: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            bases: Arc::new(instances.iter().map(|i| i.base.clone()).collect()),
            tally: tally.clone(),
            stop: stop_rx,
            deadline: began + duration + Duration::from_secs(60),
            think: Duration::from_millis(args.soak_think_ms),
        };
        Ok(Self {
            config,
            http,
            instances,
            ctx,
            tally,
            stop,
            began,
        })
    }
}

/// Runs the soak; an error when a promise was broken or the soak could not run.
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("latchkey-soak-{}", uuid::Uuid::new_v4().simple()));
    let mut options = ClusterOptions::new(&dir);
    options.sync = false;
    options.settings = vec![("max_connections".to_owned(), "200".to_owned())];
    eprintln!("soak: private PostgreSQL cluster in {}", dir.display());
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options))
        .await?
        .context("starting the soak's private PostgreSQL cluster")?;
    let cluster = Arc::new(cluster);
    // Ctrl-C drops the run (its instances are killed) and still stops the cluster.
    let result = tokio::select! {
        result = soak(args, cluster.clone(), &dir) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(cluster);
    let stop_dir = dir.clone();
    let _ = tokio::task::spawn_blocking(move || Cluster::stop(&stop_dir)).await;
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("soak: logs kept in {}", dir.display()),
    }
    result
}

/// Everything after the cluster is up.
async fn soak(args: &Args, cluster: Arc<Cluster>, dir: &Path) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.soak_secs);
    let clients = args.soak_clients.max(4);
    let users = clients.div_ceil(8);
    prepare_database(&cluster, users).await?;
    let proxy = proxy::DbProxy::start(format!("127.0.0.1:{}", cluster.port())).await?;
    let database_url = cluster.url(DATABASE).replace(
        &format!("@127.0.0.1:{}/", cluster.port()),
        &format!("@127.0.0.1:{}/", proxy.port),
    );
    let Fleet {
        config,
        http,
        mut instances,
        ctx,
        tally,
        stop: stop_tx,
        began,
    } = Fleet::start(args, database_url, dir, duration).await?;
    let mix = mix(clients);
    let header = format!(
        "soak: {} s, {clients} clients ({} stateless chains, {} stateful, {} logins, {} event \
         streams), {INSTANCES} instances of {}, one private PostgreSQL cluster behind a proxy, \
         cuts of {} s",
        args.soak_secs,
        mix.iter().filter(|k| **k == Kind::Chain).count(),
        mix.iter().filter(|k| **k == Kind::Stateful).count(),
        mix.iter().filter(|k| **k == Kind::Login).count(),
        mix.iter().filter(|k| **k == Kind::Listener).count(),
        args.server_bin.display(),
        args.soak_cut_secs,
    );
    eprintln!("{header}");
    let tasks: Vec<_> = mix
        .into_iter()
        .enumerate()
        .map(|(id, kind)| {
            let email = format!("soak{}@example.com", id % users);
            tokio::spawn(clients::run(ctx.clone(), kind, id, email))
        })
        .collect();

    let mut records = Vec::new();
    let mut targets = faults::Targets {
        cluster: cluster.clone(),
        proxy: &proxy,
        instances: &mut instances,
        config: &config,
        http: &http,
        cut: Duration::from_secs(args.soak_cut_secs),
    };
    for (at, kind) in faults::schedule(duration, INSTANCES) {
        tokio::time::sleep_until((began + at).into()).await;
        records.push(faults::inject(kind, began.elapsed(), &mut targets).await?);
    }
    tokio::time::sleep_until((began + duration).into()).await;
    stop_tx.send_replace(true);
    eprintln!(
        "soak: {:>6.1} s  stopping the clients",
        began.elapsed().as_secs_f64()
    );
    let (mut ending, elapsed) = wait_and_check(tasks, ctx, began).await?;
    ending.grace_used = grace_used(&cluster).await?;
    let kept = report::print(&header, &tally, &records, &ending, elapsed);
    for instance in &mut instances {
        instance.stop();
    }
    if kept {
        Ok(())
    } else {
        anyhow::bail!("the soak broke a promise (report above)")
    }
}

/// Which kind each client is: 40 % stateless chains, 30 % stateful, 10 % logins, the rest
/// event streams, interleaved.
pub(crate) fn mix(clients: usize) -> Vec<Kind> {
    (0..clients)
        .map(|i| match i % 10 {
            0..=3 => Kind::Chain,
            4..=6 => Kind::Stateful,
            7 => Kind::Login,
            _ => Kind::Listener,
        })
        .collect()
}

/// Creates and migrates the database, and `users` users sharing one argon2id hash of
/// [`clients::PASSWORD`].
pub(crate) async fn prepare_database(cluster: &Cluster, users: usize) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect_with(&cluster.connect_options()).await?;
    sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let pool = latchkey::db::pool_options(2)
        .connect_with(cluster.connect_options().database(DATABASE))
        .await?;
    latchkey::db::migrate(&pool).await?;
    let hasher = latchkey::auth::password::PasswordHasher::new(
        latchkey::auth::password::owasp_params(),
        1,
        Arc::new(latchkey::rng::OsSecretSource),
    )
    .map_err(|e| anyhow::anyhow!("password hasher: {e}"))?;
    let hash = hasher
        .hash(SecretString::from(clients::PASSWORD.to_owned()))
        .await
        .map_err(|e| anyhow::anyhow!("hash: {e}"))?;
    sqlx::query(
        "INSERT INTO latchkey.users (email, password_hash) \
         SELECT 'soak' || g || '@example.com', $1 FROM generate_series(0, $2 - 1) AS g",
    )
    .bind(hash)
    .bind(users as i32)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(())
}

/// Waits for every client (told to stop), then checks that each one that finished holds a
/// token that still works (on a context of its own, 60 s to answer): the ending, but for its
/// `grace_used` count, and how long the clients ran from `began`.
pub(crate) async fn wait_and_check(
    tasks: Vec<tokio::task::JoinHandle<ClientEnd>>,
    ctx: Ctx,
    began: Instant,
) -> anyhow::Result<(Ending, Duration)> {
    let mut ends: Vec<ClientEnd> = Vec::new();
    for task in tasks {
        ends.push(task.await.context("a client task panicked")?);
    }
    let elapsed = began.elapsed();
    let (final_tx, final_rx) = watch::channel(false);
    let final_ctx = Ctx {
        stop: final_rx,
        deadline: Instant::now() + Duration::from_secs(60),
        ..ctx
    };
    let mut ending = Ending {
        checked: 0,
        lost: Vec::new(),
        unfinished: ends.iter().filter(|e| e.unfinished).count(),
        grace_used: 0,
    };
    for end in ends.iter().filter(|e| !e.unfinished) {
        ending.checked += 1;
        if let Err(why) = clients::check_held(&final_ctx, end).await {
            ending.lost.push(why);
        }
    }
    drop(final_tx);
    Ok((ending, elapsed))
}

/// `grace_used` events in the database, read directly (not through the proxy).
pub(crate) async fn grace_used(cluster: &Cluster) -> anyhow::Result<i64> {
    let mut conn =
        PgConnection::connect_with(&cluster.connect_options().database(DATABASE)).await?;
    let n =
        sqlx::query_scalar("SELECT count(*) FROM latchkey.session_events WHERE event::text = $1")
            .bind(latchkey::store::EventKind::GraceUsed.as_str())
            .fetch_one(&mut conn)
            .await?;
    conn.close().await?;
    Ok(n)
}
