//! Test harness: a fresh database per test, the service on port 0, a plain HTTP client.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use latchkey::app::{Application, Settings};
use latchkey::http::AppState;
use latchkey::rng::{OsSecretSource, SecretSource};
use latchkey::SessionKind;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The origin every test browser comes from.
pub const ORIGIN: &str = "http://app.test";
/// The password of [`TestApp::user`].
pub const PASSWORD: &str = "correct horse battery staple";

/// The PostgreSQL server the tests make their databases on.
pub struct TestServer {
    /// `postgres://…/postgres`: a URL of the server (the password included).
    pub url: String,
    /// Host and port.
    pub host: String,
    pub port: u16,
    /// The embedded cluster, held (and so kept running) until the process exits.
    _cluster: Option<latchkey::embedded::Cluster>,
}

/// The local server the tests use when `DATABASE_URL` is not set.
const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server of this test process: `DATABASE_URL` if set; else the local server on
/// 127.0.0.1:5432 if it accepts `postgres` (unless `LATCHKEY_TEST_EMBEDDED` is set); else
/// an embedded cluster in `target/tmp/latchkey-postgres`, shared by every test process and
/// left running for the next run.
pub fn server() -> &'static TestServer {
    static SERVER: std::sync::OnceLock<TestServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return TestServer::at(url);
        }
        if std::env::var_os("LATCHKEY_TEST_EMBEDDED").is_none() {
            // Its own runtime: this may be called from inside a test's.
            let local = std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(latchkey::embedded::usable(LOCAL_SERVER))
            })
            .join()
            .expect("probe");
            if local.is_ok() {
                return TestServer::at(LOCAL_SERVER.to_owned());
            }
        }
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("latchkey-postgres");
        let mut options = latchkey::embedded::ClusterOptions::new(&dir);
        options.sync = false;
        // A throwaway cluster: durability buys nothing here.
        for (name, value) in [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            // Each test's CREATE DATABASE is a checkpoint: keep them out of its log.
            ("log_checkpoints", "off"),
            // A test's connection caught mid-authentication when the test ends (its runtime
            // then blocks on dropping the database) holds up every DROP DATABASE until this
            // timeout (PostgreSQL's default: a minute).
            ("authentication_timeout", "'5s'"),
        ] {
            options.settings.push((name.to_owned(), value.to_owned()));
        }
        options.tls = Some(test_certificate());
        let cluster = latchkey::embedded::Cluster::start(&options).unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL for the tests: DATABASE_URL is not set, nothing usable answers \
                 on 127.0.0.1:5432, and the embedded cluster in {} cannot run: {e}",
                dir.display()
            )
        });
        let mut server = TestServer::at(cluster.url("postgres"));
        server._cluster = Some(cluster);
        server
    })
}

impl TestServer {
    fn at(url: String) -> Self {
        let options = PgConnectOptions::from_str(&url).expect("DATABASE_URL parses");
        Self {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            url,
            _cluster: None,
        }
    }

    /// The URL of `database` on this server.
    pub fn url_of(&self, database: &str) -> String {
        let (server, _) = self.url.rsplit_once('/').expect("URL with a database");
        format!("{server}/{database}")
    }
}

/// A server certificate for 127.0.0.1 and localhost signed by a CA of its own, followed by
/// that CA: the cluster's `pgdata/server.crt` is also the root certificate that verifies it
/// (`sslmode=verify-full&sslrootcert=…`).
pub fn test_certificate() -> latchkey::embedded::ServerTls {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "latchkey tests CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("parameters")
        .signed_by(&key, &ca)
        .expect("certificate");
    latchkey::embedded::ServerTls {
        cert_pem: format!("{}{}", cert.pem(), ca.as_ref().pem()),
        key_pem: key.serialize_pem(),
    }
}

fn base_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&server().url).expect("server URL parses")
}

