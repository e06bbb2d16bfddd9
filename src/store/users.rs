//! Statements on the `users` table.

use uuid::Uuid;

use super::{OwnerKey, RevokeReason, Store, StoreError, StoreResult};

/// A user account as login needs it.
#[derive(Clone)]
pub struct UserRecord {
    /// Account id (owner key `user:<id>`).
    pub id: Uuid,
    /// Login address.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Refused at login when true.
    pub disabled: bool,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"[redacted]")
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// An account as `latchkey user list` shows it: no password hash.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserSummary {
    /// Account id (owner key `user:<id>`).
    pub id: Uuid,
    /// Login address.
    pub email: String,
    /// Refused at login when true.
    pub disabled: bool,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    /// Live sessions it owns directly (API keys' sessions not counted).
    pub live_sessions: i64,
}

/// The unique index that makes emails case-insensitively unique.
pub const EMAIL_UNIQUE: &str = "users_email_lower_key";

impl Store {
    /// Finds an account by email, case-insensitively.
    ///
    /// # Errors
    /// Database failures.
    pub async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        Ok(sqlx::query_as!(
            UserRecord,
            "SELECT id, email, password_hash, disabled FROM latchkey.users WHERE lower(email) = lower($1)",
            email
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Finds an account by id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn find_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        Ok(sqlx::query_as!(
            UserRecord,
            "SELECT id, email, password_hash, disabled FROM latchkey.users WHERE id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Creates an account; returns its id.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with [`EMAIL_UNIQUE`] when the email is taken.
    pub async fn insert_user(&self, email: &str, password_hash: &str) -> StoreResult<Uuid> {
        Ok(sqlx::query_scalar!(
            "INSERT INTO latchkey.users (email, password_hash) VALUES ($1, $2) RETURNING id",
            email,
            password_hash
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Replaces a password hash (rehash on login after a parameter change).
    ///
    /// # Errors
    /// Database failures.
    pub async fn update_password_hash(&self, id: Uuid, password_hash: &str) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE latchkey.users SET password_hash = $2, updated_at = now() WHERE id = $1",
            id,
            password_hash
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every account, oldest first, with its number of live sessions; no password hash.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_users(&self) -> StoreResult<Vec<UserSummary>> {
        Ok(sqlx::query_as!(
            UserSummary,
            r#"
            SELECT u.id, u.email, u.disabled, u.created_at,
                   (SELECT count(*) FROM latchkey.sessions AS s
                    WHERE s.owner_key = $1 || u.id::text
                      AND s.revoked_at IS NULL AND s.expires_at > now()) AS "live_sessions!"
            FROM latchkey.users AS u
            ORDER BY u.created_at, u.id
            "#,
            OwnerKey::USER_PREFIX,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets a new password hash by email and revokes every live session the account owns
    /// directly (`reason`), so a changed password ends the sessions opened with the old
    /// one. Returns the number revoked, or `None` when no such account exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_password(
        &self,
        email: &str,
        password_hash: &str,
        reason: RevokeReason,
    ) -> StoreResult<Option<usize>> {
        let Some(user) = self.find_user_by_email(email).await? else {
            return Ok(None);
        };
        self.update_password_hash(user.id, password_hash).await?;
        let revoked = self.revoke_owner(&OwnerKey::User(user.id), reason).await?;
        Ok(Some(revoked.len()))
    }

    /// Disables an account by email and revokes every live session of it and of its API
    /// keys (reason `user_disabled`; SQL function `latchkey_disable_user`). Returns the
    /// number of sessions revoked, or `None` when no such account exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn disable_user(&self, email: &str) -> StoreResult<Option<usize>> {
        let revoked = sqlx::query_scalar!("SELECT latchkey.latchkey_disable_user($1)", email)
            .fetch_one(&self.pool)
            .await?;
        Ok(revoked.map(|n| usize::try_from(n).unwrap_or_default()))
    }

    /// Enables an account by email again (SQL function `latchkey_enable_user`): it may log
    /// in again; the sessions revoked when it was disabled stay revoked. Returns `false`
    /// when no such account exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn enable_user(&self, email: &str) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            "SELECT latchkey.latchkey_enable_user($1) AS \"found!\"",
            email
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

impl StoreError {
    /// True when this is a violation of the named unique constraint.
    pub fn is_conflict_on(&self, constraint: &str) -> bool {
        matches!(self, Self::Conflict(c) if c == constraint)
    }
}
