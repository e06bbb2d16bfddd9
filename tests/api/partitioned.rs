//! The partitioned simulation: latchkey's schema with `sessions` and `session_events`
//! hash-partitioned by session id into 16 parts (`sql/partitioned_sessions.sql`), as a
//! deployment spread by session id over several primaries would hold them. The statements of
//! the hot paths (check, refresh, the tower-sessions store's load, save and create, touch,
//! the audit append, the live stream's mark, the revocation on reuse), taken from the store's
//! source and checked against the compiled query data in `.sqlx/`, each touch exactly one
//! part: the planner keeps one (`EXPLAIN (FORMAT JSON)`) and running it reads or writes one
//! (`pg_stat_xact_user_tables`); a save or a revocation of k sessions reaches at most their k
//! parts, and on the unpartitioned table finds each by its primary key. docs/scaling.md lists
//! the statements that reach more.

use std::collections::BTreeSet;

use latchkey::store::{
    NewSession, OwnerKey, PgSessionStore, Store, FIND_SESSION_SQL, ROTATE_AUDITED_SQL, ROTATE_SQL,
};
use latchkey::SessionKind;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;
use uuid::Uuid;

use crate::helpers::TestDb;

const PARTITIONED_SQL: &str = include_str!("../../sql/partitioned_sessions.sql");
const SESSIONS_RS: &str = include_str!("../../src/store/sessions.rs");
const TOWER_RS: &str = include_str!("../../src/store/tower.rs");
const REVOKE_RS: &str = include_str!("../../src/store/revoke.rs");
const LIVE_RS: &str = include_str!("../../src/store/live.rs");

/// The SQL string literal (`r#"…"#` or `"…"`) of the first `sqlx::query…` after `marker` in
/// `source`.
fn statement_after(source: &'static str, marker: &str) -> &'static str {
    let at = source
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the store's source"));
    let at = at
        + source[at..]
            .find("sqlx::query")
            .expect("a statement after the marker");
    let rest = &source[at..];
    let raw = rest.find("r#\"");
    let plain = rest.find('"');
    match (raw, plain) {
        (Some(r), Some(p)) if r < p => {
            let open = r + 3;
            let close = rest[open..].find("\"#").expect("the literal's end") + open;
            &rest[open..close]
        }
        (_, Some(p)) => {
            let open = p + 1;
            let close = rest[open..].find('"').expect("the literal's end") + open;
            &rest[open..close]
        }
        _ => panic!("no literal after {marker}"),
    }
}

fn normalised(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every statement text of the compiled query data (`.sqlx/*.json`), normalised.
fn compiled_statements() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".sqlx");
    std::fs::read_dir(&dir)
        .expect(".sqlx/")
        .map(|entry| {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            let value: serde_json::Value = serde_json::from_str(&text).expect("json");
            normalised(value["query"].as_str().expect("a query"))
        })
        .collect()
}

/// The hot paths' statements, each named by where it runs, from the store's source.
fn hot_statements() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "check, refresh: read the session (find_one)",
            FIND_SESSION_SQL,
        ),
        ("refresh: rotate (compare-and-swap)", ROTATE_SQL),
        (
            "refresh: rotate with its audit event (refresh_events)",
            ROTATE_AUDITED_SQL,
        ),
        (
            "check: touch",
            statement_after(SESSIONS_RS, "pub async fn touch("),
        ),
        (
            "refresh: audit event (record_event)",
            statement_after(SESSIONS_RS, "pub async fn record_event("),
        ),
        (
            "refresh: reuse detected (revoke_reused)",
            statement_after(REVOKE_RS, "pub async fn revoke_reused("),
        ),
        (
            "stream: mark and status (stream_status)",
            statement_after(LIVE_RS, "pub async fn stream_status("),
        ),
        (
            "store: load",
            statement_after(TOWER_RS, "pub(super) async fn load_one("),
        ),
        (
            "store: save (and its touch)",
            statement_after(TOWER_RS, "pub(super) async fn save_rows("),
        ),
        (
            "store: create",
            statement_after(TOWER_RS, "pub(super) async fn create_rows("),
        ),
    ]
}

