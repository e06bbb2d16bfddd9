//! Refresh, following the outcome table of the design, and what it shares with the session
//! checks: which secret a token presents ([`Presented`]), the common checks on the row it
//! names ([`Auth::load_checked`], [`require_live`]) and the revocation on reuse.

use std::net::IpAddr;

use serde_json::json;

use super::{Auth, AuthError, Issued};
use crate::store::{EventKind, RotatePolicy, Rotation, SessionRecord, SessionState};
use crate::token::{seal_successor, unseal_successor, Secret, SessionToken};
use crate::SessionKind;

/// How a presented secret relates to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presented {
    Current,
    Previous,
}

fn classify(rec: &SessionRecord, secret: &Secret) -> Option<Presented> {
    if secret.matches(&rec.token_hash) {
        Some(Presented::Current)
    } else if rec
        .prev_token_hash
        .as_deref()
        .is_some_and(|h| secret.matches(h))
    {
        Some(Presented::Previous)
    } else {
        None
    }
}

/// Refuses a session that is not [`SessionState::Active`]: revoked answers
/// [`AuthError::SessionRevoked`], expired [`AuthError::TokenExpired`] (the one rule of
/// [`SessionRecord::state`], revoked before expired).
pub(super) fn require_live(rec: &SessionRecord) -> Result<(), AuthError> {
    match rec.state() {
        SessionState::Active => Ok(()),
        SessionState::Expired => Err(AuthError::TokenExpired),
        SessionState::Revoked => Err(AuthError::SessionRevoked),
    }
}

/// How many times a refresh re-reads after losing a compare-and-swap before giving up (503).
const MAX_CAS_ATTEMPTS: usize = 8;

impl Auth {
    /// Reads the row a token names and applies the checks every outcome shares: known secret,
    /// mode, revocation, expiry. A mode mismatch is recorded but changes nothing.
    pub(super) async fn load_checked(
        &self,
        token: &SessionToken,
        expected: SessionKind,
    ) -> Result<(SessionRecord, Presented), AuthError> {
        let rec = self
            .store
            .find_session(token.session_id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let presented = classify(&rec, &token.secret).ok_or(AuthError::InvalidToken)?;
        if token.kind != expected || rec.kind != expected {
            self.store
                .record_event(
                    rec.id,
                    &rec.owner_key,
                    EventKind::ModeMismatch,
                    json!({ "session_kind": rec.kind, "presented_as": expected }),
                )
                .await?;
            return Err(AuthError::ModeMismatch);
        }
        require_live(&rec)?;
        Ok((rec, presented))
    }

    /// Revokes a session whose rotated token came back after the grace window; the
    /// `reuse_detected` event records the chain and `client`, the presenter's address.
    pub(super) async fn reuse_detected(
        &self,
        rec: &SessionRecord,
        client: Option<IpAddr>,
    ) -> AuthError {
        tracing::warn!(session_id = %rec.id, owner = %rec.owner_key, "rotated token reused after grace: revoking session");
        match self.store.revoke_reused(rec.id, client).await {
            Ok(_) => AuthError::TokenReused,
            Err(e) => e.into(),
        }
    }

    /// Refreshes a session token of mode `expected`, following the outcome table of the
    /// design: rotate with a compare-and-swap when the current secret is presented; return the
    /// same successor for the previous secret inside the grace window; revoke on reuse after
    /// it; refuse the other mode without touching the session.
    ///
    /// # Errors
    /// Every [`AuthError`] token variant, and [`AuthError::Unavailable`] on RNG or database
    /// failure (nothing is committed then).
    pub async fn refresh(
        &self,
        presented: &str,
        expected: SessionKind,
    ) -> Result<Issued, AuthError> {
        self.refresh_from(presented, expected, None).await
    }

    /// [`Auth::refresh`] for a client at `client`, recorded in the `reuse_detected` event
    /// when the token turns out to be reused.
    ///
    /// # Errors
    /// As [`Auth::refresh`].
    pub async fn refresh_from(
        &self,
        presented: &str,
        expected: SessionKind,
        client: Option<IpAddr>,
    ) -> Result<Issued, AuthError> {
        match self.refresh_inner(presented, expected, client).await {
            Ok((issued, outcome)) => {
                self.metrics.refresh(outcome);
                Ok(issued)
            }
            Err(e) => {
                self.metrics.refresh(e.code());
                Err(e)
            }
        }
    }

    async fn refresh_inner(
        &self,
        presented: &str,
        expected: SessionKind,
        client: Option<IpAddr>,
    ) -> Result<(Issued, &'static str), AuthError> {
        let token = SessionToken::parse(presented).map_err(|_| AuthError::InvalidToken)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (rec, class) = self.load_checked(&token, expected).await?;
            match class {
                Presented::Current => {
                    let next = Secret::generate(self.rng.as_ref())?;
                    let sealed = seal_successor(&token.secret, rec.id, rec.version + 1, &next);
                    let rotated = self
                        .store
                        .rotate(
                            rec.id,
                            rec.version,
                            &next.hash(),
                            &sealed,
                            &RotatePolicy {
                                grace_secs: self.config.grace_secs as f64,
                                idle_ttl_secs: self.config.idle_ttl_secs as f64,
                                slide_min_secs: self.config.expiry_step_secs() as f64,
                                record_event: self.config.refresh_events,
                            },
                        )
                        .await?;
                    match rotated {
                        Some(row) => {
                            return Ok((self.issued(rec.id, rec.kind, next, &row)?, "rotated"))
                        }
                        None => continue, // lost the race: re-read and classify again
                    }
                }
                Presented::Previous if rec.in_grace => {
                    return Ok((self.grace_successor(&token, &rec).await?, "grace"));
                }
                Presented::Previous => return Err(self.reuse_detected(&rec, client).await),
            }
        }
        Err(AuthError::Unavailable(
            "refresh lost the compare-and-swap too many times".into(),
        ))
    }

    /// The previous secret inside the grace window: the successor it sealed, unchanged (the
    /// same answer the winning refresh got), and a `grace_used` event.
    async fn grace_successor(
        &self,
        token: &SessionToken,
        rec: &SessionRecord,
    ) -> Result<Issued, AuthError> {
        let successor = rec
            .sealed_successor
            .as_deref()
            .and_then(|s| unseal_successor(&token.secret, rec.id, rec.version, s))
            .filter(|s| s.matches(&rec.token_hash));
        let Some(successor) = successor else {
            return Err(AuthError::Internal(
                "sealed successor does not open with the previous secret".into(),
            ));
        };
        self.store
            .record_event(
                rec.id,
                &rec.owner_key,
                EventKind::GraceUsed,
                json!({ "version": rec.version }),
            )
            .await?;
        let row = Rotation {
            owner_key: rec.owner_key,
            version: rec.version,
            expires_at: rec.expires_at,
            absolute_expires_at: rec.absolute_expires_at,
        };
        self.issued(rec.id, rec.kind, successor, &row)
    }
}
