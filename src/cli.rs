//! The subcommands: `serve`, `migrate`, `user`, `sessions`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use secrecy::SecretString;

use crate::app::{Application, Settings};
use crate::auth::password::{owasp_params, PasswordHasher};
use crate::auth::throttle::ThrottleConfig;
use crate::auth::AuthConfig;
use crate::config::{
    ApiKeyCommand, Cli, Command, ExpireArgs, ServeArgs, SessionsCommand, UserCommand,
};
use crate::events::EventsConfig;
use crate::http::HttpConfig;
use crate::limits::RateLimit;
use crate::rng::{random_array, OsSecretSource};
use crate::server::ServerLimits;
use crate::store::{ExpirePolicy, ExpireReport, OwnerKey, RevokeReason, Store, EMAIL_UNIQUE};

/// Runs one command; the exit code is what the process returns.
///
/// # Errors
/// Any failure, printed by `main` as `error: …` with exit status 1.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Serve(args) = &cli.command {
        // Before the database: a bad setting must not wait for a cluster to start.
        if let Err(e) = args.validate() {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_BAD_SETTING));
        }
    }
    let database = crate::embedded::Database::open(
        cli.database_url.as_deref(),
        cli.data_dir.as_deref(),
        crate::config::DEFAULT_DATABASE_URL,
    )
    .await?;
    let result = command(database.url(), cli.command).await;
    database.release().await;
    result
}

