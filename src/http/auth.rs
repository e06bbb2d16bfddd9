//! `/auth/*` handlers.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum_extra::extract::cookie::{Cookie, SameSite};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::client_ip::ClientIp;
use super::extract::{
    check_credential, check_origin, credential, ApiJson, Authenticated, Credential, Meta,
    OriginPolicy,
};
use super::{ApiError, AppState, HttpConfig};
use crate::auth::{AuthError, Caller, Issued, Upgrade};
use crate::limits::{client_key, retry_after_secs};
use crate::store::OwnerKey;
use crate::SessionKind;

/// `POST /auth/login` body: email + password + mode, or an API key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    email: Option<String>,
    password: Option<SecretString>,
    mode: Option<SessionKind>,
    api_key: Option<SecretString>,
    /// On an upgrade from an anonymous session, copy its data into the new session.
    #[serde(default)]
    carry_data: bool,
}

/// `POST /auth/anonymous` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnonymousRequest {
    mode: SessionKind,
}

/// `POST /auth/refresh` body (stateless mode).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

fn seconds_until(t: OffsetDateTime) -> i64 {
    (t - OffsetDateTime::now_utc()).whole_seconds().max(0)
}

/// The `Set-Cookie` value carrying a stateful session token. Its expiry is the session's
/// absolute expiry, so every response for one token is byte-identical.
fn session_cookie(config: &HttpConfig, issued: &Issued) -> Result<HeaderValue, ApiError> {
    let cookie = Cookie::build((config.cookie_name(), issued.token.clone()))
        .path("/")
        .http_only(true)
        .secure(config.cookie_secure)
        .same_site(SameSite::Lax)
        .expires(issued.absolute_expires_at)
        .build();
    HeaderValue::from_str(&cookie.to_string())
        .map_err(|_| ApiError::from(AuthError::Internal("cookie encoding".into())))
}

/// The `Set-Cookie` value that removes the session cookie.
pub(super) fn clear_cookie(config: &HttpConfig) -> HeaderValue {
    let cookie = Cookie::build((config.cookie_name(), ""))
        .path("/")
        .http_only(true)
        .secure(config.cookie_secure)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::ZERO)
        .build();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// The answer to a login or refresh: JSON tokens for stateless, a cookie for stateful.
fn issued_response(state: &AppState, issued: Issued) -> Result<Response, ApiError> {
    match issued.kind {
        SessionKind::Stateless => Ok((
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": state.auth.jwt().ttl_secs(),
                "refresh_token": issued.token,
                "refresh_expires_in": seconds_until(issued.expires_at),
                "session_id": issued.session_id,
            })),
        )
            .into_response()),
        SessionKind::Stateful => Ok((
            [
                (header::SET_COOKIE, session_cookie(&state.http, &issued)?),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            Json(json!({
                "session_id": issued.session_id,
                "expires_in": seconds_until(issued.expires_at),
            })),
        )
            .into_response()),
    }
}

/// Longest password accepted: argon2 input is bounded to keep hashing cost predictable.
const MAX_PASSWORD_BYTES: usize = 1024;

pub(super) async fn login(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let issued = match req {
        LoginRequest {
            api_key: Some(key),
            email: None,
            password: None,
            mode: None | Some(SessionKind::Stateless),
            carry_data: false,
        } => state.auth.login_api_key(key.expose_secret(), &meta).await?,
        LoginRequest {
            api_key: None,
            email: Some(email),
            password: Some(password),
            mode: Some(mode),
            carry_data,
        } => {
            validate_credentials(&email, &password)?;
            let upgrade = anonymous_session(
                &state,
                &headers,
                meta.ip.as_deref().and_then(|ip| ip.parse().ok()),
            )
            .await?
            .map(|anonymous| Upgrade {
                anonymous,
                carry_data,
            });
            state
                .auth
                .login_password(&email, password, mode, &meta, upgrade.as_ref())
                .await?
        }
        _ => return Err(ApiError::bad_request(
            "send {\"email\",\"password\",\"mode\"} or {\"api_key\"} (API keys log in stateless)",
        )),
    };
    issued_response(&state, issued)
}

fn validate_credentials(email: &str, password: &SecretString) -> Result<(), ApiError> {
    if email.is_empty() || email.len() > 254 || email.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "email must be 1 to 254 bytes without control characters",
        ));
    }
    let pw_len = password.expose_secret().len();
    if pw_len == 0 || pw_len > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request("password must be 1 to 1024 bytes"));
    }
    Ok(())
}

