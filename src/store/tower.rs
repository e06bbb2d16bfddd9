//! [`PgSessionStore`]: a [`tower_sessions::SessionStore`] over the `sessions` table.
//!
//! Each tower-sessions session is one `sessions` row of kind `stateful`:
//!
//! | row column | value |
//! |---|---|
//! | `id` | the first 16 bytes of SHA-256(cookie id), as a UUID: lookups stay by primary key |
//! | `token_hash` | the full SHA-256(cookie id); checked on every statement. The cookie id itself is never stored |
//! | `owner_key` | the owner bound with [`bind_owner`], else `anon:<row id>` (one per session) |
//! | `data` | the session data as a `jsonb` object (`data->>'counter'` works in psql) |
//! | `expires_at` | the record's expiry, capped by `absolute_expires_at` |
//! | `absolute_expires_at` | creation + the store's absolute lifetime (default 30 days) |
//! | `version` | 1 at creation, +1 on every save that writes |
//!
//! Guarantees beyond the stock Postgres store:
//!
//! * **No resurrection.** `save` is an `UPDATE` of a live row only (not revoked, not expired);
//!   only `create` inserts. A request that loaded the session before a logout, a `delete`, a
//!   revocation by the CLI, `/auth/logout-all` or reuse detection saves into nothing.
//! * **Atomic collisions.** `create` is one `INSERT … ON CONFLICT DO NOTHING`, retried with a
//!   fresh id when it inserts nothing; there is no check-then-insert window.
//! * **Revocations apply.** `load` returns `None` for a revoked or expired row.
//! * **Exact round trip.** `create` hands the record back with its expiry as `timestamptz`
//!   stores it (microseconds), so loading it returns an equal record.
//! * **Sliding expiry without a write per request.** A save whose data and owner are unchanged
//!   and whose expiry moved forward by less than the touch interval (default 60 s) writes
//!   nothing: with `Expiry::OnInactivity` and `with_always_save(true)` a session is written at
//!   most once per interval.
//! * **Coalesced statements.** Concurrent `create`s, `save`s and `load`s run as multi-row
//!   statements, one round trip and one commit for many sessions; see
//!   [`PgSessionStore::with_coalescing`] and [`super::coalesce`]. A create or save of one row
//!   runs the same SQL function as one of many (`latchkey_store_create_many`,
//!   `latchkey_store_save_many`): each statement has one source.
//! * **`delete` is immediate and final.** tower-sessions calls it for a logout (`flush`) and
//!   for `cycle_id` alike, and cannot tell them apart. The row is revoked with reason
//!   `deleted`, its data cleared, and a `revoked` event recorded; the row stays until
//!   [`ExpiredDeletion::delete_expired`] or `latchkey expire` purges it.

use std::collections::HashMap;
use std::slice;
use std::sync::Arc;
use std::time::Duration;

use crate::db::Pool;
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions::Session;
use uuid::Uuid;

use super::coalesce::{Coalescing, StoreLanes};
use super::{ExpirePolicy, OwnerKey, RevokeReason, Store};

/// The session-data key under which [`bind_owner`] keeps the owner key. The store mirrors it
/// into the `owner_key` column on every write.
pub const OWNER_FIELD: &str = "latchkey.owner";

/// How many times `create` draws a new id after a collision before giving up.
const CREATE_ATTEMPTS: usize = 8;

/// Who a tower-sessions session belongs to, once the app knows (after login):
/// [`OwnerKey::User`] or [`OwnerKey::ApiKey`]. [`OwnerKey::Anonymous`] is not bindable: the
/// store gives each unbound session its own, and refuses to save a session bound to one.
pub type Owner = OwnerKey;

/// The owner a session may be bound to: a user or an API key, not an anonymous key.
fn bindable(key: &str) -> Option<Owner> {
    key.parse::<OwnerKey>().ok().filter(|o| !o.is_anonymous())
}

