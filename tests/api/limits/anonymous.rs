//! `POST /auth/anonymous` is a token bucket per client ip.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use latchkey::limits::RateLimit;
use reqwest::StatusCode;
use tokio::sync::Barrier;

use super::{client_from, expect_rate_limited, mint};
use crate::helpers::{spawn_app_with, AppOptions, TestApp};

fn limit(per_minute: u32, burst: u32) -> AppOptions {
    let mut opts = AppOptions::default();
    opts.settings.anonymous_limit = RateLimit {
        per_minute: NonZeroU32::new(per_minute).expect("nonzero"),
        burst: NonZeroU32::new(burst).expect("nonzero"),
    };
    opts
}

/// Rows written for anonymous sessions: sessions and their audit events.
async fn anonymous_rows(app: &TestApp) -> (i64, i64) {
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions WHERE owner_key LIKE 'anon:%'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count sessions");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey.session_events")
        .fetch_one(&app.db.pool)
        .await
        .expect("count events");
    (sessions, events)
}

#[tokio::test]
async fn one_ip_racing_past_its_anonymous_bucket_gets_429_with_the_real_wait_and_writes_nothing_while_another_ip_mints(
) {
    // A bucket of 5, refilled by one a minute.
    let app = Arc::new(spawn_app_with(limit(1, 5)).await);
    let attacker = client_from("127.0.0.1");
    let (_, events_before) = anonymous_rows(&app).await;

    let barrier = Arc::new(Barrier::new(40));
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (app, client, barrier) = (app.clone(), attacker.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .post(app.url("/auth/anonymous"))
                    .json(&serde_json::json!({ "mode": "stateless" }))
                    .send()
                    .await
                    .expect("anonymous")
            })
        })
        .collect();
    let (mut minted, mut refused) = (0, 0);
    for task in tasks {
        let res = task.await.expect("task");
        if res.status() == StatusCode::OK {
            minted += 1;
        } else {
            let wait = expect_rate_limited(res, "anonymous").await;
            // The real wait for the next token (about a minute), not a fixed default.
            assert!((30..=60).contains(&wait), "Retry-After {wait}");
            refused += 1;
        }
    }
    assert_eq!((minted, refused), (5, 35));
    let (sessions, events) = anonymous_rows(&app).await;
    assert_eq!(sessions, 5, "a refused request writes no session");
    assert_eq!(
        events - events_before,
        5,
        "a refused request writes no event"
    );

    // Another ip, at the same moment, has its own bucket; the first stays empty.
    let other = mint(&app, &client_from("127.0.0.2")).await;
    assert_eq!(other.status, StatusCode::OK);
    let again = attacker
        .post(app.url("/auth/anonymous"))
        .json(&serde_json::json!({ "mode": "stateful" }))
        .send()
        .await
        .expect("anonymous");
    expect_rate_limited(again, "anonymous").await;
    assert_eq!(anonymous_rows(&app).await.0, 6);
}

#[tokio::test]
async fn an_ip_that_waited_its_retry_after_can_mint_again() {
    // A bucket of 2, refilled by one every 3 s.
    let app = spawn_app_with(limit(20, 2)).await;
    let client = client_from("127.0.0.3");
    for _ in 0..2 {
        assert_eq!(mint(&app, &client).await.status, StatusCode::OK);
    }
    let refused = client
        .post(app.url("/auth/anonymous"))
        .json(&serde_json::json!({ "mode": "stateless" }))
        .send()
        .await
        .expect("anonymous");
    let wait = expect_rate_limited(refused, "anonymous").await;
    assert!((1..=3).contains(&wait), "Retry-After {wait}");

    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(mint(&app, &client).await.status, StatusCode::OK);
    // One token came back, not the whole bucket.
    assert_eq!(
        mint(&app, &client).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(anonymous_rows(&app).await.0, 3);
}