/// Runs one command on the database at `url`.
async fn command(url: &str, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(url, args).await,
        Command::Migrate => {
            let pool = open(url, 2, true).await?;
            crate::db::migrate(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::User(cmd) => user(url, cmd).await,
        Command::Sessions(cmd) => sessions(url, cmd).await,
        Command::Apikey(cmd) => apikey(url, cmd).await,
        Command::Expire(args) => expire(url, &args).await,
    }
}

async fn open(url: &str, max: u32, create: bool) -> anyhow::Result<sqlx::PgPool> {
    if create {
        crate::db::ensure_database(url)
            .await
            .context("connecting to PostgreSQL")?;
    }
    let pool = crate::db::pool_options(max)
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    Ok(pool)
}

/// A store on a pool of `max` connections to an existing database, for the admin commands.
async fn open_store(url: &str, max: u32) -> anyhow::Result<Store> {
    Ok(Store::new(open(url, max, false).await?))
}

/// Exit status of `serve` for a setting it refuses (as for a flag clap cannot parse).
const EXIT_BAD_SETTING: u8 = 2;

/// A pool whose connections carry the service's statement and lock timeouts.
async fn open_timed(
    url: &str,
    max: u32,
    timeouts: crate::db::StatementTimeouts,
) -> anyhow::Result<sqlx::PgPool> {
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .context("parsing the database URL")?;
    crate::db::pool_options(max)
        .connect_with(timeouts.apply(options))
        .await
        .context("connecting to PostgreSQL")
}

/// `latchkey serve`, its settings already validated.
async fn serve(url: &str, args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Migrations (DDL, maybe on a big table) run on a connection of their own, untimed.
    let setup = open(url, 1, true).await?;
    if !args.no_migrate {
        crate::db::migrate(&setup)
            .await
            .context("applying migrations")?;
    }
    setup.close().await;
    let timeouts = crate::db::StatementTimeouts {
        statement: Duration::from_millis(args.statement_timeout_ms.into()),
        lock: Duration::from_millis(args.lock_timeout_ms.into()),
    };
    let pool = open_timed(url, args.max_connections, timeouts).await?;
    let jwt_secret = match args.jwt_secret {
        Some(s) => SecretString::from(s.0),
        None => {
            tracing::warn!("LATCHKEY_JWT_SECRET is not set: using a random key; access tokens will not survive a restart nor work across instances");
            let bytes: [u8; 32] = random_array(&OsSecretSource)?;
            SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    };
    let settings = Settings {
        bind: args.bind,
        auth: AuthConfig {
            grace_secs: args.grace_secs,
            access_ttl_secs: args.access_ttl_secs,
            idle_ttl_secs: args.idle_ttl_secs,
            absolute_ttl_secs: args.absolute_ttl_secs,
            anon_ttl_secs: args.anon_ttl_secs,
            touch_interval_secs: args.touch_interval_secs,
            refresh_events: args.refresh_events,
        },
        http: HttpConfig {
            allowed_origins: args.allowed_origins,
            cookie_secure: args.cookie_secure,
            cors: args.cors,
            trusted_proxies: args.trusted_proxies.iter().filter_map(|p| p.0).collect(),
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
    };
    if args.sweep_interval_secs > 0 {
        // The purge's batches run untimed, on a connection of their own, as `latchkey expire`.
        spawn_sweeper(open_store(url, 1).await?, args.sweep_interval_secs);
    }
    let app = Application::build(settings, pool).await?;
    tracing::info!(addr = %app.local_addr()?, "latchkey listening");
    if let Some(addr) = app.metrics_addr()? {
        tracing::info!(%addr, "metrics listening");
    }
    app.run_until(shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(ExitCode::SUCCESS)
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

/// How the listings show a time (UTC).
const LISTED_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

async fn user(url: &str, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(url, 2).await?;
    match cmd {
        UserCommand::Add { email, .. } => {
            let hash = password_from_stdin().await?;
            match store.insert_user(&email, &hash).await {
                Ok(id) => {
                    println!("{}", OwnerKey::User(id));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.is_conflict_on(EMAIL_UNIQUE) => {
                    bail!("an account with this email already exists")
                }
                Err(e) => Err(e).context("creating the account"),
            }
        }
        UserCommand::Disable { email } => match store.disable_user(&email).await? {
            Some(n) => {
                println!("disabled {email}; revoked {n} session(s)");
                Ok(ExitCode::SUCCESS)
            }
            None => bail!("no account with this email"),
        },
        UserCommand::Enable { email } => {
            if !store.enable_user(&email).await? {
                bail!("no account with this email");
            }
            println!("enabled {email}");
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Passwd { email, .. } => {
            let hash = password_from_stdin().await?;
            match store
                .set_password(&email, &hash, RevokeReason::Admin)
                .await?
            {
                Some(n) => {
                    println!("password of {email} changed; revoked {n} session(s)");
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!("no account with this email"),
            }
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if json {
                for u in &users {
                    println!("{}", serde_json::to_string(u)?);
                }
            } else {
                println!(
                    "{:<36}  {:<8}  {:>8}  {:<20}  EMAIL",
                    "ID", "STATE", "SESSIONS", "CREATED"
                );
                for u in &users {
                    println!(
                        "{:<36}  {:<8}  {:>8}  {:<20}  {}",
                        u.id,
                        if u.disabled { "disabled" } else { "enabled" },
                        u.live_sessions,
                        u.created_at.format(LISTED_TIME).unwrap_or_default(),
                        u.email
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A password read from standard input (one line, 1 to 1024 bytes), hashed with argon2id.
async fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() || password.len() > 1024 {
        bail!("the password must be 1 to 1024 bytes");
    }
    let hasher = PasswordHasher::new(owasp_params(), 1, Arc::new(OsSecretSource))?;
    Ok(hasher.hash(SecretString::from(password)).await?)
}

async fn sessions(url: &str, cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(url, 2).await?;
    match cmd {
        SessionsCommand::List { owner, json } => {
            let rows = store.list_sessions(owner.as_ref()).await?;
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                println!(
                    "{:<36}  {:<9}  {:<8}  {:<44}  {:<20}  {:<20}",
                    "SESSION", "KIND", "STATE", "OWNER", "CREATED", "EXPIRES"
                );
                for r in &rows {
                    println!(
                        "{:<36}  {:<9}  {:<8}  {:<44}  {:<20}  {:<20}",
                        r.session_id,
                        r.kind.as_str(),
                        r.state,
                        r.owner_key,
                        r.created_at.format(LISTED_TIME).unwrap_or_default(),
                        r.expires_at.format(LISTED_TIME).unwrap_or_default(),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Revoke { id, owner } => {
            let n = match (id, owner) {
                (Some(id), _) => {
                    if !store.revoke(id, RevokeReason::Admin).await? {
                        println!("revoked=0");
                        eprintln!("no live session with id {id} (unknown, or already revoked)");
                        return Ok(ExitCode::FAILURE);
                    }
                    1
                }
                (None, Some(owner)) => store.revoke_owner(&owner, RevokeReason::Admin).await?.len(),
                (None, None) => bail!("give a session id or --owner"),
            };
            println!("revoked={n}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn apikey(url: &str, cmd: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(url, 2).await?;
    match cmd {
        ApiKeyCommand::Create { owner, name } => {
            let auth = offline_auth(store)?;
            match auth.create_api_key(&owner, name.as_deref()).await {
                Ok((id, key)) => {
                    eprintln!(
                        "api key {id} created for {owner}; store it now, it is not shown again:"
                    );
                    println!("{key}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(crate::auth::AuthError::InvalidCredentials) => {
                    bail!("--owner must be user:<uuid> of an existing user")
                }
                Err(e) => Err(e.into()),
            }
        }
        ApiKeyCommand::List { owner, json } => {
            for k in store.list_api_keys(owner.as_ref()).await? {
                if json {
                    println!("{}", serde_json::to_string(&k)?);
                } else {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}  {:<7}  {}  {}",
                        k.id,
                        state,
                        k.owner_key,
                        k.name.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ApiKeyCommand::Revoke { id } => match store.revoke_api_key(id).await? {
            Some(n) => {
                println!("revoked key {id}; revoked={n}");
                Ok(ExitCode::SUCCESS)
            }
            None => bail!("no API key with this id"),
        },
    }
}

/// An [`crate::auth::Auth`] for commands that issue credentials without serving.
fn offline_auth(store: Store) -> anyhow::Result<crate::auth::Auth> {
    let rng: Arc<dyn crate::rng::SecretSource> = Arc::new(OsSecretSource);
    let hasher = PasswordHasher::new(owasp_params(), 1, rng.clone())?;
    let jwt_key: [u8; 32] = random_array(rng.as_ref())?;
    let jwt = crate::auth::jwt::JwtKeys::hs256(
        &SecretString::from(base64::engine::general_purpose::STANDARD.encode(jwt_key)),
        300,
    );
    Ok(crate::auth::Auth::new(
        store,
        Arc::new(hasher),
        jwt,
        rng,
        AuthConfig::default(),
    ))
}

/// `latchkey expire`: batches until nothing is left, then one summary line on stdout.
async fn expire(url: &str, args: &ExpireArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(url, 1).await?;
    let started = std::time::Instant::now();
    let mut progress = Progress::new();
    let report = store
        .expire(&args.policy(), |r| progress.show(r, started))
        .await
        .context("expiring sessions")?;
    progress.finish();
    let logins = store
        .purge_login_records(&args.policy())
        .await
        .context("purging login throttle counters and failures")?;
    let ms = started.elapsed().as_millis();
    if args.json {
        let mut value = serde_json::to_value(report)?;
        value["ms"] = serde_json::json!(ms);
        value["logins"] = serde_json::json!(logins);
        println!("{value}");
    } else {
        println!(
            "expired={} revoked={} events={} batches={} ms={ms} logins={logins}{}",
            report.expired,
            report.revoked,
            report.events,
            report.batches,
            if report.dry_run { " dry_run=true" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A running total on stderr when the purge is long: rewritten in place twice a second on a
/// terminal, one line every ten seconds otherwise (a log under cron shows it moving).
struct Progress {
    terminal: bool,
    shown: bool,
    last: Option<std::time::Instant>,
}

impl Progress {
    /// Runs shorter than this print nothing but the summary.
    const AFTER: std::time::Duration = std::time::Duration::from_secs(2);

    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            shown: false,
            last: None,
        }
    }

    fn every(&self) -> std::time::Duration {
        if self.terminal {
            std::time::Duration::from_millis(500)
        } else {
            std::time::Duration::from_secs(10)
        }
    }

    fn show(&mut self, r: &ExpireReport, started: std::time::Instant) {
        if started.elapsed() < Self::AFTER {
            return;
        }
        if self.last.is_some_and(|t| t.elapsed() < self.every()) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        let line = format!(
            "expiring: expired={} revoked={} events={} batches={} ({}s)",
            r.expired,
            r.revoked,
            r.events,
            r.batches,
            started.elapsed().as_secs()
        );
        if self.terminal {
            self.shown = true;
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// The optional background purge of `latchkey serve`: the same batches as `latchkey expire`.
fn spawn_sweeper(store: Store, every_secs: u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(every_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            match store.expire(&ExpirePolicy::default(), |_| {}).await {
                Ok(r) if r.batches > 0 => tracing::info!(
                    expired = r.expired,
                    revoked = r.revoked,
                    events = r.events,
                    batches = r.batches,
                    ms = started.elapsed().as_millis() as u64,
                    "sweeper purged sessions"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sweeper failed; retrying at the next interval")
                }
            }
            match store.purge_login_records(&ExpirePolicy::default()).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "sweeper purged login throttle rows and failures"),
                Err(e) => tracing::warn!(error = %e, "sweeper failed to purge login records"),
            }
        }
    });
}
