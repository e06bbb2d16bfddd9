//! The browser client (`/auth/client.js`, `/auth/client.d.ts`) and the account page
//! (`/auth/account`): content types, caching, the page's Content-Security-Policy, and the
//! switch that turns the page off (`HttpConfig::account_page`, `serve --account-page false`).
//! What the client does in a real browser is shown by `tests/browser/` (Chromium).

use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, AppOptions, TestApp};

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.expect("get")
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .expect("ASCII header")
}

/// The `?v=` a file's `src`/`href`/import names in `text`, following `name`.
fn version_after(text: &str, name: &str) -> String {
    let at = text
        .find(&format!("{name}?v="))
        .unwrap_or_else(|| panic!("{name}?v= in {text}"));
    text[at + name.len() + 3..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[tokio::test]
async fn the_client_module_is_served_as_javascript_revalidated_plain_and_immutable_versioned() {
    let app = spawn_app().await;

    let plain = get(&app, "/auth/client.js").await;
    assert_eq!(plain.status(), 200);
    assert_eq!(
        header(&plain, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&plain, "cache-control"), "no-cache");
    assert_eq!(header(&plain, "x-content-type-options"), "nosniff");
    // An app on another origin imports the module (a module script is fetched with CORS).
    assert_eq!(header(&plain, "access-control-allow-origin"), "*");
    let etag = header(&plain, "etag").to_owned();
    let version = etag.trim_matches('"').to_owned();
    assert_eq!(version.len(), 16, "{etag}");
    let body = plain.text().await.expect("body");
    assert!(body.contains("export class Latchkey"));
    // The client imports its transport module by that module's versioned URL.
    let transport_version = version_after(&body, "client-transport.js");
    assert_eq!(
        body,
        latchkey::http::CLIENT_JS.replace(
            "\"./latchkey-transport.js\"",
            &format!("\"./client-transport.js?v={transport_version}\""),
        )
    );
    let transport = get(
        &app,
        &format!("/auth/client-transport.js?v={transport_version}"),
    )
    .await;
    assert_eq!(transport.status(), 200);
    assert_eq!(
        transport.headers()[CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        transport.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(transport.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        transport.text().await.expect("transport"),
        latchkey::http::CLIENT_TRANSPORT_JS
    );
    assert_eq!(
        latchkey::http::client_versioned_path(),
        format!("client.js?v={version}")
    );

    // The versioned URL is cached for a year, as immutable.
    let versioned = get(&app, &format!("/auth/client.js?v={version}")).await;
    assert_eq!(versioned.status(), 200);
    assert_eq!(
        versioned.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(versioned.headers()[ETAG].to_str().expect("etag"), etag);
    // Another version is not this content: never cached as immutable under that name.
    let stale = get(&app, "/auth/client.js?v=0000000000000000").await;
    assert_eq!(stale.headers()[CACHE_CONTROL], "no-cache");

    // Revalidation: the ETag answers 304 without a body; another one gets the file.
    let same = app
        .client
        .get(app.url("/auth/client.js"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(same.status(), 304);
    assert_eq!(same.headers()[ETAG].to_str().expect("etag"), etag);
    assert!(same.bytes().await.expect("body").is_empty());
    let other = app
        .client
        .get(app.url("/auth/client.js"))
        .header(IF_NONE_MATCH, "\"0000000000000000\"")
        .send()
        .await
        .expect("revalidate");
    assert_eq!(other.status(), 200);

    // The TypeScript declarations, alike.
    let types = get(&app, "/auth/client.d.ts").await;
    assert_eq!(types.status(), 200);
    assert_eq!(
        types.headers()[CONTENT_TYPE],
        "application/typescript; charset=utf-8"
    );
    assert_eq!(types.headers()[CACHE_CONTROL], "no-cache");
    assert_eq!(
        types.text().await.expect("body"),
        latchkey::http::CLIENT_DTS
    );
}

#[tokio::test]
async fn the_account_page_is_served_under_a_strict_csp_with_versioned_assets() {
    let app = spawn_app().await;
    let page = get(&app, "/auth/account").await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy").to_owned();
    assert_eq!(csp, latchkey::http::ACCOUNT_CSP);
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    let html = page.text().await.expect("html");
    // No inline script or style for the CSP to refuse.
    assert!(!html.contains("<script>") && !html.contains("style="));
    assert!(html.contains("<label for=\"email\">") && html.contains("<label for=\"password\">"));

    // The page names its script and style by their versioned URLs, the script imports the
    // client by its own: each is served immutable.
    let js_version = version_after(&html, "account.js");
    let css_version = version_after(&html, "account.css");
    let script = get(&app, &format!("/auth/account.js?v={js_version}")).await;
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()[CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        script.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    let script = script.text().await.expect("script");
    let client_version = version_after(&script, "client.js");
    assert_eq!(
        format!("client.js?v={client_version}"),
        latchkey::http::client_versioned_path()
    );
    let style = get(&app, &format!("/auth/account.css?v={css_version}")).await;
    assert_eq!(style.status(), 200);
    assert_eq!(style.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(
        style.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
}

async fn assert_not_found(app: &TestApp, path: &str) {
    let res = get(app, path).await;
    assert_eq!(res.status(), 404, "{path}");
    assert_eq!(res.headers()[CONTENT_TYPE], "application/problem+json");
    let body: Value = res.json().await.expect("problem");
    assert_eq!(body["code"], "not_found", "{path}");
}

#[tokio::test]
async fn with_the_account_page_off_its_paths_are_404_problems_and_the_client_stays() {
    let mut opts = AppOptions::default();
    opts.settings.http.account_page = false;
    let app = spawn_app_with(opts).await;
    for path in ["/auth/account", "/auth/account.js", "/auth/account.css"] {
        assert_not_found(&app, path).await;
    }
    assert_eq!(get(&app, "/auth/client.js").await.status(), 200);
    assert_eq!(get(&app, "/auth/client.d.ts").await.status(), 200);
}

/// `url`'s listening address, from the `addr=` of its log line.
fn listening_addr(rx: &std::sync::mpsc::Receiver<String>) -> String {
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(rest) = line.split("addr=").nth(1) {
            return rest.split_whitespace().next().expect("addr").to_owned();
        }
        seen.push(line);
    }
    panic!("no listening line in {seen:?}");
}

#[tokio::test]
async fn serve_has_the_account_page_by_default_and_account_page_false_turns_it_off() {
    let db = crate::helpers::TestDb::new().await;
    let secret = crate::helpers::random_jwt_secret();
    let client = reqwest::Client::new();
    for (args, expected) in [
        (&[][..], 200),
        (&["--account-page", "false"][..], 404),
        (&["--account-page", "true"][..], 200),
    ] {
        let (mut child, rx) = crate::helpers::spawn_serve(&db.url(), &secret, args);
        let addr = listening_addr(&rx);
        let res = client
            .get(format!("http://{addr}/auth/account"))
            .send()
            .await
            .expect("account");
        child.kill().ok();
        child.wait().ok();
        assert_eq!(res.status(), expected, "serve {args:?}");
    }
}

#[test]
fn the_browser_client_keeps_tokens_in_memory_only() {
    let client = latchkey::http::CLIENT_JS;
    // No web storage and no script-set cookie: tokens live in the client object only.
    for forbidden in [
        "localStorage.",
        "sessionStorage.",
        "document.cookie",
        "caches.",
    ] {
        assert!(!client.contains(forbidden), "the client uses {forbidden}");
    }
    // IndexedDB is written in one place, with the refresh mark: a counter and two times.
    let puts: Vec<&str> = client
        .match_indices(".put(")
        .map(|(i, _)| &client[i..])
        .collect();
    assert_eq!(puts.len(), 1, "one IndexedDB write");
    assert!(puts[0].starts_with(".put(next, this._key)"));
    let mark = client
        .split("const next = ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .expect("the mark");
    assert_eq!(
        mark,
        "{ gen: mark.gen + 1, at: Date.now(), expiresAt: this._expiresAt || undefined }"
    );
}
