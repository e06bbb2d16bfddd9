//! Where secrets come from: the operating system's CSPRNG, behind a trait so that a
//! failure of the generator can be injected and shown to answer 503 instead of panicking.

use std::fmt;

use rand::rngs::OsRng;
use rand::TryRngCore;

/// The random generator failed; nothing was issued.
#[derive(Debug, thiserror::Error)]
#[error("the random number generator failed: {0}")]
pub struct RngError(pub String);

/// A source of cryptographically secure random bytes.
pub trait SecretSource: Send + Sync + 'static {
    /// Fills `buf` entirely with random bytes.
    ///
    /// # Errors
    /// [`RngError`] when the generator cannot deliver; callers answer 503.
    fn fill(&self, buf: &mut [u8]) -> Result<(), RngError>;
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Clone, Copy, Default)]
pub struct OsSecretSource;

impl SecretSource for OsSecretSource {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RngError> {
        OsRng
            .try_fill_bytes(buf)
            .map_err(|e| RngError(e.to_string()))
    }
}

impl fmt::Debug for OsSecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OsSecretSource")
    }
}

/// Fills a fresh array from `source`.
///
/// # Errors
/// [`RngError`] when the generator fails.
pub fn random_array<const N: usize>(source: &dyn SecretSource) -> Result<[u8; N], RngError> {
    let mut out = [0u8; N];
    source.fill(&mut out)?;
    Ok(out)
}

/// A random (version 4) UUID drawn from `source`, for server-issued ids.
///
/// # Errors
/// [`RngError`] when the generator fails.
pub fn random_uuid(source: &dyn SecretSource) -> Result<uuid::Uuid, RngError> {
    random_array(source).map(|b| uuid::Builder::from_random_bytes(b).into_uuid())
}
