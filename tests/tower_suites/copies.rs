//! The copied upstream files are the upstream text, byte for byte: each one's SHA-256 is that
//! of the upstream file (or line range) at the tag the crate's documentation names.

use sha2::{Digest, Sha256};

/// (copied file, its text, SHA-256 of the upstream text).
const COPIES: &[(&str, &[u8], &str)] = &[
    (
        "common/mod.rs = tower-sessions v0.14.0 tests/common/mod.rs",
        include_bytes!("common/mod.rs"),
        "4d42e96596311e827e842d87a27af0e058715d7526bc90a4592d4c128b7fd467",
    ),
    (
        "upstream/memory_store_tests.rs = tower-sessions v0.14.0 memory-store/src/lib.rs:61-134",
        include_bytes!("upstream/memory_store_tests.rs"),
        "ddb5245b1eb306c55d4fb2d55f55249ee1b82c7b8d84518fe92434f3a3993dfa",
    ),
    (
        "upstream/service_tests.rs = tower-sessions v0.14.0 src/service.rs:541-1011",
        include_bytes!("upstream/service_tests.rs"),
        "9258a63664a1bf34aff0ff75a6e7c79f86368a519c5c2e240fad9e64b6096cc8",
    ),
];

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn are_unchanged() {
    for (what, text, upstream) in COPIES {
        assert_eq!(&sha256_hex(text), upstream, "{what} was edited");
    }
}
