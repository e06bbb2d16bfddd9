//! Coalesced tower-sessions statements: the creates, saves and loads of
//! [`PgSessionStore`](crate::store::PgSessionStore) under load.

use std::collections::HashMap;
use std::slice;
use std::sync::Arc;

use crate::db::Pool;
use sqlx::types::Json;
use time::OffsetDateTime;

use super::id_list::{IdList, MAX_ID_LIST};
use super::lanes::{Exec, Lanes};
use super::Coalescing;
use crate::store::tower::{
    create_rows, load_one, row_of, save_rows, Data, Loaded, NewRow, LOAD_SESSION_SQL,
};

/// The multi-row form of [`LOAD_SESSION_SQL`]: the rows of many ids; each caller takes the
/// one with its token hash.
pub(super) static LOAD_MANY: IdList = IdList::new(LOAD_SESSION_SQL, "id = $1 AND token_hash = $2");

/// One set of lanes per statement kind, with the settings their statements need.
#[derive(Debug)]
pub(in crate::store) struct StoreLanes {
    pool: Pool,
    ttl_secs: f64,
    touch_secs: f64,
    create: Lanes<NewRow, bool>,
    save: Lanes<NewRow, ()>,
    load: Lanes<[u8; 32], Option<Loaded>>,
}

impl StoreLanes {
    /// Lanes on `pool` per `settings`, for a store with this absolute lifetime and touch
    /// interval.
    pub(in crate::store) fn new(
        pool: Pool,
        settings: Coalescing,
        ttl_secs: f64,
        touch_secs: f64,
    ) -> Self {
        let (lanes, batch) = (settings.lanes, settings.max_batch);
        let p = pool.clone();
        let create: Exec<NewRow, bool> = Arc::new(move |rows| {
            let p = p.clone();
            Box::pin(async move {
                let inserted = create_rows(&p, ttl_secs, &rows).await;
                (rows, inserted)
            })
        });
        let p = pool.clone();
        let save: Exec<NewRow, ()> = Arc::new(move |rows| {
            let p = p.clone();
            Box::pin(async move {
                let saved = save_rows(&p, touch_secs, &rows).await;
                let n = rows.len();
                (rows, saved.map(|()| vec![(); n]))
            })
        });
        let p = pool.clone();
        let load: Exec<[u8; 32], Option<Loaded>> =
            Arc::new(move |hashes| Box::pin(load_many(p.clone(), hashes)));
        Self {
            pool,
            ttl_secs,
            touch_secs,
            // Writes of one row never share or overlap a statement; loads of one row may.
            create: Lanes::new(lanes, batch, true, create),
            save: Lanes::new(lanes, batch, true, save),
            load: Lanes::new(lanes, batch.min(MAX_ID_LIST), false, load),
        }
    }

    /// Inserts `row` in the next create statement: `false` on an id collision.
    pub(in crate::store) async fn create(&self, row: NewRow) -> Result<bool, sqlx::Error> {
        let (pool, ttl) = (&self.pool, self.ttl_secs);
        self.create
            .call(row.id, row, |row| async move {
                let inserted = create_rows(pool, ttl, slice::from_ref(&row)).await?;
                Ok(inserted.first().copied().unwrap_or(false))
            })
            .await
    }

    /// Saves `row` in the next save statement.
    pub(in crate::store) async fn save(&self, row: NewRow) -> Result<(), sqlx::Error> {
        let (pool, touch) = (&self.pool, self.touch_secs);
        self.save
            .call(row.id, row, |row| async move {
                save_rows(pool, touch, slice::from_ref(&row)).await
            })
            .await
    }

    /// Loads the live row of `hash` in the next load statement.
    pub(in crate::store) async fn load(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<Loaded>, sqlx::Error> {
        let pool = &self.pool;
        self.load
            .call(row_of(&hash), hash, |hash| async move {
                load_one(pool, &hash).await
            })
            .await
    }
}

/// Loads the live rows of `hashes` (full SHA-256 of the cookie ids) in one statement (a
/// single one: the single-row statement).
async fn load_many(
    pool: Pool,
    hashes: Vec<[u8; 32]>,
) -> (Vec<[u8; 32]>, Result<Vec<Option<Loaded>>, sqlx::Error>) {
    if let [hash] = &hashes[..] {
        let found = load_one(&pool, hash).await.map(|f| vec![f]);
        return (hashes, found);
    }
    let ids: Vec<_> = hashes.iter().map(row_of).collect();
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
