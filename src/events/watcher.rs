//! The watcher of one stream: relays its session's signals and re-validates the session on
//! a timer, so a revocation missed by the listener or an expiry still ends the stream.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use super::hub::{Signal, Subscription};
use super::{EventsConfig, StreamEvent};
use crate::store::{LiveStatus, RevokeReason, SessionState, Store};

/// Re-read this long after the expiry instant, so the database agrees it has passed.
const EXPIRY_SLACK: Duration = Duration::from_millis(20);
/// Retry delay after the database failed to answer a re-validation.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// The shortest time a stream marks its session as streamed for.
const MIN_STREAM_HOLD: Duration = Duration::from_secs(10);

/// How long a stream's mark on its session (`sessions.streamed_until`) lasts, and below how
/// much left it is renewed: three re-validation intervals (at least [`MIN_STREAM_HOLD`]),
/// renewed once two thirds of it are left. Re-validations come at most one interval apart,
/// so the mark never lapses while the stream is open (one write per third of the hold: every
/// 30 s at the default 30 s interval) and lapses within the hold after its instance died.
pub(crate) fn stream_hold(revalidate_interval: Duration) -> (f64, f64) {
    let hold = (revalidate_interval * 3).max(MIN_STREAM_HOLD).as_secs_f64();
    (hold, hold * 2.0 / 3.0)
}

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

/// The versions one stream has read and sent.
#[derive(Debug, Default)]
struct Versions {
    /// The newest version a re-read found.
    read: Option<i64>,
    /// The newest version sent as `refreshed`.
    sent: Option<i64>,
}

impl Versions {
    /// A notification of `version`: whether to send it.
    fn notified(&mut self, version: i64) -> bool {
        let new = self.sent.is_none_or(|sent| version > sent);
        if new {
            self.sent = Some(version);
        }
        new
    }

    /// A re-read found `version`: the version to send, when it is newer than the previous
    /// read (the first read only sets the baseline) and than anything sent.
    fn read(&mut self, version: i64) -> Option<i64> {
        let previous = self
            .read
            .replace(self.read.map_or(version, |r| r.max(version)));
        match previous {
            Some(previous) if version > previous => self.notified(version).then_some(version),
            _ => None,
        }
    }
}

/// Runs until the session ends, the client goes away or the service shuts down.
pub(super) async fn run(
    mut sub: Subscription,
    out: mpsc::Sender<StreamEvent>,
    store: Store,
    config: EventsConfig,
    mut shutdown: watch::Receiver<bool>,
    opened: oneshot::Sender<()>,
) {
    // Told once the first re-validation (which marks the session as streamed) is done.
    let mut opened = Some(opened);
    let session_id = sub.session_id();
    let subscriber = sub.id();
    tracing::debug!(%session_id, subscriber, "event stream opened");
    // Check at once: the session may have been revoked between authentication and
    // subscription, before any notification could reach this subscriber.
    let mut next_check = Instant::now();
    let mut warned = false;
    let (hold_secs, renew_below_secs) = stream_hold(config.revalidate_interval);
    // Each version is sent at most once, in rising order; a re-read that finds a version
    // newer than the previous read and than any sent sends it (a rotation whose
    // notification never came: committed while the stream was marking its session, or
    // while the listener was reconnecting).
    let mut versions = Versions::default();
    let ended = loop {
        tokio::select! {
            biased;
            _ = out.closed() => break None,
            _ = super::stopped(&mut shutdown) => break None,
            signal = sub.recv() => match signal {
                Signal::Revoked(reason) => break Some(reason),
                Signal::Refreshed(version) => {
                    if versions.notified(version) {
                        let _ = out.send(StreamEvent::Refreshed { session_id, version }).await;
                    }
                    // A rotation slides the expiry: read it again.
                    next_check = Instant::now();
                }
                Signal::Recheck => next_check = Instant::now(),
            },
            _ = sleep_until(next_check) => {
                let now = Instant::now();
                let checked = store.stream_status(session_id, hold_secs, renew_below_secs).await;
                if let Some(opened) = opened.take() {
                    let _ = opened.send(());
                }
                match checked {
                    Err(e) => {
                        tracing::warn!(%session_id, error = %e, "event stream re-validation failed");
                        next_check = now + RETRY_AFTER_ERROR;
                    }
                    Ok(status) => {
                        if let Some(version) = status.as_ref().and_then(|s| versions.read(s.version)) {
                            let _ = out.send(StreamEvent::Refreshed { session_id, version }).await;
                        }
                        match judge(status) {
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
                        }
                    }
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
