//! The HTTP/1.1 server: an accept loop over hyper with a header-read timeout, a cap on open
//! connections and a graceful drain.
//!
//! hyper starts its header-read timer whenever it waits for a request head: on a new connection
//! and again as soon as the previous response has been written. So the same timeout bounds a
//! client that sends half a head and an idle keep-alive connection between two requests; there
//! is no separate idle timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::Service;

/// Limits of the HTTP server against slow, idle, long and too many connections.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time a client has to send a complete request head, counted from the accept or from the
    /// end of the previous response; it also closes idle keep-alive connections.
    pub header_timeout: Duration,
    /// Time a request other than `GET /auth/events` has from its head to its answer; past
    /// it the answer is 503 `unavailable`.
    pub request_timeout: Duration,
    /// Connections open at once on one listener; past it the next clients wait in the
    /// kernel's accept queue until a connection closes.
    pub max_open_connections: usize,
    /// Connections one client address (an IPv6 client by its /64) may hold open on one
    /// listener; a further one is closed at once. Trusted proxies are not counted.
    pub max_connections_per_ip: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_open_connections: 1024,
            max_connections_per_ip: 256,
        }
    }
}

/// Time given to open connections beyond the request timeout when the server stops.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// Pause after a failed accept (EMFILE and the like) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections per client address, so one client cannot hold every slot.
#[derive(Clone, Default)]
struct PerClient(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection of a client: given back when dropped.
struct ClientSlot {
    counts: PerClient,
    client: IpAddr,
}

impl PerClient {
    /// Counts a connection of `client`, or `None` when it already holds `max`.
    fn enter(&self, client: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(client).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            counts: self.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Serves `router` on `listener` until `stop` turns true, then stops accepting and waits for
/// the open connections to finish their requests (idle ones close at once). Peers in
/// `trusted` (proxies, which carry many clients) are not held to the per-client cap.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    trusted: &[IpNet],
    mut stop: watch::Receiver<bool>,
) {
    let per_client = PerClient::default();
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let slots = Arc::new(Semaphore::new(limits.max_open_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let slot = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let client_slot = if trusted.iter().any(|net| net.contains(&peer.ip())) {
            None
        } else {
            let client = crate::limits::client_key(peer.ip());
            match per_client.enter(client, limits.max_connections_per_ip.max(1)) {
                Some(counted) => Some(counted),
                None => {
                    tracing::debug!(%peer, "client holds its most connections; closing the new one");
                    continue; // drops the stream (closed) and the slot
                }
            }
        };
        let _ = stream.set_nodelay(true);
        // Puts the peer address in every request as `ConnectInfo<SocketAddr>`.
        let service = match make_service.call(peer).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(client_slot);
            drop(slot);
        });
    }
    drop(listener);
    // A client that stops reading must not hold the shutdown forever: past the request
    // timeout the connections still open are dropped.
    let drain = limits.request_timeout + DRAIN_MARGIN;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            secs = drain.as_secs(),
            "connections still open after the drain; closing them"
        );
    }
}
