//! What our tower-sessions store adds over the stock one: hashed ids, atomic collisions,
//! readable jsonb, throttled sliding expiry, owner binding, an indexed purge.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use latchkey::store::{Owner, PgSessionStore, Store, OWNER_FIELD};
use sqlx::Connection as _;
use tokio::sync::Barrier;
use tower_sessions::session::{Id, Record};
use tower_sessions::{ExpiredDeletion, SessionStore};
use uuid::Uuid;

use crate::helpers::TestDb;
use crate::tower_conformance::{in_an_hour, record};
use crate::tower_support::{call, session_app};

async fn version(db: &TestDb, id: &Id) -> i64 {
    sqlx::query_scalar("SELECT version FROM latchkey.sessions WHERE id = $1")
        .bind(PgSessionStore::row_id(id))
        .fetch_one(&db.pool)
        .await
        .expect("version")
}

#[tokio::test]
async fn concurrent_creates_with_one_id_all_succeed_under_distinct_ids() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let shared = Id::default();
    let barrier = Arc::new(Barrier::new(32));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut rec = record("i", &i.to_string(), in_an_hour());
            rec.id = shared;
            barrier.wait().await;
            store.create(&mut rec).await.expect("create");
            rec
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let rec = t.await.expect("join");
        let got = store.load(&rec.id).await.expect("load").expect("present");
        assert_eq!(got.data, rec.data, "each create kept its own data");
        ids.insert(rec.id);
    }
    assert_eq!(ids.len(), 32, "every task ended with its own id");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 32);
}

#[tokio::test]
async fn version_rises_by_one_on_each_save_that_changes_the_data() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let mut rec = record("n", "0", in_an_hour());
    store.create(&mut rec).await.expect("create");
    assert_eq!(version(&db, &rec.id).await, 1);
    for n in 1..=3 {
        rec.data.insert("n".to_owned(), serde_json::json!(n));
        store.save(&rec).await.expect("save");
        assert_eq!(version(&db, &rec.id).await, 1 + n);
    }
}

#[tokio::test]
async fn a_save_that_only_slides_the_expiry_within_the_touch_interval_writes_nothing() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let mut rec = record("k", "v", in_an_hour());
    store.create(&mut rec).await.expect("create");
    let stored = |db: &TestDb| {
        let pool = db.pool.clone();
        let row = PgSessionStore::row_id(&rec.id);
        async move {
            sqlx::query_as::<_, (i64, time::OffsetDateTime, String)>(
                "SELECT version, expires_at, xmin::text FROM latchkey.sessions WHERE id = $1",
            )
            .bind(row)
            .fetch_one(&pool)
            .await
            .expect("row")
        }
    };
    let before = stored(&db).await;
    let mut later = rec.clone();
    later.expiry_date += time::Duration::seconds(30);
    store.save(&later).await.expect("save");
    assert_eq!(stored(&db).await, before, "no new row version was written");

    later.expiry_date = rec.expiry_date + time::Duration::seconds(61);
    store.save(&later).await.expect("save");
    let after = stored(&db).await;
    assert_eq!(
        after.0,
        before.0 + 1,
        "past the interval the expiry is written"
    );
    assert!(after.1 > before.1);

    // A data change inside the interval is written, but the expiry column stays put (so the
    // update touches no indexed column).
    let mut changed = later.clone();
    changed.expiry_date += time::Duration::seconds(10);
    changed
        .data
        .insert("k".to_owned(), serde_json::json!("changed"));
    store.save(&changed).await.expect("save");
    let with_data = stored(&db).await;
    assert_eq!(with_data.0, after.0 + 1, "the data change is written");
    assert_eq!(with_data.1, after.1, "expires_at kept inside the interval");
    let after = with_data;
    later = changed;

    let eager = PgSessionStore::new(db.pool.clone()).with_touch_interval(Duration::ZERO);
    later.expiry_date += time::Duration::seconds(1);
    eager.save(&later).await.expect("save");
    assert_eq!(
        stored(&db).await.0,
        after.0 + 1,
        "interval zero writes every move"
    );
}