/// A literal of PostgreSQL type `ty` for a parameter, with `id` for every uuid.
fn argument(ty: &str, id: Uuid) -> String {
    if let Some(element) = ty.strip_suffix("[]") {
        // A text array is the store's owner keys: NULL, the session's own `anon:` key.
        let element = match element {
            "text" => "NULL".to_owned(),
            other => argument(other, id),
        };
        return format!("ARRAY[{element}]::{ty}");
    }
    let value = match ty {
        "uuid" => id.to_string(),
        "bytea" => format!("\\x{}", "00".repeat(32)),
        "jsonb" | "json" => "{}".to_owned(),
        "timestamp with time zone" => return "now() + interval '1 hour'".to_owned(),
        "boolean" => "false".to_owned(),
        "inet" => "10.0.0.1".to_owned(),
        "latchkey.session_event_kind" | "session_event_kind" => "refreshed".to_owned(),
        "latchkey.session_kind" | "session_kind" => "stateful".to_owned(),
        "text" | "character varying" => "admin".to_owned(),
        _ => "1".to_owned(),
    };
    format!("'{}'::{ty}", value.replace('\'', "''"))
}

/// The partitions of `sessions` and `session_events` named anywhere in an EXPLAIN JSON plan.
fn planned_parts(plan: &serde_json::Value, into: &mut BTreeSet<String>) {
    match plan {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if key == "Relation Name" {
                    if let Some(name) = value.as_str().filter(|n| is_part(n)) {
                        into.insert(name.to_owned());
                    }
                }
                planned_parts(value, into);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| planned_parts(v, into)),
        _ => {}
    }
}

