//! Running the PostgreSQL programs on one latchkey data directory: `initdb`, `pg_ctl`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::binaries::Binaries;
use super::cluster::{ClusterOptions, SUPERUSER};
use super::layout::{pgdata, postmaster_pid, running_port, write_private};
use super::os_user::RunAs;
use super::EmbeddedError;

/// The programs, who runs them, and the data directory they work on.
#[derive(Debug)]
pub(crate) struct Server {
    binaries: Binaries,
    run_as: RunAs,
    data_dir: PathBuf,
}

impl Server {
    /// Finds the programs and their user; creates `data_dir` if missing.
    pub(crate) fn new(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let binaries = Binaries::find()?;
        let run_as = RunAs::detect()?;
        if data_dir.join("PG_VERSION").exists() {
            return Err(EmbeddedError::DataDir {
                data_dir: data_dir.to_owned(),
                reason: "it is a PostgreSQL data directory itself; give the directory latchkey \
                         keeps its cluster in (its pgdata/ is one)"
                    .to_owned(),
            });
        }
        let data_dir = super::layout::prepare_dir(data_dir, run_as.switches())?;
        Ok(Self {
            binaries,
            run_as,
            data_dir,
        })
    }

    /// The data directory (absolute).
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The port of the server running from the directory, if one runs (`postmaster.pid` and
    /// `pg_ctl status`).
    pub(crate) fn running(&self) -> Result<Option<u16>, EmbeddedError> {
        let Some(port) = running_port(&self.data_dir)? else {
            return Ok(None);
        };
        let status = self
            .run_as
            .command(&self.binaries.program("pg_ctl"))
            .arg("status")
            .arg("-D")
            .arg(pgdata(&self.data_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| EmbeddedError::io("running pg_ctl status", e))?;
        Ok(status.success().then_some(port))
    }

    /// `initdb`, then latchkey's settings; returns the superuser's password.
    pub(crate) fn initdb(&self, options: &ClusterOptions) -> Result<String, EmbeddedError> {
        let pgdata = pgdata(&self.data_dir);
        if pgdata.exists() {
            // A creation that did not finish (no password file): start over.
            std::fs::remove_dir_all(&pgdata)
                .map_err(|e| EmbeddedError::io(format!("removing {}", pgdata.display()), e))?;
        }
        super::layout::create_private_dir(&pgdata)?;
        self.run_as.give(&pgdata)?;
        let password = new_password()?;
        let pwfile = self.data_dir.join("initdb-password");
        write_private(&pwfile, &password)?;
        self.run_as.give(&pwfile)?;
        let mut initdb = self.run_as.command(&self.binaries.program("initdb"));
        initdb
            .arg("-D")
            .arg(&pgdata)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--no-locale"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        if !options.sync {
            initdb.arg("--no-sync");
        }
        let ran = self.run("initdb", &mut initdb);
        let _ = std::fs::remove_file(&pwfile);
        ran?;
        let mut conf = String::from(
            "\n# latchkey's embedded cluster: TCP on 127.0.0.1 only, no Unix socket.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\n",
        );
        if let Some(tls) = &options.tls {
            for (name, pem) in [("server.crt", &tls.cert_pem), ("server.key", &tls.key_pem)] {
                let path = pgdata.join(name);
                write_private(&path, pem)?;
                self.run_as.give(&path)?;
            }
            conf.push_str("ssl = on\n");
        }
        for (name, value) in &options.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        let conf_path = pgdata.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| EmbeddedError::io(format!("writing {}", conf_path.display()), e))?;
        // Last: its presence says the cluster is complete.
        let tmp = self.data_dir.join("password.new");
        write_private(&tmp, &password)?;
        std::fs::rename(&tmp, self.data_dir.join("password"))
            .map_err(|e| EmbeddedError::io("writing the password file", e))?;
        Ok(password)
    }

    /// A cluster made by another major version cannot be started by these programs.
    pub(crate) fn check_version(&self) -> Result<(), EmbeddedError> {
        let path = pgdata(&self.data_dir).join("PG_VERSION");
        let cluster = std::fs::read_to_string(&path)
            .map_err(|e| EmbeddedError::io(format!("reading {}", path.display()), e))?;
        let cluster = cluster.trim().to_owned();
        let programs = self.binaries.major_version()?;
        if cluster != programs.to_string() {
            return Err(EmbeddedError::VersionMismatch {
                data_dir: self.data_dir.clone(),
                cluster,
                programs,
                bindir: self.binaries.bindir().to_owned(),
            });
        }
        Ok(())
    }

