//! Command-line flags with environment fallbacks. Their doc comments are the `--help` text.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::store::OwnerKey;

mod expire;
mod validate;

pub use expire::ExpireArgs;
pub use validate::{InvalidSetting, PUBLISHED_JWT_SECRETS};

/// Local default database, used when no `DATABASE_URL` is given and a server there accepts
/// it (else the embedded cluster): created on first `serve` or `migrate` if missing.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/latchkey";

/// latchkey: PostgreSQL-backed sessions with race-free refresh.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about)]
pub struct Cli {
    /// PostgreSQL connection URL. Without it: postgres://postgres@127.0.0.1:5432/latchkey if
    /// a server there accepts it, else an embedded cluster (see --data-dir).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Run the database in a private PostgreSQL cluster in this directory, created with the
    /// installed PostgreSQL programs on first use and kept between runs. Without DATABASE_URL
    /// nor a server on 127.0.0.1:5432 it is the default, in $XDG_DATA_HOME/latchkey/postgres
    /// (~/.local/share/latchkey/postgres; /var/lib/latchkey/postgres as root).
    #[arg(long, env = "LATCHKEY_DATA_DIR", global = true)]
    pub data_dir: Option<std::path::PathBuf>,

    /// How DATABASE_URL reaches PostgreSQL: `none` (directly, or a session-mode pooler) or
    /// `transaction` (a transaction-mode pooler such as PgBouncer: every statement goes unnamed
    /// in a transaction of its own; the LISTEN of live streams and the migrations go to
    /// --listen-database-url).
    #[arg(long, env = "LATCHKEY_POOLER", global = true, default_value = "none")]
    pub pooler: crate::db::Pooler,

    /// PostgreSQL URL for what needs a session of its own: the LISTEN connection of the live
    /// streams and the migrations. Default: DATABASE_URL. Behind a transaction-mode pooler,
    /// the server itself (not the pooler).
    #[arg(
        long,
        env = "LATCHKEY_LISTEN_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub listen_database_url: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at start: the size of `serve`'s flags costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Apply migrations (unless --no-migrate) and serve the /auth API until SIGTERM.
    Serve(ServeArgs),
    /// Apply migrations and exit.
    Migrate,
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect and revoke sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Manage API keys of machine clients.
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Purge expired sessions, old revoked sessions and old audit events, in small batches
    /// (for cron). Prints one summary line; exits non-zero on failure.
    Expire(ExpireArgs),
    /// GET the service's /readyz (for a container's HEALTHCHECK): exit 0 on 200, 1 otherwise
    /// with the reason. Needs no database.
    Healthcheck(HealthcheckArgs),
}

/// Flags of `latchkey healthcheck`.
#[derive(Debug, Args, Clone)]
pub struct HealthcheckArgs {
    /// URL to GET, http only [default: http://<--bind>/readyz].
    #[arg(long, value_parser = parse_http_url)]
    pub url: Option<hyper::Uri>,
    /// The service's listen address, for the default URL; an unspecified address (0.0.0.0,
    /// [::]) is reached on loopback.
    #[arg(long, env = "LATCHKEY_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Seconds to wait for the answer (1 to 300).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout_secs: u64,
}

impl HealthcheckArgs {
    /// The URL to check: `--url`, or `/readyz` on `--bind` (loopback for an unspecified
    /// address).
    ///
    /// # Errors
    /// None in practice: a socket address always makes a valid URL.
    pub fn target(&self) -> Result<hyper::Uri, String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let mut addr = self.bind;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        parse_http_url(&format!("http://{addr}/readyz"))
    }
}

/// An `http://host[:port]/path` URL (no TLS: the check runs beside the service).
fn parse_http_url(s: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!(
            "{s:?} is not an http://host[:port]/path URL (https is not supported: check the service on its own address)"
        ));
    }
    Ok(uri)
}

/// `latchkey apikey …`
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key for a user; prints it once (only its hash is stored).
    Create {
        /// The user it acts for: user:<uuid>.
        #[arg(long)]
        owner: OwnerKey,
        /// A label (e.g. the service using it).
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never the keys themselves).
    List {
        /// Only keys of this user (user:<uuid>).
        #[arg(long)]
        owner: Option<OwnerKey>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key and every session it created.
    Revoke {
        /// Key id.
        id: Uuid,
    },
}

