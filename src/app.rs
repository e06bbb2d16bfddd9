//! `Application`: builds the state from settings, binds the listener, serves until told to stop.
//! An app that serves latchkey's routers itself builds the state alone ([`AppState::build`])
//! and shuts its streams down with [`AppState::shutdown_on`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use argon2::Params;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::auth::jwt::JwtKeys;
use crate::auth::password::{owasp_params, PasswordHasher};
use crate::auth::throttle::ThrottleConfig;
use crate::auth::{Auth, AuthConfig};
use crate::db::{Pool, Pooler, StatementTimeouts};
use crate::events::{EventHub, EventsConfig};
use crate::http::{metrics_router, router, AppState, HttpConfig};
use crate::limits::{ClientRateLimiter, RateLimit};
use crate::rng::{OsSecretSource, SecretSource};
use crate::server::ServerLimits;
use crate::store::{Coalescing, Store};

/// Everything needed to build the service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to bind (port 0 picks a free one).
    pub bind: SocketAddr,
    /// Protocol lifetimes.
    pub auth: AuthConfig,
    /// HTTP settings.
    pub http: HttpConfig,
    /// HS256 secret for access tokens.
    pub jwt_secret: SecretString,
    /// Argon2id parameters for new hashes.
    pub argon2: Params,
    /// Concurrent password hashes.
    pub hash_concurrency: usize,
    /// Live session streams.
    pub events: EventsConfig,
    /// Login throttling.
    pub throttle: ThrottleConfig,
    /// Timeouts and the connection cap of the HTTP server.
    pub server: ServerLimits,
    /// Address of the `/metrics` listener; `None`: metrics are not served.
    pub metrics_bind: Option<SocketAddr>,
    /// Per-client-ip limit of `POST /auth/anonymous`.
    pub anonymous_limit: RateLimit,
    /// How the pool reaches PostgreSQL: [`Pooler::Transaction`] behind a transaction-mode
    /// pooler (every statement unnamed, in a transaction of its own).
    pub pooler: Pooler,
    /// Statement and lock timeouts that each transaction sets with `SET LOCAL` in
    /// [`Pooler::Transaction`] mode. A direct pool carries its own
    /// ([`StatementTimeouts::apply`] on its connect options).
    pub statement_timeouts: StatementTimeouts,
    /// Where the `LISTEN` connection of the live streams goes: straight to the server.
    /// `None`: the pool's own connect options (right unless the pool goes through a
    /// transaction-mode pooler).
    pub listen_database_url: Option<SecretString>,
}

impl Settings {
    /// Defaults for a local instance on `bind` with the given JWT secret.
    pub fn local(bind: SocketAddr, jwt_secret: SecretString) -> Self {
        Self {
            bind,
            auth: AuthConfig::default(),
            http: HttpConfig {
                allowed_origins: vec![format!("http://{bind}")],
                cookie_secure: true,
                cors: false,
                trusted_proxies: Vec::new(),
                account_page: true,
            },
            jwt_secret,
            argon2: owasp_params(),
            hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            events: EventsConfig::default(),
            throttle: ThrottleConfig::default(),
            server: ServerLimits::default(),
            metrics_bind: None,
            anonymous_limit: RateLimit::ANONYMOUS,
            pooler: Pooler::None,
            statement_timeouts: StatementTimeouts::default(),
            listen_database_url: None,
        }
    }
}

/// A built, bound, not yet running service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    limits: ServerLimits,
}

impl Application {
    /// Builds the state with the OS RNG and binds the listener.
    ///
    /// # Errors
    /// When the address cannot be bound or the RNG fails.
    pub async fn build(settings: Settings, pool: PgPool) -> anyhow::Result<Self> {
        Self::build_with_rng(settings, pool, Arc::new(OsSecretSource)).await
    }