/// `LATCHKEY_TEST_POOLER_URL`: a transaction-mode pooler (PgBouncer) in front of the tests'
/// server, as `postgres://user@host:port` (no database: every test database is reached under
/// its own name, `scripts/test-through-pooler.sh`). When set, the services the tests start
/// and the `latchkey` commands they run reach their database through it in
/// `--pooler transaction` mode; databases are created, and `LISTEN` and migrations go,
/// straight to the server.
pub fn pooler_url() -> Option<&'static str> {
    static URL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("LATCHKEY_TEST_POOLER_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(|u| u.trim_end_matches('/').to_owned())
    })
    .as_deref()
}

/// `db_url` (a URL of a database on the tests' server) through [`pooler_url`], if it is set.
pub fn through_pooler(db_url: &str) -> Option<String> {
    let pooler = pooler_url()?;
    let (server, database) = db_url.rsplit_once('/')?;
    (server == server_base()).then(|| format!("{pooler}/{database}"))
}

fn server_base() -> &'static str {
    server().url.rsplit_once('/').map_or("", |(base, _)| base)
}

/// A pool of `max` connections on `db` as the store's [`latchkey::db::Pool`] in
/// transaction-pooler mode: through [`pooler_url`] when it is set, else straight to the
/// server (the mode's statements are the same either way).
pub fn pooled_pool(db: &TestDb, max: u32) -> latchkey::db::Pool {
    let options = match pooler_url() {
        Some(url) => PgConnectOptions::from_str(url)
            .expect("LATCHKEY_TEST_POOLER_URL parses")
            .database(db.options.get_database().expect("a database")),
        None => db.options.clone(),
    };
    let pg = latchkey::db::pool_options(max)
        .connect_lazy_with(latchkey::db::pooler_connect_options(options));
    latchkey::db::Pool::transaction_pooled(pg, latchkey::db::StatementTimeouts::default())
}

/// A database created for one test and dropped when the test ends, even on panic. Clones
/// share it (two service instances on one database); the last one drops it.
#[derive(Clone)]
pub struct TestDb {
    _drop: Arc<DropDatabase>,
    /// Options that reach this database.
    pub options: PgConnectOptions,
    /// A pool on it, migrated.
    pub pool: PgPool,
}

