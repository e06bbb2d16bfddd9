//! latchkey's routers inside an app that has its own state, routes, health check and fallback:
//! nothing panics at build time, the app keeps its own answers, and the auth API works under
//! the path the app nests it at.

use std::net::SocketAddr;

use axum::extract::{FromRef, State};
use axum::routing::{get, post};
use axum::{Extension, Router};
use latchkey::http::{auth_router, require_session, AppState, Authenticated};
use latchkey::SessionKind;
use serde_json::{json, Value};

use crate::helpers::spawn_app;

/// The app's own state, which carries latchkey's.
#[derive(Clone)]
struct MyState {
    name: &'static str,
    latchkey: AppState,
}

impl FromRef<MyState> for AppState {
    fn from_ref(s: &MyState) -> AppState {
        s.latchkey.clone()
    }
}

/// An app handler on the app's state that needs a session: the extractor alone.
async fn my_profile(State(s): State<MyState>, who: Authenticated) -> String {
    format!("{} knows {}", s.name, who.caller.owner_key)
}

/// An app handler behind the `require_session` layer.
async fn my_action(Extension(who): Extension<Authenticated>) -> String {
    format!("done for session {}", who.caller.session_id)
}

async fn my_health(State(s): State<MyState>) -> String {
    format!("{} is fine", s.name)
}

async fn my_fallback() -> (axum::http::StatusCode, &'static str) {
    (axum::http::StatusCode::NOT_FOUND, "the app's own 404")
}

#[tokio::test]
async fn the_auth_router_nests_into_an_app_with_its_own_state_health_check_and_fallback() {
    let service = spawn_app().await;
    let user = service
        .add_user("embed@example.com", "embed password 1")
        .await;
    let protected = Router::new()
        .route("/app/action", post(my_action))
        .route_layer(axum::middleware::from_fn_with_state(
            service.state.clone(),
            require_session,
        ));
    let app: Router = Router::new()
        .route("/healthz", get(my_health))
        .route("/hello", get(|| async { "hello" }))
        .route("/app/profile", get(my_profile))
        .merge(protected)
        .nest(
            "/auth",
            auth_router(service.state.clone(), std::time::Duration::from_secs(30)),
        )
        .fallback(my_fallback)
        .with_state(MyState {
            name: "my app",
            latchkey: service.state.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    // The app's own routes, health check and fallback answer as the app wrote them.
    let res = get("/healthz").await.expect("healthz");
    assert_eq!(res.text().await.expect("body"), "my app is fine");
    assert_eq!(
        get("/hello")
            .await
            .expect("hello")
            .text()
            .await
            .expect("body"),
        "hello"
    );
    for path in ["/nowhere", "/auth/nowhere", "/auth"] {
        let res = get(path).await.expect("request");
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(
            res.text().await.expect("body"),
            "the app's own 404",
            "{path}"
        );
    }

    // The auth API under /auth: a login, then the session it made.
    let res = client
        .post(format!("{base}/auth/login"))
        .json(&json!({ "email": user.email, "password": "embed password 1", "mode": SessionKind::Stateless }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let access = body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let res = client
        .get(format!("{base}/auth/session"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("session");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["owner_key"], format!("user:{}", user.id));
    let session_id = body["session_id"].as_str().expect("session id").to_owned();

    // The app's own routes that need a session: refused without one, as /auth refuses.
    let res = get("/app/profile").await.expect("profile");
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = client
        .post(format!("{base}/app/action"))
        .send()
        .await
        .expect("action");
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    // With the access token: the extractor on the app's own state, and the layer.
    let res = client
        .get(format!("{base}/app/profile"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("profile");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.expect("body"),
        format!("my app knows user:{}", user.id)
    );
    let res = client
        .post(format!("{base}/app/action"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("action");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.expect("body"),
        format!("done for session {session_id}")
    );
    // A stateful cookie on an unsafe method needs an allowed Origin, as on /auth.
    let res = client
        .post(format!("{base}/auth/login"))
        .json(&json!({ "email": user.email, "password": "embed password 1", "mode": SessionKind::Stateful }))
        .send()
        .await
        .expect("stateful login");
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()
                .filter(|c| c.starts_with(service.cookie_name()))
        })
        .expect("session cookie")
        .to_owned();
    let res = client
        .post(format!("{base}/app/action"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("action without origin");
    assert_eq!(res.status(), 403);
    let res = client
        .get(format!("{base}/app/profile"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("profile with the cookie");
    assert_eq!(res.status(), 200);

    // Its errors stay problem+json, the wrong method included.
    let res = get("/auth/login").await.expect("GET login");
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "a 405 under the nest is latchkey's problem+json"
    );
    let res = client
        .post(format!("{base}/auth/login"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("bad login");
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn an_app_building_latchkeys_state_with_a_weak_or_published_jwt_secret_is_refused() {
    let db = crate::helpers::TestDb::new().await;
    for (secret, says) in [
        ("too-short", "must be 32 to 1024 bytes"),
        ("change-me-change-me-change-me-change-me", "published"),
    ] {
        let settings = latchkey::app::Settings::local(
            "127.0.0.1:0".parse().expect("addr"),
            secrecy::SecretString::from(secret.to_owned()),
        );
        let refused = AppState::build(&settings, db.pool.clone())
            .err()
            .unwrap_or_else(|| panic!("{secret:?} accepted"));
        assert!(refused.to_string().contains(says), "{refused}");
    }
}
