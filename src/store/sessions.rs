//! Statements on the `sessions` table and its audit trail.

use crate::db::Pool;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{EventKind, OwnerKey};
use super::{Store, StoreError, StoreResult};
use crate::SessionKind;

/// What a new session row starts with.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Server-generated id.
    pub id: Uuid,
    /// Mode of the session.
    pub kind: SessionKind,
    /// Who owns it.
    pub owner_key: OwnerKey,
    /// SHA-256 of the first secret.
    pub token_hash: [u8; 32],
    /// Idle lifetime in seconds.
    pub idle_ttl_secs: f64,
    /// Absolute lifetime in seconds.
    pub absolute_ttl_secs: f64,
    /// Client User-Agent, truncated by the caller.
    pub user_agent: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// Initial session data.
    pub data: serde_json::Value,
    /// Extra non-secret context recorded on the `created` event.
    pub event_detail: serde_json::Value,
}

/// A session row as the protocol needs it, with time comparisons made on the database clock.
///
/// The `rename`s are the column names of [`FIND_SESSION_SQL`] (type overrides for `query_as!`),
/// under which the coalesced reads decode the same columns at run time.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    /// Primary key.
    pub id: Uuid,
    /// Mode: the authority on where its tokens may be used.
    #[sqlx(rename = "kind: SessionKind")]
    pub kind: SessionKind,
    /// Owner key.
    #[sqlx(rename = "owner_key: OwnerKey")]
    pub owner_key: OwnerKey,
    /// SHA-256 of the current secret.
    pub token_hash: Vec<u8>,
    /// SHA-256 of the previous secret.
    pub prev_token_hash: Option<Vec<u8>>,
    /// The current secret sealed under the previous one.
    pub sealed_successor: Option<Vec<u8>>,
    /// Rotation counter.
    pub version: i64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Idle expiry.
    pub expires_at: OffsetDateTime,
    /// Absolute expiry.
    pub absolute_expires_at: OffsetDateTime,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// Revocation reason.
    pub revoked_reason: Option<String>,
    /// `prev_valid_until > now()`.
    #[sqlx(rename = "in_grace!")]
    pub in_grace: bool,
    /// `expires_at <= now()`.
    #[sqlx(rename = "expired!")]
    pub expired: bool,
    /// The database clock when the row was read (`now()`), for [`SessionRecord::touch_due`].
    #[sqlx(rename = "read_at!")]
    pub read_at: OffsetDateTime,
    /// Last authenticated use (throttled).
    pub last_used_at: OffsetDateTime,
    /// User-Agent at login.
    pub user_agent: Option<String>,
    /// Client address at login.
    pub ip: Option<String>,
}

impl SessionRecord {
    /// Whether the last use is at least `interval_secs` old on the database clock: the use may
    /// be recorded, and the idle expiry slide ([`Store::touch`]; one write per interval at
    /// most).
    pub fn touch_due(&self, interval_secs: f64) -> bool {
        self.last_used_at <= self.read_at - time::Duration::seconds_f64(interval_secs)
    }

    /// The row as its owner sees it: no hash, no sealed data.
    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            session_id: self.id,
            kind: self.kind,
            owner_key: self.owner_key,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            absolute_expires_at: self.absolute_expires_at,
            revoked_at: self.revoked_at,
            revoked_reason: self.revoked_reason.clone(),
            state: self.state().as_str().to_owned(),
            user_agent: self.user_agent.clone(),
            ip: self.ip.clone(),
        }
    }
}

/// How [`Store::rotate`] treats the row beyond the swap itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotatePolicy {
    /// How long the previous secret stays valid (the grace window), in seconds.
    pub grace_secs: f64,
    /// Idle lifetime of the session in seconds: the idle expiry slides to `now + idle`.
    pub idle_ttl_secs: f64,
    /// The idle expiry slides only when that moves it by at least this many seconds (or onto
    /// the absolute expiry): the indexed `expires_at` then stays put on most rotations, which
    /// can be HOT updates. The service passes its expiry step
    /// ([`AuthConfig::expiry_step_secs`](crate::auth::AuthConfig::expiry_step_secs)).
    pub slide_min_secs: f64,
    /// Whether to append a `refreshed` event to the audit trail.
    pub record_event: bool,
}