impl TestDb {
    /// A pool of one connection to this database: closing it ends the backend, which flushes
    /// its statistics counters (`pg_stat_user_tables`) for the test to read.
    pub async fn one_connection(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.options.clone())
            .await
            .expect("pool")
    }

    /// A connection URL for this database (for the CLI).
    pub fn url(&self) -> String {
        server().url_of(&self._drop.name)
    }

    /// Creates and migrates a uniquely named database.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        latchkey::db::migrate(&db.pool).await.expect("migrate");
        db
    }

    /// Creates a uniquely named database and leaves it empty (not migrated).
    pub async fn empty() -> Self {
        let name = format!("latchkey_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&base_options().database("postgres"))
            .await
            .expect("connect to the tests' PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let options = base_options().database(&name);
        let pool = latchkey::db::pool_options(10)
            .connect_with(options.clone())
            .await
            .expect("connect test database");
        Self {
            _drop: Arc::new(DropDatabase { name }),
            options,
            pool,
        }
    }
}

/// Drops the test database when the last [`TestDb`] clone goes.
struct DropDatabase {
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut admin) =
                    PgConnection::connect_with(&base_options().database("postgres")).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A live stateless session of its own anonymous owner, created through the store with
/// `token_hash`, an hour of idle life, a day of absolute life, `user_agent` and ip 10.0.0.1.
pub async fn anonymous_stateless_session(
    store: &latchkey::store::Store,
    token_hash: [u8; 32],
    user_agent: &str,
) -> Uuid {
    let id = Uuid::new_v4();
    store
        .create_session(&latchkey::store::NewSession {
            id,
            kind: SessionKind::Stateless,
            owner_key: latchkey::store::OwnerKey::Anonymous(Uuid::new_v4()),
            token_hash,
            idle_ttl_secs: 3600.0,
            absolute_ttl_secs: 86_400.0,
            user_agent: Some(user_agent.to_owned()),
            ip: Some("10.0.0.1".to_owned()),
            data: json!({}),
            event_detail: json!({}),
        })
        .await
        .expect("create");
    id
}

/// A fresh 64-character JWT secret for a `latchkey serve` started by a test (one written in
/// the repository would be refused as published).
pub fn random_jwt_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// The JWT secret of every service a test builds in this process: random (one written in the
/// repository is refused as published), shared so two instances verify each other's tokens.
pub static TEST_JWT_SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(random_jwt_secret);

/// Runs the `latchkey` binary on `db_url` with `args` and, if given, `stdin`:
/// (success, stdout, stderr).
pub fn run_cli(db_url: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command.args(args).env("DATABASE_URL", db_url);
    if let Some(pooled) = through_pooler(db_url) {
        command
            .env("DATABASE_URL", pooled)
            .env("LATCHKEY_POOLER", "transaction")
            .env("LATCHKEY_LISTEN_DATABASE_URL", db_url);
    }
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn latchkey");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `latchkey serve --bind 127.0.0.1:0 --cookie-secure false ARGS` on `db_url` with the
/// JWT secret `secret`; its stderr lines (logs at `info`, no colour) arrive on the receiver.
pub fn spawn_serve(
    db_url: &str,
    secret: &str,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["serve", "--bind", "127.0.0.1:0", "--cookie-secure", "false"])
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("LATCHKEY_JWT_SECRET", secret)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Every line a [`spawn_serve`] process wrote to stderr, once it has exited: the lines still
/// in flight from the reader thread included (it ends at end of file). Gives up after 10 s
/// should something else still hold the pipe.
pub fn all_lines(rx: &std::sync::mpsc::Receiver<String>) -> Vec<String> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut lines = Vec::new();
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    lines
}

/// How to build a test service.
pub struct AppOptions {
    /// Protocol and HTTP settings (bind and JWT secret are filled in).
    pub settings: Settings,
    /// The secret source.
    pub rng: Arc<dyn SecretSource>,
    /// Connect to the test database through this local port instead (a fault-injecting proxy).
    pub connect_port: Option<u16>,
    /// Give the service's own pool these statement and lock timeouts.
    pub statement_timeouts: Option<latchkey::db::StatementTimeouts>,
}

impl Default for AppOptions {
    fn default() -> Self {
        let mut settings = Settings::local(
            "127.0.0.1:0".parse().expect("addr"),
            SecretString::from(TEST_JWT_SECRET.clone()),
        );
        settings.http.allowed_origins = vec![ORIGIN.to_owned()];
        Self {
            settings,
            rng: Arc::new(OsSecretSource),
            connect_port: None,
            statement_timeouts: None,
        }
    }
}

/// A running service on its own database.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client without a cookie store: tests send cookies by hand.
    pub client: reqwest::Client,
    /// `http://127.0.0.1:<port>` of the `/metrics` listener, when `settings.metrics_bind` is set.
    pub metrics_base: Option<String>,
    /// The service's state (store, counters).
    pub state: AppState,
    /// The database (dropped last).
    pub db: TestDb,
    /// A user with [`PASSWORD`].
    pub user: TestUser,
    stop: Option<oneshot::Sender<()>>,
    /// The serving task: it ends when the service has shut down and drained.
    pub served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A user created for the test.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Its id.
    pub id: Uuid,
    /// Its email.
    pub email: String,
}

impl TestUser {
    /// `user:<id>`.
    pub fn owner_key(&self) -> String {
        format!("user:{}", self.id)
    }

    /// Its owner key, typed.
    pub fn owner(&self) -> latchkey::store::OwnerKey {
        latchkey::store::OwnerKey::User(self.id)
    }
}

impl TestApp {
    /// Asks the service to shut down, as SIGTERM would: it stops accepting and drains.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the service with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Starts the service with the given options.
pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    let db = TestDb::new().await;
    let mut test = spawn_app_on(db, opts).await;
    test.user = test.add_user("alice@example.com", PASSWORD).await;
    test
}

