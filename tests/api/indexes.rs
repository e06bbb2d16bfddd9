//! Every statement the code runs on `sessions` uses an index on a table of 100k sessions.
//!
//! The statements are not listed by hand: every `query!` of the crate is in `.sqlx/`, so a
//! new statement is checked as soon as its query data is committed. The statements that run
//! inside the SQL functions (`latchkey_expire_batch()`, the store's multi-row
//! `latchkey_store_save_many()` and `latchkey_store_create_many()`, `latchkey_revoke()` and
//! the selections of `latchkey_revoke_owner()` and `latchkey_revoke_user_sessions()`) are
//! listed in [`FUNCTION_STATEMENTS`], and the test first checks each function still contains
//! them word for word; the statements built at run time (the coalesced reads) come from
//! `latchkey::store::coalesce::runtime_statements`.

use crate::helpers::TestDb;
use sqlx::{Connection, PgConnection};

/// Statements that may scan: run by hand by an operator, never on a request path.
/// The listing's one statement holds such a scan in its branch for all owners, behind a
/// `One-Time Filter: ($1 IS NULL)`; `tests/api/listing.rs` checks that for one owner that
/// branch is never executed and the owner's index is read.
const NOT_HOT: &[(&str, &str)] = &[(
    "FROM latchkey.session_overview ORDER BY created_at DESC LIMIT 1000",
    "latchkey sessions list without --owner: a top-N of the whole table, run by hand",
)];

/// The statements of the SQL functions as written there (function, statement), with the
/// plpgsql variables they use and the parameter that stands for each in the EXPLAIN.
type FunctionStatement = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The store functions' arrays and their types.
const STORE_ARRAYS: [(&str, &str); 5] = [
    ("ids", "$1::uuid[]"),
    ("hashes", "$2::bytea[]"),
    ("session_data", "$3::jsonb[]"),
    ("owners", "$4::text[]"),
    ("expiries", "$5::timestamptz[]"),
];

