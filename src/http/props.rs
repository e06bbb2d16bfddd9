//! Properties of the HTTP layer's hand-written parsers (proptest, 256 cases each): the
//! session cookie, the `Authorization` header, the `Origin` check, `X-Forwarded-For`, the
//! request id and the JSON bodies. Every one takes any bytes without a panic.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use proptest::prelude::*;

use super::auth::{LoginRequest, LogoutAllRequest, RefreshRequest};
use super::client_ip::client_ip;
use super::extract::{credential, session_cookie, OriginPolicy};
use super::{Credential, HttpConfig};

fn config(secure: bool) -> HttpConfig {
    HttpConfig {
        allowed_origins: vec![
            "https://app.example.com".into(),
            "http://localhost:3000".into(),
        ],
        cookie_secure: secure,
        cors: false,
        account_page: true,
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
    }
}

fn headers(pairs: &[(&str, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
    }
    map
}

/// A wire token's alphabet and length, of either mode.
fn token() -> impl Strategy<Value = String> {
    "lk[sr]_[A-Za-z0-9_-]{64}"
}

/// A cookie pair that is not the session cookie.
fn other_cookie() -> impl Strategy<Value = String> {
    (
        "[A-Za-z0-9!#$&'*+.^_`|~-]{1,12}",
        "[A-Za-z0-9!#$&'()*+./:<=>?@^_`{|}~-]{0,20}",
    )
        .prop_filter("not the session cookie", |(n, _)| {
            n != "latchkey" && n != "__Host-latchkey"
        })
        .prop_map(|(n, v)| format!("{n}={v}"))
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| IpAddr::from([10, a, b, 1])),
    ]
}

fn trusted(ip: &IpAddr, config: &HttpConfig) -> bool {
    config.trusted_proxies.iter().any(|n| n.contains(ip))
}

