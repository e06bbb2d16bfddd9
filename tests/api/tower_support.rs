//! A tiny axum app on any tower-sessions store, driven in-process as a browser would: the
//! conformance and resurrection tests run it against our store and the stock one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Barrier;
use tower::ServiceExt;
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};

/// Two rendezvous for `/race/{key}/{value}`: after the handler loaded the session, and
/// before it writes.
#[derive(Clone)]
pub struct Race {
    pub loaded: Arc<Barrier>,
    pub proceed: Arc<Barrier>,
}

impl Race {
    pub fn new() -> Self {
        Self {
            loaded: Arc::new(Barrier::new(2)),
            proceed: Arc::new(Barrier::new(2)),
        }
    }
}

async fn get_value(session: Session, Path(key): Path<String>) -> (StatusCode, String) {
    match session.get::<serde_json::Value>(&key).await {
        Ok(Some(v)) => (StatusCode::OK, v.to_string()),
        Ok(None) => (StatusCode::NOT_FOUND, String::new()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn set_value(session: Session, Path((key, value)): Path<(String, String)>) -> StatusCode {
    match session.insert(&key, value).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn flush(session: Session) -> StatusCode {
    match session.flush().await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn cycle(session: Session) -> StatusCode {
    match session.cycle_id().await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Loads, waits for the test to log the session out, then writes: an in-flight request
/// finishing after logout.
async fn race(
    State(race): State<Option<Race>>,
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> StatusCode {
    let Some(race) = race else {
        return StatusCode::NOT_FOUND;
    };
    let _ = session.get::<serde_json::Value>(&key).await;
    race.loaded.wait().await;
    race.proceed.wait().await;
    match session.insert(&key, value).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The app: `GET /get/{k}`, `POST /set/{k}/{v}`, `POST /flush`, `POST /cycle`,
/// `GET /noop`, `POST /race/{k}/{v}`.
pub fn session_app<S: SessionStore + Clone>(
    store: S,
    expiry: Option<Expiry>,
    race_hooks: Option<Race>,
) -> Router {
    let mut layer = SessionManagerLayer::new(store).with_secure(false);
    if let Some(expiry) = expiry {
        layer = layer.with_expiry(expiry).with_always_save(true);
    }
    Router::new()
        .route("/get/{key}", get(get_value))
        .route("/set/{key}/{value}", post(set_value))
        .route("/flush", post(flush))
        .route("/cycle", post(cycle))
        .route("/noop", get(|| async { StatusCode::OK }))
        .route("/race/{key}/{value}", post(race))
        .with_state(race_hooks)
        .layer(layer)
}

/// One response: status, the session cookie value set (empty when removed), the body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub cookie: Option<String>,
    pub body: String,
}

/// Sends one request with the session cookie `id=<cookie>` if given.
pub async fn call(app: &Router, method: &str, path: &str, cookie: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("id={c}"));
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("id="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned());
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    Reply {
        status,
        cookie,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}
