//! The access log and the request metrics: one log line (target `latchkey::access`) and one
//! latency observation per request of a route, under a request id the answer carries in
//! `X-Request-Id` (the client's own when it sent a plausible one, else a new one).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// The header that carries the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Times the request, logs it and counts it by route, method and status.
pub(super) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let id = request_id(request.headers());
    let mut response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state
        .auth
        .metrics()
        .request(&route, method.as_str(), status, seconds);
    tracing::info!(
        target: "latchkey::access",
        request_id = %id,
        method = %method,
        route = %route,
        status,
        ms = seconds * 1000.0,
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The client's `X-Request-Id` when it is 1 to 64 characters of letters, digits, `-`, `_`
/// and `.` (anything else could forge log lines), else a new one: 128 bits from the thread's
/// generator in 32 hex digits (an id for logs, not a secret: no system call per request).
pub(super) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map_or_else(|| format!("{:032x}", rand::random::<u128>()), str::to_owned)
}
