//! Live session events: the in-process hub that fans events out to every stream of a session,
//! the Postgres `LISTEN/NOTIFY` bridge that feeds it on every instance, and the per-stream
//! watcher that re-validates its session as a backstop.
//!
//! Nothing here knows about HTTP: `GET /auth/events` (in [`crate::http`]) subscribes with the
//! caller's authenticated session and turns [`StreamEvent`]s into Server-Sent Events.

mod hub;
mod listener;
mod watcher;

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

pub use hub::{EventHub, Subscription, TooManyStreams};
pub use listener::LISTENER_APPLICATION_NAME;

/// Settings of live session streams.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Streams one owner may hold open on one instance; beyond it: 429 `rate_limited`.
    pub max_streams_per_owner: usize,
    /// Streams one client ip (an IPv6 client by its /64) may hold open on one instance,
    /// whatever owners it streams for; beyond it: 429 `rate_limited`.
    pub max_streams_per_ip: usize,
    /// Streams one instance holds open, all clients together; beyond it: 429 `rate_limited`.
    pub max_streams: usize,
    /// How often each stream re-reads its session as a backstop (revocations missed while
    /// the listener was reconnecting, sliding expiry).
    pub revalidate_interval: Duration,
    /// How long before its expiry a session's streams get `expiring`.
    pub expiring_lead: Duration,
    /// Interval of keep-alive comments on idle streams.
    pub keep_alive: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_streams_per_owner: 16,
            max_streams_per_ip: 64,
            max_streams: 512,
            revalidate_interval: Duration::from_secs(30),
            expiring_lead: Duration::from_secs(60),
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// One event sent to a client on its own session's stream. Never carries a token.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StreamEvent {
    /// The session ended (revoked, expired or deleted); the stream closes after it.
    Revoked {
        /// The caller's session.
        session_id: Uuid,
        /// `logout`, `logout_all`, `reuse_detected`, `admin`, `expired`, `deleted`, ….
        reason: String,
    },
    /// The session expires soon unless it is used or refreshed.
    Expiring {
        /// The caller's session.
        session_id: Uuid,
        /// Whole seconds left.
        expires_in: u64,
    },
    /// The session's token was rotated (by this or another client of the session).
    Refreshed {
        /// The caller's session.
        session_id: Uuid,
        /// The new rotation counter.
        version: i64,
    },
}

impl StreamEvent {
    /// The SSE event name: `revoked`, `expiring` or `refreshed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Revoked { .. } => "revoked",
            Self::Expiring { .. } => "expiring",
            Self::Refreshed { .. } => "refreshed",
        }
    }

    /// Whether the stream ends after this event.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Revoked { .. })
    }
}

/// Resolves once shutdown was asked for, or the hub is gone.
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard returned by `wait_for` is not `Send`: drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
