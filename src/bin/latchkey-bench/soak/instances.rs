//! The service instances of the soak: `latchkey serve` processes on fixed ports, one database
//! behind the proxy; one can be SIGKILLed and started again on its port.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The origin the soak's browsers send (allowed by every instance).
pub(crate) const ORIGIN: &str = "http://soak.test";

/// How an instance is run: the binary, its database URL and JWT secret, where it logs.
pub(crate) struct InstanceConfig {
    pub(crate) bin: PathBuf,
    pub(crate) database_url: String,
    pub(crate) jwt_secret: String,
    pub(crate) log_dir: PathBuf,
}

/// One `latchkey serve` process.
pub(crate) struct Instance {
    /// `a`, `b`: names its log file.
    pub(crate) name: char,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    port: u16,
    child: Option<Child>,
}

/// A port nothing listens on now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Instance {
    /// An instance named `name` on a free port, not started.
    pub(crate) fn new(name: char) -> anyhow::Result<Self> {
        let port = free_port()?;
        Ok(Self {
            name,
            base: format!("http://127.0.0.1:{port}"),
            port,
            child: None,
        })
    }

    /// Starts `latchkey serve` on the instance's port and waits (at most 60 s) until its
    /// `/readyz` answers 200.
    pub(crate) async fn start(
        &mut self,
        config: &InstanceConfig,
        http: &reqwest::Client,
    ) -> anyhow::Result<()> {
        let log = log_file(&config.log_dir, self.name)?;
        let child = Command::new(&config.bin)
            .args(["serve", "--no-migrate", "--bind"])
            .arg(format!("127.0.0.1:{}", self.port))
            .env("DATABASE_URL", &config.database_url)
            .env("LATCHKEY_JWT_SECRET", &config.jwt_secret)
            .env("LATCHKEY_ALLOWED_ORIGINS", ORIGIN)
            .env("LATCHKEY_COOKIE_SECURE", "false")
            // Every soak client comes from 127.0.0.1; real clients do not share one address.
            .env("LATCHKEY_MAX_CONNECTIONS_PER_IP", "2048")
            .env("LATCHKEY_EVENTS_MAX_PER_IP", "512")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build --release --bin latchkey`, \
                     or pass --server-bin)",
                    config.bin.display()
                )
            })?;
        self.child = Some(child);
        let began = Instant::now();
        loop {
            if self.ready(http).await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "instance {} exited with {status}; its log: {}",
                        self.name,
                        config
                            .log_dir
                            .join(format!("instance-{}.log", self.name))
                            .display()
                    );
                }
            }
            if began.elapsed() > Duration::from_secs(60) {
                bail!("instance {} not ready within 60 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True when `/readyz` answers 200 (the instance reaches the database).
    pub(crate) async fn ready(&self, http: &reqwest::Client) -> bool {
        http.get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// SIGKILL, and reaps the process.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("SIGKILL")?;
            child.wait().context("reaping the killed instance")?;
        }
        Ok(())
    }

    /// True while the process runs (false once it exited on its own).
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, and waits for it to drain and exit (killed after 40 s).
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(40) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The instance's log, appended to across its restarts.
fn log_file(dir: &Path, name: char) -> anyhow::Result<std::fs::File> {
    let path = dir.join(format!("instance-{name}.log"));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| path.display().to_string())
}
