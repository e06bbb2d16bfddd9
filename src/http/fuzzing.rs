//! The HTTP layer's hand-written parsers, exposed for the fuzz targets in `fuzz/` (feature
//! `fuzzing`; not part of the API). Each function runs the same code a request runs.

use std::net::IpAddr;

use axum::http::{HeaderMap, Method};

use super::auth::{
    AnonymousRequest, LoginRequest, LogoutAllRequest, PasswordRequest, RefreshRequest,
};
use super::extract::{
    credential as request_credential, session_cookie as request_cookie, OriginPolicy,
};
use super::{Credential, HttpConfig};

/// An HTTP configuration for the parsers: cookies `Secure` (named `__Host-latchkey`) or not,
/// the given allowed origins and trusted proxies.
pub fn config(cookie_secure: bool, allowed_origins: &[&str], trusted: &[&str]) -> HttpConfig {
    HttpConfig {
        allowed_origins: allowed_origins.iter().map(|o| (*o).to_owned()).collect(),
        cookie_secure,
        cors: false,
        account_page: true,
        trusted_proxies: trusted.iter().filter_map(|n| n.parse().ok()).collect(),
    }
}

/// The session cookie's value, as every endpoint reads it from `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap, config: &HttpConfig) -> Option<String> {
    request_cookie(headers, config)
}

/// The credential of a request (cookie or `Authorization: Bearer`), or the status of its
/// refusal (400 ambiguous or not ASCII, 401 another scheme).
pub fn credential(headers: &HeaderMap, config: &HttpConfig) -> Result<Option<Credential>, u16> {
    request_credential(headers, config).map_err(|e| e.status().as_u16())
}

/// Whether a cookie-authenticated request with `method` passes the `Origin` check of an
/// ordinary endpoint (`stream`: of `/auth/events`).
pub fn origin_passes(
    method: &Method,
    stream: bool,
    headers: &HeaderMap,
    config: &HttpConfig,
) -> bool {
    let policy = if stream {
        OriginPolicy::AllowedOrSameOrigin
    } else {
        OriginPolicy::for_method(method)
    };
    policy.check(headers, config).is_ok()
}

/// The client address of a request from `peer` (`X-Forwarded-For` behind trusted proxies).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, config: &HttpConfig) -> IpAddr {
    super::client_ip::client_ip(peer, headers, &config.trusted_proxies)
}

/// The request id the access log and `X-Request-Id` use for these headers.
pub fn request_id(headers: &HeaderMap) -> String {
    super::access::request_id(headers)
}

/// Which JSON body a fuzz input is parsed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `POST /auth/login`.
    Login,
    /// `POST /auth/anonymous`.
    Anonymous,
    /// `POST /auth/refresh`.
    Refresh,
    /// `POST /auth/logout-all`.
    LogoutAll,
    /// `POST /auth/password`.
    Password,
}

/// Parses `bytes` as the JSON body of `kind`, as its handler does; `true` when accepted.
pub fn parse_body(kind: Body, bytes: &[u8]) -> bool {
    match kind {
        Body::Login => serde_json::from_slice::<LoginRequest>(bytes).is_ok(),
        Body::Anonymous => serde_json::from_slice::<AnonymousRequest>(bytes).is_ok(),
        Body::Refresh => serde_json::from_slice::<RefreshRequest>(bytes).is_ok(),
        Body::LogoutAll => serde_json::from_slice::<LogoutAllRequest>(bytes).is_ok(),
        Body::Password => serde_json::from_slice::<PasswordRequest>(bytes).is_ok(),
    }
}

/// The declared body length the body reader acts on, and whether the request waits for
/// `100 Continue`.
pub fn body_head(headers: &HeaderMap) -> (Option<u64>, bool) {
    super::body::head(headers)
}
