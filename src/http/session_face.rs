//! The login's second face: the `tower_sessions::Session` that [`super::require_session`]
//! gives the handlers behind it, on the session the request authenticated with
//! ([`LoginSessionStore`]), and what happens to it once the handler has answered: saved if
//! modified, as tower-sessions' own `SessionManagerLayer` does; or, when the handler ended it
//! (`flush`, `cycle_id`), the cookie cleared as `/auth/logout` clears it.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use tower_sessions::session::Error as SessionError;
use tower_sessions::session_store::Error as StoreError;
use tower_sessions::Session;

use super::{ApiError, AppState, Authenticated};
use crate::store::LoginSessionStore;

/// The `Session` of a checked caller: its own row, its owner, its idle expiry.
pub(super) fn session_of(state: &AppState, who: &Authenticated) -> Session {
    LoginSessionStore::session(
        state.auth.store().clone(),
        who.caller.session_id,
        who.caller.owner_key,
        who.caller.session.expires_at,
    )
}

/// After the handler: a session it ended (or that ended under it) clears a cookie caller's
/// cookie; a session it modified is saved. A save that fails answers 503 (`Retry-After`)
/// when the database failed, 500 when the handler tried to change the login's owner.
pub(super) async fn finish(
    state: &AppState,
    session: &Session,
    via_cookie: bool,
    mut response: Response,
) -> Response {
    if session.id().is_none() {
        if via_cookie {
            response
                .headers_mut()
                .append(header::SET_COOKIE, super::auth::clear_cookie(&state.http));
        }
        return response;
    }
    if !session.is_modified() {
        return response;
    }
    let Err(cause) = session.save().await else {
        return response;
    };
    if matches!(
        cause,
        SessionError::SerdeJson(_) | SessionError::Store(StoreError::Encode(_))
    ) {
        tracing::error!(%cause, "the handler's session data cannot be saved");
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
        .into_response()
    } else {
        tracing::warn!(%cause, "saving the session data failed; answering 503");
        ApiError::unavailable().into_response()
    }
}
