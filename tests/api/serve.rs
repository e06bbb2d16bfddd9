//! `latchkey serve` as an operator runs it: creates and migrates its database, serves, and
//! drains on SIGTERM.

use std::process::Command;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn serve_creates_its_database_migrates_serves_and_exits_cleanly_on_sigterm() {
    let name = format!("latchkey_test_{}", uuid::Uuid::new_v4().simple());
    let url = crate::helpers::server().url_of(&name);

    let secret = crate::helpers::random_jwt_secret();
    let (mut child, rx) = crate::helpers::spawn_serve(&url, &secret, &[]);
    let mut addr = None;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        seen.push(line.clone());
        if let Some(rest) = line.split("addr=").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no listening line in {seen:?}"));

    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("database was created");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('sessions', 'users', 'session_events')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count");
    assert_eq!(tables, 3, "migrated");
    conn.close().await.ok();

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    let rest: Vec<String> =
        std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(5)).ok()).collect();
    assert!(
        rest.iter().any(|l| l.contains("shut down cleanly")),
        "{rest:?}"
    );

    let mut admin = PgConnection::connect(&crate::helpers::server().url)
        .await
        .expect("admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop");
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
fn on_local_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (authority, path) = rest.split_once('/').expect("path");
    let credentials = authority
        .rsplit_once('@')
        .map_or(String::new(), |(c, _)| format!("{c}@"));
    format!("{scheme}://{credentials}127.0.0.1:{port}/{path}")
}

/// A local port on which nothing listens (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Lines of `rx` until one satisfies `found` (returned) or `within` passes (`None`); every
/// line read is pushed to `seen`.
fn read_until(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    within: Duration,
    found: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).ok()?;
        seen.push(line.clone());
        if found(&line) {
            return Some(line);
        }
    }
}

const RETRYING: &str = "PostgreSQL not reachable yet; trying again";

// Two workers: the test blocks one reading the log while the forwarder runs on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_before_postgresql_keeps_trying_and_is_ready_once_the_database_answers() {
    let db = crate::helpers::TestDb::new().await;
    let port = free_port();
    let url = on_local_port(&db.url(), port);
    let (mut child, rx) =
        crate::helpers::spawn_serve(&url, &crate::helpers::random_jwt_secret(), &[]);
    let mut seen = Vec::new();

    // Nothing listens yet: attempts fail, are logged, and the process keeps waiting.
    let began = std::time::Instant::now();
    for n in 1..=3 {
        read_until(&rx, &mut seen, Duration::from_secs(10), |l| {
            l.contains(RETRYING)
        })
        .unwrap_or_else(|| panic!("no failed attempt #{n} logged: {seen:?}"));
    }
    assert!(
        seen.iter()
            .filter(|l| l.contains(RETRYING))
            .all(|l| l.contains("attempt=") && l.contains("retry_in_ms=") && l.contains("refused")),
        "each attempt logged with its number, delay and cause: {seen:?}"
    );
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(began.elapsed())).await;
    assert!(child.try_wait().expect("try_wait").is_none(), "{seen:?}");

    // PostgreSQL "comes up" on that port.
    let _forwarder = crate::proxy::start_on(port).await;
    let listening = read_until(&rx, &mut seen, Duration::from_secs(30), |l| {
        l.contains("latchkey listening")
    })
    .unwrap_or_else(|| panic!("never listened after the database came: {seen:?}"));
    let addr = listening
        .split("addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("addr")
        .to_owned();
    assert!(
        seen.iter().any(|l| l.contains("PostgreSQL reached")),
        "{seen:?}"
    );
    let ready = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::OK);

    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn with_db_wait_secs_serve_gives_up_with_exit_1_and_a_clear_message() {
    let url = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port());
    let began = std::time::Instant::now();
    let (mut child, rx) = crate::helpers::spawn_serve(
        &url,
        &crate::helpers::random_jwt_secret(),
        &["--db-wait-secs", "2"],
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    let took = began.elapsed();
    let stderr = crate::helpers::all_lines(&rx);
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "gave up after {took:?}"
    );
    assert!(
        stderr.iter().filter(|l| l.contains(RETRYING)).count() >= 2,
        "it kept trying until the bound: {stderr:?}"
    );
    let last = stderr.last().expect("a message");
    assert!(
        last.starts_with("error: PostgreSQL still not reachable after")
            && last.contains("--db-wait-secs 2")
            && last.contains("refused"),
        "{stderr:?}"
    );
}

#[tokio::test]
async fn serve_does_not_wait_on_an_error_another_attempt_would_meet_again() {
    // The server answers, but refuses this role: waiting would not change that.
    let db = crate::helpers::TestDb::new().await;
    let base = db.url();
    let (scheme, rest) = base.split_once("://").expect("scheme");
    let (_, host_and_path) = rest.rsplit_once('@').unwrap_or(("", rest));
    let url = format!(
        "{scheme}://no_such_role_{}@{host_and_path}",
        uuid::Uuid::new_v4().simple()
    );
    let (mut child, rx) =
        crate::helpers::spawn_serve(&url, &crate::helpers::random_jwt_secret(), &[]);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    let stderr = crate::helpers::all_lines(&rx);
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    assert!(
        !stderr.iter().any(|l| l.contains(RETRYING)),
        "no second attempt: {stderr:?}"
    );
    assert!(
        stderr
            .last()
            .is_some_and(|l| l.starts_with("error: ") && l.contains("no_such_role_")),
        "{stderr:?}"
    );
}
