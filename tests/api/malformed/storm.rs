//! The malformed-HTTP storm in short: 2,000 requests of the generator `latchkey-bench
//! --scenario malformed` uses (half raw TCP, half HTTP), against a service with real tokens
//! to misuse; not one answer is a 5xx, and login and refresh still work afterwards. The full
//! run (100,000 requests against `latchkey serve`, with its log and memory watched) is in
//! docs/RELIABILITY.md.

#[path = "../../../src/bin/latchkey-bench/hostile.rs"]
mod hostile;
#[path = "../../../src/bin/latchkey-bench/hostile_wire.rs"]
mod hostile_wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use latchkey::SessionKind;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{decode, spawn_app, PASSWORD};
use hostile::Material;

/// The seed of the smoke run; `latchkey-bench --scenario malformed --seed 7` replays it.
const SEED: u64 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_hostile_requests_get_no_5xx_and_the_service_stays_healthy() {
    let app = spawn_app().await;
    let stateless = app.login(SessionKind::Stateless).await;
    let stateful = app.login(SessionKind::Stateful).await;
    let material = Arc::new(Material {
        tokens: vec![
            stateless.refresh_token(),
            stateless.access_token(),
            stateful.cookie(),
        ],
        email: app.user.email.clone(),
    });
    let addr: SocketAddr = app
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let tally = hostile_wire::storm(addr, SEED, 2_000, 8, material).await;
    println!("storm answers: {}", tally.summary());
    assert_eq!(tally.raw + tally.http, 2_000);
    assert_eq!(
        tally.count_5xx(),
        0,
        "5xx answers (request index, status) {:?}; all answers: {}; unanswered {:?}",
        tally.server_errors,
        tally.summary(),
        tally.unanswered
    );

    // A client the storm's throttled address does not stand for logs in and refreshes.
    let fresh = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("client");
    let login = decode(
        fresh
            .post(app.url("/auth/login"))
            .json(&json!({ "email": app.user.email, "password": PASSWORD, "mode": "stateless" }))
            .send()
            .await
            .expect("login"),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let refreshed = decode(
        fresh
            .post(app.url("/auth/refresh"))
            .json(&json!({ "refresh_token": login.refresh_token() }))
            .send()
            .await
            .expect("refresh"),
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
    let ready = fresh.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
}
