//! [`LoginSessionStore`]: the data of a login (`sessions.data` of a row that `/auth/login` or
//! `/auth/anonymous` created) read and written through a [`tower_sessions::Session`].
//!
//! An app's handler behind `latchkey::http::require_session` gets a `tower_sessions::Session`
//! on the very session the request authenticated with: the same row, reached through the same
//! cookie (or bearer access token), so the app's data lives beside the login. tower-sessions'
//! own `SessionManagerLayer` cannot do this: it reads its cookie as a tower-sessions id, while
//! a login's cookie is a rotating `lks_` token checked by latchkey (secret, grace window,
//! reuse detection, `Origin`). So the layer, once it has checked the credential, hands the
//! handler a `Session` whose store is bound to that one row:
//!
//! | tower-sessions call | on the login's row |
//! |---|---|
//! | `load` | its `data`, if the session is live (not revoked, not expired); else nothing |
//! | `save` | writes the keys the request changed or removed, if the session is still live: never resurrects, never changes the owner, never the expiry |
//! | `delete` (`flush`, `cycle_id`) | ends the login as `/auth/logout` does: revoked (reason `logout`), its data cleared |
//! | `create` | refused: only a login creates a login |
//!
//! * **No id the client chooses.** The store is bound to the row the credential proved; the
//!   session id it shows ([`LoginSessionStore::tower_id`]) is the row id, and any other id
//!   loads nothing and saves nothing.
//! * **The owner is the login's.** `latchkey.owner` ([`OWNER_FIELD`]) reads as the row's
//!   owner (a user or API key; absent for an anonymous session), so
//!   [`bound_owner`](super::bound_owner) answers as with [`PgSessionStore`](super::PgSessionStore).
//!   It is never stored in `data`: removing it changes nothing, and setting it to anyone else
//!   is refused (the save fails with an encode error).
//! * **Concurrent requests of one login keep each other's keys.** A save writes only the keys
//!   this request set, changed or removed (`(data - removed) || changed`, one `UPDATE` of the
//!   live row), not the whole map it loaded: two requests that change different keys both
//!   keep their change; on one key the last save wins. A `clear()` without a load replaces
//!   the whole map.
//! * **Logout removes the data.** `/auth/logout` and `delete` clear `data` in the statement
//!   that revokes; every other revocation (logout-all, reuse, an operator, a disable) leaves it
//!   until the purge, and `load` returns nothing for a revoked session either way.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::types::Json;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{Expiry, Session};
use uuid::Uuid;

use super::tower::{Data, OWNER_FIELD};
use super::{OwnerKey, RevokeReason, Store, StoreResult};

/// A [`SessionStore`] bound to one login session's row; see the [module documentation](self).
/// Build its [`Session`] with [`LoginSessionStore::session`].
#[derive(Debug)]
pub struct LoginSessionStore {
    store: Store,
    row: Uuid,
    owner: OwnerKey,
    /// The data as last loaded or saved (owner field excluded): what a save compares against.
    /// `None` before the first load.
    seen: Mutex<Option<Data>>,
}

/// What a save writes: every key when `replace`, else the changed keys over the stored map
/// minus the removed ones.
struct Patch {
    replace: bool,
    set: Map<String, Value>,
    remove: Vec<String>,
}

impl LoginSessionStore {
    /// A `tower_sessions::Session` on the login session `session_id` of `owner`, whose idle
    /// expiry is `expires_at` (as the credential check read it). Nothing is read until the
    /// handler first uses the session.
    pub fn session(
        store: Store,
        session_id: Uuid,
        owner: OwnerKey,
        expires_at: OffsetDateTime,
    ) -> Session {
        let bound = Self {
            store,
            row: session_id,
            owner,
            seen: Mutex::new(None),
        };
        Session::new(
            Some(Self::tower_id(session_id)),
            Arc::new(bound),
            Some(Expiry::AtDateTime(expires_at)),
        )
    }

    /// The tower-sessions id under which a login session shows: its row id (the `session_id`
    /// of `/auth/session`), not a secret.
    pub fn tower_id(session_id: Uuid) -> Id {
        Id(i128::from_le_bytes(*session_id.as_bytes()))
    }

    fn is_bound(&self, id: &Id) -> bool {
        *id == Self::tower_id(self.row)
    }