const FUNCTION_STATEMENTS: &[FunctionStatement] = &[
    (
        "latchkey_expire_batch",
        "SELECT s.rel, s.blk, min(s.expires_at) AS first, max(s.expires_at) AS last \
         FROM (SELECT tableoid AS rel, (ctid::text::point)[0]::bigint AS blk, expires_at \
         FROM sessions WHERE expires_at >= expired_start AND expires_at <= now() \
         ORDER BY expires_at LIMIT batch_size) AS s \
         GROUP BY s.rel, s.blk ORDER BY first, s.rel, s.blk",
        &[("batch_size", "$1::int"), ("expired_start", "$2::timestamptz")],
    ),
    (
        "latchkey_expire_batch",
        "SELECT id FROM sessions WHERE ctid >= format('(%s,0)', pg.blk)::tid \
         AND ctid < format('(%s,0)', pg.blk + 1)::tid AND tableoid = pg.rel AND expires_at <= now() \
         ORDER BY expires_at, id LIMIT room FOR UPDATE SKIP LOCKED",
        &[
            ("pg.blk", "$1::bigint"),
            ("pg.rel", "$2::oid"),
            ("room", "$3::int"),
        ],
    ),
    (
        "latchkey_expire_batch",
        "SELECT id, expires_at FROM sessions WHERE expires_at >= expired_start AND expires_at <= now() \
         ORDER BY expires_at LIMIT batch_size FOR UPDATE SKIP LOCKED",
        &[("batch_size", "$1::int"), ("expired_start", "$2::timestamptz")],
    ),
    (
        "latchkey_expire_batch",
        "DELETE FROM sessions WHERE id = ANY (chosen) \
         RETURNING id, owner_key, expires_at, absolute_expires_at, revoked_at",
        &[("chosen", "$1::uuid[]")],
    ),
    (
        "latchkey_expire_batch",
        "DELETE FROM sessions WHERE id = ANY (ARRAY(SELECT id FROM sessions WHERE revoked_at >= revoked_start \
         AND revoked_at < revoked_before AND expires_at > now() ORDER BY revoked_at LIMIT batch_size \
         FOR UPDATE SKIP LOCKED)) RETURNING id, revoked_at",
        &[
            ("batch_size", "$1::int"),
            ("revoked_start", "$2::timestamptz"),
            ("revoked_before", "$3::timestamptz"),
        ],
    ),
    (
        "latchkey_expire_batch",
        "DELETE FROM session_events WHERE id = ANY (ARRAY(SELECT id FROM session_events WHERE occurred_at >= events_start \
         AND occurred_at < events_before ORDER BY occurred_at LIMIT batch_size FOR UPDATE SKIP LOCKED)) \
         RETURNING id, occurred_at",
        &[
            ("batch_size", "$1::int"),
            ("events_start", "$2::timestamptz"),
            ("events_before", "$3::timestamptz"),
        ],
    ),
    (
        "latchkey_store_save_many",
        "UPDATE sessions s SET data = row_data, owner_key = coalesce(row_own, 'anon:' || s.id::text), \
         expires_at = CASE WHEN least(row_exp, s.absolute_expires_at) >= s.expires_at \
         AND least(row_exp, s.absolute_expires_at) < s.expires_at + make_interval(secs => touch_secs) \
         THEN s.expires_at ELSE least(row_exp, s.absolute_expires_at) END, last_used_at = now(), \
         version = s.version + 1 \
         WHERE s.id = row_id AND s.token_hash = row_hash AND s.kind = 'stateful' \
         AND s.revoked_at IS NULL AND s.expires_at > now() \
         AND (s.data IS DISTINCT FROM row_data \
         OR s.owner_key IS DISTINCT FROM coalesce(row_own, 'anon:' || s.id::text) \
         OR least(row_exp, s.absolute_expires_at) < s.expires_at \
         OR least(row_exp, s.absolute_expires_at) >= s.expires_at + make_interval(secs => touch_secs))",
        &[
            ("row_id", "$1::uuid"),
            ("row_hash", "$2::bytea"),
            ("row_data", "$3::jsonb"),
            ("row_own", "$4::text"),
            ("row_exp", "$5::timestamptz"),
            ("touch_secs", "$6::float8"),
        ],
    ),
    (
        "latchkey_store_create_many",
        "INSERT INTO sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at, data) \
         SELECT r.id, 'stateful', coalesce(r.owner, 'anon:' || r.id::text), r.hash, \
         least(r.expiry, cap.at), cap.at, r.data \
         FROM unnest(ids, hashes, session_data, owners, expiries) AS r(id, hash, data, owner, expiry), \
         (SELECT now() + make_interval(secs => ttl_secs) AS at) AS cap \
         ON CONFLICT ON CONSTRAINT sessions_pkey DO NOTHING RETURNING id",
        &[
            STORE_ARRAYS[0],
            STORE_ARRAYS[1],
            STORE_ARRAYS[2],
            STORE_ARRAYS[3],
            STORE_ARRAYS[4],
            ("ttl_secs", "$6::float8"),
        ],
    ),
    (
        "latchkey_revoke",
        "UPDATE sessions AS s SET revoked_at = now(), revoked_reason = reason, \
         data = CASE WHEN clear_data THEN '{}'::jsonb ELSE s.data END \
         WHERE s.id = sid AND s.revoked_at IS NULL \
         AND (owners IS NULL OR s.owner_key = ANY (owners)) RETURNING s.id, s.owner_key",
        &[
            ("= sid", "= $1::uuid"),
            ("= reason", "= $2::text"),
            ("clear_data", "$3::boolean"),
            ("owners", "$4::text[]"),
        ],
    ),
    (
        "latchkey_revoke_owner",
        "SELECT s.id FROM sessions AS s WHERE s.owner_key = owner AND s.revoked_at IS NULL",
        &[("= owner", "= $1::text")],
    ),
    (
        "latchkey_revoke_user_sessions",
        "SELECT s.id FROM sessions AS s \
         WHERE s.owner_key = ANY (o.owners) AND s.revoked_at IS NULL",
        &[("o.owners", "$1::text[]")],
    ),
];

fn squash(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every statement of `.sqlx/`: (query text, number of parameters).
fn compiled_statements() -> Vec<(String, usize)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/.sqlx");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect(".sqlx") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let query = v["query"].as_str().expect("query").to_owned();
            let params = v["describe"]["parameters"]["Left"]
                .as_array()
                .map_or(0, Vec::len);
            out.push((query, params));
        }
    }
    out.sort();
    out
}

