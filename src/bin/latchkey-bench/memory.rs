//! `--scenario memory`: the service binary as a child process on the scratch database, its
//! `/proc/<pid>/status` read before, during and after 256 keep-alive connections.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

use crate::harness::{drive_clients, header};
use crate::service::{login, CookieClient, EMAIL, PASSWORD};

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
            "scenario", "phase", "rss_kib", "hwm_kib", "anon_kib", "file_kib", "threads", "fds"
        );
    }

    fn print(&self, phase: &str) {
        println!(
            "{:<8} {:<10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5}",
            "memory", phase, self.rss, self.hwm, self.anon, self.file, self.threads, self.fds
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
    async fn start(bin: &Path, url: &str, client: &reqwest::Client) -> anyhow::Result<Self> {
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
pub(crate) async fn run(
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
