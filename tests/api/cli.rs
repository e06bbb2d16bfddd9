//! The `latchkey` binary against a real database: users, API keys, sessions.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{decode, run_cli as latchkey, spawn_app};

#[tokio::test]
async fn the_cli_adds_users_issues_and_revokes_api_keys_and_lists_and_revokes_sessions() {
    let app = spawn_app().await;
    let url = app.db.url();

    let (ok, out, err) = latchkey(
        &url,
        &[
            "user",
            "add",
            "--email",
            "carol@example.com",
            "--password-stdin",
        ],
        Some("s3cret pass\n"),
    );
    assert!(ok, "{err}");
    let owner = out.trim().to_owned();
    assert!(owner.starts_with("user:"), "{out}");
    let (ok, _, err) = latchkey(
        &url,
        &[
            "user",
            "add",
            "--email",
            "CAROL@example.com",
            "--password-stdin",
        ],
        Some("x\n"),
    );
    assert!(!ok, "duplicate email refused");
    assert!(err.contains("already exists"), "{err}");
    let login = app
        .login_as(
            "carol@example.com",
            "s3cret pass",
            latchkey::SessionKind::Stateless,
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);

    let (ok, key, err) = latchkey(
        &url,
        &["apikey", "create", "--owner", &owner, "--name", "ci"],
        None,
    );
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("lka_"));
    let res = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({ "api_key": key }))
        .send()
        .await
        .expect("login");
    let by_key = decode(res).await;
    assert_eq!(by_key.status, StatusCode::OK, "{:?}", by_key.body);
    let (ok, listed, _) = latchkey(&url, &["apikey", "list", "--json"], None);
    assert!(ok);
    assert!(!listed.contains(&key[4..]), "the key is never listed");
    let key_id = serde_json::from_str::<serde_json::Value>(listed.lines().next().expect("one key"))
        .expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let (ok, sessions, _) = latchkey(
        &url,
        &["sessions", "list", "--owner", &owner, "--json"],
        None,
    );
    assert!(ok);
    assert_eq!(sessions.lines().count(), 1);
    assert!(sessions.contains(&login.session_id().to_string()));

    let (ok, out, _) = latchkey(&url, &["apikey", "revoke", &key_id], None);
    assert!(ok);
    assert!(out.contains("revoked=1"), "{out}");
    assert_eq!(
        app.refresh_json(&by_key.refresh_token()).await.code(),
        "session_revoked"
    );

    let (ok, out, _) = latchkey(&url, &["sessions", "revoke", "--owner", &owner], None);
    assert!(ok);
    assert_eq!(out.trim(), "revoked=1");
    assert_eq!(
        app.refresh_json(&login.refresh_token()).await.code(),
        "session_revoked"
    );

    // An id with no live session behind it, unknown or revoked just now: exit 1, and say so.
    let unknown = uuid::Uuid::new_v4().to_string();
    let revoked = login.session_id().to_string();
    for id in [unknown.as_str(), revoked.as_str()] {
        let (ok, out, err) = latchkey(&url, &["sessions", "revoke", id], None);
        assert!(!ok, "revoking {id} succeeded: {out}");
        assert_eq!(out.trim(), "revoked=0");
        assert!(err.contains("no live session"), "{err}");
    }

    let (ok, _, err) = latchkey(&url, &["user", "disable", "nobody@example.com"], None);
    assert!(!ok && err.contains("no account"), "{err}");
    let (ok, _, err) = latchkey(
        "postgres://postgres@127.0.0.1:1/none",
        &["sessions", "list"],
        None,
    );
    assert!(!ok, "unreachable database is a failure");
    assert!(err.contains("error:"), "{err}");
}

/// `user passwd` sets a new password and ends the sessions opened with the old one;
/// `user list` shows the accounts without their hashes.
#[tokio::test]
async fn user_passwd_changes_the_password_and_revokes_the_sessions_and_user_list_shows_accounts() {
    let app = spawn_app().await;
    let url = app.db.url();
    let user = app.add_user("dave@example.com", "old password 1").await;
    let login = app
        .login_as(
            "dave@example.com",
            "old password 1",
            latchkey::SessionKind::Stateless,
        )
        .await;
    assert_eq!(login.code(), "");

    let (ok, out, err) = latchkey(&url, &["user", "list", "--json"], None);
    assert!(ok, "{err}");
    let listed: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .find(|u| u["email"] == "dave@example.com")
        .expect("dave is listed");
    assert_eq!(listed["id"], user.id.to_string());
    assert_eq!(listed["email"], "dave@example.com");
    assert_eq!(listed["disabled"], false);
    assert_eq!(listed["live_sessions"], 1);
    assert!(!out.contains("argon2"), "a hash was printed: {out}");

    let (ok, out, err) = latchkey(
        &url,
        &["user", "passwd", "dave@example.com", "--password-stdin"],
        Some("new password 2\n"),
    );
    assert!(ok, "{err}");
    assert!(out.contains("revoked 1 session"), "{out}");
    assert_eq!(
        app.refresh_json(&login.refresh_token()).await.code(),
        "session_revoked"
    );
    let old = app
        .login_as(
            "dave@example.com",
            "old password 1",
            latchkey::SessionKind::Stateless,
        )
        .await;
    assert_eq!(old.code(), "invalid_credentials");
    let new = app
        .login_as(
            "dave@example.com",
            "new password 2",
            latchkey::SessionKind::Stateless,
        )
        .await;
    assert_eq!(new.code(), "");

    let (ok, _, err) = latchkey(
        &url,
        &["user", "passwd", "nobody@example.com", "--password-stdin"],
        Some("x\n"),
    );
    assert!(!ok && err.contains("no account"), "{err}");
    let (ok, out, _) = latchkey(&url, &["user", "list"], None);
    assert!(ok);
    assert!(
        out.contains("dave@example.com") && out.contains("enabled"),
        "{out}"
    );
}
