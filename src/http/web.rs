//! The browser side, embedded in the binary: the client module (`GET /auth/client.js`, the
//! module it imports at `/auth/client-transport.js`, its TypeScript types at
//! `/auth/client.d.ts`) and the account page (`GET /auth/account` with
//! `account.js` and `account.css`), from the files of `web/`.
//!
//! Each file is served at a plain URL (`Cache-Control: no-cache`: revalidated with its
//! `ETag`) and at a versioned one, `?v=<hash of the content>`, cached for a year as
//! `immutable`. The page links its script and style by their versioned URLs, and its script
//! imports the client by its own (and the client its transport), so a new release is never
//! mixed with a cached old file.
//! The client and its types are public (no credential ever rides on them) and carry
//! `Access-Control-Allow-Origin: *` so an app on another origin can import the module. The
//! account page answers under a strict Content-Security-Policy (`script-src 'self'`, no
//! inline script or style) and cannot be framed.

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// The client module, as kept in the repository.
pub const CLIENT_JS: &str = include_str!("../../web/latchkey.js");
/// The module the client imports (errors, retry waits, the event stream).
pub const CLIENT_TRANSPORT_JS: &str = include_str!("../../web/latchkey-transport.js");
/// Its TypeScript declarations.
pub const CLIENT_DTS: &str = include_str!("../../web/latchkey.d.ts");
const ACCOUNT_HTML: &str = include_str!("../../web/account.html");
const ACCOUNT_JS: &str = include_str!("../../web/account.js");
const ACCOUNT_CSS: &str = include_str!("../../web/account.css");

/// The Content-Security-Policy of the account page: its own scripts, styles and API only.
pub const ACCOUNT_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// One embedded file: its body, type and content hash.
struct Asset {
    body: String,
    content_type: &'static str,
    /// The first 16 hex digits of SHA-256 of the body: the `?v=` of its versioned URL.
    version: String,
    /// `"<version>"`.
    etag: String,
}

impl Asset {
    fn new(body: String, content_type: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let version = digest[..8].iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        let etag = format!("\"{version}\"");
        Self {
            body,
            content_type,
            version,
            etag,
        }
    }
}

struct Assets {
    client: Asset,
    transport: Asset,
    types: Asset,
    account_js: Asset,
    account_css: Asset,
    account_html: Asset,
}

/// The files, with the page's references rewritten to versioned URLs (built once).
fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let transport = Asset::new(
            CLIENT_TRANSPORT_JS.to_owned(),
            "text/javascript; charset=utf-8",
        );
        let client = Asset::new(
            CLIENT_JS.replace(
                "\"./latchkey-transport.js\"",
                &format!("\"./client-transport.js?v={}\"", transport.version),
            ),
            "text/javascript; charset=utf-8",
        );
        let types = Asset::new(
            CLIENT_DTS.to_owned(),
            "application/typescript; charset=utf-8",
        );
        let account_js = Asset::new(
            ACCOUNT_JS.replace(
                "\"./client.js\"",
                &format!("\"./client.js?v={}\"", client.version),
            ),
            "text/javascript; charset=utf-8",
        );
        let account_css = Asset::new(ACCOUNT_CSS.to_owned(), "text/css; charset=utf-8");
        let account_html = Asset::new(
            ACCOUNT_HTML
                .replace(
                    "account.js\"",
                    &format!("account.js?v={}\"", account_js.version),
                )
                .replace(
                    "account.css\"",
                    &format!("account.css?v={}\"", account_css.version),
                ),
            "text/html; charset=utf-8",
        );
        Assets {
            client,
            transport,
            types,
            account_js,
            account_css,
            account_html,
        }
    })
}

/// The versioned URL of the client relative to the `/auth` nest, e.g. `client.js?v=…`.
pub fn client_versioned_path() -> String {
    format!("client.js?v={}", assets().client.version)
}

/// Whether the query names exactly this asset's version.
fn versioned(query: Option<&str>, asset: &Asset) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "v" && v == asset.version)
    })
}

/// The answer for `asset`: 304 when the client holds it, else the body; cached for a year
/// on its versioned URL, revalidated on the plain one.
fn serve(asset: &Asset, query: Option<&str>, headers: &HeaderMap, public: bool) -> Response {
    let cache = if versioned(query, asset) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.clone().into_response()
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if public {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("cross-origin"),
        );
    } else {
        h.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("same-origin"),
        );
    }
    res
}

/// `GET /auth/client.js`.
pub(super) async fn client_js(RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    serve(&assets().client, q.as_deref(), &headers, true)
}

/// `GET /auth/client-transport.js`, imported by the client by its versioned URL.
pub(super) async fn client_transport_js(RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    serve(&assets().transport, q.as_deref(), &headers, true)
}

/// `GET /auth/client.d.ts`.
pub(super) async fn client_dts(RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    serve(&assets().types, q.as_deref(), &headers, true)
}

fn account_enabled(state: &AppState) -> Result<(), ApiError> {
    if state.http.account_page {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// `GET /auth/account`: the page, under its Content-Security-Policy; 404 when turned off.
pub(super) async fn account(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    account_enabled(&state)?;
    let mut res = serve(&assets().account_html, None, &headers, false);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ACCOUNT_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(res)
}

/// `GET /auth/account.js`; 404 when the page is turned off.
pub(super) async fn account_js(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    account_enabled(&state)?;
    Ok(serve(&assets().account_js, q.as_deref(), &headers, false))
}

/// `GET /auth/account.css`; 404 when the page is turned off.
pub(super) async fn account_css(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    account_enabled(&state)?;
    Ok(serve(&assets().account_css, q.as_deref(), &headers, false))
}
