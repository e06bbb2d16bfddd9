//! The coalesced session read (`Store::find_session`, the first statement of every check and
//! refresh): reads that share a multi-row statement get what a read of their own would.

use std::sync::Arc;

use latchkey::store::{Coalescing, NewSession, OwnerKey, RevokeReason, SessionRecord, Store};
use latchkey::SessionKind;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::helpers::TestDb;

/// Sessions in every state the read reports: live, revoked, expired, in a grace window, due
/// for a touch, of both kinds, with and without client details.
async fn sessions(db: &TestDb, store: &Store) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..29u8 {
        let id = Uuid::new_v4();
        store
            .create_session(&NewSession {
                id,
                kind: if i % 2 == 0 {
                    SessionKind::Stateful
                } else {
                    SessionKind::Stateless
                },
                owner_key: OwnerKey::Anonymous(Uuid::new_v4()),
                token_hash: [i; 32],
                idle_ttl_secs: 3600.0,
                absolute_ttl_secs: 86_400.0,
                user_agent: (i % 3 == 0).then(|| format!("agent {i}")),
                ip: (i % 4 == 0).then(|| format!("10.0.0.{i}")),
                data: serde_json::json!({}),
                event_detail: serde_json::json!({}),
            })
            .await
            .expect("create");
        if i % 5 == 1 {
            store.revoke(id, RevokeReason::Admin).await.expect("revoke");
        }
        // No value near a boundary: the reads below must agree however long they take.
        sqlx::query(
            "UPDATE latchkey.sessions SET
                 expires_at = CASE WHEN $2 % 7 = 3 THEN now() - interval '1 hour' ELSE expires_at END,
                 prev_token_hash = CASE WHEN $2 % 3 = 2 THEN sha256(id::text::bytea) END,
                 prev_valid_until = CASE WHEN $2 % 3 = 2 THEN now() + interval '1 hour' END,
                 last_used_at = CASE WHEN $2 % 2 = 0 THEN now() - interval '1 hour' ELSE now() END
             WHERE id = $1",
        )
        .bind(id)
        .bind(i32::from(i))
        .execute(&db.pool)
        .await
        .expect("shape");
        ids.push(id);
    }
    ids
}

/// A read as the tests compare it: every column, the read's clock replaced by whether a touch
/// is due after 60 s (the clock differs between two reads; the touch decision must not).
fn shown(rec: Option<SessionRecord>) -> String {
    match rec {
        None => "None".to_owned(),
        Some(mut rec) => {
            let due = rec.touch_due(60.0);
            rec.read_at = time::OffsetDateTime::UNIX_EPOCH;
            format!("{rec:?} touch_due: {due}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_session_reads_answer_each_id_as_a_lone_read_does() {
    const READS: usize = 600;
    let db = TestDb::new().await;
    let plain = Store::new(db.pool.clone());
    let store = Store::new(db.pool.clone()).with_coalescing(Coalescing::READS);
    let mut ids = sessions(&db, &plain).await;
    // And an id that was never created.
    ids.push(Uuid::new_v4());
    let mut alone = Vec::new();
    for id in &ids {
        let rec = plain.find_session(*id).await.expect("lone read");
        alone.push(shown(rec));
    }
    let alone = Arc::new(alone);
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(READS));
        let mut tasks = Vec::new();
        for n in 0..READS {
            let i = (n * 11) % ids.len();
            let (store, barrier, id) = (store.clone(), barrier.clone(), ids[i]);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (i, store.find_session(id).await)
            }));
        }
        for t in tasks {
            let (i, got) = t.await.expect("join");
            let got = got.unwrap_or_else(|e| panic!("round {round}: read {i}: {e}"));
            assert_eq!(shown(got), alone[i], "round {round}: session {i}");
        }
    }
    assert!(alone.iter().any(|r| r.contains("in_grace: true")));
    assert!(alone.iter().any(|r| r.contains("expired: true")));
    assert!(alone.iter().any(|r| r.contains("touch_due: true")));
    assert!(alone.iter().any(|r| r.contains("revoked_reason: Some")));
    assert_eq!(alone.last().map(String::as_str), Some("None"));
}
