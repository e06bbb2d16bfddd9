//! A private PostgreSQL cluster in a directory of its own: created with `initdb` on first use,
//! started with `pg_ctl`, shared by every latchkey process that names the same directory, and
//! stopped by the last of them.
//!
//! The directory holds:
//!
//! * `pgdata/`: the cluster (owned by the server's user);
//! * `password`: the superuser's password (mode 0600). The server listens on 127.0.0.1 only,
//!   and asks every TCP connection for it (SCRAM), so other users of the machine cannot use
//!   the cluster;
//! * `setup.lock`: held while a process creates, starts or stops the cluster;
//! * `users.lock`: held shared by every process using the cluster; whoever can take it alone
//!   is the last user;
//! * `started-pid`: the server process a latchkey process started; a server started by hand
//!   is never stopped by latchkey.

use std::fs::File;
use std::path::{Path, PathBuf};

use sqlx::postgres::PgConnectOptions;

use super::layout::{lock_file, postmaster_pid, read_password, running_port, wait_ready};
use super::server::Server;
use super::EmbeddedError;

/// The cluster's superuser.
pub const SUPERUSER: &str = "postgres";

/// How to create a cluster (used only when the directory has none yet).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The directory the cluster lives in (created if missing).
    pub data_dir: PathBuf,
    /// `postgresql.conf` settings written when the cluster is created, e.g. `("fsync", "off")`;
    /// values are written as given (quote strings: `"'C'"`).
    pub settings: Vec<(String, String)>,
    /// Serve TLS with this certificate and key (`ssl = on`), written when it is created.
    pub tls: Option<ServerTls>,
    /// `initdb` syncs its files to disk (off: `--no-sync`, for throwaway clusters).
    pub sync: bool,
    /// Listen on this port (default: a free one, chosen at each start).
    pub port: Option<u16>,
}

impl ClusterOptions {
    /// A durable cluster in `data_dir`, with PostgreSQL's default settings.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            settings: Vec::new(),
            tls: None,
            sync: true,
            port: None,
        }
    }
}

/// A server certificate and its private key, PEM.
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate chain.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls([redacted])")
    }
}

/// What [`Cluster::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// This was the last user: the server is stopped.
    Stopped,
    /// Another latchkey process still uses it: left running.
    InUse,
    /// Not started by a latchkey process (by hand, say): left running.
    NotOurs,
}

/// A running cluster this process uses. Dropping it without [`Cluster::release`] leaves the
/// server running (the next user reuses it, and the last one stops it).
#[derive(Debug)]
pub struct Cluster {
    server: Server,
    port: u16,
    password: String,
    created: bool,
    started: bool,
    users: File,
}

impl Cluster {
    /// Creates the cluster if `options.data_dir` has none (`initdb`), starts it unless a server
    /// already runs from it, and waits until it accepts connections. Blocking: several
    /// seconds for a new cluster (call it from `spawn_blocking` in async code). Processes that
    /// start the same directory at once are serialised by a file lock.
    ///
    /// # Errors
    /// No PostgreSQL programs, a cluster of another major version, a directory the server's
    /// user cannot use, or a failing `initdb` / `pg_ctl` (their output in the error).
    pub fn start(options: &ClusterOptions) -> Result<Self, EmbeddedError> {
        let server = Server::new(&options.data_dir)?;
        let data_dir = server.data_dir().to_owned();
        let setup = lock_file(&data_dir, "setup.lock")?;
        setup
            .lock()
            .map_err(|e| EmbeddedError::io("locking setup.lock", e))?;
        let users = lock_file(&data_dir, "users.lock")?;
        users
            .lock_shared()
            .map_err(|e| EmbeddedError::io("locking users.lock", e))?;
        let (password, created) = match read_password(&data_dir)? {
            Some(password) => {
                server.check_version()?;
                (password, false)
            }
            None => (server.initdb(options)?, true),
        };
        let (port, started) = match server.running()? {
            Some(port) => (port, false),
            None => (server.launch(options.port)?, true),
        };
        wait_ready(&data_dir)?;
        // Unlocked when `setup` closes; `users` stays locked (shared) while the cluster lives.
        drop(setup);
        Ok(Self {
            server,
            port,
            password,
            created,
            started,
            users,
        })
    }

    /// The directory given to [`Cluster::start`] (absolute).
    pub fn data_dir(&self) -> &Path {
        self.server.data_dir()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True if this start created the cluster (`initdb`).
    pub fn created(&self) -> bool {
        self.created
    }

    /// True if this start started the server (false: it was already running).
    pub fn started(&self) -> bool {
        self.started
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// [`Cluster::url`] with the password replaced by `***`, for logs.
    pub fn redacted_url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:***@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Options that reach the `postgres` database as the superuser.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .password(&self.password)
            .database("postgres")
    }

    /// Stops the server if this process is its last latchkey user and a latchkey process
    /// started it (`pg_ctl stop -m fast`: open connections are closed). Blocking.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub fn release(self) -> Result<Released, EmbeddedError> {
        let Self { server, users, .. } = self;
        let data_dir = server.data_dir();
        let setup = lock_file(data_dir, "setup.lock")?;
        setup
            .lock()
            .map_err(|e| EmbeddedError::io("locking setup.lock", e))?;
        drop(users);
        // Held only for this statement: `setup` keeps new users out meanwhile.
        let alone = lock_file(data_dir, "users.lock")?.try_lock().is_ok();
        if !alone {
            return Ok(Released::InUse);
        }
        let ours = std::fs::read_to_string(data_dir.join("started-pid")).ok();
        if ours.is_none() || ours.as_deref().map(str::trim) != postmaster_pid(data_dir).as_deref() {
            return Ok(Released::NotOurs);
        }
        server.stop()?;
        Ok(Released::Stopped)
    }

    /// Restarts the server (`pg_ctl restart -m fast`) on the same port, as an operator's
    /// restart does: every open connection is closed. Blocking; returns once it accepts
    /// connections again. For fault-injection tools and tests.
    ///
    /// # Errors
    /// When `pg_ctl restart` fails.
    pub fn restart(&self) -> Result<(), EmbeddedError> {
        self.server.restart()?;
        wait_ready(self.server.data_dir())
    }

    /// Stops the server running from `data_dir`, whoever uses it; true if one was running.
    /// Blocking. For tests and tools cleaning up.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub fn stop(data_dir: &Path) -> Result<bool, EmbeddedError> {
        if running_port(data_dir)?.is_none() {
            return Ok(false);
        }
        Server::new(data_dir)?.stop()?;
        Ok(true)
    }

    /// The port of the server running from `data_dir` (its `postmaster.pid`), if one runs.
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub fn running_port(data_dir: &Path) -> Result<Option<u16>, EmbeddedError> {
        running_port(data_dir)
    }
}
