//! Access tokens: any string, and any change to a valid token, is refused without a panic;
//! only the untouched token verifies.
#![no_main]

use std::sync::OnceLock;

use latchkey::auth::jwt::JwtKeys;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fn keys() -> &'static (JwtKeys, String) {
    static KEYS: OnceLock<(JwtKeys, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = JwtKeys::hs256(
            &SecretString::from("fuzz-secret-fuzz-secret-fuzz-secret-0123456789".to_owned()),
            3600,
        );
        let valid = keys
            .sign(
                "user:00000000-0000-4000-8000-000000000000",
                uuid::Uuid::nil(),
            )
            .expect("signing");
        (keys, valid)
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, valid) = keys();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Any string at all.
        let input = String::from_utf8_lossy(rest);
        if keys.verify(&input).is_ok() {
            assert_eq!(input, valid.as_str(), "only the token signed here verifies");
        }
    } else {
        // The valid token, edited: (position, byte) pairs overwrite, a last odd byte cuts.
        let mut token = valid.as_bytes().to_vec();
        for pair in rest.chunks(2) {
            match pair {
                [at, byte] if !token.is_empty() => {
                    let at = usize::from(*at) % token.len();
                    token[at] = *byte;
                }
                [cut] => token.truncate(usize::from(*cut) % (token.len() + 1)),
                _ => {}
            }
        }
        let edited = String::from_utf8_lossy(&token);
        let verified = keys.verify(&edited).is_ok();
        assert_eq!(
            verified,
            edited == valid.as_str(),
            "edited token {edited:?}"
        );
    }
});
