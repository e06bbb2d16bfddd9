//! The end-to-end scenarios' common part: the service in-process on 127.0.0.1:0 with its
//! user, the HTTP calls the clients make, and the dispatch to each scenario's module.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use latchkey::app::{Application, Settings};
use latchkey::db::Pooler;
use latchkey::store::StoreError;
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::harness::{drive, Client, Stats};
use crate::{check, flood, login, malformed, memory, refresh, storm, Args, Scenario};

/// The user every scenario logs in as.
pub(crate) const EMAIL: &str = "bench@example.com";
/// Its password.
pub(crate) const PASSWORD: &str = "correct horse battery staple";
/// Database connections of the service and of the raw baseline (the service default).
pub(crate) const POOL: u32 = 16;

/// The service running in this process, with its user.
pub(crate) struct Service {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) pool: PgPool,
    stop: Option<oneshot::Sender<()>>,
}

impl Service {
    pub(crate) async fn start(options: PgConnectOptions) -> anyhow::Result<Self> {
        Self::start_with(options, Pooler::None, None).await
    }

    /// The service on a pool made with `options`, its statements sent as `pooler` says, its
    /// `LISTEN` on `listen_url` (default: the pool's server). Migrates the database and adds
    /// the bench user unless it exists.
    pub(crate) async fn start_with(
        options: PgConnectOptions,
        pooler: Pooler,
        listen_url: Option<String>,
    ) -> anyhow::Result<Self> {
        let pool = latchkey::db::pool_options(POOL)
            .connect_with(options)
            .await
            .context("connecting the scratch database")?;
        match &listen_url {
            // Migrations need a session of their own: straight to the server.
            Some(url) => {
                let direct = latchkey::db::pool_options(1).connect(url).await?;
                latchkey::db::migrate(&direct).await?;
                direct.close().await;
            }
            None => latchkey::db::migrate(&pool).await?,
        }
        let mut settings = Settings::local(
            "127.0.0.1:0".parse()?,
            SecretString::from("bench-secret-bench-secret-bench-secret!"),
        );
        settings.pooler = pooler;
        settings.listen_database_url = listen_url.map(SecretString::from);
        let app = Application::build(settings, pool.clone()).await?;
        let addr: SocketAddr = app.local_addr()?;
        let state = app.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let hash = state
            .auth
            .hasher()
            .hash(SecretString::from(PASSWORD.to_owned()))
            .await
            .map_err(|e| anyhow::anyhow!("hash: {e}"))?;
        match state.auth.store().insert_user(EMAIL, &hash).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => anyhow::bail!("insert user: {e}"),
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1024)
            .build()?;
        Ok(Self {
            base: format!("http://{addr}"),
            client,
            pool,
            stop: Some(stop),
        })
    }

    pub(crate) fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One login's answer: the JSON body and the cookie value, if any.
pub(crate) struct Login {
    pub(crate) body: Value,
    pub(crate) cookie: Option<String>,
}

/// `POST {base}{path}` with a JSON `body`; the answer's cookie (if any) and JSON body on 200,
/// an error naming `what` otherwise.
async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
    what: &str,
) -> anyhow::Result<Login> {
    let res = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await?;
    let status = res.status();
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status != reqwest::StatusCode::OK {
        anyhow::bail!("{what} answered {status}: {body}");
    }
    Ok(Login { body, cookie })
}

/// `POST /auth/login` as the bench user, in `mode` (`stateless` or `stateful`).
pub(crate) async fn login(
    client: &reqwest::Client,
    base: &str,
    mode: &str,
) -> anyhow::Result<Login> {
    let body = json!({ "email": EMAIL, "password": PASSWORD, "mode": mode });
    post(client, base, "/auth/login", &body, "login").await
}

/// A stateless login's refresh token: the start of a chain.
pub(crate) async fn login_token(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let l = login(client, base, "stateless").await?;
    field(&l.body, "refresh_token")
}

/// A string field of a JSON answer.
pub(crate) fn field(body: &Value, name: &str) -> anyhow::Result<String> {
    body[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {name} in {body}"))
}

/// `POST /auth/refresh` with a JSON token; the successor on 200.
pub(crate) async fn refresh(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> anyhow::Result<String> {
    let body = json!({ "refresh_token": token });
    let answer = post(client, base, "/auth/refresh", &body, "refresh").await?;
    field(&answer.body, "refresh_token")
}

/// Dispatches an end-to-end scenario.
pub(crate) async fn run_scenario(
    scenario: Scenario,
    options: PgConnectOptions,
    args: &Args,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.seconds);
    if scenario == Scenario::Memory {
        // The service as its own process, so its memory is measured without the client's.
        return memory::run(&args.server_bin, &options, duration).await;
    }
    if scenario == Scenario::Malformed {
        let clients = args.clients.first().copied().unwrap_or(32);
        return malformed::run(
            &args.server_bin,
            &options,
            args.requests,
            args.seed,
            clients,
            args.warm_up_requests,
            args.rss_tolerance,
        )
        .await;
    }
    let svc = Service::start(options).await?;
    let result = match scenario {
        Scenario::Refresh => {
            refresh::run_scenario(
                &svc,
                &args.clients,
                duration,
                args.rounds,
                args.refresh_ladder,
            )
            .await
        }
        Scenario::Check => check::run_scenario(&svc, &args.clients, duration).await,
        Scenario::RefreshStorm => storm::run_scenario(&svc, args.tabs, duration).await,
        Scenario::Login => login::run_scenario(&svc, &args.clients, duration).await,
        Scenario::LoginFlood => flood::run_scenario(&svc, duration).await,
        Scenario::Memory
        | Scenario::Malformed
        | Scenario::Store
        | Scenario::Pooler
        | Scenario::All
        | Scenario::Soak
        | Scenario::Failover
        | Scenario::Scale => Ok(()),
    };
    svc.pool.close().await;
    svc.stop();
    result
}

/// Per-client state of the HTTP refresh loop. The refreshes go over a keep-alive HTTP/1.1
/// connection of the chain's own (hyper's client, no pool or URL to parse per request), so
/// that the load generator, which shares the machine with the service and PostgreSQL, takes
/// as little of it as it can; the logins go through `client`.
pub(crate) struct Chain {
    pub(crate) client: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) session_id: Uuid,
    wire: Option<Wire>,
}

