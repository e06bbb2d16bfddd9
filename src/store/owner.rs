//! The typed domain values the database stores as text or enums: who owns a session
//! ([`OwnerKey`]), what happened to it ([`EventKind`]) and why it was revoked
//! ([`RevokeReason`]). This is the only place their spellings appear in Rust.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};
use uuid::Uuid;

/// `Display` for a type with an `as_str(self) -> &'static str`: the same text, padded as
/// `str` is.
macro_rules! display_as_str {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}
pub(super) use display_as_str;

/// Who a session belongs to: the `owner_key` column, `user:<uuid>`, `apikey:<uuid>` or
/// `anon:<uuid>` (lowercase, hyphenated: the `sessions_owner_key_format` constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKey {
    /// A user account: `user:<uuid>`.
    User(Uuid),
    /// An API key: `apikey:<uuid>`.
    ApiKey(Uuid),
    /// A session of its own, before any login: `anon:<uuid>`.
    Anonymous(Uuid),
}

/// A string that is not an owner key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an owner key is user:<uuid>, apikey:<uuid> or anon:<uuid> (lowercase, hyphenated)")]
pub struct OwnerKeyError;

impl OwnerKey {
    /// The prefix of a user owner key, for SQL that matches on it.
    pub const USER_PREFIX: &'static str = "user:";
    /// The prefix of an API key owner key.
    pub const APIKEY_PREFIX: &'static str = "apikey:";
    /// The prefix of an anonymous owner key.
    pub const ANON_PREFIX: &'static str = "anon:";

    /// The owner key as stored in `sessions.owner_key`: the [`Display`](fmt::Display) form.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// The id after the prefix.
    pub fn id(&self) -> Uuid {
        match *self {
            Self::User(id) | Self::ApiKey(id) | Self::Anonymous(id) => id,
        }
    }

    /// The user id, when the owner is a user.
    pub fn user_id(&self) -> Option<Uuid> {
        match *self {
            Self::User(id) => Some(id),
            _ => None,
        }
    }

    /// The key id, when the owner is an API key.
    pub fn api_key_id(&self) -> Option<Uuid> {
        match *self {
            Self::ApiKey(id) => Some(id),
            _ => None,
        }
    }

    /// Whether the owner is an anonymous session.
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Self::Anonymous(_))
    }

    fn prefix(&self) -> &'static str {
        match self {
            Self::User(_) => Self::USER_PREFIX,
            Self::ApiKey(_) => Self::APIKEY_PREFIX,
            Self::Anonymous(_) => Self::ANON_PREFIX,
        }
    }
}

impl fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so width and alignment (`{:<44}` in the CLI's tables) apply.
        f.pad(&[self.prefix(), &self.id().hyphenated().to_string()].concat())
    }
}

impl FromStr for OwnerKey {
    type Err = OwnerKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (make, id): (fn(Uuid) -> Self, &str) =
            if let Some(id) = s.strip_prefix(Self::USER_PREFIX) {
                (Self::User, id)
            } else if let Some(id) = s.strip_prefix(Self::APIKEY_PREFIX) {
                (Self::ApiKey, id)
            } else if let Some(id) = s.strip_prefix(Self::ANON_PREFIX) {
                (Self::Anonymous, id)
            } else {
                return Err(OwnerKeyError);
            };
        // `Uuid::try_parse` also takes braces, URNs, uppercase and the simple form: keep only
        // what the CHECK constraint accepts.
        let uuid = Uuid::try_parse(id).map_err(|_| OwnerKeyError)?;
        let owner = make(uuid);
        if owner.id().hyphenated().to_string() == id {
            Ok(owner)
        } else {
            Err(OwnerKeyError)
        }
    }
}