#[tokio::test]
async fn requests_that_change_nothing_write_at_most_once_per_interval() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let expiry = tower_sessions::Expiry::OnInactivity(time::Duration::hours(1));
    let app = session_app(store, Some(expiry), None);
    let cookie = call(&app, "POST", "/set/k/v", None)
        .await
        .cookie
        .expect("cookie");
    let id: Id = cookie.parse().expect("id");
    let v = version(&db, &id).await;
    for _ in 0..20 {
        let r = call(&app, "GET", "/noop", Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.cookie.as_deref(),
            Some(cookie.as_str()),
            "the cookie slides"
        );
    }
    assert_eq!(
        version(&db, &id).await,
        v,
        "twenty always-save requests, no write"
    );
}

#[tokio::test]
async fn data_is_a_jsonb_object_a_dba_reads_with_the_arrow_operator() {
    let db = TestDb::new().await;
    let app = session_app(PgSessionStore::new(db.pool.clone()), None, None);
    let cookie = call(&app, "POST", "/set/colour/blue", None)
        .await
        .cookie
        .expect("cookie");
    let id: Id = cookie.parse().expect("id");
    let (colour, kind): (String, String) =
        sqlx::query_as("SELECT data->>'colour', kind::text FROM latchkey.sessions WHERE id = $1")
            .bind(PgSessionStore::row_id(&id))
            .fetch_one(&db.pool)
            .await
            .expect("row");
    assert_eq!((colour.as_str(), kind.as_str()), ("blue", "stateful"));
}

#[tokio::test]
async fn no_raw_cookie_id_is_stored_anywhere_in_the_database() {
    let db = TestDb::new().await;
    let app = session_app(PgSessionStore::new(db.pool.clone()), None, None);
    let mut cookies = Vec::new();
    for _ in 0..20 {
        let c = call(&app, "POST", "/set/k/v", None)
            .await
            .cookie
            .expect("cookie");
        call(&app, "POST", "/set/k/w", Some(&c)).await;
        cookies.push(c);
    }
    for c in cookies.iter().take(5) {
        call(&app, "POST", "/cycle", Some(c)).await;
        call(&app, "POST", "/flush", Some(c)).await;
    }
    // Every row of every table, as text (bytea shows as hex), on a connection of its own.
    let mut conn = sqlx::PgConnection::connect_with(&db.options)
        .await
        .expect("connect");
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let mut dump = String::new();
    for (schema, table) in &tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM \"{schema}\".\"{table}\" t"))
                .fetch_all(&mut conn)
                .await
                .expect("rows");
        dump.push_str(&rows.join("\n"));
    }
    let dump = dump.to_lowercase();
    let kept: Id = cookies[10].parse().expect("id");
    let kept_row = PgSessionStore::row_id(&kept).to_string();
    assert!(dump.contains(&kept_row), "the dump does cover session rows");
    for c in &cookies {
        let id: Id = c.parse().expect("id");
        let raw = id.0.to_le_bytes();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let forms = [
            c.to_lowercase(),
            hex,
            Uuid::from_bytes(raw).to_string(),
            base64::engine::general_purpose::STANDARD
                .encode(raw)
                .to_lowercase(),
            id.0.to_string(),
        ];
        for form in forms {
            assert!(!dump.contains(&form), "raw cookie id found as {form}");
        }
    }
}

#[tokio::test]
async fn unbound_sessions_each_get_their_own_anonymous_owner() {
    let db = TestDb::new().await;
    let app = session_app(PgSessionStore::new(db.pool.clone()), None, None);
    call(&app, "POST", "/set/k/v", None).await;
    call(&app, "POST", "/set/k/v", None).await;
    let owners: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, owner_key FROM latchkey.sessions")
        .fetch_all(&db.pool)
        .await
        .expect("rows");
    assert_eq!(owners.len(), 2);
    for (id, owner) in &owners {
        assert_eq!(owner, &format!("anon:{id}"));
    }
}

#[tokio::test]
async fn a_bound_owner_lists_and_revokes_the_session_with_its_other_sessions() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let core = Store::new(db.pool.clone());
    let owner = Owner::User(Uuid::new_v4());
    let mut rec = record("k", "v", in_an_hour());
    rec.data
        .insert(OWNER_FIELD.to_owned(), serde_json::json!(owner.key()));
    store.create(&mut rec).await.expect("create");
    let listed = core.list_sessions(Some(&owner)).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, PgSessionStore::row_id(&rec.id));

    // Unbinding returns the session to its own anonymous owner.
    rec.data.remove(OWNER_FIELD);
    store.save(&rec).await.expect("save");
    assert!(core
        .list_sessions(Some(&owner))
        .await
        .expect("list")
        .is_empty());
    rec.data
        .insert(OWNER_FIELD.to_owned(), serde_json::json!(owner.key()));
    store.save(&rec).await.expect("save");

    let revoked = core
        .revoke_owner(&owner, latchkey::store::RevokeReason::LogoutAll)
        .await
        .expect("revoke owner");
    assert_eq!(revoked, vec![PgSessionStore::row_id(&rec.id)]);
    assert!(store.load(&rec.id).await.expect("load").is_none());
}

