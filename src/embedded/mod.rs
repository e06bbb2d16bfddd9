//! The embedded default database: with no `DATABASE_URL` and nothing usable on
//! 127.0.0.1:5432, latchkey runs a private PostgreSQL cluster of its own, made with the
//! installed PostgreSQL programs in a data directory kept between runs.
//!
//! * [`choose`] decides where the database is: the URL given; else the cluster in the
//!   `--data-dir` given; else the local default URL if a server there accepts it; else the
//!   cluster in [`default_data_dir`].
//! * [`Cluster`] creates (`initdb`), starts (`pg_ctl`), reuses and stops such a cluster; the
//!   tests' harness runs the suite's databases on one too.
//! * [`Binaries`] finds the PostgreSQL programs.
//! * [`Database`] is what the commands use: a URL, and the cluster behind it if any, released
//!   when the command ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

mod binaries;
mod cluster;
mod layout;
mod os_user;
mod server;
mod standby;

pub use binaries::{Binaries, BINDIR_VAR};
pub use cluster::{Cluster, ClusterOptions, Released, ServerTls, SUPERUSER};
pub use os_user::SERVER_USER;
pub use standby::STANDBY_NAME;

/// The database the commands use in an embedded cluster.
pub const DATABASE: &str = "latchkey";

/// Why the embedded cluster cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No PostgreSQL server programs were found.
    #[error(
        "no PostgreSQL server programs (initdb, pg_ctl, postgres) to run the embedded \
         database; looked at: {}.\nInstall PostgreSQL (Debian/Ubuntu: `sudo apt install \
         postgresql`; macOS: `brew install postgresql@15`), point {BINDIR_VAR} at the \
         directory of its programs, or set DATABASE_URL to a running server",
        looked.join(", ")
    )]
    NoBinaries {
        /// Where they were looked for.
        looked: Vec<String>,
    },
    /// The cluster was made by another major version of PostgreSQL.
    #[error(
        "the embedded cluster in {} was made by PostgreSQL {cluster}, but the programs found \
         ({}) are PostgreSQL {programs}: point {BINDIR_VAR} at PostgreSQL {cluster}'s, \
         upgrade the cluster with pg_upgrade, or use another --data-dir",
        data_dir.display(), bindir.display()
    )]
    VersionMismatch {
        /// The latchkey data directory.
        data_dir: PathBuf,
        /// The cluster's `PG_VERSION`.
        cluster: String,
        /// The programs' major version.
        programs: u32,
        /// Where the programs are.
        bindir: PathBuf,
    },
    /// Running as root with no way to run the server as another user.
    #[error(
        "PostgreSQL refuses to run as root, and {reason}: run latchkey as an ordinary user, \
         or set DATABASE_URL"
    )]
    Root {
        /// What is missing.
        reason: String,
    },
    /// The data directory cannot be one.
    #[error("--data-dir {}: {reason}", data_dir.display())]
    DataDir {
        /// The directory given.
        data_dir: PathBuf,
        /// Why not.
        reason: String,
    },
    /// No home directory for the default data directory.
    #[error("no home directory for the default data directory: give --data-dir or DATABASE_URL")]
    NoHome,
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A PostgreSQL program failed.
    #[error("{what} failed: {}{}", output.trim(), if hint.is_empty() { String::new() } else { format!("\n({hint})") })]
    Command {
        /// The program.
        what: String,
        /// What it printed.
        output: String,
        /// How to read it, if anything is known.
        hint: String,
    },
}

impl EmbeddedError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// A server at this URL.
    Url(String),
    /// The embedded cluster in this directory.
    Embedded {
        /// Its data directory.
        data_dir: PathBuf,
        /// Why, for the log: `--data-dir given`, or what the local default answered.
        why: String,
    },
}

/// Decides where the database is: `database_url` if given (`DATABASE_URL` or
/// `--database-url`); else the cluster in `data_dir` if given (`--data-dir`); else
/// `default_url` if a server there accepts a connection; else the cluster in
/// [`default_data_dir`].
///
/// # Errors
/// [`EmbeddedError::NoHome`] when the default data directory has no home to live in.
pub async fn choose(
    database_url: Option<&str>,
    data_dir: Option<&Path>,
    default_url: &str,
) -> Result<Choice, EmbeddedError> {
    if let Some(url) = database_url {
        if let Some(dir) = data_dir {
            tracing::warn!(data_dir = %dir.display(), "DATABASE_URL is given: --data-dir is ignored");
        }
        return Ok(Choice::Url(url.to_owned()));
    }
    if let Some(dir) = data_dir {
        return Ok(Choice::Embedded {
            data_dir: dir.to_owned(),
            why: "--data-dir given".to_owned(),
        });
    }
    match usable(default_url).await {
        Ok(()) => Ok(Choice::Url(default_url.to_owned())),
        Err(e) => Ok(Choice::Embedded {
            data_dir: default_data_dir()?,
            why: format!("no DATABASE_URL, and {}: {e}", server_of(default_url)),
        }),
    }
}

