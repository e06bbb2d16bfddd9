//! Every malformed body, header, cookie or token gets a 4xx problem+json with a code; never a
//! 5xx; the service stays healthy. [`storm`]: the same for thousands of generated ones.

mod storm;

use latchkey::SessionKind;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app, TestApp, ORIGIN};

/// One hostile request.
struct Case {
    name: String,
    method: Method,
    path: &'static str,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

fn case(name: impl Into<String>, path: &'static str, body: impl Into<Vec<u8>>) -> Case {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Case {
        name: name.into(),
        method: Method::POST,
        path,
        headers,
        body: Some(body.into()),
    }
}

fn refresh_json(name: &str, token: &str) -> Case {
    case(
        name,
        "/auth/refresh",
        serde_json::json!({ "refresh_token": token }).to_string(),
    )
}

fn with_header(mut c: Case, name: &'static str, value: &[u8]) -> Case {
    c.headers
        .insert(name, HeaderValue::from_bytes(value).expect("header bytes"));
    c
}

fn get(name: &str, path: &'static str) -> Case {
    Case {
        name: name.into(),
        method: Method::GET,
        path,
        headers: HeaderMap::new(),
        body: None,
    }
}

fn cases(app: &TestApp, valid_refresh: &str, valid_cookie: &str) -> Vec<Case> {
    let cookie = |v: &str| format!("{}={v}", app.cookie_name()).into_bytes();
    let truncated = &valid_refresh[..valid_refresh.len() - 3];
    let body_of_valid = &valid_refresh[4..];
    let mut c = vec![
        // Refresh bodies.
        case("empty object", "/auth/refresh", "{}"),
        case("token is a number", "/auth/refresh", r#"{"refresh_token":123}"#),
        case("token is null", "/auth/refresh", r#"{"refresh_token":null}"#),
        case("token is an array", "/auth/refresh", r#"{"refresh_token":["a"]}"#),
        case("token is an object", "/auth/refresh", r#"{"refresh_token":{"a":1}}"#),
        refresh_json("empty token", ""),
        refresh_json("prefix only", "lkr_"),
        refresh_json("truncated", truncated),
        refresh_json("one char too many", &format!("{valid_refresh}A")),
        refresh_json("unknown prefix", &format!("xyz_{body_of_valid}")),
        refresh_json("upper-case prefix", &format!("LKR_{body_of_valid}")),
        refresh_json("standard base64 alphabet", &format!("lkr_{}+/", &body_of_valid[2..])),
        refresh_json("padding", &format!("lkr_{}==", &body_of_valid[2..])),
        refresh_json("bang in base64", &format!("lkr_{}!", &body_of_valid[1..])),
        refresh_json("sql injection", "' OR 1=1 --"),
        refresh_json("sql in token shape", "lkr_'; DROP TABLE latchkey.sessions; --"),
        refresh_json("unicode", "lkr_ééééééééééééééééééééééééééééééééé"),
        refresh_json("leading space", &format!(" {valid_refresh}")),
        refresh_json("nul byte", "lkr_\u{0}"),
        refresh_json("10 KB token", &"A".repeat(10_000)),
        refresh_json("jwt where refresh expected", "eyJhbGciOiJub25lIn0.e30."),
        case("body over the limit", "/auth/refresh", format!(r#"{{"refresh_token":"{}"}}"#, "A".repeat(100_000))),
        case("non-UTF-8 body", "/auth/refresh", vec![0xff, 0xfe, 0xfd, b'{']),
        case("not JSON", "/auth/refresh", "refresh_token=abc"),
        case("JSON array", "/auth/refresh", "[]"),
        case("JSON string", "/auth/refresh", format!("\"{valid_refresh}\"")),
        case("JSON null", "/auth/refresh", "null"),
        case("truncated JSON", "/auth/refresh", r#"{"refresh_token":"#),
        case("neither cookie nor body", "/auth/refresh", ""),
        with_header(
            refresh_json("cookie and body together", valid_refresh),
            "cookie",
            &cookie(valid_cookie),
        ),
        with_header(
            case("bearer header on refresh", "/auth/refresh", ""),
            "authorization",
            b"Bearer abc",
        ),
        with_header(
            with_header(case("garbage cookie", "/auth/refresh", ""), "cookie", &cookie("garbage")),
            "origin",
            ORIGIN.as_bytes(),
        ),
        with_header(
            with_header(case("non-UTF-8 cookie", "/auth/refresh", ""), "cookie", b"latchkey=\xff\xfe"),
            "origin",
            ORIGIN.as_bytes(),
        ),
        with_header(
            case("cookie without Origin", "/auth/refresh", ""),
            "cookie",
            &cookie(valid_cookie),
        ),
        with_header(
            with_header(case("cookie from an evil Origin", "/auth/refresh", ""), "cookie", &cookie(valid_cookie)),
            "origin",
            b"https://evil.example",
        ),
        // Login bodies.
        case("login empty object", "/auth/login", "{}"),
        case("login missing password", "/auth/login", r#"{"email":"a@b.c","mode":"stateless"}"#),
        case("login missing mode", "/auth/login", r#"{"email":"a@b.c","password":"x"}"#),
        case("login unknown mode", "/auth/login", r#"{"email":"a@b.c","password":"x","mode":"both"}"#),
        case("login mode is a number", "/auth/login", r#"{"email":"a@b.c","password":"x","mode":1}"#),
        case("login email is a number", "/auth/login", r#"{"email":5,"password":"x","mode":"stateless"}"#),
        case("login empty email", "/auth/login", r#"{"email":"","password":"x","mode":"stateless"}"#),
        case("login nul in email", "/auth/login", "{\"email\":\"a\\u0000@b.c\",\"password\":\"x\",\"mode\":\"stateless\"}"),
        case("login huge email", "/auth/login", format!(r#"{{"email":"{}@b.c","password":"x","mode":"stateless"}}"#, "a".repeat(300))),
        case("login 2 KB password", "/auth/login", format!(r#"{{"email":"a@b.c","password":"{}","mode":"stateless"}}"#, "p".repeat(2048))),
        case("login extra field", "/auth/login", r#"{"email":"a@b.c","password":"x","mode":"stateless","admin":true}"#),
        case("login sql injection", "/auth/login", r#"{"email":"' OR 1=1 --","password":"' OR 1=1 --","mode":"stateless"}"#),
        with_header(
            case("login as text/plain", "/auth/login", r#"{"email":"a@b.c","password":"x","mode":"stateless"}"#),
            "content-type",
            b"text/plain",
        ),
        // Authorization headers.
        with_header(get("basic auth", "/auth/session"), "authorization", b"Basic YTpi"),
        with_header(get("empty bearer", "/auth/session"), "authorization", b"Bearer "),
        with_header(get("garbage bearer", "/auth/session"), "authorization", b"Bearer garbage"),
        with_header(get("non-ASCII bearer", "/auth/session"), "authorization", b"Bearer \xff\xfe"),
        with_header(
            get("unsigned jwt", "/auth/session"),
            "authorization",
            b"Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1c2VyOngiLCJleHAiOjk5OTk5OTk5OTl9.",
        ),
        with_header(
            with_header(get("cookie and bearer", "/auth/session"), "authorization", b"Bearer x"),
            "cookie",
            &cookie(valid_cookie),
        ),
        get("no credentials", "/auth/sessions"),
        get("unknown path", "/nope"),
        get("login by GET", "/auth/login"),
    ];
    let mut del = with_header(
        get("delete a non-uuid session", "/auth/sessions/not-a-uuid"),
        "cookie",
        &cookie(valid_cookie),
    );
    del.method = Method::DELETE;
    del.headers
        .insert("origin", HeaderValue::from_static(ORIGIN));
    c.push(del);
    c
}

#[tokio::test]
async fn forty_plus_malformed_inputs_get_a_4xx_problem_with_a_code_and_never_a_5xx() {
    let app = spawn_app().await;
    let stateless = app.login(SessionKind::Stateless).await;
    let stateful = app.login(SessionKind::Stateful).await;
    let all = cases(&app, &stateless.refresh_token(), &stateful.cookie());
    assert!(all.len() >= 40, "only {} cases", all.len());
    for c in all {
        let mut req = app
            .client
            .request(c.method.clone(), app.url(c.path))
            .headers(c.headers);
        if let Some(body) = c.body {
            req = req.body(body);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        assert!(status.is_client_error(), "{}: got {status} {body}", c.name);
        assert_eq!(ctype, "application/problem+json", "{}", c.name);
        assert!(
            body["code"].as_str().is_some_and(|s| !s.is_empty()),
            "{}: no code in {body}",
            c.name
        );
        assert_eq!(body["status"], status.as_u16(), "{}", c.name);
    }
    // Still healthy, and nobody was logged out by any of it.
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        app.refresh_json(&stateless.refresh_token()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.refresh_cookie(&stateful.cookie()).await.status,
        StatusCode::OK
    );
    let revoked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions WHERE revoked_at IS NOT NULL")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(revoked, 0);
}
