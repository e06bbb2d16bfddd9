//! The JSON bodies of login, anonymous, refresh, logout-all and password change: any bytes
//! are accepted or refused, never a panic (deep nesting, huge numbers, bad UTF-8 included).
#![no_main]

use latchkey::http::fuzzing::{parse_body, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let kind = match kind % 5 {
        0 => Body::Login,
        1 => Body::Anonymous,
        2 => Body::Refresh,
        3 => Body::LogoutAll,
        _ => Body::Password,
    };
    let _ = parse_body(kind, rest);
});
