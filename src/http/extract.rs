//! Extractors: the caller's credential, JSON bodies that fail as problem+json, client details.

use std::net::IpAddr;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;

use super::client_ip::request_client_ip;
use super::{ApiError, AppState, HttpConfig};
use crate::auth::{AuthError, Caller, ClientMeta};

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
    OriginPolicy::Required.check(headers, config)
}

/// Which cookie-authenticated requests must show where they come from. Bearer credentials
/// are never sent by a browser on its own, so they need no `Origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OriginPolicy {
    /// Safe methods (`GET`, `HEAD`) of ordinary endpoints: no check.
    None,
    /// An allowed `Origin` is required (every unsafe method).
    Required,
    /// Live streams: an allowed `Origin`, or, since browsers omit `Origin` on same-origin
    /// GETs, `Sec-Fetch-Site: same-origin` (set by the browser, not by pages).
    AllowedOrSameOrigin,
}

impl OriginPolicy {
    /// The policy of an ordinary endpoint called with `method`.
    pub(super) fn for_method(method: &Method) -> Self {
        if matches!(*method, Method::GET | Method::HEAD) {
            Self::None
        } else {
            Self::Required
        }
    }

    /// `403 origin_rejected` unless the request satisfies this policy.
    pub(super) fn check(self, headers: &HeaderMap, config: &HttpConfig) -> Result<(), ApiError> {
        let origin = headers.get(header::ORIGIN).map(|o| o.to_str());
        let allowed = match (self, origin) {
            (Self::None, _) => true,
            (_, Some(Ok(origin))) => config.origin_allowed(origin),
            (_, Some(Err(_))) | (Self::Required, None) => false,
            (Self::AllowedOrSameOrigin, None) => headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("same-origin")),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::origin_rejected())
        }
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

/// Checks a credential the one way every endpoint does: a cookie against `policy` and then as
/// a stateful session token, a bearer as an access token. The outer error is the refused
/// `Origin`; the inner result is the protocol's verdict on the credential, for callers that
/// treat a bad credential differently (a login ignores a stale anonymous session).
///
/// # Errors
/// `403 origin_rejected` when a cookie request fails `policy`.
pub(super) async fn check_credential(
    state: &AppState,
    headers: &HeaderMap,
    credential: Credential,
    policy: OriginPolicy,
    client: Option<IpAddr>,
) -> Result<Result<Authenticated, AuthError>, ApiError> {
    let (verdict, via_cookie) = match credential {
        Credential::Cookie(value) => {
            policy.check(headers, &state.http)?;
            let verdict = state
                .auth
                .authenticate_session_token_from(&value, client)
                .await;
            (verdict, true)
        }
        Credential::Bearer(value) => (state.auth.authenticate_bearer(&value).await, false),
    };
    Ok(verdict.map(|caller| Authenticated { caller, via_cookie }))
}

/// The caller of a request that must be authenticated: its credential, checked under
/// `policy`; `401` without one.
///
/// # Errors
/// `401` without or with a bad credential, `400` for an ambiguous one, `403` for a refused
/// `Origin`, `503` when the database is unavailable.
pub(super) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    policy: OriginPolicy,
    client: Option<IpAddr>,
) -> Result<Authenticated, ApiError> {
    let credential = credential(headers, &state.http)?.ok_or_else(ApiError::unauthenticated)?;
    Ok(check_credential(state, headers, credential, policy, client).await??)
}

/// The extractor works in any app whose state `S` yields latchkey's [`AppState`]
/// (`impl FromRef<S> for AppState`), with the checks of `/auth`: the cookie (with an allowed
/// `Origin` on unsafe methods) or a bearer access token whose session is live. Behind
/// [`require_session`] it takes the caller the layer found, without a second check.
impl<S> FromRequestParts<S> for Authenticated
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Some(found) = parts.extensions.get::<Authenticated>() {
            return Ok(found.clone());
        }
        let state = AppState::from_ref(state);
        let client = request_client_ip(parts, &state);
        authenticate(
            &state,
            &parts.headers,
            OriginPolicy::for_method(&parts.method),
            client,
        )
        .await
    }
}

/// Middleware for an app's own routes that need a session:
/// `.route_layer(axum::middleware::from_fn_with_state(latchkey_state, require_session))`.
/// A request without a valid credential is answered as `/auth` answers it (401, 400 for an
/// ambiguous credential, 403 for a refused `Origin` on a cookie request, 503 when the
/// database is unavailable; problem+json); one with a valid credential reaches the handler
/// with the [`Authenticated`] caller (owner, session id, mode) in its extensions, which the
/// `Authenticated` extractor (or `Extension<Authenticated>`) hands to the handler.
///
/// The handler also gets a `tower_sessions::Session` on that same session (its row's
/// `data`): the app keeps per-login data beside the login, for cookie and bearer callers
/// alike ([`crate::store::LoginSessionStore`] says how each call maps). When the handler
/// modified it, it is saved after the handler answers (a failed save answers 503); when the
/// handler ended it (`flush`, `cycle_id`), the login is revoked as by `/auth/logout` and a
/// cookie caller's cookie is cleared. Behind this layer that `Session` replaces any that an
/// outer `SessionManagerLayer` put there.
pub async fn require_session(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let client = request_client_ip(&parts, &state);
    match authenticate(
        &state,
        &parts.headers,
        OriginPolicy::for_method(&parts.method),
        client,
    )
    .await
    {
        Ok(caller) => {
            let session = super::session_face::session_of(&state, &caller);
            let via_cookie = caller.via_cookie;
            parts.extensions.insert(session.clone());
            parts.extensions.insert(caller);
            let response = next.run(Request::from_parts(parts, body)).await;
            super::session_face::finish(&state, &session, via_cookie, response).await
        }
        Err(refused) => refused.into_response(),
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
