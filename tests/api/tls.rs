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

/// `latchkey migrate` on `url`: (exit code, stderr).
fn migrate(url: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("LATCHKEY_DB_WAIT_SECS", "5")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run latchkey");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn sslmode_verify_full_trusts_the_servers_ca_and_fails_cleanly_with_a_wrong_one() {
    // A server whose certificate (for 127.0.0.1) a CA of this test signed.
    let dir = crate::embedded::TempDataDir::new();
    let tls = crate::helpers::test_certificate();
    let ca = dir.0.with_extension("ca.pem");
    let wrong_ca = dir.0.with_extension("wrong-ca.pem");
    std::fs::write(&ca, &tls.cert_pem).expect("write the CA");
    std::fs::write(&wrong_ca, crate::helpers::test_certificate().cert_pem).expect("write");
    let mut options = latchkey::embedded::ClusterOptions::new(&dir.0);
    options.tls = Some(tls);
    let cluster = tokio::task::spawn_blocking(move || latchkey::embedded::Cluster::start(&options))
        .await
        .expect("join")
        .expect("start a TLS cluster");
    let url = |root: &std::path::Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            cluster.url("latchkey"),
            root.display()
        )
    };

    let (code, err) = migrate(&url(&ca));
    assert_eq!(code, Some(0), "verify-full with the server's CA: {err}");
    let pool = latchkey::db::connect_lazy(&url(&ca), 1).expect("pool");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("query over verify-full");
    assert!(encrypted);
    pool.close().await;

    let (code, err) = migrate(&url(&wrong_ca));
    assert_eq!(code, Some(1), "a wrong CA fails with exit 1: {err}");
    assert!(
        err.starts_with("error: ") && err.contains("certificate") && err.lines().count() <= 3,
        "one clear line naming the certificate problem: {err}"
    );
    let _ = std::fs::remove_file(&ca);
    let _ = std::fs::remove_file(&wrong_ca);
    drop(cluster);
}
