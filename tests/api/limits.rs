//! Per-client limits: anonymous minting per client ip, live streams per owner, per client ip
//! and per instance. Clients bind other loopback addresses (127.0.0.x) to be other ips.

mod anonymous;
mod streams;

use std::net::IpAddr;

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{decode, TestApp, Tokens};

/// A client whose connections come from `ip` (any 127.x.y.z reaches the service).
fn client_from(ip: &str) -> Client {
    Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// `POST /auth/anonymous` (stateless) from `client`.
async fn mint(app: &TestApp, client: &Client) -> Tokens {
    let res = client
        .post(app.url("/auth/anonymous"))
        .json(&json!({ "mode": "stateless" }))
        .send()
        .await
        .expect("anonymous");
    decode(res).await
}

/// `Retry-After` of a response, in seconds.
fn retry_after(res: &Response) -> u64 {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds")
}

/// Asserts a 429 `rate_limited` problem whose detail contains `cap`; returns `Retry-After`.
async fn expect_rate_limited(res: Response, cap: &str) -> u64 {
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs = retry_after(&res);
    assert!(secs >= 1);
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["code"], "rate_limited", "{body}");
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(cap),
        "detail {detail:?} should name {cap:?}"
    );
    secs
}
