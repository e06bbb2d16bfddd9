//! The checks of a presented credential (the session cookie, a bearer access token) and
//! logout: the caller's session, all of its owner's, or one of them.

use std::net::IpAddr;

use uuid::Uuid;

use super::refresh::{require_live, Presented};
use super::{Auth, AuthError, Caller};
use crate::store::{RevokeReason, SessionRecord, SessionSummary};
use crate::token::SessionToken;
use crate::SessionKind;

/// The caller a checked row authenticates, with `session` as it is shown to them.
fn caller(rec: SessionRecord, session: SessionSummary) -> Caller {
    Caller {
        session_id: rec.id,
        owner_key: rec.owner_key,
        kind: rec.kind,
        session,
    }
}

impl Auth {
    /// Checks a stateful session token (the cookie) against the database: the current secret,
    /// or the previous one inside the grace window (a request that left before a refresh).
    /// Records the use at most once per touch interval, and then slides the idle expiry when
    /// that moves it by at least the expiry step ([`Store::touch`](crate::store::Store::touch)).
    ///
    /// # Errors
    /// The token variants of [`AuthError`]; a rotated cookie after grace revokes the session.
    pub async fn authenticate_session_token(&self, presented: &str) -> Result<Caller, AuthError> {
        self.authenticate_session_token_from(presented, None).await
    }

    /// [`Auth::authenticate_session_token`] for a client at `client`, recorded in the
    /// `reuse_detected` event when the cookie turns out to be reused.
    ///
    /// # Errors
    /// As [`Auth::authenticate_session_token`].
    pub async fn authenticate_session_token_from(
        &self,
        presented: &str,
        client: Option<IpAddr>,
    ) -> Result<Caller, AuthError> {
        let token = SessionToken::parse(presented).map_err(|_| AuthError::InvalidToken)?;
        let (rec, class) = self.load_checked(&token, SessionKind::Stateful).await?;
        if class == Presented::Previous && !rec.in_grace {
            return Err(self.reuse_detected(&rec, client).await);
        }
        let mut session = rec.summary();
        if rec.touch_due(self.config.touch_interval_secs as f64) {
            let touched = self
                .store
                .touch(
                    rec.id,
                    self.config.idle_ttl_secs as f64,
                    self.config.touch_interval_secs as f64,
                    self.config.expiry_step_secs() as f64,
                )
                .await?;
            if let Some((last_used_at, expires_at)) = touched {
                session.last_used_at = last_used_at;
                session.expires_at = expires_at;
            }
        }
        Ok(caller(rec, session))
    }

    /// Checks a bearer credential. A JWT access token is verified by signature, then its
    /// session is checked to be live (the `/auth` endpoints are stricter than an app that
    /// trusts the JWT alone until `exp`). A session token in a bearer header is refused:
    /// a stateful token there is the wrong mode, a refresh token is not an access token.
    ///
    /// # Errors
    /// The token variants of [`AuthError`].
    pub async fn authenticate_bearer(&self, bearer: &str) -> Result<Caller, AuthError> {
        if let Ok(token) = SessionToken::parse(bearer) {
            return match token.kind {
                SessionKind::Stateful => {
                    self.load_checked(&token, SessionKind::Stateless).await?;
                    Err(AuthError::ModeMismatch)
                }
                SessionKind::Stateless => Err(AuthError::InvalidToken),
            };
        }
        let claims = self.jwt.verify(bearer)?;
        let rec = self
            .store
            .find_session(claims.sid)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if rec.owner_key.to_string() != claims.sub {
            return Err(AuthError::InvalidToken);
        }
        if rec.kind != SessionKind::Stateless {
            return Err(AuthError::ModeMismatch);
        }
        require_live(&rec)?;
        let session = rec.summary();
        Ok(caller(rec, session))
    }

    /// Revokes the caller's own session and clears its data (what the app kept beside the
    /// login through `tower_sessions::Session`).
    ///
    /// # Errors
    /// Database failures.
    pub async fn logout(&self, caller: &Caller) -> Result<(), AuthError> {
        self.store
            .end_session(caller.session_id, &caller.owner_key, RevokeReason::Logout)
            .await?;
        Ok(())
    }

    /// Revokes every session of the caller's owner. Returns how many.
    ///
    /// # Errors
    /// Database failures.
    pub async fn logout_all(
        &self,
        caller: &Caller,
        keep_current: bool,
    ) -> Result<usize, AuthError> {
        let keep = keep_current.then_some(caller.session_id);
        let ids = self
            .store
            .revoke_owner_except(&caller.owner_key, keep, RevokeReason::LogoutAll)
            .await?;
        Ok(ids.len())
    }

    /// Revokes one session of the caller's owner; `false` when there is no such session of
    /// theirs (answered as 404, whatever the reason).
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_own(&self, caller: &Caller, id: Uuid) -> Result<bool, AuthError> {
        Ok(self
            .store
            .revoke_owned(&caller.owner_key, id, RevokeReason::Logout)
            .await?)
    }
}