impl Serialize for OwnerKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OwnerKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A type stored as its string in a `text` column: encoded with `Display`, decoded with
/// `FromStr` (so a malformed value in the table is a decode error, never a wrong value).
macro_rules! text_column {
    ($t:ty) => {
        impl Type<Postgres> for $t {
            fn type_info() -> PgTypeInfo {
                <String as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <String as Type<Postgres>>::compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $t {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <String as Encode<Postgres>>::encode(self.to_string(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $t {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
            }
        }
    };
}

text_column!(OwnerKey);
text_column!(RevokeReason);

/// A Rust enum stored as a Postgres enum of the schema `latchkey`, label by label (its
/// `as_str`). The type is named with its schema, so it is found from any `search_path`; a
/// column of it is accepted under either name, qualified (how a connection whose
/// `search_path` leaves the schema out sees it) or not (a connection whose `search_path`
/// includes it, such as a DBA's role).
macro_rules! enum_column {
    ($t:ty, $name:literal, [$($variant:expr),+ $(,)?]) => {
        impl Type<Postgres> for $t {
            fn type_info() -> PgTypeInfo {
                PgTypeInfo::with_name(concat!("latchkey.", $name))
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                let name = sqlx::TypeInfo::name(ty);
                name == concat!("latchkey.", $name) || name == $name
            }
        }

        impl Encode<'_, Postgres> for $t {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $t {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let label = <&str as Decode<Postgres>>::decode(value)?;
                [$($variant),+]
                    .into_iter()
                    .find(|v: &$t| v.as_str() == label)
                    .ok_or_else(|| format!("unknown {} label {label:?}", $name).into())
            }
        }
    };
}

enum_column!(
    crate::SessionKind,
    "session_kind",
    [crate::SessionKind::Stateful, crate::SessionKind::Stateless]
);
enum_column!(
    EventKind,
    "session_event_kind",
    [
        EventKind::Created,
        EventKind::Refreshed,
        EventKind::GraceUsed,
        EventKind::ReuseDetected,
        EventKind::ModeMismatch,
        EventKind::Revoked,
        EventKind::Expired,
    ]
);

/// What happened to a session: the Postgres enum `session_event_kind` of
/// `session_events.event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The session was created.
    Created,
    /// Its token was rotated.
    Refreshed,
    /// The previous token answered inside the grace window.
    GraceUsed,
    /// A rotated token was presented after the grace window.
    ReuseDetected,
    /// A token was used in the other mode.
    ModeMismatch,
    /// The session was revoked.
    Revoked,
    /// The session was purged after expiry.
    Expired,
}

impl EventKind {
    /// The enum label in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Refreshed => "refreshed",
            Self::GraceUsed => "grace_used",
            Self::ReuseDetected => "reuse_detected",
            Self::ModeMismatch => "mode_mismatch",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

display_as_str!(EventKind);

/// Why a session was revoked (the `revoked_reason` column, text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The session's own logout.
    Logout,
    /// The owner logged out everywhere.
    LogoutAll,
    /// A rotated token was presented after its grace window.
    ReuseDetected,
    /// An operator (CLI or SQL).
    Admin,
    /// The user account was disabled.
    UserDisabled,
    /// The API key that created it was revoked.
    ApiKeyRevoked,
    /// An anonymous session was replaced by a logged-in one.
    Upgraded,
    /// Deleted through the tower-sessions store.
    Deleted,
}

/// A string that is not a revoke reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown revoke reason")]
pub struct RevokeReasonError;

impl RevokeReason {
    const ALL: [Self; 8] = [
        Self::Logout,
        Self::LogoutAll,
        Self::ReuseDetected,
        Self::Admin,
        Self::UserDisabled,
        Self::ApiKeyRevoked,
        Self::Upgraded,
        Self::Deleted,
    ];

    /// The value stored in `revoked_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::ReuseDetected => "reuse_detected",
            Self::Admin => "admin",
            Self::UserDisabled => "user_disabled",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::Upgraded => "upgraded",
            Self::Deleted => "deleted",
        }
    }
}

display_as_str!(RevokeReason);

impl FromStr for RevokeReason {
    type Err = RevokeReasonError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(RevokeReasonError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_key_round_trips_through_its_string() {
        let id = Uuid::new_v4();
        for owner in [
            OwnerKey::User(id),
            OwnerKey::ApiKey(id),
            OwnerKey::Anonymous(id),
        ] {
            assert_eq!(owner.to_string().parse::<OwnerKey>(), Ok(owner));
            let json = serde_json::to_value(owner).expect("serialize");
            assert_eq!(json, serde_json::Value::String(owner.to_string()));
            assert_eq!(
                serde_json::from_value::<OwnerKey>(json).expect("deserialize"),
                owner
            );
        }
        assert_eq!(
            OwnerKey::User(id).to_string(),
            format!("{}{id}", OwnerKey::USER_PREFIX)
        );
    }

    #[test]
    fn an_owner_key_is_refused_unless_the_check_constraint_would_accept_it() {
        let id = Uuid::new_v4();
        for bad in [
            String::new(),
            id.to_string(),
            format!("{}{}", OwnerKey::USER_PREFIX, id.to_string().to_uppercase()),
            format!("{}{}", OwnerKey::USER_PREFIX, id.simple()),
            format!("{}{{{id}}}", OwnerKey::APIKEY_PREFIX),
            format!("{}{}", OwnerKey::ANON_PREFIX, id.urn()),
            format!("{}{id} ", OwnerKey::USER_PREFIX),
            format!("group:{id}"),
        ] {
            assert_eq!(bad.parse::<OwnerKey>(), Err(OwnerKeyError), "{bad:?}");
        }
    }

    #[test]
    fn a_revoke_reason_round_trips_through_its_string() {
        for reason in RevokeReason::ALL {
            assert_eq!(reason.to_string().parse::<RevokeReason>(), Ok(reason));
        }
        assert_eq!("nope".parse::<RevokeReason>(), Err(RevokeReasonError));
    }
}
