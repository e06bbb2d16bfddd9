//! `GET /auth/events` is capped per owner, per client ip and per instance; a stream that ends
//! gives its slots back.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use latchkey::limits::RateLimit;
use latchkey::SessionKind;
use reqwest::{Client, Response, StatusCode};
use tokio::sync::Barrier;
use tokio::time::Instant;

use super::{client_from, expect_rate_limited, mint};
use crate::helpers::{spawn_app_with, AppOptions, TestApp, Tokens, PASSWORD};

/// Streams closed only by notifications; anonymous minting loose enough for the setup.
fn options(per_owner: usize, per_ip: usize, instance: usize) -> AppOptions {
    let mut opts = AppOptions::default();
    let events = &mut opts.settings.events;
    events.max_streams_per_owner = per_owner;
    events.max_streams_per_ip = per_ip;
    events.max_streams = instance;
    events.revalidate_interval = Duration::from_secs(600);
    opts.settings.anonymous_limit = RateLimit {
        per_minute: NonZeroU32::new(600).expect("nonzero"),
        burst: NonZeroU32::new(100).expect("nonzero"),
    };
    opts
}

async fn spawn(opts: AppOptions) -> TestApp {
    let app = spawn_app_with(opts).await;
    app.wait_listening(1).await;
    app
}

/// Waits (at most 5 s) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 5 s"));
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// `GET /auth/events` with a bearer token from `client`, whatever the answer.
async fn open(app: &TestApp, client: &Client, session: &Tokens) -> Response {
    client
        .get(app.url("/auth/events"))
        .bearer_auth(session.access_token())
        .send()
        .await
        .expect("events")
}

/// Opens every stream at once (a barrier), returns the answers in order.
async fn open_all(app: &Arc<TestApp>, client: &Client, sessions: &[Tokens]) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(sessions.len()));
    let tasks: Vec<_> = sessions
        .iter()
        .map(|s| {
            let (app, client, barrier) = (app.clone(), client.clone(), barrier.clone());
            let access = s.access_token();
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .get(app.url("/auth/events"))
                    .bearer_auth(access)
                    .send()
                    .await
                    .expect("events")
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    answers
}

/// Reads `res` until the event `name`, within a second.
async fn expect_event(res: &mut Response, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = String::new();
    let heard = |buf: &str| {
        buf.lines()
            .any(|l| l.strip_prefix("event:").map(str::trim) == Some(name))
    };
    while !heard(&buf) {
        match tokio::time::timeout_at(deadline, res.chunk()).await {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("no `{name}` event within a second ({other:?}); got {buf:?}"),
        }
    }
}

/// Refreshes a stateless session, which sends `refreshed` to its streams; returns the new tokens.
async fn refresh(app: &TestApp, session: &Tokens) -> Tokens {
    let next = app.refresh_json(&session.refresh_token()).await;
    assert_eq!(next.status, StatusCode::OK);
    next
}

/// Splits answers into open streams and refusals (each checked to name `cap`).
async fn partition(answers: Vec<Response>, cap: &str) -> (Vec<Response>, usize) {
    let (mut open, mut refused) = (Vec::new(), 0);
    for res in answers {
        if res.status() == StatusCode::OK {
            open.push(res);
        } else {
            expect_rate_limited(res, cap).await;
            refused += 1;
        }
    }
    (open, refused)
}

#[tokio::test]
async fn many_anonymous_sessions_from_one_ip_hold_no_more_streams_than_the_per_ip_cap_and_other_clients_stream_on(
) {
    let app = Arc::new(spawn(options(16, 4, 10_000)).await);
    let attacker = client_from("127.0.0.1");
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(mint(&app, &attacker).await);
    }
    let answers = open_all(&app, &attacker, &sessions).await;
    let (mut held, refused) = partition(answers, "client address").await;
    assert_eq!((held.len(), refused), (4, 6));
    assert_eq!(app.state.events.client_stream_count(ip("127.0.0.1")), 4);

    // Another ip, and the attacker's own open streams, still get their events.
    let other = client_from("127.0.0.2");
    let user = app.login(SessionKind::Stateless).await;
    let mut theirs = open(&app, &other, &user).await;
    assert_eq!(theirs.status(), StatusCode::OK);
    refresh(&app, &user).await;
    expect_event(&mut theirs, "refreshed").await;
    // Each open stream follows one of the sessions: refresh them all; every stream hears.
    for s in &sessions {
        let _ = app.refresh_json(&s.refresh_token()).await;
    }
    for stream in &mut held {
        expect_event(stream, "refreshed").await;
    }
}

