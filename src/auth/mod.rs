//! The authentication protocol: login, the refresh outcome table, session checks, logout.
//!
//! Nothing here knows about HTTP; the `/auth` handlers, the CLI and the tests call [`Auth`]
//! directly.

pub mod jwt;
pub mod password;
pub mod throttle;

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::rng::{random_uuid, RngError, SecretSource};
use crate::store::{
    NewSession, RevokeReason, Rotation, SessionRecord, SessionSummary, Store, StoreError,
};
use crate::token::{seal_successor, unseal_successor, ApiKeyToken, Secret, SessionToken};
use crate::SessionKind;
use jwt::JwtKeys;
use password::PasswordHasher;
use throttle::{ip_of, LoginThrottle, ThrottleConfig};

/// Every way an authentication step can fail, each with a stable API code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Malformed, unknown id or unknown secret. Nothing was revoked.
    #[error("invalid token")]
    InvalidToken,
    /// A rotated token was presented after its grace window; the session is now revoked.
    #[error("token reused after rotation")]
    TokenReused,
    /// The session or access token has expired.
    #[error("token expired")]
    TokenExpired,
    /// The session was revoked.
    #[error("session revoked")]
    SessionRevoked,
    /// A token of one mode was presented in the other; the session is untouched.
    #[error("token used in the wrong mode")]
    ModeMismatch,
    /// Wrong email or password, or a disabled account.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many requests (queued hashes, throttled logins, minting or stream limits); retry
    /// after the given number of seconds.
    #[error("rate limited")]
    RateLimited {
        /// Seconds the client should wait (the `Retry-After` header).
        retry_after_secs: u32,
    },
    /// The database or the RNG is unavailable; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected database error.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The stable API code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidToken => "invalid_token",
            Self::TokenReused => "token_reused",
            Self::TokenExpired => "token_expired",
            Self::SessionRevoked => "session_revoked",
            Self::ModeMismatch => "token_mode_mismatch",
            Self::InvalidCredentials => "invalid_credentials",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => Self::Unavailable(e.to_string()),
            StoreError::OwnerInactive => Self::InvalidCredentials,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<RngError> for AuthError {
    fn from(e: RngError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Lifetimes and windows of the protocol.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// How long the previous refresh token keeps answering with the same successor (0 disables).
    pub grace_secs: u64,
    /// Lifetime of a JWT access token.
    pub access_ttl_secs: u64,
    /// Idle lifetime of a session (slides on use).
    pub idle_ttl_secs: u64,
    /// Hard cap on a session's lifetime.
    pub absolute_ttl_secs: u64,
    /// Lifetime of an anonymous session.
    pub anon_ttl_secs: u64,
    /// A stateful check writes `last_used_at` at most this often per session.
    pub touch_interval_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            grace_secs: 30,
            access_ttl_secs: 300,
            idle_ttl_secs: 7 * 24 * 3600,
            absolute_ttl_secs: 30 * 24 * 3600,
            anon_ttl_secs: 600,
            touch_interval_secs: 60,
        }
    }
}

/// Client details recorded on a new session.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// Client address.
    pub ip: Option<String>,
}

/// Tokens handed to a client. `Debug` never shows them.
#[derive(Clone)]
pub struct Issued {
    /// Session id.
    pub session_id: Uuid,
    /// Mode.
    pub kind: SessionKind,
    /// Owner key.
    pub owner_key: String,
    /// The session token: cookie value (`lks_…`) or refresh token (`lkr_…`).
    pub token: String,
    /// For stateless sessions, the JWT access token.
    pub access_token: Option<String>,
    /// Idle expiry of the session.
    pub expires_at: OffsetDateTime,
    /// Absolute expiry of the session.
    pub absolute_expires_at: OffsetDateTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("session_id", &self.session_id)
            .field("kind", &self.kind)
            .field("owner_key", &self.owner_key)
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An anonymous session that a login replaces.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// The anonymous session presented with the login.
    pub anonymous: Caller,
    /// Copy its `data` into the new session.
    pub carry_data: bool,
}

/// How a new session starts.
#[derive(Debug, Clone)]
pub struct IssueSpec {
    /// Hard cap on its lifetime.
    pub absolute_ttl_secs: u64,
    /// Initial session data.
    pub data: serde_json::Value,
    /// Non-secret context recorded on its `created` event.
    pub event_detail: serde_json::Value,
}

/// An authenticated caller: the session it presented and whom it belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's session.
    pub session_id: Uuid,
    /// The session's owner.
    pub owner_key: String,
    /// How it authenticated.
    pub kind: SessionKind,
    /// The session row as read while authenticating (no secret material), so "who am I"
    /// costs no second query.
    pub session: SessionSummary,
}

