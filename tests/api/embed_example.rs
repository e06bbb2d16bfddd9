//! `examples/embed.rs` end to end: an existing app with latchkey's auth nested at `/auth`, its
//! `/app/*` behind `require_session`, a cart kept through `tower_sessions::Session` on the
//! login's own session, served with the client address and a graceful shutdown that ends
//! latchkey's live streams.

#[path = "../../examples/embed.rs"]
#[allow(dead_code)]
mod embed;

use std::net::SocketAddr;
use std::time::Duration;

use latchkey::app::Settings;
use latchkey::http::AppState;
use latchkey::SessionKind;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::{decode, random_jwt_secret, TestDb, ORIGIN, PASSWORD};

/// The example's app, served on port 0 as its `main` serves it.
struct Demo {
    base: String,
    client: reqwest::Client,
    latchkey: AppState,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Demo {
    async fn start(db: PgPool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut settings = Settings::local(addr, SecretString::from(random_jwt_secret()));
        settings.http.allowed_origins = vec![ORIGIN.to_owned()];
        let latchkey = AppState::build(&settings, db.clone()).expect("latchkey state");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = latchkey.shutdown_on(async {
            let _ = stopped.await;
        });
        let app = embed::app(embed::DemoState {
            db,
            latchkey: latchkey.clone(),
        });
        let served = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        });
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            latchkey,
            stop: Some(stop),
            served,
        }
    }

    fn request(&self, method: Method, path: &str, cookie: Option<&str>) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match cookie {
            Some(c) => req
                .header(
                    "cookie",
                    format!("{}={c}", self.latchkey.http.cookie_name()),
                )
                .header("origin", ORIGIN),
            None => req,
        }
    }

    /// A latchkey account with [`PASSWORD`].
    async fn add_account(&self, email: &str) -> Uuid {
        let hash = self
            .latchkey
            .auth
            .hasher()
            .hash(SecretString::from(PASSWORD.to_owned()))
            .await
            .expect("hash");
        self.latchkey
            .auth
            .store()
            .insert_user(email, &hash)
            .await
            .expect("insert user")
    }

    /// A cookie login through the app's `/auth/login`: (cookie, session id).
    async fn login(&self, email: &str) -> (String, Uuid) {
        let res = self
            .request(Method::POST, "/auth/login", None)
            .json(&json!({ "email": email, "password": PASSWORD, "mode": SessionKind::Stateful }))
            .send()
            .await
            .expect("login");
        let tokens = decode(res).await;
        assert_eq!(tokens.status, 200, "{:?}", tokens.body);
        (tokens.cookie(), tokens.session_id())
    }

    async fn get_json(&self, path: &str, cookie: Option<&str>) -> (u16, Value) {
        let res = self
            .request(Method::GET, path, cookie)
            .send()
            .await
            .expect("get");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn add_to_cart(&self, cookie: &str, item: &str) -> (u16, Value) {
        let res = self
            .request(Method::POST, "/app/cart", Some(cookie))
            .json(&json!({ "item": item }))
            .send()
            .await
            .expect("add to cart");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Stops the app as its `main` does on Ctrl-C; the serve must end within 5 s.
    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.served)
            .await
            .expect("the app drains within 5 s, its live streams ended")
            .expect("serve task")
            .expect("serve");
    }
}

#[tokio::test]
async fn the_embed_example_logs_in_keeps_a_cart_on_the_login_and_logs_out() {
    let db = TestDb::empty().await;
    embed::migrate(&db.pool)
        .await
        .expect("the example's migrate");
    let demo = Demo::start(db.pool.clone()).await;
    let account = demo.add_account("alice@example.com").await;
    sqlx::query("INSERT INTO users (display_name, latchkey_user) VALUES ($1, $2)")
        .bind("Alice")
        .bind(account)
        .execute(&db.pool)
        .await
        .expect("the app's own profile");

    // The app's own health check and fallback, under /auth too.
    assert_eq!(
        demo.get_json("/healthz", None).await,
        (200, json!({ "app": "demo", "db": "up" }))
    );
    for path in ["/nowhere", "/auth/nowhere", "/app/nowhere"] {
        let res = demo
            .request(Method::GET, path, None)
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(
            res.text().await.expect("body"),
            "no such page in the demo app",
            "{path}"
        );
    }

    // /app/* without a session: refused as /auth refuses.
    for (method, path) in [
        (Method::GET, "/app/cart"),
        (Method::POST, "/app/cart"),
        (Method::GET, "/app/me"),
    ] {
        let res = demo.request(method, path, None).send().await.expect("app");
        assert_eq!(res.status(), 401, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }

    // Logged in: the cart lives in the login's own session data.
    let (cookie, session_id) = demo.login("alice@example.com").await;
    assert_eq!(
        demo.get_json("/app/cart", Some(&cookie)).await,
        (200, json!([]))
    );
    assert_eq!(
        demo.add_to_cart(&cookie, "apples").await,
        (200, json!(["apples"]))
    );
    assert_eq!(
        demo.add_to_cart(&cookie, "pears").await,
        (200, json!(["apples", "pears"]))
    );
    assert_eq!(
        demo.get_json("/app/cart", Some(&cookie)).await,
        (200, json!(["apples", "pears"]))
    );
    let data: Value = sqlx::query_scalar("SELECT data FROM latchkey.sessions WHERE id = $1")
        .bind(session_id)
        .fetch_one(&db.pool)
        .await
        .expect("row");
    assert_eq!(data, json!({ "cart": ["apples", "pears"] }));
    let (status, me) = demo.get_json("/app/me", Some(&cookie)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["owner"], format!("user:{account}"));
    assert_eq!(me["session_id"], session_id.to_string());
    assert_eq!(me["display_name"], "Alice", "the app's own users table");

    // Logout through /auth: /app refuses the cookie, and the next login starts empty.
    let res = demo
        .request(Method::POST, "/auth/logout", Some(&cookie))
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 204);
    assert_eq!(demo.get_json("/app/cart", Some(&cookie)).await.0, 401);
    let (again, _) = demo.login("alice@example.com").await;
    assert_eq!(
        demo.get_json("/app/cart", Some(&again)).await,
        (200, json!([]))
    );

    // A live stream open at shutdown does not hold the drain.
    let stream = demo
        .request(Method::GET, "/auth/events", Some(&again))
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status(), 200);
    assert_eq!(demo.latchkey.events.stream_count(), 1);
    demo.shut_down().await;
    drop(stream);
}