#[tokio::test]
async fn an_owner_at_its_cap_is_refused_while_another_owner_on_the_same_ip_streams_on() {
    let app = Arc::new(spawn(options(2, 64, 10_000)).await);
    let client = client_from("127.0.0.1");
    let alice = app.login(SessionKind::Stateless).await;
    let answers = open_all(&app, &client, &[alice.clone(), alice.clone(), alice]).await;
    let (_alice_streams, refused) = partition(answers, "account").await;
    assert_eq!(refused, 1);

    app.add_user("bob@example.com", PASSWORD).await;
    let bob = app
        .login_as("bob@example.com", PASSWORD, SessionKind::Stateless)
        .await;
    let mut stream = open(&app, &client, &bob).await;
    assert_eq!(stream.status(), StatusCode::OK);
    refresh(&app, &bob).await;
    expect_event(&mut stream, "refreshed").await;
}

#[tokio::test]
async fn streams_beyond_the_instance_cap_get_429_while_the_open_ones_still_receive_events() {
    let app = Arc::new(spawn(options(16, 64, 3)).await);
    let minter = client_from("127.0.0.1");
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(mint(&app, &minter).await);
    }
    let mut streams = Vec::new();
    for (n, s) in sessions.iter().take(3).enumerate() {
        let res = open(&app, &client_from(&format!("127.0.0.{}", n + 2)), s).await;
        assert_eq!(res.status(), StatusCode::OK);
        streams.push(res);
    }
    let refused = open(&app, &client_from("127.0.0.9"), &sessions[3]).await;
    expect_rate_limited(refused, "instance").await;
    assert_eq!(app.state.events.stream_count(), 3);

    for (s, stream) in sessions.iter().zip(&mut streams) {
        refresh(&app, s).await;
        expect_event(stream, "refreshed").await;
    }
}

#[tokio::test]
async fn a_closed_stream_frees_its_per_ip_and_its_instance_slot() {
    let app = spawn(options(16, 2, 3)).await;
    let one = client_from("127.0.0.2");
    let two = client_from("127.0.0.3");
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(mint(&app, &app.client).await);
    }
    // 127.0.0.2 fills its cap of 2; 127.0.0.3 fills the instance's 3.
    let mut mine = vec![
        open(&app, &one, &sessions[0]).await,
        open(&app, &one, &sessions[1]).await,
    ];
    expect_rate_limited(open(&app, &one, &sessions[2]).await, "client address").await;
    let theirs = open(&app, &two, &sessions[3]).await;
    assert_eq!(theirs.status(), StatusCode::OK);
    expect_rate_limited(open(&app, &two, &sessions[4]).await, "instance").await;

    // The client of one stream goes away: its ip and the instance get the slot back.
    drop(mine.pop());
    eventually("the closed stream is released", || {
        app.state.events.client_stream_count(ip("127.0.0.2")) == 1
            && app.state.events.stream_count() == 2
    })
    .await;
    let again = open(&app, &one, &sessions[2]).await;
    assert_eq!(again.status(), StatusCode::OK);
    drop(again);
    eventually("the second closed stream is released", || {
        app.state.events.stream_count() == 2
    })
    .await;
    let instance_slot = open(&app, &two, &sessions[4]).await;
    assert_eq!(instance_slot.status(), StatusCode::OK);
    assert_eq!(app.state.events.client_stream_count(ip("127.0.0.3")), 2);
}

#[tokio::test]
async fn streams_ended_by_revocation_or_shutdown_give_their_slots_back() {
    let app = spawn(options(16, 2, 3)).await;
    let one = client_from("127.0.0.2");
    let a = mint(&app, &app.client).await;
    let b = mint(&app, &app.client).await;
    let mut first = open(&app, &one, &a).await;
    let _second = open(&app, &one, &b).await;
    let c = mint(&app, &app.client).await;
    expect_rate_limited(open(&app, &one, &c).await, "client address").await;

    // Revoked: the stream ends and its slot comes back.
    let res = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(a.access_token())
        .send()
        .await
        .expect("logout");
    assert!(res.status().is_success());
    expect_event(&mut first, "revoked").await;
    eventually("the revoked stream is released", || {
        app.state.events.client_stream_count(ip("127.0.0.2")) == 1
            && app.state.events.stream_count() == 1
    })
    .await;
    let third = open(&app, &one, &c).await;
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(app.state.events.client_stream_count(ip("127.0.0.2")), 2);

    // Shutdown: every stream ends, every count is back to zero.
    app.state.events.shutdown();
    eventually("shutdown releases every stream", || {
        app.state.events.client_stream_count(ip("127.0.0.2")) == 0
            && app.state.events.stream_count() == 0
    })
    .await;
}
