//! The rows of the scale scenario: `sessions` filled with SQL (`INSERT … SELECT
//! generate_series`, in the real schema with its indexes, constraints and triggers), and the
//! sizes of the table and of each of its indexes.

use latchkey::store::{OwnerKey, RevokeReason};
use std::time::Instant;

use sqlx::PgPool;

/// Mixed into each filled session's id to make its token secret: the bench can rebuild the
/// token of any filled row (`secret = SHA-256(id || SALT)`, `token_hash = SHA-256(secret)`).
pub(crate) const SALT: &[u8] = b"latchkey-bench-scale";

/// Rows per `INSERT` statement.
const BATCH: i64 = 250_000;

/// Rows `lo..hi` (by their number `i`): a mix of kinds, states and owners.
///
/// - kind: every other row stateless (refresh token), the rest stateful (cookie);
/// - state (by `(i / 2) % 10`): 7 in 10 live, 2 expired (not yet purged), 1 revoked;
/// - owner: 1 row in 50 belongs to one of 10 heavy owners (thousands of sessions each at a
///   million rows), 1 in 7 is anonymous (its own owner), the rest go to ordinary users with
///   about four sessions each;
/// - stateless rows have been rotated (previous hash, grace over, sealed successor);
///   a third of the stateful rows carry tower-sessions data;
/// - live rows stay live for at least a day, so the runs never see them expire.
const FILL_SQL: &str = r#"
INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, prev_token_hash,
    prev_valid_until, sealed_successor, version, created_at, last_used_at, refreshed_at,
    expires_at, absolute_expires_at, revoked_at, revoked_reason, user_agent, ip, data)
SELECT g.id,
       CASE WHEN g.i % 2 = 0 THEN 'stateless' ELSE 'stateful' END::latchkey.session_kind,
       CASE WHEN g.i % 50 = 0 THEN $4 || md5('heavy' || (g.i / 50) % 10)::uuid
            WHEN g.i % 7 = 0 THEN $5 || g.id
            ELSE $4 || md5('owner' || g.i / 4)::uuid END,
       sha256(sha256(uuid_send(g.id) || $3)),
       CASE WHEN g.i % 2 = 0 THEN sha256(int8send(g.i)) END,
       CASE WHEN g.i % 2 = 0 THEN g.used - interval '5 minutes' END,
       CASE WHEN g.i % 2 = 0
            THEN sha256(int8send(-g.i)) || sha256(int8send(g.i + 1)) || substr(sha256(int8send(g.i + 2)), 1, 8)
       END,
       CASE WHEN g.i % 2 = 0 THEN 2 + g.i % 40 ELSE 1 END,
       g.used - interval '2 days',
       g.used,
       CASE WHEN g.i % 2 = 0 THEN g.used END,
       CASE WHEN g.state = 7 OR g.state = 8 THEN now() - interval '1 hour' - (g.i % 97) * interval '1 hour'
            ELSE g.used + interval '7 days' END,
       CASE WHEN g.state = 7 OR g.state = 8 THEN now() - interval '1 hour'
            ELSE g.used + interval '30 days' END,
       CASE WHEN g.state = 9 THEN g.used END,
       CASE WHEN g.state = 9 THEN ($6::text[])[1 + g.i % 4] END,
       (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36',
              'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
              'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
              'okhttp/4.12.0'])[1 + g.i % 4],
       ('10.' || (g.i >> 16) % 256 || '.' || (g.i >> 8) % 256 || '.' || g.i % 256)::inet,
       CASE WHEN g.i % 6 = 1
            THEN jsonb_build_object('counter', g.i, 'user', jsonb_build_object('name', 'bench', 'roles', jsonb_build_array('a', 'b')))
            ELSE '{}'::jsonb END
FROM (
    SELECT i, gen_random_uuid() AS id, (i / 2) % 10 AS state,
           -- Last used between now and a day ago (expired rows: long ago).
           now() - (i % 86400) * interval '1 second' AS used
    FROM generate_series($1::bigint, $2::bigint - 1) AS i
) AS g
"#;

