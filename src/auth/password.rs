//! Argon2id password hashing on the blocking pool, behind a semaphore.
//!
//! Hashing is deliberately expensive. Every hash and verification runs on tokio's blocking
//! pool, and at most `max_concurrent` of them at once (one per core by default), so a flood
//! of logins queues here instead of starving the async workers that serve refreshes. The
//! queue itself is bounded: beyond it a login answers `rate_limited`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::Span;

use super::AuthError;
use crate::rng::{random_array, SecretSource};

/// OWASP's recommended Argon2id parameters: 19 MiB, 2 passes, 1 lane.
pub fn owasp_params() -> Params {
    match Params::new(19 * 1024, 2, 1, Some(32)) {
        Ok(p) => p,
        Err(_) => unreachable!("constant parameters are valid"),
    }
}

/// The result of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The password matched.
    pub ok: bool,
    /// It matched, but the stored hash uses other parameters and should be replaced.
    pub needs_rehash: bool,
}

/// The hashes (and verifications) of a [`PasswordHasher`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashQueue {
    /// Waiting for a permit.
    pub waiting: usize,
    /// Holding a permit: running on the blocking pool.
    pub running: usize,
}

/// Argon2id hashing and verification, bounded and counted.
pub struct PasswordHasher {
    params: Params,
    max_concurrent: usize,
    semaphore: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    dummy_hash: String,
    verifications: Arc<AtomicU64>,
    rng: Arc<dyn SecretSource>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("max_queued", &self.max_queued)
            .finish_non_exhaustive()
    }
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, password: &[u8], salt: &[u8; 16]) -> Result<String, AuthError> {
    argon(params)
        .hash_password_with_salt(password, salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("argon2 hash failed: {e}")))
}

impl PasswordHasher {
    /// Builds a hasher and computes the dummy hash that unknown emails are verified against,
    /// so that they cost the same as a wrong password.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] when the RNG fails.
    pub fn new(
        params: Params,
        max_concurrent: usize,
        rng: Arc<dyn SecretSource>,
    ) -> Result<Self, AuthError> {
        let salt: [u8; 16] = random_array(rng.as_ref())?;
        let pw: [u8; 32] = random_array(rng.as_ref())?;
        let dummy_hash = hash_with(&params, &pw, &salt)?;
        let max_concurrent = max_concurrent.max(1);
        Ok(Self {
            params,
            max_concurrent,
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued: max_concurrent * 256,
            dummy_hash,
            verifications: Arc::new(AtomicU64::new(0)),
            rng,
        })
    }

    /// How many argon2 verifications have really run (for tests and metrics).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The work in the queue now: running (holding one of the `max_concurrent` permits) and
    /// waiting for a permit. A snapshot: either may change at once.
    pub fn queue(&self) -> HashQueue {
        let running = self
            .max_concurrent
            .saturating_sub(self.semaphore.available_permits());
        let queued = self.queued.load(Ordering::Relaxed);
        HashQueue {
            waiting: queued.saturating_sub(running),
            running,
        }
    }

    /// Runs `work` on the blocking pool once a permit is free, keeping the tracing span.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        struct Queued(Arc<AtomicUsize>);
        impl Drop for Queued {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(AuthError::RateLimited {
                retry_after_secs: crate::http::RETRY_AFTER_SECS,
            });
        }
        let _queued = Queued(self.queued.clone());
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Internal("hashing pool closed".into()))?;
        let span = Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(work)
        })
        .await
        .map_err(|e| AuthError::Internal(format!("hashing task failed: {e}")))
    }

    /// Hashes a password with the configured parameters and a fresh salt.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] on RNG failure, [`AuthError::RateLimited`] when the queue
    /// is full.
    pub async fn hash(&self, password: SecretString) -> Result<String, AuthError> {
        let salt: [u8; 16] = random_array(self.rng.as_ref())?;
        let params = self.params.clone();
        self.run(move || hash_with(&params, password.expose_secret().as_bytes(), &salt))
            .await?
    }

    /// Verifies a password against a stored PHC string, or against the dummy hash when
    /// `stored` is `None` (unknown account: same cost, always fails).
    ///
    /// # Errors
    /// [`AuthError::RateLimited`] when the queue is full.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verified, AuthError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let params = self.params.clone();
        let counter = self.verifications.clone();
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return Verified {
                    ok: false,
                    needs_rehash: false,
                };
            };
            let ok = argon(&params)
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok();
            counter.fetch_add(1, Ordering::Relaxed);
            let needs_rehash = ok && Params::try_from(&parsed).map_or(true, |p| p != params);
            Verified {
                ok: ok && known,
                needs_rehash,
            }
        })
        .await
    }
}
