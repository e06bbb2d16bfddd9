//! Logins: with an email and password, with an API key, and the upgrade of an anonymous
//! session that came with a login.

use secrecy::SecretString;
use serde_json::json;

use super::throttle::ip_of;
use super::{Auth, AuthError, Caller, ClientMeta, IssueSpec, Issued, Upgrade};
use crate::store::{OwnerKey, RevokeReason};
use crate::token::ApiKeyToken;
use crate::SessionKind;

impl Auth {
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
        let result = async {
            let owner = self.verify_password(email, password, meta).await?;
            self.issue_replacing(&owner, mode, meta, upgrade).await
        }
        .await;
        self.metrics
            .login(result.as_ref().map_or_else(AuthError::code, |_| "ok"));
        result
    }

    /// Checks an email and password under the login throttle and returns the owner key of
    /// the account (`user:<uuid>`); rehashes the password when its parameters are outdated.
    async fn verify_password(
        &self,
        email: &str,
        password: SecretString,
        meta: &ClientMeta,
    ) -> Result<OwnerKey, AuthError> {
        let ip = &ip_of(meta);
        let account = self.throttle.account_key(email);
        let _in_flight = self.throttle_check(ip, Some(&account)).await?;
        let user = self.store.find_user_by_email(email).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.hasher.verify(password.clone(), stored).await?;
        let audit = user
            .as_ref()
            .map_or_else(|| account.clone(), |u| OwnerKey::User(u.id).to_string());
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
        Ok(OwnerKey::User(user.id))
    }

    /// Changes the password of the caller's account: the current password is checked as a
    /// login checks it (throttled, counted, audited), the new one is hashed and stored, and
    /// every other session of the account is revoked (`logout_all`): a changed password ends
    /// whatever the old one opened. The caller's own session stays. Returns how many were
    /// revoked.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] for a wrong current password, or a caller that is
    /// not a user's session; [`AuthError::RateLimited`], [`AuthError::Unavailable`].
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: SecretString,
        new: SecretString,
        meta: &ClientMeta,
    ) -> Result<usize, AuthError> {
        let OwnerKey::User(id) = caller.owner_key else {
            return Err(AuthError::InvalidCredentials);
        };
        let user = self
            .store
            .find_user(id)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        if self.verify_password(&user.email, current, meta).await? != caller.owner_key {
            return Err(AuthError::InvalidCredentials);
        }
        let hash = self.hasher.hash(new).await?;
        self.store.update_password_hash(id, &hash).await?;
        let revoked = self
            .store
            .revoke_owner_except(
                &caller.owner_key,
                Some(caller.session_id),
                RevokeReason::LogoutAll,
            )
            .await?;
        Ok(revoked.len())
    }

    /// Issues a session for a freshly authenticated owner. When an anonymous session came
    /// with the login, the new session gets a new id and token (no fixation), may take over
    /// its data, records the link, and the anonymous session is revoked (`upgraded`).
    async fn issue_replacing(
        &self,
        owner: &OwnerKey,
        mode: SessionKind,
        meta: &ClientMeta,
        upgrade: Option<&Upgrade>,
    ) -> Result<Issued, AuthError> {
        let upgrade = upgrade.filter(|u| u.anonymous.owner_key.is_anonymous());
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
        let ip = &ip_of(meta);
        let _in_flight = self.throttle_check(ip, None).await?;
        let Ok(key) = ApiKeyToken::parse(key) else {
            self.api_key_failed(ip, None).await?;
            return Err(AuthError::InvalidCredentials);
        };
        let rec = self.store.find_api_key(key.key_id).await?;
        let Some(rec) = rec.filter(|r| key.secret.matches(&r.key_hash) && r.revoked_at.is_none())
        else {
            let audit = OwnerKey::ApiKey(key.key_id).to_string();
            self.api_key_failed(ip, Some(&audit)).await?;
            return Err(AuthError::InvalidCredentials);
        };
        let owner = OwnerKey::ApiKey(rec.id);
        // Refused (InvalidCredentials) when the key's user is disabled or the key was revoked
        // since it was read: the insert checks both under a lock.
        let issued = self
            .issue_replacing(&owner, SessionKind::Stateless, meta, None)
            .await?;
        self.store.touch_api_key(rec.id).await?;
        Ok(issued)
    }
}
