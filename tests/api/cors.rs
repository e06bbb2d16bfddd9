//! CORS for a front end on another origin: off by default; with `--cors`, the allowed origins
//! get CORS answers with credentials and every other origin gets none.

use crate::helpers::{spawn_app, spawn_app_with, AppOptions, ORIGIN};

/// A preflight of a cookie refresh from `origin`: (status, Access-Control-Allow-Origin,
/// Access-Control-Allow-Credentials).
async fn preflight(
    app: &crate::helpers::TestApp,
    origin: &str,
) -> (u16, Option<String>, Option<String>) {
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/auth/refresh"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        res.status().as_u16(),
        header("access-control-allow-origin"),
        header("access-control-allow-credentials"),
    )
}

#[tokio::test]
async fn with_cors_on_an_allowed_origin_gets_a_credentialed_preflight_and_another_origin_none() {
    let mut opts = AppOptions::default();
    opts.settings.http.cors = true;
    let app = spawn_app_with(opts).await;

    let (status, allow_origin, credentials) = preflight(&app, ORIGIN).await;
    assert_eq!(status, 200);
    assert_eq!(allow_origin.as_deref(), Some(ORIGIN));
    assert_eq!(credentials.as_deref(), Some("true"));

    let (_, allow_origin, _) = preflight(&app, "https://evil.example").await;
    assert_eq!(allow_origin, None, "a refused origin gets no CORS answer");

    // An actual request from the allowed origin carries the CORS headers too.
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("origin", ORIGIN)
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        res.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(ORIGIN)
    );
}

#[tokio::test]
async fn without_cors_no_origin_gets_a_cors_answer() {
    let app = spawn_app().await;
    let (status, allow_origin, _) = preflight(&app, ORIGIN).await;
    assert_eq!(allow_origin, None);
    assert_eq!(status, 405, "an OPTIONS without CORS is the wrong method");
}
