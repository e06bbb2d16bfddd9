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
    /// A stateful check writes `last_used_at` at most this often per session.
    pub touch_interval_secs: u64,
    /// The expiry step, when set; `None`: derived from the idle lifetime and the touch
    /// interval. Read it through [`AuthConfig::expiry_step_secs`].
    pub expiry_step_override_secs: Option<u64>,
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
            expiry_step_override_secs: None,
            refresh_events: false,
        }
    }
}

impl AuthConfig {
    /// The default expiry step is the idle lifetime divided by this (1%): a session may idle
    /// out up to 1% of its idle lifetime early.
    pub const EXPIRY_STEP_DIVISOR: u64 = 100;

    /// The default expiry step for an idle lifetime and a touch interval: the larger of the
    /// touch interval and `idle_ttl_secs / EXPIRY_STEP_DIVISOR` (7 days: 6048 s).
    pub fn derived_expiry_step_secs(idle_ttl_secs: u64, touch_interval_secs: u64) -> u64 {
        touch_interval_secs.max(idle_ttl_secs / Self::EXPIRY_STEP_DIVISOR)
    }

    /// The expiry step: a refresh or a stateful check slides the idle expiry only when that
    /// moves it by at least this many seconds (or onto the absolute expiry), so most of them
    /// leave the indexed `expires_at` alone and are HOT updates. The trade: a session in use
    /// may idle out up to one step earlier than `idle_ttl_secs` after its last use. The
    /// override when set, else [`AuthConfig::derived_expiry_step_secs`].
    pub fn expiry_step_secs(&self) -> u64 {
        self.expiry_step_override_secs.unwrap_or_else(|| {
            Self::derived_expiry_step_secs(self.idle_ttl_secs, self.touch_interval_secs)
        })
    }
}
