//! The request metrics' labels stay a bounded set whatever methods the clients make up: only
//! a matched route and method is counted (the layer is a route layer).

use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app_with, AppOptions};

/// Made-up methods a client sends, each a valid HTTP token.
const MADE_UP: usize = 40;

#[tokio::test]
async fn made_up_methods_create_no_metrics_series() {
    let mut opts = AppOptions::default();
    opts.settings.metrics_bind = Some("127.0.0.1:0".parse().expect("addr"));
    let app = spawn_app_with(opts).await;
    for i in 0..MADE_UP {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).expect("a token");
        for path in ["/auth/refresh", "/no/such/route"] {
            let res = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .expect("request");
            assert!(
                res.status().is_client_error(),
                "{method} {path}: {}",
                res.status()
            );
        }
        let res = app
            .client
            .request(Method::GET, app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(res.status(), StatusCode::OK);
    }
    let text = app.metrics_text().await;
    let counts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("latchkey_http_request_duration_seconds_count{"))
        .collect();
    assert!(
        !counts.iter().any(|l| l.contains("MADEUP")),
        "a made-up method became a label: {counts:#?}"
    );
    assert!(
        counts
            .iter()
            .any(|l| l.contains("route=\"/healthz\",method=\"GET\",status=\"200\"")),
        "the standard methods keep their own label: {counts:#?}"
    );
    // Any token is a valid HTTP method: were the requests of a made-up one counted by the
    // method sent, each would add a series kept for the life of the process.
    assert_eq!(counts.len(), 1, "{counts:#?}");
}
