//! Headers read by hand before a handler runs: `X-Request-Id` (it reaches the access log,
//! so only a safe id may), `Content-Length` and `Expect`. Never a panic.
#![no_main]

use latchkey::http::fuzzing::{body_head, request_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let headers = latchkey_fuzz::headers(data);
    let id = request_id(&headers);
    assert!((1..=64).contains(&id.len()), "{id:?}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "{id:?} could forge a log line"
    );
    let _ = body_head(&headers);
});