impl TestApp {
    /// Starts a second instance of the service on this app's database, knowing its user.
    pub async fn spawn_peer(&self, opts: AppOptions) -> TestApp {
        let mut peer = spawn_app_on(self.db.clone(), opts).await;
        peer.user = self.user.clone();
        peer
    }
}

/// Starts the service on an existing database, without creating a user.
pub async fn spawn_app_on(db: TestDb, mut opts: AppOptions) -> TestApp {
    if let (Some(pooler), None, None, latchkey::db::Pooler::None) = (
        pooler_url(),
        opts.connect_port,
        opts.statement_timeouts,
        opts.settings.pooler,
    ) {
        // Through the pooler, as `--pooler transaction` runs; the LISTEN goes direct.
        let options = PgConnectOptions::from_str(pooler)
            .expect("LATCHKEY_TEST_POOLER_URL parses")
            .database(db.options.get_database().expect("a database"));
        let pool = latchkey::db::pool_options(10)
            .connect_lazy_with(latchkey::db::pooler_connect_options(options));
        opts.settings.pooler = latchkey::db::Pooler::Transaction;
        opts.settings.listen_database_url = Some(SecretString::from(db.url()));
        return serve_app(db, opts, pool).await;
    }
    let pool = match (opts.connect_port, opts.statement_timeouts) {
        (Some(port), _) => latchkey::db::pool_options(10)
            .connect_lazy_with(db.options.clone().host("127.0.0.1").port(port)),
        (None, Some(timeouts)) => {
            latchkey::db::pool_options(10).connect_lazy_with(timeouts.apply(db.options.clone()))
        }
        (None, None) => db.pool.clone(),
    };
    serve_app(db, opts, pool).await
}

/// Builds the service on `pool` and serves it until the [`TestApp`] goes.
async fn serve_app(db: TestDb, opts: AppOptions, pool: PgPool) -> TestApp {
    let app = Application::build_with_rng(opts.settings, pool, opts.rng)
        .await
        .expect("build app");
    let addr: SocketAddr = app.local_addr().expect("addr");
    let metrics_base = app
        .metrics_addr()
        .expect("metrics addr")
        .map(|a| format!("http://{a}"));
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    TestApp {
        base: format!("http://{addr}"),
        metrics_base,
        client,
        state,
        db,
        user: TestUser {
            id: Uuid::nil(),
            email: String::new(),
        },
        stop: Some(stop),
        served,
    }
}

/// A login or refresh answer, decoded.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// Raw `Set-Cookie`, if any.
    pub set_cookie: Option<String>,
}

