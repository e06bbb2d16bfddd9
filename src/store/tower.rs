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
//! * **Sliding expiry without a write per request.** A save whose data and owner are unchanged
//!   and whose expiry moved forward by less than the touch interval (default 60 s) writes
//!   nothing: with `Expiry::OnInactivity` and `with_always_save(true)` a session is written at
//!   most once per interval.
//! * **Coalesced statements.** Concurrent `create`s, `save`s and `load`s run as multi-row
//!   statements, one round trip and one commit for many sessions; see
//!   [`PgSessionStore::with_coalescing`].
//! * **`delete` is immediate and final.** tower-sessions calls it for a logout (`flush`) and
//!   for `cycle_id` alike, and cannot tell them apart. The row is revoked with reason
//!   `deleted`, its data cleared, and a `revoked` event recorded; the row stays until
//!   [`ExpiredDeletion::delete_expired`] or `latchkey expire` purges it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::PgPool;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions::Session;
use uuid::Uuid;

use super::coalesce::{Answer, Exec, IdList, Lanes, MAX_ID_LIST};
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
/// The database must be migrated with [`crate::MIGRATOR`] (there is no separate `migrate`).
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
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/latchkey").await?;
/// latchkey::MIGRATOR.run(&pool).await?;
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
    pool: PgPool,
    absolute_ttl_secs: f64,
    touch_interval_secs: f64,
    lanes: usize,
    max_batch: usize,
    /// The coalescing lanes, started on first use (on the runtime of that use) and stopped
    /// when the last clone of the store is dropped.
    coalesce: Arc<OnceLock<Coalesced>>,
}

/// One set of lanes per statement kind.
#[derive(Debug)]
struct Coalesced {
    create: Lanes<NewRow, bool>,
    save: Lanes<NewRow, ()>,
    load: Lanes<[u8; 32], Option<Loaded>>,
}

/// A row as `create` inserts it and `save` updates it.
struct NewRow {
    id: Uuid,
    hash: [u8; 32],
    data: serde_json::Value,
    owner: OwnerKey,
    expiry: OffsetDateTime,
}

