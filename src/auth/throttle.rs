//! Login throttling: failures counted in PostgreSQL per (account, client address) and per
//! client address, shared by every instance, checked before any password work.
//!
//! An account is keyed by a keyed hash of its lower-cased email, so a known and an unknown
//! email throttle alike. Failures from one address never block the account from another:
//! the per-account counter is always paired with the address. An IPv6 client counts by its
//! /64 network, as every per-client limit does ([`crate::limits::client_key`]).
//!
//! A failure is counted after its password check, so the counters alone would let a burst of
//! concurrent guesses all pass the check before the first one is counted. Each instance
//! therefore lets at most [`MAX_IN_FLIGHT_PER_ACCOUNT`] checks of an (account, address) and
//! [`MAX_IN_FLIGHT_PER_IP`] checks of an address run at once; the others are refused at once
//! (`429`, retry in 1 s), so a burst gets at most that many guesses past the allowance, and a
//! refused burst holds no connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hkdf::Hkdf;
use sha2::Sha256;

use super::{Auth, AuthError};
use crate::store::{Backoff, FailureKind, ThrottleKey};

/// `login_throttle.account` of the per-address counter.
const EVERY_ACCOUNT: &str = "";

/// Logins of one address whose credentials are being checked at once on one instance.
pub const MAX_IN_FLIGHT_PER_IP: usize = 16;

/// Logins of one (account, address) whose password is being checked at once on one instance
/// (a few tabs or devices behind one address may sign in together).
pub const MAX_IN_FLIGHT_PER_ACCOUNT: usize = 4;

/// The checks running now on this instance, by throttle key (`account` + address).
type InFlight = Arc<Mutex<HashMap<(String, String), usize>>>;

/// How many failures are free and how the back-off grows past them.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Failures of one account from one address before the back-off starts.
    pub account_free_failures: u32,
    /// Failures from one address (any account, API keys included) before the back-off starts.
    pub ip_free_failures: u32,
    /// The first block past the allowance, in seconds; it doubles with each further failure.
    pub backoff_base_secs: f64,
    /// The longest block, in seconds.
    pub backoff_max_secs: f64,
    /// A counter restarts this many seconds after its last failure (once its block is over).
    pub window_secs: f64,
}

impl Default for ThrottleConfig {
    /// 5 free failures per (account, address), 50 per address, then 1 s doubling up to
    /// 15 min; counters decay 15 min after the last failure.
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            ip_free_failures: 50,
            backoff_base_secs: 1.0,
            backoff_max_secs: 900.0,
            window_secs: 900.0,
        }
    }
}

/// The throttle's settings and the key of its account hashes.
#[derive(Clone)]
pub struct LoginThrottle {
    config: ThrottleConfig,
    kdf: Hkdf<Sha256>,
    in_flight: InFlight,
}

