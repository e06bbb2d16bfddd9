//! `--scenario refresh`: stateless `POST /auth/refresh`, each client chaining its own tokens,
//! against two baselines issued through sqlx on the same sessions: the bare single-row
//! compare-and-swap (`cas`: the session read, then one `UPDATE` of the same columns on a copy
//! of the table with no trigger, no event and the expiry left alone, the limit of one durable
//! write per refresh) and the store's own statements (`raw-sql`: `find_session` + `rotate`
//! with the service's settings). With `--refresh-ladder` it also runs the rotation as it was
//! (published, audited, the expiry moving every time) and with each cost taken off in turn.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use latchkey::auth::AuthConfig;
use latchkey::store::{rotate_sql, FIND_SESSION_SQL};
use rand::RngCore;
use sqlx::postgres::PgRow;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{baseline_ratio, drive_clients, header, quiesce, raw_sql_ratio, Client};
use crate::service::{login_chains, refresh_chains, Service, POOL};

/// Size of a sealed successor (nonce + 32-byte secret + tag), for the raw rotate.
const SEALED_LEN: usize = 24 + 32 + 16;

/// The copy of `sessions` the bare compare-and-swap runs on: same columns, same row width,
/// same indexes and fillfactor, no trigger.
const CAS_TABLE: &str = "bench_cas";

/// The bare compare-and-swap: the columns a rotation writes, except the indexed expiry.
const CAS_SQL: &str = "
    UPDATE latchkey.sessions
    SET prev_token_hash = token_hash,
        prev_valid_until = now() + make_interval(secs => $5),
        token_hash = $3,
        sealed_successor = $4,
        version = version + 1,
        refreshed_at = now(),
        last_used_at = now()
    WHERE id = $1 AND version = $2 AND revoked_at IS NULL AND expires_at > now()
    RETURNING version";

/// How a raw client rotates its session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rotate {
    /// The store's rotation statement (`rotate_sql`) with the service's settings.
    Store,
    /// The store's rotation statement with the per-refresh event, the expiry moving every time, and the session
    /// marked as streamed when `notify` (the rotation as it was before those costs came off).
    Ladder {
        /// Record the `refreshed` event.
        event: bool,
    },
    /// [`CAS_SQL`], on [`CAS_TABLE`] or (`copy` false) on `sessions` itself, whose
    /// triggers then stay quiet (no stream marks).
    Bare {
        /// On the copy of the table.
        copy: bool,
    },
}

/// Per-client state of the raw loops: the session, and the pool and settings to read and
/// rotate it with.
pub(crate) struct RawChain {
    pub(crate) pool: PgPool,
    pub(crate) id: Uuid,
    pub(crate) cfg: Arc<AuthConfig>,
    pub(crate) rotate: Rotate,
}

/// One raw client per session of `ids`, on the service's pool with the default settings.
pub(crate) fn raw_chains(svc: &Service, ids: &[Uuid]) -> Vec<RawChain> {
    with_rotation(svc, ids, Rotate::Store)
}

fn with_rotation(svc: &Service, ids: &[Uuid], rotate: Rotate) -> Vec<RawChain> {
    let cfg = Arc::new(AuthConfig::default());
    ids.iter()
        .map(|&id| RawChain {
            pool: svc.pool.clone(),
            id,
            cfg: cfg.clone(),
            rotate,
        })
        .collect()
}

impl RawChain {
    /// The session read as the store makes it (`find_session`).
    pub(crate) async fn find(&self) -> anyhow::Result<PgRow> {
        sqlx::query(FIND_SESSION_SQL)
            .bind(self.id)
            .fetch_optional(&self.pool)
            .await?
            .context("session vanished")
    }

    /// The same read on the copy of the table.
    async fn find_copy(&self) -> anyhow::Result<PgRow> {
        let sql = on_copy(FIND_SESSION_SQL);
        sqlx::query(&sql)
            .bind(self.id)
            .fetch_optional(&self.pool)
            .await?
            .context("session vanished from the copy")
    }
}