/// Whether a server at `url` accepts a connection (to its `postgres` database, within five
/// seconds); the error says why not.
///
/// # Errors
/// The reason, readable.
pub async fn usable(url: &str) -> Result<(), String> {
    let options: PgConnectOptions = url.parse().map_err(|e| format!("{e}"))?;
    let options = options.database("postgres").disable_statement_logging();
    match tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::PgConnection::connect_with(&options),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".to_owned()),
    }
}

/// `host:port` of a URL, for messages (never its password).
fn server_of(url: &str) -> String {
    match url.parse::<PgConnectOptions>() {
        Ok(o) => format!("{}:{}", o.get_host(), o.get_port()),
        Err(_) => "the default URL".to_owned(),
    }
}

/// The default data directory: `$XDG_DATA_HOME/latchkey/postgres` (by default
/// `~/.local/share/latchkey/postgres`); as root, `/var/lib/latchkey/postgres`, since the
/// server's own user could not enter root's home.
///
/// # Errors
/// [`EmbeddedError::NoHome`] when neither `XDG_DATA_HOME` nor a home directory is known.
pub fn default_data_dir() -> Result<PathBuf, EmbeddedError> {
    if os_user::is_root() {
        return Ok(PathBuf::from("/var/lib/latchkey/postgres"));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::home_dir().map(|h| h.join(".local/share")))
        .ok_or(EmbeddedError::NoHome)?;
    Ok(data.join("latchkey").join("postgres"))
}

/// The database a command uses, and the embedded cluster behind it when there is one.
#[derive(Debug)]
pub struct Database {
    url: String,
    cluster: Option<Cluster>,
}

impl Database {
    /// Resolves the database as [`choose`] decides (with `default_url` the local default),
    /// starting the embedded cluster if that is the choice. The first log line says which
    /// data directory, whether it is new, and why.
    ///
    /// # Errors
    /// When the embedded cluster is chosen and cannot run: no PostgreSQL programs (a message
    /// saying how to install them), or a failing `initdb` / `pg_ctl`.
    pub async fn open(
        database_url: Option<&str>,
        data_dir: Option<&Path>,
        default_url: &str,
    ) -> Result<Self, EmbeddedError> {
        let (data_dir, why) = match choose(database_url, data_dir, default_url).await? {
            Choice::Url(url) => {
                if database_url.is_none() {
                    tracing::info!(server = %server_of(&url), "using the local PostgreSQL (no DATABASE_URL)");
                }
                return Ok(Self { url, cluster: None });
            }
            Choice::Embedded { data_dir, why } => (data_dir, why),
        };
        let known = data_dir.join("password").exists();
        tracing::info!(
            %why,
            "embedded PostgreSQL in {} ({}; kept between runs, --data-dir or LATCHKEY_DATA_DIR moves it)",
            data_dir.display(),
            if known { "reusing this data directory" } else { "new data directory" },
        );
        let options = ClusterOptions::new(data_dir);
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options))
            .await
            .map_err(|e| {
                EmbeddedError::io("starting the embedded cluster", std::io::Error::other(e))
            })??;
        tracing::info!(
            url = %cluster.redacted_url(DATABASE),
            password_file = %cluster.data_dir().join("password").display(),
            "embedded PostgreSQL {}",
            match (cluster.created(), cluster.started()) {
                (true, _) => "created and started",
                (false, true) => "started",
                (false, false) => "already running: reused",
            }
        );
        Ok(Self {
            url: cluster.url(DATABASE),
            cluster: Some(cluster),
        })
    }

    /// The connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The embedded cluster, if the database is in one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Ends this process's use of the embedded cluster: stopped if it was the last user (see
    /// [`Cluster::release`]); logged, never an error.
    pub async fn release(self) {
        let Some(cluster) = self.cluster else { return };
        match tokio::task::spawn_blocking(move || cluster.release()).await {
            Ok(Ok(Released::Stopped)) => tracing::info!("embedded PostgreSQL stopped"),
            Ok(Ok(Released::InUse)) => {
                tracing::info!("embedded PostgreSQL left running: another latchkey process uses it")
            }
            Ok(Ok(Released::NotOurs)) => {
                tracing::info!("embedded PostgreSQL left running: it was not started by latchkey")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "stopping the embedded PostgreSQL failed"),
            Err(e) => tracing::warn!(error = %e, "stopping the embedded PostgreSQL failed"),
        }
    }
}
