//! Liveness, readiness and the fallbacks.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};

/// The OpenAPI 3.1 description of the API (`src/http/openapi.json`; `tests/api/openapi.rs`
/// fails when a route or an error code is missing from it).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub(super) async fn openapi() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        OPENAPI_JSON,
    )
}

/// `GET /` of `latchkey serve`: what this is and where its parts are.
pub(super) async fn index() -> Json<Value> {
    Json(json!({
        "service": "latchkey",
        "version": env!("CARGO_PKG_VERSION"),
        "api": "/auth",
        "openapi": "/auth/openapi.json",
        "health": "/healthz",
        "ready": "/readyz",
    }))
}

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.auth.store().ping().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::unavailable())
        }
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        {
            let pool = state.auth.store().pool();
            let metrics = state.auth.metrics();
            metrics.observe(&crate::metrics::ScrapeTime {
                pool_size: pool.pg().size(),
                pool_idle: pool.pg().num_idle(),
                streams: state.events.stream_count(),
                hashes: state.auth.hasher().queue(),
            });
            metrics.render()
        },
    )
}

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "bad_request",
        "method not allowed on this path",
    )
}
