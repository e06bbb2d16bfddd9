//! Faults: an RNG that fails and a database that goes away answer 503 with Retry-After, never
//! a panic, and the service recovers by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use latchkey::rng::{OsSecretSource, RngError, SecretSource};
use latchkey::SessionKind;
use reqwest::StatusCode;

use crate::helpers::{decode, spawn_app_with, AppOptions, Tokens};

/// The OS RNG, until told to fail.
#[derive(Default)]
struct SwitchableRng {
    failing: AtomicBool,
}

impl SecretSource for SwitchableRng {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RngError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(RngError("injected entropy failure".into()))
        } else {
            OsSecretSource.fill(buf)
        }
    }
}

fn assert_unavailable(t: &Tokens, what: &str) {
    assert_eq!(
        t.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {:?}",
        t.body
    );
    assert_eq!(t.code(), "unavailable", "{what}");
}

#[tokio::test]
async fn an_rng_failure_answers_503_with_retry_after_and_issues_nothing() {
    let rng = Arc::new(SwitchableRng::default());
    let app = spawn_app_with(AppOptions {
        rng: rng.clone(),
        ..AppOptions::default()
    })
    .await;
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK);

    rng.failing.store(true, Ordering::SeqCst);
    let res = app
        .client
        .post(app.url("/auth/login"))
        .json(&serde_json::json!({"email": app.user.email, "password": crate::helpers::PASSWORD, "mode": "stateful"}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.headers().get("retry-after").map(|v| v.to_str().ok()),
        Some(Some("2"))
    );
    assert_unavailable(&decode(res).await, "login");
    let refresh = app.refresh_json(&login.refresh_token()).await;
    assert_unavailable(&refresh, "refresh");
    assert_eq!(
        app.version_of(login.session_id()).await,
        1,
        "nothing rotated"
    );
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(sessions, 1, "no session issued while the RNG fails");

    rng.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        app.refresh_json(&login.refresh_token()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn with_the_database_unreachable_readyz_and_refresh_answer_503_then_recover_without_restart()
{
    let proxy = crate::proxy::start().await;
    let app = spawn_app_with(AppOptions {
        connect_port: Some(proxy.port),
        ..AppOptions::default()
    })
    .await;
    let login = app.login(SessionKind::Stateless).await;
    assert_eq!(login.status, StatusCode::OK);
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);

    proxy.cut();
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.headers().contains_key("retry-after"));
    let res = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&serde_json::json!({"refresh_token": login.refresh_token()}))
        .send()
        .await
        .expect("refresh");
    assert!(res.headers().contains_key("retry-after"));
    assert_unavailable(&decode(res).await, "refresh while down");
    assert_unavailable(&app.login(SessionKind::Stateless).await, "login while down");
    // Liveness does not depend on the database.
    let live = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(live.status(), StatusCode::OK);

    proxy.restore();
    let mut recovered = false;
    for _ in 0..50 {
        let ready = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if ready.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "readyz recovers once the database is back");
    // The refresh that failed committed nothing: the same token still rotates.
    let refresh = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(refresh.status, StatusCode::OK, "{:?}", refresh.body);
    assert_eq!(app.version_of(login.session_id()).await, 2);
}
