//! `GET /auth/events`: live session streams that die with their session, on every instance.

use std::time::Duration;

use latchkey::events::LISTENER_APPLICATION_NAME;
use latchkey::SessionKind;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::time::{timeout, Instant};

use crate::helpers::{spawn_app, spawn_app_with, AppOptions, TestApp, PASSWORD};

/// What reading a stream produced.
#[derive(Debug)]
enum Next {
    /// A named event with its JSON data.
    Event(String, Value),
    /// The server ended the stream.
    End,
    /// Nothing within the wait.
    Timeout,
}

/// A minimal Server-Sent Events reader.
struct Sse {
    res: Response,
    buf: String,
    comments: usize,
}

impl Sse {
    fn new(res: Response) -> Self {
        assert_eq!(res.status(), StatusCode::OK, "stream refused");
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["cache-control"], "no-store");
        Self {
            res,
            buf: String::new(),
            comments: 0,
        }
    }

    /// The next event (keep-alive comments are counted and skipped), the end, or a timeout.
    async fn next(&mut self, within: Duration) -> Next {
        let deadline = Instant::now() + within;
        loop {
            while let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let (mut name, mut data) = (None, String::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if let Some(name) = name {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return Next::Event(name, data);
                }
            }
            match tokio::time::timeout_at(deadline, self.res.chunk()).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(None)) | Ok(Err(_)) => return Next::End,
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
            }
        }
    }

    /// Expects `name` next, within `within`; returns its data.
    async fn expect(&mut self, name: &str, within: Duration) -> Value {
        match self.next(within).await {
            Next::Event(n, data) if n == name => data,
            other => panic!("expected `{name}`, got {other:?}"),
        }
    }

    /// Expects `revoked` with `reason`, then the end of the stream, all within `within`.
    async fn expect_revoked_then_end(&mut self, reason: &str, within: Duration) -> Value {
        let started = Instant::now();
        let data = self.expect("revoked", within).await;
        assert_eq!(data["reason"], reason, "{data}");
        let left = within.saturating_sub(started.elapsed());
        match self.next(left).await {
            Next::End => data,
            other => panic!("expected the end of the stream, got {other:?}"),
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// Options whose streams are only closed by notifications, never by the backstop timer
/// within a test's lifetime.
fn notify_only() -> AppOptions {
    let mut opts = AppOptions::default();
    opts.settings.events.revalidate_interval = Duration::from_secs(600);
    opts
}

async fn open_cookie(app: &TestApp, cookie: &str) -> Sse {
    let res = app
        .client
        .get(app.url("/auth/events"))
        .headers(app.cookie_headers(cookie))
        .send()
        .await
        .expect("events request");
    Sse::new(res)
}

async fn open_bearer(app: &TestApp, access: &str) -> Sse {
    let res = app
        .client
        .get(app.url("/auth/events"))
        .bearer_auth(access)
        .send()
        .await
        .expect("events request");
    Sse::new(res)
}

async fn get_events(app: &TestApp, url: &str, headers: HeaderMap) -> Response {
    app.client
        .get(app.url(url))
        .headers(headers)
        .send()
        .await
        .expect("events request")
}

#[tokio::test]
async fn logout_through_another_instance_closes_every_stream_of_the_session_on_both_within_a_second(
) {
    let a = spawn_app_with(notify_only()).await;
    let b = a.spawn_peer(notify_only()).await;
    a.wait_listening(1).await;
    b.wait_listening(1).await;
    let login = a.login(SessionKind::Stateful).await;
    let cookie = login.cookie();
    let sid = login.session_id();

    let mut a1 = open_cookie(&a, &cookie).await;
    let mut a2 = open_cookie(&a, &cookie).await;
    let mut b1 = open_cookie(&b, &cookie).await;
    assert_eq!(a.state.events.stream_count(), 2);
    assert_eq!(b.state.events.stream_count(), 1);

    let res = b
        .client
        .post(b.url("/auth/logout"))
        .headers(b.cookie_headers(&cookie))
        .send()
        .await
        .expect("logout");
    assert!(res.status().is_success(), "{}", res.status());
    let (r1, r2, r3) = tokio::join!(
        a1.expect_revoked_then_end("logout", SECOND),
        a2.expect_revoked_then_end("logout", SECOND),
        b1.expect_revoked_then_end("logout", SECOND),
    );
    for data in [r1, r2, r3] {
        assert_eq!(data["session_id"], sid.to_string());
    }
}

#[tokio::test]
async fn every_stream_of_a_session_gets_refreshed_without_any_token_and_stays_open() {
    let app = spawn_app_with(notify_only()).await;
    app.wait_listening(1).await;
    let login = app.login(SessionKind::Stateless).await;
    let mut s1 = open_bearer(&app, &login.access_token()).await;
    let mut s2 = open_bearer(&app, &login.access_token()).await;

    let refreshed = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    for s in [&mut s1, &mut s2] {
        let data = s.expect("refreshed", SECOND).await;
        assert_eq!(data["version"], 2);
        assert_eq!(data["session_id"], login.session_id().to_string());
        let text = data.to_string();
        assert!(!text.contains("lkr_") && !text.contains("eyJ"), "{text}");
        assert_eq!(
            data.as_object().map(|o| o.len()),
            Some(2),
            "only id and version: {text}"
        );
    }
    // Neither stream was replaced or closed by the other.
    assert!(matches!(
        s1.next(Duration::from_millis(300)).await,
        Next::Timeout
    ));
    assert!(matches!(
        s2.next(Duration::from_millis(300)).await,
        Next::Timeout
    ));
    assert_eq!(app.state.events.stream_count(), 2);
}

#[tokio::test]
async fn a_stream_of_another_owner_never_receives_events_of_a_session_whose_id_it_sends() {
    let mut opts = notify_only();
    opts.settings.events.keep_alive = Duration::from_millis(200);
    let app = spawn_app_with(opts).await;
    app.wait_listening(1).await;
    let bob = app.add_user("bob@example.com", PASSWORD).await;
    let alice_login = app.login(SessionKind::Stateless).await;
    let alice_sid = alice_login.session_id().to_string();
    let bob_login = app
        .login_as(&bob.email, PASSWORD, SessionKind::Stateless)
        .await;

    let mut alice = open_bearer(&app, &alice_login.access_token()).await;
    // Bob names Alice's session everywhere he can, except as a credential.
    let mut headers = HeaderMap::new();
    let decoy = HeaderValue::from_str(&alice_sid).expect("header");
    for name in [
        "x-session-id",
        "session-id",
        "last-event-id",
        "x-latchkey-session",
    ] {
        headers.insert(name, decoy.clone());
    }
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("session_id={alice_sid}; sid={alice_sid}")).expect("cookie"),
    );
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", bob_login.access_token())).expect("auth"),
    );
    let url = format!(
        "/auth/events?session_id={alice_sid}&sid={alice_sid}&id={alice_sid}&subscribe={alice_sid}"
    );
    let mut bob_stream = Sse::new(get_events(&app, &url, headers).await);

    // Alice's session rotates, then ends: she sees both, Bob sees nothing but keep-alives.
    assert_eq!(
        app.refresh_json(&alice_login.refresh_token()).await.status,
        StatusCode::OK
    );
    alice.expect("refreshed", SECOND).await;
    let res = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(alice_login.access_token())
        .send()
        .await
        .expect("logout");
    assert!(res.status().is_success());
    alice.expect_revoked_then_end("logout", SECOND).await;
    match bob_stream.next(Duration::from_millis(1500)).await {
        Next::Timeout => {}
        other => panic!("bob received {other:?}"),
    }
    assert!(bob_stream.comments >= 2, "keep-alive comments flow");

    // Bob's own revocation reaches him, about his own session.
    sqlx::query("SELECT latchkey.latchkey_revoke_owner($1)")
        .bind(bob.owner_key())
        .execute(&app.db.pool)
        .await
        .expect("admin revoke");
    let data = bob_stream.expect_revoked_then_end("admin", SECOND).await;
    assert_eq!(data["session_id"], bob_login.session_id().to_string());
}