impl PgSessionStore {
    /// A store on `pool` with an absolute lifetime of 30 days, a touch interval of 60 s and
    /// statement coalescing with one statement of each kind at a time, of up to 64 rows.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            absolute_ttl_secs: 30.0 * 86_400.0,
            touch_interval_secs: 60.0,
            lanes: 1,
            max_batch: 64,
            coalesce: Arc::default(),
        }
    }

    /// Hard cap on a session's lifetime, counted from its creation; expiries past it are
    /// clamped to it.
    pub fn with_absolute_ttl(mut self, ttl: Duration) -> Self {
        self.absolute_ttl_secs = ttl.as_secs_f64();
        self.coalesce = Arc::default();
        self
    }

    /// A save that changes neither data nor owner writes only when the expiry moved forward
    /// by at least this much (or backward at all). Zero writes on every save.
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval_secs = interval.as_secs_f64();
        self.coalesce = Arc::default();
        self
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
        self.lanes = lanes;
        self.max_batch = max_batch.max(1);
        self.coalesce = Arc::default();
        self
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
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
fn row_of(hash: &[u8; 32]) -> Uuid {
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

impl PgSessionStore {
    /// The lanes, started on first use; `None` when coalescing is off.
    fn coalesced(&self) -> Option<&Coalesced> {
        if self.lanes == 0 {
            return None;
        }
        Some(self.coalesce.get_or_init(|| {
            let (ttl, touch) = (self.absolute_ttl_secs, self.touch_interval_secs);
            let pool = self.pool.clone();
            let create: Exec<NewRow, bool> =
                Arc::new(move |rows| Box::pin(create_many(pool.clone(), ttl, rows)));
            let pool = self.pool.clone();
            let save: Exec<NewRow, ()> =
                Arc::new(move |rows| Box::pin(save_many(pool.clone(), touch, rows)));
            let pool = self.pool.clone();
            let load: Exec<[u8; 32], _> =
                Arc::new(move |hashes| Box::pin(load_many(pool.clone(), hashes)));
            Coalesced {
                create: Lanes::new(self.lanes, self.max_batch, true, create),
                save: Lanes::new(self.lanes, self.max_batch, true, save),
                load: Lanes::new(self.lanes, self.max_batch.min(MAX_ID_LIST), false, load),
            }
        }))
    }

    /// One `create` attempt: `true` when the row went in, `false` on an id collision.
    async fn insert(&self, row: NewRow) -> session_store::Result<bool> {
        let row = match self.coalesced() {
            None => row,
            Some(c) => match c.create.submit(row.id, row).await {
                Answer::Done(inserted) => return Ok(inserted),
                Answer::Failed(e) => return Err(backend(e)),
                Answer::RunAlone(row) => row,
            },
        };
        insert_one(&self.pool, self.absolute_ttl_secs, &row)
            .await
            .map_err(backend)
    }
}

/// Saves one row. Only a live row is updated: a deleted, revoked or expired session stays
/// gone. A save that changes nothing but a small forward move of the expiry matches no row and
/// writes nothing; a data change within the touch interval keeps `expires_at`, so no indexed
/// column changes and the update can be HOT. Its multi-row form, over arrays, is the SQL
/// function `latchkey_store_save_many`: a change here goes there too, in a new migration.
async fn save_one(pool: &PgPool, touch_secs: f64, row: &NewRow) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        UPDATE sessions
        SET data = $3,
            owner_key = $4::text,
            expires_at = CASE
                WHEN least($5, absolute_expires_at) >= expires_at
                 AND least($5, absolute_expires_at)
                     < expires_at + make_interval(secs => $6)
                THEN expires_at
                ELSE least($5, absolute_expires_at) END,
            last_used_at = now(),
            version = version + 1
        WHERE id = $1 AND token_hash = $2 AND kind = 'stateful'
          AND revoked_at IS NULL AND expires_at > now()
          AND (data IS DISTINCT FROM $3
               OR owner_key IS DISTINCT FROM $4::text
               OR least($5, absolute_expires_at) < expires_at
               OR least($5, absolute_expires_at)
                  >= expires_at + make_interval(secs => $6))
        "#,
        row.id,
        &row.hash[..],
        row.data,
        &row.owner as _,
        row.expiry,
        touch_secs,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Session data as the store reads it: decoded from the column straight into the map a
/// [`Record`] holds, with no intermediate JSON tree.
type Data = HashMap<String, serde_json::Value>;

/// A loaded row: its data and expiry.
type Loaded = (Data, OffsetDateTime);

/// Loads the live row of one token hash: its data and expiry.
async fn load_one(pool: &PgPool, hash: &[u8; 32]) -> Result<Option<Loaded>, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        SELECT data AS "data: Json<Data>", expires_at
        FROM sessions
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

/// Inserts one row: `true` when it went in, `false` on an id collision. Its multi-row form,
/// over arrays, is the SQL function `latchkey_store_create_many`: a change here goes there
/// too, in a new migration.
async fn insert_one(pool: &PgPool, ttl_secs: f64, row: &NewRow) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        r#"
        INSERT INTO sessions (id, kind, owner_key, token_hash, expires_at,
                              absolute_expires_at, data)
        SELECT $1::uuid, 'stateful', $2::text, $3,
               least($4, cap.at), cap.at, $5
        FROM (SELECT now() + make_interval(secs => $6) AS at) AS cap
        ON CONFLICT ON CONSTRAINT sessions_pkey DO NOTHING
        RETURNING version
        "#,
        row.id,
        &row.owner as _,
        &row.hash[..],
        row.expiry,
        row.data,
        ttl_secs,
    )
    .fetch_optional(pool)
    .await?;
    Ok(inserted.is_some())
}

/// Inserts `rows` in one statement; for each, whether it went in (`false`: id collision).
///
/// A single row takes the single-row statement. More run the SQL function
/// `latchkey_store_create_many` (migration `20261120000500`), the same INSERT over arrays, kept
/// in PL/pgSQL so its plan is made once per connection instead of at every run.
async fn create_many(
    pool: PgPool,
    ttl_secs: f64,
    rows: Vec<NewRow>,
) -> (Vec<NewRow>, Result<Vec<bool>, sqlx::Error>) {
    if let [row] = &rows[..] {
        let inserted = insert_one(&pool, ttl_secs, row).await.map(|i| vec![i]);
        return (rows, inserted);
    }
    let c = Columns::of(&rows);
    let inserted = sqlx::query_scalar!(
        r#"SELECT latchkey_store_create_many($1, $2, $3, $4, $5, $6) AS "ids!""#,
        &c.ids[..],
        &c.hashes[..],
        &c.data[..],
        &c.owners[..] as &[Option<String>],
        &c.expiries[..],
        ttl_secs,
    )
    .fetch_one(&pool)
    .await
    .map(|ids| rows.iter().map(|r| ids.contains(&r.id)).collect());
    (rows, inserted)
}

