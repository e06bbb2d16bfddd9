//! The retry contract: a client that sent a refresh and got no answer, a 503 or a timeout
//! retries with the token it holds and gets the successor, whether or not the first request
//! was applied. Each case below puts the commit on one side of the failure and checks that
//! the retry converges on the one committed successor, and that `version` rose by one.

use std::time::Duration;

use latchkey::SessionKind;
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::{decode, spawn_app, spawn_app_with, AppOptions, TestApp, Tokens, PASSWORD};

/// Makes every rotation in this database sleep while `public.rotation_delay` holds a row: an
/// `AFTER UPDATE` trigger on a version change, so the row is updated and locked but not yet
/// committed while it sleeps. A test cuts the connection, fires the request timeout or kills
/// the instance in that window; PostgreSQL commits anyway once the statement ends.
async fn install_slow_rotations(pool: &PgPool) {
    for sql in [
        "CREATE TABLE public.rotation_delay (secs float8 NOT NULL)",
        "CREATE FUNCTION public.slow_rotation() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(coalesce((SELECT max(secs) FROM public.rotation_delay), 0)); \
         RETURN NEW; END $$",
        "CREATE TRIGGER slow_rotation AFTER UPDATE ON latchkey.sessions FOR EACH ROW \
         WHEN (NEW.version <> OLD.version) EXECUTE FUNCTION public.slow_rotation()",
    ] {
        sqlx::query(sql).execute(pool).await.expect(sql);
    }
}

/// Rotations sleep `secs` from now on (0: no delay).
async fn delay_rotations(pool: &PgPool, secs: f64) {
    sqlx::query("DELETE FROM public.rotation_delay")
        .execute(pool)
        .await
        .expect("clear delay");
    if secs > 0.0 {
        sqlx::query("INSERT INTO public.rotation_delay VALUES ($1)")
            .bind(secs)
            .execute(pool)
            .await
            .expect("set delay");
    }
}

/// Waits (at most 10 s) until a rotation is sleeping inside its `UPDATE` in this database.
async fn wait_rotation_in_flight(pool: &PgPool) {
    for _ in 0..200 {
        let sleeping: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event = 'PgSleep'",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if sleeping > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no rotation reached PostgreSQL within 10 s");
}

/// The session's `version`, read on `pool`.
async fn version(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT version FROM latchkey.sessions WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("version")
}

/// Waits (at most 10 s) until the session's `version` is `want`: the commit has landed.
async fn wait_version(pool: &PgPool, id: Uuid, want: i64) {
    for _ in 0..200 {
        if version(pool, id).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "version of {id} is {} after 10 s, not {want}",
        version(pool, id).await
    );
}

/// Asserts a 503 `unavailable` that carries `Retry-After`.
fn assert_503_with_retry_after(res: &reqwest::Response, what: &str) {
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(
        res.headers().contains_key("retry-after"),
        "{what}: 503 without Retry-After"
    );
}

/// `POST /auth/refresh` on `base` with a JSON token.
async fn refresh_on(client: &reqwest::Client, base: &str, token: &str) -> Tokens {
    let res = client
        .post(format!("{base}/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": token }))
        .send()
        .await
        .expect("refresh request");
    decode(res).await
}

/// The raw answer to a refresh of `token`.
async fn post_refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": token }))
        .send()
        .await
        .expect("refresh")
}

/// The refresh of `token`, tried again while it answers 503 (up to 5 s): the service is
/// reconnecting to the database.
async fn refresh_until_up(app: &TestApp, token: &str) -> Tokens {
    let mut retry = app.refresh_json(token).await;
    for _ in 0..50 {
        if retry.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        retry = app.refresh_json(token).await;
    }
    retry
}

/// The client was answered (or cut off) while the rotation was still in PostgreSQL: not
/// committed then (`why`), it commits afterwards; the rotations are made fast again.
async fn commit_lands_after_the_answer(pool: &PgPool, id: Uuid, why: &str) {
    assert_eq!(version(pool, id).await, 1, "{why}");
    wait_version(pool, id, 2).await;
    delay_rotations(pool, 0.0).await;
}

