//! `--scenario malformed`: `--requests` hostile requests (`hostile`), half over raw TCP
//! sockets and half over HTTP, from `--clients` tasks, against the service binary run as its
//! own process. It fails unless no answer is a 5xx, the service's log holds no panic, its
//! resident memory after the storm is within 10% of before, and login and refresh still work.

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
use crate::service::{field, login, refresh, EMAIL};

/// Largest growth of resident memory over the storm.
const RSS_TOLERANCE: f64 = 0.10;

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
    drop(setup);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.pid();
    let before = Usage::read(pid)?;
    let addr: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .context("the service's address")?;

    let started = Instant::now();
    let tally = storm(addr, seed, requests, clients, material).await;
    let elapsed = started.elapsed();
    // Let closed connections and their buffers go before the last reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Usage::read(pid)?;

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
         rss_before_kib={} rss_after_kib={} growth={:+.1}% health={}",
        tally.count_5xx(),
        tally.unanswered,
        before.rss,
        after.rss,
        growth * 100.0,
        match &health {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("FAILED ({e:#})"),
        }
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
