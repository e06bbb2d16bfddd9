//! The embedded default database: with no `DATABASE_URL` and nothing usable on
//! 127.0.0.1:5432, or with `--data-dir`, the commands run a private PostgreSQL cluster in a
//! data directory of their own, made with the installed PostgreSQL programs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use latchkey::embedded::{choose, default_data_dir, Choice, Cluster, ClusterOptions, Released};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// A latchkey data directory under `target/tmp`; dropped (even when the test fails), the
/// cluster running from it is stopped and the directory removed.
pub(crate) struct TempDataDir(pub(crate) PathBuf);

impl TempDataDir {
    pub(crate) fn new() -> Self {
        Self(
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("embedded-{}", uuid::Uuid::new_v4().simple())),
        )
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }

    fn running_port(&self) -> Option<u16> {
        Cluster::running_port(&self.0).expect("postmaster.pid")
    }
}

impl Drop for TempDataDir {
    fn drop(&mut self) {
        let _ = Cluster::stop(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The effective user is root (as in containers and CI).
fn root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    out.stdout.trim_ascii() == b"0"
}

/// `latchkey ARGS` with no DATABASE_URL, logging at `info` without colour.
fn latchkey(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("LATCHKEY_DATA_DIR")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs a command with `stdin`; its output.
fn run(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn latchkey");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A cluster in `dir`, started by this test process (with the library, as the harness does).
async fn start_cluster(dir: &TempDataDir) -> Cluster {
    let options = ClusterOptions::new(&dir.0);
    tokio::task::spawn_blocking(move || Cluster::start(&options))
        .await
        .expect("join")
        .expect("start")
}

async fn release(cluster: Cluster) -> Released {
    tokio::task::spawn_blocking(move || cluster.release())
        .await
        .expect("join")
        .expect("release")
}

/// `latchkey serve --data-dir DIR` on a free port; killed on drop if still running.
struct Serve {
    child: Option<Child>,
    lines: Receiver<String>,
    /// Its log lines so far.
    seen: Vec<String>,
    /// `host:port` it listens on.
    addr: String,
}

impl Serve {
    fn start(dir: &Path) -> Self {
        let mut child = latchkey(&[
            "serve",
            "--data-dir",
            dir.to_str().expect("utf-8 path"),
            "--bind",
            "127.0.0.1:0",
            "--cookie-secure",
            "false",
        ])
        .env("LATCHKEY_JWT_SECRET", crate::helpers::random_jwt_secret())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut serve = Self {
            child: Some(child),
            lines,
            seen: Vec::new(),
            addr: String::new(),
        };
        while let Ok(line) = serve.lines.recv_timeout(Duration::from_secs(120)) {
            serve.seen.push(line.clone());
            if let Some(rest) = line.split("addr=").nth(1) {
                serve.addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return serve;
            }
        }
        panic!("serve did not listen: {:#?}", serve.seen);
    }

    /// SIGTERM; its exit status and every log line.
    fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("running");
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = child.wait().expect("wait");
        let mut seen = std::mem::take(&mut self.seen);
        seen.extend(std::iter::from_fn(|| {
            self.lines.recv_timeout(Duration::from_secs(10)).ok()
        }));
        (status, seen)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn serve_with_a_new_data_dir_creates_a_cluster_answers_readyz_and_stops_it_on_sigterm() {
    let dir = TempDataDir::new();
    let path = dir.0.clone();
    let serve = tokio::task::spawn_blocking(move || Serve::start(&path))
        .await
        .expect("join");
    // The first log line says where the data lives, and that it is new.
    let first = &serve.seen[0];
    assert!(
        first.contains(&format!("embedded PostgreSQL in {}", dir.path()))
            && first.contains("new data directory"),
        "{first}"
    );

    let ready = reqwest::get(format!("http://{}/readyz", serve.addr))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(dir.running_port().is_some(), "the cluster runs");
    if root() {
        // PostgreSQL refuses root: the cluster belongs to the `postgres` user.
        let owner = std::fs::metadata(dir.0.join("pgdata"))
            .expect("pgdata")
            .uid();
        assert_ne!(owner, 0, "the cluster's files belong to root");
    }

    let (status, lines) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .expect("join");
    assert!(status.success(), "exit status {status:?}: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("embedded PostgreSQL stopped")),
        "{lines:#?}"
    );
    assert_eq!(dir.running_port(), None, "serve stopped its cluster");
}

#[tokio::test]
async fn a_second_start_on_the_same_data_dir_keeps_its_data_and_says_it_reused_it() {
    let dir = TempDataDir::new();
    let migrated = run(latchkey(&["migrate", "--data-dir", dir.path()]), "");
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    assert!(
        stderr(&migrated).contains("new data directory"),
        "{}",
        stderr(&migrated)
    );
    assert_eq!(
        dir.running_port(),
        None,
        "migrate stopped the cluster it started"
    );

    let added = run(
        latchkey(&[
            "user",
            "add",
            "--email",
            "kept@example.com",
            "--password-stdin",
            "--data-dir",
            dir.path(),
        ]),
        "correct horse battery staple\n",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(
        stderr(&added).contains(&format!(
            "embedded PostgreSQL in {} (reusing this data directory",
            dir.path()
        )),
        "{}",
        stderr(&added)
    );

    let path = dir.0.clone();
    let serve = tokio::task::spawn_blocking(move || Serve::start(&path))
        .await
        .expect("join");
    assert!(
        serve.seen[0].contains("reusing this data directory"),
        "{:#?}",
        serve.seen
    );
    // The account added while serve was not running is there.
    let login = reqwest::Client::new()
        .post(format!("http://{}/auth/login", serve.addr))
        .json(&json!({
            "email": "kept@example.com",
            "password": "correct horse battery staple",
            "mode": "stateless",
        }))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
    let (status, lines) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .expect("join");
    assert!(status.success(), "{lines:#?}");
    assert_eq!(dir.running_port(), None);
}

#[tokio::test]
async fn a_cluster_already_running_is_reused_and_left_running_for_its_other_user() {
    let dir = TempDataDir::new();
    let cluster = start_cluster(&dir).await;
    assert!(cluster.created() && cluster.started());

    let migrated = run(latchkey(&["migrate", "--data-dir", dir.path()]), "");
    let err = stderr(&migrated);
    assert!(migrated.status.success(), "{err}");
    assert!(err.contains("already running: reused"), "{err}");
    assert!(
        err.contains("left running: another latchkey process uses it"),
        "{err}"
    );
    assert_eq!(dir.running_port(), Some(cluster.port()));
    let mut conn = PgConnection::connect_with(&cluster.connect_options().database("latchkey"))
        .await
        .expect("the cluster still serves");
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey._sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("migrations");
    assert!(migrations > 0);
    conn.close().await.ok();

    let released = release(cluster).await;
    assert_eq!(released, Released::Stopped, "the last user stops it");
    assert_eq!(dir.running_port(), None);
}

#[tokio::test]
async fn the_embedded_cluster_listens_on_loopback_only_and_asks_every_connection_for_its_password()
{
    let dir = TempDataDir::new();
    let cluster = start_cluster(&dir).await;
    let good = cluster.connect_options();

    let mut conn = PgConnection::connect_with(&good)
        .await
        .expect("with the password");
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await
        .expect("show");
    assert_eq!(listen, "127.0.0.1");
    let sockets: String = sqlx::query_scalar("SHOW unix_socket_directories")
        .fetch_one(&mut conn)
        .await
        .expect("show");
    assert_eq!(sockets, "", "no Unix socket");
    conn.close().await.ok();

    for (what, options) in [
        ("no password", good.clone().password("")),
        ("a wrong password", good.clone().password("postgres")),
    ] {
        let refused = PgConnection::connect_with(&options.disable_statement_logging()).await;
        let err = refused.err().unwrap_or_else(|| panic!("{what} was let in"));
        assert!(err.to_string().contains("password"), "{what}: {err}");
    }
    let mode = std::fs::metadata(dir.0.join("password"))
        .expect("password file")
        .mode();
    assert_eq!(mode & 0o077, 0, "the password file is private: {mode:o}");

    let released = release(cluster).await;
    assert_eq!(released, Released::Stopped);
}

#[test]
fn without_postgresql_programs_serve_exits_1_saying_how_to_get_them() {
    let dir = TempDataDir::new();
    let empty = TempDataDir::new();
    std::fs::create_dir_all(&empty.0).expect("empty dir");
    let out = run(
        {
            let mut cmd = latchkey(&["serve", "--data-dir", dir.path()]);
            cmd.env("LATCHKEY_PG_BINDIR", &empty.0);
            cmd
        },
        "",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in [
        "no PostgreSQL server programs",
        &format!("LATCHKEY_PG_BINDIR={}", empty.path()),
        "sudo apt install postgresql",
        "brew install postgresql@15",
        "set DATABASE_URL",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    assert!(!dir.0.join("pgdata").exists(), "nothing was created");
}

#[test]
fn a_data_dir_that_is_a_postgresql_data_directory_itself_is_refused() {
    let dir = TempDataDir::new();
    std::fs::create_dir_all(&dir.0).expect("dir");
    std::fs::write(dir.0.join("PG_VERSION"), "15\n").expect("PG_VERSION");
    let out = run(latchkey(&["migrate", "--data-dir", dir.path()]), "");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("it is a PostgreSQL data directory itself"),
        "{err}"
    );
    assert!(!dir.0.join("pgdata").exists(), "nothing was created");
}

#[tokio::test]
async fn the_database_is_the_url_given_else_the_data_dir_else_the_local_server_else_the_embedded_default(
) {
    let given = "postgres://someone@db.example:5432/app";
    let dir = Path::new("/srv/latchkey");
    // Nothing listens on a port just freed.
    let nothing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!(
            "postgres://postgres@127.0.0.1:{}/latchkey",
            l.local_addr().expect("addr").port()
        )
    };
    assert_eq!(
        choose(Some(given), Some(dir), &nothing)
            .await
            .expect("choose"),
        Choice::Url(given.to_owned())
    );
    assert_eq!(
        choose(None, Some(dir), &nothing).await.expect("choose"),
        Choice::Embedded {
            data_dir: dir.to_owned(),
            why: "--data-dir given".to_owned()
        }
    );
    // A server that accepts the connection is used.
    let usable = crate::helpers::server().url_of("latchkey");
    assert_eq!(
        choose(None, None, &usable).await.expect("choose"),
        Choice::Url(usable.clone())
    );
    // Nothing on the default: the embedded cluster in the default directory, saying why.
    match choose(None, None, &nothing).await.expect("choose") {
        Choice::Embedded { data_dir, why } => {
            assert_eq!(data_dir, default_data_dir().expect("default dir"));
            assert!(why.starts_with("no DATABASE_URL, and 127.0.0.1:"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Something that is not PostgreSQL (it hangs up at once) is not usable either.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hangs_up = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let not_postgres = format!("postgres://postgres@127.0.0.1:{port}/latchkey");
    assert!(matches!(
        choose(None, None, &not_postgres).await.expect("choose"),
        Choice::Embedded { .. }
    ));
    hangs_up.abort();
}

#[test]
fn run_by_an_ordinary_user_latchkey_runs_the_programs_itself() {
    // Run by an ordinary user, every test above takes this path already. Run by root, they
    // ran the programs as `postgres` (runuser); here root runs latchkey itself as `postgres`,
    // so that both paths are taken on one machine.
    if !root() {
        return;
    }
    let dir = TempDataDir::new();
    std::fs::create_dir_all(&dir.0).expect("dir");
    let chowned = Command::new("chown")
        .args(["postgres:", dir.path()])
        .status()
        .expect("chown");
    assert!(chowned.success());
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", "env", "-u", "DATABASE_URL"])
        .args([
            "RUST_LOG=info",
            "NO_COLOR=1",
            env!("CARGO_BIN_EXE_latchkey"),
        ])
        .args(["migrate", "--data-dir", dir.path()]);
    let out = run(cmd, "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("embedded PostgreSQL stopped"),
        "{}",
        stderr(&out)
    );
    let owner = std::fs::metadata(dir.0.join("pgdata"))
        .expect("pgdata")
        .uid();
    let postgres = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    assert_eq!(
        owner.to_string(),
        String::from_utf8_lossy(&postgres.stdout).trim(),
        "the cluster belongs to the user that ran latchkey"
    );
}
