//! `latchkey serve`: opens the database, builds the service, serves until SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use secrecy::SecretString;

use crate::app::{Application, Settings};
use crate::auth::password::owasp_params;
use crate::auth::throttle::ThrottleConfig;
use crate::auth::AuthConfig;
use crate::config::ServeArgs;
use crate::events::EventsConfig;
use crate::http::HttpConfig;
use crate::limits::RateLimit;
use crate::rng::{random_array, OsSecretSource};
use crate::server::ServerLimits;

use super::database::{open_database, statement_timeouts};
use super::expire::spawn_sweeper;
use super::Target;
use crate::db::StatementTimeouts;

/// Exit status of `serve` for a setting it refuses (as for a flag clap cannot parse).
pub(super) const EXIT_BAD_SETTING: u8 = 2;

/// `latchkey serve`, its flags already checked (exit 2 on a bad one, before the database):
/// opens the database, serves until SIGTERM or Ctrl-C, then drains.
pub(super) async fn serve(target: &Target, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (pool, follower) = open_database(target, &args).await?;
    let sweep_interval_secs = args.sweep_interval_secs;
    let settings = settings(target, args)?;
    let app = Application::build(settings, pool).await?;
    if sweep_interval_secs > 0 {
        // The purge's batches and its probe run untimed, on two connections of their own, as
        // `latchkey expire`'s; a sweep that finds the database gone fails and the next one
        // tries again.
        let untimed = StatementTimeouts {
            statement: Duration::ZERO,
            lock: Duration::ZERO,
        };
        // With several hosts, on the primary of the moment, following it as the service does.
        let options = match follower.as_ref().map(|f| f.current_url()) {
            Some(url) => url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .context("parsing the database URL")?,
            None => target.options()?,
        };
        let pg = crate::db::pool_options(2).connect_lazy_with(options);
        if let Some(f) = &follower {
            f.follow(&pg, |node| node);
        }
        let store = crate::store::Store::new(target.pool(pg, untimed));
        spawn_sweeper(
            store,
            app.state().auth.metrics().clone(),
            sweep_interval_secs,
        );
    }
    tracing::info!(addr = %app.local_addr()?, "latchkey listening");
    if let Some(addr) = app.metrics_addr()? {
        tracing::info!(%addr, "metrics listening");
    }
    app.run_until(shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(ExitCode::SUCCESS)
}

/// The service's settings from its flags (a random JWT key, with a warning, when none is set).
fn settings(target: &Target, args: ServeArgs) -> anyhow::Result<Settings> {
    let statement_timeouts = statement_timeouts(&args);
    let jwt_secret = match args.jwt_secret {
        Some(s) => SecretString::from(s.0),
        None => {
            tracing::warn!("LATCHKEY_JWT_SECRET is not set: using a random key; access tokens will not survive a restart nor work across instances");
            let bytes: [u8; 32] = random_array(&OsSecretSource)?;
            SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    };
    Ok(Settings {
        bind: args.bind,
        auth: AuthConfig {
            grace_secs: args.grace_secs,
            access_ttl_secs: args.access_ttl_secs,
            idle_ttl_secs: args.idle_ttl_secs,
            absolute_ttl_secs: args.absolute_ttl_secs,
            anon_ttl_secs: args.anon_ttl_secs,
            touch_interval_secs: args.touch_interval_secs,
            expiry_step_override_secs: args.expiry_step_secs,
            refresh_events: args.refresh_events,
        },
        http: HttpConfig {
            allowed_origins: args.allowed_origins,
            cookie_secure: args.cookie_secure,
            cors: args.cors,
            trusted_proxies: args.trusted_proxies.iter().filter_map(|p| p.0).collect(),
            account_page: args.account_page,
        },
        jwt_secret,
        argon2: owasp_params(),
        hash_concurrency: args
            .hash_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        events: EventsConfig {
            max_streams_per_owner: args.events_max_per_owner.max(1),
            max_streams_per_ip: args.events_max_per_ip,
            max_streams: args.events_max_streams,
            revalidate_interval: Duration::from_secs(args.events_revalidate_secs.max(1)),
            expiring_lead: Duration::from_secs(args.events_expiring_secs),
            keep_alive: Duration::from_secs(args.events_keepalive_secs.max(1)),
        },
        throttle: ThrottleConfig {
            account_free_failures: args.login_account_free_failures,
            ip_free_failures: args.login_ip_free_failures,
            backoff_base_secs: args.login_backoff_secs as f64,
            backoff_max_secs: args.login_backoff_max_secs as f64,
            window_secs: args.login_failure_window_secs as f64,
        },
        server: ServerLimits {
            header_timeout: Duration::from_secs(args.header_timeout_secs),
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            max_open_connections: usize::try_from(args.max_open_connections).unwrap_or(usize::MAX),
            max_connections_per_ip: usize::try_from(args.max_connections_per_ip)
                .unwrap_or(usize::MAX),
        },
        metrics_bind: args.metrics_bind,
        anonymous_limit: anonymous_limit(args.anon_per_ip_per_minute, args.anon_burst)?,
        pooler: target.pooler,
        statement_timeouts,
        // Without a URL of its own, the LISTEN follows the service pool (and the primary).
        listen_database_url: (target.direct != target.url)
            .then(|| SecretString::from(target.direct.clone())),
    })
}

/// The per-ip limit of anonymous minting; the flags' parsers already refuse zero.
fn anonymous_limit(per_minute: u32, burst: u32) -> anyhow::Result<RateLimit> {
    use std::num::NonZeroU32;
    let nonzero =
        |n, flag| NonZeroU32::new(n).with_context(|| format!("{flag} must be at least 1"));
    Ok(RateLimit {
        per_minute: nonzero(per_minute, "--anon-per-ip-per-minute")?,
        burst: nonzero(burst, "--anon-burst")?,
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested: draining in-flight requests");
}
