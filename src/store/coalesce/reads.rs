//! Coalesced session reads: [`Store::find_session`](crate::store::Store::find_session)
//! under load, many ids in one `SELECT … WHERE id IN (…)`.

use std::sync::Arc;

use crate::db::Pool;
use uuid::Uuid;

use super::id_list::{IdList, MAX_ID_LIST};
use super::lanes::{Exec, Lanes};
use super::Coalescing;
use crate::store::sessions::{find_one, FIND_SESSION_SQL};
use crate::store::SessionRecord;

/// The multi-row form of [`FIND_SESSION_SQL`].
pub(super) static FIND_MANY: IdList = IdList::new(FIND_SESSION_SQL, "id = $1");

/// The coalescer of session reads.
#[derive(Debug)]
pub(in crate::store) struct SessionReads {
    pool: Pool,
    lanes: Lanes<Uuid, Option<SessionRecord>>,
}

impl SessionReads {
    /// Reads on `pool`, gathered per `settings`.
    pub(in crate::store) fn new(pool: Pool, settings: Coalescing) -> Self {
        let exec_pool = pool.clone();
        let exec: Exec<Uuid, Option<SessionRecord>> =
            Arc::new(move |ids| Box::pin(find_many(exec_pool.clone(), ids)));
        // Reads of one row may share a statement: each gets the row.
        let lanes = Lanes::new(
            settings.lanes,
            settings.max_batch.min(MAX_ID_LIST),
            false,
            exec,
        );
        Self { pool, lanes }
    }

    /// The session `id`, read in the next statement that has room.
    pub(in crate::store) async fn find(
        &self,
        id: Uuid,
    ) -> Result<Option<SessionRecord>, sqlx::Error> {
        let pool = &self.pool;
        self.lanes
            .call(id, id, |id| async move { find_one(pool, id).await })
            .await
    }
}

/// Many sessions in one statement: one answer per id, in order. A single id takes the
/// single-row statement.
async fn find_many(
    pool: Pool,
    ids: Vec<Uuid>,
) -> (Vec<Uuid>, Result<Vec<Option<SessionRecord>>, sqlx::Error>) {
    if let [id] = &ids[..] {
        let found = find_one(&pool, *id).await.map(|r| vec![r]);
        return (ids, found);
    }
    let (sql, size) = FIND_MANY.statement(ids.len());
    let mut query = sqlx::query_as::<_, SessionRecord>(sql);
    for id in IdList::padded(&ids, size) {
        query = query.bind(id);
    }
    let found = query.fetch_all(&pool).await.map(|rows| {
        ids.iter()
            .map(|id| rows.iter().find(|r| r.id == *id).cloned())
            .collect()
    });
    (ids, found)
}
