//! Logout, logout-all, listing and revoking sessions, Origin checks, health.

use latchkey::SessionKind;
use reqwest::StatusCode;

use crate::helpers::{decode, spawn_app, spawn_app_with, AppOptions, PASSWORD};

#[tokio::test]
async fn logout_with_a_bearer_token_revokes_the_session_and_its_refresh_token() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let res = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(login.access_token())
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.refresh_json(&login.refresh_token()).await.code(),
        "session_revoked"
    );
    assert_eq!(
        app.whoami_bearer(&login.access_token()).await.code(),
        "session_revoked"
    );
}

#[tokio::test]
async fn logout_with_the_cookie_needs_an_allowed_origin_and_clears_the_cookie() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateful).await;
    let cookie = login.cookie();
    let no_origin = app
        .client
        .post(app.url("/auth/logout"))
        .header("cookie", format!("{}={cookie}", app.cookie_name()))
        .send()
        .await
        .expect("logout");
    let no_origin = decode(no_origin).await;
    assert_eq!(no_origin.status, StatusCode::FORBIDDEN);
    assert_eq!(no_origin.code(), "origin_rejected");
    assert_eq!(
        app.whoami_cookie(&cookie).await.status,
        StatusCode::OK,
        "still logged in"
    );

    let res = app
        .client
        .post(app.url("/auth/logout"))
        .headers(app.cookie_headers(&cookie))
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(app.whoami_cookie(&cookie).await.code(), "session_revoked");
}

#[tokio::test]
async fn logout_all_revokes_every_session_of_the_owner_and_no_one_elses() {
    let app = spawn_app().await;
    let bob = app.add_user("bob@example.com", PASSWORD).await;
    let a1 = app.login(SessionKind::Stateless).await;
    let a2 = app.login(SessionKind::Stateful).await;
    let b1 = app
        .login_as(&bob.email, PASSWORD, SessionKind::Stateless)
        .await;
    let res = app
        .client
        .post(app.url("/auth/logout-all"))
        .bearer_auth(a1.access_token())
        .send()
        .await
        .expect("logout-all");
    let body = decode(res).await;
    assert_eq!(body.status, StatusCode::OK);
    assert_eq!(body.body["revoked"], 2);
    assert_eq!(
        app.refresh_json(&a1.refresh_token()).await.code(),
        "session_revoked"
    );
    assert_eq!(
        app.whoami_cookie(&a2.cookie()).await.code(),
        "session_revoked"
    );
    assert_eq!(
        app.refresh_json(&b1.refresh_token()).await.status,
        StatusCode::OK
    );
}

/// "Sign out other devices": `{"keep_current": true}` revokes every other session of the
/// owner and keeps the caller's, cookie included.
#[tokio::test]
async fn logout_all_keeping_the_current_session_revokes_only_the_others() {
    let app = spawn_app().await;
    let a1 = app.login(SessionKind::Stateful).await;
    let a2 = app.login(SessionKind::Stateless).await;
    let a3 = app.login(SessionKind::Stateful).await;
    let res = app
        .client
        .post(app.url("/auth/logout-all"))
        .headers(app.cookie_headers(&a1.cookie()))
        .json(&serde_json::json!({ "keep_current": true }))
        .send()
        .await
        .expect("logout-all");
    assert!(
        res.headers().get("set-cookie").is_none(),
        "the kept cookie was cleared"
    );
    let body = decode(res).await;
    assert_eq!(body.status, StatusCode::OK);
    assert_eq!(body.body["revoked"], 2);
    assert_eq!(app.whoami_cookie(&a1.cookie()).await.status, StatusCode::OK);
    assert_eq!(
        app.refresh_json(&a2.refresh_token()).await.code(),
        "session_revoked"
    );
    assert_eq!(
        app.whoami_cookie(&a3.cookie()).await.code(),
        "session_revoked"
    );
    // An unknown member is refused, and changes nothing.
    let res = app
        .client
        .post(app.url("/auth/logout-all"))
        .headers(app.cookie_headers(&a1.cookie()))
        .json(&serde_json::json!({ "keep": true }))
        .send()
        .await
        .expect("logout-all");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.whoami_cookie(&a1.cookie()).await.status, StatusCode::OK);
}

