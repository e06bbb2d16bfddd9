//! Clients of the scale scenario that present the tokens of filled rows, spread over many
//! sessions so the runs touch the whole table rather than a few hot pages.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use latchkey::token::{Secret, SessionToken};
use latchkey::SessionKind;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::fill::SALT;
use crate::harness::Client;
use crate::service::{refresh, Service};

/// The token of a filled row (see [`SALT`]).
fn token_of(kind: SessionKind, id: Uuid) -> String {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(SALT);
    let secret = Secret::from_bytes(h.finalize().into());
    SessionToken::new(kind, id, secret).encode()
}

/// Up to `n` live filled sessions of `kind`, drawn at random from the whole table.
async fn sample(pool: &PgPool, kind: &str, n: usize) -> anyhow::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM latchkey.sessions
         WHERE kind = $1::latchkey.session_kind AND revoked_at IS NULL
           AND expires_at > now() + interval '1 hour'
           AND token_hash = sha256(sha256(uuid_send(id) || $2))
         ORDER BY random() LIMIT $3",
    )
    .bind(kind)
    .bind(SALT)
    .bind(i64::try_from(n)?)
    .fetch_all(pool)
    .await?;
    Ok(ids)
}

/// `ids` dealt to `clients` hands, round-robin.
fn deal<T>(items: Vec<T>, clients: usize) -> anyhow::Result<Vec<Vec<T>>> {
    anyhow::ensure!(
        items.len() >= clients,
        "only {} live filled sessions for {clients} clients",
        items.len()
    );
    let mut hands: Vec<Vec<T>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        hands[i % clients].push(item);
    }
    Ok(hands)
}

/// One client of the HTTP refresh run: its own refresh tokens, refreshed in turn, each chain
/// going on from its successor.
pub(crate) struct TokenChains {
    client: reqwest::Client,
    base: String,
    tokens: Vec<String>,
    next: usize,
}

impl TokenChains {
    /// `clients` clients sharing `per_client * clients` live stateless sessions.
    pub(crate) async fn make(
        svc: &Service,
        clients: usize,
        per_client: usize,
    ) -> anyhow::Result<Vec<Self>> {
        let ids = sample(&svc.pool, "stateless", clients * per_client).await?;
        let tokens = ids
            .into_iter()
            .map(|id| token_of(SessionKind::Stateless, id))
            .collect();
        Ok(deal(tokens, clients)?
            .into_iter()
            .map(|tokens| Self {
                client: svc.client.clone(),
                base: svc.base.clone(),
                tokens,
                next: 0,
            })
            .collect())
    }

    /// Refreshes the next token of the hand; on 200 its successor replaces it.
    pub(crate) async fn step(mut self) -> (Self, anyhow::Result<()>) {
        let i = self.next % self.tokens.len();
        self.next += 1;
        match refresh(&self.client, &self.base, &self.tokens[i]).await {
            Ok(t) => {
                self.tokens[i] = t;
                (self, Ok(()))
            }
            Err(e) => (self, Err(e)),
        }
    }
}

/// One client of the HTTP check run: its own cookies, checked in turn.
pub(crate) struct CookieHand {
    client: reqwest::Client,
    url: String,
    cookies: Vec<String>,
    next: AtomicUsize,
}

impl CookieHand {
    /// `clients` clients sharing `per_client * clients` live stateful sessions; `name` is the
    /// service's cookie name.
    pub(crate) async fn make(
        svc: &Service,
        name: &str,
        clients: usize,
        per_client: usize,
    ) -> anyhow::Result<Vec<Self>> {
        let ids = sample(&svc.pool, "stateful", clients * per_client).await?;
        let cookies = ids
            .into_iter()
            .map(|id| format!("{name}={}", token_of(SessionKind::Stateful, id)))
            .collect();
        Ok(deal(cookies, clients)?
            .into_iter()
            .map(|cookies| Self {
                client: svc.client.clone(),
                url: format!("{}/auth/session", svc.base),
                cookies,
                next: AtomicUsize::new(0),
            })
            .collect())
    }
}

impl Client for CookieHand {
    /// One `GET /auth/session` with the next cookie; an answer other than 200 is an error.
    async fn call(&self) -> anyhow::Result<()> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.cookies.len();
        let res = self
            .client
            .get(&self.url)
            .header("cookie", &self.cookies[i])
            .send()
            .await?;
        let status = res.status();
        let body = res.bytes().await?;
        anyhow::ensure!(
            status == reqwest::StatusCode::OK,
            "session check answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }
}

/// The service's cookie name, read from a stateful login's `Set-Cookie`.
pub(crate) async fn cookie_name(svc: &Service) -> anyhow::Result<String> {
    let l = crate::service::login(&svc.client, &svc.base, "stateful").await?;
    let cookie = l.cookie.context("stateful login set no cookie")?;
    Ok(cookie
        .split_once('=')
        .context("cookie without '='")?
        .0
        .to_owned())
}