/// Saves `rows` in one statement (a single row: the single-row statement).
///
/// The multi-row save is the SQL function `latchkey_store_save_many` (migration
/// `20261120000500`): the same UPDATE as [`save_one`] over arrays, kept in PL/pgSQL so its plan
/// is made once per connection instead of at every run.
async fn save_many(
    pool: PgPool,
    touch_secs: f64,
    rows: Vec<NewRow>,
) -> (Vec<NewRow>, Result<Vec<()>, sqlx::Error>) {
    if let [row] = &rows[..] {
        let saved = save_one(&pool, touch_secs, row).await.map(|()| vec![()]);
        return (rows, saved);
    }
    let c = Columns::of(&rows);
    let saved = sqlx::query_scalar!(
        "SELECT latchkey_store_save_many($1, $2, $3, $4, $5, $6)",
        &c.ids[..],
        &c.hashes[..],
        &c.data[..],
        &c.owners[..] as &[Option<String>],
        &c.expiries[..],
        touch_secs,
    )
    .fetch_one(&pool)
    .await
    .map(|_| vec![(); rows.len()]);
    (rows, saved)
}

/// Loads the live rows of `hashes` (full SHA-256 of the cookie ids) in one statement (a
/// single one: the single-row statement).
async fn load_many(
    pool: PgPool,
    hashes: Vec<[u8; 32]>,
) -> (Vec<[u8; 32]>, Result<Vec<Option<Loaded>>, sqlx::Error>) {
    if let [hash] = &hashes[..] {
        let found = load_one(&pool, hash).await.map(|f| vec![f]);
        return (hashes, found);
    }
    let ids: Vec<Uuid> = hashes.iter().map(row_of).collect();
    let (sql, size) = LOAD_MANY.statement(ids.len());
    let mut query = sqlx::query_as::<_, (Vec<u8>, Json<Data>, OffsetDateTime)>(sql);
    for id in IdList::padded(&ids, size) {
        query = query.bind(id);
    }
    let found = query.fetch_all(&pool).await.map(|rows| {
        let by_hash: HashMap<Vec<u8>, Loaded> = rows
            .into_iter()
            .map(|(hash, data, expiry)| (hash, (data.0, expiry)))
            .collect();
        // Loads of one session may share a statement: each gets the row.
        hashes
            .iter()
            .map(|h| by_hash.get(&h[..]).cloned())
            .collect()
    });
    (hashes, found)
}

/// The multi-row load (`id IN (…)`, one parameter per id; see [`IdList`] for why).
pub(super) static LOAD_MANY: IdList = IdList::new(1, |ids| {
    format!(
        "SELECT token_hash, data, expires_at FROM sessions \
         WHERE id IN ({ids}) AND kind = 'stateful' \
           AND revoked_at IS NULL AND expires_at > now()"
    )
});

/// `rows` as one array per column, for `unnest`.
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
        for _ in 0..CREATE_ATTEMPTS {
            if self.insert(new_row(record)?).await? {
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
        let row = match self.coalesced() {
            None => row,
            Some(c) => match c.save.submit(row.id, row).await {
                Answer::Done(()) => return Ok(()),
                Answer::Failed(e) => return Err(backend(e)),
                Answer::RunAlone(row) => row,
            },
        };
        save_one(&self.pool, self.touch_interval_secs, &row)
            .await
            .map_err(backend)
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let (row_id, hash) = keys(session_id);
        let found = match self.coalesced().map(|c| c.load.submit(row_id, hash)) {
            None => None,
            Some(answer) => match answer.await {
                Answer::Done(found) => Some(found),
                Answer::Failed(e) => return Err(read_error(e)),
                Answer::RunAlone(_) => None,
            },
        };
        let found = match found {
            Some(found) => found,
            None => load_one(&self.pool, &hash).await.map_err(read_error)?,
        };
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
            FROM latchkey_revoke(
                ARRAY(SELECT s.id FROM sessions AS s
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