/// Which migrations run first on the fresh database.
#[derive(Debug, Clone, Copy)]
enum Order {
    AppFirst,
    LatchkeyFirst,
}

#[tokio::test]
async fn the_apps_migrations_and_latchkeys_apply_in_either_order_and_each_keeps_its_users_table() {
    for order in [Order::AppFirst, Order::LatchkeyFirst] {
        let db = TestDb::empty().await;
        match order {
            Order::AppFirst => {
                embed::MIGRATOR
                    .run(&db.pool)
                    .await
                    .expect("the app's migrations");
                latchkey::db::migrate(&db.pool)
                    .await
                    .expect("latchkey's migrations");
            }
            Order::LatchkeyFirst => {
                latchkey::db::migrate(&db.pool)
                    .await
                    .expect("latchkey's migrations");
                embed::MIGRATOR
                    .run(&db.pool)
                    .await
                    .expect("the app's migrations");
            }
        }
        // Both again: nothing left to apply, nothing missing.
        embed::migrate(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{order:?}: migrate again: {e}"));
        let tables: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT to_regclass(name)::text FROM unnest(ARRAY['public.users', 'latchkey.users']) AS name",
        )
        .fetch_all(&db.pool)
        .await
        .expect("tables");
        assert_eq!(
            tables,
            [Some("users".to_owned()), Some("latchkey.users".to_owned())],
            "{order:?}: two users tables"
        );

        let demo = Demo::start(db.pool.clone()).await;
        let account = demo.add_account("alice@example.com").await;
        sqlx::query("INSERT INTO users (display_name, latchkey_user) VALUES ($1, $2)")
            .bind("Alice")
            .bind(account)
            .execute(&db.pool)
            .await
            .expect("the app's own users row");
        let (cookie, session_id) = demo.login("alice@example.com").await;
        let (status, me) = demo.get_json("/app/me", Some(&cookie)).await;
        assert_eq!(status, 200, "{order:?}: {me}");
        assert_eq!(me["owner"], format!("user:{account}"), "{order:?}");
        assert_eq!(me["session_id"], session_id.to_string(), "{order:?}");
        assert_eq!(me["display_name"], "Alice", "{order:?}");
        assert_eq!(
            demo.add_to_cart(&cookie, "apples").await,
            (200, json!(["apples"])),
            "{order:?}"
        );
        demo.shut_down().await;
    }
}

/// A line of Rust as it is compared: without its `//` comment and surrounding space.
fn code_of(line: &str) -> &str {
    line.split(" // ").next().unwrap_or(line).trim()
}

#[test]
fn the_readmes_add_latchkey_section_shows_the_example_as_it_is() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    let example = std::fs::read_to_string(format!("{root}/examples/embed.rs")).expect("example");
    let cargo = std::fs::read_to_string(format!("{root}/Cargo.toml")).expect("Cargo.toml");
    let section = readme
        .split("\n## Add latchkey to your axum app\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the README has the section");

    // The dependency line asks for the features the example needs.
    let dependency = section
        .lines()
        .find(|l| l.starts_with("latchkey = {"))
        .expect("a [dependencies] line");
    let needed = cargo
        .split("[[example]]\nname = \"embed\"\n")
        .nth(1)
        .and_then(|s| s.lines().next())
        .expect("the example's required-features");
    assert_eq!(needed, "required-features = [\"axum\"]");
    assert!(dependency.contains("default-features = false, features = [\"axum\"]"));

    // Every line of code shown is a line of the example.
    let shown = section
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a rust block");
    let lines: std::collections::HashSet<&str> = example.lines().map(code_of).collect();
    let mut checked = 0;
    for line in shown.lines() {
        let code = code_of(line);
        if code.is_empty() || code.starts_with("//") {
            continue;
        }
        assert!(
            lines.contains(code),
            "README line not in examples/embed.rs: {line:?}"
        );
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} lines shown");
}
