//! `--scenario malformed`: `--requests` hostile requests (`hostile`), half over raw TCP
//! sockets and half over HTTP, from `--clients` tasks, against the service binary run as its
//! own process. It fails unless no answer is a 5xx, the service's log holds no panic, its
//! resident memory after the storm is within 10% of before (read after a warm-up of
//! well-formed requests), and login and refresh still work.

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

/// Largest growth of resident memory over the storm.
const RSS_TOLERANCE: f64 = 0.10;
/// Seconds of quiet after the storm, read once a second, before the last reading.
const SETTLE_SECS: usize = 10;
/// Well-formed requests of each warm-up client.
const WARM_UP_REQUESTS: usize = 100;

/// Runs the storm and checks the service after it.
pub(crate) async fn run(
    bin: &Path,
    options: &PgConnectOptions,
    requests: u64,
    seed: u64,
    clients: usize,
) -> anyhow::Result<()> {
    let url = options.to_url_lossy().to_string();
    let setup = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let server = Server::start(bin, &url, &setup, false).await?;
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
    let pid = server.pid();
    let idle = Usage::read(pid)?;
    // Well-formed traffic at the storm's concurrency first, one connection per request as in
    // the storm, so the database pool, the runtime's threads and the allocator are at working
    // size: the reading before the storm is of a service in use, and any growth after it is
    // the storm's own.
    warm_up(&server.base, &stateful, clients).await?;
    drop(setup);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = Usage::read(pid)?;
    let addr: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .context("the service's address")?;

    let started = Instant::now();
    let tally = storm(addr, seed, requests, clients, material).await;
    let elapsed = started.elapsed();
    // Let closed connections and their buffers go before the last reading: one reading a
    // second for SETTLE_SECS, the last is the one compared, each after a `GET /healthz` as a
    // load balancer's probe sends (the allocator returns freed pages to the system when the
    // process allocates again, not while it sleeps).
    let probe = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        .build()?;
    let mut settling = Vec::new();
    for _ in 0..SETTLE_SECS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        probe
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .context("GET /healthz after the storm")?;
        settling.push(Usage::read(pid)?);
    }
    drop(probe);
    let after = *settling.last().context("no reading after the storm")?;

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

    let growth = after.rss as f64 / before.rss as f64 - 1.0;
    println!(
        "scenario=malformed requests={requests} seed={seed} clients={clients} server={} \
         raw={} http={} seconds={:.1} req_per_s={:.0}",
        bin.display(),
        tally.raw,
        tally.http,
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
    );
    println!("malformed answers: {}", tally.summary());
    println!(
        "malformed 5xx={} unanswered-complete(first 20)={:?} panics={panics} log_lines={lines} \
         rss_idle_kib={} rss_before_kib={} rss_after_kib={} growth={:+.1}% health={}",
        tally.count_5xx(),
        tally.unanswered,
        idle.rss,
        before.rss,
        after.rss,
        growth * 100.0,
        match &health {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("FAILED ({e:#})"),
        }
    );
    println!(
        "malformed rss_kib after 1..{SETTLE_SECS} s: {}",
        settling
            .iter()
            .map(|u| u.rss.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (i, status) in &tally.server_errors {
        println!("malformed 5xx: request {i} of seed {seed} answered {status}");
    }
    let mut failures = Vec::new();
    if tally.count_5xx() > 0 {
        failures.push(format!("{} answers were 5xx", tally.count_5xx()));
    }
    if panics > 0 {
        failures.push(format!("{panics} panics in the service's log"));
    }
    if growth > RSS_TOLERANCE {
        failures.push(format!("resident memory grew {:.1}%", growth * 100.0));
    }
    if let Err(e) = health {
        failures.push(format!("the service is not healthy after the storm: {e:#}"));
    }
    if failures.is_empty() {
        println!("malformed: met (0 5xx, 0 panics, memory within 10%, healthy after)");
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
