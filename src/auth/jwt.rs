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

#[cfg(test)]
mod props {
    //! Properties of the access-token check (proptest, 256 cases each): nothing but the
    //! untouched token verifies, and no input panics.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::OwnerKey;
    use proptest::prelude::*;

    const SECRET: &str = "props-secret-props-secret-props-secret-0123";

    fn keys() -> JwtKeys {
        JwtKeys::hs256(&SecretString::from(SECRET.to_owned()), 300)
    }

    fn signed(keys: &JwtKeys, id: [u8; 16]) -> String {
        keys.sign(
            &OwnerKey::User(Uuid::from_bytes(id)).to_string(),
            Uuid::from_bytes(id),
        )
        .unwrap()
    }

    proptest! {
        #[test]
        fn any_string_is_refused(input in any::<String>()) {
            prop_assert!(matches!(keys().verify(&input), Err(AuthError::InvalidToken)));
        }

        #[test]
        fn jwt_shaped_strings_are_refused(
            input in "eyJ[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_=+/-]{0,50}",
        ) {
            prop_assert!(keys().verify(&input).is_err());
        }

        #[test]
        fn the_untouched_token_verifies_with_its_claims(id in any::<[u8; 16]>()) {
            let keys = keys();
            let claims = keys.verify(&signed(&keys, id)).unwrap();
            prop_assert_eq!(claims.sid, Uuid::from_bytes(id));
            prop_assert_eq!(claims.iss, ISSUER);
        }

        #[test]
        fn any_edit_of_a_valid_token_is_refused(
            id in any::<[u8; 16]>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let keys = keys();
            let valid = signed(&keys, id);
            let mut bytes = valid.clone().into_bytes();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let edited = String::from_utf8_lossy(&bytes).into_owned();
            prop_assume!(edited != valid);
            prop_assert!(keys.verify(&edited).is_err(), "{} verified", edited);
        }

        #[test]
        fn a_cut_or_extended_token_is_refused(
            id in any::<[u8; 16]>(),
            cut in any::<prop::sample::Index>(),
            tail in "[A-Za-z0-9_.=-]{1,8}",
        ) {
            let keys = keys();
            let valid = signed(&keys, id);
            let cut_at = cut.index(valid.len());
            prop_assert!(keys.verify(&valid[..cut_at]).is_err());
            let extended = format!("{valid}{tail}");
            prop_assert!(keys.verify(&extended).is_err());
        }

        #[test]
        fn another_algorithm_or_secret_is_refused(id in any::<[u8; 16]>(), other in "[a-z]{32,40}") {
            let claims = AccessClaims {
                sub: OwnerKey::User(Uuid::from_bytes(id)).to_string(),
                sid: Uuid::from_bytes(id),
                iat: 0,
                exp: i64::from(u32::MAX),
                iss: ISSUER.to_owned(),
            };
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            for alg in [Algorithm::HS384, Algorithm::HS512] {
                let token = encode(&Header::new(alg), &claims, &key).unwrap();
                prop_assert!(matches!(keys().verify(&token), Err(AuthError::InvalidToken)));
            }
            let foreign = JwtKeys::hs256(&SecretString::from(other), 300);
            prop_assert!(matches!(keys().verify(&signed(&foreign, id)), Err(AuthError::InvalidToken)));
        }
    }
}
