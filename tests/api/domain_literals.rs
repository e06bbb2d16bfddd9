//! The spellings of owner keys and event kinds live in one module, `src/store/owner.rs`
//! (`OwnerKey`, `EventKind`, `RevokeReason`): no other source file formats or matches them
//! by hand, in Rust or in SQL text.

use std::path::{Path, PathBuf};

/// The module that owns the spellings.
const OWNER_MODULE: &str = "src/store/owner.rs";

/// Owner-key prefixes as they would open a Rust string or an SQL literal.
const OWNER_PREFIXES: &[&str] = &[
    "\"user:",
    "\"apikey:",
    "\"anon:",
    "'user:",
    "'apikey:",
    "'anon:",
];

/// The labels of `session_event_kind`, as a Rust string or an SQL literal.
const EVENT_KINDS: &[&str] = &[
    "created",
    "refreshed",
    "grace_used",
    "reuse_detected",
    "mode_mismatch",
    "revoked",
    "expired",
];

/// `(file, literal, why)`: the few places where the same spelling must stay, and why.
const ALLOWED: &[(&str, &str, &str)] = &[
    // SessionState (active/expired/revoked) is a session's state, not an event kind; its
    // SQL twin is the state CASE of the session_overview view, quoted in the doc comment.
    ("src/store/live.rs", "\"expired\"", "SessionState::as_str"),
    ("src/store/live.rs", "\"revoked\"", "SessionState::as_str"),
    (
        "src/store/live.rs",
        "'expired'",
        "SessionState's rule quoted in SQL",
    ),
    (
        "src/store/live.rs",
        "'revoked'",
        "SessionState's rule quoted in SQL",
    ),
    // The audited rotation is exported as ROTATE_AUDITED_SQL for the benchmark's raw-SQL
    // baseline, which binds exactly its parameters; the event label stays in its text.
    ("src/store/sessions.rs", "'refreshed'", "ROTATE_AUDITED_SQL"),
    // Names on the wire that share a spelling: SSE event names and a JSON field.
    ("src/events/mod.rs", "\"revoked\"", "SSE event name"),
    ("src/events/mod.rs", "\"refreshed\"", "SSE event name"),
    (
        "src/http/auth.rs",
        "\"revoked\"",
        "logout-all response field",
    ),
    (
        "src/cli/apikey.rs",
        "\"revoked\"",
        "state column of `apikey list`",
    ),
];

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every literal this scan looks for.
fn forbidden() -> Vec<String> {
    let kinds = EVENT_KINDS
        .iter()
        .flat_map(|k| [format!("\"{k}\""), format!("'{k}'")]);
    OWNER_PREFIXES
        .iter()
        .map(|p| (*p).to_owned())
        .chain(kinds)
        .collect()
}

/// `file:line: literal` for each forbidden literal outside the owner module and the
/// allow-list, over the sources under `root/src`.
fn offences(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let forbidden = forbidden();
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        if rel == OWNER_MODULE {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            for lit in &forbidden {
                let allowed = ALLOWED.iter().any(|(f, l, _)| *f == rel && l == lit);
                if line.contains(lit.as_str()) && !allowed {
                    found.push(format!("{rel}:{}: {lit}", n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn owner_prefixes_and_event_kinds_are_spelled_only_in_the_owner_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = offences(root);
    assert!(
        found.is_empty(),
        "spell these with OwnerKey / EventKind / RevokeReason ({OWNER_MODULE}), or add them \
         to ALLOWED with a reason:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_allowed_literal_is_still_there() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, lit, why) in ALLOWED {
        let text = std::fs::read_to_string(root.join(file)).expect("read allowed file");
        assert!(
            text.contains(lit),
            "{file} no longer holds {lit} ({why}): remove it from ALLOWED"
        );
    }
}

#[test]
fn the_owner_module_spells_every_prefix_and_every_event_kind() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(OWNER_MODULE)).expect("read owner module");
    for prefix in ["\"user:\"", "\"apikey:\"", "\"anon:\""] {
        assert!(
            text.contains(prefix),
            "{prefix} missing from {OWNER_MODULE}"
        );
    }
    for kind in EVENT_KINDS {
        assert!(
            text.contains(&format!("\"{kind}\"")),
            "{kind} missing from {OWNER_MODULE}"
        );
    }
}

/// Owner-key candidates: well-formed ones and near misses.
fn candidates() -> Vec<String> {
    let id = uuid::Uuid::new_v4();
    let mut all = Vec::new();
    for prefix in ["user:", "apikey:", "anon:", "USER:", "group:", "user", ""] {
        for body in [
            id.hyphenated().to_string(),
            id.hyphenated().to_string().to_uppercase(),
            id.simple().to_string(),
            format!("{{{id}}}"),
            id.urn().to_string(),
            format!("{id} "),
            String::new(),
        ] {
            all.push(format!("{prefix}{body}"));
        }
    }
    all
}

#[tokio::test]
async fn an_owner_key_parses_exactly_when_the_sessions_check_constraint_accepts_it() {
    use latchkey::store::OwnerKey;
    let db = crate::helpers::TestDb::new().await;
    for candidate in candidates() {
        let inserted = sqlx::query(
            "INSERT INTO latchkey.sessions (id, kind, owner_key, token_hash, expires_at, \
                                   absolute_expires_at) \
             VALUES (gen_random_uuid(), 'stateful', $1, $2, now() + interval '1 hour', \
                     now() + interval '1 hour')",
        )
        .bind(&candidate)
        .bind(&[7u8; 32][..])
        .execute(&db.pool)
        .await;
        let parsed = candidate.parse::<OwnerKey>();
        assert_eq!(
            inserted.is_ok(),
            parsed.is_ok(),
            "{candidate:?}: database {inserted:?}, parser {parsed:?}"
        );
        if let Ok(owner) = parsed {
            assert_eq!(owner.to_string(), candidate);
            let read: OwnerKey =
                sqlx::query_scalar("SELECT owner_key FROM latchkey.sessions WHERE owner_key = $1")
                    .bind(owner)
                    .fetch_one(&db.pool)
                    .await
                    .expect("the row by its typed owner");
            assert_eq!(read, owner);
        }
    }
}

#[tokio::test]
async fn a_malformed_owner_flag_is_refused_by_the_argument_parser_with_exit_2() {
    let db = crate::helpers::TestDb::new().await;
    let id = uuid::Uuid::new_v4();
    let malformed = [
        format!("user:{}", id.simple()),
        format!("USER:{id}"),
        format!("user:{}", id.to_string().to_uppercase()),
        id.to_string(),
    ];
    for owner in &malformed {
        for args in [
            vec!["sessions", "revoke", "--owner", owner],
            vec!["sessions", "list", "--owner", owner],
            vec!["apikey", "create", "--owner", owner],
            vec!["apikey", "list", "--owner", owner],
        ] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
                .args(&args)
                .env("DATABASE_URL", db.url())
                .output()
                .expect("run latchkey");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("owner key"), "{args:?}: {stderr}");
        }
    }
}
