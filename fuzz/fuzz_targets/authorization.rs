//! `Authorization` (and `Cookie`) headers: the credential is found or refused with a 4xx,
//! never a panic; a bearer value is what followed the scheme.
#![no_main]

use latchkey::http::fuzzing::{config, credential};
use latchkey::http::Credential;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = config(false, &[], &[]);
    let headers = latchkey_fuzz::headers(data);
    match credential(&headers, &config) {
        Ok(Some(Credential::Bearer(token))) => {
            assert_eq!(token, token.trim());
        }
        Ok(_) => {}
        Err(status) => assert!((400..500).contains(&status), "refused with {status}"),
    }
});
