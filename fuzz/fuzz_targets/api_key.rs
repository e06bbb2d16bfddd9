//! API keys (`lka_…`): parsing never panics, a key that parses is canonical, and no key is
//! ever a session token.
#![no_main]

use latchkey::token::{ApiKeyToken, SessionToken};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    if let Ok(key) = ApiKeyToken::parse(&input) {
        assert_eq!(
            key.encode(),
            input,
            "a key parses only from its canonical form"
        );
        assert!(
            SessionToken::parse(&input).is_err(),
            "an API key is never a session token"
        );
    }
});