#[tokio::test]
async fn a_malformed_owner_binding_is_refused_and_nothing_is_written() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    for bad in [
        serde_json::json!("anon:00000000-0000-0000-0000-000000000000"),
        serde_json::json!("user:not-a-uuid"),
        serde_json::json!("USER:6F9619FF-8B86-D011-B42D-00C04FC964FF"),
        serde_json::json!(42),
    ] {
        let mut rec = record("k", "v", in_an_hour());
        rec.data.insert(OWNER_FIELD.to_owned(), bad.clone());
        assert!(store.create(&mut rec).await.is_err(), "{bad}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn an_expiry_past_the_absolute_lifetime_is_capped() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone()).with_absolute_ttl(Duration::from_secs(3600));
    let far = time::OffsetDateTime::now_utc() + time::Duration::days(400);
    let mut rec = record("k", "v", far);
    store.create(&mut rec).await.expect("create");
    let got = store.load(&rec.id).await.expect("load").expect("present");
    assert!(got.expiry_date < time::OffsetDateTime::now_utc() + time::Duration::hours(2));
    let mut again = got.clone();
    again.expiry_date = far;
    again.data.insert("k".to_owned(), serde_json::json!("w"));
    store.save(&again).await.expect("save");
    let got = store.load(&rec.id).await.expect("load").expect("present");
    assert!(got.expiry_date < time::OffsetDateTime::now_utc() + time::Duration::hours(2));
}

#[tokio::test]
async fn expired_deletion_runs_the_shared_purge_on_a_table_of_100k_rows() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at)
         SELECT gen_random_uuid(), 'stateful', 'anon:' || gen_random_uuid(),
                sha256(i::text::bytea),
                now() + CASE WHEN i % 100 = 0 THEN interval '-1 hour' ELSE interval '1 day' END,
                now() + interval '30 days'
         FROM generate_series(1, 100000) AS i",
    )
    .execute(&db.pool)
    .await
    .expect("seed");
    sqlx::query("ANALYZE latchkey.sessions")
        .execute(&db.pool)
        .await
        .expect("analyze");

    // The purge is `latchkey_expire_batch`; `indexes.rs` EXPLAINs its statements on a table
    // of 100k sessions and asserts they go through `sessions_expires_at_idx`.
    let store = PgSessionStore::new(db.pool.clone());
    assert_eq!(store.purge_expired().await.expect("purge"), 1000);
    store
        .delete_expired()
        .await
        .expect("second purge is a no-op");
    let (left, expired): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE expires_at <= now()) FROM latchkey.sessions",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!((left, expired), (99_000, 0));
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM latchkey.session_events WHERE event = 'expired'")
            .fetch_one(&db.pool)
            .await
            .expect("events");
    assert_eq!(events, 0, "the default purge records no 'expired' events");
}

#[tokio::test]
async fn a_record_without_the_owner_field_keeps_plain_session_data() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let mut rec = Record {
        id: Id::default(),
        data: Default::default(),
        expiry_date: in_an_hour(),
    };
    store.create(&mut rec).await.expect("create");
    let got = store.load(&rec.id).await.expect("load").expect("present");
    assert!(got.data.is_empty());
}

/// Many sessions saved at once by many tasks (the store coalesces them into multi-row
/// statements): every save lands, each session's version counts its own saves exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_saves_of_many_sessions_each_land_and_count_exactly() {
    const TASKS: usize = 48;
    const SAVES: usize = 10;
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                let mut rec = record("n", "0", in_an_hour());
                store.create(&mut rec).await.expect("create");
                barrier.wait().await;
                for n in 1..=SAVES {
                    rec.data.insert(
                        "n".to_owned(),
                        serde_json::json!(format!("{round}-{i}-{n}")),
                    );
                    store.save(&rec).await.expect("save");
                }
                rec
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let rec = t.await.expect("join");
            let got = store.load(&rec.id).await.expect("load").expect("present");
            assert_eq!(
                got.data["n"],
                serde_json::json!(format!("{round}-{i}-{SAVES}")),
                "the last save of session {i} is what is stored"
            );
            assert_eq!(
                version(&db, &rec.id).await,
                1 + SAVES as i64,
                "one version per save"
            );
        }
    }
}

