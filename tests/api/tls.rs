//! TLS to PostgreSQL: `sslmode=require` in `DATABASE_URL` (what managed PostgreSQL services
//! demand) gives an encrypted connection, for the service's pool and for the command line.

use crate::helpers::{run_cli, TestDb};

/// The URL of `db` with `sslmode`.
fn with_sslmode(db: &TestDb, mode: &str) -> String {
    let url = db.url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode={mode}")
}

#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    let db = TestDb::new().await;
    // The server of this test must speak TLS (`ssl = on`), or nothing here is shown.
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&db.pool)
        .await
        .expect("show ssl");
    assert_eq!(ssl, "on", "the test server has ssl = off");

    let pool = latchkey::db::connect_lazy(&with_sslmode(&db, "require"), 1).expect("pool");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("query over sslmode=require");
    assert!(encrypted, "sslmode=require gave a plain connection");

    let plain = latchkey::db::connect_lazy(&with_sslmode(&db, "disable"), 1).expect("pool");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&plain)
            .await
            .expect("query over sslmode=disable");
    assert!(!encrypted);

    // The command line takes the same URL.
    let (ok, out, err) = run_cli(
        &with_sslmode(&db, "require"),
        &["sessions", "list", "--json"],
        None,
    );
    assert!(ok, "{out}{err}");
}