/// Binds the session to `owner`, so `latchkey sessions list --owner`, `sessions revoke
/// --owner` and `/auth/logout-all` of that owner cover it. Call it after a successful login,
/// right after [`Session::cycle_id`] (a new id defeats fixation); the binding is written with
/// the session at the end of the request.
///
/// # Errors
/// The session could not be loaded from its store.
pub async fn bind_owner(
    session: &Session,
    owner: Owner,
) -> Result<(), tower_sessions::session::Error> {
    session.insert(OWNER_FIELD, owner).await
}

/// Removes the binding: the session goes back to its own `anon:` owner on its next save.
///
/// # Errors
/// The session could not be loaded from its store.
pub async fn unbind_owner(session: &Session) -> Result<(), tower_sessions::session::Error> {
    session.remove_value(OWNER_FIELD).await.map(|_| ())
}

/// The owner the session is bound to, if any.
///
/// # Errors
/// The session could not be loaded from its store.
pub async fn bound_owner(
    session: &Session,
) -> Result<Option<Owner>, tower_sessions::session::Error> {
    let key: Option<String> = session.get(OWNER_FIELD).await?;
    Ok(key.as_deref().and_then(bindable))
}

/// A [`SessionStore`] on latchkey's `sessions` table; a drop-in replacement for the stock
/// `tower_sessions_sqlx_store::PostgresStore`. See the [module documentation](self) for the
/// mapping and the guarantees.
///
/// The database must be migrated with [`crate::db::migrate`] (there is no separate `migrate`).
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use latchkey::store::PgSessionStore;
/// use tower_sessions::{Expiry, Session, SessionManagerLayer};
///
/// async fn counter(session: Session) -> String {
///     let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0) + 1;
///     let _ = session.insert("n", n).await;
///     n.to_string()
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), sqlx::Error> {
/// let pool = sqlx::Pool::connect("postgres://postgres@127.0.0.1/latchkey").await?;
/// latchkey::db::migrate(&pool).await?;
/// let store = PgSessionStore::new(pool);
/// let sessions = SessionManagerLayer::new(store)
///     .with_expiry(Expiry::OnInactivity(time::Duration::hours(8)))
///     .with_always_save(true); // sliding expiry; the store writes at most once a minute
/// let app: Router = Router::new().route("/", get(counter)).layer(sessions);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PgSessionStore {
    pool: Pool,
    absolute_ttl_secs: f64,
    touch_interval_secs: f64,
    coalescing: Coalescing,
    /// The coalescing layer ([`Coalescing::OFF`]: none), built with the settings above and
    /// shared by the store's clones.
    lanes: Option<Arc<StoreLanes>>,
}

/// A row as `create` inserts it and `save` updates it.
pub(super) struct NewRow {
    pub(super) id: Uuid,
    hash: [u8; 32],
    data: serde_json::Value,
    owner: OwnerKey,
    expiry: OffsetDateTime,
}

impl PgSessionStore {
    /// A store on `pool` (a `PgPool`, or a [`Pool`], direct or through a transaction-mode
    /// pooler) with an absolute lifetime of 30 days, a touch interval of 60 s and statement
    /// coalescing with one statement of each kind at a time, of up to 64 rows.
    pub fn new(pool: impl Into<Pool>) -> Self {
        Self {
            pool: pool.into(),
            absolute_ttl_secs: 30.0 * 86_400.0,
            touch_interval_secs: 60.0,
            coalescing: Coalescing::OFF,
            lanes: None,
        }
        .with_coalescing(Coalescing::STORE.lanes, Coalescing::STORE.max_batch)
    }

    /// Hard cap on a session's lifetime, counted from its creation; expiries past it are
    /// clamped to it.
    pub fn with_absolute_ttl(mut self, ttl: Duration) -> Self {
        self.absolute_ttl_secs = ttl.as_secs_f64();
        self.relaned()
    }

