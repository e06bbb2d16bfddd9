//! Nothing secret at rest: after tokens of both modes are issued, rotated and replayed inside
//! the grace window, no value in any column of any table contains a secret or a token.

use base64::Engine as _;
use latchkey::token::SessionToken;
use latchkey::SessionKind;
use sqlx::Row;

use crate::helpers::{spawn_app, PASSWORD};

#[tokio::test]
async fn no_column_of_any_table_holds_a_secret_or_a_token_string() {
    let app = spawn_app().await;
    let mut wire: Vec<String> = Vec::new();
    for mode in [SessionKind::Stateless, SessionKind::Stateful] {
        let login = app.login(mode).await;
        let first = match mode {
            SessionKind::Stateless => {
                wire.push(login.access_token());
                login.refresh_token()
            }
            SessionKind::Stateful => login.cookie(),
        };
        wire.push(first.clone());
        let mut current = first.clone();
        for _ in 0..3 {
            let next = match mode {
                SessionKind::Stateless => {
                    let r = app.refresh_json(&current).await;
                    wire.push(r.access_token());
                    r.refresh_token()
                }
                SessionKind::Stateful => app.refresh_cookie(&current).await.cookie(),
            };
            wire.push(next.clone());
            current = next;
        }
        // A grace-window replay of the previous token.
        let _ = app.refresh_json(&first).await;
    }
    // Needles: every token string, its payload, its raw secret in hex and base64 forms.
    let mut text_needles: Vec<String> = vec![PASSWORD.to_owned()];
    let mut byte_needles: Vec<Vec<u8>> = Vec::new();
    for w in &wire {
        text_needles.push(w.clone());
        if let Ok(t) = SessionToken::parse(w) {
            let secret = t.secret.expose().to_vec();
            text_needles.push(w[4..].to_owned());
            text_needles.push(hex(&secret));
            text_needles.push(base64::engine::general_purpose::STANDARD.encode(&secret));
            text_needles.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret));
            byte_needles.push(secret);
        } else {
            // A JWT: its signature part is what makes it a credential.
            text_needles.push(w.rsplit('.').next().unwrap_or_default().to_owned());
        }
    }
    assert!(
        byte_needles.len() >= 8,
        "collected the secrets of both modes"
    );

    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text
         FROM information_schema.columns
         WHERE table_schema = 'latchkey' AND data_type IN ('text', 'character varying', 'bytea', 'jsonb', 'json', 'inet', 'USER-DEFINED')",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("columns");
    assert!(columns.len() > 10);
    let mut scanned = 0usize;
    for col in columns {
        let (table, column, ty): (String, String, String) = (col.get(0), col.get(1), col.get(2));
        if ty == "bytea" {
            let values: Vec<Option<Vec<u8>>> =
                sqlx::query_scalar(&format!("SELECT \"{column}\" FROM latchkey.\"{table}\""))
                    .fetch_all(&app.db.pool)
                    .await
                    .expect("bytea");
            for v in values.into_iter().flatten() {
                scanned += 1;
                for n in &byte_needles {
                    assert!(
                        !v.windows(n.len()).any(|w| w == n.as_slice()),
                        "secret bytes in {table}.{column}"
                    );
                }
            }
            continue;
        }
        let values: Vec<Option<String>> = sqlx::query_scalar(&format!(
            "SELECT \"{column}\"::text FROM latchkey.\"{table}\""
        ))
        .fetch_all(&app.db.pool)
        .await
        .expect("text");
        for v in values.into_iter().flatten() {
            scanned += 1;
            for n in &text_needles {
                assert!(
                    !v.contains(n.as_str()),
                    "a secret or token found in {table}.{column}"
                );
            }
        }
    }
    assert!(scanned > 30, "scanned {scanned} values");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
