//! `--scenario malformed`: `--requests` hostile requests (`hostile`), half over raw TCP
//! sockets and half over HTTP, from `--clients` tasks, against the service binary run as its
//! own process. It fails unless no answer is a 5xx, the service's log holds no panic, its
//! resident memory after the storm is within `--rss-tolerance` (10%) of before, and login and
//! refresh still work.
//!
//! The readings leave out what the allocator, the runtime and the database pool only hold for a
//! while: the service runs with `MIMALLOC_PURGE_DELAY=0` (freed pages go back to the system at
//! once), a warm-up storm of other seeds brings it to working size before the reading before,
//! every reading is taken with the pool at its full [`POOL`] connections (each holds most of a
//! MiB: its TLS state, buffers and prepared statements; the service's `/metrics` says how many
//! are open), and each reading is the median of several, taken once tokio's idle blocking
//! threads (where argon2 ran) have exited. `docs/RELIABILITY.md` has the measurements behind
//! each of these.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

use crate::hostile::Material;
use crate::hostile_wire::storm;
use crate::process::{add_user, Server, Usage};
use crate::service::{field, login, refresh, Login, EMAIL};

/// Seconds of quiet before a reading: tokio ends a blocking thread idle for 10 s.
const QUIET_SECS: u64 = 11;
/// Readings, one a second, of which the median is compared.
const READINGS: usize = 5;
/// Well-formed requests of each warm-up client.
const WARM_UP_REQUESTS: usize = 100;
/// Added to the seed for the warm-up storm's own seed.
const WARM_UP_SEED_OFFSET: u64 = 1 << 32;
/// The allocator's setting the service runs with, unless the environment sets it.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";
/// The service's database pool: small enough that a few rounds of concurrent session checks
/// open every connection (a service on two cores rarely has 16 statements in flight at once,
/// so a pool of 16 stays part open, at a size that differs from one reading to the next).
const POOL: u32 = 4;
/// Rounds of concurrent session checks at most, to open every pool connection.
const FILL_ROUNDS: usize = 20;

