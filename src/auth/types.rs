//! The values the protocol takes and hands back: [`ClientMeta`] and [`IssueSpec`] going in,
//! [`Issued`] tokens and the authenticated [`Caller`] coming out, and the anonymous session
//! a login may replace ([`Upgrade`]).

use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{OwnerKey, SessionSummary};
use crate::SessionKind;

/// Client details recorded on a new session.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// Client address.
    pub ip: Option<String>,
}

/// Tokens handed to a client. `Debug` never shows them.
#[derive(Clone)]
pub struct Issued {
    /// Session id.
    pub session_id: Uuid,
    /// Mode.
    pub kind: SessionKind,
    /// Owner key.
    pub owner_key: OwnerKey,
    /// The session token: cookie value (`lks_…`) or refresh token (`lkr_…`).
    pub token: String,
    /// For stateless sessions, the JWT access token.
    pub access_token: Option<String>,
    /// Idle expiry of the session.
    pub expires_at: OffsetDateTime,
    /// Absolute expiry of the session.
    pub absolute_expires_at: OffsetDateTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("session_id", &self.session_id)
            .field("kind", &self.kind)
            .field("owner_key", &self.owner_key)
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An anonymous session that a login replaces.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// The anonymous session presented with the login.
    pub anonymous: Caller,
    /// Copy its `data` into the new session.
    pub carry_data: bool,
}

/// How a new session starts.
#[derive(Debug, Clone)]
pub struct IssueSpec {
    /// Hard cap on its lifetime.
    pub absolute_ttl_secs: u64,
    /// Initial session data.
    pub data: serde_json::Value,
    /// Non-secret context recorded on its `created` event.
    pub event_detail: serde_json::Value,
}

/// An authenticated caller: the session it presented and whom it belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's session.
    pub session_id: Uuid,
    /// The session's owner.
    pub owner_key: OwnerKey,
    /// How it authenticated.
    pub kind: SessionKind,
    /// The session row as read while authenticating (no secret material), so "who am I"
    /// costs no second query.
    pub session: SessionSummary,
}
