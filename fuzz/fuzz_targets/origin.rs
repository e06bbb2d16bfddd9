//! The `Origin` (and `Sec-Fetch-Site`) check: never a panic, and an `Origin` passes only
//! when it is in the allow-list.
#![no_main]

use http::Method;
use latchkey::http::fuzzing::{config, origin_passes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let config = config(
        true,
        &["https://app.example.com", "http://localhost:3000"],
        &[],
    );
    let method =
        [Method::GET, Method::POST, Method::DELETE, Method::HEAD][usize::from(flags % 4)].clone();
    let stream = flags & 4 != 0;
    let headers = latchkey_fuzz::headers(rest);
    let passes = origin_passes(&method, stream, &headers, &config);
    if passes && !matches!(method, Method::GET | Method::HEAD) && !stream {
        let origin = headers.get("origin").and_then(|o| o.to_str().ok());
        assert!(
            origin.is_some_and(|o| config.origin_allowed(o)),
            "{origin:?} passed"
        );
    }
});
