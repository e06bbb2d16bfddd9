//! Logs never hold a secret: with every log line of the process captured at `debug`, a
//! service goes through logins of both modes, refreshes (a replay inside the grace window
//! and a reuse after it included), logout, logout-all, a password change, API-key use, bad
//! requests that carry secrets and live event streams; no issued token (cookie, refresh,
//! access JWT), the JWT secret, a password or an API key, nor the secret inside a token,
//! appears in any line.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use latchkey::token::{ApiKeyToken, SessionToken};
use latchkey::SessionKind;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    decode, spawn_app_with, AppOptions, TestApp, Tokens, PASSWORD, TEST_JWT_SECRET,
};
use crate::log_capture::LogCapture;

/// The password the account changes to.
const NEW_PASSWORD: &str = "tangerine lantern orbit 42";
/// A wrong password a client sends.
const WRONG_PASSWORD: &str = "wrong-password-wrong-password";

/// Every secret seen, with the forms it could leak in.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    /// Keeps `value` and, for a token, the secret it carries (its base64 body, the raw
    /// secret in hex and base64) or, for a JWT, its signature.
    fn keep(&mut self, label: &str, value: &str) {
        self.0.push((label.to_owned(), value.to_owned()));
        let secret = SessionToken::parse(value)
            .map(|t| *t.secret.expose())
            .or_else(|_| ApiKeyToken::parse(value).map(|k| *k.secret.expose()));
        if let Ok(secret) = secret {
            self.0
                .push((format!("{label} (body)"), value[4..].to_owned()));
            self.0
                .push((format!("{label} (secret, hex)"), hex(&secret)));
            self.0.push((
                format!("{label} (secret, base64url)"),
                URL_SAFE_NO_PAD.encode(secret),
            ));
        } else if let Some((_, signature)) = value.rsplit_once('.') {
            self.0
                .push((format!("{label} (signature)"), signature.to_owned()));
        }
    }

    /// Keeps the tokens of a login or refresh answer.
    fn keep_issued(&mut self, label: &str, answer: &Tokens) {
        assert_eq!(answer.status, StatusCode::OK, "{label}: {:?}", answer.body);
        if let Some(refresh) = answer.body["refresh_token"].as_str() {
            self.keep(&format!("{label} refresh token"), refresh);
        }
        if let Some(access) = answer.body["access_token"].as_str() {
            self.keep(&format!("{label} access token"), access);
        }
        if answer.set_cookie.is_some() {
            self.keep(&format!("{label} cookie"), &answer.cookie());
        }
    }

    /// The first secret found in `logs`, with the line that holds it.
    fn leaked_in(&self, logs: &str) -> Option<(String, String)> {
        self.0.iter().find_map(|(label, value)| {
            logs.lines()
                .find(|line| line.contains(value.as_str()))
                .map(|line| (label.clone(), line.to_owned()))
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A service whose grace window is 1 s, so a reuse after it takes a short wait.
async fn app() -> TestApp {
    let mut opts = AppOptions::default();
    opts.settings.auth.grace_secs = 1;
    spawn_app_with(opts).await
}

async fn post(
    app: &TestApp,
    path: &str,
    build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Tokens {
    let res = build(app.client.post(app.url(path)))
        .send()
        .await
        .expect("request");
    decode(res).await
}

/// Opens `/auth/events` with `headers`, reads its first bytes, and returns the response so
/// the stream stays open until it is dropped.
async fn open_stream(app: &TestApp, headers: reqwest::header::HeaderMap) -> reqwest::Response {
    let mut res = app
        .client
        .get(app.url("/auth/events"))
        .headers(headers)
        .send()
        .await
        .expect("events");
    assert_eq!(res.status(), StatusCode::OK);
    let _ = tokio::time::timeout(Duration::from_millis(300), res.chunk()).await;
    res
}

#[tokio::test]
async fn no_log_line_at_debug_holds_a_token_a_password_an_api_key_or_the_jwt_secret() {
    let capture = LogCapture::start();
    let app = app().await;
    let mut secrets = Secrets::default();
    secrets.keep("JWT secret", &TEST_JWT_SECRET);
    secrets.keep("password", PASSWORD);
    secrets.keep("new password", NEW_PASSWORD);
    secrets.keep("wrong password", WRONG_PASSWORD);

    // Logins of both modes, and a refused one.
    let stateless = app.login(SessionKind::Stateless).await;
    secrets.keep_issued("stateless login", &stateless);
    let stateful = app.login(SessionKind::Stateful).await;
    secrets.keep_issued("stateful login", &stateful);
    let email = app.user.email.clone();
    let refused = app
        .login_as(&email, WRONG_PASSWORD, SessionKind::Stateless)
        .await;
    assert_eq!(refused.code(), "invalid_credentials");

    // Refresh of both modes; a replay inside the grace window; a reuse after it.
    let first = stateless.refresh_token();
    let rotated = app.refresh_json(&first).await;
    secrets.keep_issued("refresh", &rotated);
    let replay = app.refresh_json(&first).await;
    secrets.keep_issued("grace replay", &replay);
    let cookie = stateful.cookie();
    let rotated_cookie = app.refresh_cookie(&cookie).await;
    secrets.keep_issued("cookie refresh", &rotated_cookie);
    let next = app.refresh_json(&rotated.refresh_token()).await;
    secrets.keep_issued("second refresh", &next);

    // Live streams of both credentials.
    let bearer_stream = {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "authorization",
            format!("Bearer {}", next.access_token())
                .parse()
                .expect("header"),
        );
        open_stream(&app, h).await
    };
    let cookie_stream = open_stream(&app, app.cookie_headers(&rotated_cookie.cookie())).await;
    // A token in the query string is refused.
    let query = app
        .client
        .get(app.url(&format!(
            "/auth/events?access_token={}",
            next.access_token()
        )))
        .send()
        .await
        .expect("events with a query token");
    assert!(query.status().is_client_error());

    // Bad requests that carry secrets.
    let live = next.refresh_token();
    let both = post(&app, "/auth/refresh", |r| {
        r.headers(app.cookie_headers(&rotated_cookie.cookie()))
            .json(&json!({ "refresh_token": live }))
    })
    .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    for body in [
        format!("{{\"refresh_token\": \"{live}\""),
        format!("{{\"refresh_token\": \"{live}\", \"extra\": \"{live}\"}}"),
        format!("{{\"refresh_token\": [\"{live}\"]}}"),
        format!("{{\"email\": \"{email}\", \"password\": \"{PASSWORD}\", \"mode\": \"{live}\"}}"),
        format!("{{\"email\": \"{email}\", \"password\": [\"{PASSWORD}\"]}}"),
    ] {
        for path in ["/auth/refresh", "/auth/login"] {
            let res = post(&app, path, |r| {
                r.header("content-type", "application/json")
                    .body(body.clone())
            })
            .await;
            assert!(
                res.status.is_client_error(),
                "{path} {body}: {}",
                res.status
            );
        }
    }
    let wrong_mode = app.whoami_bearer(&live).await;
    assert_eq!(wrong_mode.status, StatusCode::UNAUTHORIZED);
    let basic = post(&app, "/auth/logout", |r| {
        r.header("authorization", format!("Basic {live}"))
    })
    .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    let cookie_as_refresh = app.refresh_json(&rotated_cookie.cookie()).await;
    assert_eq!(cookie_as_refresh.status, StatusCode::UNAUTHORIZED);

    // API-key use, and a refused key.
    let (_, key) = app.create_api_key().await;
    secrets.keep("API key", &key);
    let by_key = app.login_api_key(&key).await;
    secrets.keep_issued("API-key login", &by_key);
    let mut wrong_key = key.clone().into_bytes();
    wrong_key[10] = if wrong_key[10] == b'A' { b'B' } else { b'A' };
    let wrong_key = String::from_utf8(wrong_key).expect("ascii");
    secrets.keep("wrong API key", &wrong_key);
    assert_eq!(
        app.login_api_key(&wrong_key).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Logout of the cookie session (its stream ends).
    let out = post(&app, "/auth/logout", |r| {
        r.headers(app.cookie_headers(&rotated_cookie.cookie()))
    })
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);

    // A password change, wrong then right.
    for (current, status) in [
        (WRONG_PASSWORD, StatusCode::UNAUTHORIZED),
        (PASSWORD, StatusCode::OK),
    ] {
        let res = post(&app, "/auth/password", |r| {
            r.bearer_auth(next.access_token()).json(&json!({
                "current_password": current, "new_password": NEW_PASSWORD
            }))
        })
        .await;
        assert_eq!(res.status, status, "{:?}", res.body);
    }

    // Reuse after the grace window revokes the session.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The previous token of the chain (the one before the current), after the window.
    let reused = app.refresh_json(&rotated.refresh_token()).await;
    assert_eq!(reused.code(), "token_reused");

    // Logout-all with the API-key session.
    let relogin = app
        .login_as(&email, NEW_PASSWORD, SessionKind::Stateful)
        .await;
    secrets.keep_issued("login after the change", &relogin);
    let all = post(&app, "/auth/logout-all", |r| {
        r.bearer_auth(by_key.access_token())
    })
    .await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    drop((bearer_stream, cookie_stream));
    // Let the streams' ends and the listener's notifications be logged.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let logs = capture.text();
    assert!(
        logs.contains("latchkey::access") && logs.contains("/auth/refresh"),
        "the capture holds the service's log lines:\n{logs}"
    );
    assert!(
        logs.contains("rotated token reused after grace"),
        "the reuse was logged"
    );
    if let Some((label, line)) = secrets.leaked_in(&logs) {
        panic!("the {label} appears in the service's log:\n{line}");
    }
}