/// The anonymous session a login request carries (its cookie or bearer token), if any and
/// valid. A stale or foreign credential is simply not upgraded; a cookie still needs an
/// allowed Origin.
async fn anonymous_session(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Option<Caller>, ApiError> {
    let Some(credential) = credential(headers, &state.http)? else {
        return Ok(None);
    };
    match check_credential(state, headers, credential, OriginPolicy::Required, client)
        .await?
        .map(|a| a.caller)
    {
        Ok(c) if c.owner_key.is_anonymous() => Ok(Some(c)),
        Ok(_) => Ok(None),
        Err(AuthError::Unavailable(e)) => Err(AuthError::Unavailable(e).into()),
        Err(_) => Ok(None),
    }
}

pub(super) async fn anonymous(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Meta(meta): Meta,
    ApiJson(req): ApiJson<AnonymousRequest>,
) -> Result<Response, ApiError> {
    // Before anything is written: a refused request leaves no row.
    if let Err(wait) = state.anonymous_limiter.check(ip) {
        let secs = retry_after_secs(wait);
        tracing::debug!(client = %client_key(ip), retry_after_secs = secs, "anonymous session refused: rate limited");
        return Err(ApiError::rate_limited(
            secs,
            "too many anonymous sessions from this client address; retry later",
        ));
    }
    let issued = state.auth.issue_anonymous(req.mode, &meta).await?;
    issued_response(&state, issued)
}

pub(super) async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))?;
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let req: RefreshRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        Some(req.refresh_token)
    };
    let from_cookie = match credential(&headers, &state.http)? {
        Some(Credential::Cookie(c)) => Some(c),
        Some(Credential::Bearer(_)) => {
            return Err(ApiError::bad_request(
                "refresh takes the session cookie or a JSON refresh_token, not a bearer header",
            ))
        }
        None => None,
    };
    let issued = match (from_cookie, from_body) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "send either the session cookie or a refresh_token, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "send the session cookie or a JSON body with refresh_token",
            ))
        }
        (Some(cookie), None) => {
            check_origin(&headers, &state.http)?;
            state
                .auth
                .refresh_from(&cookie, SessionKind::Stateful, Some(ip))
                .await?
        }
        (None, Some(token)) => {
            state
                .auth
                .refresh_from(&token, SessionKind::Stateless, Some(ip))
                .await?
        }
    };
    issued_response(&state, issued)
}

fn cleared_if_cookie(
    state: &AppState,
    auth: &Authenticated,
) -> Vec<(header::HeaderName, HeaderValue)> {
    if auth.via_cookie {
        vec![(header::SET_COOKIE, clear_cookie(&state.http))]
    } else {
        Vec::new()
    }
}

pub(super) async fn logout(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    state.auth.logout(&auth.caller).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    for (k, v) in cleared_if_cookie(&state, &auth) {
        res.headers_mut().insert(k, v);
    }
    Ok(res)
}

/// `POST /auth/logout-all` body, optional: `{"keep_current": true}` signs out every other
/// session and keeps the caller's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogoutAllRequest {
    #[serde(default)]
    keep_current: bool,
}

pub(super) async fn logout_all(
    State(state): State<AppState>,
    auth: Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))?;
    let req: LogoutAllRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutAllRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let revoked = state
        .auth
        .logout_all(&auth.caller, req.keep_current)
        .await?;
    let mut res = Json(json!({ "revoked": revoked })).into_response();
    if !req.keep_current {
        for (k, v) in cleared_if_cookie(&state, &auth) {
            res.headers_mut().insert(k, v);
        }
    }
    Ok(res)
}

/// `POST /auth/password` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordRequest {
    current_password: SecretString,
    new_password: SecretString,
}

pub(super) async fn change_password(
    State(state): State<AppState>,
    auth: Authenticated,
    Meta(meta): Meta,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> Result<Response, ApiError> {
    if !matches!(auth.caller.owner_key, OwnerKey::User(_)) {
        return Err(ApiError::bad_request(
            "only a session of an account signed in with its password can change it",
        ));
    }
    for pw in [&req.current_password, &req.new_password] {
        let len = pw.expose_secret().len();
        if len == 0 || len > MAX_PASSWORD_BYTES {
            return Err(ApiError::bad_request("passwords must be 1 to 1024 bytes"));
        }
    }
    let revoked = state
        .auth
        .change_password(&auth.caller, req.current_password, req.new_password, &meta)
        .await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

pub(super) async fn session(auth: Authenticated) -> Response {
    // The row was read while authenticating: "who am I" is one query.
    Json(auth.caller.session).into_response()
}

pub(super) async fn sessions(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    let sessions = state
        .auth
        .store()
        .list_sessions(Some(&auth.caller.owner_key))
        .await?;
    let list: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let current = s.session_id == auth.caller.session_id;
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["current"] = json!(current);
            v
        })
        .collect();
    Ok(Json(json!({ "sessions": list })).into_response())
}

pub(super) async fn revoke_session(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Ok(id) = Uuid::parse_str(&id) else {
        return Err(ApiError::not_found());
    };
    if state.auth.revoke_own(&auth.caller, id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found())
    }
}
