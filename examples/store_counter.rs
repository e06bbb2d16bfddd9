//! A small axum app that keeps its sessions in latchkey's `sessions` table through
//! [`PgSessionStore`]: a visit counter in the session, a login that binds the session to a
//! user (so `latchkey sessions list --owner user:<id>` and `/auth/logout-all` cover it), and a
//! logout.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/latchkey cargo run --example store_counter
//! curl -c jar -b jar localhost:3000/            # 1, 2, 3 …
//! curl -c jar -b jar -X POST localhost:3000/login/<user uuid>
//! curl -c jar -b jar -X POST localhost:3000/logout
//! ```

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use latchkey::store::{bind_owner, bound_owner, Owner, PgSessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use uuid::Uuid;

const COUNTER: &str = "counter";

/// `GET /`: counts this session's visits.
async fn count(session: Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get(COUNTER)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
        .unwrap_or(0)
        + 1;
    session
        .insert(COUNTER, n)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(n.to_string())
}

/// `POST /login/{user_id}`: a real app verifies credentials first. A new session id on
/// login defeats fixation; binding makes the session the user's.
async fn login(session: Session, Path(user): Path<Uuid>) -> Result<String, StatusCode> {
    session
        .cycle_id()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    bind_owner(&session, Owner::User(user))
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(format!("logged in as user:{user}"))
}

/// `GET /whoami`: the bound owner, if any.
async fn whoami(session: Session) -> Result<String, StatusCode> {
    let owner = bound_owner(&session)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(owner.map_or_else(|| "anonymous".to_owned(), |o| o.key()))
}

/// `POST /logout`: deletes the session for good.
async fn logout(session: Session) -> StatusCode {
    match session.flush().await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The app on `store`, with sliding expiry (written at most once per touch interval).
pub(crate) fn app(store: PgSessionStore, secure_cookie: bool) -> Router {
    let sessions = SessionManagerLayer::new(store)
        .with_secure(secure_cookie)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(8)))
        .with_always_save(true);
    Router::new()
        .route("/", get(count))
        .route("/login/{user}", post(login))
        .route("/whoami", get(whoami))
        .route("/logout", post(logout))
        .layer(sessions)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/latchkey".to_owned());
    latchkey::db::ensure_database(&url).await?;
    let pool = latchkey::db::pool_options(10).connect(&url).await?;
    latchkey::db::migrate(&pool).await?;
    let store = PgSessionStore::new(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    // Plain http on localhost: the cookie cannot be Secure here.
    axum::serve(listener, app(store, false)).await?;
    Ok(())
}
