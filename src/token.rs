//! Session tokens: generation, wire format, strict parsing, hashing and constant-time checks.
//!
//! A token on the wire is `<prefix>_<base64url(session id ‖ secret)>`, where the prefix
//! names its mode (`lks` for a stateful cookie session, `lkr` for a stateless refresh token),
//! the session id is the 16-byte UUID of the row and the secret is 32 bytes from the OS CSPRNG.
//! Only `SHA-256(secret)` is ever stored.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::rng::{random_array, RngError, SecretSource};
use crate::SessionKind;

/// Length of a secret in bytes (256 bits).
pub const SECRET_LEN: usize = 32;
/// Length of a SHA-256 digest, as stored in `token_hash`.
pub const HASH_LEN: usize = 32;
const PAYLOAD_LEN: usize = 16 + SECRET_LEN;
/// base64url without padding of 48 bytes is exactly 64 characters.
const ENCODED_LEN: usize = 64;
/// Prefix plus underscore: `lks_`.
const PREFIX_LEN: usize = 4;
/// Total length of a token on the wire.
pub const TOKEN_LEN: usize = PREFIX_LEN + ENCODED_LEN;

/// A 32-byte session secret. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Draws a new secret from `source`.
    ///
    /// # Errors
    /// [`RngError`] when the generator fails.
    pub fn generate(source: &dyn SecretSource) -> Result<Self, RngError> {
        random_array(source).map(Self)
    }

    /// Wraps raw bytes (used when unsealing a successor).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes. Handle with care: never log or store them.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// SHA-256 of the secret: the only form that reaches the database.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        Sha256::digest(self.0).into()
    }

    /// Constant-time comparison of `SHA-256(self)` with a stored hash.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        stored_hash.len() == HASH_LEN && bool::from(self.hash().ct_eq(stored_hash))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Why a presented token string was refused before any database lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Wrong length, alphabet, prefix or encoding.
    #[error("malformed token")]
    Malformed,
}

/// A parsed session token: its claimed mode, the session id and the secret. Its `Debug`
/// shows the secret as [`Secret`]'s: redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The mode the prefix claims. The `kind` column stays the authority.
    pub kind: SessionKind,
    /// The session row's id.
    pub session_id: Uuid,
    /// The secret whose hash must match the row.
    pub secret: Secret,
}

fn prefix(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Stateful => "lks_",
        SessionKind::Stateless => "lkr_",
    }
}

/// Encodes `prefix ‖ base64url(id ‖ secret)`.
fn encode_parts(prefix: &str, id: Uuid, secret: &Secret) -> String {
    let mut payload = [0u8; PAYLOAD_LEN];
    payload[..16].copy_from_slice(id.as_bytes());
    payload[16..].copy_from_slice(secret.expose());
    let mut out = String::with_capacity(TOKEN_LEN);
    out.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(payload, &mut out);
    out
}

/// Strictly splits a wire token into its prefix, id and secret.
fn parse_parts(input: &str) -> Result<(&str, Uuid, Secret), ParseError> {
    if input.len() != TOKEN_LEN || !input.is_ascii() {
        return Err(ParseError::Malformed);
    }
    let (head, body) = input.split_at(PREFIX_LEN);
    if !head.ends_with('_') {
        return Err(ParseError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| ParseError::Malformed)?;
    let payload: [u8; PAYLOAD_LEN] = bytes.try_into().map_err(|_| ParseError::Malformed)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&payload[..16]);
    let mut secret = [0u8; SECRET_LEN];
    secret.copy_from_slice(&payload[16..]);
    Ok((head, Uuid::from_bytes(id), Secret(secret)))
}

impl SessionToken {
    /// Builds a token from its parts.
    pub fn new(kind: SessionKind, session_id: Uuid, secret: Secret) -> Self {
        Self {
            kind,
            session_id,
            secret,
        }
    }

    /// The wire form, `lks_…` or `lkr_…`. This string is a credential: never log it.
    pub fn encode(&self) -> String {
        encode_parts(prefix(self.kind), self.session_id, &self.secret)
    }

    /// Strictly parses a wire token: exact length, known prefix, base64url alphabet,
    /// canonical encoding.
    ///
    /// # Errors
    /// [`ParseError::Malformed`] for anything else.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let (head, session_id, secret) = parse_parts(input)?;
        let kind = match head {
            "lks_" => SessionKind::Stateful,
            "lkr_" => SessionKind::Stateless,
            _ => return Err(ParseError::Malformed),
        };
        Ok(Self {
            kind,
            session_id,
            secret,
        })
    }
}

