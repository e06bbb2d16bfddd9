//! Where `PgSessionStore` deliberately differs from the stores tower-sessions' tests were
//! written for, each difference named and checked, so that a new one cannot slip in.
//!
//! * [`EXPECTED`]: the upstream tests it fails, on purpose. The layer tests run on the
//!   default store in a child process of this test binary;
//!   `the_default_store_fails_exactly_the_expected_layer_tests` fails if any other test fails
//!   there, if an expected deviation passes, or if it fails for another reason.
//! * Differences no upstream test observes, each asserted by a test of its own below.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use latchkey::store::PgSessionStore;
use sqlx::PgPool;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;

use crate::helpers::TestDb;
use crate::store::Settings;

/// Set (to any value) in the child process that runs the layer tests on the default store.
const DEFAULT_STORE_RUN: &str = "LATCHKEY_TOWER_SUITES_DEFAULT_STORE";

/// The module path of the copied layer tests.
const LAYER_TESTS: &str = "service::tests::";

/// The store of the layer tests: `PgSessionStore::new` in the child process of
/// [`the_default_store_fails_exactly_the_expected_layer_tests`], with a touch interval of
/// zero otherwise.
#[derive(Debug)]
pub struct LayerTestStore;

impl Settings for LayerTestStore {
    fn store(pool: PgPool) -> PgSessionStore {
        let store = PgSessionStore::new(pool);
        if std::env::var_os(DEFAULT_STORE_RUN).is_some() {
            store
        } else {
            store.with_touch_interval(Duration::ZERO)
        }
    }
}

/// An upstream test that `PgSessionStore` with its default settings fails on purpose.
pub struct Deviation {
    /// The test's path in this binary.
    pub test: &'static str,
    /// Text of the panic it fails with.
    pub fails_with: &'static str,
    /// Why the store differs.
    pub why: &'static str,
}

/// Why a save within the touch interval keeps the stored expiry.
const TOUCH_INTERVAL: &str = "a save that changes neither data nor owner and moves the expiry \
    forward by less than the touch interval (default 60 s) writes nothing, so the stored expiry \
    is the earlier one: with always_save, a session is written at most once per interval, not \
    on every request. With with_touch_interval(Duration::ZERO) the test passes.";

/// Every upstream test the default `PgSessionStore` fails, and why (the README lists them).
pub const EXPECTED: &[Deviation] = &[
    Deviation {
        test: "service::tests::expiry_on_session_end_always_save_test",
        fails_with: "assertion failed: rec1.expiry_date < rec2.expiry_date",
        why: TOUCH_INTERVAL,
    },
    Deviation {
        test: "service::tests::expiry_on_inactivity_always_save_test",
        fails_with: "assertion failed: rec1.expiry_date < rec2.expiry_date",
        why: TOUCH_INTERVAL,
    },
];

/// Runs this test binary with `args` (and the default-store switch when `default_store`);
/// its exit success and its standard output.
fn run_self(args: &[&str], default_store: bool) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    // Plain libtest output, each failure's captured output in its own section.
    cmd.args(args)
        .args(["--color", "never"])
        .env_remove("RUST_TEST_NOCAPTURE");
    if default_store {
        cmd.env(DEFAULT_STORE_RUN, "1");
    } else {
        cmd.env_remove(DEFAULT_STORE_RUN);
    }
    let out = cmd.output().expect("run the test binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The captured output libtest prints for the failed test `name`.
fn failure_output<'a>(stdout: &'a str, name: &str) -> &'a str {
    let head = format!("---- {name} stdout ----");
    let Some(start) = stdout.find(&head) else {
        return "";
    };
    let rest = &stdout[start + head.len()..];
    let end = [rest.find("\n---- "), rest.find("\nfailures:\n")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_default_store_fails_exactly_the_expected_layer_tests() {
    if std::env::var_os(DEFAULT_STORE_RUN).is_some() {
        return; // the child process; it does not run itself again
    }
    let (_, listing) = run_self(&["--list", LAYER_TESTS], false);
    let listed: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    assert_eq!(
        listed.len(),
        17,
        "the 17 layer tests of tower-sessions 0.14.0: {listed:?}"
    );

    let (success, stdout) = run_self(&[LAYER_TESTS], true);
    let mut ran = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        if let Some(name) = rest.strip_suffix(" ... ok") {
            ran.insert(name);
        } else if let Some(name) = rest.strip_suffix(" ... FAILED") {
            ran.insert(name);
            failed.insert(name);
        }
    }
    assert_eq!(
        ran, listed,
        "every layer test ran on the default store:\n{stdout}"
    );
    let expected: BTreeSet<&str> = EXPECTED.iter().map(|d| d.test).collect();
    assert_eq!(
        failed, expected,
        "on the default store, exactly the expected deviations fail:\n{stdout}"
    );
    assert!(!success, "the child run reports its failures");
    for deviation in EXPECTED {
        let output = failure_output(&stdout, deviation.test);
        assert!(
            output.contains(deviation.fails_with),
            "{} fails with `{}` ({}), not:\n{output}",
            deviation.test,
            deviation.fails_with,
            deviation.why
        );
    }
}

/// A record of `data` {"k": "v"} expiring at `expiry_date`.
fn record(expiry_date: OffsetDateTime) -> Record {
    Record {
        id: Id::default(),
        data: [("k".to_owned(), serde_json::json!("v"))].into(),
        expiry_date,
    }
}

/// Not observed by upstream: a record written by `save` loads back with its expiry at the
/// precision of `timestamptz`, microseconds (`save` takes the record by reference, so unlike
/// `create` it cannot hand the stored value back). tower-sessions never compares a saved
/// record with a loaded one; cookies carry whole seconds.
#[tokio::test]
async fn a_saved_expiry_loads_back_at_microsecond_precision() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let created = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut rec = record(created);
    store.create(&mut rec).await.expect("create");
    // Past the touch interval, so the save writes.
    rec.expiry_date = (created + time::Duration::minutes(5))
        .replace_nanosecond(123_456_789)
        .expect("nanoseconds");
    store.save(&rec).await.expect("save");
    let loaded = store.load(&rec.id).await.expect("load").expect("present");
    assert_eq!(loaded.expiry_date.nanosecond(), 123_456_000);
    assert_eq!(
        loaded.expiry_date,
        rec.expiry_date.replace_microsecond(123_456).expect("µs")
    );
    assert_ne!(loaded, rec, "the saved record had nanoseconds");
}

/// Not observed by upstream (its `test_save` checks only that `save` succeeds): `save` of a
/// record that was never created, or was deleted, stores nothing. The memory store and the
/// stock Postgres store upsert; `PgSessionStore` updates a live row only, so a request in
/// flight during a logout cannot bring the session back.
#[tokio::test]
async fn a_save_of_a_record_never_created_stores_nothing() {
    let db = TestDb::new().await;
    let store = PgSessionStore::new(db.pool.clone());
    let rec = record(OffsetDateTime::now_utc() + time::Duration::hours(1));
    store.save(&rec).await.expect("save succeeds");
    assert_eq!(store.load(&rec.id).await.expect("load"), None);
}