impl Client for RawChain {
    /// One rotation: the session read, then the compare-and-swap.
    async fn call(&self) -> anyhow::Result<()> {
        let row = match self.rotate {
            Rotate::Bare { copy: true } => self.find_copy().await?,
            _ => self.find().await?,
        };
        let version: i64 = sqlx::Row::try_get(&row, "version")?;
        let mut hash = [0u8; 32];
        let mut sealed = [0u8; SEALED_LEN];
        rand::rng().fill_bytes(&mut hash);
        rand::rng().fill_bytes(&mut sealed);
        let (slide_secs, event) = match self.rotate {
            Rotate::Store => (self.cfg.expiry_step_secs() as f64, self.cfg.refresh_events),
            Rotate::Ladder { event } => (0.0, event),
            Rotate::Bare { .. } => (0.0, false),
        };
        let sql = match self.rotate {
            Rotate::Bare { copy: true } => on_copy(CAS_SQL),
            Rotate::Bare { copy: false } => CAS_SQL.to_owned(),
            _ => rotate_sql(event).to_owned(),
        };
        let query = sqlx::query(&sql)
            .bind(self.id)
            .bind(version)
            .bind(&hash[..])
            .bind(&sealed[..])
            .bind(self.cfg.grace_secs as f64);
        let query = match self.rotate {
            Rotate::Bare { .. } => query,
            _ => query.bind(self.cfg.idle_ttl_secs as f64).bind(slide_secs),
        };
        query
            .fetch_optional(&self.pool)
            .await?
            .context("rotation lost its compare-and-swap")?;
        Ok(())
    }
}

/// `sql` on [`CAS_TABLE`] instead of `latchkey.sessions`.
fn on_copy(sql: &str) -> String {
    sql.replace("latchkey.sessions", CAS_TABLE)
}

/// Copies the sessions `ids` into a fresh [`CAS_TABLE`].
async fn copy_sessions(pool: &PgPool, ids: &[Uuid]) -> anyhow::Result<()> {
    let drop = format!("DROP TABLE IF EXISTS {CAS_TABLE}");
    sqlx::query(&drop).execute(pool).await?;
    let create = format!(
        "CREATE TABLE {CAS_TABLE} (LIKE latchkey.sessions INCLUDING ALL) WITH (fillfactor = 80)"
    );
    sqlx::query(&create).execute(pool).await?;
    let copy =
        format!("INSERT INTO {CAS_TABLE} SELECT * FROM latchkey.sessions WHERE id = ANY ($1)");
    sqlx::query(&copy).bind(ids).execute(pool).await?;
    Ok(())
}

/// Marks the sessions `ids` as streamed (their rotations publish `refreshed`) or not.
async fn mark_streamed(pool: &PgPool, ids: &[Uuid], streamed: bool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE latchkey.sessions SET streamed_until = CASE WHEN $2 THEN 'infinity'::timestamptz END
         WHERE id = ANY ($1)",
    )
    .bind(ids)
    .bind(streamed)
    .execute(pool)
    .await?;
    Ok(())
}

/// `(n_tup_upd, n_tup_hot_upd)` of `table` as the statistics have them.
async fn updates(pool: &PgPool, table: &str) -> anyhow::Result<(i64, i64)> {
    // Backends flush their counters at most once a second, and within 10 s once idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await?;
    Ok(sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_optional(pool)
    .await?
    .unwrap_or((0, 0)))
}

/// Runs `run` and prints the HOT share of the updates of `table` it made (approximate:
/// counters reach the statistics up to a second late).
async fn with_hot_share<T>(
    pool: &PgPool,
    table: &str,
    label: &str,
    run: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let before = updates(pool, table).await?;
    let out = run.await?;
    let after = updates(pool, table).await?;
    let (upd, hot) = (after.0 - before.0, after.1 - before.1);
    println!(
        "# {label}: {hot} of {upd} updates of {table} were HOT ({:.0}%)",
        100.0 * hot as f64 / upd.max(1) as f64
    );
    Ok(out)
}

