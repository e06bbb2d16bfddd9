//! `--scenario memory`: the service binary as a child process on the scratch database, its
//! `/proc/<pid>/status` read before, during and after 256 keep-alive connections.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

use crate::harness::{drive_clients, header};
use crate::process::{add_user, Server, Usage};
use crate::service::{login, CookieClient};

/// Keep-alive connections held open for the whole run.
const CONNS: usize = 256;
/// Sessions the connections share; each login is one argon2 verification in the service.
const SESSIONS: usize = 16;
/// The goal: the service's resident memory at 256 connections.
const GOAL_KIB: u64 = 64 * 1024;

/// Starts the service, logs in, holds [`CONNS`] connections doing checks for
/// `duration` and prints the service's memory before, at the peak and after.
pub(crate) async fn run(
    bin: &Path,
    options: &PgConnectOptions,
    duration: Duration,
) -> anyhow::Result<()> {
    let url = options.to_url_lossy().to_string();
    let setup = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let server = Server::start(bin, &url, &setup, true, &[]).await?;
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
    let stats = drive_clients("memory", clients, duration).await;
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
    header();
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
