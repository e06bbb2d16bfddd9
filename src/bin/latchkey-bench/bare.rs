//! The `store` scenario's physical baseline: a tower-sessions store whose every call is one
//! single-row statement on `bench_bare`, a copy of `sessions` (same columns and row width,
//! same indexes and fillfactor, no trigger), with no function, no coalescing and no checks
//! beyond the key: what one durable row write (or one primary-key read) per call costs.

use std::collections::HashMap;

use async_trait::async_trait;
use latchkey::store::OwnerKey;
use sqlx::types::Json;
use sqlx::PgPool;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use uuid::Uuid;

/// The copy of `sessions` the bare store works on.
const TABLE: &str = "bench_bare";

/// One single-row statement per call on [`TABLE`].
#[derive(Debug, Clone)]
pub(crate) struct BareStore {
    pool: PgPool,
}

impl BareStore {
    /// Creates [`TABLE`] afresh, shaped as `sessions`.
    pub(crate) async fn new(pool: PgPool) -> anyhow::Result<Self> {
        let drop = format!("DROP TABLE IF EXISTS {TABLE}");
        sqlx::query(&drop).execute(&pool).await?;
        let create = format!(
            "CREATE TABLE {TABLE} (LIKE latchkey.sessions INCLUDING ALL) WITH (fillfactor = 80)"
        );
        sqlx::query(&create).execute(&pool).await?;
        Ok(Self { pool })
    }
}

fn row_id(id: &Id) -> Uuid {
    Uuid::from_u128(id.0 as u128)
}

fn backend(e: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait]
impl SessionStore for BareStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let id = row_id(&record.id);
        // A 32-byte token hash, as the real rows carry.
        let hash = [id.as_bytes().as_slice(), id.as_bytes().as_slice()].concat();
        sqlx::query(
            "INSERT INTO bench_bare (id, kind, owner_key, token_hash, expires_at,
                                     absolute_expires_at, data)
             VALUES ($1, 'stateful', $5, $2, $3, $3 + interval '30 days', $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(hash)
        .bind(record.expiry_date)
        .bind(Json(&record.data))
        .bind(OwnerKey::Anonymous(id).to_string())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        sqlx::query("UPDATE bench_bare SET data = $2, expires_at = $3 WHERE id = $1")
            .bind(row_id(&record.id))
            .bind(Json(&record.data))
            .bind(record.expiry_date)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let row: Option<(Json<HashMap<String, serde_json::Value>>, OffsetDateTime)> =
            sqlx::query_as(
                "SELECT data, expires_at FROM bench_bare WHERE id = $1 AND expires_at > now()",
            )
            .bind(row_id(session_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.map(|(data, expiry_date)| Record {
            id: *session_id,
            data: data.0,
            expiry_date,
        }))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        sqlx::query("DELETE FROM bench_bare WHERE id = $1")
            .bind(row_id(session_id))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