/// Many tasks save ONE session at once: no save is merged into another (each raises the
/// version), and the row ends with one of the saved values.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_saves_of_one_session_raise_the_version_once_each() {
    const TASKS: usize = 24;
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    for round in 0..3_i64 {
        let mut rec = record("who", "nobody", in_an_hour());
        store.create(&mut rec).await.expect("create");
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let (store, barrier, mut mine) = (store.clone(), barrier.clone(), rec.clone());
            tasks.push(tokio::spawn(async move {
                mine.data
                    .insert("who".to_owned(), serde_json::json!(format!("task-{i}")));
                barrier.wait().await;
                store.save(&mine).await.expect("save");
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        assert_eq!(
            version(&db, &rec.id).await,
            1 + TASKS as i64,
            "round {round}: every save of the one session was applied on its own"
        );
        let got = store.load(&rec.id).await.expect("load").expect("present");
        let who = got.data["who"].as_str().expect("string").to_owned();
        assert!(who.starts_with("task-"), "round {round}: stored {who}");
    }
}

/// One save PostgreSQL refuses (a NUL character, which `jsonb` cannot hold) among many at
/// once: that save fails, every other one lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_save_the_database_refuses_fails_alone_among_concurrent_saves() {
    const TASKS: usize = 32;
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                let mut rec = record("v", "start", in_an_hour());
                store.create(&mut rec).await.expect("create");
                let value = if i == 7 {
                    "bad\u{0}byte".to_owned()
                } else {
                    format!("ok-{i}")
                };
                rec.data.insert("v".to_owned(), serde_json::json!(value));
                barrier.wait().await;
                (i, rec.clone(), store.save(&rec).await)
            }));
        }
        for t in tasks {
            let (i, rec, saved) = t.await.expect("join");
            let got = store.load(&rec.id).await.expect("load").expect("present");
            if i == 7 {
                assert!(saved.is_err(), "round {round}: the NUL save must fail");
                assert_eq!(got.data["v"], serde_json::json!("start"));
                assert_eq!(version(&db, &rec.id).await, 1);
            } else {
                saved.unwrap_or_else(|e| panic!("round {round}: save {i} failed: {e}"));
                assert_eq!(got.data["v"], serde_json::json!(format!("ok-{i}")));
                assert_eq!(version(&db, &rec.id).await, 2);
            }
        }
    }
}

/// A request dropped half-way (a client that went away) gives its statement slot back: with
/// one slot, a leaked slot would make every later request wait forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_dropped_mid_statement_do_not_leak_their_slot() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone()).with_coalescing(1, 8);
    let mut rec = record("n", "0", in_an_hour());
    store.create(&mut rec).await.expect("create");
    for n in 0..200 {
        rec.data
            .insert("n".to_owned(), serde_json::json!(n.to_string()));
        let cut = Duration::from_micros(50 * (n % 20));
        let _ = tokio::time::timeout(cut, store.save(&rec)).await;
        let _ = tokio::time::timeout(cut, store.load(&rec.id)).await;
    }
    rec.data.insert("n".to_owned(), serde_json::json!("last"));
    tokio::time::timeout(Duration::from_secs(10), store.save(&rec))
        .await
        .expect("a save after the dropped ones runs")
        .expect("save");
    let got = tokio::time::timeout(Duration::from_secs(10), store.load(&rec.id))
        .await
        .expect("a load after the dropped ones runs")
        .expect("load")
        .expect("present");
    assert_eq!(got.data["n"], serde_json::json!("last"));
}