/// An API key for machine clients: `lka_<base64url(key id ‖ secret)>`. Only SHA-256 of the
/// secret is stored; the key is shown once at creation. Its `Debug` redacts the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyToken {
    /// The `api_keys` row id.
    pub key_id: Uuid,
    /// The secret whose hash must match the row.
    pub secret: Secret,
}

impl ApiKeyToken {
    /// The wire form `lka_…`. A credential: never log it.
    pub fn encode(&self) -> String {
        encode_parts("lka_", self.key_id, &self.secret)
    }

    /// Strictly parses an `lka_…` key.
    ///
    /// # Errors
    /// [`ParseError::Malformed`] for anything else.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        match parse_parts(input)? {
            ("lka_", key_id, secret) => Ok(Self { key_id, secret }),
            _ => Err(ParseError::Malformed),
        }
    }
}

/// Derives the one-time key that seals a successor under the secret it replaces.
fn sealing_cipher(previous: &Secret, session_id: Uuid, version: i64) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(session_id.as_bytes()), previous.expose());
    let mut info = Vec::with_capacity(32);
    info.extend_from_slice(b"latchkey successor v1");
    info.extend_from_slice(&version.to_be_bytes());
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(&info, &mut key).is_err() {
        unreachable!("HKDF output length is fixed and valid");
    }
    ChaCha20Poly1305::new(Key::from_slice(&key))
}

/// Seals `successor` under a key derived from `previous` (HKDF-SHA256, bound to the session
/// id and the row version the successor belongs to). Each previous secret seals exactly one
/// successor (the rotation is a compare-and-swap), so the key is used once and a fixed nonce
/// is safe. Nothing at rest can unseal it: the database holds only `SHA-256(previous)`.
pub fn seal_successor(
    previous: &Secret,
    session_id: Uuid,
    version: i64,
    successor: &Secret,
) -> Vec<u8> {
    let cipher = sealing_cipher(previous, session_id, version);
    match cipher.encrypt(Nonce::from_slice(&[0u8; 12]), successor.expose().as_slice()) {
        Ok(sealed) => sealed,
        Err(_) => unreachable!("ChaCha20-Poly1305 encryption of 32 bytes cannot fail"),
    }
}

