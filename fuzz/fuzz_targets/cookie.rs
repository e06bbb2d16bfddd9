//! `Cookie` headers: the session cookie is read without panicking from any header bytes,
//! and what it returns is no longer than the headers (values are percent-decoded).
#![no_main]

use latchkey::http::fuzzing::{config, session_cookie};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, rest) = data.split_first().unwrap_or((&0, &[]));
    let config = config(flags & 1 == 1, &[], &[]);
    let headers = latchkey_fuzz::repeated("cookie", b"", rest);
    if let Some(value) = session_cookie(&headers, &config) {
        assert!(
            value.len() <= rest.len(),
            "the cookie value comes from the headers"
        );
    }
});