    /// A save that changes neither data nor owner writes only when the expiry moved forward
    /// by at least this much (or backward at all). Zero writes on every save.
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval_secs = interval.as_secs_f64();
        self.relaned()
    }

    /// Statement coalescing: concurrent `create`s, `save`s and `load`s are gathered into
    /// multi-row statements (one round trip, one commit for the lot) of up to `max_batch`
    /// rows (loads: at most 1024). Up to `lanes` statements of each kind run at once. A
    /// request queues; when a slot is free a statement starts for the queue after letting
    /// the runtime's ready tasks run (nothing waits on a timer), and what queues while every
    /// slot is busy goes together into the next one. One slot (the default) measured best
    /// for writes, whose commits wait for the WAL flush one after another anyway; more slots
    /// split the same callers into smaller statements. Two requests for one session
    /// never share a statement and a request never joins one while a running statement holds
    /// its row, so saves of one session apply one by one, in order, each raising `version`,
    /// and two statements of the store never deadlock each other. If a multi-row statement
    /// fails, each of its requests runs alone, so one request's failure is no one else's.
    /// `lanes = 0` turns coalescing off: one statement per call, as the stock store does.
    pub fn with_coalescing(mut self, lanes: usize, max_batch: usize) -> Self {
        self.coalescing = Coalescing {
            lanes,
            max_batch: max_batch.max(1),
        };
        self.relaned()
    }

    /// The coalescing layer built anew for the current settings.
    fn relaned(mut self) -> Self {
        self.lanes = (!self.coalescing.is_off()).then(|| {
            Arc::new(StoreLanes::new(
                self.pool.clone(),
                self.coalescing,
                self.absolute_ttl_secs,
                self.touch_interval_secs,
            ))
        });
        self
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The `sessions.id` of the row that holds the session with cookie id `id`: the first 16
    /// bytes of SHA-256 of the id. Operators use it with `latchkey sessions revoke`.
    pub fn row_id(id: &Id) -> Uuid {
        keys(id).0
    }
}

/// (row id, token hash) of a cookie id.
fn keys(id: &Id) -> (Uuid, [u8; 32]) {
    let hash: [u8; 32] = Sha256::digest(id.0.to_le_bytes()).into();
    (row_of(&hash), hash)
}

/// The row id of a token hash: its first 16 bytes.
pub(super) fn row_of(hash: &[u8; 32]) -> Uuid {
    let mut head = [0u8; 16];
    head.copy_from_slice(&hash[..16]);
    Uuid::from_bytes(head)
}

fn backend(e: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

/// A failed load: data that does not decode into a record is a decode error, the rest backend.
fn read_error(e: sqlx::Error) -> session_store::Error {
    match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            session_store::Error::Decode(e.to_string())
        }
        e => backend(e),
    }
}

/// The data as a JSON object, and the owner key it binds (validated).
fn encode(record: &Record) -> session_store::Result<(serde_json::Value, Option<OwnerKey>)> {
    let owner = match record.data.get(OWNER_FIELD) {
        None => None,
        Some(value) => Some(value.as_str().and_then(bindable).ok_or_else(|| {
            session_store::Error::Encode(format!(
                "{OWNER_FIELD} must be user:<uuid> or apikey:<uuid>; use latchkey::store::bind_owner"
            ))
        })?),
    };
    let data = serde_json::to_value(&record.data)
        .map_err(|e| session_store::Error::Encode(e.to_string()))?;
    Ok((data, owner))
}

/// Session data as the store reads it: decoded from the column straight into the map a
/// [`Record`] holds, with no intermediate JSON tree.
pub(super) type Data = HashMap<String, serde_json::Value>;

/// A loaded row: its data and expiry.
pub(super) type Loaded = (Data, OffsetDateTime);

