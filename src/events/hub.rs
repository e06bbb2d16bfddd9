//! The in-process hub: server-owned subscriber ids grouped by session, caps per owner, per
//! client ip and per instance.
//!
//! A stream subscribes with the session its caller authenticated with (never an id the
//! client sends). Every subscriber of a session gets its own receiver of the session's
//! broadcast channel, so a new stream never replaces or closes another. Its slots in the
//! three counts are taken under one lock and given back when its [`Subscription`] drops,
//! however the stream ends.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::postgres::PgConnectOptions;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;

use super::{listener, watcher, EventsConfig, StreamEvent};
use crate::limits::client_key;
use crate::store::Store;

/// Signals buffered per session before a slow subscriber lags (it then re-validates).
const TOPIC_CAPACITY: usize = 16;
/// Events buffered per stream between its watcher and the HTTP body.
const STREAM_BUFFER: usize = 8;

/// What the hub tells the subscribers of one session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Signal {
    /// The session was revoked or deleted, with the reason.
    Revoked(String),
    /// The token was rotated to this version.
    Refreshed(i64),
    /// Notifications may have been missed: read the session again.
    Recheck,
}

/// A stream refused because a cap is reached; the variant says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooManyStreams {
    /// The owner holds [`EventsConfig::max_streams_per_owner`] streams on this instance.
    #[error("too many open event streams for this owner")]
    Owner,
    /// The client ip holds [`EventsConfig::max_streams_per_ip`] streams on this instance.
    #[error("too many open event streams from this client address")]
    ClientIp,
    /// This instance holds [`EventsConfig::max_streams`] streams.
    #[error("too many open event streams on this instance")]
    Instance,
}

struct Topic {
    owner_key: String,
    tx: broadcast::Sender<Signal>,
    subscribers: HashSet<u64>,
}

#[derive(Default)]
struct HubState {
    topics: HashMap<Uuid, Topic>,
    owners: HashMap<String, usize>,
    /// Streams per client ([`client_key`]).
    clients: HashMap<IpAddr, usize>,
    /// Streams on this instance.
    streams: usize,
    next_id: u64,
}

impl HubState {
    /// Which cap, if any, a new stream of `owner_key` from `client` would exceed.
    fn refusal(
        &self,
        config: &EventsConfig,
        owner_key: &str,
        client: IpAddr,
    ) -> Option<TooManyStreams> {
        let owner = self.owners.get(owner_key).copied().unwrap_or(0);
        let from_client = self.clients.get(&client).copied().unwrap_or(0);
        if owner >= config.max_streams_per_owner {
            Some(TooManyStreams::Owner)
        } else if from_client >= config.max_streams_per_ip {
            Some(TooManyStreams::ClientIp)
        } else if self.streams >= config.max_streams {
            Some(TooManyStreams::Instance)
        } else {
            None
        }
    }
}

/// Takes one from a count, removing it at zero.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

pub(crate) struct Inner {
    state: Mutex<HubState>,
    config: EventsConfig,
    store: Store,
    shutdown: watch::Sender<bool>,
    connections: watch::Sender<u64>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // The state stays consistent even if a holder panicked: every critical section is a
        // handful of map operations.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers a signal to every subscriber of `session_id`, if the owner matches.
    pub(crate) fn dispatch(&self, session_id: Uuid, owner_key: &str, signal: Signal) {
        let state = self.lock();
        if let Some(topic) = state.topics.get(&session_id) {
            if topic.owner_key == owner_key {
                let _ = topic.tx.send(signal);
            } else {
                tracing::warn!(%session_id, "notification owner does not match the session's streams; ignored");
            }
        }
    }

    /// Asks every stream to read its session again.
    pub(crate) fn recheck_all(&self) {
        let state = self.lock();
        for topic in state.topics.values() {
            let _ = topic.tx.send(Signal::Recheck);
        }
    }

    /// Records that the listener is (again) listening.
    pub(crate) fn mark_connected(&self) {
        self.connections.send_modify(|n| *n += 1);
    }
}

/// The hub of live session streams of one instance. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("config", &self.inner.config)
            .field("streams", &self.stream_count())
            .finish()
    }
}