/// Opens a sealed successor with the previous secret a client presented. `None` when the
/// secret, id or version do not match what sealed it.
pub fn unseal_successor(
    previous: &Secret,
    session_id: Uuid,
    version: i64,
    sealed: &[u8],
) -> Option<Secret> {
    let cipher = sealing_cipher(previous, session_id, version);
    let plain = cipher.decrypt(Nonce::from_slice(&[0u8; 12]), sealed).ok()?;
    let bytes: [u8; SECRET_LEN] = plain.try_into().ok()?;
    Some(Secret(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::OsSecretSource;

    fn token(kind: SessionKind) -> SessionToken {
        SessionToken::new(
            kind,
            Uuid::new_v4(),
            Secret::generate(&OsSecretSource).expect("rng"),
        )
    }

    #[test]
    fn a_token_round_trips_through_its_wire_form() {
        for kind in [SessionKind::Stateful, SessionKind::Stateless] {
            let t = token(kind);
            let wire = t.encode();
            assert_eq!(wire.len(), TOKEN_LEN);
            assert_eq!(SessionToken::parse(&wire).expect("parses"), t);
        }
    }

    #[test]
    fn parsing_rejects_every_malformed_shape() {
        let good = token(SessionKind::Stateless).encode();
        let cases = [
            String::new(),
            "lkr_".to_string(),
            good[..TOKEN_LEN - 1].to_string(),
            format!("{good}A"),
            format!("lkx_{}", &good[4..]),
            format!("LKR_{}", &good[4..]),
            format!("lkr_{}+", &good[4..TOKEN_LEN - 1]),
            format!("lkr_{}=", &good[4..TOKEN_LEN - 1]),
            format!("lkr_{}é", &good[4..TOKEN_LEN - 2]),
        ];
        for case in cases {
            assert_eq!(
                SessionToken::parse(&case),
                Err(ParseError::Malformed),
                "{case:?}"
            );
        }
    }

    #[test]
    fn an_api_key_round_trips_and_is_never_a_session_token() {
        let key = ApiKeyToken {
            key_id: Uuid::new_v4(),
            secret: Secret::generate(&OsSecretSource).expect("rng"),
        };
        let wire = key.encode();
        assert!(wire.starts_with("lka_"));
        assert_eq!(ApiKeyToken::parse(&wire).expect("parses"), key);
        assert_eq!(SessionToken::parse(&wire), Err(ParseError::Malformed));
        let session = token(SessionKind::Stateless).encode();
        assert_eq!(ApiKeyToken::parse(&session), Err(ParseError::Malformed));
    }

    #[test]
    fn a_secret_matches_only_its_own_hash() {
        let a = Secret::generate(&OsSecretSource).expect("rng");
        let b = Secret::generate(&OsSecretSource).expect("rng");
        assert!(a.matches(&a.hash()));
        assert!(!a.matches(&b.hash()));
        assert!(!a.matches(&a.hash()[..31]));
    }

    #[test]
    fn a_sealed_successor_opens_only_with_the_previous_secret_id_and_version() {
        let prev = Secret::generate(&OsSecretSource).expect("rng");
        let next = Secret::generate(&OsSecretSource).expect("rng");
        let other = Secret::generate(&OsSecretSource).expect("rng");
        let id = Uuid::new_v4();
        let sealed = seal_successor(&prev, id, 2, &next);
        assert!(!sealed.windows(SECRET_LEN).any(|w| w == next.expose()));
        assert_eq!(unseal_successor(&prev, id, 2, &sealed), Some(next));
        assert_eq!(unseal_successor(&other, id, 2, &sealed), None);
        assert_eq!(unseal_successor(&prev, Uuid::new_v4(), 2, &sealed), None);
        assert_eq!(unseal_successor(&prev, id, 3, &sealed), None);
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let t = token(SessionKind::Stateful);
        let shown = format!("{t:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&t.encode()[4..20]));
    }

    /// Properties over generated inputs (proptest, 256 cases each).
    mod props {
        use super::*;
        use proptest::prelude::*;

        fn kind() -> impl Strategy<Value = SessionKind> {
            prop_oneof![Just(SessionKind::Stateful), Just(SessionKind::Stateless)]
        }

        fn session_token() -> impl Strategy<Value = SessionToken> {
            (kind(), any::<[u8; 16]>(), any::<[u8; SECRET_LEN]>()).prop_map(|(k, id, s)| {
                SessionToken::new(k, Uuid::from_bytes(id), Secret::from_bytes(s))
            })
        }

        proptest! {
            #[test]
            fn any_string_parses_only_in_its_canonical_form(input in any::<String>()) {
                if let Ok(t) = SessionToken::parse(&input) {
                    prop_assert_eq!(t.encode(), input.clone());
                }
                if let Ok(k) = ApiKeyToken::parse(&input) {
                    prop_assert_eq!(k.encode(), input);
                }
            }

            #[test]
            fn token_shaped_strings_parse_only_in_their_canonical_form(
                input in "lk[srax]_[A-Za-z0-9_=+/-]{62,66}",
            ) {
                if let Ok(t) = SessionToken::parse(&input) {
                    prop_assert_eq!(t.encode(), input.clone());
                }
                if let Ok(k) = ApiKeyToken::parse(&input) {
                    prop_assert_eq!(k.encode(), input);
                }
            }

            #[test]
            fn every_token_round_trips(t in session_token()) {
                let wire = t.encode();
                prop_assert_eq!(wire.len(), TOKEN_LEN);
                prop_assert_eq!(SessionToken::parse(&wire), Ok(t));
                prop_assert_eq!(ApiKeyToken::parse(&wire), Err(ParseError::Malformed));
            }

            #[test]
            fn every_api_key_round_trips_and_is_no_session_token(
                id in any::<[u8; 16]>(),
                secret in any::<[u8; SECRET_LEN]>(),
            ) {
                let key = ApiKeyToken { key_id: Uuid::from_bytes(id), secret: Secret::from_bytes(secret) };
                let wire = key.encode();
                prop_assert_eq!(ApiKeyToken::parse(&wire), Ok(key));
                prop_assert_eq!(SessionToken::parse(&wire), Err(ParseError::Malformed));
            }

            #[test]
            fn an_edited_token_never_parses_to_the_same_token(
                t in session_token(),
                at in 0..TOKEN_LEN,
                with in any::<char>(),
            ) {
                let wire = t.encode();
                let mut edited: String = wire.chars().take(at).collect();
                edited.push(with);
                edited.extend(wire.chars().skip(at + 1));
                prop_assume!(edited != wire);
                if let Ok(other) = SessionToken::parse(&edited) {
                    prop_assert_ne!(other, t);
                }
            }
        }
    }
}
