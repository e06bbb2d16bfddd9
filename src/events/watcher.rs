//! The watcher of one stream: relays its session's signals and re-validates the session on
//! a timer, so a revocation missed by the listener or an expiry still ends the stream.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use super::hub::{Signal, Subscription};
use super::{EventsConfig, StreamEvent};
use crate::store::{LiveStatus, RevokeReason, SessionState, Store};

/// Re-read this long after the expiry instant, so the database agrees it has passed.
const EXPIRY_SLACK: Duration = Duration::from_millis(20);
/// Retry delay after the database failed to answer a re-validation.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// What a re-validation concluded.
enum Verdict {
    /// The session is over: send `revoked` with this reason and end.
    Ended(String),
    /// The session is live for this long.
    Live(Duration),
}

fn judge(status: Option<LiveStatus>) -> Verdict {
    match status {
        None => Verdict::Ended(RevokeReason::Deleted.to_string()),
        Some(s) => match s.state() {
            SessionState::Active => {
                Verdict::Live(Duration::from_secs_f64(s.expires_in_secs.max(0.0)))
            }
            SessionState::Expired => Verdict::Ended(SessionState::Expired.as_str().to_owned()),
            SessionState::Revoked => Verdict::Ended(s.revoked_reason.unwrap_or_default()),
        },
    }
}

/// Runs until the session ends, the client goes away or the service shuts down.
pub(super) async fn run(
    mut sub: Subscription,
    out: mpsc::Sender<StreamEvent>,
    store: Store,
    config: EventsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let session_id = sub.session_id();
    let subscriber = sub.id();
    tracing::debug!(%session_id, subscriber, "event stream opened");
    // Check at once: the session may have been revoked between authentication and
    // subscription, before any notification could reach this subscriber.
    let mut next_check = Instant::now();
    let mut warned = false;
    let ended = loop {
        tokio::select! {
            biased;
            _ = out.closed() => break None,
            _ = super::stopped(&mut shutdown) => break None,
            signal = sub.recv() => match signal {
                Signal::Revoked(reason) => break Some(reason),
                Signal::Refreshed(version) => {
                    let _ = out.send(StreamEvent::Refreshed { session_id, version }).await;
                    // A rotation slides the expiry: read it again.
                    next_check = Instant::now();
                }
                Signal::Recheck => next_check = Instant::now(),
            },
            _ = sleep_until(next_check) => {
                let now = Instant::now();
                match store.live_status(session_id).await {
                    Err(e) => {
                        tracing::warn!(%session_id, error = %e, "event stream re-validation failed");
                        next_check = now + RETRY_AFTER_ERROR;
                    }
                    Ok(status) => match judge(status) {
                        Verdict::Ended(reason) => break Some(reason),
                        Verdict::Live(left) => {
                            if left <= config.expiring_lead {
                                if !warned {
                                    warned = true;
                                    let expires_in = left.as_secs();
                                    let _ = out.send(StreamEvent::Expiring { session_id, expires_in }).await;
                                }
                            } else {
                                warned = false;
                            }
                            let mut wait = config.revalidate_interval.min(left + EXPIRY_SLACK);
                            if !warned {
                                wait = wait.min(left.saturating_sub(config.expiring_lead));
                            }
                            next_check = now + wait;
                        }
                    },
                }
            }
        }
    };
    if let Some(reason) = ended {
        tracing::debug!(%session_id, subscriber, %reason, "event stream closed: session ended");
        let _ = out.send(StreamEvent::Revoked { session_id, reason }).await;
    } else {
        tracing::debug!(%session_id, subscriber, "event stream closed");
    }
}