/// `POST /auth/password`: the current password is required; the new one works, the old one
/// no longer does, and every other session of the account is revoked while the caller's stays.
#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_the_other_sessions() {
    let app = spawn_app().await;
    let here = app.login(SessionKind::Stateless).await;
    let elsewhere = app.login(SessionKind::Stateful).await;
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/auth/password"))
            .bearer_auth(here.access_token())
            .json(&serde_json::json!({ "current_password": current, "new_password": new }))
            .send()
    };
    let wrong = decode(
        change("not the password", "new password 9")
            .await
            .expect("wrong"),
    )
    .await;
    assert_eq!(wrong.code(), "invalid_credentials");
    assert_eq!(
        app.whoami_cookie(&elsewhere.cookie()).await.status,
        StatusCode::OK,
        "a refused change revoked nothing"
    );
    let empty = decode(change(PASSWORD, "").await.expect("empty")).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);

    let done = decode(change(PASSWORD, "new password 9").await.expect("change")).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.body["revoked"], 1);
    assert_eq!(
        app.whoami_cookie(&elsewhere.cookie()).await.code(),
        "session_revoked"
    );
    assert_eq!(
        app.whoami_bearer(&here.access_token()).await.status,
        StatusCode::OK
    );
    let email = app.user.email.clone();
    assert_eq!(
        app.login_as(&email, PASSWORD, SessionKind::Stateless)
            .await
            .code(),
        "invalid_credentials"
    );
    assert_eq!(
        app.login_as(&email, "new password 9", SessionKind::Stateless)
            .await
            .status,
        StatusCode::OK
    );
    // An API key's session has no password to change.
    let (_, key) = app.create_api_key().await;
    let by_key = app.login_api_key(&key).await;
    let res = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(by_key.access_token())
        .json(&serde_json::json!({ "current_password": "new password 9", "new_password": "x" }))
        .send()
        .await
        .expect("change by key");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_lists_only_the_callers_sessions_without_secrets() {
    let app = spawn_app().await;
    let bob = app.add_user("bob@example.com", PASSWORD).await;
    let a1 = app.login(SessionKind::Stateless).await;
    let a2 = app.login(SessionKind::Stateful).await;
    let b1 = app
        .login_as(&bob.email, PASSWORD, SessionKind::Stateless)
        .await;
    let res = app
        .client
        .get(app.url("/auth/sessions"))
        .bearer_auth(a1.access_token())
        .send()
        .await
        .expect("list");
    let text = res.text().await.expect("body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    let list = body["sessions"].as_array().expect("array");
    let ids: Vec<&str> = list
        .iter()
        .filter_map(|s| s["session_id"].as_str())
        .collect();
    assert_eq!(list.len(), 2);
    assert!(ids.contains(&a1.session_id().to_string().as_str()));
    assert!(ids.contains(&a2.session_id().to_string().as_str()));
    assert!(!ids.contains(&b1.session_id().to_string().as_str()));
    let current: Vec<bool> = list
        .iter()
        .map(|s| s["current"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(current.iter().filter(|c| **c).count(), 1);
    for needle in [
        "token_hash",
        "sealed",
        "lkr_",
        "lks_",
        &a1.refresh_token()[4..20],
    ] {
        assert!(!text.contains(needle), "{needle} leaked in {text}");
    }
}

#[tokio::test]
async fn deleting_another_owners_session_is_404_and_changes_nothing() {
    let app = spawn_app().await;
    let bob = app.add_user("bob@example.com", PASSWORD).await;
    let alice = app.login(SessionKind::Stateless).await;
    let bobs = app
        .login_as(&bob.email, PASSWORD, SessionKind::Stateless)
        .await;
    let other = app
        .client
        .delete(app.url(&format!("/auth/sessions/{}", bobs.session_id())))
        .bearer_auth(alice.access_token())
        .send()
        .await
        .expect("delete");
    let other = decode(other).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.code(), "not_found");
    let missing = app
        .client
        .delete(app.url(&format!("/auth/sessions/{}", uuid::Uuid::new_v4())))
        .bearer_auth(alice.access_token())
        .send()
        .await
        .expect("delete");
    assert_eq!(
        decode(missing).await.body,
        other.body,
        "not yours and nonexistent look alike"
    );
    assert_eq!(
        app.refresh_json(&bobs.refresh_token()).await.status,
        StatusCode::OK
    );

    let second = app.login(SessionKind::Stateful).await;
    let mine = app
        .client
        .delete(app.url(&format!("/auth/sessions/{}", second.session_id())))
        .bearer_auth(alice.access_token())
        .send()
        .await
        .expect("delete");
    assert_eq!(mine.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.whoami_cookie(&second.cookie()).await.code(),
        "session_revoked"
    );
}

#[tokio::test]
async fn the_session_endpoint_reports_the_current_session() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateful).await;
    let who = app.whoami_cookie(&login.cookie()).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.body["session_id"], login.session_id().to_string());
    assert_eq!(who.body["owner_key"], app.user.owner_key());
    assert_eq!(who.body["kind"], "stateful");
    assert_eq!(who.body["state"], "active");
}