/// The outcome of a successful compare-and-swap rotation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Rotation {
    /// Owner key.
    pub owner_key: OwnerKey,
    /// The new version (old + 1).
    pub version: i64,
    /// New idle expiry.
    pub expires_at: OffsetDateTime,
    /// Absolute expiry (unchanged).
    pub absolute_expires_at: OffsetDateTime,
}

/// A session as its owner or an operator sees it: no hash, no sealed data.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// Session id.
    pub session_id: Uuid,
    /// Mode.
    pub kind: SessionKind,
    /// Owner key.
    pub owner_key: OwnerKey,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last authenticated use (throttled).
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    /// Idle expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Absolute expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub absolute_expires_at: OffsetDateTime,
    /// Revocation time, if revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Revocation reason, if revoked.
    pub revoked_reason: Option<String>,
    /// `active`, `expired` or `revoked` (the [`SessionState`](super::SessionState) rule).
    pub state: String,
    /// User-Agent at login.
    pub user_agent: Option<String>,
    /// Client address at login.
    pub ip: Option<String>,
}

impl Store {
    /// Inserts a new session and its `created` event in one statement.
    ///
    /// A `user:<id>` owner must be an account that is not disabled, an `apikey:<id>` owner an
    /// unrevoked key of such an account: the statement takes a `FOR SHARE` lock on the user
    /// row (and the key row) and inserts nothing otherwise. A disable (which locks the user
    /// row exclusively, then revokes) thus either waits for this insert to commit and revokes
    /// the new session, or makes it insert nothing. `anon:` owners need no check.
    ///
    /// # Errors
    /// [`StoreError::OwnerInactive`] when the owner is a disabled or unknown user or a revoked
    /// or unknown key; [`StoreError::Conflict`] on an id collision (practically impossible
    /// with UUIDv4), otherwise database failures.
    pub async fn create_session(&self, new: &NewSession) -> StoreResult<Rotation> {
        let row = sqlx::query!(
            r#"
            WITH usr AS (
                SELECT u.id FROM latchkey.users AS u
                WHERE u.id = $11 AND NOT u.disabled
                FOR SHARE
            ), akey AS (
                SELECT k.id FROM latchkey.api_keys AS k
                JOIN latchkey.users AS u ON u.id = substr(k.owner_key, length($13) + 1)::uuid
                WHERE k.id = $12 AND k.revoked_at IS NULL AND NOT u.disabled
                FOR SHARE OF k, u
            ), ins AS (
                INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at,
                                      absolute_expires_at, user_agent, ip, data)
                SELECT $1, $2, $3, $4,
                       now() + make_interval(secs => least($5::float8, $6::float8)),
                       now() + make_interval(secs => $6),
                       $7, $8::text::inet, $9
                WHERE $14 OR EXISTS (SELECT 1 FROM usr)
                   OR EXISTS (SELECT 1 FROM akey)
                RETURNING id, owner_key, kind, version, expires_at, absolute_expires_at
            ), ev AS (
                INSERT INTO latchkey.session_events (session_id, owner_key, event, detail)
                SELECT id, owner_key, $15, jsonb_build_object('kind', kind) || $10::jsonb
                FROM ins
            )
            SELECT owner_key AS "owner_key: OwnerKey", version, expires_at, absolute_expires_at
            FROM ins
            "#,
            new.id,
            new.kind as SessionKind,
            &new.owner_key as _,
            &new.token_hash[..],
            new.idle_ttl_secs,
            new.absolute_ttl_secs,
            new.user_agent,
            new.ip,
            new.data,
            new.event_detail,
            new.owner_key.user_id(),
            new.owner_key.api_key_id(),
            OwnerKey::USER_PREFIX,
            new.owner_key.is_anonymous(),
            EventKind::Created as EventKind,
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::OwnerInactive)?;
        Ok(Rotation {
            owner_key: row.owner_key,
            version: row.version,
            expires_at: row.expires_at,
            absolute_expires_at: row.absolute_expires_at,
        })
    }

    /// Reads one session by id: through the coalesced reads when the store was built
    /// [`Store::with_coalescing`], else as a statement of its own.
    ///
    /// # Errors
    /// Database failures.
    pub async fn find_session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        Ok(match &self.reads {
            Some(reads) => reads.find(id).await?,
            None => find_one(&self.pool, id).await?,
        })
    }

    /// Rotates the token with a compare-and-swap on `version`: the current hash becomes the
    /// previous one (valid for [`RotatePolicy::grace_secs`]), `new_hash` becomes current, the
    /// sealed successor is stored, `version` rises by one and the idle expiry slides (capped
    /// by the absolute one) when that moves it by at least [`RotatePolicy::slide_min_secs`],
    /// so that most rotations change no indexed column and are HOT updates. Records a
    /// `refreshed` event in the same statement when [`RotatePolicy::record_event`].
    ///
    /// Returns `None` when the swap lost (another rotation won, or the session was revoked or
    /// expired meanwhile): the caller re-reads and classifies again.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rotate(
        &self,
        id: Uuid,
        expected_version: i64,
        new_hash: &[u8; 32],
        sealed_successor: &[u8],
        policy: &RotatePolicy,
    ) -> StoreResult<Option<Rotation>> {
        // Two statements rather than one with the event's insert behind a flag: an insert the
        // plan holds costs its setup on every execution even when it inserts nothing (about
        // 15% of a rotation's throughput, pgbench at 8 clients).
        let row = sqlx::query_as::<_, Rotation>(rotate_sql(policy.record_event))
            .bind(id)
            .bind(expected_version)
            .bind(&new_hash[..])
            .bind(sealed_successor)
            .bind(policy.grace_secs)
            .bind(policy.idle_ttl_secs)
            .bind(policy.slide_min_secs)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Records the use of a live session, at most once per `interval_secs`: `last_used_at`
    /// becomes now (an unindexed column: a HOT update), and the idle expiry slides to
    /// `now + idle_ttl_secs` (capped by the absolute expiry) only when that moves it by at
    /// least `step_secs` or onto the absolute expiry, the rule of [`Store::rotate`]; so most
    /// touches leave the indexed `expires_at` alone too. Returns the new
    /// `(last_used_at, expires_at)` when a write happened.
    ///
    /// # Errors
    /// Database failures.
    pub async fn touch(
        &self,
        id: Uuid,
        idle_ttl_secs: f64,
        interval_secs: f64,
        step_secs: f64,
    ) -> StoreResult<Option<(OffsetDateTime, OffsetDateTime)>> {
        let row = sqlx::query!(
            r#"
            UPDATE latchkey.sessions
            SET last_used_at = now(),
                expires_at = CASE
                    WHEN least(now() + make_interval(secs => $2), absolute_expires_at)
                         >= least(expires_at + make_interval(secs => $4), absolute_expires_at)
                    THEN least(now() + make_interval(secs => $2), absolute_expires_at)
                    ELSE expires_at END
            WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()
              AND last_used_at <= now() - make_interval(secs => $3)
            RETURNING last_used_at, expires_at
            "#,
            id,
            idle_ttl_secs,
            interval_secs,
            step_secs,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.last_used_at, r.expires_at)))
    }

    /// Appends an audit event that has no row change attached (`grace_used`,
    /// `mode_mismatch`).
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_event(
        &self,
        id: Uuid,
        owner_key: &OwnerKey,
        event: EventKind,
        detail: serde_json::Value,
    ) -> StoreResult<()> {
        sqlx::query!(
            r#"
            INSERT INTO latchkey.session_events (session_id, owner_key, event, detail)
            VALUES ($1, $2, $3, $4)
            "#,
            id,
            owner_key as _,
            event as EventKind,
            detail,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The data of a session (to carry it over on an anonymous upgrade).
    ///
    /// # Errors
    /// Database failures.
    pub async fn session_data(&self, id: Uuid) -> StoreResult<Option<serde_json::Value>> {
        Ok(
            sqlx::query_scalar!("SELECT data FROM latchkey.sessions WHERE id = $1", id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

/// The `find_session` statement for one id; its multi-row form is derived from its text
/// ([`FIND_SESSION_SQL`]) by the coalescing layer.
pub(super) async fn find_one(pool: &Pool, id: Uuid) -> Result<Option<SessionRecord>, sqlx::Error> {
    // The same text as `FIND_SESSION_SQL`: `query_as!` takes only a literal, so this is a
    // copy (`tests/api/bench_sql.rs` fails when the two differ).
    let rec = sqlx::query_as!(
        SessionRecord,
        r#"
        SELECT id, kind AS "kind: SessionKind", owner_key AS "owner_key: OwnerKey",
               token_hash, prev_token_hash,
               sealed_successor, version, created_at, expires_at, absolute_expires_at,
               revoked_at, revoked_reason,
               coalesce(prev_valid_until > now(), false) AS "in_grace!",
               expires_at <= now() AS "expired!", now() AS "read_at!",
               last_used_at, user_agent, host(ip) AS ip
        FROM latchkey.sessions WHERE id = $1
        "#,
        id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(rec)
}

/// The compare-and-swap of a rotation, the one text of [`ROTATE_SQL`] and
/// [`ROTATE_AUDITED_SQL`].
macro_rules! rotate_update {
    () => {
        r#"
                UPDATE latchkey.sessions
                SET prev_token_hash = token_hash,
                    prev_valid_until = now() + make_interval(secs => $5),
                    token_hash = $3,
                    sealed_successor = $4,
                    version = version + 1,
                    refreshed_at = now(),
                    last_used_at = now(),
                    expires_at = CASE
                        WHEN least(now() + make_interval(secs => $6), absolute_expires_at)
                             >= least(expires_at + make_interval(secs => $7), absolute_expires_at)
                        THEN least(now() + make_interval(secs => $6), absolute_expires_at)
                        ELSE expires_at END
                WHERE id = $1 AND version = $2 AND revoked_at IS NULL AND expires_at > now()
                RETURNING id, owner_key, version, expires_at, absolute_expires_at
        "#
    };
}

/// The statement of [`Store::rotate`] without the audit event (the default): `$1` id, `$2`
/// expected version, `$3` new token hash, `$4` sealed successor, `$5` grace seconds, `$6`
/// idle TTL seconds, `$7` least slide of the idle expiry in seconds. Exported for the
/// benchmark's raw-SQL baseline and the partitioning test.
#[doc(hidden)]
pub const ROTATE_SQL: &str = rotate_update!();

/// [`ROTATE_SQL`] that also records the `refreshed` event in the same statement
/// ([`RotatePolicy::record_event`]); the same seven parameters.
#[doc(hidden)]
pub const ROTATE_AUDITED_SQL: &str = concat!(
    "WITH upd AS (",
    rotate_update!(),
    r#"), ev AS (
                INSERT INTO latchkey.session_events (session_id, owner_key, event, detail)
                SELECT id, owner_key, 'refreshed', jsonb_build_object('version', version)
                FROM upd
            )
            SELECT id, owner_key, version, expires_at, absolute_expires_at FROM upd"#
);

/// The rotation statement for `record_event` ([`ROTATE_AUDITED_SQL`] or [`ROTATE_SQL`]).
#[doc(hidden)]
pub fn rotate_sql(record_event: bool) -> &'static str {
    if record_event {
        ROTATE_AUDITED_SQL
    } else {
        ROTATE_SQL
    }
}

/// The statement of [`Store::find_session`] for one id (`$1`): the source of its multi-row
/// form (the coalesced reads) and the benchmark's raw-SQL baseline. `query_as!` takes only a
/// literal, so `find_one` holds a copy of this text; `tests/api/bench_sql.rs` fails when the
/// two differ.
#[doc(hidden)]
pub const FIND_SESSION_SQL: &str = r#"
        SELECT id, kind AS "kind: SessionKind", owner_key AS "owner_key: OwnerKey",
               token_hash, prev_token_hash,
               sealed_successor, version, created_at, expires_at, absolute_expires_at,
               revoked_at, revoked_reason,
               coalesce(prev_valid_until > now(), false) AS "in_grace!",
               expires_at <= now() AS "expired!", now() AS "read_at!",
               last_used_at, user_agent, host(ip) AS ip
        FROM latchkey.sessions WHERE id = $1
        "#;
