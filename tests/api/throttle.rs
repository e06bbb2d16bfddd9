//! Login throttling shared in PostgreSQL, the client address behind trusted proxies, and the
//! audit of failed logins.

use std::sync::Arc;
use std::time::Duration;

use latchkey::auth::throttle::ThrottleConfig;
use latchkey::store::{Backoff, ExpirePolicy, FailureKind, ThrottleKey};
use latchkey::SessionKind;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, AppOptions, TestApp, PASSWORD};

const A: &str = "198.51.100.10";
const B: &str = "203.0.113.20";

/// The test service trusting 127.0.0.1 as a proxy, with `free` failures per (account,
/// address) and a fixed back-off of `block` seconds.
fn options(free: u32, ip_free: u32, block: f64) -> AppOptions {
    let mut opts = AppOptions::default();
    opts.settings.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    opts.settings.throttle = ThrottleConfig {
        account_free_failures: free,
        ip_free_failures: ip_free,
        backoff_base_secs: block,
        backoff_max_secs: block,
        window_secs: 900.0,
    };
    opts
}

/// One login answer: status, problem code, `Retry-After`, session id if any.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    code: String,
    retry_after: Option<u64>,
    session_id: Option<Uuid>,
}

async fn send(app: &TestApp, xff: Option<&str>, body: serde_json::Value) -> Answer {
    let mut req = app.client.post(app.url("/auth/login")).json(&body);
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    let res = req.send().await.expect("login request");
    let status = res.status();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    Answer {
        status,
        code: body["code"].as_str().unwrap_or("").to_owned(),
        retry_after,
        session_id: body["session_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok()),
    }
}

async fn login_from(app: &TestApp, xff: Option<&str>, email: &str, password: &str) -> Answer {
    let body = json!({ "email": email, "password": password, "mode": SessionKind::Stateless });
    send(app, xff, body).await
}

#[tokio::test]
async fn a_hundred_wrong_passwords_from_one_address_are_refused_without_argon2_and_another_address_still_logs_in(
) {
    let app = spawn_app_with(options(5, 50, 6.0)).await;
    let email = app.user.email.clone();
    let hasher = app.state.auth.hasher();
    let mut first_refusal = None;
    let mut verified_at_refusal = 0;
    for i in 0..100 {
        let a = login_from(&app, Some(A), &email, "wrong password").await;
        match first_refusal {
            None if a.status == StatusCode::TOO_MANY_REQUESTS => {
                first_refusal = Some(i);
                verified_at_refusal = hasher.verifications();
            }
            None => assert_eq!(a.code, "invalid_credentials", "attempt {i}"),
            Some(_) => assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "attempt {i}"),
        }
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(a.code, "rate_limited");
            let secs = a.retry_after.expect("Retry-After on 429");
            assert!((1..=6).contains(&secs), "Retry-After {secs}");
        }
    }
    let first = first_refusal.expect("throttled at some point");
    assert!(first < 20, "first 429 at attempt {first}");
    assert_eq!(
        hasher.verifications(),
        verified_at_refusal,
        "no argon2 work once throttled"
    );

    let other = login_from(&app, Some(B), &email, PASSWORD).await;
    assert_eq!(other.status, StatusCode::OK, "the owner from elsewhere");

    let same = login_from(&app, Some(A), &email, PASSWORD).await;
    assert_eq!(same.status, StatusCode::TOO_MANY_REQUESTS);
    let wait = same.retry_after.expect("Retry-After");
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(300)).await;
    let after = login_from(&app, Some(A), &email, PASSWORD).await;
    assert_eq!(after.status, StatusCode::OK, "the back-off ended");
}

