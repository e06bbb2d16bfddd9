//! `ApiError`: every failure of the HTTP API as an RFC 9457 `application/problem+json` body
//! with a stable `code`.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::store::StoreError;

/// Seconds a client should wait before retrying after a 503 or 429.
pub const RETRY_AFTER_SECS: u32 = 2;

/// A problem answer: HTTP status, stable code, human-readable detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    /// `Retry-After` seconds of a 429 or 503 (default [`RETRY_AFTER_SECS`]).
    retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
}

impl ApiError {
    /// A problem with an explicit status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 429 `rate_limited` with `Retry-After: retry_after_secs` (at least 1).
    pub fn rate_limited(retry_after_secs: u32, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
            .with_retry_after(retry_after_secs)
    }

    /// Sets the `Retry-After` seconds sent with a 429 or 503 (at least 1).
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// 403 `origin_rejected`.
    pub fn origin_rejected() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "origin_rejected",
            "cookie-authenticated requests must carry an allowed Origin header",
        )
    }

    /// 401 `invalid_token` for a request without credentials.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "a session cookie or an Authorization: Bearer access token is required",
        )
    }

    /// 503 `unavailable`.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is temporarily unavailable; retry shortly",
        )
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        use StatusCode as S;
        let code = e.code();
        let (status, detail) = match e {
            AuthError::InvalidToken => (S::UNAUTHORIZED, "the token is not valid"),
            AuthError::TokenReused => (
                S::UNAUTHORIZED,
                "this token was already rotated; the session has been revoked",
            ),
            AuthError::TokenExpired => (S::UNAUTHORIZED, "the session has expired"),
            AuthError::SessionRevoked => (S::UNAUTHORIZED, "the session has been revoked"),
            AuthError::ModeMismatch => (
                S::UNAUTHORIZED,
                "this token belongs to the other session mode",
            ),
            AuthError::InvalidCredentials => (S::UNAUTHORIZED, "the credentials are not valid"),
            AuthError::RateLimited { retry_after_secs } => {
                return Self::rate_limited(retry_after_secs, "too many requests; retry later");
            }
            AuthError::Unavailable(cause) => {
                tracing::warn!(%cause, "answering 503");
                return Self::unavailable();
            }
            AuthError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (S::INTERNAL_SERVER_ERROR, "an internal error occurred")
            }
        };
        Self::new(status, code, detail)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        AuthError::from(e).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, "bad_request", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = Problem {
            kind: format!("urn:latchkey:problem:{}", self.code),
            title,
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.status, json).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.retry_after.unwrap_or(RETRY_AFTER_SECS)),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"latchkey\""),
            );
        }
        res
    }
}

/// Safety net: any error response that is not already problem+json (a rejection from an
/// extractor or layer) is rewritten into one, so clients always get a `code`.
pub(super) async fn problem_for_every_error(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if is_problem {
        return res;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let detail = status.canonical_reason().unwrap_or("error").to_lowercase();
    ApiError::new(status, code, detail).into_response()
}