/// Runs one raw variant on the sessions `ids` and prints its row and its ratio to `ours`.
async fn raw_run(
    svc: &Service,
    ids: &[Uuid],
    n: usize,
    duration: Duration,
    ours: &crate::harness::Stats,
    rotate: Rotate,
    label: &str,
) -> anyhow::Result<()> {
    quiesce(&svc.pool).await?;
    let table = if rotate == (Rotate::Bare { copy: true }) {
        CAS_TABLE
    } else {
        "sessions"
    };
    let raw = with_hot_share(&svc.pool, table, label, async {
        let chains = with_rotation(svc, ids, rotate);
        Ok(drive_clients(&format!("refresh-{label}"), chains, duration).await)
    })
    .await?;
    baseline_ratio("refresh", n, ours, &raw, label, "");
    Ok(())
}

/// At each client count: `rounds` pairs of HTTP and the bare compare-and-swap, each round on
/// fresh sessions and the pair's order alternating (HTTP first in the first round), with the
/// ratio of each round and their median; then the store's statements (and the ladder)
/// against the HTTP run of the median round.
pub(crate) async fn run_scenario(
    svc: &Service,
    clients: &[usize],
    duration: Duration,
    rounds: usize,
    ladder: bool,
) -> anyhow::Result<()> {
    let rounds = rounds.max(1);
    println!(
        "scenario=refresh seconds={} pool={POOL} rounds={rounds}",
        duration.as_secs()
    );
    header();
    for &n in clients {
        let mut runs = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let chains = login_chains(svc, n).await?;
            let ids: Vec<Uuid> = chains.iter().map(|c| c.session_id).collect();
            copy_sessions(&svc.pool, &ids).await?;
            let http = async {
                quiesce(&svc.pool).await?;
                with_hot_share(&svc.pool, "sessions", "http", async {
                    Ok(refresh_chains(chains, duration, "refresh").await)
                })
                .await
            };
            let cas = async {
                quiesce(&svc.pool).await?;
                with_hot_share(&svc.pool, CAS_TABLE, "cas", async {
                    let chains = with_rotation(svc, &ids, Rotate::Bare { copy: true });
                    Ok(drive_clients("refresh-cas", chains, duration).await)
                })
                .await
            };
            let (ours, cas) = if round % 2 == 0 {
                let ours = http.await?;
                (ours, cas.await?)
            } else {
                let cas = cas.await?;
                (http.await?, cas)
            };
            if rounds > 1 {
                let first = if round % 2 == 0 { "http" } else { "cas" };
                println!("# round {} of {rounds}, {first} first", round + 1);
            }
            ours.print("refresh", n, "http");
            baseline_ratio("refresh", n, &ours, &cas, "cas", "goal: ok/s >= 0.7x");
            runs.push((ours.rps() / cas.rps(), ours, ids));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if rounds > 1 {
            let each: Vec<String> = runs.iter().map(|r| format!("{:.2}x", r.0)).collect();
            println!(
                "{:<14} {:>7} {:<12} {:>9.2}x   rounds, lowest first: {}  (goal: median >= 0.7x)",
                "refresh",
                n,
                "median/cas",
                runs[rounds / 2].0,
                each.join(" "),
            );
        }
        let (_, ours, ids) = runs.swap_remove(rounds / 2);
        quiesce(&svc.pool).await?;
        let raw = with_hot_share(&svc.pool, "sessions", "raw-sql", async {
            Ok(drive_clients("refresh-raw", raw_chains(svc, &ids), duration).await)
        })
        .await?;
        raw_sql_ratio("refresh", n, &ours, &raw, "goal: ok/s >= 0.6x, p99 <= 2x");
        if ladder {
            let bare = Rotate::Bare { copy: false };
            raw_run(svc, &ids, n, duration, &ours, bare, "cas-same").await?;
            mark_streamed(&svc.pool, &ids, true).await?;
            let was = Rotate::Ladder { event: true };
            raw_run(svc, &ids, n, duration, &ours, was, "as-was").await?;
            mark_streamed(&svc.pool, &ids, false).await?;
            raw_run(svc, &ids, n, duration, &ours, was, "no-notify").await?;
            let no_event = Rotate::Ladder { event: false };
            raw_run(svc, &ids, n, duration, &ours, no_event, "no-event").await?;
        }
    }
    Ok(())
}