/// The multi-row save (`latchkey_store_save_many`, what coalesced saves run) keeps every
/// guard of a single save, called directly so each case is certain to share one statement:
/// a deleted, a revoked-by-owner, an expired and a never-created session stay as they are;
/// an unchanged session whose expiry slid inside the touch interval is not written; a changed
/// one is, once, with its owner binding.
#[tokio::test]
async fn the_multi_row_save_keeps_every_guard_of_a_single_save() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let user = Owner::User(Uuid::new_v4());
    let mut recs = Vec::new();
    for i in 0..6 {
        let mut rec = record("k", &format!("v{i}"), in_an_hour());
        if i == 1 {
            rec.data
                .insert(OWNER_FIELD.to_owned(), serde_json::json!(user.key()));
        }
        if i < 5 {
            store.create(&mut rec).await.expect("create");
        }
        recs.push(rec);
    }
    let [deleted, revoked, changed, touched, expired, missing] = &mut recs[..] else {
        unreachable!()
    };
    store.delete(&deleted.id).await.expect("delete");
    sqlx::query("SELECT latchkey.latchkey_revoke_owner($1)")
        .bind(user.key())
        .execute(&db.pool)
        .await
        .expect("revoke owner");
    sqlx::query(
        "UPDATE latchkey.sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(PgSessionStore::row_id(&expired.id))
    .execute(&db.pool)
    .await
    .expect("expire");
    // `changed` is bound to the owner now, after the revocation: it stays live.
    changed
        .data
        .insert(OWNER_FIELD.to_owned(), serde_json::json!(user.key()));
    touched.expiry_date += time::Duration::seconds(30);
    for rec in [
        &mut *deleted,
        &mut *revoked,
        &mut *changed,
        &mut *expired,
        &mut *missing,
    ] {
        rec.data.insert("k".to_owned(), serde_json::json!("late"));
    }
    let before: Vec<(i64, String)> = sqlx::query_as(
        "SELECT version, coalesce(data->>'k', '') FROM latchkey.sessions ORDER BY created_at, id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("before");

    let row = |r: &Record| PgSessionStore::row_id(&r.id);
    let hash = |r: &Record| {
        use sha2::Digest as _;
        sha2::Sha256::digest(r.id.0.to_le_bytes()).to_vec()
    };
    let all = [
        &*deleted, &*revoked, &*changed, &*touched, &*expired, &*missing,
    ];
    let saved: i64 =
        sqlx::query_scalar("SELECT latchkey.latchkey_store_save_many($1, $2, $3, $4, $5, 60)")
            .bind(all.iter().map(|r| row(r)).collect::<Vec<_>>())
            .bind(all.iter().map(|r| hash(r)).collect::<Vec<_>>())
            .bind(
                all.iter()
                    .map(|r| serde_json::to_value(&r.data).expect("json"))
                    .collect::<Vec<_>>(),
            )
            .bind(
                all.iter()
                    .map(|r| {
                        r.data
                            .get(OWNER_FIELD)
                            .map(|o| o.as_str().expect("key").to_owned())
                    })
                    .collect::<Vec<_>>(),
            )
            .bind(all.iter().map(|r| r.expiry_date).collect::<Vec<_>>())
            .fetch_one(&db.pool)
            .await
            .expect("save many");
    assert_eq!(saved, 1, "only the changed, live session is written");

    let state = |r: &Record| {
        let pool = db.pool.clone();
        let id = PgSessionStore::row_id(&r.id);
        async move {
            sqlx::query_as::<_, (i64, Option<String>, String, bool)>(
                "SELECT version, data->>'k', owner_key, revoked_at IS NULL AND expires_at > now()
                 FROM latchkey.sessions WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row")
        }
    };
    let (v, k, owner, live) = state(changed).await;
    assert_eq!((v, k.as_deref(), live), (2, Some("late"), true));
    assert_eq!(owner, user.key(), "the binding is mirrored into owner_key");
    assert_eq!(
        state(touched).await.0,
        1,
        "a slide inside the interval writes nothing"
    );
    for (what, rec) in [
        ("deleted", &*deleted),
        ("revoked", &*revoked),
        ("expired", &*expired),
    ] {
        let (v, k, _, live) = state(rec).await;
        assert!(!live, "{what} stays dead");
        assert_eq!(v, 1, "{what}: no version written");
        assert_ne!(
            k.as_deref(),
            Some("late"),
            "{what}: the late data is not stored"
        );
    }
    let missing_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions WHERE id = $1")
            .bind(PgSessionStore::row_id(&missing.id))
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(missing_rows, 0, "a save never inserts");
    let after: Vec<(i64, String)> = sqlx::query_as(
        "SELECT version, coalesce(data->>'k', '') FROM latchkey.sessions ORDER BY created_at, id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("after");
    assert_eq!(
        after.iter().filter(|a| !before.contains(a)).count(),
        1,
        "one row changed in all"
    );
}

/// Many sessions deleted, then saved at once by in-flight requests through one coalescing
/// lane (so the saves queue into multi-row statements): none comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_saves_after_deletes_bring_no_session_back() {
    const TASKS: usize = 40;
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone()).with_coalescing(1, 64);
    for round in 0..3 {
        let mut recs = Vec::new();
        for _ in 0..TASKS {
            let mut rec = record("n", "0", in_an_hour());
            store.create(&mut rec).await.expect("create");
            store.delete(&rec.id).await.expect("delete");
            rec.data.insert("n".to_owned(), serde_json::json!("late"));
            recs.push(rec);
        }
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for rec in recs.clone() {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.save(&rec).await
            }));
        }
        for t in tasks {
            t.await
                .expect("join")
                .expect("a save into nothing is not an error");
        }
        for rec in &recs {
            assert!(store.load(&rec.id).await.expect("load").is_none());
            assert_eq!(
                version(&db, &rec.id).await,
                1,
                "round {round}: nothing written"
            );
        }
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM latchkey.sessions WHERE revoked_at IS NULL")
                .fetch_one(&db.pool)
                .await
                .expect("count");
        assert_eq!(live, 0, "round {round}");
    }
}

