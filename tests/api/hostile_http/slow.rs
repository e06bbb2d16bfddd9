//! Slow and stuck requests: statements held on a row lock, the request timeout, and the drain
//! of a request in flight at shutdown.

use std::time::{Duration, Instant};

use latchkey::db::StatementTimeouts;
use latchkey::SessionKind;
use reqwest::StatusCode;
use sqlx::{Connection, PgConnection};
use tokio::io::AsyncWriteExt;

use super::raw::{connect, read_response};
use crate::helpers::{spawn_app_with, AppOptions, TestApp};

/// Holds `SELECT … FOR UPDATE` on one session row in a transaction of its own.
async fn lock_session(app: &TestApp, id: uuid::Uuid) -> PgConnection {
    let mut conn = PgConnection::connect_with(&app.db.options)
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("SELECT id FROM latchkey.sessions WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut conn)
        .await
        .expect("lock the row");
    conn
}

/// `POST /auth/refresh` answered within `limit`: status, `Retry-After`, content type, body.
async fn timed_refresh(app: &TestApp, token: &str, limit: Duration) -> reqwest::Response {
    app.client
        .post(app.url("/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": token }))
        .timeout(limit)
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer within {limit:?}: {e}"))
}

/// Asserts a 503 `unavailable` problem with `Retry-After`.
async fn assert_unavailable(res: reqwest::Response) {
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"), "no Retry-After");
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = res.json().await.expect("problem body");
    assert_eq!(body["code"], "unavailable");
}

/// A refresh whose UPDATE waits on a row lock held elsewhere answers 503 within `within`, and
/// refreshes again once the lock is released.
async fn stuck_refresh_answers_503(timeouts: StatementTimeouts, within: Duration) {
    let opts = AppOptions {
        statement_timeouts: Some(timeouts),
        ..AppOptions::default()
    };
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let mut lock = lock_session(&app, login.session_id()).await;
    let started = Instant::now();
    let res = timed_refresh(&app, &login.refresh_token(), Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_unavailable(res).await;
    assert!(took < within, "took {took:?}");
    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("release");
    let after = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(after.status, StatusCode::OK, "{:?}", after.body);
}

#[tokio::test]
async fn a_refresh_stuck_on_a_row_lock_answers_503_within_the_lock_timeout_and_recovers() {
    let timeouts = StatementTimeouts {
        statement: Duration::from_secs(5),
        lock: Duration::from_millis(500),
    };
    stuck_refresh_answers_503(timeouts, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_refresh_stuck_past_the_statement_timeout_answers_503_and_recovers() {
    let timeouts = StatementTimeouts {
        statement: Duration::from_millis(500),
        lock: Duration::ZERO,
    };
    stuck_refresh_answers_503(timeouts, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_request_past_the_request_timeout_answers_503_problem_with_retry_after() {
    // The service's statements have no timeout here: only the request timeout ends the wait.
    let mut opts = AppOptions::default();
    opts.settings.server.request_timeout = Duration::from_secs(1);
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let mut lock = lock_session(&app, login.session_id()).await;
    let started = Instant::now();
    let res = timed_refresh(&app, &login.refresh_token(), Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_unavailable(res).await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("release");
    // The abandoned rotation may have gone through: the token is then inside its grace.
    let after = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(after.status, StatusCode::OK, "{:?}", after.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shutdown_drains_the_request_in_flight_and_accepts_no_new_connection() {
    let mut app = spawn_app_with(AppOptions::default()).await;
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let mut lock = lock_session(&app, login.session_id()).await;
    let mut stream = connect(&app.base).await;
    let body = serde_json::json!({ "refresh_token": login.refresh_token() }).to_string();
    let req = format!(
        "POST /auth/refresh HTTP/1.1\r\nHost: latchkey.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.shut_down();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://")).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted after shutdown"
    );
    assert!(
        !app.served.is_finished(),
        "the server ended before its request"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("release");
    let res = tokio::time::timeout(Duration::from_secs(5), read_response(&mut stream))
        .await
        .expect("the request in flight is answered")
        .expect("response");
    assert_eq!(res.status, 200, "{:?}", res.json());
    tokio::time::timeout(Duration::from_secs(5), &mut app.served)
        .await
        .expect("the server ends once drained")
        .expect("task")
        .expect("served");
}