#[tokio::test]
async fn stateful_checks_touch_last_used_at_at_most_once_per_interval() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateful).await;
    let sid = login.session_id();
    let stamp = || async {
        sqlx::query_scalar::<_, time::OffsetDateTime>(
            "SELECT last_used_at FROM latchkey.sessions WHERE id = $1",
        )
        .bind(sid)
        .fetch_one(&app.db.pool)
        .await
        .expect("row")
    };
    let first = stamp().await;
    for _ in 0..5 {
        assert_eq!(
            app.whoami_cookie(&login.cookie()).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(stamp().await, first, "no write within the touch interval");
    sqlx::query(
        "UPDATE latchkey.sessions SET last_used_at = now() - interval '2 minutes' WHERE id = $1",
    )
    .bind(sid)
    .execute(&app.db.pool)
    .await
    .expect("age");
    let aged = stamp().await;
    assert_eq!(
        app.whoami_cookie(&login.cookie()).await.status,
        StatusCode::OK
    );
    assert!(stamp().await > aged, "touched once the interval passed");
}

#[tokio::test]
async fn readyz_checks_the_database() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_refresh_and_login_outcomes() {
    let mut opts = AppOptions::default();
    opts.settings.metrics_bind = Some("127.0.0.1:0".parse().expect("addr"));
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateless).await;
    let _ = app
        .login_as(&app.user.email, "wrong", SessionKind::Stateless)
        .await;
    let t1 = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(t1.status, StatusCode::OK);
    let _ = app.refresh_json(&login.refresh_token()).await; // inside grace
    let _ = app.refresh_json("lkr_nonsense").await;
    let text = app.metrics_text().await;
    for line in [
        "latchkey_refresh_total{outcome=\"rotated\"} 1",
        "latchkey_refresh_total{outcome=\"grace\"} 1",
        "latchkey_refresh_total{outcome=\"invalid_token\"} 1",
        "latchkey_login_total{outcome=\"ok\"} 1",
        "latchkey_login_total{outcome=\"invalid_credentials\"} 1",
        "latchkey_sessions_issued_total{kind=\"stateless\"} 1",
        // Latency by route pattern, method and status: two logins (one refused), three
        // refreshes (one refused).
        "latchkey_http_request_duration_seconds_count{route=\"/auth/login\",method=\"POST\",status=\"200\"} 1",
        "latchkey_http_request_duration_seconds_count{route=\"/auth/login\",method=\"POST\",status=\"401\"} 1",
        "latchkey_http_request_duration_seconds_count{route=\"/auth/refresh\",method=\"POST\",status=\"200\"} 2",
        "latchkey_http_request_duration_seconds_count{route=\"/auth/refresh\",method=\"POST\",status=\"401\"} 1",
        "latchkey_live_streams 0",
    ] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
    for gauge in [
        "latchkey_db_pool_connections{state=\"idle\"}",
        "latchkey_db_pool_connections{state=\"in_use\"}",
    ] {
        assert!(text.contains(gauge), "{gauge} missing in:\n{text}");
    }
}

/// Every answer of a route carries a request id: the client's own when it is plausible,
/// else a new one (a hostile value never reaches the log).
#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_hostile_one_is_replaced() {
    let app = spawn_app().await;
    let id_of = |res: &reqwest::Response| {
        res.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    let fresh = id_of(&res).expect("an id");
    assert_eq!(fresh.len(), 32);
    let res = app
        .client
        .get(app.url("/auth/session"))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .expect("session");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(id_of(&res).as_deref(), Some("trace-abc.123"));
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a b\" status=200")
        .send()
        .await
        .expect("healthz");
    let replaced = id_of(&res).expect("an id");
    assert_eq!(replaced.len(), 32, "{replaced}");
}

