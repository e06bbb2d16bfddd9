//! `GET /auth/events`: Server-Sent Events for the caller's own session.
//!
//! The stream follows the session the caller authenticated with, nothing the client names:
//! every header, cookie or query parameter other than the credential is ignored. A cookie
//! needs an allowed `Origin` even on this GET (cross-site hijacking of a cookie stream); a
//! credential in the query string is refused (it would end up in logs and referrers).

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use super::client_ip::ClientIp;
use super::extract::{authenticate, OriginPolicy};
use super::{ApiError, AppState};
use crate::events::TooManyStreams;
use crate::limits::client_key;

/// Query parameter names that carry credentials in common clients.
const CREDENTIAL_PARAMS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "jwt",
    "auth",
    "authorization",
    "bearer",
    "api_key",
    "apikey",
    "key",
    "session_token",
    "latchkey",
    "__host-latchkey",
];

/// Whether a query value looks like a credential: a latchkey token or a JWT.
fn looks_like_credential(value: &str) -> bool {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    lower.starts_with("lks_")
        || lower.starts_with("lkr_")
        || lower.starts_with("bearer ")
        || (v.starts_with("eyJ") && v.split('.').count() == 3)
}

/// Refuses a query string that carries a credential, by name or by shape.
fn refuse_query_credentials(query: Option<&str>) -> Result<(), ApiError> {
    let Some(query) = query else { return Ok(()) };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let name = name.to_ascii_lowercase();
        if CREDENTIAL_PARAMS.contains(&name.as_str())
            || name.contains("token")
            || looks_like_credential(&value)
        {
            return Err(ApiError::bad_request(
                "credentials are not accepted in the query string; use the session cookie or an Authorization: Bearer header",
            ));
        }
    }
    Ok(())
}

/// `Retry-After` of a stream refused by a cap: a slot frees only when a stream closes.
const STREAM_RETRY_AFTER_SECS: u32 = 5;

/// The 429 of a refused stream, naming the cap.
fn too_many_streams(refused: TooManyStreams) -> ApiError {
    let detail = match refused {
        TooManyStreams::Owner => {
            "too many open event streams for this account; close one and retry"
        }
        TooManyStreams::ClientIp => {
            "too many open event streams from this client address; close one and retry"
        }
        TooManyStreams::Instance => {
            "this instance holds its maximum of open event streams; retry later"
        }
    };
    ApiError::rate_limited(STREAM_RETRY_AFTER_SECS, detail)
}

/// `GET /auth/events`.
pub(super) async fn events(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    refuse_query_credentials(query.as_deref())?;
    let caller = authenticate(
        &state,
        &headers,
        OriginPolicy::AllowedOrSameOrigin,
        Some(ip),
    )
    .await?
    .caller;
    let rx = state
        .events
        .open_stream(caller.session_id, &caller.owner_key.to_string(), ip)
        .await
        .map_err(|refused| {
            tracing::debug!(client = %client_key(ip), cap = %refused, "event stream refused");
            too_many_streams(refused)
        })?;
    let stream = ReceiverStream::new(rx).map(|ev| Event::default().event(ev.name()).json_data(&ev));
    let keep_alive = KeepAlive::new().interval(state.events.config().keep_alive);
    let mut res = Sse::new(stream).keep_alive(keep_alive).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}