/// One HTTP/1.1 connection to the service.
type Wire = hyper::client::conn::http1::SendRequest<String>;

/// The successor in a refresh's answer.
#[derive(serde::Deserialize)]
struct Refreshed {
    refresh_token: String,
}

impl Chain {
    /// Logs a stateless session in on `svc`: the start of a refresh chain.
    pub(crate) async fn login(svc: &Service) -> anyhow::Result<Self> {
        let l = login(&svc.client, &svc.base, "stateless").await?;
        Ok(Self {
            client: svc.client.clone(),
            base: svc.base.clone(),
            token: field(&l.body, "refresh_token")?,
            session_id: Uuid::parse_str(&field(&l.body, "session_id")?)?,
            wire: None,
        })
    }

    /// A connection to the service, opened on first use and after a failure.
    async fn wire(&mut self) -> anyhow::Result<&mut Wire> {
        if self.wire.as_ref().is_none_or(|w| w.is_closed()) {
            let addr = self.base.trim_start_matches("http://");
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            self.wire = Some(sender);
        }
        self.wire.as_mut().context("no connection")
    }

    /// One refresh; on 200 the chain goes on from the successor.
    pub(crate) async fn refresh(&mut self) -> anyhow::Result<()> {
        let host = self.base.trim_start_matches("http://").to_owned();
        let body = format!(r#"{{"refresh_token":"{}"}}"#, self.token);
        let request = hyper::Request::post("/auth/refresh")
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(body)?;
        let sent = async {
            let wire = self.wire().await?;
            wire.ready().await?;
            anyhow::Ok(wire.send_request(request).await?)
        }
        .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                self.wire = None;
                return Err(e);
            }
        };
        let status = response.status();
        let mut incoming = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| {
            hyper::body::Body::poll_frame(std::pin::Pin::new(&mut incoming), cx)
        })
        .await
        {
            if let Ok(data) = frame?.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        if status != hyper::StatusCode::OK {
            anyhow::bail!(
                "refresh answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        self.token = serde_json::from_slice::<Refreshed>(&bytes)?.refresh_token;
        Ok(())
    }
}

/// Logs `clients` stateless sessions in and refreshes each chain over HTTP for `duration`;
/// returns the run and the session ids (for the raw baseline).
pub(crate) async fn refresh_http(
    svc: &Service,
    clients: usize,
    duration: Duration,
    label: &str,
) -> anyhow::Result<(Stats, Vec<Uuid>)> {
    let chains = login_chains(svc, clients).await?;
    let ids = chains.iter().map(|c| c.session_id).collect();
    Ok((refresh_chains(chains, duration, label).await, ids))
}

/// `clients` stateless sessions logged in on `svc`, each the start of a refresh chain.
pub(crate) async fn login_chains(svc: &Service, clients: usize) -> anyhow::Result<Vec<Chain>> {
    let mut chains = Vec::with_capacity(clients);
    for _ in 0..clients {
        chains.push(Chain::login(svc).await?);
    }
    Ok(chains)
}

/// Refreshes each of `chains` over HTTP, one request after another, for `duration`.
pub(crate) async fn refresh_chains(chains: Vec<Chain>, duration: Duration, label: &str) -> Stats {
    drive(
        label.to_owned(),
        chains,
        duration,
        |mut c: Chain| async move {
            let r = c.refresh().await;
            if r.is_err() {
                // The chain is broken: count it, then start a new one so the run goes on.
                if let Ok(t) = login_token(&c.client, &c.base).await {
                    c.token = t;
                }
            }
            (c, r)
        },
    )
    .await
}

/// Per-client state of the cookie check loop.
pub(crate) struct CookieClient {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    pub(crate) cookie: String,
}

impl Client for CookieClient {
    /// One `GET /auth/session` with the cookie; an answer other than 200 is an error.
    async fn call(&self) -> anyhow::Result<()> {
        let res = self
            .client
            .get(&self.url)
            .header("cookie", &self.cookie)
            .send()
            .await?;
        let status = res.status();
        let body = res.bytes().await?;
        if status != reqwest::StatusCode::OK {
            anyhow::bail!(
                "session check answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

/// Logs `n` stateful sessions in: a client with its cookie each, and the session ids.
pub(crate) async fn cookie_clients(
    svc: &Service,
    n: usize,
) -> anyhow::Result<(Vec<CookieClient>, Vec<Uuid>)> {
    let mut out = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let l = login(&svc.client, &svc.base, "stateful").await?;
        out.push(CookieClient {
            client: svc.client.clone(),
            url: format!("{}/auth/session", svc.base),
            cookie: l.cookie.context("stateful login set no cookie")?,
        });
        ids.push(Uuid::parse_str(&field(&l.body, "session_id")?)?);
    }
    Ok((out, ids))
}