/// Fills rows `from..to` in batches, two statements at a time; returns the seconds taken.
pub(crate) async fn fill(pool: &PgPool, from: i64, to: i64) -> anyhow::Result<f64> {
    let began = Instant::now();
    let batches: Vec<(i64, i64)> = (from..to)
        .step_by(usize::try_from(BATCH)?)
        .map(|lo| (lo, (lo + BATCH).min(to)))
        .collect();
    for pair in batches.chunks(2) {
        let mut running = Vec::new();
        for &(lo, hi) in pair {
            let pool = pool.clone();
            running.push(tokio::spawn(async move {
                sqlx::query(FILL_SQL)
                    .bind(lo)
                    .bind(hi)
                    .bind(SALT)
                    .bind(OwnerKey::USER_PREFIX)
                    .bind(OwnerKey::ANON_PREFIX)
                    .bind(
                        [
                            RevokeReason::Logout,
                            RevokeReason::LogoutAll,
                            RevokeReason::ReuseDetected,
                            RevokeReason::Admin,
                        ]
                        .map(RevokeReason::as_str),
                    )
                    .execute(&pool)
                    .await
            }));
        }
        for r in running {
            r.await??;
        }
        eprint!("\r\x1b[Kfilled {} of {to} rows", pair[pair.len() - 1].1);
    }
    eprint!("\r\x1b[K");
    Ok(began.elapsed().as_secs_f64())
}

/// `VACUUM (ANALYZE)` of `sessions`, as autovacuum would after a bulk load: hint bits set and
/// the visibility map written before anything is measured. Returns the seconds taken.
pub(crate) async fn settle(pool: &PgPool) -> anyhow::Result<f64> {
    let began = Instant::now();
    sqlx::query("VACUUM (ANALYZE) latchkey.sessions")
        .execute(pool)
        .await?;
    Ok(began.elapsed().as_secs_f64())
}

/// Bytes of `sessions`: its rows, the heap, TOAST, every index by name, all indexes.
pub(crate) struct Sizes {
    pub(crate) rows: i64,
    pub(crate) heap: i64,
    pub(crate) toast: i64,
    pub(crate) indexes: Vec<(String, i64)>,
    pub(crate) all_indexes: i64,
    pub(crate) events: i64,
}

/// Measures [`Sizes`] (the row count is exact: a scan).
pub(crate) async fn sizes(pool: &PgPool) -> anyhow::Result<Sizes> {
    let (rows, heap, toast, all_indexes, events): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM latchkey.sessions),
                pg_relation_size('latchkey.sessions'),
                coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0),
                pg_indexes_size('latchkey.sessions'),
                pg_total_relation_size('latchkey.session_events')
         FROM pg_class AS c WHERE c.oid = 'latchkey.sessions'::regclass",
    )
    .fetch_one(pool)
    .await?;
    let indexes = sqlx::query_as(
        "SELECT c.relname::text, pg_relation_size(i.indexrelid)
         FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
         WHERE i.indrelid = 'latchkey.sessions'::regclass ORDER BY c.relname",
    )
    .fetch_all(pool)
    .await?;
    Ok(Sizes {
        rows,
        heap,
        toast,
        indexes,
        all_indexes,
        events,
    })
}

impl Sizes {
    /// Prints bytes per session: heap, TOAST, each index, all indexes, total.
    pub(crate) fn print_per_row(&self, label: &str) {
        let per = |b: i64| b as f64 / self.rows.max(1) as f64;
        println!(
            "# {label}: {} rows; bytes per session: heap {:.0}, toast {:.1}, indexes {:.0}, total {:.0}",
            self.rows,
            per(self.heap),
            per(self.toast),
            per(self.all_indexes),
            per(self.heap + self.toast + self.all_indexes)
        );
        for (name, bytes) in &self.indexes {
            println!(
                "#   {name:<26} {:>7.1} bytes/session {:>9.1} MiB",
                per(*bytes),
                mib(*bytes)
            );
        }
    }

    /// Prints the growth from `before` to `self`, in MiB and percent.
    pub(crate) fn print_growth(&self, before: &Sizes) {
        let row = |name: &str, a: i64, b: i64| {
            println!(
                "#   {name:<26} {:>9.1} -> {:>9.1} MiB  ({:+.1}%)",
                mib(a),
                mib(b),
                100.0 * (b - a) as f64 / a.max(1) as f64
            );
        };
        row("heap", before.heap, self.heap);
        for (name, b) in &self.indexes {
            let a = before
                .indexes
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, a)| *a);
            row(name, a, *b);
        }
        row("all indexes", before.all_indexes, self.all_indexes);
        row("session_events (total)", before.events, self.events);
    }
}

/// Bytes in MiB.
fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
