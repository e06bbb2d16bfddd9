//! One session, two faces: a login made by `/auth/login` is, in the app's handlers behind
//! `require_session`, the `tower_sessions::Session` they read and write: the same row (its
//! `data`), reached through the same cookie or bearer token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use latchkey::http::{auth_router, require_session};
use latchkey::store::{bind_owner, bound_owner, LoginSessionStore, Owner, OWNER_FIELD};
use latchkey::SessionKind;
use serde_json::{json, Value};
use sqlx::Row;
use tokio::sync::{Barrier, Notify};
use tower_sessions::Session;
use uuid::Uuid;

use crate::helpers::{decode, spawn_app, TestApp, Tokens, ORIGIN, PASSWORD};

/// How many requests race in the concurrent-writes test.
const RACERS: usize = 8;

/// What the app's handlers wait on, so a test can order a race.
#[derive(Clone)]
struct Probe {
    /// Notified by `/app/slow` once it has loaded the session.
    loaded: Arc<Notify>,
    /// `/app/slow` writes once this is notified.
    go: Arc<Notify>,
    /// `/app/key/{k}` writes once [`RACERS`] requests have loaded the session.
    all_loaded: Arc<Barrier>,
}

fn unavailable<E>(_: E) -> StatusCode {
    StatusCode::SERVICE_UNAVAILABLE
}

/// `GET /app/note`: the note, or `-`.
async fn read_note(session: Session) -> Result<String, StatusCode> {
    let note: Option<String> = session.get("note").await.map_err(unavailable)?;
    Ok(note.unwrap_or_else(|| "-".to_owned()))
}

/// `POST /app/note`: keeps the body as the note.
async fn write_note(session: Session, body: String) -> Result<&'static str, StatusCode> {
    session.insert("note", body).await.map_err(unavailable)?;
    Ok("kept")
}

/// `GET /app/data`: the whole session data as JSON.
async fn read_data(session: Session) -> Result<axum::Json<Value>, StatusCode> {
    let mut data = serde_json::Map::new();
    for key in ["note", "cart", OWNER_FIELD] {
        if let Some(v) = session.get_value(key).await.map_err(unavailable)? {
            data.insert(key.to_owned(), v);
        }
    }
    for i in 0..RACERS {
        let key = format!("k{i}");
        if let Some(v) = session.get_value(&key).await.map_err(unavailable)? {
            data.insert(key, v);
        }
    }
    Ok(axum::Json(Value::Object(data)))
}

/// `POST /app/key/{k}`: loads, waits until every racer has loaded, then sets `k`.
async fn write_key(
    State(probe): State<Probe>,
    session: Session,
    Path(key): Path<String>,
) -> Result<&'static str, StatusCode> {
    let _: Option<Value> = session.get("note").await.map_err(unavailable)?;
    probe.all_loaded.wait().await;
    session.insert(&key, true).await.map_err(unavailable)?;
    Ok("set")
}

/// `POST /app/slow`: loads, says so, waits for the go, then writes.
async fn slow_write(
    State(probe): State<Probe>,
    session: Session,
) -> Result<&'static str, StatusCode> {
    let _: Option<Value> = session.get("note").await.map_err(unavailable)?;
    probe.loaded.notify_one();
    probe.go.notified().await;
    session.insert("late", true).await.map_err(unavailable)?;
    Ok("written")
}

/// `GET /app/owner`: the bound owner and the session id as tower-sessions shows them.
async fn owner(session: Session) -> Result<axum::Json<Value>, StatusCode> {
    let owner = bound_owner(&session).await.map_err(unavailable)?;
    Ok(axum::Json(json!({
        "owner": owner.map(|o| o.key()),
        "id": session.id().map(|id| id.to_string()),
    })))
}

/// `POST /app/bind/{user}`: binds the session to `user` (an attempt at a takeover unless it
/// is the login's own user).
async fn bind(session: Session, Path(user): Path<Uuid>) -> Result<&'static str, StatusCode> {
    bind_owner(&session, Owner::User(user))
        .await
        .map_err(unavailable)?;
    session
        .insert("note", "after bind")
        .await
        .map_err(unavailable)?;
    Ok("bound")
}

/// `POST /app/flush`: tower-sessions' logout.
async fn flush(session: Session) -> Result<&'static str, StatusCode> {
    session.flush().await.map_err(unavailable)?;
    Ok("flushed")
}

/// `POST /app/cycle`: tower-sessions' id cycling.
async fn cycle(session: Session) -> Result<&'static str, StatusCode> {
    session.cycle_id().await.map_err(unavailable)?;
    Ok("cycled")
}