/// Runs the storm and checks the service after it.
pub(crate) async fn run(
    bin: &Path,
    options: &PgConnectOptions,
    requests: u64,
    seed: u64,
    clients: usize,
    warm_up_storm: u64,
    tolerance_pct: f64,
) -> anyhow::Result<()> {
    let url = options.to_url_lossy().to_string();
    let setup = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let purge_delay = std::env::var(PURGE_DELAY).unwrap_or_else(|_| "0".to_owned());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics_bind = format!("127.0.0.1:{metrics_port}");
    let pool = POOL.to_string();
    let server = Server::start(
        bin,
        &url,
        &setup,
        false,
        &[
            (PURGE_DELAY, purge_delay.as_str()),
            ("LATCHKEY_METRICS_BIND", metrics_bind.as_str()),
            ("LATCHKEY_DB_MAX_CONNECTIONS", pool.as_str()),
        ],
    )
    .await?;
    {
        let (bin, url) = (PathBuf::from(bin), url.clone());
        tokio::task::spawn_blocking(move || add_user(&bin, &url)).await??;
    }
    // Real credentials for the generator to misuse.
    let stateless = login(&setup, &server.base, "stateless").await?;
    let stateful = login(&setup, &server.base, "stateful").await?;
    let cookie = stateful
        .cookie
        .as_deref()
        .and_then(|c| c.split_once('='))
        .map(|(_, v)| v.to_owned())
        .context("stateful login set no cookie")?;
    let material = Arc::new(Material {
        tokens: vec![
            field(&stateless.body, "refresh_token")?,
            field(&stateless.body, "access_token")?,
            cookie,
        ],
        email: EMAIL.to_owned(),
    });
    let meter = Meter {
        base: server.base.clone(),
        metrics: format!("http://{metrics_bind}/metrics"),
        cookie: stateful
            .cookie
            .clone()
            .context("stateful login set no cookie")?,
    };
    let pid = server.pid();
    let idle = Usage::read(pid)?;
    // Well-formed traffic at the storm's concurrency first, one connection per request as in
    // the storm, then a storm of another seed with the same mix, so the database pool, the
    // runtime's threads, the allocator's segments and every lazily built table are at working
    // size: the reading before the storm is of a service in use, and any growth after it is
    // the storm's own.
    warm_up(&server.base, &stateful, clients).await?;
    // Every pool connection open before the warm-up storm, so each prepares its statements
    // there and not first in the measured storm.
    meter.fill_pool().await?;
    drop(setup);
    let addr: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .context("the service's address")?;
    // Two halves of other seeds: the first one's logins reach argon2 until the storm's address
    // is throttled; the second, like the measured storm, meets the throttle from the start.
    let warm_seed = seed.wrapping_add(WARM_UP_SEED_OFFSET);
    let mut warm = storm(
        addr,
        warm_seed,
        warm_up_storm / 2,
        clients,
        material.clone(),
    )
    .await;
    let second = storm(
        addr,
        warm_seed.wrapping_add(WARM_UP_SEED_OFFSET),
        warm_up_storm - warm_up_storm / 2,
        clients,
        material.clone(),
    )
    .await;
    for (k, n) in second.answers {
        *warm.answers.entry(k).or_default() += n;
    }
    let before = meter.settled(pid).await?;

    let started = Instant::now();
    let tally = storm(addr, seed, requests, clients, material).await;
    let elapsed = started.elapsed();
    let after = meter.settled(pid).await?;

    // The service still serves a client it has not seen (the storm's address is throttled).
    let fresh = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()?;
    let health = async {
        let l = login(&fresh, &server.base, "stateless").await?;
        let next = refresh(&fresh, &server.base, &field(&l.body, "refresh_token")?).await?;
        let c = login(&fresh, &server.base, "stateful").await?;
        c.cookie.context("stateful login set no cookie")?;
        for path in ["/healthz", "/readyz"] {
            let status = fresh
                .get(format!("{}{path}", server.base))
                .send()
                .await?
                .status();
            if !status.is_success() {
                bail!("{path} answered {status}");
            }
        }
        anyhow::Ok(next)
    }
    .await;
    let lines = server.log.lines.load(Ordering::Relaxed);
    let panics = server.log.panics.load(Ordering::Relaxed);
    server.stop().await?;

    let growth = after.rss() as f64 / before.rss() as f64 - 1.0;
    let anon_growth = after.anon() as f64 / before.anon() as f64 - 1.0;
    println!(
        "scenario=malformed requests={requests} seed={seed} clients={clients} server={} \
         {PURGE_DELAY}={purge_delay} warm_up_storm={warm_up_storm} (seed {warm_seed}, 5xx={}) \
         raw={} http={} seconds={:.1} req_per_s={:.0}",
        bin.display(),
        warm.count_5xx(),
        tally.raw,
        tally.http,
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
    );
    println!("malformed answers: {}", tally.summary());
    println!(
        "malformed 5xx={} unanswered-complete(first 20)={:?} panics={panics} log_lines={lines} \
         rss_idle_kib={} rss_before_kib={} rss_after_kib={} growth={:+.1}% \
         anon_before_kib={} anon_after_kib={} anon_growth={:+.1}% threads={}->{} pool={}->{} health={}",
        tally.count_5xx() + warm.count_5xx(),
        tally.unanswered,
        idle.rss,
        before.rss(),
        after.rss(),
        growth * 100.0,
        before.anon(),
        after.anon(),
        anon_growth * 100.0,
        before.threads(),
        after.threads(),
        before.pool,
        after.pool,
        match &health {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("FAILED ({e:#})"),
        }
    );
    println!("malformed before (rss/anon/file/threads KiB): {before}");
    println!("malformed after  (rss/anon/file/threads KiB): {after}");
    for (i, status) in &tally.server_errors {
        println!("malformed 5xx: request {i} of seed {seed} answered {status}");
    }
    let mut failures = Vec::new();
    let count_5xx = tally.count_5xx() + warm.count_5xx();
    if count_5xx > 0 {
        failures.push(format!("{count_5xx} answers were 5xx"));
    }
    if panics > 0 {
        failures.push(format!("{panics} panics in the service's log"));
    }
    if growth * 100.0 > tolerance_pct {
        failures.push(format!(
            "resident memory grew {:.1}% (bound {tolerance_pct}%)",
            growth * 100.0
        ));
    }
    if before.pool != after.pool {
        failures.push(format!(
            "the readings saw {} and {} pool connections (of {POOL}): not comparable",
            before.pool, after.pool
        ));
    }
    if let Err(e) = health {
        failures.push(format!("the service is not healthy after the storm: {e:#}"));
    }
    if failures.is_empty() {
        println!("malformed: met (0 5xx, 0 panics, memory within {tolerance_pct}%, healthy after)");
        Ok(())
    } else {
        bail!("malformed: NOT met: {}", failures.join("; "))
    }
}