fn is_part(name: &str) -> bool {
    ["sessions_p", "session_events_p"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The partitions a statement plans, touches (scans or writes) and writes.
#[derive(Debug, Default)]
struct Parts {
    planned: BTreeSet<String>,
    touched: BTreeSet<String>,
    written: BTreeSet<String>,
}

/// What `statement`, run once for the session `id` in a transaction rolled back after, plans,
/// touches and writes.
async fn parts_of(conn: &mut PgConnection, statement: &str, id: Uuid) -> Parts {
    sqlx::raw_sql(&format!("PREPARE hot AS {statement}"))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("PREPARE {statement}: {e}"));
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(parameter_types)::regtype::text FROM pg_prepared_statements WHERE name = 'hot'",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("parameter types");
    let args: Vec<String> = types.iter().map(|t| argument(t, id)).collect();
    let execute = if args.is_empty() {
        "EXECUTE hot".to_owned()
    } else {
        format!("EXECUTE hot({})", args.join(", "))
    };
    let mut tx = conn.begin().await.expect("begin");
    let plan: serde_json::Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {execute}"))
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {execute}: {e}"));
    let mut planned = BTreeSet::new();
    planned_parts(&plan, &mut planned);
    // The backend's counts not yet reported (earlier statements' included): the difference
    // around the statement is its own.
    const COUNTS: &str = "SELECT relname::text, seq_scan + coalesce(idx_scan, 0),
                n_tup_ins + n_tup_upd + n_tup_del
         FROM pg_stat_xact_user_tables WHERE schemaname = 'latchkey'";
    let before: std::collections::HashMap<String, (i64, i64)> = sqlx::query_as(COUNTS)
        .fetch_all(&mut *tx)
        .await
        .expect("pg_stat_xact_user_tables")
        .into_iter()
        .map(|(name, scans, writes)| (name, (scans, writes)))
        .collect();
    sqlx::raw_sql(&execute)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{execute}: {e}"));
    let stats: Vec<(String, bool, bool)> = sqlx::query_as::<_, (String, i64, i64)>(COUNTS)
        .fetch_all(&mut *tx)
        .await
        .expect("pg_stat_xact_user_tables")
        .into_iter()
        .map(|(name, scans, writes)| {
            let (s0, w0) = before.get(&name).copied().unwrap_or_default();
            (name, scans > s0, writes > w0)
        })
        .collect();
    tx.rollback().await.expect("rollback");
    sqlx::raw_sql("DEALLOCATE hot")
        .execute(&mut *conn)
        .await
        .expect("deallocate");
    let mut parts = Parts {
        planned,
        ..Parts::default()
    };
    for (name, scanned, wrote) in stats.into_iter().filter(|(n, _, _)| is_part(n)) {
        if scanned || wrote {
            parts.touched.insert(name.clone());
        }
        if wrote {
            parts.written.insert(name);
        }
    }
    parts
}

/// The parts of `sessions` among `parts`.
fn of_sessions(parts: &BTreeSet<String>) -> BTreeSet<String> {
    parts
        .iter()
        .filter(|p| p.starts_with("sessions_p"))
        .cloned()
        .collect()
}

/// A fresh migrated database turned partitioned by the script, with a stateful session
/// (through the tower-sessions store) and a stateless one (through the store).
async fn partitioned_db() -> (TestDb, Uuid, Uuid) {
    let db = TestDb::new().await;
    sqlx::raw_sql(PARTITIONED_SQL)
        .execute(&db.pool)
        .await
        .expect("sql/partitioned_sessions.sql");
    let parts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent IN
         ('latchkey.sessions'::regclass, 'latchkey.session_events'::regclass)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("parts");
    assert_eq!(parts, 32, "16 parts each");
    let store = Store::new(db.pool.clone());
    let stateless = Uuid::new_v4();
    store
        .create_session(&NewSession {
            id: stateless,
            kind: SessionKind::Stateless,
            owner_key: OwnerKey::Anonymous(Uuid::new_v4()),
            token_hash: [5; 32],
            idle_ttl_secs: 3600.0,
            absolute_ttl_secs: 86_400.0,
            user_agent: None,
            ip: None,
            data: json!({}),
            event_detail: json!({}),
        })
        .await
        .expect("a session on the partitioned table");
    let tower = PgSessionStore::new(db.pool.clone());
    let mut record = Record {
        id: Id::default(),
        data: Default::default(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    tower.create(&mut record).await.expect("a stored session");
    assert!(tower.load(&record.id).await.expect("load").is_some());
    let stateful = PgSessionStore::row_id(&record.id);
    (db, stateless, stateful)
}

#[tokio::test]
async fn each_hot_path_statement_plans_and_touches_one_partition_of_sessions() {
    let (db, stateless, stateful) = partitioned_db().await;
    let compiled = compiled_statements();
    let mut conn = db.pool.acquire().await.expect("connection");
    for (what, statement) in hot_statements() {
        // The rotation's two texts are the constants `Store::rotate` runs itself; every other
        // statement is a `query!` literal, checked against what .sqlx/ compiled.
        let run_as_exported = [ROTATE_SQL, ROTATE_AUDITED_SQL].contains(&statement);
        assert!(
            run_as_exported || compiled.contains(&normalised(statement)),
            "{what}: not a statement of .sqlx/ (the store's text moved?)"
        );
        let id = if what.starts_with("store:") {
            stateful
        } else {
            stateless
        };
        let own: String = sqlx::query_scalar(
            "SELECT tableoid::regclass::text FROM latchkey.sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .expect("the session's part");
        let own = own.trim_start_matches("latchkey.").to_owned();
        let allowed = BTreeSet::from([own.clone(), own.replace("sessions_p", "session_events_p")]);
        let parts = parts_of(&mut conn, statement, id).await;
        assert!(
            parts.written.is_subset(&allowed),
            "{what}: writes {:?}, not only {allowed:?}",
            parts.written
        );
        assert!(!parts.touched.is_empty(), "{what}: touches nothing?");
        assert!(
            parts.touched.is_subset(&allowed) && parts.planned.is_subset(&allowed),
            "{what}: plans {:?} and touches {:?}, not only {allowed:?}",
            parts.planned,
            parts.touched
        );
    }
}

#[tokio::test]
async fn an_owner_wide_statement_reaches_every_partition() {
    // The control: listing an owner's sessions has no session id to prune by, and the check
    // above sees it.
    let (db, _, _) = partitioned_db().await;
    let listing = statement_after(
        include_str!("../../src/store/listing.rs"),
        "pub async fn list_sessions(",
    );
    let mut conn = db.pool.acquire().await.expect("connection");
    let parts = parts_of(&mut conn, listing, Uuid::new_v4()).await;
    assert_eq!(of_sessions(&parts.planned).len(), 16, "{parts:?}");
    conn.close().await.ok();
}

/// A stateful session's id and token hash.
type Stored = (Uuid, Vec<u8>);

/// `n` stateful sessions made through the tower-sessions store.
async fn tower_sessions(pool: &sqlx::PgPool, n: usize) -> Vec<Stored> {
    let tower = PgSessionStore::new(pool.clone());
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut record = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        tower.create(&mut record).await.expect("a stored session");
        ids.push(PgSessionStore::row_id(&record.id));
    }
    sqlx::query_as("SELECT id, token_hash FROM latchkey.sessions WHERE id = ANY($1) ORDER BY id")
        .bind(&ids)
        .fetch_all(pool)
        .await
        .expect("the sessions' hashes")
}

/// The store's save of `sessions` (new data for each, so each is written) and a revocation of
/// them, as literal calls of the two functions.
fn save_and_revoke(sessions: &[Stored]) -> [String; 2] {
    let list = |f: &dyn Fn(usize, &Stored) -> String| {
        sessions
            .iter()
            .enumerate()
            .map(|(i, s)| f(i, s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ids = list(&|_, (id, _)| format!("'{id}'"));
    let save = format!(
        "SELECT latchkey.latchkey_store_save_many(ARRAY[{ids}]::uuid[], ARRAY[{}]::bytea[], \
         ARRAY[{}]::jsonb[], ARRAY[{}]::text[], ARRAY[{}]::timestamptz[], 60)",
        list(&|_, (_, hash)| format!(
            "'\\x{}'",
            hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )),
        list(&|i, _| format!("'{{\"n\": {i}}}'")),
        list(&|_, _| "NULL".to_owned()),
        list(&|_, _| "now() + interval '2 hours'".to_owned()),
    );
    let revoke = format!(
        "SELECT r.id FROM latchkey.latchkey_revoke(ARRAY[{ids}]::uuid[], 'reuse_detected', \
         false, NULL, '10.0.0.1') AS r(id)"
    );
    [save, revoke]
}

#[tokio::test]
async fn a_save_or_revocation_of_k_sessions_reaches_only_their_parts() {
    let (db, _, _) = partitioned_db().await;
    let mut conn = db.pool.acquire().await.expect("connection");
    for k in [1, 3] {
        let sessions = tower_sessions(&db.pool, k).await;
        let ids: Vec<Uuid> = sessions.iter().map(|(id, _)| *id).collect();
        let own: BTreeSet<String> = sqlx::query_scalar::<_, String>(
            "SELECT tableoid::regclass::text FROM latchkey.sessions WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .expect("the sessions' parts")
        .into_iter()
        .map(|p| p.trim_start_matches("latchkey.").to_owned())
        .collect();
        assert!(!own.is_empty() && own.len() <= k);
        let events: BTreeSet<String> = own
            .iter()
            .map(|p| p.replace("sessions_p", "session_events_p"))
            .collect();
        let [save, revoke] = save_and_revoke(&sessions);
        let saved = parts_of(&mut conn, &save, Uuid::nil()).await;
        assert_eq!(saved.written, own, "save of {k}: {saved:?}");
        assert_eq!(saved.touched, own, "save of {k}: {saved:?}");
        let revoked = parts_of(&mut conn, &revoke, Uuid::nil()).await;
        let both: BTreeSet<String> = own.union(&events).cloned().collect();
        assert_eq!(revoked.written, both, "revocation of {k}: {revoked:?}");
        assert_eq!(revoked.touched, both, "revocation of {k}: {revoked:?}");
    }
    conn.close().await.ok();
}

#[tokio::test]
async fn on_the_unpartitioned_table_a_save_or_revocation_probes_the_primary_key() {
    // The per-session statements must cost the ordinary schema nothing: an index probe per
    // session, never a sequential scan of `sessions`.
    let db = crate::helpers::TestDb::new().await;
    let mut conn = db.pool.acquire().await.expect("connection");
    const COUNTS: &str = "SELECT seq_scan, coalesce(idx_scan, 0), n_tup_upd
        FROM pg_stat_xact_user_tables WHERE schemaname = 'latchkey' AND relname = 'sessions'";
    for k in [1, 3] {
        let sessions = tower_sessions(&db.pool, k).await;
        for statement in save_and_revoke(&sessions) {
            let mut tx = conn.begin().await.expect("begin");
            let (seq0, idx0, upd0): (i64, i64, i64) = sqlx::query_as(COUNTS)
                .fetch_one(&mut *tx)
                .await
                .expect("counts");
            let rows = sqlx::raw_sql(&statement).fetch_all(&mut *tx).await;
            // The save returns its count in one row, the revocation one row per session.
            let returned = if statement.contains("latchkey_revoke") {
                k
            } else {
                1
            };
            assert_eq!(rows.expect(&statement).len(), returned, "{statement}");
            let (seq, idx, upd): (i64, i64, i64) = sqlx::query_as(COUNTS)
                .fetch_one(&mut *tx)
                .await
                .expect("counts");
            tx.rollback().await.expect("rollback");
            assert_eq!(seq - seq0, 0, "{statement}: a sequential scan of sessions");
            assert_eq!(
                idx - idx0,
                k as i64,
                "{statement}: one index probe per session"
            );
            assert_eq!(upd - upd0, k as i64, "{statement}: one write per session");
        }
    }
    conn.close().await.ok();
}
