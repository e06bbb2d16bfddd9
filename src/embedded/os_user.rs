//! Who runs the server programs. PostgreSQL refuses to run as root; under root (containers,
//! CI) they run as the unprivileged `postgres` system user that PostgreSQL's packages create,
//! through `runuser`, `setpriv` or `su`, and the cluster's files belong to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::EmbeddedError;

/// The system user the server runs as when latchkey runs as root.
pub const SERVER_USER: &str = "postgres";

/// How a program is run as another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Switch {
    Runuser(PathBuf),
    Setpriv(PathBuf),
    Su(PathBuf),
}

/// The operating-system user of the server programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// The user latchkey runs as (not root).
    Me,
    /// Root switches to an unprivileged user for every server program.
    User {
        name: String,
        uid: u32,
        gid: u32,
        switch: Switch,
    },
}

impl RunAs {
    /// `Me`, unless the effective user is root: then [`SERVER_USER`].
    pub(crate) fn detect() -> Result<Self, EmbeddedError> {
        if !is_root() {
            return Ok(Self::Me);
        }
        let name = SERVER_USER.to_owned();
        let no_user = || EmbeddedError::Root {
            reason: format!("there is no `{name}` system user to run it as"),
        };
        let uid = id(&["-u", &name]).map_err(|_| no_user())?;
        let gid = id(&["-g", &name]).map_err(|_| no_user())?;
        let switch = if let Some(p) = find_program("runuser") {
            Switch::Runuser(p)
        } else if let Some(p) = find_program("setpriv") {
            Switch::Setpriv(p)
        } else if let Some(p) = find_program("su") {
            Switch::Su(p)
        } else {
            return Err(EmbeddedError::Root {
                reason: "none of runuser, setpriv or su is installed to switch to it".to_owned(),
            });
        };
        Ok(Self::User {
            name,
            uid,
            gid,
            switch,
        })
    }

    /// A command that runs `program` as this user, in `/` (a directory every user may enter).
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut cmd = match self {
            Self::Me => Command::new(program),
            Self::User {
                name,
                uid,
                gid,
                switch,
            } => {
                let mut cmd;
                match switch {
                    Switch::Runuser(runuser) => {
                        cmd = Command::new(runuser);
                        cmd.args(["-u", name, "--"]).arg(program);
                    }
                    Switch::Setpriv(setpriv) => {
                        cmd = Command::new(setpriv);
                        cmd.arg(format!("--reuid={uid}"))
                            .arg(format!("--regid={gid}"))
                            .args(["--init-groups", "--"])
                            .arg(program);
                    }
                    Switch::Su(su) => {
                        // The arguments after the command reach it as "$0" "$@".
                        cmd = Command::new(su);
                        cmd.args(["-s", "/bin/sh", name, "-c", r#"exec "$0" "$@""#])
                            .arg(program);
                    }
                }
                cmd
            }
        };
        cmd.current_dir("/");
        cmd
    }

    /// Gives `path` to this user (nothing to do for `Me`).
    pub(crate) fn give(&self, path: &Path) -> Result<(), EmbeddedError> {
        match self {
            Self::Me => Ok(()),
            #[cfg(unix)]
            Self::User { uid, gid, name, .. } => {
                std::os::unix::fs::chown(path, Some(*uid), Some(*gid)).map_err(|e| {
                    EmbeddedError::io(format!("giving {} to `{name}`", path.display()), e)
                })
            }
            #[cfg(not(unix))]
            Self::User { .. } => Ok(()),
        }
    }

    /// What a failed server program should be read with, when it ran as another user.
    pub(crate) fn hint(&self, data_dir: &Path) -> String {
        match self {
            Self::Me => String::new(),
            Self::User { name, .. } => format!(
                "PostgreSQL refuses to run as root, so its programs run as the system user \
                 `{name}`: it must be able to enter every directory above {} (choose another \
                 --data-dir if it cannot, e.g. under /var/lib or /tmp)",
                data_dir.display()
            ),
        }
    }

    /// True when the server runs as a user other than latchkey's.
    pub(crate) fn switches(&self) -> bool {
        matches!(self, Self::User { .. })
    }
}

/// True when the effective user is root (`id -u` is 0).
pub(crate) fn is_root() -> bool {
    cfg!(unix) && id(&["-u"]).is_ok_and(|uid| uid == 0)
}

/// `id ARGS` as a number.
fn id(args: &[&str]) -> Result<u32, EmbeddedError> {
    let out = Command::new("id")
        .args(args)
        .output()
        .map_err(|e| EmbeddedError::io("running `id`", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .ok()
        .filter(|_| out.status.success())
        .ok_or_else(|| EmbeddedError::Command {
            what: format!("id {}", args.join(" ")),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
            hint: String::new(),
        })
}

/// `name` on `PATH`, or in the system directories a non-login root shell may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
