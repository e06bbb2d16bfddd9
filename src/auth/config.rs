//! [`AuthConfig`]: the lifetimes and windows of the protocol, with their defaults.

/// Lifetimes and windows of the protocol.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// How long the previous refresh token keeps answering with the same successor (0 disables).
    pub grace_secs: u64,
    /// Lifetime of a JWT access token.
    pub access_ttl_secs: u64,
    /// Idle lifetime of a session (slides on use).
    pub idle_ttl_secs: u64,
    /// Hard cap on a session's lifetime.
    pub absolute_ttl_secs: u64,
    /// Lifetime of an anonymous session.
    pub anon_ttl_secs: u64,
    /// A stateful check writes `last_used_at` at most this often per session, and a refresh
    /// slides the idle expiry only when that moves it by at least this much (so most
    /// rotations leave the indexed `expires_at` alone and are HOT updates).
    pub touch_interval_secs: u64,
    /// Append a `refreshed` event to the audit trail on every rotation. Off by default: the
    /// row keeps `version` and `refreshed_at`, and a `reuse_detected` event carries the chain
    /// a reuse investigation needs (docs/design.md, Audit).
    pub refresh_events: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            grace_secs: 30,
            access_ttl_secs: 300,
            idle_ttl_secs: 7 * 24 * 3600,
            absolute_ttl_secs: 30 * 24 * 3600,
            anon_ttl_secs: 600,
            touch_interval_secs: 60,
            refresh_events: false,
        }
    }
}
