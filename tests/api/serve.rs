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