/// Loads the live row of one token hash: its data and expiry. Its multi-row form is derived
/// from its text ([`LOAD_SESSION_SQL`]) by the coalescing layer.
pub(super) async fn load_one(pool: &Pool, hash: &[u8; 32]) -> Result<Option<Loaded>, sqlx::Error> {
    // The same text as `LOAD_SESSION_SQL`: `query!` takes only a literal, so this is a copy
    // (`tests/api/bench_sql.rs` fails when the two differ).
    let row = sqlx::query!(
        r#"
        SELECT token_hash, data AS "data: Json<Data>", expires_at
        FROM latchkey.sessions
        WHERE id = $1 AND token_hash = $2 AND kind = 'stateful'
          AND revoked_at IS NULL AND expires_at > now()
        "#,
        row_of(hash),
        &hash[..],
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.data.0, r.expires_at)))
}

/// The statement of [`load_one`] (`$1` row id, `$2` token hash): the source of its multi-row
/// form. `query!` takes only a literal, so `load_one` holds a copy of this text;
/// `tests/api/bench_sql.rs` fails when the two differ.
pub(super) const LOAD_SESSION_SQL: &str = r#"
        SELECT token_hash, data AS "data: Json<Data>", expires_at
        FROM latchkey.sessions
        WHERE id = $1 AND token_hash = $2 AND kind = 'stateful'
          AND revoked_at IS NULL AND expires_at > now()
        "#;

/// Inserts `rows` in one statement; for each, whether it went in (`false`: id collision).
/// One row or many, the statement is the SQL function `latchkey_store_create_many`
/// (migration `20261120000500`): one `INSERT … SELECT FROM unnest(arrays) ON CONFLICT DO
/// NOTHING`, kept in PL/pgSQL so its plan is made once per connection instead of at every run.
pub(super) async fn create_rows(
    pool: &Pool,
    ttl_secs: f64,
    rows: &[NewRow],
) -> Result<Vec<bool>, sqlx::Error> {
    let c = Columns::of(rows);
    let ids = sqlx::query_scalar!(
        r#"SELECT latchkey.latchkey_store_create_many($1, $2, $3, $4, $5, $6) AS "ids!""#,
        &c.ids[..],
        &c.hashes[..],
        &c.data[..],
        &c.owners[..] as &[Option<String>],
        &c.expiries[..],
        ttl_secs,
    )
    .fetch_one(pool)
    .await?;
    Ok(rows.iter().map(|r| ids.contains(&r.id)).collect())
}

/// Saves `rows` in one statement. Only a live row is updated: a deleted, revoked or expired
/// session stays gone. A save that changes nothing but a small forward move of the expiry
/// writes nothing; a data change within the touch interval keeps `expires_at`, so no indexed
/// column changes and the update can be HOT. One row or many, the statement is the SQL
/// function `latchkey_store_save_many` (migration `20261129120000`): one `UPDATE` by primary
/// key per row, in PL/pgSQL so its plan is made once per connection, and each reaches only
/// its session's part when `sessions` is partitioned by id (docs/scaling.md).
pub(super) async fn save_rows(
    pool: &Pool,
    touch_secs: f64,
    rows: &[NewRow],
) -> Result<(), sqlx::Error> {
    let c = Columns::of(rows);
    // The same six arrays as `create_rows` binds: `query!` takes only a literal, so each
    // function call binds its own.
    sqlx::query_scalar!(
        "SELECT latchkey.latchkey_store_save_many($1, $2, $3, $4, $5, $6)",
        &c.ids[..],
        &c.hashes[..],
        &c.data[..],
        &c.owners[..] as &[Option<String>],
        &c.expiries[..],
        touch_secs,
    )
    .fetch_one(pool)
    .await?;
    Ok(())
}

/// `rows` as one array per column, the function's arguments.
struct Columns {
    ids: Vec<Uuid>,
    hashes: Vec<Vec<u8>>,
    data: Vec<serde_json::Value>,
    owners: Vec<Option<String>>,
    expiries: Vec<OffsetDateTime>,
}

