//! Stateless access tokens: HS256 JWTs, algorithm pinned, verified without the database.

use hkdf::Hkdf;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::AuthError;

/// Issuer claim of every access token.
pub const ISSUER: &str = "latchkey";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Owner key (`user:<uuid>`, `apikey:<uuid>`, `anon:<uuid>`).
    pub sub: String,
    /// Session id.
    pub sid: Uuid,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Always [`ISSUER`].
    pub iss: String,
}

/// Shortest accepted JWT secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest accepted JWT secret, in bytes.
pub const MAX_SECRET_BYTES: usize = 1024;

/// JWT secrets that are printed in latchkey's own files (examples, docs, the compose file of
/// earlier versions). Anyone can read them, so anyone could sign access tokens with them.
/// `tests/api/config.rs` checks that every secret written in the repository's docs is here.
pub const PUBLISHED_SECRETS: &[&str] = &[
    "change-me-change-me-change-me-change-me",
    "test-secret-test-secret-test-secret!",
    "0123456789abcdef0123456789abcdef",
    "replace-with-32-or-more-random-bytes",
];

/// Refuses a signing secret anyone could guess or read: shorter than [`MIN_SECRET_BYTES`],
/// longer than [`MAX_SECRET_BYTES`], or one of [`PUBLISHED_SECRETS`]. `serve` checks its
/// flag with it and [`crate::http::AppState::build`] its settings.
///
/// # Errors
/// What is wrong and what is accepted.
pub fn check_secret(secret: &str) -> Result<(), String> {
    let len = secret.len();
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&len) {
        return Err(format!(
            "must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, got {len}"
        ));
    }
    if PUBLISHED_SECRETS.contains(&secret.trim()) {
        return Err("this value is published in latchkey's documentation; anyone could sign access tokens with it. Generate one: openssl rand -base64 48".to_owned());
    }
    Ok(())
}

/// Signing and verification keys with a pinned algorithm.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
    /// HKDF-SHA256 over the secret, for keys every instance derives alike.
    kdf: Hkdf<Sha256>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("keys", &"[redacted]")
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl JwtKeys {
    /// HS256 keys from a shared secret; every instance behind one load balancer needs the same.
    pub fn hs256(secret: &SecretString, ttl_secs: u64) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            ttl_secs,
            kdf: Hkdf::new(Some(b"latchkey derived keys"), bytes),
        }
    }

    /// A 32-byte key for `purpose` derived from the shared secret (HKDF-SHA256): the same on
    /// every instance with the same secret, and unrelated to the signing key.
    pub fn derive_key(&self, purpose: &[u8]) -> [u8; 32] {
        let mut key = [0u8; 32];
        match self.kdf.expand(purpose, &mut key) {
            Ok(()) => key,
            Err(_) => unreachable!("32 bytes is a valid HKDF-SHA256 output length"),
        }
    }

    /// Lifetime of an access token in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Signs an access token for a session.
    ///
    /// # Errors
    /// [`AuthError::Internal`] if signing fails.
    pub fn sign(&self, owner_key: &str, sid: Uuid) -> Result<String, AuthError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = AccessClaims {
            sub: owner_key.to_owned(),
            sid,
            iat: now,
            exp: now + i64::try_from(self.ttl_secs).unwrap_or(i64::MAX / 2),
            iss: ISSUER.to_owned(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("jwt signing failed: {e}")))
    }

    /// Verifies signature, algorithm, issuer and expiry.
    ///
    /// # Errors
    /// [`AuthError::TokenExpired`] for an expired token, [`AuthError::InvalidToken`] for
    /// anything else.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, AuthError> {
        decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                _ => AuthError::InvalidToken,
            })
    }
}
