//! Request bodies read up front and bounded. An oversize body is read to its end (up to
//! [`DRAIN_LIMIT`] and [`BODY_READ_TIME`]) before its 413 is sent: closing a connection with
//! unread bytes makes the kernel send a reset, and the client then loses the answer, even on
//! a reused keep-alive connection.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tokio_stream::StreamExt;

use super::{ApiError, BODY_LIMIT};

/// Most bytes of an oversize body read and thrown away so that its 413 reaches the client;
/// past it the 413 closes the connection.
pub const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// Longest time spent reading one request body, kept or thrown away.
pub const BODY_READ_TIME: Duration = Duration::from_secs(10);

/// How reading a body ended.
enum Read {
    /// Within [`BODY_LIMIT`].
    Whole(Bytes),
    /// Over [`BODY_LIMIT`]; `to_end` when it was read to its end.
    TooLarge { to_end: bool },
    /// The client broke off.
    Failed,
    /// Within [`BODY_LIMIT`] so far, but not finished within [`BODY_READ_TIME`].
    Slow,
}

/// Reads the body before the handler runs: the handler gets it whole, or the client gets
/// a problem answer it can read.
pub(super) async fn bounded_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let (declared, expects_continue) = head(&parts.headers);
    if declared.is_some_and(|n| n > BODY_LIMIT as u64)
        && (expects_continue || declared.is_some_and(|n| n > DRAIN_LIMIT as u64))
    {
        // Nothing sent yet (100-continue) or too much to read: answer at once and close.
        return too_large(false);
    }
    match read(body).await {
        Read::Whole(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Read::TooLarge { to_end } => too_large(to_end),
        Read::Failed => closing(ApiError::bad_request("the request body could not be read")),
        Read::Slow => closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            "the request body was not sent in time",
        )),
    }
}

/// Reads up to [`BODY_LIMIT`] bytes, then keeps reading (and dropping) to the end of the
/// body, [`DRAIN_LIMIT`] or [`BODY_READ_TIME`], whichever comes first.
async fn read(body: Body) -> Read {
    let deadline = Instant::now() + BODY_READ_TIME;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(_))) => return Read::Failed,
            Err(_) if seen > BODY_LIMIT => return Read::TooLarge { to_end: false },
            Err(_) => return Read::Slow,
        };
        seen = seen.saturating_add(chunk.len());
        if seen <= BODY_LIMIT {
            kept.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            return Read::TooLarge { to_end: false };
        } else {
            kept = Vec::new();
        }
    }
    if seen > BODY_LIMIT {
        Read::TooLarge { to_end: true }
    } else {
        Read::Whole(Bytes::from(kept))
    }
}

/// The declared `Content-Length` (when it is a number) and whether the client waits for
/// `100 Continue` before sending the body.
pub(super) fn head(headers: &HeaderMap) -> (Option<u64>, bool) {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    (declared, expects_continue)
}

/// 413 `bad_request`; it closes the connection unless the body was read to its end.
fn too_large(read_to_end: bool) -> Response {
    let problem = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "bad_request",
        format!("the request body exceeds {BODY_LIMIT} bytes"),
    );
    if read_to_end {
        problem.into_response()
    } else {
        closing(problem)
    }
}

/// The answer with `Connection: close`: the rest of the request is not read.
fn closing(problem: ApiError) -> Response {
    let mut res = problem.into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}
