//! The files of a latchkey data directory (see [`super::cluster`]) and the server's
//! `postmaster.pid`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::EmbeddedError;

/// The cluster inside a latchkey data directory.
pub(crate) fn pgdata(data_dir: &Path) -> PathBuf {
    data_dir.join("pgdata")
}

/// Creates the directory (private, or enterable by everyone when `shared`: the server's user
/// is another) and returns its absolute path.
pub(crate) fn prepare_dir(dir: &Path, shared: bool) -> Result<PathBuf, EmbeddedError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| EmbeddedError::io(format!("creating {}", dir.display()), e))?;
        // The password file inside stays 0600 either way.
        set_mode(dir, if shared { 0o711 } else { 0o700 })?;
    }
    std::fs::canonicalize(dir)
        .map_err(|e| EmbeddedError::io(format!("reading {}", dir.display()), e))
}

/// Opens (creating) a lock file in the data directory.
pub(crate) fn lock_file(data_dir: &Path, name: &str) -> Result<File, EmbeddedError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join(name))
        .map_err(|e| EmbeddedError::io(format!("opening {name} in {}", data_dir.display()), e))
}

/// The password file's content, if the cluster was completely created.
pub(crate) fn read_password(data_dir: &Path) -> Result<Option<String>, EmbeddedError> {
    let path = data_dir.join("password");
    if !pgdata(data_dir).join("PG_VERSION").exists() {
        return Ok(None);
    }
    match std::fs::read_to_string(&path) {
        Ok(p) => Ok(Some(p.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EmbeddedError::io(format!("reading {}", path.display()), e)),
    }
}

/// Lines of `postmaster.pid`: 1 the pid, 4 the port, 8 the status (`ready`).
pub(crate) fn postmaster_lines(data_dir: &Path) -> Result<Option<Vec<String>>, EmbeddedError> {
    let path = pgdata(data_dir).join("postmaster.pid");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.lines().map(|l| l.trim().to_owned()).collect())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EmbeddedError::io(format!("reading {}", path.display()), e)),
    }
}

/// The pid of the server running from the directory, per `postmaster.pid`.
pub(crate) fn postmaster_pid(data_dir: &Path) -> Option<String> {
    postmaster_lines(data_dir).ok()??.into_iter().next()
}

/// The port of the server running from the directory, per `postmaster.pid`.
pub(crate) fn running_port(data_dir: &Path) -> Result<Option<u16>, EmbeddedError> {
    Ok(postmaster_lines(data_dir)?.and_then(|lines| lines.get(3)?.parse().ok()))
}

/// Waits (up to a minute) until `postmaster.pid` says the server accepts connections: one
/// started by someone else may still be recovering.
pub(crate) fn wait_ready(data_dir: &Path) -> Result<(), EmbeddedError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = postmaster_lines(data_dir)?.and_then(|l| l.get(7).cloned());
        if status.as_deref() == Some("ready") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(EmbeddedError::Command {
                what: "waiting for the server".to_owned(),
                output: format!("postmaster.pid status: {status:?}"),
                hint: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates a directory only its owner may enter.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), EmbeddedError> {
    std::fs::create_dir(dir)
        .map_err(|e| EmbeddedError::io(format!("creating {}", dir.display()), e))?;
    set_mode(dir, 0o700)
}

/// Writes `content` to a new file only its owner may read.
pub(crate) fn write_private(path: &Path, content: &str) -> Result<(), EmbeddedError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| EmbeddedError::io(format!("writing {}", path.display()), e))?;
    set_mode(path, 0o600)
}

/// Sets the permission bits (Unix).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), EmbeddedError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| EmbeddedError::io(format!("setting the mode of {}", path.display()), e))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}
