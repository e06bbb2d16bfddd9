//! The HTTP API: `AppState`, the routers, extractors, cookies and the problem+json errors.
//!
//! - [`auth_router`]: the auth API, paths relative to its nest (`/auth` in the binary), no
//!   fallback, so it composes with an app's own routes, state and fallback.
//! - [`ops_router`]: `/healthz` and `/readyz`, separate so an app keeps its own.
//! - [`router`]: the two as `latchkey serve` serves them, with a problem+json 404.
//! - [`metrics_router`]: the protocol counters at `GET /metrics`, on a listener of its own.
//!
//! Handlers stay thin: extract, call [`crate::auth::Auth`], map the result.

mod access;
mod auth;
mod body;
mod client_ip;
mod error;
mod events;
mod extract;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod health;
#[cfg(test)]
mod props;
mod session_face;
mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;

pub use access::REQUEST_ID;
pub use body::{BODY_READ_TIME, DRAIN_LIMIT};
pub use error::{ApiError, RETRY_AFTER_SECS};
pub use extract::{require_session, Authenticated, Credential};
pub use health::OPENAPI_JSON;
pub use web::{client_versioned_path, ACCOUNT_CSP, CLIENT_DTS, CLIENT_JS, CLIENT_TRANSPORT_JS};

use crate::auth::Auth;
use crate::events::EventHub;
use crate::limits::ClientRateLimiter;

/// Largest request body accepted (logins and refreshes are tiny).
pub const BODY_LIMIT: usize = 16 * 1024;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Origins allowed on cookie-authenticated requests, e.g. `https://app.example.com`.
    pub allowed_origins: Vec<String>,
    /// Mark cookies `Secure` and name them `__Host-latchkey`. Disable only for local http.
    pub cookie_secure: bool,
    /// Answer CORS (preflights included) for the [`HttpConfig::allowed_origins`], with
    /// credentials ([`cors_layer`]).
    pub cors: bool,
    /// Proxies whose `X-Forwarded-For` is believed (none by default: the client address is
    /// the TCP peer).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve the account page at `/auth/account` (sign in, the account's sessions, sign out
    /// one, the others or all). Off: those paths answer 404.
    pub account_page: bool,
}

impl HttpConfig {
    /// The session cookie's name: `__Host-latchkey` when Secure, `latchkey` otherwise.
    pub fn cookie_name(&self) -> &'static str {
        if self.cookie_secure {
            "__Host-latchkey"
        } else {
            "latchkey"
        }
    }

    /// Whether `origin` is in the allow-list (exact match, case-insensitive).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }
}

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The protocol engine.
    pub auth: Auth,
    /// HTTP settings.
    pub http: Arc<HttpConfig>,
    /// Live session streams of this instance (`GET /auth/events`).
    pub events: EventHub,
    /// Per-client-ip bucket of `POST /auth/anonymous`.
    pub anonymous_limiter: ClientRateLimiter,
}

/// The auth API with paths relative to where an app nests it (`/login`, `/refresh`, …,
/// `/events`, the browser client `/client.js` and the account page `/account`), for any app
/// state `S` (its own state is given here). No fallback, so it nests
/// or merges into an app that has its own: `app.nest("/auth", auth_router(state, timeout))`.
/// A request under the nest that matches no route is the app's (its fallback answers it).
///
/// Every route but the `/events` stream answers within `request_timeout` (503 `unavailable`
/// past it); bodies are read up front, within [`BODY_LIMIT`]; every error, the wrong method
/// included, is problem+json.
pub fn auth_router<S>(state: AppState, request_timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/login", post(auth::login))
        .route("/anonymous", post(auth::anonymous))
        .route("/refresh", post(auth::refresh))
        .route("/logout", post(auth::logout))
        .route("/logout-all", post(auth::logout_all))
        .route("/password", post(auth::change_password))
        .route("/session", get(auth::session))
        .route("/sessions", get(auth::sessions))
        .route("/sessions/{id}", delete(auth::revoke_session))
        .route("/openapi.json", get(health::openapi))
        .route("/client.js", get(web::client_js))
        .route("/client-transport.js", get(web::client_transport_js))
        .route("/client.d.ts", get(web::client_dts))
        .route("/account", get(web::account))
        .route("/account.js", get(web::account_js))
        .route("/account.css", get(web::account_css))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .route("/events", get(events::events))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::observe,
        ))
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(body::bounded_body))
        .layer(axum::middleware::map_response(
            error::problem_for_every_error,
        ))
        .with_state(state)
}

/// The operational routes, `GET /healthz` (the process answers) and `GET /readyz` (the
/// database answers), for any app state `S`; no fallback. An app with its own health checks
/// leaves it out, or mounts it under another path.
pub fn ops_router<S>(state: AppState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::observe,
        ))
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(axum::middleware::map_response(
            error::problem_for_every_error,
        ))
        .with_state(state)
}

/// What `latchkey serve` serves: [`auth_router`] nested at `/auth`, [`ops_router`], `GET /`
/// (where to go from here), and a problem+json 404 for every other path.
/// With [`HttpConfig::cors`], CORS for the allowed origins ([`cors_layer`]).
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let cors = state.http.cors.then(|| cors_layer(&state.http));
    let router = Router::new()
        .route("/", get(health::index))
        .nest("/auth", auth_router(state.clone(), request_timeout))
        .merge(ops_router(state))
        .fallback(health::not_found)
        .layer(axum::middleware::map_response(
            error::problem_for_every_error,
        ));
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for a front end on another origin: requests (and preflights) from
/// [`HttpConfig::allowed_origins`] only, with credentials (the cookie; the `Authorization`
/// header), the API's methods and headers, preflights cached 10 minutes. Any other origin gets
/// no CORS headers, so the browser withholds the answer from its page. The `Origin` check of
/// cookie writes applies as without CORS.
pub fn cors_layer(config: &HttpConfig) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderValue, Method};
    let origins: Vec<HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(600))
}

/// `GET /metrics` (OpenMetrics text of the protocol counters) and nothing else: for a
/// listener of its own, out of the public API's reach.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(health::not_found)
        .with_state(state)
}