/// How a presented secret relates to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Current,
    Previous,
}

fn classify(rec: &SessionRecord, secret: &Secret) -> Option<Presented> {
    if secret.matches(&rec.token_hash) {
        Some(Presented::Current)
    } else if rec
        .prev_token_hash
        .as_deref()
        .is_some_and(|h| secret.matches(h))
    {
        Some(Presented::Previous)
    } else {
        None
    }
}

/// How many times a refresh re-reads after losing a compare-and-swap before giving up (503).
const MAX_CAS_ATTEMPTS: usize = 8;

/// The protocol engine: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct Auth {
    store: Store,
    hasher: Arc<PasswordHasher>,
    jwt: JwtKeys,
    rng: Arc<dyn SecretSource>,
    config: AuthConfig,
    metrics: Arc<Metrics>,
    throttle: Arc<LoginThrottle>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Assembles the engine.
    pub fn new(
        store: Store,
        hasher: Arc<PasswordHasher>,
        jwt: JwtKeys,
        rng: Arc<dyn SecretSource>,
        config: AuthConfig,
    ) -> Self {
        let throttle = LoginThrottle::new(
            ThrottleConfig::default(),
            &jwt.derive_key(b"login throttle"),
        );
        Self {
            store,
            hasher,
            jwt,
            rng,
            config,
            metrics: Arc::new(Metrics::default()),
            throttle: Arc::new(throttle),
        }
    }

    /// The same engine with these login throttling settings (the default is
    /// [`ThrottleConfig::default`]); account hashes stay keyed by the JWT secret.
    pub fn with_throttle(mut self, config: ThrottleConfig) -> Self {
        let key = self.jwt.derive_key(b"login throttle");
        self.throttle = Arc::new(LoginThrottle::new(config, &key));
        self
    }

    /// The counters of this engine.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The password hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The JWT keys (apps verify access tokens with the same secret).
    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Logs in with an email and password and issues a session of `mode`.
    ///
    /// Unknown emails are verified against a dummy hash, so both failures cost one argon2
    /// verification and answer the same [`AuthError::InvalidCredentials`]. A blocked
    /// (account, address) or address is refused first, without any hashing
    /// ([`AuthError::RateLimited`]); every failure is counted and audited.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`], [`AuthError::RateLimited`], [`AuthError::Unavailable`].
    pub async fn login_password(
        &self,
        email: &str,
        password: SecretString,
        mode: SessionKind,
        meta: &ClientMeta,
        upgrade: Option<&Upgrade>,
    ) -> Result<Issued, AuthError> {
        let result = self
            .login_password_inner(email, password, mode, meta, upgrade)
            .await;
        self.metrics
            .login(result.as_ref().map_or_else(AuthError::code, |_| "ok"));
        result
    }

    async fn login_password_inner(
        &self,
        email: &str,
        password: SecretString,
        mode: SessionKind,
        meta: &ClientMeta,
        upgrade: Option<&Upgrade>,
    ) -> Result<Issued, AuthError> {
        let ip = ip_of(meta);
        let account = self.throttle.account_key(email);
        self.throttle_check(ip, Some(&account)).await?;
        let user = self.store.find_user_by_email(email).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.hasher.verify(password.clone(), stored).await?;
        let audit = user
            .as_ref()
            .map_or_else(|| account.clone(), |u| format!("user:{}", u.id));
        let Some(user) = user.filter(|u| verified.ok && !u.disabled) else {
            self.password_failed(ip, &account, &audit).await?;
            return Err(AuthError::InvalidCredentials);
        };
        self.throttle_clear(ip, &account).await?;
        if verified.needs_rehash {
            let rehashed = self.hasher.hash(password).await?;
            self.store.update_password_hash(user.id, &rehashed).await?;
            tracing::info!(user_id = %user.id, "password rehashed with current parameters");
        }
        let owner = format!("user:{}", user.id);
        self.issue_replacing(&owner, mode, meta, upgrade).await
    }

    /// Issues a session for a freshly authenticated owner. When an anonymous session came
    /// with the login, the new session gets a new id and token (no fixation), may take over
    /// its data, records the link, and the anonymous session is revoked (`upgraded`).
    async fn issue_replacing(
        &self,
        owner: &str,
        mode: SessionKind,
        meta: &ClientMeta,
        upgrade: Option<&Upgrade>,
    ) -> Result<Issued, AuthError> {
        let upgrade = upgrade.filter(|u| u.anonymous.owner_key.starts_with("anon:"));
        let mut spec = IssueSpec {
            absolute_ttl_secs: self.config.absolute_ttl_secs,
            data: json!({}),
            event_detail: json!({}),
        };
        if let Some(up) = upgrade {
            spec.event_detail = json!({ "upgraded_from": up.anonymous.session_id });
            if up.carry_data {
                if let Some(data) = self.store.session_data(up.anonymous.session_id).await? {
                    spec.data = data;
                }
            }
        }
        let issued = self.issue(owner, mode, meta, &spec).await?;
        if let Some(up) = upgrade {
            self.store
                .revoke(up.anonymous.session_id, RevokeReason::Upgraded)
                .await?;
        }
        Ok(issued)
    }

    /// Logs in with an API key (`lka_…`): a stateless session owned by `apikey:<id>`.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] for a malformed, unknown or revoked key (counted
    /// against the client address), or a key of a disabled user;
    /// [`AuthError::RateLimited`] when the address is blocked.
    pub async fn login_api_key(&self, key: &str, meta: &ClientMeta) -> Result<Issued, AuthError> {
        let ip = ip_of(meta);
        self.throttle_check(ip, None).await?;
        let Ok(key) = ApiKeyToken::parse(key) else {
            self.api_key_failed(ip, None).await?;
            return Err(AuthError::InvalidCredentials);
        };
        let rec = self.store.find_api_key(key.key_id).await?;
        let Some(rec) = rec.filter(|r| key.secret.matches(&r.key_hash) && r.revoked_at.is_none())
        else {
            let audit = format!("apikey:{}", key.key_id);
            self.api_key_failed(ip, Some(&audit)).await?;
            return Err(AuthError::InvalidCredentials);
        };
        let owner = format!("apikey:{}", rec.id);
        // Refused (InvalidCredentials) when the key's user is disabled or the key was revoked
        // since it was read: the insert checks both under a lock.
        let issued = self
            .issue_replacing(&owner, SessionKind::Stateless, meta, None)
            .await?;
        self.store.touch_api_key(rec.id).await?;
        Ok(issued)
    }

    /// Creates an API key for an existing user and returns it (`lka_…`). The key is shown
    /// only this once: only its hash is stored.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] when the owner is not an existing `user:<uuid>`.
    pub async fn create_api_key(
        &self,
        owner_key: &str,
        name: Option<&str>,
    ) -> Result<(Uuid, String), AuthError> {
        let user = owner_key
            .strip_prefix("user:")
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or(AuthError::InvalidCredentials)?;
        if !self.store.user_exists(user).await? {
            return Err(AuthError::InvalidCredentials);
        }
        let id = random_uuid(self.rng.as_ref())?;
        let secret = Secret::generate(self.rng.as_ref())?;
        self.store
            .insert_api_key(id, &format!("user:{user}"), name, &secret.hash())
            .await?;
        Ok((id, ApiKeyToken { key_id: id, secret }.encode()))
    }

    /// A new anonymous session: its own `anon:<uuid>` owner, its own token, the anonymous TTL.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the RNG or the database fails.
    pub async fn issue_anonymous(
        &self,
        mode: SessionKind,
        meta: &ClientMeta,
    ) -> Result<Issued, AuthError> {
        let owner = format!("anon:{}", random_uuid(self.rng.as_ref())?);
        let spec = IssueSpec {
            absolute_ttl_secs: self.config.anon_ttl_secs,
            data: json!({}),
            event_detail: json!({ "anonymous": true }),
        };
        self.issue(&owner, mode, meta, &spec).await
    }

    /// Creates a session for `owner_key` and returns its first tokens.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] when the owner is a disabled user or a revoked key
    /// (checked under a lock as the row is inserted); [`AuthError::Unavailable`] when the RNG
    /// or the database fails.
    pub async fn issue(
        &self,
        owner_key: &str,
        mode: SessionKind,
        meta: &ClientMeta,
        spec: &IssueSpec,
    ) -> Result<Issued, AuthError> {
        let secret = Secret::generate(self.rng.as_ref())?;
        let id = random_uuid(self.rng.as_ref())?;
        let new = NewSession {
            id,
            kind: mode,
            owner_key: owner_key.to_owned(),
            token_hash: secret.hash(),
            idle_ttl_secs: self.config.idle_ttl_secs as f64,
            absolute_ttl_secs: spec.absolute_ttl_secs as f64,
            user_agent: meta.user_agent.as_deref().map(truncate_user_agent),
            ip: meta.ip.clone(),
            data: spec.data.clone(),
            event_detail: spec.event_detail.clone(),
        };
        let row = self.store.create_session(&new).await?;
        self.metrics.issued(mode);
        self.issued(id, mode, secret, &row)
    }

    fn issued(
        &self,
        id: Uuid,
        kind: SessionKind,
        secret: Secret,
        row: &Rotation,
    ) -> Result<Issued, AuthError> {
        let access_token = match kind {
            SessionKind::Stateless => Some(self.jwt.sign(&row.owner_key, id)?),
            SessionKind::Stateful => None,
        };
        Ok(Issued {
            session_id: id,
            kind,
            owner_key: row.owner_key.clone(),
            token: SessionToken::new(kind, id, secret).encode(),
            access_token,
            expires_at: row.expires_at,
            absolute_expires_at: row.absolute_expires_at,
        })
    }

    /// Reads the row a token names and applies the checks every outcome shares: known secret,
    /// mode, revocation, expiry. A mode mismatch is recorded but changes nothing.
    async fn load_checked(
        &self,
        token: &SessionToken,
        expected: SessionKind,
    ) -> Result<(SessionRecord, Presented), AuthError> {
        let touch = self.config.touch_interval_secs as f64;
        let rec = self
            .store
            .find_session(token.session_id, touch)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let presented = classify(&rec, &token.secret).ok_or(AuthError::InvalidToken)?;
        if token.kind != expected || rec.kind != expected {
            self.store
                .record_event(
                    rec.id,
                    &rec.owner_key,
                    "mode_mismatch",
                    json!({ "session_kind": rec.kind, "presented_as": expected }),
                )
                .await?;
            return Err(AuthError::ModeMismatch);
        }
        if rec.revoked_at.is_some() {
            return Err(AuthError::SessionRevoked);
        }
        if rec.expired {
            return Err(AuthError::TokenExpired);
        }
        Ok((rec, presented))
    }

    /// Revokes a session whose rotated token came back after the grace window.
    async fn reuse_detected(&self, rec: &SessionRecord) -> AuthError {
        tracing::warn!(session_id = %rec.id, owner = %rec.owner_key, "rotated token reused after grace: revoking session");
        match self.store.revoke(rec.id, RevokeReason::ReuseDetected).await {
            Ok(_) => AuthError::TokenReused,
            Err(e) => e.into(),
        }
    }

    /// Refreshes a session token of mode `expected`, following the outcome table of the
    /// design: rotate with a compare-and-swap when the current secret is presented; return the
    /// same successor for the previous secret inside the grace window; revoke on reuse after
    /// it; refuse the other mode without touching the session.
    ///
    /// # Errors
    /// Every [`AuthError`] token variant, and [`AuthError::Unavailable`] on RNG or database
    /// failure (nothing is committed then).
    pub async fn refresh(
        &self,
        presented: &str,
        expected: SessionKind,
    ) -> Result<Issued, AuthError> {
        match self.refresh_inner(presented, expected).await {
            Ok((issued, outcome)) => {
                self.metrics.refresh(outcome);
                Ok(issued)
            }
            Err(e) => {
                self.metrics.refresh(e.code());
                Err(e)
            }
        }
    }

    async fn refresh_inner(
        &self,
        presented: &str,
        expected: SessionKind,
    ) -> Result<(Issued, &'static str), AuthError> {
        let token = SessionToken::parse(presented).map_err(|_| AuthError::InvalidToken)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (rec, class) = self.load_checked(&token, expected).await?;
            match class {
                Presented::Current => {
                    let next = Secret::generate(self.rng.as_ref())?;
                    let sealed = seal_successor(&token.secret, rec.id, rec.version + 1, &next);
                    let rotated = self
                        .store
                        .rotate(
                            rec.id,
                            rec.version,
                            &next.hash(),
                            &sealed,
                            self.config.grace_secs as f64,
                            self.config.idle_ttl_secs as f64,
                        )
                        .await?;
                    match rotated {
                        Some(row) => {
                            return Ok((self.issued(rec.id, rec.kind, next, &row)?, "rotated"))
                        }
                        None => continue, // lost the race: re-read and classify again
                    }
                }
                Presented::Previous if rec.in_grace => {
                    let successor = rec
                        .sealed_successor
                        .as_deref()
                        .and_then(|s| unseal_successor(&token.secret, rec.id, rec.version, s))
                        .filter(|s| s.matches(&rec.token_hash));
                    let Some(successor) = successor else {
                        return Err(AuthError::Internal(
                            "sealed successor does not open with the previous secret".into(),
                        ));
                    };
                    self.store
                        .record_event(
                            rec.id,
                            &rec.owner_key,
                            "grace_used",
                            json!({ "version": rec.version }),
                        )
                        .await?;
                    let row = Rotation {
                        owner_key: rec.owner_key.clone(),
                        version: rec.version,
                        expires_at: rec.expires_at,
                        absolute_expires_at: rec.absolute_expires_at,
                    };
                    return Ok((self.issued(rec.id, rec.kind, successor, &row)?, "grace"));
                }
                Presented::Previous => return Err(self.reuse_detected(&rec).await),
            }
        }
        Err(AuthError::Unavailable(
            "refresh lost the compare-and-swap too many times".into(),
        ))
    }

    /// Checks a stateful session token (the cookie) against the database: the current secret,
    /// or the previous one inside the grace window (a request that left before a refresh).
    /// Slides the idle expiry at most once per touch interval.
    ///
    /// # Errors
    /// The token variants of [`AuthError`]; a rotated cookie after grace revokes the session.
    pub async fn authenticate_session_token(&self, presented: &str) -> Result<Caller, AuthError> {
        let token = SessionToken::parse(presented).map_err(|_| AuthError::InvalidToken)?;
        let (rec, class) = self.load_checked(&token, SessionKind::Stateful).await?;
        if class == Presented::Previous && !rec.in_grace {
            return Err(self.reuse_detected(&rec).await);
        }
        let mut session = rec.summary();
        if rec.touch_due {
            let touched = self
                .store
                .touch(
                    rec.id,
                    self.config.idle_ttl_secs as f64,
                    self.config.touch_interval_secs as f64,
                )
                .await?;
            if let Some((last_used_at, expires_at)) = touched {
                session.last_used_at = last_used_at;
                session.expires_at = expires_at;
            }
        }
        Ok(Caller {
            session_id: rec.id,
            owner_key: rec.owner_key,
            kind: rec.kind,
            session,
        })
    }

    /// Checks a bearer credential. A JWT access token is verified by signature, then its
    /// session is checked to be live (the `/auth` endpoints are stricter than an app that
    /// trusts the JWT alone until `exp`). A session token in a bearer header is refused:
    /// a stateful token there is the wrong mode, a refresh token is not an access token.
    ///
    /// # Errors
    /// The token variants of [`AuthError`].
    pub async fn authenticate_bearer(&self, bearer: &str) -> Result<Caller, AuthError> {
        if let Ok(token) = SessionToken::parse(bearer) {
            return match token.kind {
                SessionKind::Stateful => {
                    self.load_checked(&token, SessionKind::Stateless).await?;
                    Err(AuthError::ModeMismatch)
                }
                SessionKind::Stateless => Err(AuthError::InvalidToken),
            };
        }
        let claims = self.jwt.verify(bearer)?;
        let rec = self
            .store
            .find_session(claims.sid, self.config.touch_interval_secs as f64)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if rec.owner_key != claims.sub {
            return Err(AuthError::InvalidToken);
        }
        if rec.kind != SessionKind::Stateless {
            return Err(AuthError::ModeMismatch);
        }
        if rec.revoked_at.is_some() {
            return Err(AuthError::SessionRevoked);
        }
        if rec.expired {
            return Err(AuthError::TokenExpired);
        }
        Ok(Caller {
            session: rec.summary(),
            session_id: rec.id,
            owner_key: rec.owner_key,
            kind: rec.kind,
        })
    }

    /// Revokes the caller's own session.
    ///
    /// # Errors
    /// Database failures.
    pub async fn logout(&self, caller: &Caller) -> Result<(), AuthError> {
        self.store
            .revoke(caller.session_id, RevokeReason::Logout)
            .await?;
        Ok(())
    }

    /// Revokes every session of the caller's owner. Returns how many.
    ///
    /// # Errors
    /// Database failures.
    pub async fn logout_all(&self, caller: &Caller) -> Result<usize, AuthError> {
        let ids = self
            .store
            .revoke_owner(&caller.owner_key, RevokeReason::LogoutAll)
            .await?;
        Ok(ids.len())
    }

    /// Revokes one session of the caller's owner; `false` when there is no such session of
    /// theirs (answered as 404, whatever the reason).
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_own(&self, caller: &Caller, id: Uuid) -> Result<bool, AuthError> {
        Ok(self
            .store
            .revoke_owned(&caller.owner_key, id, RevokeReason::Logout)
            .await?)
    }
}

/// Keeps at most 512 bytes of a User-Agent, on a character boundary.
fn truncate_user_agent(ua: &str) -> String {
    let mut end = ua.len().min(512);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    ua[..end].to_owned()
}