#[tokio::test]
async fn metrics_list_the_purge_and_hashing_families_before_anything_happened() {
    let mut opts = AppOptions::default();
    opts.settings.metrics_bind = Some("127.0.0.1:0".parse().expect("addr"));
    let app = spawn_app_with(opts).await;
    let text = app.metrics_text().await;
    for line in [
        "# TYPE latchkey_purge_rows counter",
        "latchkey_purge_rows_total{kind=\"expired_sessions\"} 0",
        "latchkey_purge_rows_total{kind=\"revoked_sessions\"} 0",
        "latchkey_purge_rows_total{kind=\"events\"} 0",
        "latchkey_purge_rows_total{kind=\"login_records\"} 0",
        "# TYPE latchkey_purge_duration_seconds histogram",
        "latchkey_purge_duration_seconds_count 0",
        "# TYPE latchkey_purge_last_success_timestamp_seconds gauge",
        "latchkey_purge_last_success_timestamp_seconds 0",
        "latchkey_purge_failures_total 0",
        "# TYPE latchkey_password_hashes gauge",
        "latchkey_password_hashes{state=\"waiting\"} 0",
        "latchkey_password_hashes{state=\"running\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_logins_waiting_for_and_running_a_password_hash() {
    let mut opts = AppOptions::default();
    opts.settings.metrics_bind = Some("127.0.0.1:0".parse().expect("addr"));
    // One hash at a time: four concurrent logins are one running and three waiting.
    opts.settings.hash_concurrency = 1;
    let app = spawn_app_with(opts).await;
    // A verification runs with the stored hash's own parameters. Stored with far costlier
    // ones than the service's, each login holds the one permit for a few hundred ms, so the
    // four overlap however late each reaches the hasher (with the default cost they could
    // finish one after another on a busy machine and never queue).
    let costly = argon2::Params::new(64 * 1024, 3, 1, Some(32)).expect("params");
    let phc = {
        use argon2::PasswordHasher as _;
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, costly)
            .hash_password_with_salt(PASSWORD.as_bytes(), b"sixteen-byte-slt")
            .expect("hash")
            .to_string()
    };
    sqlx::query("UPDATE latchkey.users SET password_hash = $1 WHERE email = $2")
        .bind(&phc)
        .bind(&app.user.email)
        .execute(&app.db.pool)
        .await
        .expect("costly hash stored");
    let gauge = |text: &str, state: &str| -> i64 {
        let name = format!("latchkey_password_hashes{{state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    let logins = futures::future::join_all(
        (0..4).map(|_| app.login_as(&app.user.email, PASSWORD, SessionKind::Stateless)),
    );
    let scrapes = async {
        let (mut most_waiting, mut most_running) = (0, 0);
        for _ in 0..200 {
            let text = app.metrics_text().await;
            most_waiting = most_waiting.max(gauge(&text, "waiting"));
            most_running = most_running.max(gauge(&text, "running"));
            if most_waiting >= 2 && most_running == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        (most_waiting, most_running)
    };
    let (done, (most_waiting, most_running)) = tokio::join!(logins, scrapes);
    assert!(done.iter().all(|t| t.status == StatusCode::OK));
    assert_eq!(most_running, 1, "never more than the one permit");
    assert!(most_waiting >= 2, "the others waited: {most_waiting}");
    let text = app.metrics_text().await;
    assert_eq!((gauge(&text, "waiting"), gauge(&text, "running")), (0, 0));
}

#[test]
fn every_metrics_family_is_listed_in_the_operations_doc() {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{root}/src/metrics.rs")).expect("metrics.rs");
    let doc = std::fs::read_to_string(format!("{root}/docs/operations.md")).expect("doc");
    // The name is the first string literal after each `registry.register(`.
    let families: Vec<&str> = source
        .split("registry.register(")
        .skip(1)
        .filter_map(|rest| rest.split('"').nth(1))
        .collect();
    assert!(
        families.len() >= 12,
        "the scan sees the families: {families:?}"
    );
    let missing: Vec<&str> = families
        .iter()
        .copied()
        .filter(|name| {
            !["`", "{", "_total`"]
                .iter()
                .any(|end| doc.contains(&format!("`latchkey_{name}{end}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "families missing from docs/operations.md: {missing:?}"
    );
}