    /// The owner as `latchkey.owner` shows it, when the owner is one that can be bound.
    fn owner_value(&self) -> Option<Value> {
        (!self.owner.is_anonymous()).then(|| Value::String(self.owner.key()))
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<Data>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The write that turns what was seen into `data`, or `None` when nothing changed.
    fn patch(&self, data: &Data) -> session_store::Result<Option<Patch>> {
        match data.get(OWNER_FIELD) {
            Some(value) if Some(value) != self.owner_value().as_ref() => {
                return Err(session_store::Error::Encode(format!(
                    "{OWNER_FIELD} of a login session is its owner, set by the login; \
                     it cannot be changed through the session data"
                )));
            }
            _ => {}
        }
        let fields = data.iter().filter(|(k, _)| k.as_str() != OWNER_FIELD);
        let seen = self.seen();
        let Some(seen) = seen.as_ref() else {
            return Ok(Some(Patch {
                replace: true,
                set: fields.map(|(k, v)| (k.clone(), v.clone())).collect(),
                remove: Vec::new(),
            }));
        };
        let set: Map<String, Value> = fields
            .filter(|(k, v)| seen.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let remove: Vec<String> = seen
            .keys()
            .filter(|k| !data.contains_key(*k))
            .cloned()
            .collect();
        Ok((!set.is_empty() || !remove.is_empty()).then_some(Patch {
            replace: false,
            set,
            remove,
        }))
    }
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait]
impl SessionStore for LoginSessionStore {
    /// Refused: a login session is created by a login, and a new id is a new login.
    async fn create(&self, _record: &mut Record) -> session_store::Result<()> {
        Err(backend(
            "a login session is created only by a login; after flush() or cycle_id() \
             the login has ended",
        ))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        if !self.is_bound(&record.id) {
            return Err(backend("not the session of this request's login"));
        }
        let Some(patch) = self.patch(&record.data)? else {
            return Ok(());
        };
        self.store
            .update_login_data(self.row, &self.owner, &patch)
            .await
            .map_err(backend)?;
        let mut data = record.data.clone();
        data.remove(OWNER_FIELD);
        *self.seen() = Some(data);
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        if !self.is_bound(session_id) {
            return Ok(None);
        }
        let Some((mut data, expiry_date)) = self
            .store
            .login_data(self.row, &self.owner)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        data.remove(OWNER_FIELD);
        *self.seen() = Some(data.clone());
        if let Some(owner) = self.owner_value() {
            data.insert(OWNER_FIELD.to_owned(), owner);
        }
        Ok(Some(Record {
            id: *session_id,
            data,
            expiry_date,
        }))
    }

    /// Ends the login as `/auth/logout` does (tower-sessions calls this for `flush` and for
    /// `cycle_id` alike, and cannot tell them apart).
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        if !self.is_bound(session_id) {
            return Ok(());
        }
        self.store
            .end_session(self.row, &self.owner, RevokeReason::Logout)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

impl Store {
    /// The data and idle expiry of the live session `id` of `owner`; `None` when it is
    /// revoked, expired, unknown or someone else's.
    ///
    /// # Errors
    /// Database failures.
    pub async fn login_data(
        &self,
        id: Uuid,
        owner: &OwnerKey,
    ) -> StoreResult<Option<(Data, OffsetDateTime)>> {
        let row = sqlx::query!(
            r#"
            SELECT data AS "data: Json<Data>", expires_at
            FROM latchkey.sessions
            WHERE id = $1 AND owner_key = $2 AND revoked_at IS NULL AND expires_at > now()
            "#,
            id,
            owner as _,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.data.0, r.expires_at)))
    }

    /// Applies `patch` to the data of the live session `id` of `owner`, in one `UPDATE` that
    /// touches no other column (no version bump, no event; HOT when the page has room).
    /// Returns whether the session was live; a revoked or expired one stays as it is.
    async fn update_login_data(
        &self,
        id: Uuid,
        owner: &OwnerKey,
        patch: &Patch,
    ) -> StoreResult<bool> {
        let done = sqlx::query!(
            r#"
            UPDATE latchkey.sessions
            SET data = CASE WHEN $3 THEN $4::jsonb ELSE (data - $5::text[]) || $4::jsonb END
            WHERE id = $1 AND owner_key = $2 AND revoked_at IS NULL AND expires_at > now()
            "#,
            id,
            owner as _,
            patch.replace,
            Value::Object(patch.set.clone()),
            &patch.remove[..],
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes the live session `id` of `owner` for `reason` and clears its data in the same
    /// statement, recording the `revoked` event (`latchkey_revoke`). Returns whether this call
    /// revoked it.
    ///
    /// # Errors
    /// Database failures.
    pub async fn end_session(
        &self,
        id: Uuid,
        owner: &OwnerKey,
        reason: RevokeReason,
    ) -> StoreResult<bool> {
        let revoked = sqlx::query_scalar!(
            r#"
            SELECT r.id AS "id!"
            FROM latchkey.latchkey_revoke(ARRAY[$1::uuid], $3, true, ARRAY[$2::text]) AS r(id)
            "#,
            id,
            owner as _,
            reason as _,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(revoked.is_some())
    }
}