/// The successor is the session's live token: it rotates once more (to `version + 1`) and
/// its access token opens the session.
async fn assert_live_successor(app: &TestApp, retry: &Tokens, id: Uuid, version_now: i64) {
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(
        app.whoami_bearer(&retry.access_token()).await.status,
        StatusCode::OK
    );
    let next = app.refresh_json(&retry.refresh_token()).await;
    assert_eq!(next.status, StatusCode::OK, "{:?}", next.body);
    assert_eq!(version(&app.db.pool, id).await, version_now + 1);
}

#[tokio::test]
async fn a_lost_refresh_answer_retried_with_the_same_token_gets_the_same_successor() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let (token, id) = (login.refresh_token(), login.session_id());

    let lost = app.refresh_json(&token).await;
    assert_eq!(lost.status, StatusCode::OK);
    // The client never saw `lost`: it retries with the token it holds, twice.
    for _ in 0..2 {
        let retry = app.refresh_json(&token).await;
        assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
        assert_eq!(
            retry.refresh_token(),
            lost.refresh_token(),
            "same successor"
        );
    }
    assert_eq!(
        version(&app.db.pool, id).await,
        2,
        "one rotation, not three"
    );
    assert_eq!(app.events_of(id, "grace_used").await, 2);
    let retry = app.refresh_json(&token).await;
    assert_live_successor(&app, &retry, id, 2).await;
}