impl Tokens {
    /// The stateless refresh token.
    pub fn refresh_token(&self) -> String {
        self.body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned()
    }
    /// The stateless access token.
    pub fn access_token(&self) -> String {
        self.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
    /// The session id.
    pub fn session_id(&self) -> Uuid {
        self.body["session_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("session_id")
    }
    /// The cookie value from `Set-Cookie`.
    pub fn cookie(&self) -> String {
        let sc = self.set_cookie.as_deref().expect("set-cookie");
        let first = sc.split(';').next().expect("cookie pair");
        first.split_once('=').expect("name=value").1.to_owned()
    }
    /// The problem code.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// Reads status, body and `Set-Cookie` of a response.
pub async fn decode(res: Response) -> Tokens {
    let status = res.status();
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    Tokens {
        status,
        body,
        set_cookie,
    }
}

impl TestApp {
    /// A URL on the service.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits (at most 10 s) until the app's `LISTEN` connection has connected `n` times.
    pub async fn wait_listening(&self, n: u64) {
        let mut rx = self.state.events.listener_connections();
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.wait_for(|c| *c >= n))
            .await
            .expect("listener connects within 10 s")
            .expect("hub alive");
    }

    /// An API key for [`TestApp::user`]: (key id, the `lka_…` key).
    pub async fn create_api_key(&self) -> (Uuid, String) {
        self.state
            .auth
            .create_api_key(&self.user.owner(), None)
            .await
            .expect("create api key")
    }

    /// `GET /metrics` on the app's metrics listener (the app must have one): the text.
    pub async fn metrics_text(&self) -> String {
        let metrics = self.metrics_base.as_deref().expect("metrics listener");
        let res = self
            .client
            .get(format!("{metrics}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.expect("metrics body")
    }

    /// `POST /auth/login {"api_key": key}`.
    pub async fn login_api_key(&self, key: &str) -> Tokens {
        let res = self
            .client
            .post(self.url("/auth/login"))
            .json(&json!({ "api_key": key }))
            .send()
            .await
            .expect("login");
        decode(res).await
    }

    /// The cookie name in force.
    pub fn cookie_name(&self) -> &'static str {
        self.state.http.cookie_name()
    }

    /// Creates a user directly through the store.
    pub async fn add_user(&self, email: &str, password: &str) -> TestUser {
        let hash = self
            .state
            .auth
            .hasher()
            .hash(SecretString::from(password.to_owned()))
            .await
            .expect("hash");
        let id = self
            .state
            .auth
            .store()
            .insert_user(email, &hash)
            .await
            .expect("insert user");
        TestUser {
            id,
            email: email.to_owned(),
        }
    }

    /// `POST /auth/login` for the default user.
    pub async fn login(&self, mode: SessionKind) -> Tokens {
        self.login_as(&self.user.email.clone(), PASSWORD, mode)
            .await
    }

    /// `POST /auth/login` with explicit credentials.
    pub async fn login_as(&self, email: &str, password: &str, mode: SessionKind) -> Tokens {
        let res = self
            .client
            .post(self.url("/auth/login"))
            .json(&json!({ "email": email, "password": password, "mode": mode }))
            .send()
            .await
            .expect("login request");
        decode(res).await
    }

    /// `POST /auth/refresh` with a JSON refresh token.
    pub async fn refresh_json(&self, token: &str) -> Tokens {
        let res = self
            .client
            .post(self.url("/auth/refresh"))
            .json(&json!({ "refresh_token": token }))
            .send()
            .await
            .expect("refresh request");
        decode(res).await
    }

    /// `POST /auth/refresh` with the session cookie and the allowed Origin.
    pub async fn refresh_cookie(&self, cookie: &str) -> Tokens {
        let res = self
            .client
            .post(self.url("/auth/refresh"))
            .headers(self.cookie_headers(cookie))
            .send()
            .await
            .expect("refresh request");
        decode(res).await
    }

    /// `Cookie` and `Origin` headers for a cookie-authenticated browser request.
    pub fn cookie_headers(&self, cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("{}={cookie}", self.cookie_name())).expect("cookie"),
        );
        h.insert("origin", HeaderValue::from_static(ORIGIN));
        h
    }

    /// `GET /auth/session` with a cookie.
    pub async fn whoami_cookie(&self, cookie: &str) -> Tokens {
        let res = self
            .client
            .get(self.url("/auth/session"))
            .headers(self.cookie_headers(cookie))
            .send()
            .await
            .expect("session request");
        decode(res).await
    }

    /// `GET /auth/session` with a bearer token.
    pub async fn whoami_bearer(&self, bearer: &str) -> Tokens {
        let res = self
            .client
            .get(self.url("/auth/session"))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("session request");
        decode(res).await
    }

    /// The session's `version` column.
    pub async fn version_of(&self, id: Uuid) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT version FROM latchkey.sessions WHERE id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .expect("version")
    }

    /// Count of audit events of one kind for a session.
    pub async fn events_of(&self, id: Uuid, event: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM latchkey.session_events WHERE session_id = $1 AND event::text = $2",
        )
        .bind(id)
        .bind(event)
        .fetch_one(&self.db.pool)
        .await
        .expect("events")
    }
}