/// An app around the service's state: `/auth` nested, `/app/*` behind `require_session`.
struct FacesApp {
    service: TestApp,
    base: String,
    probe: Probe,
}

impl FacesApp {
    async fn start() -> Self {
        let service = spawn_app().await;
        let probe = Probe {
            loaded: Arc::new(Notify::new()),
            go: Arc::new(Notify::new()),
            all_loaded: Arc::new(Barrier::new(RACERS)),
        };
        let app: Router = Router::new()
            .route("/app/note", get(read_note).post(write_note))
            .route("/app/data", get(read_data))
            .route("/app/key/{key}", post(write_key))
            .route("/app/slow", post(slow_write))
            .route("/app/owner", get(owner))
            .route("/app/bind/{user}", post(bind))
            .route("/app/flush", post(flush))
            .route("/app/cycle", post(cycle))
            .route_layer(axum::middleware::from_fn_with_state(
                service.state.clone(),
                require_session,
            ))
            .nest(
                "/auth",
                auth_router(service.state.clone(), Duration::from_secs(30)),
            )
            .with_state(probe.clone());
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
        Self {
            service,
            base,
            probe,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /auth/login` on the app, as `email`.
    async fn login(&self, email: &str, password: &str, mode: SessionKind) -> Tokens {
        let res = self
            .service
            .client
            .post(self.url("/auth/login"))
            .json(&json!({ "email": email, "password": password, "mode": mode }))
            .send()
            .await
            .expect("login");
        let tokens = decode(res).await;
        assert_eq!(tokens.status, 200, "{:?}", tokens.body);
        tokens
    }

    /// A cookie login of the test user: (cookie value, session id).
    async fn cookie_login(&self) -> (String, Uuid) {
        let email = self.service.user.email.clone();
        let tokens = self.login(&email, PASSWORD, SessionKind::Stateful).await;
        (tokens.cookie(), tokens.session_id())
    }

    /// A request on the app with the session cookie and the allowed Origin.
    fn with_cookie(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: &str,
    ) -> reqwest::RequestBuilder {
        self.service
            .client
            .request(method, self.url(path))
            .headers(self.service.cookie_headers(cookie))
    }

    async fn get_text(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        let res = self
            .with_cookie(reqwest::Method::GET, path, cookie)
            .send()
            .await
            .expect("get");
        (res.status(), res.text().await.expect("body"))
    }

    async fn post_text(&self, path: &str, cookie: &str, body: &str) -> reqwest::Response {
        self.with_cookie(reqwest::Method::POST, path, cookie)
            .body(body.to_owned())
            .send()
            .await
            .expect("post")
    }

    /// The row as psql shows it: (data, owner_key, revoked_reason, kind).
    async fn row(&self, id: Uuid) -> (Value, String, Option<String>, String) {
        let row = sqlx::query(
            "SELECT data, owner_key, revoked_reason, kind::text AS kind FROM latchkey.sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.service.db.pool)
        .await
        .expect("session row");
        (
            row.get("data"),
            row.get("owner_key"),
            row.get("revoked_reason"),
            row.get("kind"),
        )
    }
}

fn clears_the_cookie(res: &reqwest::Response, name: &str) -> bool {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with(&format!("{name}=;")) && v.contains("Max-Age=0"))
}

#[tokio::test]
async fn data_written_through_the_tower_session_of_a_cookie_login_is_the_rows_data_and_logout_ends_it(
) {
    let app = FacesApp::start().await;
    let (cookie, id) = app.cookie_login().await;

    assert_eq!(
        app.get_text("/app/note", &cookie).await,
        (StatusCode::OK, "-".to_owned())
    );
    let res = app.post_text("/app/note", &cookie, "buy milk").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "the login's cookie is the session's: no second cookie"
    );
    // The next request of that login reads it …
    assert_eq!(
        app.get_text("/app/note", &cookie).await,
        (StatusCode::OK, "buy milk".to_owned())
    );
    // … because it is the login's own row, as a DBA sees it.
    let (data, owner_key, revoked, kind) = app.row(id).await;
    assert_eq!(data, json!({ "note": "buy milk" }));
    assert_eq!(owner_key, app.service.user.owner_key());
    assert_eq!(revoked, None);
    assert_eq!(kind, "stateful");
    // tower-sessions shows the login's owner and its row id.
    let (status, body) = app.get_text("/app/owner", &cookie).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["owner"], app.service.user.owner_key());
    assert_eq!(body["id"], LoginSessionStore::tower_id(id).to_string());

    // /auth/logout ends both faces: refused, and the data gone from the row.
    let res = app
        .with_cookie(reqwest::Method::POST, "/auth/logout", &cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 204);
    let (status, _) = app.get_text("/app/note", &cookie).await;
    assert_eq!(status, 401);
    let (data, _, revoked, _) = app.row(id).await;
    assert_eq!(data, json!({}));
    assert_eq!(revoked.as_deref(), Some("logout"));
}

#[tokio::test]
async fn another_users_login_sees_nothing_of_a_sessions_data_and_writes_only_its_own() {
    let app = FacesApp::start().await;
    let (cookie, id) = app.cookie_login().await;
    let res = app.post_text("/app/note", &cookie, "alice's secret").await;
    assert_eq!(res.status(), 200);

    let bob = app
        .service
        .add_user("bob@example.com", "bob's password 1")
        .await;
    let bob_login = app
        .login(&bob.email, "bob's password 1", SessionKind::Stateful)
        .await;
    let bob_cookie = bob_login.cookie();
    assert_eq!(
        app.get_text("/app/note", &bob_cookie).await,
        (StatusCode::OK, "-".to_owned())
    );
    let res = app.post_text("/app/note", &bob_cookie, "bob's note").await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.get_text("/app/note", &cookie).await.1, "alice's secret");
    assert_eq!(app.row(id).await.0, json!({ "note": "alice's secret" }));
    assert_eq!(
        app.row(bob_login.session_id()).await.0,
        json!({ "note": "bob's note" })
    );
    // A session id in the request names nothing: the session is the credential's.
    let res = app
        .with_cookie(reqwest::Method::GET, "/app/note", &bob_cookie)
        .header("x-session-id", id.to_string())
        .query(&[("session_id", id.to_string())])
        .send()
        .await
        .expect("get");
    assert_eq!(res.text().await.expect("body"), "bob's note");
}

#[tokio::test]
async fn the_app_cannot_move_a_login_to_another_owner_through_latchkey_owner() {
    let app = FacesApp::start().await;
    let (cookie, id) = app.cookie_login().await;
    let res = app.post_text("/app/note", &cookie, "mine").await;
    assert_eq!(res.status(), 200);

    // Binding the login's own user changes nothing and saves the rest.
    let own = app.service.user.id;
    let res = app
        .post_text(&format!("/app/bind/{own}"), &cookie, "")
        .await;
    assert_eq!(res.status(), 200);
    let (data, owner_key, _, _) = app.row(id).await;
    assert_eq!(
        data,
        json!({ "note": "after bind" }),
        "the owner is not kept in data"
    );
    assert_eq!(owner_key, app.service.user.owner_key());

    // Anyone else: refused, nothing written, the owner untouched.
    let other = app
        .service
        .add_user("mallory@example.com", "mallory pw 1")
        .await;
    let res = app
        .post_text(&format!("/app/bind/{}", other.id), &cookie, "")
        .await;
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let (data, owner_key, revoked, _) = app.row(id).await;
    assert_eq!(data, json!({ "note": "after bind" }));
    assert_eq!(owner_key, app.service.user.owner_key());
    assert_eq!(revoked, None);
    let res = app
        .service
        .client
        .get(app.url("/auth/session"))
        .headers(app.service.cookie_headers(&cookie))
        .send()
        .await
        .expect("whoami");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["owner_key"], app.service.user.owner_key());
}

#[tokio::test]
async fn a_write_of_a_request_that_outlived_the_logout_saves_into_nothing() {
    let app = FacesApp::start().await;
    let (cookie, id) = app.cookie_login().await;
    assert_eq!(
        app.post_text("/app/note", &cookie, "before").await.status(),
        200
    );

    let slow = {
        let req = app.with_cookie(reqwest::Method::POST, "/app/slow", &cookie);
        tokio::spawn(async move { req.send().await.expect("slow") })
    };
    tokio::time::timeout(Duration::from_secs(10), app.probe.loaded.notified())
        .await
        .expect("the slow request loaded the session");
    let res = app
        .with_cookie(reqwest::Method::POST, "/auth/logout", &cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 204);
    app.probe.go.notify_one();
    let slow = slow.await.expect("slow task");
    assert_eq!(
        slow.status(),
        200,
        "the handler answered; its save found no live session"
    );

    let (data, _, revoked, _) = app.row(id).await;
    assert_eq!(data, json!({}), "nothing written after the logout");
    assert_eq!(revoked.as_deref(), Some("logout"));
    assert_eq!(app.get_text("/app/note", &cookie).await.0, 401);
}

#[tokio::test]
async fn concurrent_requests_of_one_login_that_set_different_keys_keep_every_key() {
    let app = FacesApp::start().await;
    let (cookie, id) = app.cookie_login().await;
    assert_eq!(
        app.post_text("/app/note", &cookie, "kept too")
            .await
            .status(),
        200
    );

    // Every request loads the session before any of them writes: each saves a map that
    // lacks the others' keys.
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let req = app.with_cookie(reqwest::Method::POST, &format!("/app/key/k{i}"), &cookie);
            tokio::spawn(async move { req.send().await.expect("racer").status() })
        })
        .collect();
    for racer in racers {
        assert_eq!(racer.await.expect("racer task"), 200);
    }

    let mut expected = serde_json::Map::new();
    expected.insert("note".to_owned(), json!("kept too"));
    for i in 0..RACERS {
        expected.insert(format!("k{i}"), json!(true));
    }
    assert_eq!(app.row(id).await.0, Value::Object(expected.clone()));
    let (status, body) = app.get_text("/app/data", &cookie).await;
    assert_eq!(status, 200);
    expected.insert(OWNER_FIELD.to_owned(), json!(app.service.user.owner_key()));
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        Value::Object(expected)
    );
}

#[tokio::test]
async fn flush_or_cycle_id_in_a_handler_ends_the_login_as_logout_does() {
    let app = FacesApp::start().await;
    for path in ["/app/flush", "/app/cycle"] {
        let (cookie, id) = app.cookie_login().await;
        assert_eq!(app.post_text("/app/note", &cookie, "x").await.status(), 200);
        let res = app.post_text(path, &cookie, "").await;
        assert_eq!(res.status(), 200, "{path}");
        assert!(clears_the_cookie(&res, app.service.cookie_name()), "{path}");
        let (data, _, revoked, _) = app.row(id).await;
        assert_eq!(data, json!({}), "{path}");
        assert_eq!(revoked.as_deref(), Some("logout"), "{path}");
        assert_eq!(app.get_text("/app/note", &cookie).await.0, 401, "{path}");
        let res = app
            .service
            .client
            .post(app.url("/auth/refresh"))
            .headers(app.service.cookie_headers(&cookie))
            .send()
            .await
            .expect("refresh");
        assert_eq!(res.status(), 401, "{path}: the cookie no longer refreshes");
    }
}

#[tokio::test]
async fn a_bearer_caller_keeps_its_data_on_its_own_stateless_session_and_gets_no_cookie() {
    let app = FacesApp::start().await;
    let email = app.service.user.email.clone();
    let tokens = app.login(&email, PASSWORD, SessionKind::Stateless).await;
    let access = tokens.access_token();
    let res = app
        .service
        .client
        .post(app.url("/app/note"))
        .bearer_auth(&access)
        .body("from the phone")
        .send()
        .await
        .expect("write");
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none());
    let res = app
        .service
        .client
        .get(app.url("/app/note"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("read");
    assert_eq!(res.text().await.expect("body"), "from the phone");
    let (data, _, _, kind) = app.row(tokens.session_id()).await;
    assert_eq!(data, json!({ "note": "from the phone" }));
    assert_eq!(kind, "stateless");

    // The refresh token is not a cookie: as one it reaches neither face.
    let res = app
        .service
        .client
        .get(app.url("/app/note"))
        .header(
            "cookie",
            format!("{}={}", app.service.cookie_name(), tokens.refresh_token()),
        )
        .header("origin", ORIGIN)
        .send()
        .await
        .expect("refresh token as a cookie");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn an_anonymous_visitors_data_is_carried_into_the_login_that_follows() {
    let app = FacesApp::start().await;
    let res = app
        .service
        .client
        .post(app.url("/auth/anonymous"))
        .json(&json!({ "mode": SessionKind::Stateful }))
        .send()
        .await
        .expect("anonymous");
    let anonymous = decode(res).await;
    assert_eq!(anonymous.status, 200);
    let anon_cookie = anonymous.cookie();
    assert_eq!(
        app.post_text("/app/note", &anon_cookie, "cart: 2 apples")
            .await
            .status(),
        200
    );
    let (status, body) = app.get_text("/app/owner", &anon_cookie).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["owner"],
        Value::Null,
        "an anonymous session has no bound owner"
    );

    let res = app
        .with_cookie(reqwest::Method::POST, "/auth/login", &anon_cookie)
        .json(&json!({
            "email": app.service.user.email,
            "password": PASSWORD,
            "mode": SessionKind::Stateful,
            "carry_data": true,
        }))
        .send()
        .await
        .expect("login");
    let login = decode(res).await;
    assert_eq!(login.status, 200);
    let cookie = login.cookie();
    assert_eq!(app.get_text("/app/note", &cookie).await.1, "cart: 2 apples");
    assert_eq!(app.get_text("/app/note", &anon_cookie).await.0, 401);
}
