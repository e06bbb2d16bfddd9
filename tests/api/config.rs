//! `latchkey serve` refuses a bad configuration at start: exit status 2, the flag named, before
//! anything connects; good settings at the edges of their ranges start.

use std::time::Duration;

use latchkey::config::PUBLISHED_JWT_SECRETS;

use crate::helpers::{random_jwt_secret, spawn_serve, TestDb};

/// Runs `latchkey serve` with `args` on `db_url`; returns `Ok(stderr)` once it listens (and
/// stops it), `Err((status, stderr))` if it exits first.
fn serve(db_url: &str, secret: &str, args: &[&str]) -> Result<String, (Option<i32>, String)> {
    let (mut child, rx) = spawn_serve(db_url, secret, args);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let listening = line.contains("latchkey listening");
        seen.push(line);
        if listening {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(seen.join("\n"));
        }
    }
    let status = child.wait().expect("wait");
    Err((status.code(), seen.join("\n")))
}

/// A URL on which nothing listens: a refused setting must not even try to connect.
const NO_DATABASE: &str = "postgres://postgres@127.0.0.1:1/nowhere";

#[test]
fn serve_refuses_each_bad_setting_with_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--absolute-ttl-secs", "18446744073709551615"],
            "--absolute-ttl-secs",
        ),
        (&["--absolute-ttl-secs", "0"], "--absolute-ttl-secs"),
        (
            &["--access-ttl-secs", "9223372036854775807"],
            "--access-ttl-secs",
        ),
        (&["--access-ttl-secs", "0"], "--access-ttl-secs"),
        (&["--idle-ttl-secs", "0"], "--idle-ttl-secs"),
        (
            &["--idle-ttl-secs", "7200", "--absolute-ttl-secs", "3600"],
            "--idle-ttl-secs",
        ),
        (&["--anon-ttl-secs", "99999999999"], "--anon-ttl-secs"),
        (
            &["--grace-secs", "600", "--idle-ttl-secs", "600"],
            "--grace-secs",
        ),
        (&["--grace-secs", "86400"], "--grace-secs"),
        (
            &["--touch-interval-secs", "600", "--idle-ttl-secs", "600"],
            "--touch-interval-secs",
        ),
        (
            &["--expiry-step-secs", "600", "--idle-ttl-secs", "600"],
            "--expiry-step-secs",
        ),
        (&["--events-keepalive-secs", "0"], "--events-keepalive-secs"),
        (
            &["--events-revalidate-secs", "0"],
            "--events-revalidate-secs",
        ),
        (&["--events-max-per-owner", "0"], "--events-max-per-owner"),
        (&["--max-connections", "0"], "--max-connections"),
        (&["--hash-concurrency", "0"], "--hash-concurrency"),
        (&["--header-timeout-secs", "0"], "--header-timeout-secs"),
        (&["--login-backoff-secs", "0"], "--login-backoff-secs"),
        (
            &["--login-backoff-secs", "1000000000000"],
            "--login-backoff-secs",
        ),
        (
            &["--login-backoff-max-secs", "0"],
            "--login-backoff-max-secs",
        ),
        (
            &["--login-failure-window-secs", "0"],
            "--login-failure-window-secs",
        ),
        (&["--events-max-streams", "2000"], "--events-max-streams"),
        (
            &["--request-timeout-secs", "99999"],
            "--request-timeout-secs",
        ),
        (&["--max-open-connections", "0"], "--max-open-connections"),
        (
            &["--max-connections-per-ip", "0"],
            "--max-connections-per-ip",
        ),
        (&["--anon-burst", "0"], "--anon-burst"),
        (
            &["--anon-per-ip-per-minute", "0"],
            "--anon-per-ip-per-minute",
        ),
        (&["--events-max-per-ip", "0"], "--events-max-per-ip"),
        (&["--events-max-streams", "0"], "--events-max-streams"),
        (&["--trusted-proxies", "10.0.0.0/33"], "--trusted-proxies"),
        (&["--metrics-bind", "not-an-address"], "--metrics-bind"),
        (
            &["--allowed-origins", "app.example.com"],
            "--allowed-origins",
        ),
        (
            &["--allowed-origins", "https://app.example.com/login"],
            "--allowed-origins",
        ),
    ];
    for (args, flag) in cases {
        let (code, stderr) = serve(NO_DATABASE, &random_jwt_secret(), args)
            .expect_err("a bad setting must not start");
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?} must name {flag}: {stderr}");
        assert!(
            !stderr.contains("connecting"),
            "{args:?} refused before connecting: {stderr}"
        );
    }
}

