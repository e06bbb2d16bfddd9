//! latchkey: a persistent session store backed by PostgreSQL, and the auth-session service
//! built on it.
//!
//! * [`store`] owns every SQL statement: create, authenticate, rotate (a compare-and-swap on
//!   `version`), revoke, list. It never imports axum.
//! * [`db`] connects and migrates; its [`db::Pool`] runs the store's statements directly or,
//!   behind a transaction-mode pooler, each unnamed in a transaction of its own.
//! * [`auth`] is the protocol: login with argon2id, the refresh outcome table, mode checks,
//!   JWT access tokens.
//! * [`http`] is the axum routers that expose it as `/auth/*`; [`http::auth_router`] nests
//!   into any axum app.
//! * [`server`] serves a router over HTTP/1.1 with header and request timeouts and a cap on
//!   open connections.
//! * [`events`] is the hub of live session streams and its Postgres `LISTEN/NOTIFY` bridge.
//! * [`limits`] holds the per-client limits each instance keeps in memory.
//! * [`token`] is the wire format of tokens and the sealing of successors.
//! * [`embedded`] runs a private PostgreSQL cluster when no server is configured.
//!
//! Cargo features: `store` (the store and the tower-sessions store alone: sqlx and
//! tower-sessions), `axum` (the auth service as a library: routers, extractors, the
//! protocol), `server` (the `latchkey` binary; the default), `fuzzing` (the HTTP layer's
//! parsers for the fuzz targets in `fuzz/`; not part of the API).

#![forbid(unsafe_code)]

#[cfg(feature = "axum")]
pub mod app;
#[cfg(feature = "axum")]
pub mod auth;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
pub mod db;
#[cfg(feature = "server")]
pub mod embedded;
#[cfg(feature = "axum")]
pub mod events;
#[cfg(feature = "axum")]
pub mod http;
#[cfg(feature = "axum")]
pub mod limits;
#[cfg(feature = "axum")]
pub mod metrics;
#[cfg(feature = "axum")]
pub mod rng;
#[cfg(feature = "axum")]
pub mod server;
pub mod store;
#[cfg(feature = "axum")]
pub mod token;

use serde::{Deserialize, Serialize};

/// The two modes of a session. A token of one mode never works in the other.
/// Stored as the Postgres enum `latchkey.session_kind` (see `store::owner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// A cookie session checked against the database on every request.
    Stateful,
    /// A short-lived JWT access token plus a rotating refresh token.
    Stateless,
}

impl SessionKind {
    /// The lowercase name, as in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stateful => "stateful",
            Self::Stateless => "stateless",
        }
    }
}

/// latchkey's migrations, applied by [`db::migrate`] (or `latchkey migrate`) in the schema
/// [`db::SCHEMA`] with their own record.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