/// Many loads at once through one coalescing lane, so they queue into multi-row statements
/// (of every padded size, and more than the 1024 one statement reads): live sessions, some
/// read by several requests at once, revoked, expired and unknown ones. Each request gets its
/// own session's data, or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_loads_each_get_their_own_session_or_nothing() {
    const SESSIONS: usize = 37;
    const LOADS: usize = 1100;
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone()).with_coalescing(1, 4096);
    let mut recs = Vec::new();
    for i in 0..SESSIONS {
        let mut rec = record("i", &i.to_string(), in_an_hour());
        store.create(&mut rec).await.expect("create");
        recs.push(rec);
    }
    // Every fifth revoked, every seventh expired, and ids that were never created.
    for (i, rec) in recs.iter().enumerate() {
        if i % 5 == 4 {
            store.delete(&rec.id).await.expect("delete");
        } else if i % 7 == 6 {
            sqlx::query("UPDATE latchkey.sessions SET expires_at = now() WHERE id = $1")
                .bind(PgSessionStore::row_id(&rec.id))
                .execute(&db.pool)
                .await
                .expect("expire");
        }
    }
    let live = |i: usize| i < SESSIONS && i % 5 != 4 && i % 7 != 6;
    let unknown = record("i", "never", in_an_hour());
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(LOADS));
        let mut tasks = Vec::new();
        for n in 0..LOADS {
            // Sessions 0..SESSIONS several times over, and one unknown id in eleven.
            let i = if n % 11 == 10 {
                SESSIONS
            } else {
                (n * 7) % SESSIONS
            };
            let id = recs.get(i).map_or(unknown.id, |r| r.id);
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (i, store.load(&id).await)
            }));
        }
        for t in tasks {
            let (i, got) = t.await.expect("join");
            let got = got.unwrap_or_else(|e| panic!("round {round}: load {i}: {e}"));
            if live(i) {
                let got = got.unwrap_or_else(|| panic!("round {round}: session {i} missing"));
                assert_eq!(got.id, recs[i].id);
                assert_eq!(got.data["i"], serde_json::json!(i.to_string()));
            } else {
                assert!(got.is_none(), "round {round}: session {i} must not load");
            }
        }
    }
}

/// A created record loads back equal to itself, expiry included: `create` hands back the
/// expiry as `timestamptz` stores it (microseconds), so a record whose expiry had nanoseconds
/// round-trips exactly.
#[tokio::test]
async fn a_created_record_loads_back_equal_expiry_included() {
    let db = TestDb::new().await;
    for store in [
        PgSessionStore::new(db.pool.clone()),
        PgSessionStore::new(db.pool.clone()).with_coalescing(0, 1),
    ] {
        let expiry = in_an_hour()
            .replace_nanosecond(123_456_789)
            .expect("nanoseconds");
        let mut rec = record("k", "v", expiry);
        store.create(&mut rec).await.expect("create");
        assert_eq!(rec.expiry_date.nanosecond(), 123_456_000);
        let loaded = store.load(&rec.id).await.expect("load").expect("present");
        assert_eq!(loaded, rec);
    }
}