#[test]
fn serve_refuses_short_and_published_jwt_secrets() {
    let mut secrets: Vec<&str> = vec!["too-short", ""];
    secrets.extend(PUBLISHED_JWT_SECRETS);
    for secret in secrets {
        let (code, stderr) =
            serve(NO_DATABASE, secret, &[]).expect_err("a bad secret must not start");
        assert_eq!(code, Some(2), "{secret:?}: {stderr}");
        assert!(stderr.contains("--jwt-secret"), "{secret:?}: {stderr}");
        assert!(
            !stderr.contains(secret) || secret.is_empty(),
            "the secret itself is never printed: {stderr}"
        );
    }
}

/// Every JWT secret written in the repository's docs, examples and compose file is one that
/// `serve` refuses: a value copied from the docs can never sign tokens in production.
#[test]
fn every_jwt_secret_in_the_docs_is_refused() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = vec![
        format!("{root}/README.md"),
        format!("{root}/docker-compose.yml"),
        format!("{root}/Dockerfile"),
    ];
    for dir in ["docs", "examples", "scripts"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).expect("read dir") {
            files.push(entry.expect("entry").path().display().to_string());
        }
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let Some(rest) = line.split("LATCHKEY_JWT_SECRET").nth(1) else {
                continue;
            };
            let value = rest
                .trim_start_matches(['=', ':', ' ', '"', '\''])
                .split(['"', '\'', ' ', '`', '|'])
                .next()
                .unwrap_or_default();
            // References and placeholders (`$VAR`, `${…}`, `%s`, `<…>`, `…`) are not values.
            if value.is_empty()
                || value.starts_with('$')
                || value.starts_with('%')
                || value.starts_with('<')
                || value.starts_with('…')
                || value.contains("…")
            {
                continue;
            }
            assert!(
                PUBLISHED_JWT_SECRETS.contains(&value),
                "{file}:{}: secret {value:?} is published but serve would accept it",
                i + 1
            );
        }
    }
    // The scan must see something, or it proves nothing: the README names the variable.
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    assert!(readme.contains("LATCHKEY_JWT_SECRET"));
}

#[tokio::test]
async fn serve_starts_with_settings_at_the_edges_of_their_ranges() {
    let db = TestDb::new().await;
    let url = db.url();
    let edges: &[&[&str]] = &[
        &[
            "--grace-secs",
            "0",
            "--touch-interval-secs",
            "0",
            "--expiry-step-secs",
            "0",
        ],
        &[
            "--absolute-ttl-secs",
            "315360000",
            "--idle-ttl-secs",
            "315360000",
            "--access-ttl-secs",
            "86400",
            "--grace-secs",
            "3600",
        ],
        &[
            "--idle-ttl-secs",
            "2",
            "--absolute-ttl-secs",
            "2",
            "--anon-ttl-secs",
            "2",
            "--grace-secs",
            "1",
            "--touch-interval-secs",
            "1",
            "--expiry-step-secs",
            "1",
        ],
    ];
    for args in edges {
        let started = tokio::task::spawn_blocking({
            let url = url.clone();
            move || serve(&url, &random_jwt_secret(), args)
        })
        .await
        .expect("join");
        if let Err((code, stderr)) = started {
            panic!("{args:?} should start, exited {code:?}: {stderr}");
        }
    }
}