    /// `pg_ctl start` on `port` or a free one (another free one if that one was taken in the
    /// meantime); returns the port.
    pub(crate) fn launch(&self, port: Option<u16>) -> Result<u16, EmbeddedError> {
        let pgdata = pgdata(&self.data_dir);
        let log = pgdata.join("server.log");
        for attempt in 1.. {
            let chosen = match port {
                Some(p) => p,
                None => free_port()?,
            };
            let mut start = self.run_as.command(&self.binaries.program("pg_ctl"));
            start
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&pgdata)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(format!("-p {chosen}"));
            match self.run("pg_ctl start", &mut start) {
                Ok(()) => {
                    let pid = postmaster_pid(&self.data_dir).unwrap_or_default();
                    std::fs::write(self.data_dir.join("started-pid"), pid)
                        .map_err(|e| EmbeddedError::io("writing started-pid", e))?;
                    return Ok(chosen);
                }
                Err(EmbeddedError::Command { what, output, hint }) => {
                    // The server's own words are in its log.
                    let logged = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = logged.lines().rev().take(5).collect();
                    let output = format!(
                        "{output}\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                    // A free port taken by someone else in the meantime: another one.
                    if port.is_none() && attempt < 3 && output.contains("Address already in use") {
                        continue;
                    }
                    return Err(EmbeddedError::Command { what, output, hint });
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the attempts end in a return")
    }

    /// `pg_ctl stop -m fast`, waiting for the server to exit.
    pub(crate) fn stop(&self) -> Result<(), EmbeddedError> {
        let mut cmd = self.run_as.command(&self.binaries.program("pg_ctl"));
        cmd.args(["stop", "-w", "-m", "fast", "-D"])
            .arg(pgdata(&self.data_dir));
        self.run("pg_ctl stop", &mut cmd)?;
        let _ = std::fs::remove_file(self.data_dir.join("started-pid"));
        Ok(())
    }

    /// `pg_ctl restart -m fast`, waiting until the server accepts connections again: open
    /// connections are closed, the port stays the same.
    pub(crate) fn restart(&self) -> Result<(), EmbeddedError> {
        let mut cmd = self.run_as.command(&self.binaries.program("pg_ctl"));
        cmd.args(["restart", "-w", "-t", "60", "-m", "fast", "-D"])
            .arg(pgdata(&self.data_dir))
            .arg("-l")
            .arg(pgdata(&self.data_dir).join("server.log"));
        self.run("pg_ctl restart", &mut cmd)?;
        let pid = postmaster_pid(&self.data_dir).unwrap_or_default();
        std::fs::write(self.data_dir.join("started-pid"), pid)
            .map_err(|e| EmbeddedError::io("writing started-pid", e))
    }

    /// `pg_ctl stop -m immediate`: the server exits at once, as in a crash (no checkpoint).
    pub(crate) fn stop_immediate(&self) -> Result<(), EmbeddedError> {
        let mut cmd = self.run_as.command(&self.binaries.program("pg_ctl"));
        cmd.args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(pgdata(&self.data_dir));
        self.run("pg_ctl stop -m immediate", &mut cmd)?;
        let _ = std::fs::remove_file(self.data_dir.join("started-pid"));
        Ok(())
    }

    /// `pg_ctl promote`, waiting until the standby accepts writes.
    pub(crate) fn promote(&self) -> Result<(), EmbeddedError> {
        let mut cmd = self.run_as.command(&self.binaries.program("pg_ctl"));
        cmd.args(["promote", "-w", "-t", "60", "-D"])
            .arg(pgdata(&self.data_dir));
        self.run("pg_ctl promote", &mut cmd)
    }

    /// `pg_basebackup -R` of the server on 127.0.0.1:`port` into this directory's `pgdata/`
    /// (which must not exist): a streaming standby of it, named `application_name`.
    pub(crate) fn base_backup(
        &self,
        port: u16,
        password: &str,
        application_name: &str,
    ) -> Result<(), EmbeddedError> {
        let pgdata = pgdata(&self.data_dir);
        super::layout::create_private_dir(&pgdata)?;
        self.run_as.give(&pgdata)?;
        let mut cmd = self.run_as.command(&self.binaries.program("pg_basebackup"));
        cmd.arg("-d")
            .arg(format!(
                "host=127.0.0.1 port={port} user={SUPERUSER} application_name={application_name}"
            ))
            .arg("-D")
            .arg(&pgdata)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", password);
        self.run("pg_basebackup", &mut cmd)
    }

    /// Runs a server program; its output becomes the error when it fails.
    fn run(&self, what: &str, cmd: &mut Command) -> Result<(), EmbeddedError> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| EmbeddedError::io(format!("running {what}"), e))?;
        if out.status.success() {
            return Ok(());
        }
        Err(EmbeddedError::Command {
            what: what.to_owned(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            hint: self.run_as.hint(&self.data_dir),
        })
    }
}

/// A port nothing listens on now.
fn free_port() -> Result<u16, EmbeddedError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EmbeddedError::io("finding a free port", e))
}

/// 32 random bytes, hex.
fn new_password() -> Result<String, EmbeddedError> {
    let bytes: [u8; 32] = crate::rng::random_array(&crate::rng::OsSecretSource)
        .map_err(|e| EmbeddedError::io("generating a password", std::io::Error::other(e.0)))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
