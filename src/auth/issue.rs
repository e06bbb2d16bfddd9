//! Issuing: a new session and its first tokens, anonymous sessions, and API-key creation.

use serde_json::json;
use uuid::Uuid;

use super::{Auth, AuthError, ClientMeta, IssueSpec, Issued};
use crate::rng::random_uuid;
use crate::store::{NewSession, OwnerKey, Rotation};
use crate::token::{ApiKeyToken, Secret, SessionToken};
use crate::SessionKind;

impl Auth {
    /// Creates an API key for an existing user and returns it (`lka_…`). The key is shown
    /// only this once: only its hash is stored.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] when the owner is not an existing user.
    pub async fn create_api_key(
        &self,
        owner_key: &OwnerKey,
        name: Option<&str>,
    ) -> Result<(Uuid, String), AuthError> {
        let user = owner_key.user_id().ok_or(AuthError::InvalidCredentials)?;
        if !self.store.user_exists(user).await? {
            return Err(AuthError::InvalidCredentials);
        }
        let id = random_uuid(self.rng.as_ref())?;
        let secret = Secret::generate(self.rng.as_ref())?;
        self.store
            .insert_api_key(id, &OwnerKey::User(user), name, &secret.hash())
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
        let owner = OwnerKey::Anonymous(random_uuid(self.rng.as_ref())?);
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
        owner_key: &OwnerKey,
        mode: SessionKind,
        meta: &ClientMeta,
        spec: &IssueSpec,
    ) -> Result<Issued, AuthError> {
        let secret = Secret::generate(self.rng.as_ref())?;
        let id = random_uuid(self.rng.as_ref())?;
        let new = NewSession {
            id,
            kind: mode,
            owner_key: *owner_key,
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

    /// The tokens of session `id` whose current secret is `secret`: the session token and,
    /// for a stateless session, a fresh access token.
    pub(super) fn issued(
        &self,
        id: Uuid,
        kind: SessionKind,
        secret: Secret,
        row: &Rotation,
    ) -> Result<Issued, AuthError> {
        let access_token = match kind {
            SessionKind::Stateless => Some(self.jwt.sign(&row.owner_key.to_string(), id)?),
            SessionKind::Stateful => None,
        };
        Ok(Issued {
            session_id: id,
            kind,
            owner_key: row.owner_key,
            token: SessionToken::new(kind, id, secret).encode(),
            access_token,
            expires_at: row.expires_at,
            absolute_expires_at: row.absolute_expires_at,
        })
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