/// `clients` tasks each make [`WARM_UP_REQUESTS`] session checks with the stateful login's
/// cookie, each on a new connection; every one must answer 200.
async fn warm_up(base: &str, stateful: &Login, clients: usize) -> anyhow::Result<()> {
    let cookie = stateful
        .cookie
        .clone()
        .context("stateful login set no cookie")?;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, cookie) = (format!("{base}/auth/session"), cookie.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()?;
                for _ in 0..WARM_UP_REQUESTS {
                    let status = client
                        .get(&url)
                        .header("cookie", &cookie)
                        .send()
                        .await?
                        .status();
                    if !status.is_success() {
                        bail!("warm-up session check answered {status}");
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Readings of the service's memory, one a second after [`QUIET_SECS`] of quiet, and the pool
/// connections open throughout.
struct Readings {
    usage: Vec<Usage>,
    pool: u64,
}

impl Readings {
    /// The median of one figure over the readings.
    fn median(&self, figure: impl Fn(&Usage) -> u64) -> u64 {
        let mut v: Vec<u64> = self.usage.iter().map(figure).collect();
        v.sort_unstable();
        v[v.len() / 2]
    }

    fn rss(&self) -> u64 {
        self.median(|u| u.rss)
    }

    fn anon(&self) -> u64 {
        self.median(|u| u.anon)
    }

    fn threads(&self) -> u64 {
        self.median(|u| u.threads)
    }
}

impl std::fmt::Display for Readings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self
            .usage
            .iter()
            .map(|u| format!("{}/{}/{}/{}/{}", u.rss, u.anon, u.file, u.threads, u.fds))
            .collect();
        write!(f, "{} (pool {})", all.join(" "), self.pool)
    }
}

/// What the bench reads the service's state through: its API (from 127.0.0.3, an address the
/// storm does not use) and its `/metrics`.
struct Meter {
    base: String,
    metrics: String,
    /// The stateful login's `Cookie` header.
    cookie: String,
}

impl Meter {
    /// A client on 127.0.0.3, one connection per request.
    fn client() -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
            .pool_max_idle_per_host(0)
            .build()?)
    }

    /// The pool's open connections (idle and in use), from the service's `/metrics`.
    async fn pool_open(&self, client: &reqwest::Client) -> anyhow::Result<u64> {
        let text = client.get(&self.metrics).send().await?.text().await?;
        let open = text
            .lines()
            .filter(|l| l.starts_with("latchkey_db_pool_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        Ok(open)
    }

    /// Rounds of `4 × POOL` concurrent session checks until the pool has all its [`POOL`]
    /// connections open; returns how many are.
    async fn fill_pool(&self) -> anyhow::Result<u64> {
        let client = Self::client()?;
        let mut open = self.pool_open(&client).await?;
        for _ in 0..FILL_ROUNDS {
            if open >= u64::from(POOL) {
                break;
            }
            let checks = (0..4 * POOL).map(|_| {
                client
                    .get(format!("{}/auth/session", self.base))
                    .header("cookie", &self.cookie)
                    .send()
            });
            for answer in futures_util::future::join_all(checks).await {
                let status = answer?.status();
                if !status.is_success() {
                    bail!("a session check to fill the pool answered {status}");
                }
            }
            open = self.pool_open(&client).await?;
        }
        Ok(open)
    }

    /// Fills the pool, waits [`QUIET_SECS`] (closed connections gone, idle blocking threads
    /// ended), then takes [`READINGS`] readings one a second, each after a `GET /healthz` as a
    /// load balancer's probe sends.
    async fn settled(&self, pid: u32) -> anyhow::Result<Readings> {
        let pool = self.fill_pool().await?;
        let probe = Self::client()?;
        tokio::time::sleep(Duration::from_secs(QUIET_SECS)).await;
        let mut readings = Vec::with_capacity(READINGS);
        for _ in 0..READINGS {
            probe
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .context("GET /healthz")?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            readings.push(Usage::read(pid)?);
        }
        let pool_after = self.pool_open(&probe).await?;
        if pool != pool_after {
            bail!("the pool went from {pool} to {pool_after} connections during a reading");
        }
        Ok(Readings {
            usage: readings,
            pool,
        })
    }
}