/// A value that must never be printed: its `Debug` is redacted.
#[derive(Clone)]
pub struct Sensitive(pub String);

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Sensitive {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Flags of `latchkey serve`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LATCHKEY_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// HS256 secret for access tokens (at least 32 bytes); every instance needs the same one.
    /// Without it a random one is generated and tokens die with the process.
    #[arg(long, env = "LATCHKEY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Sensitive>,
    /// Grace window in seconds for the previous refresh token (0 disables it).
    #[arg(long, env = "LATCHKEY_GRACE_SECS", default_value_t = 30)]
    pub grace_secs: u64,
    /// Lifetime of a JWT access token in seconds.
    #[arg(long, env = "LATCHKEY_ACCESS_TTL_SECS", default_value_t = 300)]
    pub access_ttl_secs: u64,
    /// Idle lifetime of a session in seconds (slides on use).
    #[arg(long, env = "LATCHKEY_IDLE_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub idle_ttl_secs: u64,
    /// Absolute lifetime of a session in seconds.
    #[arg(long, env = "LATCHKEY_ABSOLUTE_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub absolute_ttl_secs: u64,
    /// Lifetime of an anonymous session in seconds.
    #[arg(long, env = "LATCHKEY_ANON_TTL_SECS", default_value_t = 600)]
    pub anon_ttl_secs: u64,
    /// Anonymous sessions one client ip (an IPv6 client by its /64) may create per minute on
    /// one instance, on average (POST /auth/anonymous; beyond it: 429).
    #[arg(long, env = "LATCHKEY_ANON_PER_IP_PER_MINUTE", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub anon_per_ip_per_minute: u32,
    /// Anonymous sessions one client ip may create back to back before the per-minute rate
    /// applies.
    #[arg(long, env = "LATCHKEY_ANON_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub anon_burst: u32,
    /// A stateful check writes last_used_at at most this often per session (seconds).
    #[arg(long, env = "LATCHKEY_TOUCH_INTERVAL_SECS", default_value_t = 60)]
    pub touch_interval_secs: u64,
    /// The idle expiry slides (on a refresh or a stateful check) only when it would move by
    /// at least this many seconds, so most writes leave the indexed expires_at alone (HOT
    /// updates); a session may idle out up to one step early. Shorter than --idle-ttl-secs
    /// [default: the larger of --touch-interval-secs and 1% of --idle-ttl-secs].
    #[arg(long, env = "LATCHKEY_EXPIRY_STEP_SECS")]
    pub expiry_step_secs: Option<u64>,
    /// Record a `refreshed` audit event on every token rotation (one more row write per
    /// refresh). Off: the session row keeps its version and last rotation time, and a reuse
    /// records the chain in its `reuse_detected` event.
    #[arg(long, env = "LATCHKEY_REFRESH_EVENTS")]
    pub refresh_events: bool,
    /// Comma-separated origins allowed on cookie-authenticated requests.
    #[arg(
        long,
        env = "LATCHKEY_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:8080,http://127.0.0.1:8080"
    )]
    pub allowed_origins: Vec<String>,
    /// Answer CORS requests (preflights included) from the allowed origins, with
    /// credentials, so a front end on another origin can call the API; off by default.
    #[arg(long, env = "LATCHKEY_CORS", default_value_t = false, action = clap::ArgAction::Set)]
    pub cors: bool,
    /// Mark the cookie Secure and name it __Host-latchkey. Set to false only for local http.
    #[arg(long, env = "LATCHKEY_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,
    /// Serve the account page at /auth/account (sign in, where you are signed in, sign out
    /// one session, the others or all); false: 404.
    #[arg(long, env = "LATCHKEY_ACCOUNT_PAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub account_page: bool,
    /// Live event streams (GET /auth/events) one owner may hold open on one instance.
    #[arg(long, env = "LATCHKEY_EVENTS_MAX_PER_OWNER", default_value_t = 16)]
    pub events_max_per_owner: usize,
    /// Live event streams one client ip (an IPv6 client by its /64) may hold open on one
    /// instance, whatever sessions they follow.
    #[arg(long, env = "LATCHKEY_EVENTS_MAX_PER_IP", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub events_max_per_ip: usize,
    /// Live event streams one instance holds open, all clients together (fewer than
    /// --max-open-connections, so streams never take every connection).
    #[arg(long, env = "LATCHKEY_EVENTS_MAX_STREAMS", default_value_t = 512,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub events_max_streams: usize,
    /// Each event stream re-reads its session this often (seconds), as a backstop to NOTIFY.
    #[arg(long, env = "LATCHKEY_EVENTS_REVALIDATE_SECS", default_value_t = 30)]
    pub events_revalidate_secs: u64,
    /// Send `expiring` this many seconds before a session expires.
    #[arg(long, env = "LATCHKEY_EVENTS_EXPIRING_SECS", default_value_t = 60)]
    pub events_expiring_secs: u64,
    /// Interval of keep-alive comments on idle event streams (seconds).
    #[arg(long, env = "LATCHKEY_EVENTS_KEEPALIVE_SECS", default_value_t = 15)]
    pub events_keepalive_secs: u64,
    /// Do not apply migrations at startup.
    #[arg(long)]
    pub no_migrate: bool,
    /// At start, keep trying to reach PostgreSQL (and apply the migrations) for at most this
    /// many seconds, 0.25 s doubling to 10 s between attempts, then exit 1. Unset: keep
    /// trying, as a container that starts beside its database wants. 0: one attempt.
    #[arg(long, env = "LATCHKEY_DB_WAIT_SECS")]
    pub db_wait_secs: Option<u64>,
    /// Maximum database connections of this instance.
    #[arg(long, env = "LATCHKEY_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub max_connections: u32,
    /// Also purge expired sessions every this many seconds, as `latchkey expire` with its
    /// defaults would (0: off, leave it to cron). Safe with any number of instances.
    #[arg(long, env = "LATCHKEY_SWEEP_INTERVAL_SECS", default_value_t = 0)]
    pub sweep_interval_secs: u64,
    /// Password hashes computed at once (default: number of cores).
    #[arg(long, env = "LATCHKEY_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Comma-separated proxies (CIDRs or addresses) whose X-Forwarded-For gives the client
    /// address: the right-most hop that is not one of them. Default: none (the TCP peer).
    #[arg(long, env = "LATCHKEY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Failed logins of one account from one address before the back-off starts.
    #[arg(
        long,
        env = "LATCHKEY_LOGIN_ACCOUNT_FREE_FAILURES",
        default_value_t = 5
    )]
    pub login_account_free_failures: u32,
    /// Failed logins from one address (any account or API key) before the back-off starts.
    #[arg(long, env = "LATCHKEY_LOGIN_IP_FREE_FAILURES", default_value_t = 50)]
    pub login_ip_free_failures: u32,
    /// First login back-off past the free failures (seconds); doubles with each failure.
    #[arg(long, env = "LATCHKEY_LOGIN_BACKOFF_SECS", default_value_t = 1)]
    pub login_backoff_secs: u64,
    /// Longest login back-off (seconds).
    #[arg(long, env = "LATCHKEY_LOGIN_BACKOFF_MAX_SECS", default_value_t = 900)]
    pub login_backoff_max_secs: u64,
    /// Failure counters restart this many seconds after their last failure.
    #[arg(
        long,
        env = "LATCHKEY_LOGIN_FAILURE_WINDOW_SECS",
        default_value_t = 900
    )]
    pub login_failure_window_secs: u64,
    /// Seconds a client has to send a request head (1 to 3600); also closes a keep-alive
    /// connection that stays idle this long between requests.
    #[arg(long, env = "LATCHKEY_HEADER_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a request (all but the GET /auth/events stream) has to be answered; past it
    /// the answer is 503 (1 to 3600).
    #[arg(long, env = "LATCHKEY_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// HTTP connections open at once on each listener, API and metrics (1 to 1000000);
    /// further clients wait to be accepted.
    #[arg(long, env = "LATCHKEY_MAX_OPEN_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_open_connections: u64,
    /// HTTP connections one client address (an IPv6 client by its /64) may hold open on each
    /// listener (1 to 1000000); a further one is closed at once. Trusted proxies are exempt.
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS_PER_IP", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_ip: u64,
    /// PostgreSQL statement_timeout of the service's connections, in milliseconds (0: none).
    #[arg(long, env = "LATCHKEY_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub statement_timeout_ms: u32,
    /// PostgreSQL lock_timeout of the service's connections, in milliseconds (0: none).
    #[arg(long, env = "LATCHKEY_LOCK_TIMEOUT_MS", default_value_t = 2000)]
    pub lock_timeout_ms: u32,
    /// Serve GET /metrics on this address, apart from the API (default: not served).
    #[arg(long, env = "LATCHKEY_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
}

