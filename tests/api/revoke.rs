//! Every way to revoke a session — the store's methods, the tower-sessions `delete`, the SQL
//! functions and a DBA's `UPDATE latchkey.users SET disabled = true` — changes the row alike, records
//! the same audit events (one `revoked` per session with its reason; a `reuse_detected` just
//! before it for that reason) and publishes the same NOTIFY: they all go through the SQL
//! function `latchkey_revoke`.

use std::collections::HashMap;
use std::time::Duration;

use latchkey::store::{OwnerKey, PgSessionStore, RevokeReason, Store, SESSIONS_CHANNEL};
use serde_json::{json, Value};
use sqlx::postgres::PgListener;
use sqlx::Connection as _;
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore as _;
use uuid::Uuid;

use crate::helpers::TestDb;

/// The data every session of these tests starts with (only `delete` clears it).
fn start_data() -> Value {
    json!({"k": 1})
}

/// A live stateless session of `owner`, inserted by hand.
async fn session_of(db: &TestDb, owner: OwnerKey) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, absolute_expires_at, data) \
         VALUES ($1, 'stateless', $2, $3, now() + interval '1 hour', now() + interval '1 hour', $4)",
    )
    .bind(id)
    .bind(owner)
    .bind(&[9u8; 32][..])
    .bind(start_data())
    .execute(&db.pool)
    .await
    .expect("insert session");
    id
}

/// A user (enabled) with one API key: `(user id, key id)`.
async fn user_with_key(db: &TestDb) -> (Uuid, Uuid) {
    let (user, key) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO latchkey.users (id, email, password_hash) VALUES ($1, $2, '$argon2id$x')",
    )
    .bind(user)
    .bind(format!("{user}@example.test"))
    .execute(&db.pool)
    .await
    .expect("insert user");
    sqlx::query("INSERT INTO latchkey.api_keys (id, owner_key, key_hash) VALUES ($1, $2, $3)")
        .bind(key)
        .bind(OwnerKey::User(user))
        .bind(&[8u8; 32][..])
        .execute(&db.pool)
        .await
        .expect("insert key");
    (user, key)
}

async fn listener(db: &TestDb) -> PgListener {
    let mut l = PgListener::connect_with(&db.pool).await.expect("listener");
    l.listen(SESSIONS_CHANNEL).await.expect("listen");
    l
}

/// Every notification until none came for half a second.
async fn drain(l: &mut PgListener) -> Vec<Value> {
    let mut got = Vec::new();
    while let Ok(n) = tokio::time::timeout(Duration::from_millis(500), l.recv()).await {
        let n = n.expect("notification");
        got.push(serde_json::from_str(n.payload()).expect("JSON payload"));
    }
    got
}

