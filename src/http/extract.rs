//! Extractors: the caller's credential, JSON bodies that fail as problem+json, client details.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum_extra::extract::CookieJar;

use super::client_ip::request_client_ip;
use super::{ApiError, AppState, HttpConfig};
use crate::auth::{Caller, ClientMeta};

/// A JSON body whose rejections answer problem+json.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub(crate) T);

/// What a request presented to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The session cookie's value.
    Cookie(String),
    /// An `Authorization: Bearer` value.
    Bearer(String),
}

/// Reads the session cookie, if any.
pub(super) fn session_cookie(headers: &HeaderMap, config: &HttpConfig) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(config.cookie_name())
        .map(|c| c.value().to_owned())
}

/// Finds the credential of a request; both a cookie and a bearer header is ambiguous (400).
pub(super) fn credential(
    headers: &HeaderMap,
    config: &HttpConfig,
) -> Result<Option<Credential>, ApiError> {
    let cookie = session_cookie(headers, config);
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::bad_request("Authorization header is not ASCII"))?;
            let Some(token) = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
            else {
                return Err(ApiError::unauthenticated());
            };
            Some(token.trim().to_owned())
        }
    };
    match (cookie, bearer) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "send either the session cookie or a bearer token, not both",
        )),
        (Some(c), None) => Ok(Some(Credential::Cookie(c))),
        (None, Some(b)) => Ok(Some(Credential::Bearer(b))),
        (None, None) => Ok(None),
    }
}

/// Cookie-authenticated requests from browsers must carry an allowed `Origin`.
pub(super) fn check_origin(headers: &HeaderMap, config: &HttpConfig) -> Result<(), ApiError> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .ok_or_else(ApiError::origin_rejected)?;
    if config.origin_allowed(origin) {
        Ok(())
    } else {
        Err(ApiError::origin_rejected())
    }
}

/// An authenticated caller: a valid session cookie (with an allowed Origin on unsafe
/// methods) or a valid bearer access token whose session is live.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who is calling.
    pub caller: Caller,
    /// How they authenticated.
    pub via_cookie: bool,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match credential(&parts.headers, &state.http)? {
            None => Err(ApiError::unauthenticated()),
            Some(Credential::Cookie(value)) => {
                if !matches!(parts.method, Method::GET | Method::HEAD) {
                    check_origin(&parts.headers, &state.http)?;
                }
                let caller = state.auth.authenticate_session_token(&value).await?;
                Ok(Self {
                    caller,
                    via_cookie: true,
                })
            }
            Some(Credential::Bearer(value)) => {
                let caller = state.auth.authenticate_bearer(&value).await?;
                Ok(Self {
                    caller,
                    via_cookie: false,
                })
            }
        }
    }
}

/// User-Agent and client address of a request: the one source of the client address
/// (sessions' `ip`, login throttling, audit). Behind proxies listed in
/// [`HttpConfig::trusted_proxies`] the address comes from `X-Forwarded-For`.
#[derive(Debug, Clone)]
pub(crate) struct Meta(pub(crate) ClientMeta);

impl FromRequestParts<AppState> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ip = request_client_ip(parts, state).map(|ip| ip.to_string());
        Ok(Self(ClientMeta { user_agent, ip }))
    }
}
