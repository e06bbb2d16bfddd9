//! A streaming standby of a private cluster, and the two acts of a primary switch: stopping
//! the primary as a crash would, promoting the standby. For failover tests and the
//! `failover` bench scenario.
//!
//! The standby lives in a latchkey data directory of its own (its `pgdata/` a base backup of
//! the primary's, `standby.signal` and `primary_conninfo` written by `pg_basebackup -R`, the
//! same superuser password), so [`Cluster::start`] starts it as any other cluster.

use std::path::Path;

use super::cluster::{Cluster, ClusterOptions};
use super::layout::{read_password, write_private};
use super::server::Server;
use super::EmbeddedError;

/// `application_name` the standby streams under (for `synchronous_standby_names`).
pub const STANDBY_NAME: &str = "latchkey_standby";

impl Cluster {
    /// Makes a streaming standby of this (running) cluster in `data_dir` (which must hold no
    /// cluster yet), on `port` or a free one, and starts it. It streams as [`STANDBY_NAME`];
    /// it becomes synchronous once the primary names it in `synchronous_standby_names`.
    /// Blocking.
    ///
    /// # Errors
    /// When `data_dir` already holds a cluster, or `pg_basebackup` or the start fails.
    pub fn start_standby(
        &self,
        data_dir: &Path,
        port: Option<u16>,
    ) -> Result<Cluster, EmbeddedError> {
        let password = read_password(self.data_dir())?.ok_or_else(|| EmbeddedError::DataDir {
            data_dir: self.data_dir().to_owned(),
            reason: "the primary has no password file".to_owned(),
        })?;
        let server = Server::new(data_dir)?;
        if read_password(server.data_dir())?.is_some() {
            return Err(EmbeddedError::DataDir {
                data_dir: server.data_dir().to_owned(),
                reason: "it already holds a cluster".to_owned(),
            });
        }
        server.base_backup(self.port(), &password, STANDBY_NAME)?;
        write_private(&server.data_dir().join("password"), &password)?;
        let mut options = ClusterOptions::new(server.data_dir());
        options.port = port;
        Cluster::start(&options)
    }

    /// Stops the server running from `data_dir` at once (`pg_ctl stop -m immediate`), as a
    /// crash of the primary would. Blocking.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub fn crash(data_dir: &Path) -> Result<(), EmbeddedError> {
        Server::new(data_dir)?.stop_immediate()
    }

    /// Promotes the standby running from `data_dir` (`pg_ctl promote`); returns once it
    /// accepts writes. Blocking.
    ///
    /// # Errors
    /// When `pg_ctl promote` fails (not a standby, not running).
    pub fn promote(data_dir: &Path) -> Result<(), EmbeddedError> {
        Server::new(data_dir)?.promote()
    }
}
