//! [`AuthError`], the failures of the protocol with their stable API codes, and the
//! conversions from the store's and the RNG's errors.

use crate::rng::RngError;
use crate::store::StoreError;

/// Every way an authentication step can fail, each with a stable API code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Malformed, unknown id or unknown secret. Nothing was revoked.
    #[error("invalid token")]
    InvalidToken,
    /// A rotated token was presented after its grace window; the session is now revoked.
    #[error("token reused after rotation")]
    TokenReused,
    /// The session or access token has expired.
    #[error("token expired")]
    TokenExpired,
    /// The session was revoked.
    #[error("session revoked")]
    SessionRevoked,
    /// A token of one mode was presented in the other; the session is untouched.
    #[error("token used in the wrong mode")]
    ModeMismatch,
    /// Wrong email or password, or a disabled account.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many requests (queued hashes, throttled logins, minting or stream limits); retry
    /// after the given number of seconds.
    #[error("rate limited")]
    RateLimited {
        /// Seconds the client should wait (the `Retry-After` header).
        retry_after_secs: u32,
    },
    /// The database or the RNG is unavailable; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected database error.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The stable API code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidToken => "invalid_token",
            Self::TokenReused => "token_reused",
            Self::TokenExpired => "token_expired",
            Self::SessionRevoked => "session_revoked",
            Self::ModeMismatch => "token_mode_mismatch",
            Self::InvalidCredentials => "invalid_credentials",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => Self::Unavailable(e.to_string()),
            StoreError::OwnerInactive => Self::InvalidCredentials,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<RngError> for AuthError {
    fn from(e: RngError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
