//! An axum app that already exists (its own state, routes, `/healthz`, fallback, and
//! migrations in `examples/embed/migrations/`, with a `users` table of its own) adopting
//! latchkey: the auth API nested at `/auth`, the app's `/app/*` routes behind
//! `require_session`, and per-login data (a cart) kept through `tower_sessions::Session` on
//! the very session `/auth/login` made.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/embed_demo cargo run --example embed
//! echo 'correct horse battery staple' | DATABASE_URL=postgres://postgres@127.0.0.1/embed_demo \
//!   cargo run -- user add --email alice@example.com --password-stdin
//! curl -c jar localhost:3000/auth/login -H 'content-type: application/json' \
//!   -d '{"email":"alice@example.com","password":"correct horse battery staple","mode":"stateful"}'
//! curl -b jar localhost:3000/app/cart -H 'origin: http://127.0.0.1:3000' \
//!   -H 'content-type: application/json' -d '{"item":"apples"}'
//! curl -b jar localhost:3000/app/cart
//! curl -b jar -X POST localhost:3000/auth/logout -H 'origin: http://127.0.0.1:3000'
//! ```
//!
//! `tests/api/embed_example.rs` runs it end to end.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use latchkey::app::Settings;
use latchkey::http::{auth_router, require_session, ApiError, AppState, Authenticated};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;
use tower_sessions::Session;

/// The app's own migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("examples/embed/migrations");

/// The app's state, which carries latchkey's.
#[derive(Clone)]
pub struct DemoState {
    /// The app's own pool (here on the same database as latchkey's).
    pub db: PgPool,
    /// latchkey's state: what its routers, extractor and layer need.
    pub latchkey: AppState,
}

impl FromRef<DemoState> for AppState {
    fn from_ref(state: &DemoState) -> AppState {
        state.latchkey.clone()
    }
}

/// The app's migrations and latchkey's. latchkey's live in the schema `latchkey`, with their
/// own record: either order works, and the app's `users` never meets latchkey's.
pub async fn migrate(db: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(db).await?; // the app's own: examples/embed/migrations
    latchkey::db::migrate(db).await // latchkey's, in its own schema
}

/// The whole app: its own routes, `/healthz` and fallback; latchkey's auth API at `/auth`;
/// `/app/*` only for a live session (cookie or bearer access token).
pub fn app(state: DemoState) -> Router {
    let signed_in = Router::new()
        .route("/app/me", get(me))
        .route("/app/cart", get(cart).post(add_to_cart))
        .route_layer(axum::middleware::from_fn_with_state(
            state.latchkey.clone(),
            require_session,
        ));
    Router::new()
        .route("/", get(home))
        .route("/healthz", get(healthz))
        .merge(signed_in)
        .nest(
            "/auth",
            auth_router(state.latchkey.clone(), Duration::from_secs(10)),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page in the demo app") })
        .with_state(state)
}

/// `GET /`: what the app is.
async fn home() -> &'static str {
    "the demo app: /auth/login, then /app/me and /app/cart"
}

/// `GET /healthz`: the app's own check of its own database.
async fn healthz(State(state): State<DemoState>) -> impl IntoResponse {
    match sqlx::query("SELECT 1").execute(&state.db).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "app": "demo", "db": "up" }))),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "app": "demo", "db": "down" })),
        ),
    }
}

/// `GET /app/me`: who latchkey says is calling, and the app's own profile of that account.
async fn me(State(state): State<DemoState>, who: Authenticated) -> Result<Json<Value>, ApiError> {
    let account = who.caller.owner_key.user_id();
    // The app's own table: checked at run time, as latchkey's offline query data knows only
    // latchkey's tables.
    let display_name: Option<String> =
        sqlx::query_scalar("SELECT display_name FROM users WHERE latchkey_user = $1")
            .bind(account)
            .fetch_optional(&state.db)
            .await
            .map_err(|_| ApiError::unavailable())?;
    Ok(Json(json!({
        "owner": who.caller.owner_key,
        "session_id": who.caller.session_id,
        "display_name": display_name,
    })))
}

/// What `POST /app/cart` adds.
#[derive(Deserialize)]
struct Item {
    item: String,
}

/// A cart: what was added, in order.
type Cart = Vec<String>;

/// The cart's key in the login's session data.
const CART: &str = "cart";

/// A session that cannot be read or written: the database is unavailable.
fn down(_: tower_sessions::session::Error) -> ApiError {
    ApiError::unavailable()
}

/// `GET /app/cart`: this login's cart.
async fn cart(session: Session) -> Result<Json<Cart>, ApiError> {
    let cart = session.get(CART).await.map_err(down)?;
    Ok(Json(cart.unwrap_or_default()))
}

/// `POST /app/cart {"item"}`: adds to this login's cart.
async fn add_to_cart(session: Session, Json(add): Json<Item>) -> Result<Json<Cart>, ApiError> {
    let mut cart: Cart = session.get(CART).await.map_err(down)?.unwrap_or_default();
    cart.push(add.item);
    session.insert(CART, &cart).await.map_err(down)?; // saved with the login
    Ok(Json(cart))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/embed_demo".to_owned());
    latchkey::db::ensure_database(&url).await?;
    let db = latchkey::db::pool_options(10).connect(&url).await?;
    migrate(&db).await?;

    let bind: SocketAddr = "127.0.0.1:3000".parse()?;
    // A fresh signing key per run unless one is given: access tokens die with the process.
    let jwt_secret = std::env::var("DEMO_JWT_SECRET").unwrap_or_else(|_| {
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    });
    let mut settings = Settings::local(bind, jwt_secret.into());
    settings.http.cookie_secure = false; // plain http on localhost
    let latchkey = AppState::build(&settings, db.clone())?;

    let listener = tokio::net::TcpListener::bind(bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let ctrl_c = async { tokio::signal::ctrl_c().await.unwrap_or_default() };
    let shutdown = latchkey.shutdown_on(ctrl_c);
    let app = app(DemoState { db, latchkey });
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
