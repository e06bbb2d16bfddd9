//! Session tokens (`lks_…`, `lkr_…`): parsing never panics, and a token that parses is the
//! one canonical wire form of what it holds.
#![no_main]

use latchkey::token::SessionToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    if let Ok(token) = SessionToken::parse(&input) {
        assert_eq!(
            token.encode(),
            input,
            "a token parses only from its canonical form"
        );
    }
});