impl Columns {
    fn of(rows: &[NewRow]) -> Self {
        Self {
            ids: rows.iter().map(|r| r.id).collect(),
            hashes: rows.iter().map(|r| r.hash.to_vec()).collect(),
            data: rows.iter().map(|r| r.data.clone()).collect(),
            owners: rows.iter().map(|r| Some(r.owner.to_string())).collect(),
            expiries: rows.iter().map(|r| r.expiry).collect(),
        }
    }
}

/// The row of a cookie id, as [`NewRow`].
fn new_row(record: &Record) -> session_store::Result<NewRow> {
    let (data, owner) = encode(record)?;
    let (id, hash) = keys(&record.id);
    Ok(NewRow {
        id,
        hash,
        data,
        owner: owner.unwrap_or(OwnerKey::Anonymous(id)),
        expiry: record.expiry_date,
    })
}

#[async_trait]
impl SessionStore for PgSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // `timestamptz` keeps microseconds: the record given back holds the expiry as stored,
        // so a load returns a record equal to it.
        if let Ok(stored) = record
            .expiry_date
            .replace_microsecond(record.expiry_date.microsecond())
        {
            record.expiry_date = stored;
        }
        for _ in 0..CREATE_ATTEMPTS {
            let row = new_row(record)?;
            let inserted = match &self.lanes {
                Some(lanes) => lanes.create(row).await,
                None => create_rows(&self.pool, self.absolute_ttl_secs, slice::from_ref(&row))
                    .await
                    .map(|inserted| inserted.first().copied().unwrap_or(false)),
            };
            if inserted.map_err(backend)? {
                return Ok(());
            }
            tracing::warn!("tower-sessions id collision; drawing a new id");
            record.id = Id::default();
        }
        Err(session_store::Error::Backend(
            "no free session id after repeated collisions".to_owned(),
        ))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let row = new_row(record)?;
        match &self.lanes {
            Some(lanes) => lanes.save(row).await,
            None => save_rows(&self.pool, self.touch_interval_secs, slice::from_ref(&row)).await,
        }
        .map_err(backend)
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let (_, hash) = keys(session_id);
        let found = match &self.lanes {
            Some(lanes) => lanes.load(hash).await,
            None => load_one(&self.pool, &hash).await,
        }
        .map_err(read_error)?;
        let Some((data, expiry_date)) = found else {
            return Ok(None);
        };
        Ok(Some(Record {
            id: *session_id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let (row_id, hash) = keys(session_id);
        // The row is chosen here (its id, hash and kind never change); latchkey_revoke
        // revokes it if live, clears its data and records the `revoked` event.
        sqlx::query_scalar!(
            r#"
            SELECT r.id AS "id!"
            FROM latchkey.latchkey_revoke(
                ARRAY(SELECT s.id FROM latchkey.sessions AS s
                      WHERE s.id = $1 AND s.token_hash = $2 AND s.kind = 'stateful'),
                $3, true) AS r(id)
            "#,
            row_id,
            &hash[..],
            RevokeReason::Deleted as _,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl ExpiredDeletion for PgSessionStore {
    /// Runs the same batched purge as `latchkey expire` (the SQL function
    /// `latchkey_expire_batch`, default retention): expired sessions of any kind, revoked or
    /// not, through `sessions_expires_at_idx` (no `expired` audit events, as by default).
    /// Safe to run concurrently with another purge.
    async fn delete_expired(&self) -> session_store::Result<()> {
        self.purge_expired().await.map(|_| ())
    }
}

impl PgSessionStore {
    /// [`ExpiredDeletion::delete_expired`] that also says how many expired rows it removed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn purge_expired(&self) -> session_store::Result<u64> {
        let report = Store::new(self.pool.clone())
            .expire(&ExpirePolicy::default(), |_| {})
            .await
            .map_err(|e| session_store::Error::Backend(e.to_string()))?;
        Ok(u64::try_from(report.expired).unwrap_or(0))
    }
}
