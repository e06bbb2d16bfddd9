//! The OpenAPI document served at `/auth/openapi.json` describes every route the routers
//! declare (and no other) and every error code the service can answer with.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

const HTTP_MOD: &str = include_str!("../../src/http/mod.rs");
const AUTH_ERRORS: &str = include_str!("../../src/auth/error.rs");
const HTTP_ERRORS: &str = include_str!("../../src/http/error.rs");

/// `(method, path)` of every `.route("…", method(…))` in the body of `pub fn {name}`.
fn routes_of(name: &str, prefix: &str) -> BTreeSet<(String, String)> {
    let start = HTTP_MOD
        .find(&format!("pub fn {name}"))
        .unwrap_or_else(|| panic!("{name} in src/http/mod.rs"));
    let body = &HTTP_MOD[start..];
    let body = &body[..body[1..].find("\npub fn ").map_or(body.len(), |i| i + 1)];
    let mut routes = BTreeSet::new();
    for part in body.split(".route(\"").skip(1) {
        let (path, rest) = part.split_once('"').expect("a path literal");
        let method = rest
            .trim_start_matches(',')
            .trim()
            .split('(')
            .next()
            .expect("a method");
        routes.insert((method.to_owned(), format!("{prefix}{path}")));
    }
    routes
}

/// Every `snake_case` string literal of `source`.
fn snake_literals(source: &str) -> BTreeSet<String> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            !s.is_empty()
                && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !s.starts_with('_')
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_served_document_lists_every_route_and_every_error_code() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/auth/openapi.json"))
        .send()
        .await
        .expect("openapi");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let served = res.text().await.expect("body");
    assert_eq!(served, latchkey::http::OPENAPI_JSON);
    let doc: Value = serde_json::from_str(&served).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");

    // `GET /` of the service points at it.
    let index: Value = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .expect("index")
        .json()
        .await
        .expect("index JSON");
    assert_eq!(index["openapi"], "/auth/openapi.json");

    // Routes: the routers' declarations against the document's paths, both ways.
    let mut declared = routes_of("auth_router", "/auth");
    declared.extend(routes_of("ops_router", ""));
    assert!(declared.len() >= 12, "routes found: {declared:?}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        declared, documented,
        "routes in src/http/mod.rs and paths in src/http/openapi.json differ"
    );

    // Error codes: those `AuthError::code` and `ApiError` can answer, against the Problem
    // schema's enum. The code match is the only `=> "…"` of src/auth/error.rs; src/http/error.rs
    // spells its codes as literals, beside the JSON member names `type` and the fallback
    // `error` (a detail, not a code).
    let mut codes: BTreeSet<String> = AUTH_ERRORS
        .lines()
        .filter_map(|l| l.split_once("=> \"").map(|(_, r)| r))
        .filter_map(|r| r.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(codes.contains("token_reused"), "codes found: {codes:?}");
    codes.extend(
        snake_literals(HTTP_ERRORS)
            .into_iter()
            .filter(|s| s != "type" && s != "error"),
    );
    let documented: BTreeSet<String> = doc["components"]["schemas"]["Problem"]["properties"]
        ["code"]["enum"]
        .as_array()
        .expect("code enum")
        .iter()
        .map(|c| c.as_str().expect("a code").to_owned())
        .collect();
    assert_eq!(
        codes, documented,
        "error codes in the source and in the document's Problem schema differ"
    );
}
