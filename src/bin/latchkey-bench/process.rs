//! The service binary as a child process (`latchkey serve` on a port the kernel picks), its
//! log watched for panics, and its memory read from `/proc/<pid>/status`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::service::{EMAIL, PASSWORD};

/// A fixed access-token key, so the service does not warn about a random one.
pub(crate) const JWT_SECRET: &str = "bench-secret-bench-secret-bench-secret!";

/// Memory of one process: `/proc/<pid>/status` (KiB), its threads and open descriptors.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) rss: u64,
    pub(crate) hwm: u64,
    pub(crate) anon: u64,
    pub(crate) file: u64,
    pub(crate) threads: u64,
    pub(crate) fds: u64,
}

impl Usage {
    pub(crate) fn read(pid: u32) -> anyhow::Result<Self> {
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
    pub(crate) fn max(self, other: Self) -> Self {
        Self {
            rss: self.rss.max(other.rss),
            hwm: self.hwm.max(other.hwm),
            anon: self.anon.max(other.anon),
            file: self.file.max(other.file),
            threads: self.threads.max(other.threads),
            fds: self.fds.max(other.fds),
        }
    }

    pub(crate) fn header() {
        println!(
            "{:<8} {:<10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5}",
            "scenario", "phase", "rss_kib", "hwm_kib", "anon_kib", "file_kib", "threads", "fds"
        );
    }

    pub(crate) fn print(&self, phase: &str) {
        println!(
            "{:<8} {:<10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5}",
            "memory", phase, self.rss, self.hwm, self.anon, self.file, self.threads, self.fds
        );
    }
}

/// `latchkey serve` as a child process; killed if dropped while still running.
pub(crate) struct Server {
    child: Child,
    /// `http://<addr>`.
    pub(crate) base: String,
    /// Lines the service has logged, and how many of them tell of a panic.
    pub(crate) log: Arc<LogCount>,
}

/// What the service's log held so far.
#[derive(Debug, Default)]
pub(crate) struct LogCount {
    /// Lines.
    pub(crate) lines: AtomicU64,
    /// Lines with `panicked` (the panic hook's message).
    pub(crate) panics: AtomicU64,
}

impl Server {
    /// Starts `bin serve` on a port the kernel picks, with `env` added to its environment,
    /// reads the address from its log and waits for `/readyz`. With `echo`, its log is copied
    /// to stderr (else only counted).
    pub(crate) async fn start(
        bin: &Path,
        url: &str,
        client: &reqwest::Client,
        echo: bool,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .envs(env.iter().copied())
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
        let log = Arc::new(LogCount::default());
        let mut server = Self {
            child,
            base: String::new(),
            log: log.clone(),
        };
        // Echo the service's log, and hand over the address it announces.
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lines.fetch_add(1, Ordering::Relaxed);
                if line.contains("panicked") {
                    log.panics.fetch_add(1, Ordering::Relaxed);
                    eprintln!("latchkey serve: {line}");
                } else if echo {
                    eprintln!("latchkey serve: {line}");
                }
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

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the drain; an unclean exit is an error.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
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
pub(crate) fn add_user(bin: &Path, url: &str) -> anyhow::Result<()> {
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