#[tokio::test]
async fn a_cookie_stream_from_an_evil_origin_is_rejected_with_origin_rejected() {
    let app = spawn_app().await;
    let cookie = app.login(SessionKind::Stateful).await.cookie();
    let mut headers = app.cookie_headers(&cookie);
    headers.insert("origin", HeaderValue::from_static("https://evil.example"));
    let res = get_events(&app, "/auth/events", headers).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "origin_rejected");
    assert_eq!(app.state.events.stream_count(), 0);
}

#[tokio::test]
async fn a_cookie_stream_without_origin_is_rejected_unless_the_browser_marks_it_same_origin() {
    let app = spawn_app().await;
    let cookie = app.login(SessionKind::Stateful).await.cookie();
    let mut headers = app.cookie_headers(&cookie);
    headers.remove("origin");
    let res = get_events(&app, "/auth/events", headers.clone()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "origin_rejected");

    headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    let res = get_events(&app, "/auth/events", headers.clone()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    let res = get_events(&app, "/auth/events", headers).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused_even_beside_a_valid_credential() {
    let app = spawn_app().await;
    let stateless = app.login(SessionKind::Stateless).await;
    let cookie = app.login(SessionKind::Stateful).await.cookie();
    let access = stateless.access_token();
    let refresh = stateless.refresh_token();
    let urls = [
        format!("/auth/events?token={access}"),
        format!("/auth/events?access_token={access}"),
        format!("/auth/events?refresh_token={refresh}"),
        "/auth/events?Access_Token=x".to_owned(),
        format!("/auth/events?latchkey={cookie}"),
        format!("/auth/events?x={refresh}"),
        format!("/auth/events?q={access}"),
        // Percent-encoding does not hide a token.
        format!("/auth/events?x=%6Cks_{}", &cookie[4..]),
    ];
    for url in &urls {
        for headers in [HeaderMap::new(), app.cookie_headers(&cookie)] {
            let res = get_events(&app, url, headers).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{url}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
            let body: Value = res.json().await.expect("json");
            assert_eq!(body["code"], "bad_request", "{url}");
        }
    }
    assert_eq!(app.state.events.stream_count(), 0);
}

#[tokio::test]
async fn a_bearer_client_without_origin_streams_with_no_store() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let res = app
        .client
        .get(app.url("/auth/events"))
        .bearer_auth(login.access_token())
        .send()
        .await
        .expect("events");
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = Sse::new(res);
    assert!(matches!(
        stream.next(Duration::from_millis(300)).await,
        Next::Timeout
    ));
    assert_eq!(app.state.events.stream_count(), 1);
}

#[tokio::test]
async fn a_request_without_credentials_or_with_a_revoked_session_opens_no_stream() {
    let app = spawn_app().await;
    let res = get_events(&app, "/auth/events", HeaderMap::new()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let login = app.login(SessionKind::Stateless).await;
    app.state
        .auth
        .store()
        .revoke(login.session_id(), latchkey::store::RevokeReason::Admin)
        .await
        .expect("revoke");
    let res = app
        .client
        .get(app.url("/auth/events"))
        .bearer_auth(login.access_token())
        .send()
        .await
        .expect("events");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "session_revoked");
}

#[tokio::test]
async fn streams_beyond_the_per_owner_cap_get_429_even_when_opened_at_once() {
    let mut opts = AppOptions::default();
    opts.settings.events.max_streams_per_owner = 2;
    opts.settings.events.keep_alive = Duration::from_millis(100);
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateless).await;
    let access = login.access_token();
    let attempts = (0..6).map(|_| {
        app.client
            .get(app.url("/auth/events"))
            .bearer_auth(&access)
            .send()
    });
    let answers = futures::future::join_all(attempts).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for res in answers {
        let res = res.expect("events");
        match res.status() {
            StatusCode::OK => open.push(res),
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(res.headers().contains_key("retry-after"));
                let body: Value = res.json().await.expect("json");
                assert_eq!(body["code"], "rate_limited");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((open.len(), refused), (2, 4));
    assert_eq!(app.state.events.stream_count(), 2);

    // Closing one frees its slot.
    drop(open.pop());
    timeout(Duration::from_secs(5), async {
        while app.state.events.stream_count() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the closed stream is released");
    let res = app
        .client
        .get(app.url("/auth/events"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("events");
    assert_eq!(res.status(), StatusCode::OK);
}

/// Terminates the service's LISTEN connections to the test database. Runs on a connection
/// of its own to the `postgres` database, so it works while the test database refuses new
/// connections (and needs none of the pool's).
async fn kill_listeners(app: &TestApp) -> i64 {
    let db = app
        .db
        .options
        .get_database()
        .expect("the test database's name")
        .to_owned();
    let mut admin = PgConnection::connect_with(&app.db.options.clone().database("postgres"))
        .await
        .expect("admin connection");
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = $2) t",
    )
    .bind(db)
    .bind(LISTENER_APPLICATION_NAME)
    .fetch_one(&mut admin)
    .await
    .expect("terminate")
}

#[tokio::test]
async fn after_the_listeners_connection_is_killed_it_reconnects_and_revocations_still_close_streams(
) {
    let app = spawn_app_with(notify_only()).await;
    app.wait_listening(1).await;
    let first = app.login(SessionKind::Stateless).await;
    let second = app.login(SessionKind::Stateless).await;
    let mut s1 = open_bearer(&app, &first.access_token()).await;
    let mut s2 = open_bearer(&app, &second.access_token()).await;

    // Killed, reconnected, then a revocation: delivered by NOTIFY on the new connection.
    assert_eq!(kill_listeners(&app).await, 1);
    app.wait_listening(2).await;
    app.state
        .auth
        .store()
        .revoke(first.session_id(), latchkey::store::RevokeReason::Admin)
        .await
        .expect("revoke");
    s1.expect_revoked_then_end("admin", SECOND).await;

    // Killed and kept out while a revocation is published: the notification is lost for
    // good, and the re-validation after reconnecting must catch it.
    let db: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&app.db.pool)
        .await
        .expect("db name");
    let mut held = app.db.pool.acquire().await.expect("a connection kept open");
    let mut admin = PgConnection::connect_with(&app.db.options.clone().database("postgres"))
        .await
        .expect("admin connection");
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .expect("refuse connections");
    assert_eq!(kill_listeners(&app).await, 1);
    sqlx::query("SELECT latchkey.latchkey_revoke_session($1)")
        .bind(second.session_id())
        .execute(&mut *held)
        .await
        .expect("revoke while the listener is down");
    assert!(
        matches!(s2.next(Duration::from_millis(500)).await, Next::Timeout),
        "nothing can deliver it while the listener is down"
    );
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .expect("accept connections");
    // Reconnection is retried at least every second; then the stream closes at once.
    s2.expect_revoked_then_end("admin", Duration::from_secs(2))
        .await;
    assert!(*app.state.events.listener_connections().borrow() >= 3);
}

#[tokio::test]
async fn a_session_that_expires_while_streaming_gets_expiring_then_revoked_expired_then_ends() {
    let mut opts = notify_only();
    opts.settings.auth.idle_ttl_secs = 3;
    opts.settings.events.expiring_lead = Duration::from_secs(2);
    let app = spawn_app_with(opts).await;
    let login = app.login(SessionKind::Stateful).await;
    let started = Instant::now();
    let mut stream = open_cookie(&app, &login.cookie()).await;

    let data = stream.expect("expiring", Duration::from_secs(2)).await;
    let warned_at = started.elapsed();
    let left = data["expires_in"].as_u64().expect("expires_in");
    assert!(left <= 2, "{data}");
    assert!(warned_at < Duration::from_millis(2500), "{warned_at:?}");
    stream
        .expect_revoked_then_end("expired", Duration::from_secs(3))
        .await;
    let ended_at = started.elapsed();
    assert!(
        ended_at >= Duration::from_millis(2500) && ended_at < Duration::from_secs(4),
        "{ended_at:?}"
    );
}

#[tokio::test]
async fn reuse_detection_closes_the_streams_of_the_session_it_revokes() {
    let mut opts = notify_only();
    opts.settings.auth.grace_secs = 0;
    let app = spawn_app_with(opts).await;
    app.wait_listening(1).await;
    let login = app.login(SessionKind::Stateless).await;
    let mut stream = open_bearer(&app, &login.access_token()).await;
    assert_eq!(
        app.refresh_json(&login.refresh_token()).await.status,
        StatusCode::OK
    );
    stream.expect("refreshed", SECOND).await;
    let reused = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(reused.code(), "token_reused");
    stream
        .expect_revoked_then_end("reuse_detected", SECOND)
        .await;
}

#[tokio::test]
async fn deleting_the_row_by_hand_closes_its_streams() {
    let app = spawn_app_with(notify_only()).await;
    app.wait_listening(1).await;
    let login = app.login(SessionKind::Stateless).await;
    let mut stream = open_bearer(&app, &login.access_token()).await;
    sqlx::query("DELETE FROM latchkey.sessions WHERE id = $1")
        .bind(login.session_id())
        .execute(&app.db.pool)
        .await
        .expect("delete");
    stream.expect_revoked_then_end("deleted", SECOND).await;
}

#[tokio::test]
async fn the_backstop_timer_closes_a_stream_whose_revocation_was_never_notified() {
    let mut opts = AppOptions::default();
    opts.settings.events.revalidate_interval = Duration::from_millis(300);
    let app = spawn_app_with(opts).await;
    app.wait_listening(1).await;
    let login = app.login(SessionKind::Stateless).await;
    let mut stream = open_bearer(&app, &login.access_token()).await;
    // Revoke with the notification triggers disabled for this transaction's session only.
    let mut tx = app.db.pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("replica role");
    sqlx::query(
        "UPDATE latchkey.sessions SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
    )
    .bind(login.session_id())
    .execute(&mut *tx)
    .await
    .expect("silent revoke");
    tx.commit().await.expect("commit");
    stream.expect_revoked_then_end("admin", SECOND).await;
}

#[tokio::test]
async fn shutting_down_the_service_ends_its_streams() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let mut stream = open_bearer(&app, &login.access_token()).await;
    app.state.events.shutdown();
    match stream.next(SECOND).await {
        Next::End => {}
        other => panic!("expected the end, got {other:?}"),
    }
}

#[tokio::test]
async fn purging_expired_rows_publishes_nothing_but_deleting_a_live_one_does() {
    let app = crate::helpers::spawn_app().await;
    let expired = app
        .login(latchkey::SessionKind::Stateless)
        .await
        .session_id();
    let live = app
        .login(latchkey::SessionKind::Stateless)
        .await
        .session_id();
    sqlx::query(
        "UPDATE latchkey.sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(expired)
    .execute(&app.db.pool)
    .await
    .expect("expire");
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .expect("listener");
    listener.listen("latchkey_sessions").await.expect("listen");
    sqlx::query("DELETE FROM latchkey.sessions WHERE id = $1")
        .bind(expired)
        .execute(&app.db.pool)
        .await
        .expect("purge");
    sqlx::query("DELETE FROM latchkey.sessions WHERE id = $1")
        .bind(live)
        .execute(&app.db.pool)
        .await
        .expect("delete");
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .expect("recv");
    let payload: serde_json::Value = serde_json::from_str(first.payload()).expect("json");
    assert_eq!(
        payload["id"],
        live.to_string(),
        "the purged expired row published nothing"
    );
    assert_eq!(payload["reason"], "deleted");
}

#[tokio::test]
async fn only_a_token_rotation_publishes_refreshed_not_a_data_save() {
    let app = crate::helpers::spawn_app().await;
    let login = app.login(latchkey::SessionKind::Stateless).await;
    let sid = login.session_id();
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .expect("listener");
    listener.listen("latchkey_sessions").await.expect("listen");
    // A stream is open on the session (what opening one does), so its rotations publish.
    sqlx::query(
        "UPDATE latchkey.sessions SET streamed_until = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(sid)
    .execute(&app.db.pool)
    .await
    .expect("mark");
    // What a tower-sessions save does: new data, version + 1, same token.
    sqlx::query(
        "UPDATE latchkey.sessions SET data = '{\"n\": 1}', version = version + 1 WHERE id = $1",
    )
    .bind(sid)
    .execute(&app.db.pool)
    .await
    .expect("save");
    assert_eq!(
        app.refresh_json(&login.refresh_token()).await.status,
        reqwest::StatusCode::OK
    );
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .expect("recv");
    let payload: serde_json::Value = serde_json::from_str(first.payload()).expect("json");
    assert_eq!(payload["event"], "refreshed");
    assert_eq!(
        payload["version"], 3,
        "the data save published nothing; the rotation did"
    );
}

/// The next notification on `listener` within `within`, as JSON, or `None`.
async fn notification_within(
    listener: &mut sqlx::postgres::PgListener,
    within: Duration,
) -> Option<Value> {
    match timeout(within, listener.recv()).await {
        Err(_) => None,
        Ok(n) => Some(serde_json::from_str(n.expect("recv").payload()).expect("json")),
    }
}

#[tokio::test]
async fn a_rotation_of_a_session_without_a_stream_publishes_nothing_until_a_stream_opens() {
    let app = spawn_app_with(notify_only()).await;
    app.wait_listening(1).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .expect("listener");
    listener.listen("latchkey_sessions").await.expect("listen");
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    let mut refresh = login.refresh_token();
    let mut access = login.access_token();
    for _ in 0..5 {
        let next = app.refresh_json(&refresh).await;
        assert_eq!(next.status, StatusCode::OK);
        refresh = next.refresh_token();
        access = next.access_token();
    }
    assert_eq!(app.version_of(sid).await, 6);
    let quiet = notification_within(&mut listener, Duration::from_millis(700)).await;
    assert_eq!(
        quiet, None,
        "five rotations without a stream published nothing"
    );

    // Opening a stream marks the session: the next rotation publishes, and the stream gets it.
    let mut stream = open_bearer(&app, &access).await;
    let marked: bool = sqlx::query_scalar(
        "SELECT streamed_until > now() + interval '1 minute' FROM latchkey.sessions WHERE id = $1",
    )
    .bind(sid)
    .fetch_one(&app.db.pool)
    .await
    .expect("mark");
    assert!(marked, "the open stream marked its session as streamed");
    assert_eq!(app.refresh_json(&refresh).await.status, StatusCode::OK);
    let published = notification_within(&mut listener, SECOND)
        .await
        .expect("the rotation of a streamed session is published");
    assert_eq!(published["event"], "refreshed");
    assert_eq!(published["version"], 7);
    let data = stream.expect("refreshed", SECOND).await;
    assert_eq!(data["version"], 7);
}

#[tokio::test]
async fn the_stream_mark_lapses_by_itself_when_its_instance_stops_renewing_it() {
    let app = spawn_app_with(notify_only()).await;
    app.wait_listening(1).await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    let _stream = open_bearer(&app, &login.access_token()).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .expect("listener");
    listener.listen("latchkey_sessions").await.expect("listen");
    // What a dead instance leaves behind once its hold has run out: a mark in the past.
    sqlx::query(
        "UPDATE latchkey.sessions SET streamed_until = now() - interval '1 second' WHERE id = $1",
    )
    .bind(sid)
    .execute(&app.db.pool)
    .await
    .expect("lapse");
    let next = app.refresh_json(&login.refresh_token()).await;
    assert_eq!(next.status, StatusCode::OK);
    let quiet = notification_within(&mut listener, Duration::from_millis(700)).await;
    assert_eq!(quiet, None, "a lapsed mark publishes nothing");
    // A live mark publishes again.
    sqlx::query(
        "UPDATE latchkey.sessions SET streamed_until = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(sid)
    .execute(&app.db.pool)
    .await
    .expect("mark");
    assert_eq!(
        app.refresh_json(&next.refresh_token()).await.status,
        StatusCode::OK
    );
    let published = notification_within(&mut listener, SECOND)
        .await
        .expect("published");
    assert_eq!(published["version"], 3);
}

#[tokio::test]
async fn a_rotation_whose_notification_never_came_reaches_the_stream_on_its_next_read() {
    let mut opts = AppOptions::default();
    opts.settings.events.revalidate_interval = Duration::from_millis(300);
    let app = spawn_app_with(opts).await;
    app.wait_listening(1).await;
    let login = app.login(SessionKind::Stateless).await;
    let sid = login.session_id();
    let mut stream = open_bearer(&app, &login.access_token()).await;
    // A rotation made as if no stream were open: the trigger publishes nothing.
    sqlx::query("UPDATE latchkey.sessions SET streamed_until = NULL WHERE id = $1")
        .bind(sid)
        .execute(&app.db.pool)
        .await
        .expect("unmark");
    assert_eq!(
        app.refresh_json(&login.refresh_token()).await.status,
        StatusCode::OK
    );
    let data = stream.expect("refreshed", SECOND).await;
    assert_eq!(data["version"], 2);
    match stream.next(Duration::from_millis(700)).await {
        Next::Timeout => {}
        other => panic!("each version is sent once, got {other:?}"),
    }
}