#[tokio::test]
async fn two_instances_share_the_failure_counters() {
    let one = spawn_app_with(options(3, 50, 30.0)).await;
    let two = one.spawn_peer(options(3, 50, 30.0)).await;
    let email = one.user.email.clone();
    for _ in 0..4 {
        let a = login_from(&one, Some(A), &email, "wrong password").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let before = two.state.auth.hasher().verifications();
    let on_two = login_from(&two, Some(A), &email, PASSWORD).await;
    assert_eq!(on_two.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(on_two.retry_after.is_some_and(|s| (1..=30).contains(&s)));
    assert_eq!(two.state.auth.hasher().verifications(), before);
}

#[tokio::test]
async fn an_unknown_email_is_throttled_exactly_like_a_known_one() {
    let app = spawn_app_with(options(3, 50, 30.0)).await;
    let known = app.user.email.clone();
    let mut sequences = Vec::new();
    for (email, ip) in [(known.as_str(), A), ("nobody@example.com", B)] {
        let mut seq = Vec::new();
        for _ in 0..7 {
            let a = login_from(&app, Some(ip), email, "wrong password").await;
            seq.push((a.status, a.code, a.retry_after.is_some()));
        }
        sequences.push(seq);
    }
    assert_eq!(sequences[0], sequences[1]);
    assert!(sequences[0]
        .iter()
        .any(|(s, _, _)| *s == StatusCode::TOO_MANY_REQUESTS));
}

async fn session_ip(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar::<_, String>("SELECT host(ip) FROM latchkey.sessions WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("session ip")
}

#[tokio::test]
async fn x_forwarded_for_counts_only_from_a_trusted_peer_and_only_its_right_most_untrusted_hop() {
    let plain = spawn_app().await;
    let email = plain.user.email.clone();
    let a = login_from(&plain, Some("203.0.113.7"), &email, PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK);
    let ip = session_ip(&plain, a.session_id.expect("session")).await;
    assert_eq!(ip, "127.0.0.1", "untrusted peer: its own address");

    let mut opts = options(5, 50, 1.0);
    opts.settings.http.trusted_proxies = vec![
        "127.0.0.1/32".parse().expect("cidr"),
        "10.0.0.0/8".parse().expect("cidr"),
    ];
    let proxied = spawn_app_with(opts).await;
    for (xff, expected) in [
        ("203.0.113.7", "203.0.113.7"),
        ("6.6.6.6, 203.0.113.7", "203.0.113.7"),
        ("6.6.6.6, 203.0.113.7, 10.1.2.3", "203.0.113.7"),
    ] {
        let a = login_from(&proxied, Some(xff), &email, PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK);
        let ip = session_ip(&proxied, a.session_id.expect("session")).await;
        assert_eq!(ip, expected, "X-Forwarded-For: {xff}");
    }
}

#[tokio::test]
async fn a_failure_is_audited_without_the_password_or_email_and_counted_in_metrics() {
    let app = spawn_app_with(options(1, 50, 30.0)).await;
    let email = app.user.email.clone();
    let secret_guess = "hunter2-guess";
    let a = login_from(&app, Some(A), &email, secret_guess).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let b = login_from(&app, Some(B), "ghost@example.com", secret_guess).await;
    assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    let c = login_from(&app, Some(A), &email, secret_guess).await;
    assert_eq!(c.status, StatusCode::UNAUTHORIZED);
    let d = login_from(&app, Some(A), &email, PASSWORD).await;
    assert_eq!(d.status, StatusCode::TOO_MANY_REQUESTS);

    let rows: Vec<(Option<String>, String, String, String)> = sqlx::query_as(
        "SELECT account, ip, kind, row_to_json(f)::text FROM latchkey.login_failures f ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("login_failures");
    // The refused attempt is counted, not stored: a blocked client cannot fill the table.
    assert_eq!(rows.len(), 3, "{rows:?}");
    let user = app.user.owner_key();
    assert_eq!(rows[0].0.as_deref(), Some(user.as_str()));
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), (A, "password"));
    let hashed = rows[1].0.as_deref().expect("account");
    assert!(hashed.starts_with("em:"), "{hashed}");
    assert_eq!((rows[1].1.as_str(), rows[1].2.as_str()), (B, "password"));
    assert!(rows.iter().all(|r| r.2 != "throttled"), "{rows:?}");
    for (_, _, _, json) in &rows {
        assert!(
            !json.contains(secret_guess) && !json.contains(PASSWORD),
            "{json}"
        );
        assert!(!json.contains("ghost") && !json.contains("alice"), "{json}");
    }

    let metrics = app.state.auth.metrics();
    assert_eq!(metrics.login_failures("password"), 3);
    assert_eq!(metrics.login_failures("throttled"), 1);
    let text = metrics.render();
    assert!(
        text.contains("latchkey_login_failures_total{kind=\"password\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn wrong_api_keys_count_against_the_address() {
    let app = spawn_app_with(options(5, 3, 30.0)).await;
    let email = app.user.email.clone();
    for key in ["lka_nonsense", "nope", "lka_AAAA", "lka_BBBB"] {
        let a = send(&app, Some(A), json!({ "api_key": key })).await;
        assert_eq!(a.code, "invalid_credentials");
    }
    let blocked = send(&app, Some(A), json!({ "api_key": "lka_CCCC" })).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    let password = login_from(&app, Some(A), &email, PASSWORD).await;
    assert_eq!(
        password.status,
        StatusCode::TOO_MANY_REQUESTS,
        "same address"
    );
    let elsewhere = login_from(&app, Some(B), &email, PASSWORD).await;
    assert_eq!(elsewhere.status, StatusCode::OK);
    assert_eq!(app.state.auth.metrics().login_failures("api_key"), 4);
}

#[tokio::test]
async fn a_successful_login_clears_its_counter_and_the_purge_drops_stale_rows() {
    let app = spawn_app_with(options(2, 50, 30.0)).await;
    let email = app.user.email.clone();
    for _ in 0..2 {
        login_from(&app, Some(A), &email, "wrong password").await;
    }
    assert_eq!(
        login_from(&app, Some(A), &email, PASSWORD).await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        let a = login_from(&app, Some(A), &email, "wrong password").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "the counter restarted");
    }

    let pool = &app.db.pool;
    sqlx::query("UPDATE latchkey.login_throttle SET expires_at = now() - interval '1 second', blocked_until = NULL WHERE ip = $1")
        .bind(A)
        .execute(pool)
        .await
        .expect("age counters");
    sqlx::query("UPDATE latchkey.login_failures SET occurred_at = now() - interval '100 days'")
        .execute(pool)
        .await
        .expect("age failures");
    let fresh = login_from(&app, Some(B), &email, "wrong password").await;
    assert_eq!(fresh.status, StatusCode::UNAUTHORIZED);
    let removed = app
        .state
        .auth
        .store()
        .purge_login_records(&ExpirePolicy {
            pause_ratio: 0.0,
            ..ExpirePolicy::default()
        })
        .await
        .expect("purge");
    // Two counters of A (account and address) and four old failures.
    assert_eq!(removed, 6);
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM latchkey.login_throttle), (SELECT count(*) FROM latchkey.login_failures)",
    )
    .fetch_one(pool)
    .await
    .expect("counts");
    assert_eq!(left, (2, 1), "B's counters and failure stay");
}

#[tokio::test]
async fn concurrent_failures_of_one_key_all_count() {
    let app = spawn_app().await;
    let store = app.state.auth.store().clone();
    let keys = vec![
        ThrottleKey {
            account: "em:racing".to_owned(),
            free: 5,
        },
        ThrottleKey {
            account: String::new(),
            free: 50,
        },
    ];
    let backoff = Backoff {
        base_secs: 1.0,
        max_secs: 900.0,
        window_secs: 900.0,
    };
    let barrier = Arc::new(Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, keys, barrier) = (store.clone(), keys.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .throttle_failed(A, &keys, &backoff, None, FailureKind::Password)
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("counted");
    }
    let counts: Vec<(String, i32, bool)> = sqlx::query_as(
        "SELECT account, failures, coalesce(blocked_until > now() + interval '60 seconds', false) \
         FROM latchkey.login_throttle WHERE ip = $1 ORDER BY account",
    )
    .bind(A)
    .fetch_all(&app.db.pool)
    .await
    .expect("counters");
    // 32 failures: the address is 0 s past its 50; the account 27 past its 5 (capped block).
    assert_eq!(
        counts,
        vec![
            (String::new(), 32, false),
            ("em:racing".to_owned(), 32, true)
        ]
    );
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey.login_failures")
        .fetch_one(&app.db.pool)
        .await
        .expect("audit");
    assert_eq!(audited, 32);
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_for_one_account_runs_no_more_checks_than_the_allowance() {
    for round in 0..3 {
        let app = spawn_app_with(options(5, 1000, 30.0)).await;
        let email = app.user.email.clone();
        let before = app.state.auth.hasher().verifications();
        let start = Arc::new(Barrier::new(40));
        let guesses = (0..40).map(|i| {
            let (client, url, email, start) = (
                app.client.clone(),
                app.url("/auth/login"),
                email.clone(),
                start.clone(),
            );
            tokio::spawn(async move {
                start.wait().await;
                client
                    .post(url)
                    .header("x-forwarded-for", A)
                    .json(&json!({"email": email, "password": format!("guess {i}"), "mode": "stateless"}))
                    .send()
                    .await
                    .expect("login")
                    .status()
            })
        });
        let statuses = futures::future::join_all(guesses).await;
        let refused = statuses
            .iter()
            .filter(|s| *s.as_ref().expect("join") == StatusCode::TOO_MANY_REQUESTS)
            .count();
        let checked = app.state.auth.hasher().verifications() - before;
        // At most MAX_IN_FLIGHT_PER_ACCOUNT (4) checks of the (account, address) at a time:
        // the sixth failure blocks the rest, so at most 5 + 4 guesses are ever checked.
        assert!(
            checked <= 9,
            "round {round}: {checked} password checks for 40 concurrent guesses ({refused} refused)"
        );
        assert_eq!(refused as u64 + checked, 40, "round {round}");
    }
}

#[tokio::test]
async fn an_ipv6_client_is_throttled_by_its_64_network_whatever_address_it_takes_in_it() {
    let app = spawn_app_with(options(3, 1000, 30.0)).await;
    let email = app.user.email.clone();
    let mut answers = Vec::new();
    for i in 1..=6 {
        let xff = format!("2001:db8:1:2::{i:x}");
        answers.push(login_from(&app, Some(&xff), &email, "wrong").await.status);
    }
    assert_eq!(
        answers[..3],
        [StatusCode::UNAUTHORIZED; 3],
        "three free failures: {answers:?}"
    );
    assert!(
        answers[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "new addresses in the same /64 are the same client: {answers:?}"
    );
    // Another /64 is another client.
    let other = login_from(&app, Some("2001:db8:1:3::1"), &email, PASSWORD).await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn a_counter_outlives_its_block_so_the_next_failure_after_it_counts_on() {
    let app = spawn_app().await;
    let fail = || async {
        sqlx::query_scalar::<_, Option<time::OffsetDateTime>>(
            "SELECT latchkey.latchkey_login_failed('em:test', '192.0.2.1', 0, 2, 2, 1)",
        )
        .fetch_one(&app.db.pool)
        .await
        .expect("latchkey_login_failed")
    };
    assert!(fail().await.is_some(), "blocked from the first failure");
    // The 2 s block ends; the 1 s window alone would have let the counter decay with it.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    fail().await;
    let failures: i32 = sqlx::query_scalar(
        "SELECT failures FROM latchkey.login_throttle WHERE account = 'em:test' AND ip = '192.0.2.1'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert_eq!(
        failures, 2,
        "the count went on after the block instead of restarting"
    );
}
