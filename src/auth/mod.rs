//! The authentication protocol: login, the refresh outcome table, session checks, logout.
//!
//! Nothing here knows about HTTP; the `/auth` handlers, the CLI and the tests call [`Auth`]
//! directly. This file holds [`Auth`] itself (its parts, constructor and accessors); the
//! protocol is split by concern:
//!
//! * `error`: [`AuthError`] and its stable codes; `config`: [`AuthConfig`];
//! * `types`: [`ClientMeta`], [`Issued`], [`Upgrade`], [`IssueSpec`], [`Caller`];
//! * `login`: password and API-key logins, the upgrade of an anonymous session;
//! * `issue`: issuing a session, anonymous sessions, API-key creation;
//! * `refresh`: the refresh outcome table and the checks it shares with `check`;
//! * `check`: the cookie and bearer checks, logout;
//! * [`jwt`], [`password`], [`throttle`]: access tokens, argon2id hashing, login throttling.
//!
//! Whether a session is active, expired or revoked is decided by one rule,
//! [`SessionState`](crate::store::SessionState).

mod check;
mod config;
mod error;
mod issue;
pub mod jwt;
mod login;
pub mod password;
mod refresh;
pub mod throttle;
mod types;

use std::sync::Arc;

pub use config::AuthConfig;
pub use error::AuthError;
pub use types::{Caller, ClientMeta, IssueSpec, Issued, Upgrade};

use crate::metrics::Metrics;
use crate::rng::SecretSource;
use crate::store::Store;
use jwt::JwtKeys;
use password::PasswordHasher;
use throttle::{LoginThrottle, ThrottleConfig};

/// The protocol engine: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct Auth {
    store: Store,
    hasher: Arc<PasswordHasher>,
    // Shared, not copied: the engine is cloned into every request's state.
    jwt: Arc<JwtKeys>,
    rng: Arc<dyn SecretSource>,
    config: Arc<AuthConfig>,
    metrics: Arc<Metrics>,
    throttle: Arc<LoginThrottle>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Assembles the engine.
    pub fn new(
        store: Store,
        hasher: Arc<PasswordHasher>,
        jwt: JwtKeys,
        rng: Arc<dyn SecretSource>,
        config: AuthConfig,
    ) -> Self {
        let throttle = LoginThrottle::new(
            ThrottleConfig::default(),
            &jwt.derive_key(b"login throttle"),
        );
        Self {
            store,
            hasher,
            jwt: Arc::new(jwt),
            rng,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            throttle: Arc::new(throttle),
        }
    }

    /// The same engine with these login throttling settings (the default is
    /// [`ThrottleConfig::default`]); account hashes stay keyed by the JWT secret.
    pub fn with_throttle(mut self, config: ThrottleConfig) -> Self {
        let key = self.jwt.derive_key(b"login throttle");
        self.throttle = Arc::new(LoginThrottle::new(config, &key));
        self
    }

    /// The counters of this engine (shared: the service's in-service purge records into them).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The password hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The JWT keys (apps verify access tokens with the same secret).
    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }
}