/// One entry of `--trusted-proxies`: a CIDR, one address, or nothing (an empty entry, as in
/// `LATCHKEY_TRUSTED_PROXIES=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(pub Option<ipnet::IpNet>);

/// A trusted proxy: a CIDR (`10.0.0.0/8`) or one address (`10.0.0.1`); empty is none.
fn parse_proxy(s: &str) -> Result<TrustedProxy, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(TrustedProxy(None));
    }
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| TrustedProxy(Some(net)))
        .map_err(|_| format!("{s:?} is not a CIDR (10.0.0.0/8) or an IP address"))
}

/// `latchkey user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from standard input.
    Add {
        /// Login address.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (the only way to pass it).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Disable an account and revoke its sessions, including those of its API keys.
    Disable {
        /// Login address.
        email: String,
    },
    /// Let a disabled account log in again (its revoked sessions stay revoked).
    Enable {
        /// Login address.
        email: String,
    },
    /// Set a new password, read from standard input, and revoke the account's sessions.
    Passwd {
        /// Login address.
        email: String,
        /// Read the password from standard input (the only way to pass it).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List the accounts (no password hash), oldest first, with their live sessions.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `latchkey sessions …`
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions (newest first, at most 1000), without any secret.
    List {
        /// Only this owner (user:<uuid>, apikey:<uuid>, anon:<uuid>).
        #[arg(long)]
        owner: Option<OwnerKey>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one session by id (exit 1 when no live session has it), or every session of an
    /// owner.
    Revoke {
        /// Session id.
        #[arg(required_unless_present = "owner", conflicts_with = "owner")]
        id: Option<Uuid>,
        /// Revoke all sessions of this owner.
        #[arg(long)]
        owner: Option<OwnerKey>,
    },
}