proptest! {
    #[test]
    fn the_session_cookie_is_found_among_any_others(
        secure in any::<bool>(),
        before in proptest::collection::vec(other_cookie(), 0..5),
        after in proptest::collection::vec(other_cookie(), 0..5),
        token in token(),
    ) {
        let config = config(secure);
        let mut pairs = before;
        pairs.push(format!("{}={token}", config.cookie_name()));
        pairs.extend(after);
        let h = headers(&[("cookie", pairs.join("; ").into_bytes())]);
        prop_assert_eq!(session_cookie(&h, &config), Some(token));
    }

    #[test]
    fn other_cookies_alone_are_no_session_cookie(
        secure in any::<bool>(),
        pairs in proptest::collection::vec(other_cookie(), 0..8),
    ) {
        let h = headers(&[("cookie", pairs.join("; ").into_bytes())]);
        prop_assert_eq!(session_cookie(&h, &config(secure)), None);
    }

    #[test]
    fn any_cookie_and_authorization_bytes_are_answered_without_a_5xx(
        cookies in proptest::collection::vec(any::<Vec<u8>>(), 0..3),
        authorization in proptest::option::of(any::<Vec<u8>>()),
    ) {
        let mut pairs: Vec<(&str, Vec<u8>)> = cookies.into_iter().map(|c| ("cookie", c)).collect();
        if let Some(a) = authorization {
            pairs.push(("authorization", a));
        }
        let h = headers(&pairs);
        let config = config(false);
        let _ = session_cookie(&h, &config);
        if let Err(e) = credential(&h, &config) {
            prop_assert!(e.status().is_client_error(), "{}", e.status());
        }
    }

    #[test]
    fn a_bearer_header_yields_its_token_trimmed(
        scheme in prop_oneof![Just("Bearer "), Just("bearer ")],
        pad in "[ \t]{0,3}",
        token in token(),
    ) {
        let h = headers(&[("authorization", format!("{scheme}{pad}{token}{pad}").into_bytes())]);
        prop_assert_eq!(credential(&h, &config(false)).unwrap(), Some(Credential::Bearer(token)));
    }

    #[test]
    fn another_scheme_is_refused_with_401(scheme in "[A-Za-z]{1,10}", rest in "[ -~]{0,40}") {
        prop_assume!(scheme != "Bearer" && scheme != "bearer");
        let h = headers(&[("authorization", format!("{scheme} {rest}").into_bytes())]);
        let refused = credential(&h, &config(false)).unwrap_err();
        prop_assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn a_cookie_and_a_bearer_together_are_refused_with_400(a in token(), b in token()) {
        let config = config(false);
        let h = headers(&[
            ("cookie", format!("{}={a}", config.cookie_name()).into_bytes()),
            ("authorization", format!("Bearer {b}").into_bytes()),
        ]);
        prop_assert_eq!(credential(&h, &config).unwrap_err().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_unsafe_method_passes_only_with_an_allowed_origin(
        origin in proptest::option::of(prop_oneof![
            Just("https://app.example.com".to_owned()),
            Just("HTTPS://APP.EXAMPLE.COM/".to_owned()),
            Just("https://app.example.com.evil.test".to_owned()),
            Just("null".to_owned()),
            "[ -~]{0,30}",
        ]),
        fetch_site in proptest::option::of(prop_oneof![Just("same-origin"), Just("cross-site")]),
        method in prop_oneof![Just(Method::POST), Just(Method::DELETE), Just(Method::GET)],
    ) {
        let config = config(true);
        let mut pairs = Vec::new();
        if let Some(o) = &origin {
            pairs.push(("origin", o.clone().into_bytes()));
        }
        if let Some(f) = fetch_site {
            pairs.push(("sec-fetch-site", f.as_bytes().to_vec()));
        }
        let h = headers(&pairs);
        let allowed = h.get("origin").and_then(|o| o.to_str().ok()).is_some_and(|o| config.origin_allowed(o));
        let passes = OriginPolicy::for_method(&method).check(&h, &config).is_ok();
        prop_assert_eq!(passes, method == Method::GET || allowed);
        let stream = OriginPolicy::AllowedOrSameOrigin.check(&h, &config).is_ok();
        let same_origin = h.get("origin").is_none() && fetch_site == Some("same-origin");
        prop_assert_eq!(stream, allowed || same_origin);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards(
        peer in ip(),
        forwarded in proptest::collection::vec(any::<Vec<u8>>(), 0..3),
    ) {
        let config = config(false);
        prop_assume!(!trusted(&peer.to_canonical(), &config));
        let pairs: Vec<_> = forwarded.into_iter().map(|v| ("x-forwarded-for", v)).collect();
        prop_assert_eq!(client_ip(peer, &headers(&pairs), &config.trusted_proxies), peer.to_canonical());
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client_whatever_the_client_prepends(
        hops in proptest::collection::vec(ip(), 1..6),
        prepended in proptest::collection::vec("[ -+\\--~]{0,20}", 0..3),
        last in any::<u8>(),
    ) {
        let config = config(false);
        let peer = IpAddr::from([10, 0, 0, last]);
        let expected = hops
            .iter()
            .rev()
            .map(|h| h.to_canonical())
            .find(|h| !trusted(h, &config))
            .unwrap_or_else(|| hops[0].to_canonical());
        let honest = hops.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        prop_assert_eq!(
            client_ip(peer, &headers(&[("x-forwarded-for", honest.clone().into_bytes())]), &config.trusted_proxies),
            expected
        );
        // Entries left of an untrusted hop are the client's own; they change nothing.
        if hops.iter().any(|h| !trusted(&h.to_canonical(), &config)) {
            let mut list = prepended;
            list.push(honest);
            let spoofed = headers(&[("x-forwarded-for", list.join(",").into_bytes())]);
            prop_assert_eq!(client_ip(peer, &spoofed, &config.trusted_proxies), expected);
        }
    }

    #[test]
    fn the_request_id_is_the_clients_only_when_safe(value in any::<Vec<u8>>()) {
        let h = headers(&[("x-request-id", value.clone())]);
        let id = super::access::request_id(&h);
        prop_assert!((1..=64).contains(&id.len()));
        prop_assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
        let safe = (1..=64).contains(&value.len())
            && value.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        prop_assert_eq!(id.as_bytes() == value.as_slice(), safe);
    }

    #[test]
    fn any_body_bytes_are_parsed_or_refused(body in any::<Vec<u8>>(), depth in 0usize..2000) {
        let _ = serde_json::from_slice::<LoginRequest>(&body);
        let _ = serde_json::from_slice::<RefreshRequest>(&body);
        let _ = serde_json::from_slice::<LogoutAllRequest>(&body);
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        prop_assert!(serde_json::from_slice::<LoginRequest>(deep.as_bytes()).is_err());
    }

    #[test]
    fn well_formed_bodies_are_accepted(email in any::<String>(), password in any::<String>(), token in any::<String>()) {
        let login = serde_json::json!({ "email": email, "password": password, "mode": "stateless" });
        prop_assert!(serde_json::from_slice::<LoginRequest>(login.to_string().as_bytes()).is_ok());
        let refresh = serde_json::json!({ "refresh_token": token });
        prop_assert!(serde_json::from_slice::<RefreshRequest>(refresh.to_string().as_bytes()).is_ok());
    }
}
