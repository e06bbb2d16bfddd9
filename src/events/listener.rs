//! The bridge from Postgres `NOTIFY` to the hub: one dedicated connection per instance that
//! `LISTEN`s on [`SESSIONS_CHANNEL`] and reconnects by itself.
//!
//! Notifications sent while the connection was down are lost, so each time it is listening
//! again every stream re-reads its session (`Inner::recheck_all`).
//!
//! Without a listen URL of its own, before each connection it takes the service pool's
//! current options, so it follows the primary when that pool does (`crate::db::primary`):
//! after a switch the old connection breaks, and the next one goes to the new primary.

use std::sync::Weak;
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::hub::{Inner, Signal};
use crate::store::{EventKind, SESSIONS_CHANNEL};

/// `application_name` of the listener's connection, as seen in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "latchkey-listener";

const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A payload published by the trigger `latchkey_notify_session_change`.
#[derive(Debug, Deserialize)]
struct Notice {
    event: String,
    id: Uuid,
    owner_key: String,
    reason: Option<String>,
    version: Option<i64>,
}

/// Where the listener connects: the options it was given (straight to the server, beside a
/// transaction-mode pooler), or else the service pool's current ones, so that it follows the
/// primary when that pool does.
#[derive(Debug, Clone)]
pub(super) struct Source {
    /// `--listen-database-url`, when given.
    pub(super) fixed: Option<PgConnectOptions>,
    /// The service's pool.
    pub(super) service: PgPool,
}

impl Source {
    /// The options of the next connection, under the listener's own name.
    fn options(&self) -> PgConnectOptions {
        self.fixed
            .clone()
            .unwrap_or_else(|| self.service.connect_options().as_ref().clone())
            .application_name(LISTENER_APPLICATION_NAME)
    }
}

pub(super) fn spawn(hub: Weak<Inner>, source: Source, shutdown: watch::Receiver<bool>) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(source.options());
    tokio::spawn(run(hub, source, pool, shutdown));
}

async fn listen(source: &Source, pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    pool.set_connect_options(source.options());
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(SESSIONS_CHANNEL).await?;
    Ok(listener)
}

fn dispatch(hub: &Weak<Inner>, payload: &str) {
    let Some(hub) = hub.upgrade() else { return };
    let notice: Notice = match serde_json::from_str(payload) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable session notification ignored");
            return;
        }
    };
    let signal = match (notice.event.as_str(), notice.reason, notice.version) {
        (event, reason, _) if event == EventKind::Revoked.as_str() => {
            Signal::Revoked(reason.unwrap_or_else(|| EventKind::Revoked.to_string()))
        }
        (event, _, Some(version)) if event == EventKind::Refreshed.as_str() => {
            Signal::Refreshed(version)
        }
        _ => Signal::Recheck,
    };
    hub.dispatch(notice.id, &notice.owner_key, signal);
}

fn resync(hub: &Weak<Inner>) -> bool {
    match hub.upgrade() {
        Some(hub) => {
            hub.mark_connected();
            hub.recheck_all();
            true
        }
        None => false,
    }
}

async fn run(hub: Weak<Inner>, source: Source, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::ZERO;
    loop {
        let connected = tokio::select! {
            _ = super::stopped(&mut shutdown) => return,
            r = listen(&source, &pool) => r,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "session listener cannot connect");
                tokio::select! {
                    _ = super::stopped(&mut shutdown) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2 + Duration::from_millis(100)).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::ZERO;
        tracing::info!(channel = SESSIONS_CHANNEL, "session listener listening");
        // Anything published while not listening was lost: every stream re-reads its session.
        if !resync(&hub) {
            return;
        }
        loop {
            let received = tokio::select! {
                _ = super::stopped(&mut shutdown) => return,
                r = listener.try_recv() => r,
            };
            match received {
                Ok(Some(n)) => dispatch(&hub, n.payload()),
                // The connection dropped and was re-established (LISTEN included).
                Ok(None) => {
                    tracing::info!("session listener reconnected");
                    if !resync(&hub) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "session listener lost its connection");
                    break;
                }
            }
        }
    }
}