/// A login's place among the checks running now: given back when dropped.
#[derive(Debug)]
#[must_use = "the slot is given back when this is dropped"]
pub(super) struct InFlightSlot {
    in_flight: InFlight,
    keys: Vec<(String, String)>,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LoginThrottle {
    /// A throttle whose account hashes are keyed with `key` (every instance needs the same).
    pub fn new(config: ThrottleConfig, key: &[u8; 32]) -> Self {
        Self {
            config,
            kdf: Hkdf::new(Some(b"latchkey login throttle"), key),
            in_flight: InFlight::default(),
        }
    }

    /// Takes a place for a login of `account` (if any) from `ip` among the checks running now,
    /// or `None` when the (account, address) or the address already has its most.
    fn enter(&self, ip: &str, account: Option<&str>) -> Option<InFlightSlot> {
        let mut keys = vec![(
            (EVERY_ACCOUNT.to_owned(), ip.to_owned()),
            MAX_IN_FLIGHT_PER_IP,
        )];
        keys.extend(account.map(|a| ((a.to_owned(), ip.to_owned()), MAX_IN_FLIGHT_PER_ACCOUNT)));
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if keys
            .iter()
            .any(|(key, max)| map.get(key).copied().unwrap_or(0) >= *max)
        {
            return None;
        }
        for (key, _) in &keys {
            *map.entry(key.clone()).or_default() += 1;
        }
        Some(InFlightSlot {
            in_flight: self.in_flight.clone(),
            keys: keys.into_iter().map(|(key, _)| key).collect(),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// `em:` and a keyed hash (HKDF-SHA256 expand, i.e. HMAC) of the lower-cased email: the
    /// throttle and audit key of an email, whether an account has it or not.
    pub fn account_key(&self, email: &str) -> String {
        let mut out = [0u8; 16];
        if self
            .kdf
            .expand(email.to_lowercase().as_bytes(), &mut out)
            .is_err()
        {
            unreachable!("16 bytes is a valid HKDF-SHA256 output length");
        }
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        format!("em:{hex}")
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base_secs: self.config.backoff_base_secs,
            max_secs: self.config.backoff_max_secs,
            window_secs: self.config.window_secs,
        }
    }
}

/// The client address as the throttle counts it: an IPv6 address by its /64 network
/// ([`crate::limits::client_key`]); "" when unknown.
pub(super) fn ip_of(meta: &super::ClientMeta) -> String {
    meta.ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| crate::limits::client_key(ip).to_string())
        .unwrap_or_default()
}

impl Auth {
    /// The login throttle.
    pub fn throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    /// Refuses a login whose (account, address) or address counter is blocked, or that
    /// would run beside another check of the same (account, address) on this instance, before
    /// any lookup or hashing. A refusal is counted (`throttled`) but writes nothing: a blocked
    /// client may send as fast as it likes. `account` is `None` for API keys (address only).
    /// Hold the returned slot until the login's failure is counted or it succeeded.
    pub(super) async fn throttle_check(
        &self,
        ip: &str,
        account: Option<&str>,
    ) -> Result<InFlightSlot, AuthError> {
        let Some(slot) = self.throttle.enter(ip, account) else {
            return Err(self.throttled(ip, 1.0));
        };
        let mut accounts = vec![EVERY_ACCOUNT.to_owned()];
        accounts.extend(account.map(str::to_owned));
        match self.store.throttle_blocked_for(ip, &accounts).await? {
            None => Ok(slot),
            Some(secs) => Err(self.throttled(ip, secs)),
        }
    }

    /// Counts a refused login and answers it: `429` after `secs` (whole seconds, at least 1).
    fn throttled(&self, ip: &str, secs: f64) -> AuthError {
        self.metrics.login_failure(FailureKind::Throttled.as_str());
        let retry_after_secs = secs.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        tracing::info!(ip, retry_after_secs, "login throttled");
        AuthError::RateLimited { retry_after_secs }
    }

    /// Counts a failed password login against (account, address) and the address, and
    /// audits it under `audit` (`user:<id>` when the email is an account's, else `account`).
    pub(super) async fn password_failed(
        &self,
        ip: &str,
        account: &str,
        audit: &str,
    ) -> Result<(), AuthError> {
        let keys = [
            ThrottleKey {
                account: account.to_owned(),
                free: self.throttle.config.account_free_failures,
            },
            self.ip_key(),
        ];
        self.failed(ip, &keys, Some(audit), FailureKind::Password)
            .await
    }

    /// Counts a failed API-key login against the address and audits it.
    pub(super) async fn api_key_failed(
        &self,
        ip: &str,
        audit: Option<&str>,
    ) -> Result<(), AuthError> {
        self.failed(ip, &[self.ip_key()], audit, FailureKind::ApiKey)
            .await
    }

    /// Forgets the failures of `account` at `ip` after it logged in.
    pub(super) async fn throttle_clear(&self, ip: &str, account: &str) -> Result<(), AuthError> {
        Ok(self.store.throttle_clear(ip, account).await?)
    }

    fn ip_key(&self) -> ThrottleKey {
        ThrottleKey {
            account: EVERY_ACCOUNT.to_owned(),
            free: self.throttle.config.ip_free_failures,
        }
    }

    async fn failed(
        &self,
        ip: &str,
        keys: &[ThrottleKey],
        audit: Option<&str>,
        kind: FailureKind,
    ) -> Result<(), AuthError> {
        self.store
            .throttle_failed(ip, keys, &self.throttle.backoff(), audit, kind)
            .await?;
        self.metrics.login_failure(kind.as_str());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_ignore_case_and_depend_on_the_key() {
        let a = LoginThrottle::new(ThrottleConfig::default(), &[1; 32]);
        let b = LoginThrottle::new(ThrottleConfig::default(), &[2; 32]);
        assert_eq!(
            a.account_key("Alice@Example.com"),
            a.account_key("alice@example.com")
        );
        assert_ne!(
            a.account_key("alice@example.com"),
            a.account_key("bob@example.com")
        );
        assert_ne!(
            a.account_key("alice@example.com"),
            b.account_key("alice@example.com")
        );
        assert!(!a.account_key("alice@example.com").contains("alice"));
    }
}
