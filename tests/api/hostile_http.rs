//! The HTTP server against hostile connections: half-sent heads, idle keep-alive connections,
//! more connections than the cap, oversize bodies on reused connections, stuck statements,
//! slow requests, and `/metrics` kept off the API port. Real sockets throughout.

mod raw;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::db::StatementTimeouts;
use latchkey::SessionKind;
use reqwest::StatusCode;
use sqlx::{Connection, PgConnection};
use tokio::io::AsyncWriteExt;
use tokio::sync::Barrier;

use crate::helpers::{spawn_app_with, AppOptions, TestApp};
use raw::{closed_within, connect, get, read_response};

/// Options with the given header timeout.
fn with_header_timeout(secs: u64) -> AppOptions {
    let mut opts = AppOptions::default();
    opts.settings.server.header_timeout = Duration::from_secs(secs);
    opts
}

/// Polls `GET /healthz` on a new connection each time until `stop`; returns the slowest.
async fn poll_health(app: Arc<TestApp>, stop: Arc<AtomicBool>) -> Duration {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut slowest = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let res = client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(res.status(), StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slowest
}

/// Refreshes a stateless chain until `stop`; every answer must be 200. Returns the last
/// access token and the number of refreshes.
async fn refresh_chain(app: Arc<TestApp>, stop: Arc<AtomicBool>) -> (String, usize) {
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let (mut token, mut access, mut n) = (login.refresh_token(), login.access_token(), 0);
    while !stop.load(Ordering::SeqCst) {
        let next = app.refresh_json(&token).await;
        assert_eq!(next.status, StatusCode::OK, "refresh {n}: {:?}", next.body);
        (token, access, n) = (next.refresh_token(), next.access_token(), n + 1);
    }
    (access, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_half_sent_heads_are_closed_by_the_header_timeout_while_health_and_refreshes_carry_on(
) {
    const HANGING: usize = 300;
    let app = Arc::new(spawn_app_with(with_header_timeout(2)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let health = tokio::spawn(poll_health(app.clone(), stop.clone()));
    let chains: Vec<_> = (0..4)
        .map(|_| tokio::spawn(refresh_chain(app.clone(), stop.clone())))
        .collect();
    let barrier = Arc::new(Barrier::new(HANGING));
    let hanging: Vec<_> = (0..HANGING)
        .map(|_| {
            let (base, barrier) = (app.base.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut stream = connect(&base).await;
                // The server's timer starts at the accept.
                let accepted = Instant::now();
                barrier.wait().await;
                stream
                    .write_all(b"POST /auth/refresh HTTP/1.1\r\nHost: latchkey.test\r\nContent-Ty")
                    .await
                    .expect("half a head");
                closed_within(&mut stream, Duration::from_secs(6))
                    .await
                    .map(|_| accepted.elapsed())
            })
        })
        .collect();
    for (i, task) in hanging.into_iter().enumerate() {
        let closed = task.await.expect("task");
        let closed = closed.unwrap_or_else(|| panic!("connection {i} still open after 6 s"));
        assert!(
            closed >= Duration::from_millis(1500),
            "closed early: {closed:?}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let slowest = health.await.expect("health task");
    assert!(slowest < Duration::from_secs(1), "healthz took {slowest:?}");
    for chain in chains {
        let (access, n) = chain.await.expect("chain task");
        assert!(n > 0, "a chain made no progress");
        assert_eq!(app.whoami_bearer(&access).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(with_header_timeout(1)).await;
    let mut stream = connect(&app.base).await;
    let first = get(&mut stream, "/healthz").await.expect("first request");
    assert_eq!(first.status, 200);
    assert_ne!(first.header("connection"), Some("close"));
    let closed = closed_within(&mut stream, Duration::from_secs(4))
        .await
        .expect("the idle connection is still open after 4 s");
    assert!(
        closed >= Duration::from_millis(800),
        "closed before the timeout: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_body_on_a_reused_keep_alive_connection_gets_its_413_problem() {
    let app = spawn_app_with(AppOptions::default()).await;
    let body = Arc::new(vec![b'x'; 4 * 1024 * 1024]);
    for round in 0..5 {
        let mut stream = connect(&app.base).await;
        let health = get(&mut stream, "/healthz").await.expect("healthz");
        assert_eq!(health.status, 200, "round {round}");
        let head = format!(
            "POST /auth/refresh HTTP/1.1\r\nHost: latchkey.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (reader, mut writer) = stream.into_split();
        let body = body.clone();
        let sender = tokio::spawn(async move {
            let _ = writer.write_all(head.as_bytes()).await;
            let _ = writer.write_all(&body).await;
            writer
        });
        let writer = tokio::time::timeout(Duration::from_secs(20), sender)
            .await
            .expect("the body was neither read nor refused")
            .expect("sender");
        let mut stream = reader.reunite(writer).expect("same stream");
        let res = read_response(&mut stream)
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer, {e}"));
        assert_eq!(res.status, 413, "round {round}");
        assert_eq!(res.header("content-type"), Some("application/problem+json"));
        assert_eq!(res.json()["code"], "bad_request", "round {round}");
        // Read to its end, the body leaves the connection usable.
        let again = get(&mut stream, "/healthz")
            .await
            .expect("healthz after 413");
        assert_eq!(again.status, 200, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_wait_and_the_service_answers_once_the_excess_close() {
    const CAP: usize = 20;
    let mut opts = with_header_timeout(60);
    opts.settings.server.max_open_connections = CAP;
    let app = spawn_app_with(opts).await;
    let mut held = Vec::new();
    for i in 0..CAP {
        let mut stream = connect(&app.base).await;
        let res = get(&mut stream, "/healthz").await.expect("within the cap");
        assert_eq!(res.status, 200, "connection {i}");
        held.push(stream);
    }
    let mut excess = Vec::new();
    for _ in 0..CAP {
        excess.push(connect(&app.base).await);
    }
    let waiting = tokio::time::timeout(Duration::from_secs(1), get(&mut excess[0], "/healthz"));
    assert!(
        waiting.await.is_err(),
        "a connection past the cap was served"
    );
    for (i, stream) in held.iter_mut().enumerate() {
        let res = get(stream, "/healthz").await.expect("held connection");
        assert_eq!(res.status, 200, "held connection {i} still served");
    }
    drop(held);
    drop(excess);
    let res = tokio::time::timeout(Duration::from_secs(3), async {
        let mut stream = connect(&app.base).await;
        get(&mut stream, "/healthz").await
    })
    .await
    .expect("the service answers again once the excess closed")
    .expect("healthz");
    assert_eq!(res.status, 200);
}

/// Holds `SELECT … FOR UPDATE` on one session row in a transaction of its own.
async fn lock_session(app: &TestApp, id: uuid::Uuid) -> PgConnection {
    let mut conn = PgConnection::connect_with(&app.db.options)
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
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

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_not_on_the_api_port() {
    let mut opts = AppOptions::default();
    opts.settings.metrics_bind = Some("127.0.0.1:0".parse().expect("addr"));
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let metrics = app.metrics_base.clone().expect("metrics listener");
    let res = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res
        .text()
        .await
        .expect("text")
        .contains("latchkey_login_total{outcome=\"ok\"} 1"));
    let public = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("api /metrics");
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = public.json().await.expect("problem");
    assert_eq!(body["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_body_after_a_request_on_the_same_client_connection_gets_its_413() {
    let app = spawn_app_with(AppOptions::default()).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    for round in 0..5 {
        let health = client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), StatusCode::OK);
        let res = client
            .post(app.url("/auth/refresh"))
            .header("content-type", "application/json")
            .body(vec![b'x'; 4 * 1024 * 1024])
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "round {round}");
        let body: serde_json::Value = res.json().await.expect("problem");
        assert_eq!(body["code"], "bad_request");
    }
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