/// Checks what a revocation of exactly `ids` with `reason` left behind: each row revoked
/// with that reason (its data cleared only when `cleared`), its audit events, and one NOTIFY
/// per session on `l`; nothing else was revoked or notified.
async fn assert_revoked(
    db: &TestDb,
    l: &mut PgListener,
    ids: &[Uuid],
    reason: RevokeReason,
    cleared: bool,
) {
    let reason = reason.as_str();
    let mut owners = HashMap::new();
    for id in ids {
        let (revoked, why, data, owner): (bool, Option<String>, Value, String) = sqlx::query_as(
            "SELECT revoked_at IS NOT NULL, revoked_reason, data, owner_key \
             FROM latchkey.sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("row");
        assert!(revoked, "{id} revoked");
        assert_eq!(why.as_deref(), Some(reason), "{id}");
        let data_now = if cleared { json!({}) } else { start_data() };
        assert_eq!(data, data_now, "{id}: data");

        let events: Vec<(String, Value, String)> = sqlx::query_as(
            "SELECT event::text, detail, owner_key FROM latchkey.session_events \
             WHERE session_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&db.pool)
        .await
        .expect("events");
        let detail = json!({ "reason": reason });
        let mut expected = Vec::new();
        if reason == RevokeReason::ReuseDetected.as_str() {
            // The reuse event adds the chain; these sessions were never rotated.
            let (version, login_ip): (i64, Option<String>) =
                sqlx::query_as("SELECT version, host(ip) FROM latchkey.sessions WHERE id = $1")
                    .bind(id)
                    .fetch_one(&db.pool)
                    .await
                    .expect("row");
            let mut chain = json!({
                "reason": reason,
                "presented_version": version - 1,
                "current_version": version,
            });
            if let Some(ip) = login_ip {
                chain["login_ip"] = json!(ip);
            }
            expected.push(("reuse_detected".to_owned(), chain, owner.clone()));
        }
        expected.push(("revoked".to_owned(), detail, owner.clone()));
        assert_eq!(events, expected, "{id}: events");
        owners.insert(id.to_string(), owner);
    }

    let others_revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM latchkey.sessions WHERE revoked_at IS NOT NULL AND NOT (id = ANY ($1))",
    )
    .bind(ids)
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(others_revoked, 0, "only {ids:?} were revoked");

    let mut notified = drain(l).await;
    notified.sort_by_key(|n| n["id"].as_str().map(str::to_owned));
    let mut expected: Vec<Value> = owners
        .iter()
        .map(|(id, owner)| json!({"event": "revoked", "id": id, "owner_key": owner, "reason": reason}))
        .collect();
    expected.sort_by_key(|n| n["id"].as_str().map(str::to_owned));
    assert_eq!(notified, expected, "notifications");
}

/// Events recorded so far, all sessions together.
async fn event_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM latchkey.session_events")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn every_revocation_path_changes_the_row_records_the_events_and_notifies_alike() {
    let owner = OwnerKey::User(Uuid::new_v4());
    let other = OwnerKey::User(Uuid::new_v4());

    // Store::revoke, for an ordinary reason and for reuse detection.
    for reason in [RevokeReason::Admin, RevokeReason::ReuseDetected] {
        let db = TestDb::new().await;
        let store = Store::new(db.pool.clone());
        let id = session_of(&db, owner).await;
        let mut l = listener(&db).await;
        assert!(store.revoke(id, reason).await.expect("revoke"));
        assert_revoked(&db, &mut l, &[id], reason, false).await;
        assert!(!store.revoke(id, reason).await.expect("again"), "once only");
        assert!(!store.revoke(Uuid::new_v4(), reason).await.expect("unknown"));
        assert_eq!(
            event_count(&db).await,
            if reason == RevokeReason::Admin { 1 } else { 2 }
        );
    }

    // Store::revoke_owned: nothing for another owner, then the owner's.
    {
        let db = TestDb::new().await;
        let store = Store::new(db.pool.clone());
        let id = session_of(&db, owner).await;
        let mut l = listener(&db).await;
        assert!(!store
            .revoke_owned(&other, id, RevokeReason::Logout)
            .await
            .expect("not theirs"));
        assert!(store
            .revoke_owned(&owner, id, RevokeReason::Logout)
            .await
            .expect("theirs"));
        assert_revoked(&db, &mut l, &[id], RevokeReason::Logout, false).await;
        assert!(!store
            .revoke_owned(&owner, id, RevokeReason::Logout)
            .await
            .expect("again"));
        assert_eq!(event_count(&db).await, 1);
    }

    // Store::revoke_owner: every live session of the owner, not another's.
    {
        let db = TestDb::new().await;
        let store = Store::new(db.pool.clone());
        let mut ids = vec![session_of(&db, owner).await, session_of(&db, owner).await];
        let theirs = session_of(&db, other).await;
        let mut l = listener(&db).await;
        let mut revoked = store
            .revoke_owner(&owner, RevokeReason::LogoutAll)
            .await
            .expect("revoke owner");
        revoked.sort();
        ids.sort();
        assert_eq!(revoked, ids);
        assert_revoked(&db, &mut l, &ids, RevokeReason::LogoutAll, false).await;
        assert!(store
            .revoke_owner(&owner, RevokeReason::LogoutAll)
            .await
            .expect("again")
            .is_empty());
        assert_eq!(event_count(&db).await, 2);
        assert!(store
            .revoke(theirs, RevokeReason::Admin)
            .await
            .expect("live"));
    }

    // The tower-sessions store's delete: reason deleted, data cleared.
    {
        let db = TestDb::new().await;
        let store = PgSessionStore::new(db.pool.clone());
        let mut rec = Record {
            id: Id::default(),
            data: HashMap::from([("k".to_owned(), json!(1))]),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        store.create(&mut rec).await.expect("create");
        let row = PgSessionStore::row_id(&rec.id);
        let mut l = listener(&db).await;
        store.delete(&rec.id).await.expect("delete");
        assert_revoked(&db, &mut l, &[row], RevokeReason::Deleted, true).await;
        store.delete(&rec.id).await.expect("delete again");
        assert_eq!(event_count(&db).await, 1, "no second revoked event");
    }

    // The SQL functions of the DBA guide.
    {
        let db = TestDb::new().await;
        let mut ids = vec![session_of(&db, owner).await, session_of(&db, owner).await];
        let mut l = listener(&db).await;
        let n: i32 = sqlx::query_scalar("SELECT latchkey.latchkey_revoke_owner($1)")
            .bind(owner)
            .fetch_one(&db.pool)
            .await
            .expect("latchkey_revoke_owner");
        assert_eq!(n, 2);
        ids.sort();
        assert_revoked(&db, &mut l, &ids, RevokeReason::Admin, false).await;
        let again: i32 = sqlx::query_scalar("SELECT latchkey.latchkey_revoke_owner($1)")
            .bind(owner)
            .fetch_one(&db.pool)
            .await
            .expect("again");
        assert_eq!(again, 0);
    }
    {
        let db = TestDb::new().await;
        let id = session_of(&db, owner).await;
        let mut l = listener(&db).await;
        let done: bool = sqlx::query_scalar("SELECT latchkey.latchkey_revoke_session($1)")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .expect("latchkey_revoke_session");
        assert!(done);
        assert_revoked(&db, &mut l, &[id], RevokeReason::Admin, false).await;
        let again: bool = sqlx::query_scalar("SELECT latchkey.latchkey_revoke_session($1)")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .expect("again");
        assert!(!again);
    }
    for by_update in [false, true] {
        let db = TestDb::new().await;
        let (user, key) = user_with_key(&db).await;
        let ids = [
            session_of(&db, OwnerKey::User(user)).await,
            session_of(&db, OwnerKey::ApiKey(key)).await,
        ];
        let stranger = session_of(&db, other).await;
        let mut l = listener(&db).await;
        if by_update {
            sqlx::query("UPDATE latchkey.users SET disabled = true WHERE id = $1")
                .bind(user)
                .execute(&db.pool)
                .await
                .expect("disable by UPDATE");
        } else {
            let n: i32 = sqlx::query_scalar("SELECT latchkey.latchkey_revoke_user_sessions($1)")
                .bind(user)
                .fetch_one(&db.pool)
                .await
                .expect("latchkey_revoke_user_sessions");
            assert_eq!(n, 2);
        }
        assert_revoked(&db, &mut l, &ids, RevokeReason::UserDisabled, false).await;
        let live: bool =
            sqlx::query_scalar("SELECT revoked_at IS NULL FROM latchkey.sessions WHERE id = $1")
                .bind(stranger)
                .fetch_one(&db.pool)
                .await
                .expect("stranger");
        assert!(live, "another user's session stays live");
    }
}

#[tokio::test]
async fn a_revocation_waiting_on_a_concurrent_one_revokes_nothing_and_records_nothing() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let owner = OwnerKey::User(Uuid::new_v4());
    let id = session_of(&db, owner).await;

    let mut first = sqlx::PgConnection::connect_with(&db.options)
        .await
        .expect("connect");
    let mut tx = first.begin().await.expect("begin");
    let won: Vec<Uuid> =
        sqlx::query_scalar("SELECT latchkey.latchkey_revoke(ARRAY[$1::uuid], 'admin')")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .expect("first revocation");
    assert_eq!(won, [id]);
    // The second waits for the first's row lock, then re-checks revoked_at on the new row.
    let second = tokio::spawn({
        let store = store.clone();
        async move { store.revoke(id, RevokeReason::Logout).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "waits for the first transaction");
    tx.commit().await.expect("commit");
    assert!(!second.await.expect("join").expect("second revocation"));
    assert_eq!(event_count(&db).await, 1, "one revoked event");
    let reason: String =
        sqlx::query_scalar("SELECT revoked_reason FROM latchkey.sessions WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .expect("reason");
    assert_eq!(reason, RevokeReason::Admin.as_str());
}

#[tokio::test]
async fn a_session_that_changes_owner_meanwhile_is_not_revoked_for_the_former_owner() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let (former, new) = (
        OwnerKey::User(Uuid::new_v4()),
        OwnerKey::User(Uuid::new_v4()),
    );
    let id = session_of(&db, former).await;

    for by_owner in [false, true] {
        let mut conn = sqlx::PgConnection::connect_with(&db.options)
            .await
            .expect("connect");
        let mut tx = conn.begin().await.expect("begin");
        // What a tower-sessions save binding another owner does to the row.
        sqlx::query("UPDATE latchkey.sessions SET owner_key = $2 WHERE id = $1")
            .bind(id)
            .bind(if by_owner { former } else { new })
            .execute(&mut *tx)
            .await
            .expect("rebind");
        let asker = if by_owner { new } else { former };
        let revoking = tokio::spawn({
            let store = store.clone();
            async move {
                if by_owner {
                    store
                        .revoke_owner(&asker, RevokeReason::LogoutAll)
                        .await
                        .map(|ids| !ids.is_empty())
                } else {
                    store.revoke_owned(&asker, id, RevokeReason::Logout).await
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.commit().await.expect("commit");
        assert!(
            !revoking.await.expect("join").expect("revocation"),
            "by_owner={by_owner}: the session is no longer the asker's"
        );
        let live: bool =
            sqlx::query_scalar("SELECT revoked_at IS NULL FROM latchkey.sessions WHERE id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .expect("row");
        assert!(live, "by_owner={by_owner}");
    }
    assert_eq!(event_count(&db).await, 0);
}