/// 100k sessions over 20k owners (10% expired, 2% revoked), 200k events, then ANALYZE.
async fn load(conn: &mut PgConnection) {
    sqlx::query(
        "INSERT INTO sessions (id, kind, owner_key, token_hash, prev_token_hash, prev_valid_until,
                               version, created_at, last_used_at, expires_at,
                               absolute_expires_at, revoked_at, revoked_reason, user_agent, ip)
         SELECT gen_random_uuid(),
                CASE WHEN i % 2 = 0 THEN 'stateful' ELSE 'stateless' END::session_kind,
                CASE WHEN i % 10 = 0 THEN 'anon:' || gen_random_uuid()
                     ELSE 'user:' || md5((i % 20000)::text)::uuid END,
                sha256(convert_to('t' || i, 'UTF8')),
                CASE WHEN i % 3 = 0 THEN sha256(convert_to('p' || i, 'UTF8')) END,
                CASE WHEN i % 3 = 0 THEN now() - interval '1 hour' END,
                1 + i % 5,
                now() - (i % 1000) * interval '1 hour',
                now() - (i % 600) * interval '1 minute',
                now() + ((i % 100) - 10) * interval '1 hour',
                now() + ((i % 100) - 10) * interval '1 hour' + interval '20 days',
                CASE WHEN i % 50 = 0 THEN now() - (i % 30) * interval '1 day' END,
                CASE WHEN i % 50 = 0 THEN 'logout' END,
                'Mozilla/5.0 test ' || (i % 40),
                ('10.0.' || (i % 250) || '.' || (i % 200))::inet
         FROM generate_series(1, 100000) AS i",
    )
    .execute(&mut *conn)
    .await
    .expect("load sessions");
    sqlx::query(
        "INSERT INTO session_events (occurred_at, session_id, owner_key, event)
         SELECT now() - (i % 2400) * interval '1 hour', gen_random_uuid(),
                'user:' || md5((i % 20000)::text)::uuid, 'refreshed'
         FROM generate_series(1, 200000) AS i",
    )
    .execute(&mut *conn)
    .await
    .expect("load events");
    sqlx::query("ANALYZE latchkey.sessions, latchkey.session_events")
        .execute(&mut *conn)
        .await
        .expect("analyze");
}

/// The generic plan (what a prepared statement gets after a few runs, whatever the values).
async fn generic_plan(conn: &mut PgConnection, sql: &str, params: usize) -> String {
    sqlx::query(&format!("PREPARE hot AS {sql}"))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("prepare {sql}: {e}"));
    let nulls = vec!["NULL"; params].join(", ");
    let args = if params == 0 {
        String::new()
    } else {
        format!("({nulls})")
    };
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE hot{args}"))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("explain {sql}: {e}"));
    sqlx::query("DEALLOCATE hot")
        .execute(&mut *conn)
        .await
        .expect("deallocate");
    plan.join("\n")
}

fn scans_a_session_table(plan: &str) -> bool {
    plan.lines().any(|l| {
        let l = l.trim_end();
        ["sessions", "session_events"].iter().any(|t| {
            let needle = format!("Seq Scan on {t}");
            l.ends_with(&needle) || l.contains(&format!("{needle} "))
        })
    })
}

#[tokio::test]
async fn every_statement_on_sessions_uses_an_index_on_a_table_of_100k_sessions() {
    let db = TestDb::new().await;
    let mut conn = PgConnection::connect_with(&db.options)
        .await
        .expect("connect");
    // As the SQL functions run (their own search_path): their statements, quoted from their
    // bodies, name the tables unqualified.
    sqlx::query("SET search_path = latchkey")
        .execute(&mut conn)
        .await
        .expect("search_path");
    load(&mut conn).await;
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .expect("generic plans");

    // The detector itself sees a scan when there is one.
    let scan = generic_plan(
        &mut conn,
        "SELECT id FROM sessions WHERE user_agent = $1",
        1,
    )
    .await;
    assert!(scans_a_session_table(&scan), "{scan}");

    let mut statements = compiled_statements();
    assert!(statements.len() >= 10, "the .sqlx query data is there");
    for (function, text, vars) in FUNCTION_STATEMENTS {
        let source: String = sqlx::query_scalar(
            "SELECT prosrc FROM pg_proc WHERE proname = $1 AND pronamespace = 'latchkey'::regnamespace",
        )
            .bind(function)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("source of {function}: {e}"));
        let text = squash(text);
        assert!(
            squash(&source).contains(&text),
            "{function}() no longer runs `{text}`: update FUNCTION_STATEMENTS"
        );
        let mut sql = text;
        for (var, param) in *vars {
            sql = sql.replace(var, param);
        }
        let params = vars
            .iter()
            .map(|(_, p)| p)
            .collect::<std::collections::BTreeSet<_>>();
        statements.push((sql, params.len()));
    }
    for (sql, params) in latchkey::store::coalesce::runtime_statements() {
        statements.push((sql.to_owned(), params));
    }

    let mut offenders = Vec::new();
    let mut checked = 0;
    for (sql, params) in &statements {
        let flat = squash(sql);
        if NOT_HOT.iter().any(|(frag, _)| flat.contains(frag)) {
            continue;
        }
        let plan = generic_plan(&mut conn, sql, *params).await;
        checked += 1;
        if scans_a_session_table(&plan) {
            offenders.push(format!("{flat}\n{plan}"));
        }
    }
    assert!(checked >= 10, "only {checked} statements checked");
    assert!(
        offenders.is_empty(),
        "sequential scans:\n\n{}",
        offenders.join("\n\n")
    );
}