impl EventHub {
    /// A hub without a database listener: events reach streams only through their own
    /// re-validation. Use [`EventHub::start`] in a service.
    pub fn new(store: Store, config: EventsConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        let (connections, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(HubState::default()),
                config,
                store,
                shutdown,
                connections,
            }),
        }
    }

    /// A hub fed by a `LISTEN` on [`crate::store::SESSIONS_CHANNEL`] through its own
    /// connection made with `listen` (straight to the server: a `LISTEN` needs a session of
    /// its own, which a transaction-mode pooler does not give), or, when `None`, with the
    /// store pool's options of the moment (so it follows the primary when that pool does:
    /// [`crate::db::primary`]); the listener reconnects by itself. Must be called inside a
    /// Tokio runtime.
    pub fn start(store: Store, config: EventsConfig, listen: Option<PgConnectOptions>) -> Self {
        let source = listener::Source {
            fixed: listen,
            service: store.pool().pg().clone(),
        };
        let hub = Self::new(store, config);
        listener::spawn(
            Arc::downgrade(&hub.inner),
            source,
            hub.inner.shutdown.subscribe(),
        );
        hub
    }

    /// The settings in force.
    pub fn config(&self) -> &EventsConfig {
        &self.inner.config
    }

    /// Registers a subscriber for `session_id` of `owner_key`, connected from `client_ip`,
    /// under a fresh server-owned id. All three must come from an authenticated caller.
    ///
    /// # Errors
    /// [`TooManyStreams`] when the owner, the client ip ([`client_key`]) or this instance
    /// already holds its maximum.
    pub fn subscribe(
        &self,
        session_id: Uuid,
        owner_key: &str,
        client_ip: IpAddr,
    ) -> Result<Subscription, TooManyStreams> {
        let client = client_key(client_ip);
        let mut state = self.inner.lock();
        if let Some(refused) = state.refusal(&self.inner.config, owner_key, client) {
            return Err(refused);
        }
        state.next_id += 1;
        let id = state.next_id;
        let topic = state.topics.entry(session_id).or_insert_with(|| Topic {
            owner_key: owner_key.to_owned(),
            tx: broadcast::channel(TOPIC_CAPACITY).0,
            subscribers: HashSet::new(),
        });
        if topic.owner_key != owner_key {
            // A session has exactly one owner; an authenticated caller cannot disagree.
            return Err(TooManyStreams::Owner);
        }
        topic.subscribers.insert(id);
        let rx = topic.tx.subscribe();
        *state.owners.entry(owner_key.to_owned()).or_insert(0) += 1;
        *state.clients.entry(client).or_insert(0) += 1;
        state.streams += 1;
        Ok(Subscription {
            hub: self.inner.clone(),
            id,
            session_id,
            owner_key: owner_key.to_owned(),
            client,
            rx,
        })
    }

    /// Subscribes and starts the stream's watcher, which marks the session as streamed
    /// (`sessions.streamed_until`, so that its rotations publish `refreshed`) and
    /// re-validates it at once, then on every signal and timer. Returns once that first
    /// re-validation is done, so a rotation made after this returns reaches the stream. The
    /// receiver yields the events for the client and ends after the final one (or on
    /// shutdown); dropping it ends the subscription.
    ///
    /// # Errors
    /// [`TooManyStreams`], as [`EventHub::subscribe`].
    pub async fn open_stream(
        &self,
        session_id: Uuid,
        owner_key: &str,
        client_ip: IpAddr,
    ) -> Result<mpsc::Receiver<StreamEvent>, TooManyStreams> {
        let sub = self.subscribe(session_id, owner_key, client_ip)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (opened, first_check) = oneshot::channel();
        tokio::spawn(watcher::run(
            sub,
            tx,
            self.inner.store.clone(),
            self.inner.config.clone(),
            self.inner.shutdown.subscribe(),
            opened,
        ));
        // An error only means the watcher ended before its first check (shutdown, or the
        // session ended): the receiver then yields what it sent.
        let _ = first_check.await;
        Ok(rx)
    }

    /// Streams open on this instance.
    pub fn stream_count(&self) -> usize {
        self.inner.lock().streams
    }

    /// Streams open on this instance from `client_ip`'s client ([`client_key`]).
    pub fn client_stream_count(&self, client_ip: IpAddr) -> usize {
        let client = client_key(client_ip);
        self.inner.lock().clients.get(&client).copied().unwrap_or(0)
    }

    /// How many times the database listener has connected and started listening; it rises
    /// after each reconnection.
    pub fn listener_connections(&self) -> watch::Receiver<u64> {
        self.inner.connections.subscribe()
    }

    /// Ends every stream and the listener (graceful shutdown).
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// One subscriber: a server-owned id on its session's channel. Dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Inner>,
    id: u64,
    session_id: Uuid,
    owner_key: String,
    client: IpAddr,
    rx: broadcast::Receiver<Signal>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The server-owned subscriber id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session this subscriber follows.
    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// The next signal for this session; a lag counts as [`Signal::Recheck`].
    pub(crate) async fn recv(&mut self) -> Signal {
        match self.rx.recv().await {
            Ok(signal) => signal,
            Err(broadcast::error::RecvError::Lagged(_)) => Signal::Recheck,
            // The topic lives as long as this subscription; treat a closed channel as a
            // reason to look at the database rather than to wait forever.
            Err(broadcast::error::RecvError::Closed) => Signal::Recheck,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        if let Some(topic) = state.topics.get_mut(&self.session_id) {
            topic.subscribers.remove(&self.id);
            if topic.subscribers.is_empty() {
                state.topics.remove(&self.session_id);
            }
        }
        release(&mut state.owners, &self.owner_key);
        release(&mut state.clients, &self.client);
        state.streams = state.streams.saturating_sub(1);
    }
}
