//! What the fuzz targets share: request headers built from fuzz bytes.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers from `name: value` lines (`\n`-separated); lines that are not a valid header are
/// skipped, as the HTTP server would refuse them before the service sees them. Repeated
/// names are appended, so duplicates reach the parsers.
pub fn headers(bytes: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in bytes.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

/// Every value of `name` as one header each: `prefix` + the fuzz bytes, split at `\n`.
pub fn repeated(name: &'static str, prefix: &[u8], bytes: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for part in bytes.split(|b| *b == b'\n') {
        let mut value = prefix.to_vec();
        value.extend_from_slice(part);
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            map.append(name, value);
        }
    }
    map
}
