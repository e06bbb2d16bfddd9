//! Finding the installed PostgreSQL server programs (`initdb`, `pg_ctl`, `postgres`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::EmbeddedError;

/// The environment variable that names the directory of the server programs, overriding the
/// search.
pub const BINDIR_VAR: &str = "LATCHKEY_PG_BINDIR";

/// Directories whose `<prefix><version>` children hold a `bin/` of server programs: Debian and
/// Ubuntu, the PGDG packages of Red Hat and Fedora, Homebrew (Apple silicon, then Intel).
const VERSIONED: &[(&str, &str)] = &[
    ("/usr/lib/postgresql", ""),
    ("/usr", "pgsql-"),
    ("/opt/homebrew/opt", "postgresql@"),
    ("/usr/local/opt", "postgresql@"),
];

/// The directory of one PostgreSQL installation's server programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    bindir: PathBuf,
}

impl Binaries {
    /// Finds the server programs: the directory in `LATCHKEY_PG_BINDIR` if set (and only
    /// there), else `pg_config --bindir`, else the newest of `/usr/lib/postgresql/*/bin`
    /// (and the other packagers' versioned directories), else the directory of an `initdb`
    /// on `PATH`.
    ///
    /// # Errors
    /// [`EmbeddedError::NoBinaries`], saying where it looked and how to install them.
    pub fn find() -> Result<Self, EmbeddedError> {
        Self::find_with(std::env::var_os(BINDIR_VAR), std::env::var_os("PATH"))
    }

    /// The programs in `bindir`, if all three are there.
    pub fn at(bindir: impl Into<PathBuf>) -> Option<Self> {
        let bindir = bindir.into();
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| bindir.join(p).is_file())
            .then_some(Self { bindir })
    }

    fn find_with(
        overridden: Option<OsString>,
        path: Option<OsString>,
    ) -> Result<Self, EmbeddedError> {
        if let Some(dir) = overridden {
            let dir = PathBuf::from(dir);
            return Self::at(&dir).ok_or_else(|| EmbeddedError::NoBinaries {
                looked: vec![format!("{BINDIR_VAR}={}", dir.display())],
            });
        }
        let mut looked = Vec::new();
        match pg_config_bindir() {
            Some(dir) => {
                looked.push(format!("`pg_config --bindir` ({})", dir.display()));
                if let Some(found) = Self::at(&dir) {
                    return Ok(found);
                }
            }
            None => looked.push("`pg_config --bindir` (no pg_config)".to_owned()),
        }
        for (parent, prefix) in VERSIONED {
            looked.push(format!("{parent}/{prefix}*/bin"));
            if let Some(found) = newest_versioned(parent, prefix) {
                return Ok(found);
            }
        }
        looked.push("initdb on PATH".to_owned());
        let on_path = path
            .iter()
            .flat_map(std::env::split_paths)
            .find_map(Self::at);
        on_path.ok_or(EmbeddedError::NoBinaries { looked })
    }

    /// The directory.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The path of one of the programs, e.g. `pg_ctl`.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The major version of these programs (`pg_ctl --version`), e.g. `15`.
    ///
    /// # Errors
    /// When `pg_ctl` does not run or prints something else.
    pub fn major_version(&self) -> Result<u32, EmbeddedError> {
        let out = Command::new(self.program("pg_ctl"))
            .arg("--version")
            .output()
            .map_err(|e| EmbeddedError::io(format!("running {}", self.bindir.display()), e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "pg_ctl (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
        text.split(')')
            .nth(1)
            .and_then(|rest| rest.trim().split(['.', ' ']).next())
            .and_then(|major| major.parse().ok())
            .ok_or_else(|| EmbeddedError::Command {
                what: format!("{} --version", self.program("pg_ctl").display()),
                output: text.into_owned(),
                hint: String::new(),
            })
    }
}

/// What `pg_config --bindir` prints, if pg_config runs.
fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !dir.trim().is_empty()).then(|| PathBuf::from(dir.trim()))
}

/// The complete `<parent>/<prefix><version>/bin` of the highest version.
fn newest_versioned(parent: &str, prefix: &str) -> Option<Binaries> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(parent)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix(prefix)?;
            let parts: Option<Vec<u32>> = version.split('.').map(|p| p.parse().ok()).collect();
            Some((parts?, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find_map(|(_, bin)| Binaries::at(bin))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("latchkey-bin-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn install(bindir: &Path, programs: &[&str]) {
        std::fs::create_dir_all(bindir).expect("bindir");
        for p in programs {
            std::fs::write(bindir.join(p), "").expect("program");
        }
    }

    #[test]
    fn an_override_is_the_only_place_looked_at() {
        let dir = scratch();
        let err = Binaries::find_with(Some(dir.clone().into()), None)
            .expect_err("an empty directory has no programs");
        let text = err.to_string();
        assert!(
            text.contains(&format!("LATCHKEY_PG_BINDIR={}", dir.display())),
            "{text}"
        );
        install(&dir, &["initdb", "pg_ctl", "postgres"]);
        let found = Binaries::find_with(Some(dir.clone().into()), None).expect("found");
        assert_eq!(found.bindir(), dir);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_newest_complete_version_wins() {
        let parent = scratch();
        install(&parent.join("9.6/bin"), &["initdb", "pg_ctl", "postgres"]);
        install(&parent.join("15/bin"), &["initdb", "pg_ctl", "postgres"]);
        // The newest lacks its server: not a complete installation.
        install(&parent.join("17/bin"), &["initdb", "pg_ctl"]);
        install(&parent.join("notes/bin"), &["initdb", "pg_ctl", "postgres"]);
        let found = newest_versioned(parent.to_str().expect("utf-8"), "").expect("found");
        assert_eq!(found.bindir(), parent.join("15/bin"));
        std::fs::remove_dir_all(parent).ok();
    }
}