#[tokio::test]
async fn a_lost_stateful_refresh_answer_retried_with_the_same_cookie_gets_the_same_cookie() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateful).await;
    let (cookie, id) = (login.cookie(), login.session_id());

    let lost = app.refresh_cookie(&cookie).await;
    assert_eq!(lost.status, StatusCode::OK);
    let retry = app.refresh_cookie(&cookie).await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(retry.cookie(), lost.cookie(), "same successor cookie");
    assert_eq!(version(&app.db.pool, id).await, 2);
    assert_eq!(
        app.whoami_cookie(&retry.cookie()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_request_whose_connection_the_client_dropped_is_retried_and_converges_on_one_successor() {
    let app = spawn_app().await;
    let login = app.login(SessionKind::Stateless).await;
    let (token, id) = (login.refresh_token(), login.session_id());

    // Sends the refresh and hangs up without reading: applied or not, the client cannot know.
    let body = serde_json::json!({ "refresh_token": token }).to_string();
    let addr = app.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /auth/refresh HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    drop(conn);

    let retry = app.refresh_json(&token).await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    let again = app.refresh_json(&token).await;
    assert_eq!(again.refresh_token(), retry.refresh_token());
    assert_eq!(version(&app.db.pool, id).await, 2, "exactly one rotation");
    assert_live_successor(&app, &retry, id, 2).await;
}

#[tokio::test]
async fn a_503_before_the_commit_leaves_the_token_current_and_the_retry_rotates_it() {
    let proxy = crate::proxy::start().await;
    let app = spawn_app_with(AppOptions {
        connect_port: Some(proxy.port),
        ..AppOptions::default()
    })
    .await;
    let login = app.login(SessionKind::Stateless).await;
    let (token, id) = (login.refresh_token(), login.session_id());

    proxy.cut();
    let res = post_refresh(&app, &token).await;
    assert_503_with_retry_after(&res, "refresh with the database cut");
    assert_eq!(version(&app.db.pool, id).await, 1, "nothing applied");

    proxy.restore();
    let retry = refresh_until_up(&app, &token).await;
    assert_eq!(version(&app.db.pool, id).await, 2);
    assert_live_successor(&app, &retry, id, 2).await;
}

#[tokio::test]
async fn a_503_from_the_request_timeout_whose_commit_lands_after_it_is_retried_into_the_successor()
{
    let mut opts = AppOptions::default();
    opts.settings.server.request_timeout = Duration::from_secs(1);
    let app = spawn_app_with(opts).await;
    install_slow_rotations(&app.db.pool).await;
    let login = app.login(SessionKind::Stateless).await;
    let (token, id) = (login.refresh_token(), login.session_id());

    delay_rotations(&app.db.pool, 2.5).await;
    let res = post_refresh(&app, &token).await;
    assert_503_with_retry_after(&res, "refresh past the request timeout");
    // The statement was already in PostgreSQL: it commits after the client heard 503.
    commit_lands_after_the_answer(&app.db.pool, id, "answered before the commit").await;

    let retry = app.refresh_json(&token).await;
    assert_eq!(
        version(&app.db.pool, id).await,
        2,
        "the retry did not rotate again"
    );
    assert_eq!(
        app.events_of(id, "grace_used").await,
        1,
        "it got the grace answer"
    );
    assert_live_successor(&app, &retry, id, 2).await;
}

#[tokio::test]
async fn a_503_from_a_connection_cut_after_the_statement_reached_postgres_is_retried_into_the_successor(
) {
    let proxy = crate::proxy::start().await;
    let app = spawn_app_with(AppOptions {
        connect_port: Some(proxy.port),
        ..AppOptions::default()
    })
    .await;
    install_slow_rotations(&app.db.pool).await;
    let login = app.login(SessionKind::Stateless).await;
    let (token, id) = (login.refresh_token(), login.session_id());

    delay_rotations(&app.db.pool, 1.5).await;
    let (client, url) = (app.client.clone(), app.url("/auth/refresh"));
    let body = serde_json::json!({ "refresh_token": token });
    let first = tokio::spawn(async move { client.post(url).json(&body).send().await });
    wait_rotation_in_flight(&app.db.pool).await;
    proxy.cut(); // the UPDATE is sleeping in PostgreSQL; its answer will find no one
    let res = first.await.expect("join").expect("refresh");
    assert_503_with_retry_after(&res, "refresh whose connection was cut");
    commit_lands_after_the_answer(&app.db.pool, id, "answered before the commit").await;

    proxy.restore();
    let retry = refresh_until_up(&app, &token).await;
    assert_eq!(
        version(&app.db.pool, id).await,
        2,
        "the retry did not rotate again"
    );
    assert_live_successor(&app, &retry, id, 2).await;
}

/// `latchkey serve` on `db_url`; its address once it listens.
fn serve(db_url: &str, secret: &str) -> (std::process::Child, String) {
    let (child, rx) = crate::helpers::spawn_serve(db_url, secret, &[]);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(rest) = line.split("addr=").nth(1) {
            let addr = rest.split_whitespace().next().expect("addr").to_owned();
            // Keep draining its log so the process never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, format!("http://{addr}"));
        }
        seen.push(line);
    }
    panic!("latchkey serve never listened: {seen:?}");
}

#[tokio::test]
async fn an_instance_killed_between_the_commit_and_its_answer_leaves_a_successor_the_retry_gets_on_another(
) {
    let app = spawn_app().await;
    install_slow_rotations(&app.db.pool).await;
    let secret = crate::helpers::random_jwt_secret();
    let (mut a, base_a) = serve(&app.db.url(), &secret);
    let (mut b, base_b) = serve(&app.db.url(), &secret);
    let client = reqwest::Client::new();
    let login = decode(
        client
            .post(format!("{base_a}/auth/login"))
            .json(&serde_json::json!({ "email": app.user.email, "password": PASSWORD, "mode": "stateless" }))
            .send()
            .await
            .expect("login"),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let (token, id) = (login.refresh_token(), login.session_id());

    delay_rotations(&app.db.pool, 1.5).await;
    let (c, url, body) = (
        client.clone(),
        format!("{base_a}/auth/refresh"),
        serde_json::json!({ "refresh_token": token }),
    );
    let first = tokio::spawn(async move { c.post(url).json(&body).send().await });
    wait_rotation_in_flight(&app.db.pool).await;
    a.kill().expect("SIGKILL instance A");
    a.wait().expect("reap A");
    let lost = first.await.expect("join");
    assert!(lost.is_err(), "A answered before dying: {lost:?}");
    // A's statement outlives A: PostgreSQL commits the rotation nobody was told about.
    commit_lands_after_the_answer(&app.db.pool, id, "A died before the commit landed").await;

    let retry = refresh_on(&client, &base_b, &token).await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(version(&app.db.pool, id).await, 2, "B did not rotate again");
    let whoami = client
        .get(format!("{base_b}/auth/session"))
        .bearer_auth(retry.access_token())
        .send()
        .await
        .expect("session");
    assert_eq!(whoami.status(), StatusCode::OK);
    let next = refresh_on(&client, &base_b, &retry.refresh_token()).await;
    assert_eq!(next.status, StatusCode::OK, "{:?}", next.body);
    assert_eq!(version(&app.db.pool, id).await, 3);
    let _ = b.kill();
    let _ = b.wait();
}
