//! Statements on the `api_keys` table.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{OwnerKey, RevokeReason, Store, StoreResult};

/// An API key row as login needs it.
#[derive(Clone)]
pub struct ApiKeyRecord {
    /// Key id (owner key of its sessions: `apikey:<id>`).
    pub id: Uuid,
    /// SHA-256 of the secret.
    pub key_hash: Vec<u8>,
    /// Set once revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("key_hash", &"[redacted]")
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

/// An API key as an operator sees it (no hash).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeySummary {
    /// Key id.
    pub id: Uuid,
    /// The user it acts for.
    pub owner_key: OwnerKey,
    /// Label.
    pub name: Option<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last login with it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Revocation time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl Store {
    /// Stores a new key's hash.
    ///
    /// # Errors
    /// Database failures (including a malformed owner key: CHECK violation).
    pub async fn insert_api_key(
        &self,
        id: Uuid,
        owner_key: &OwnerKey,
        name: Option<&str>,
        key_hash: &[u8; 32],
    ) -> StoreResult<()> {
        sqlx::query!(
            "INSERT INTO latchkey.api_keys (id, owner_key, name, key_hash) VALUES ($1, $2, $3, $4)",
            id,
            owner_key as _,
            name,
            &key_hash[..],
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Finds a key by id and records its use.
    ///
    /// # Errors
    /// Database failures.
    pub async fn find_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(sqlx::query_as!(
            ApiKeyRecord,
            "SELECT id, key_hash, revoked_at FROM latchkey.api_keys WHERE id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a successful login with a key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn touch_api_key(&self, id: Uuid) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE latchkey.api_keys SET last_used_at = now() WHERE id = $1",
            id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lists keys, newest first: every key of one owner, or the newest 1000 of all.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_api_keys(
        &self,
        owner_key: Option<&OwnerKey>,
    ) -> StoreResult<Vec<ApiKeySummary>> {
        // One statement for both cases, of the shape of `list_sessions` (see there). With
        // `SET plan_cache_mode = force_generic_plan` on 200k keys (20k owners): one owner
        // reads api_keys_owner_key_idx and the second branch is "never executed" (One-Time
        // Filter: $1 IS NULL, no worker started); all: a top-N sort of a parallel seq scan,
        // as before. `WHERE ($1 IS NULL OR owner_key = $1)` would scan every key for one owner.
        // The shape is `list_sessions`' over another table: `query!` takes only a literal,
        // so each listing spells its own.
        let rows = sqlx::query_as!(
            ApiKeySummary,
            r#"
            SELECT k.id AS "id!", k.owner_key AS "owner_key!: OwnerKey", k.name,
                   k.created_at AS "created_at!", k.last_used_at, k.revoked_at
            FROM (SELECT * FROM latchkey.api_keys WHERE owner_key = $1
                  UNION ALL
                  SELECT * FROM (SELECT * FROM latchkey.api_keys
                                 ORDER BY created_at DESC LIMIT 1000) AS newest
                  WHERE $1::text IS NULL) AS k
            ORDER BY k.created_at DESC
            "#,
            owner_key as _,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Revokes a key and every live session it created. Returns the number of sessions
    /// revoked, or `None` when no such key exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke_api_key(&self, id: Uuid) -> StoreResult<Option<usize>> {
        let found = sqlx::query_scalar!(
            "UPDATE latchkey.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id",
            id
        )
        .fetch_optional(&self.pool)
        .await?;
        if found.is_none() {
            return Ok(None);
        }
        let revoked = self
            .revoke_owner(&OwnerKey::ApiKey(id), RevokeReason::ApiKeyRevoked)
            .await?;
        Ok(Some(revoked.len()))
    }

    /// Whether a user account exists (API keys are issued for existing users only).
    ///
    /// # Errors
    /// Database failures.
    pub async fn user_exists(&self, id: Uuid) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            "SELECT EXISTS (SELECT 1 FROM latchkey.users WHERE id = $1) AS \"e!\"",
            id
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