    /// Builds with an explicit secret source (tests inject a failing one).
    ///
    /// # Errors
    /// When the address cannot be bound or the RNG fails while computing the dummy hash.
    pub async fn build_with_rng(
        settings: Settings,
        pool: PgPool,
        rng: Arc<dyn SecretSource>,
    ) -> anyhow::Result<Self> {
        let state = AppState::build_with_rng(&settings, pool, rng)?;
        let listener = TcpListener::bind(settings.bind).await?;
        let metrics_listener = match settings.metrics_bind {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            limits: settings.server,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound address of the `/metrics` listener, if there is one.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn metrics_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
    }

    /// The shared state (tests read counters from it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then ends the live event streams and drains
    /// in-flight requests.
    ///
    /// # Errors
    /// None so far: a failed accept is logged and retried; the signature keeps room for one.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Streams never finish on their own; they are ended first so the drain can complete.
        let shutdown = self.state.shutdown_on(shutdown);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let api = router(self.state.clone(), self.limits.request_timeout);
        let trusted = self.state.http.trusted_proxies.clone();
        let api = crate::server::serve(self.listener, api, &self.limits, &trusted, stopped.clone());
        let metrics = async {
            if let Some(listener) = self.metrics_listener {
                let app = metrics_router(self.state.clone());
                crate::server::serve(listener, app, &self.limits, &trusted, stopped.clone()).await;
            }
        };
        tokio::join!(api, metrics);
        Ok(())
    }
}

/// Building and stopping latchkey inside an app that serves it itself (nesting
/// [`crate::http::auth_router`] in its own router, on its own listener).
impl AppState {
    /// latchkey's state from `settings` on `pool` (migrated), with the OS RNG: the protocol,
    /// the HTTP settings and the hub of live streams, whose `LISTEN` connection starts here,
    /// on `settings.listen_database_url` (by default the pool's server). The store uses
    /// `pool` as `settings.pooler` says; behind a transaction-mode pooler, build it with
    /// [`crate::db::pooler_connect_options`].
    /// `settings.bind`, `settings.server` and `settings.metrics_bind` are not used: the app
    /// binds and serves. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// A JWT secret anyone could guess or read ([`crate::auth::jwt::check_secret`]), a
    /// `listen_database_url` that does not parse, or the RNG failing while computing the
    /// dummy password hash.
    pub fn build(settings: &Settings, pool: PgPool) -> anyhow::Result<Self> {
        Self::build_with_rng(settings, pool, Arc::new(OsSecretSource))
    }

    /// [`AppState::build`] with an explicit secret source (tests inject a failing one).
    ///
    /// # Errors
    /// As [`AppState::build`].
    pub fn build_with_rng(
        settings: &Settings,
        pool: PgPool,
        rng: Arc<dyn SecretSource>,
    ) -> anyhow::Result<Self> {
        let hasher = PasswordHasher::new(
            settings.argon2.clone(),
            settings.hash_concurrency,
            rng.clone(),
        )
        .map_err(|e| anyhow::anyhow!("password hasher: {e}"))?;
        crate::auth::jwt::check_secret(settings.jwt_secret.expose_secret())
            .map_err(|m| anyhow::anyhow!("JWT secret: {m}"))?;
        let jwt = JwtKeys::hs256(&settings.jwt_secret, settings.auth.access_ttl_secs);
        let listen = match &settings.listen_database_url {
            Some(url) => Some(
                url.expose_secret()
                    .parse::<PgConnectOptions>()
                    .map_err(|e| anyhow::anyhow!("listen database URL: {e}"))?,
            ),
            None => {
                if settings.pooler == Pooler::Transaction {
                    tracing::warn!("behind a transaction-mode pooler without a listen database URL: the LISTEN of live streams goes through the pooler, which does not keep it");
                }
                None
            }
        };
        let pool = Pool::new(pool, settings.pooler, settings.statement_timeouts);
        let store = Store::new(pool).with_coalescing(Coalescing::READS);
        let events = EventHub::start(store.clone(), settings.events.clone(), listen);
        let auth = Auth::new(store, Arc::new(hasher), jwt, rng, settings.auth.clone())
            .with_throttle(settings.throttle.clone());
        Ok(Self {
            auth,
            http: Arc::new(settings.http.clone()),
            events,
            anonymous_limiter: ClientRateLimiter::new(settings.anonymous_limit),
        })
    }

    /// The graceful-shutdown signal of an app that serves latchkey's routers: resolves when
    /// `signal` does, once latchkey's live event streams (`GET /auth/events`) and their
    /// `LISTEN` connection have been told to end. Streams never end on their own, so a drain
    /// without this would wait for them forever.
    ///
    /// ```no_run
    /// # async fn serve(app: axum::Router, latchkey: latchkey::http::AppState) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(
    ///     listener,
    ///     // The client address, for sessions' `ip`, login throttling and the audit.
    ///     app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    /// )
    /// .with_graceful_shutdown(latchkey.shutdown_on(async {
    ///     let _ = tokio::signal::ctrl_c().await;
    /// }))
    /// .await
    /// # }
    /// ```
    pub fn shutdown_on<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let events = self.events.clone();
        async move {
            signal.await;
            events.shutdown();
        }
    }
}
