//! `docs/SECURITY.md` names, for every defence, the test that proves it: each named test must
//! exist, so the threat model cannot point at a test that was renamed or deleted.

use std::collections::BTreeSet;

/// Every `module::test_name` (or `module::submodule::test_name`) in backticks in the last
/// cell of the document's table rows, as (`module/submodule`, `test_name`).
fn named_tests(doc: &str) -> BTreeSet<(String, String)> {
    let mut named = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let Some(last) = line.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for cell in last.split('`').skip(1).step_by(2) {
            if let Some((module, test)) = cell.rsplit_once("::") {
                named.insert((module.replace("::", "/"), test.to_owned()));
            }
        }
    }
    named
}

#[test]
fn every_test_named_in_the_threat_model_exists() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/SECURITY.md")).expect("SECURITY.md");
    let named = named_tests(&doc);
    assert!(
        named.len() >= 20,
        "the threat model names its tests: {named:?}"
    );
    let mut missing = Vec::new();
    for (module, test) in &named {
        let source =
            std::fs::read_to_string(format!("{root}/tests/api/{module}.rs")).unwrap_or_default();
        let defined = source.lines().any(|l| {
            let l = l.trim_start();
            (l.starts_with("async fn ") || l.starts_with("fn "))
                && l.split("fn ").nth(1).and_then(|r| r.split('(').next()) == Some(test)
        });
        if !defined {
            missing.push(format!("{module}::{test}"));
        }
    }
    assert!(
        missing.is_empty(),
        "named in docs/SECURITY.md but not defined: {missing:?}"
    );
    // Every row of every table names at least one test.
    for line in doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| attack"))
    {
        let last = line
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap_or_default();
        assert!(last.contains("::"), "row without a test: {line}");
    }
}
